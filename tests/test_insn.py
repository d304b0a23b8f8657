"""The xAPIC store decoder (efi/core/insn.c) built for the host with a fake
guest (tests/c/insn_harness.c): every encoding that can store 32 bits to
the page decodes to the right length and value, everything else is refused
(the hypervisor answers #GP, never a panic), and nothing past the bytes
that could be fetched is ever used."""
from __future__ import annotations

import ctypes
from pathlib import Path

import pytest

from hostcc import host_library

ROOT = Path(__file__).resolve().parent.parent
MOV, ALU, STOS = range(3)
ADD, OR, ADC, SBB, AND, SUB, XOR = range(7)
NOT, NEG, INC, DEC = range(8, 12)
CF, PF, AF, ZF, SF, OF = 1, 4, 0x10, 0x40, 0x80, 0x800

# Distinct register values: RAX=0x1000000a, RCX=0x1000000c, ... R8=0x10000008.
GPR = [0x10000000 + i for i in range(16)]
GPR[0], GPR[1], GPR[2], GPR[4] = 0xAAAA0000, 0xCCCC0001, 0xDDDD0002, 0x5555_0004


@pytest.fixture(scope="module")
def lib(tmp_path_factory):
    so = host_library([ROOT / "efi/core/insn.c", ROOT / "tests/c/insn_harness.c"],
                      tmp_path_factory.mktemp("insn") / "libinsn.so",
                      [ROOT / "efi/include", ROOT / "efi/core"])
    so.t_decode.argtypes = [ctypes.c_char_p, ctypes.c_uint, ctypes.c_uint, ctypes.c_int,
                            ctypes.POINTER(ctypes.c_uint64), ctypes.POINTER(ctypes.c_uint32)]
    so.hv_store_alu.argtypes = [ctypes.c_uint, ctypes.c_uint32, ctypes.c_uint32,
                                ctypes.POINTER(ctypes.c_uint64)]
    so.hv_store_alu.restype = ctypes.c_uint32
    return so


def decode(lib, hexbytes: str, mode: int = 64, gap: int = 8):
    raw = bytes.fromhex(hexbytes)
    out = (ctypes.c_uint32 * 7)()
    rc = lib.t_decode(raw, len(raw), gap, mode, (ctypes.c_uint64 * 16)(*GPR), out)
    if rc:
        return None
    length, kind, alu, src, xreg, rep, asize = list(out)
    return dict(len=length, kind=kind, alu=alu, src=src, xchg=ctypes.c_int32(xreg).value,
                rep=bool(rep), asize=asize)


CASES = [  # bytes, mode, length, kind, alu, src
    ("8917", 64, 2, MOV, None, GPR[2] & 0xFFFFFFFF),            # mov %edx,(%rdi)
    ("c70778563412", 64, 6, MOV, None, 0x12345678),             # movl $imm32,(%rdi)
    ("a3" + "8000e0fe00000000", 64, 9, MOV, None, GPR[0]),      # mov %eax,moffs64
    ("67a38000e0fe", 64, 6, MOV, None, GPR[0]),                 # addr32 moffs32
    ("a38000e0fe", 32, 5, MOV, None, GPR[0]),                   # 32-bit code: moffs32
    ("0fc317", 64, 3, MOV, None, GPR[2] & 0xFFFFFFFF),          # movnti
    ("0917", 64, 2, ALU, OR, GPR[2] & 0xFFFFFFFF),
    ("0117", 64, 2, ALU, ADD, GPR[2] & 0xFFFFFFFF),
    ("1117", 64, 2, ALU, ADC, GPR[2] & 0xFFFFFFFF),
    ("1917", 64, 2, ALU, SBB, GPR[2] & 0xFFFFFFFF),
    ("2117", 64, 2, ALU, AND, GPR[2] & 0xFFFFFFFF),
    ("2917", 64, 2, ALU, SUB, GPR[2] & 0xFFFFFFFF),
    ("3117", 64, 2, ALU, XOR, GPR[2] & 0xFFFFFFFF),
    ("810f00000010", 64, 6, ALU, OR, 0x10000000),              # orl $imm32
    ("8327f0", 64, 3, ALU, AND, 0xFFFFFFF0),                    # andl $imm8 (sign-extended)
    ("830700", 64, 3, ALU, ADD, 0),                             # addl $0
    ("f717", 64, 2, ALU, NOT, None), ("f71f", 64, 2, ALU, NEG, None),
    ("ff07", 64, 2, ALU, INC, None), ("ff0f", 64, 2, ALU, DEC, None),
    ("f00917", 64, 3, ALU, OR, GPR[2] & 0xFFFFFFFF),            # lock or
    ("3e3e2e8917", 64, 5, MOV, None, GPR[2] & 0xFFFFFFFF),      # redundant prefixes
    ("f38917", 64, 3, MOV, None, GPR[2] & 0xFFFFFFFF),          # rep (ignored) mov
    ("26368957" "00", 64, 5, MOV, None, GPR[2] & 0xFFFFFFFF),   # es ss mov disp8
    ("899700000000", 64, 6, MOV, None, GPR[2] & 0xFFFFFFFF),    # disp32
    ("891427", 64, 3, MOV, None, GPR[2] & 0xFFFFFFFF),          # SIB, base rdi
    ("89142580000000", 64, 7, MOV, None, GPR[2] & 0xFFFFFFFF),  # SIB, no base: disp32
    ("891578563412", 64, 6, MOV, None, GPR[2] & 0xFFFFFFFF),    # RIP-relative
    ("448907", 64, 3, MOV, None, GPR[8] & 0xFFFFFFFF),          # REX.R: %r8d
    ("408917", 64, 3, MOV, None, GPR[2] & 0xFFFFFFFF),          # empty REX
    ("8927", 64, 2, MOV, None, GPR[4] & 0xFFFFFFFF),            # mov %esp: RSP from the VMCS
    ("8917", 32, 2, MOV, None, GPR[2] & 0xFFFFFFFF),            # 32-bit code
    ("668917", 16, 3, MOV, None, GPR[2] & 0xFFFFFFFF),          # 16-bit code, 66: 32-bit
    ("66678917", 16, 4, MOV, None, GPR[2] & 0xFFFFFFFF),        # and 67: 32-bit addressing
]


@pytest.mark.parametrize("hexbytes,mode,length,kind,alu,src", CASES,
                         ids=[f"{c[0]}-{c[1]}" for c in CASES])
def test_every_store_encoding(lib, hexbytes, mode, length, kind, alu, src):
    d = decode(lib, hexbytes, mode)
    assert d is not None, f"{hexbytes} refused"
    assert d["len"] == length and d["kind"] == kind
    if alu is not None:
        assert d["alu"] == alu
    if src is not None:
        assert d["src"] == src


def test_xchg_and_stos(lib):
    d = decode(lib, "8717")
    assert d["kind"] == MOV and d["xchg"] == 2 and d["len"] == 2
    assert decode(lib, "448707")["xchg"] == 8                  # REX.R: %r8d
    assert decode(lib, "4c8707") is None                       # REX.W: a 64-bit XCHG
    d = decode(lib, "ab")
    assert d["kind"] == STOS and not d["rep"] and d["asize"] == 8 and d["src"] == GPR[0]
    d = decode(lib, "f3ab")
    assert d["rep"] and d["len"] == 2
    assert decode(lib, "67f3ab")["asize"] == 4
    assert decode(lib, "ab", mode=32)["asize"] == 4
    assert decode(lib, "66ab", mode=16)["asize"] == 2


@pytest.mark.parametrize("hexbytes,mode", [
    ("668917", 64),           # 16-bit store
    ("488917", 64),           # 64-bit store
    ("8817", 64),             # byte store
    ("833f00", 64),           # CMP does not store
    ("89d7", 64),             # register operand
    ("8727", 64),             # XCHG with RSP
    ("c74700", 64),           # C7 /0 disp8 with its immediate not fetchable
    ("0f0b", 64),             # UD2
    ("f727", 64),             # MUL: not a store
    ("8917", 16),             # 16-bit code without 66: a 16-bit store
    ("c5f97e07", 64),         # VEX vmovd
    ("66" * 14 + "8917", 64), # longer than 15 bytes
])
def test_refused(lib, hexbytes, mode):
    assert decode(lib, hexbytes, mode, gap=0) is None


def test_never_past_the_fetched_bytes(lib):
    """An instruction at the very end of fetchable memory: a complete one
    decodes, a truncated one is refused (the decoder used to read one byte
    past its buffer)."""
    assert decode(lib, "c70778563412", gap=0)["len"] == 6
    for cut in range(1, 6):
        assert decode(lib, "c70778563412"[:2 * cut], gap=0) is None, cut
    assert decode(lib, "a38000e0fe000000", gap=0) is None     # moffs64 one byte short
    assert decode(lib, "891427", gap=0)["len"] == 3
    assert decode(lib, "8914", gap=0) is None                  # SIB byte missing


@pytest.mark.parametrize("alu,a,b,fin,want,flags", [
    (ADD, 0xFFFFFFFF, 1, 0, 0, CF | PF | AF | ZF),
    (SUB, 0, 1, 0, 0xFFFFFFFF, CF | PF | AF | SF),
    (ADC, 1, 1, CF, 3, PF),
    (SBB, 5, 1, CF, 3, PF),
    (OR, 0x80000000, 0, 0, 0x80000000, SF | PF),
    (XOR, 7, 7, CF | OF, 0, ZF | PF),
    (AND, 0xF0, 0x0F, 0, 0, ZF | PF),
    (INC, 0x7FFFFFFF, 0, CF, 0x80000000, CF | OF | SF | AF | PF),    # INC keeps CF
    (DEC, 1, 0, 0, 0, ZF | PF),
    (NEG, 1, 0, 0, 0xFFFFFFFF, CF | SF | PF | AF),
    (NOT, 0x0F0F0F0F, 0, OF | ZF, 0xF0F0F0F0, OF | ZF),           # NOT keeps flags
])
def test_alu_flags(lib, alu, a, b, fin, want, flags):
    f = ctypes.c_uint64(0x202 | fin)                               # bit 1 and IF as well
    assert lib.hv_store_alu(alu, a, b, ctypes.byref(f)) == want
    assert f.value & 0x8D5 == flags
    assert f.value & ~0x8D5 == 0x202, "only the arithmetic flags change"
