"""Host builds of the pure C pieces of the EFI images, tested through ctypes:
the hv.cfg parser (efi/platform/hvcfg.c) and the formatter (efi/lib/fmt.c).
"""
from __future__ import annotations

import ctypes
from pathlib import Path

import pytest

from hostcc import CFG_ARGS_MAX as ARGS_MAX, CFG_PATH_MAX as PATH_MAX, host_library, parse_cfg

ROOT = Path(__file__).resolve().parent.parent
SOURCES = [ROOT / "efi/platform/hvcfg.c", ROOT / "efi/lib/fmt.c"]

LOG_ERROR, LOG_INFO, LOG_DEBUG = 0, 1, 2


@pytest.fixture(scope="module")
def lib(tmp_path_factory):
    so = host_library(SOURCES, tmp_path_factory.mktemp("hostlib") / "libhvhost.so",
                      [ROOT / "efi/include"])
    so.hv_snprintf.restype = ctypes.c_int
    return so


parse = parse_cfg


# ---- config parser ---------------------------------------------------------

def test_defaults(lib):
    cfg, errors = parse(lib, b"")
    assert errors == []
    assert cfg.hypervisor is True and cfg.log == LOG_INFO
    assert cfg.next == b"" and cfg.kernel == b"" and cfg.args == b""


def test_good_config(lib):
    text = (b"# comment\n"
            b"hypervisor=off\n"
            b"  next = \\EFI\\hv\\payload.efi  \n"
            b"args=-v  --x=1 # not a comment\n"
            b"kernel=/EFI/hv/vmlinuz\n"
            b"initrd=\\EFI\\hv\\initrd.img\n"
            b"append=console=ttyS0 quiet\n"
            b"log=debug\n"
            b"\n\t\n")
    cfg, errors = parse(lib, text)
    assert errors == []
    assert cfg.hypervisor is False
    assert cfg.log == LOG_DEBUG
    assert cfg.next == b"\\EFI\\hv\\payload.efi"
    assert cfg.args == b"-v  --x=1 # not a comment"
    assert cfg.kernel == b"\\EFI\\hv\\vmlinuz"          # '/' becomes '\'
    assert cfg.initrd == b"\\EFI\\hv\\initrd.img"
    assert cfg.append == b"console=ttyS0 quiet"


def test_next_auto(lib):
    cfg, errors = parse(lib, b"next=auto\n")
    assert errors == [] and cfg.next_auto is True and cfg.next == b""
    cfg, _ = parse(lib, b"next=auto\nnext=\\EFI\\x.efi\n")   # the last one wins
    assert cfg.next_auto is False and cfg.next == b"\\EFI\\x.efi"
    cfg, _ = parse(lib, b"")
    assert cfg.next_auto is False


def test_crlf_and_bom(lib):
    cfg, errors = parse(lib, b"\xef\xbb\xbfnext=\\a.efi\r\nargs=x y\r\nlog=error\r\n")
    assert errors == []
    assert cfg.next == b"\\a.efi" and cfg.args == b"x y" and cfg.log == LOG_ERROR


def test_no_trailing_newline(lib):
    cfg, errors = parse(lib, b"hypervisor=off")
    assert errors == [] and cfg.hypervisor is False


def test_unknown_key(lib):
    cfg, errors = parse(lib, b"next=\\a.efi\nfrobnicate=1\n")
    assert errors == [(2, "unknown-key")]
    assert cfg.next == b"\\a.efi"


def test_malformed_line(lib):
    cfg, errors = parse(lib, b"log=debug\njust some words\n=value\n")
    assert errors == [(2, "missing-equals"), (3, "empty-key")]
    assert cfg.log == LOG_DEBUG


def test_bad_value_resets_to_default(lib):
    cfg, errors = parse(lib, b"hypervisor=off\nhypervisor=maybe\nlog=loud\n")
    assert errors == [(2, "bad-value"), (3, "bad-value")]
    assert cfg.hypervisor is True and cfg.log == LOG_INFO


def test_long_lines(lib):
    long_path = b"\\" + b"a" * 400
    long_args = b"x" * 5000
    cfg, errors = parse(lib, b"next=" + long_path + b"\nargs=" + long_args +
                        b"\nappend=" + b"y" * (ARGS_MAX - 1) + b"\n")
    assert errors == [(1, "value-too-long"), (2, "value-too-long")]
    assert cfg.next == b"" and cfg.args == b""
    assert cfg.append == b"y" * (ARGS_MAX - 1)


def test_non_ascii(lib):
    cfg, errors = parse(lib, "next=\\é.efi\nargs=héllo\n".encode())
    assert errors == [(1, "non-ascii-path")]
    assert cfg.next == b"" and cfg.args == "héllo".encode()


def test_garbage_bytes(lib):
    import random
    rng = random.Random(1234)
    for _ in range(50):
        data = bytes(rng.randrange(256) for _ in range(rng.randrange(1, 3000)))
        cfg, errors = parse(lib, data)
        assert all(line >= 1 for line, _ in errors)
    cfg, errors = parse(lib, b"\x00\x01\x02=\x03\nnext=\\ok.efi\n\xff\xfe\x00z\n")
    assert errors[0] == (1, "control-character")
    assert cfg.next == b"\\ok.efi"


def test_embedded_nul_does_not_truncate(lib):
    cfg, errors = parse(lib, b"args=a\x00b\nlog=debug\n")
    assert errors == [(1, "control-character")]
    assert cfg.log == LOG_DEBUG


# ---- formatter -------------------------------------------------------------

def fmt(lib, f: bytes, *args, size: int = 256):
    buf = ctypes.create_string_buffer(size) if size else None
    n = lib.hv_snprintf(buf, ctypes.c_size_t(size), f, *args)
    return n, (buf.value if size else b"")


I, U, L, UL, S = ctypes.c_int, ctypes.c_uint, ctypes.c_longlong, ctypes.c_ulonglong, ctypes.c_char_p


@pytest.mark.parametrize("f,args,want", [
    (b"plain", (), b"plain"),
    (b"%s=%d", (S(b"x"), I(-42)), b"x=-42"),
    (b"%u %x %X", (U(4000000000), U(0xbeef), U(0xbeef)), b"4000000000 beef BEEF"),
    (b"%c%c", (I(ord("o")), I(ord("k"))), b"ok"),
    (b"%lx %lu", (UL(0xfedcba9876543210), UL(18446744073709551615)),
     b"fedcba9876543210 18446744073709551615"),
    (b"%llx", (UL(0x123456789abcdef0),), b"123456789abcdef0"),
    (b"%016llx", (UL(0xabc),), b"0000000000000abc"),
    (b"%lld", (L(-9223372036854775807 - 1),), b"-9223372036854775808"),
    (b"%zu", (UL(12345),), b"12345"),
    (b"[%5d|%-5d|%05d]", (I(42), I(42), I(-42)), b"[   42|42   |-0042]"),
    (b"[%8s|%-4s]", (S(b"ab"), S(b"cd")), b"[      ab|cd  ]"),
    (b"%s", (S(None),), b"(null)"),
    (b"%p", (ctypes.c_void_p(0x1000),), b"0x1000"),
    (b"100%% %q", (), b"100% %q"),
    (b"end%", (), b"end%"),
])
def test_format(lib, f, args, want):
    n, out = fmt(lib, f, *args)
    assert out == want and n == len(want)


def test_format_truncates_and_counts(lib):
    n, out = fmt(lib, b"HV: %s", S(b"0123456789"), size=8)
    assert out == b"HV: 012" and n == 14
    n, _ = fmt(lib, b"%d", I(12345), size=0)
    assert n == 5
