"""The log ring (efi/lib/ring.c, efi/include/hv_ring.h) built for the host and
driven through ctypes, and the Linux reader efi/linux/hvlog.c run on a ring file:
the same C code the hypervisor and the tool run.
"""
from __future__ import annotations

import ctypes
import shutil
import struct
import subprocess
from pathlib import Path

import pytest

from pytool import linux

from hostcc import build_so, parse_cfg

ROOT = Path(__file__).resolve().parent.parent
RING_SIZE = 16 * 4096
HDR = 0x100
REC = 0x20
MAGIC = 0x3130474E49525648
LINE_FN = ctypes.CFUNCTYPE(None, ctypes.c_void_p, ctypes.POINTER(ctypes.c_char), ctypes.c_size_t)
COUNTS_FN = ctypes.CFUNCTYPE(ctypes.c_void_p, ctypes.c_void_p, ctypes.c_uint)
PREFIX = 4 * 4096                       # HV_HVLG_PAGES: the HVLG header and statistics


class Stat(ctypes.Structure):
    _fields_ = [(n, ctypes.c_uint64) for n in
                ("boot_id", "prev_boot_id", "first_seq", "next_seq", "records", "bad",
                 "lines", "dropped")]


@pytest.fixture(scope="module")
def lib(tmp_path_factory):
    so = build_so(tmp_path_factory.mktemp("ring"), "ring", ["efi/lib/ring.c"])
    so.hv_ring_init.argtypes = [ctypes.c_void_p, ctypes.c_uint64, ctypes.c_uint64,
                                ctypes.c_uint64]
    so.hv_ring_append.argtypes = [ctypes.c_void_p, ctypes.c_char_p, ctypes.c_size_t]
    so.hv_ring_read.argtypes = [ctypes.c_void_p, ctypes.c_uint64, LINE_FN, ctypes.c_void_p,
                                ctypes.POINTER(Stat)]
    so.hv_ring_error_name.restype = ctypes.c_char_p
    so.hv_hvlg_init.argtypes = [ctypes.c_void_p, ctypes.c_uint32, ctypes.c_uint32]
    so.hv_hvlg_snapshot.argtypes = [ctypes.c_void_p, ctypes.c_uint, COUNTS_FN, ctypes.c_void_p,
                                    ctypes.POINTER(ctypes.c_char_p), ctypes.c_uint]
    so.hv_hvlg_snapshot.restype = ctypes.c_uint64
    return so


def new_ring(lib, size=RING_SIZE, boot_id=0x1234, prev=0):
    buf = ctypes.create_string_buffer(size)
    lib.hv_ring_init(buf, size, boot_id, prev)
    return buf


def read(lib, buf, size=None):
    lines: list[str] = []

    @LINE_FN
    def on_line(ctx, text, n):
        lines.append(ctypes.string_at(text, n).decode())

    st = Stat()
    err = lib.hv_ring_read(buf, size or len(buf), on_line, None, ctypes.byref(st))
    return lib.hv_ring_error_name(err).decode(), lines, st


def put(lib, buf, text: str):
    b = text.encode()
    lib.hv_ring_append(buf, b, len(b))


def test_lines_round_trip_and_chunks_join(lib):
    buf = new_ring(lib, prev=0x99)
    put(lib, buf, "HV: start version=0.1.0 cpus=2\n")
    put(lib, buf, "HV: panic ")                 # hv_panic writes a line in two calls
    put(lib, buf, "forced debug-fail=panic\n")
    put(lib, buf, "HV: no newline at the end")
    err, lines, st = read(lib, buf)
    assert err == "ok"
    assert lines == ["HV: start version=0.1.0 cpus=2", "HV: panic forced debug-fail=panic",
                     "HV: no newline at the end"]
    assert (st.records, st.bad, st.first_seq, st.next_seq) == (4, 0, 0, 4)
    assert (st.boot_id, st.prev_boot_id) == (0x1234, 0x99)


def test_empty_and_garbage(lib):
    assert read(lib, new_ring(lib))[0] == "empty"
    assert read(lib, ctypes.create_string_buffer(RING_SIZE))[0] == "bad-magic"
    buf = new_ring(lib)
    buf[0x18] = b"\x55"                         # boot_id: header checksum
    assert read(lib, buf)[0] == "bad-header-checksum"
    assert read(lib, new_ring(lib), size=RING_SIZE // 2)[0] == "bad-size"


def test_wraps_dropping_the_oldest(lib):
    size = HDR + 4096
    buf = new_ring(lib, size=size)
    for i in range(500):
        put(lib, buf, f"HV: line {i:04d} {'x' * (i % 37)}\n")
    err, lines, st = read(lib, buf)
    assert err == "ok" and st.bad == 0
    assert lines[-1].startswith("HV: line 0499")
    first = int(lines[0].split()[2])
    assert lines == [l for l in lines if l.startswith("HV: line")]
    assert [int(l.split()[2]) for l in lines] == list(range(first, 500))
    assert st.dropped == first and st.records == 500 - first
    assert 40 < st.records < 120                # about 4 KiB of records survive


def test_corrupt_record_is_counted_and_skipped(lib):
    buf = new_ring(lib)
    put(lib, buf, "HV: one\n")
    put(lib, buf, "HV: two\n")
    put(lib, buf, "HV: three\n")
    second = HDR + ((REC + len("HV: one\n") + 7) & ~7)
    buf[second + REC] = b"X"                    # a flipped text byte: checksum fails
    err, lines, st = read(lib, buf)
    assert err == "ok" and lines == ["HV: one", "HV: three"] and st.bad == 1


def test_record_of_another_boot_is_rejected(lib):
    buf = new_ring(lib, boot_id=1)
    put(lib, buf, "HV: old\n")
    raw = bytearray(buf.raw)
    struct.pack_into("<Q", raw, HDR + 0x10, 2)  # record's boot ID no longer matches
    err, lines, st = read(lib, ctypes.create_string_buffer(bytes(raw), len(raw)))
    assert err == "empty" and lines == [] and st.bad == 1


@pytest.fixture(scope="module")
def hvlog(tmp_path_factory):
    if not shutil.which("gcc"):
        pytest.skip("no gcc")
    return linux.build_hvlog(out=tmp_path_factory.mktemp("hvlog") / "hvlog")


def ring_files(tmp_path, lib, texts, phys=0x3000):
    buf = new_ring(lib, boot_id=0xABCDEF)
    for t in texts:
        put(lib, buf, t)
    mem = tmp_path / "mem"
    mem.write_bytes(b"\0" * phys + buf.raw)
    var = tmp_path / "var"
    var.write_bytes(struct.pack("<IQQQ", 7, MAGIC, phys, RING_SIZE))
    return var, mem


def test_hvlog_prints_the_ring(tmp_path, lib, hvlog):
    var, mem = ring_files(tmp_path, lib, ["HV: start version=0.1.0 cpus=1\n",
                                          "HV: stats cpu=0 cpuid=5\n", "HV: ready cpus=1\n"])
    p = subprocess.run([hvlog, "--acpi", "", "--var", var, "--mem", mem], capture_output=True,
                       text=True)
    assert p.returncode == 0, p.stderr
    assert p.stdout.splitlines() == ["HV: start version=0.1.0 cpus=1",
                                     "HV: stats cpu=0 cpuid=5", "HV: ready cpus=1"]
    assert "hvlog: ring=3000 boot-id=0000000000abcdef records=3 bad=0 dropped=0 via=devmem " \
        "acpi-checksum=none" in p.stderr
    p = subprocess.run([hvlog, "--stats", "--no-snapshot", "--acpi", "", "--var", var, "--mem",
                        mem], capture_output=True, text=True)
    assert p.returncode == 1 and "no live statistics: the ring has no HVLG table" in p.stderr


def test_hvlog_says_why_it_found_nothing(tmp_path, lib, hvlog):
    p = subprocess.run([hvlog, "--acpi", tmp_path / "no-table", "--var", tmp_path / "none"],
                       capture_output=True, text=True)
    assert p.returncode == 1 and p.stderr.count("\n") == 1     # one line, both reasons
    assert p.stderr.startswith(f"hvlog: no ring: {tmp_path}/no-table: No such file")
    assert "no ring variable" in p.stderr
    var, mem = ring_files(tmp_path, lib, [])
    p = subprocess.run([hvlog, "--acpi", "", "--var", var, "--mem", mem], capture_output=True,
                       text=True)
    assert p.returncode == 1 and "unusable: empty" in p.stderr
    p = subprocess.run([hvlog, "--bogus"], capture_output=True, text=True)
    assert p.returncode == 2 and "usage:" in p.stderr


# ---- the HVLG ACPI table around the ring (and its statistics) ----

def sum8(b: bytes) -> int:
    return sum(b) & 0xFF


def test_append_keeps_the_ring_byte_sum(lib):
    """Every append, wraps and drops included, leaves the ring's byte sum as it was
    (sum_fix), so a table holding the ring keeps its ACPI checksum."""
    size = 4096
    buf = ctypes.create_string_buffer(bytes(range(256)) * (size // 256))    # old contents
    lib.hv_ring_init(buf, size, 0x77, 0)
    want = sum8(buf.raw)
    for i in range(300):
        put(lib, buf, f"HV: line {i} " + "x" * (i % 97) + "\n")
        assert sum8(buf.raw) == want, i
    err, lines, st = read(lib, buf)
    assert err == "ok" and st.dropped > 0 and lines[-1].startswith("HV: line 299 ")


def new_block(lib, texts, counts=None):
    """An HVLG block as the platform builds it: header and statistics, then the ring."""
    block = ctypes.create_string_buffer(b"\xA5" * (PREFIX + RING_SIZE))
    ring = ctypes.addressof(block) + PREFIX
    lib.hv_ring_init(ring, RING_SIZE, 0xABCDEF, 0)
    lib.hv_hvlg_init(block, PREFIX + RING_SIZE, PREFIX)
    assert sum8(block.raw) == 0
    for t in texts:
        b = t.encode()
        lib.hv_ring_append(ring, b, len(b))
    if counts is not None:
        arrays = [(ctypes.c_uint64 * 18)(*c) for c in counts]
        names = (ctypes.c_char_p * 18)(*[f"k{i}".encode() for i in range(18)])

        @COUNTS_FN
        def of_cpu(ctx, i):
            return ctypes.addressof(arrays[i])

        assert lib.hv_hvlg_snapshot(block, len(counts), of_cpu, None, names, 18) == 1
    assert sum8(block.raw) == 0                     # the ACPI checksum still holds
    return block


def test_hvlg_table(tmp_path, lib, hvlog):
    block = new_block(lib, ["HV: start\n", "HV: ready cpus=2\n"],
                      counts=[[5, 0, 2] + [0] * 15, [0] * 17 + [9]])
    raw = block.raw
    assert raw[:4] == b"HVLG" and struct.unpack_from("<I", raw, 4)[0] == PREFIX + RING_SIZE
    assert struct.unpack_from("<II", raw, 0x24) == (PREFIX, 0x200)
    table = tmp_path / "HVLG"
    table.write_bytes(raw)
    p = subprocess.run([hvlog, "--acpi", table, "--var", ""], capture_output=True, text=True)
    assert p.returncode == 0, p.stderr
    assert p.stdout.splitlines() == ["HV: start", "HV: ready cpus=2"]
    assert "hvlog: ring=HVLG boot-id=0000000000abcdef records=2 bad=0 dropped=0 via=acpi " \
        "acpi-checksum=ok" in p.stderr
    p = subprocess.run([hvlog, "--stats", "--no-snapshot", "--acpi", table],
                       capture_output=True, text=True)
    assert p.returncode == 0, p.stderr
    assert p.stdout.splitlines() == ["cpu=0 k0=5 k2=2", "cpu=1 k17=9"]
    assert "hvlog: stats snapshot=1 cpus=2 via=acpi" in p.stderr
    # Through the variable and /dev/mem: the table sits just below the ring.
    phys = 0x10000
    mem, var = tmp_path / "mem", tmp_path / "var"
    mem.write_bytes(b"\0" * (phys - PREFIX) + raw)
    var.write_bytes(struct.pack("<IQQQ", 7, MAGIC, phys, RING_SIZE))
    p = subprocess.run([hvlog, "--acpi", tmp_path / "none", "--var", var, "--mem", mem],
                       capture_output=True, text=True)
    assert p.returncode == 0 and "ring=10000 " in p.stderr and "via=devmem acpi-checksum=ok" \
        in p.stderr, p.stderr
    for off, value in ((0x24, 8), (0x04, 0x10), (0x04, 0xFFFFFFFF)):   # ring offset, length
        bad = bytearray(raw)
        bad[off:off + 4] = struct.pack("<I", value)
        table.write_bytes(bytes(bad))
        p = subprocess.run([hvlog, "--acpi", table, "--var", ""], capture_output=True,
                           text=True)
        assert p.returncode == 1 and f"{table}: bad-HVLG-layout; efivarfs: skipped" in \
            p.stderr, (off, value, p.stderr)


def test_hvlog_stats_needs_the_hypervisor(tmp_path, lib, hvlog):
    """On the host (no hypervisor of ours), --stats says so instead of printing stale counts."""
    table = tmp_path / "HVLG"
    table.write_bytes(new_block(lib, ["HV: x\n"]).raw)
    p = subprocess.run([hvlog, "--stats", "--acpi", table], capture_output=True, text=True)
    assert p.returncode == 1 and "no live statistics" in p.stderr
    p = subprocess.run([hvlog, "--stats", "--no-snapshot", "--acpi", table],
                       capture_output=True, text=True)
    assert p.returncode == 1 and "no statistics snapshot taken yet" in p.stderr


# ---- hv.cfg keys of issue 9 and the DSDT sleep-type scan (pure C, host builds) ----

@pytest.mark.parametrize("debug", [0, 1])
def test_panic_and_debug_fail_keys(tmp_path, debug):
    so = build_so(tmp_path, f"cfg{debug}", ["efi/platform/hvcfg.c"], [f"-DHV_DEBUG={debug}"])
    cfg, errors = parse_cfg(so, b"")
    assert (cfg.panic_halt, cfg.debug_fail, errors) == (False, 0, [])     # panic=reset
    cfg, errors = parse_cfg(so, b"panic=halt\ndebug-fail=guest-cr0\n")
    assert cfg.panic_halt is True
    if debug:
        assert errors == [] and cfg.debug_fail == 3
    else:                                       # RELEASE refuses the key: one clear line
        assert errors == [(2, "debug-build-only")] and cfg.debug_fail == 0
    cfg, errors = parse_cfg(so, b"panic=sometimes\ndebug-fail=everything\n")
    assert cfg.panic_halt is False and cfg.debug_fail == 0
    assert errors == [(1, "bad-value"), (2, "bad-value" if debug else "debug-build-only")]


def test_dsdt_sleep_types(tmp_path):
    so = build_so(tmp_path, "aml", ["efi/platform/aml_sleep.c"])
    so.hv_aml_sleep_type.argtypes = [ctypes.c_char_p, ctypes.c_size_t, ctypes.c_uint]
    # acpi-shim's: NameOp "\_S5_" PackageOp PkgLength NumElements {Zero, Zero, 0, 0}
    shim = b"\x08\\_S5_\x12\x06\x04\x00\x00\x00\x00"
    assert so.hv_aml_sleep_type(shim, len(shim), 5) == 0
    assert so.hv_aml_sleep_type(shim, len(shim), 3) == -1
    # QEMU q35 style: Name (_S3, Package (0x04) {One, One, Zero, Zero}), _S5 with BytePrefix
    q35 = (b"\x10\x20\\_SB_" + b"\x08_S3_\x12\x06\x04\x01\x01\x00\x00" +
           b"\x08_S5_\x12\x08\x04\x0a\x07\x0a\x07\x00\x00")
    assert so.hv_aml_sleep_type(q35, len(q35), 3) == 1
    assert so.hv_aml_sleep_type(q35, len(q35), 5) == 7
    assert so.hv_aml_sleep_type(b"_S3_", 4, 3) == -1       # no NameOp, too short


def test_sleep_state_of_a_pm1a_write(tmp_path):
    """efi/core/sleep.c: SLP_TYP (PM1a_CNT bits 12:10) against the DSDT's \\_S3/\\_S5."""
    so = build_so(tmp_path, "sleep", ["efi/core/sleep.c"])
    so.hv_sleep_state.restype = ctypes.c_char_p
    so.hv_set_sleep_types(1, 0)                 # QEMU q35: \_S3 = 1, \_S5 = 0
    slp_en = 1 << 13
    assert so.hv_sleep_state(slp_en | (1 << 10) | 1) == b"S3"
    assert so.hv_sleep_state(slp_en | 1) == b"S5"
    assert so.hv_sleep_state(slp_en | (5 << 10)) == b"unknown"
    so.hv_set_sleep_types(-1, 0)                # Bochs (acpi-shim): no \_S3
    assert so.hv_sleep_state(slp_en | (1 << 10)) == b"unknown"
