"""Host unit tests for efi/core/insn_len.c: the exiting instruction's length
decoded from its bytes (SVM without NRIPS), built with the host cc."""
import ctypes
import shutil
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
STUBS = """
#include <stdarg.h>
#include <stdint.h>
struct hv_cpu; struct hv_guest_paging;
int hv_guest_read_linear(const struct hv_guest_paging *p, uint64_t la, void *b, unsigned n)
{ return -1; }
void hv_panic(struct hv_cpu *c, const char *fmt, ...) { for (;;) ; }
void hv_log(const char *fmt, ...) { }
"""


@pytest.fixture(scope="module")
def decode(tmp_path_factory):
    cc = shutil.which("cc") or shutil.which("clang")
    if not cc:
        pytest.skip("no host C compiler")
    d = tmp_path_factory.mktemp("insn")
    (d / "stubs.c").write_text(STUBS)
    so = d / "libinsn.so"
    subprocess.run([cc, "-shared", "-fPIC", "-O1", "-I", str(ROOT / "efi/include"), "-o",
                    str(so), str(ROOT / "efi/core/insn_len.c"), str(d / "stubs.c")], check=True)
    fn = ctypes.CDLL(str(so)).hv_insn_len_decode
    fn.restype = ctypes.c_uint
    fn.argtypes = [ctypes.c_char_p, ctypes.c_uint, ctypes.c_bool]
    return lambda b, long_mode=True: fn(bytes(b), len(b), long_mode)


@pytest.mark.parametrize("insn,length", [
    ([0x0F, 0xA2], 2),                          # CPUID
    ([0x0F, 0x32], 2), ([0x0F, 0x30], 2),       # RDMSR, WRMSR
    ([0x0F, 0x01, 0xD9], 3),                    # VMMCALL
    ([0x0F, 0x01, 0xD1], 3),                    # XSETBV
    ([0x0F, 0x01, 0xD8], 3),                    # VMRUN
    ([0x0F, 0x08], 2),                          # INVD
    ([0xF4], 1),                                # HLT
    ([0x66, 0x0F, 0xA2], 3),                    # legal prefixes count
    ([0x2E, 0x3E, 0xF0, 0x0F, 0x01, 0xD9], 6),
    ([0x48, 0x0F, 0x32], 3),                    # REX.W RDMSR
    ([0x66, 0x41, 0x0F, 0x30], 4),
    ([0x48, 0x66, 0x0F, 0xA2], 4),              # REX then a legacy prefix: REX ignored
    ([0x40, 0x48, 0xF3, 0x41, 0x0F, 0x32], 6),  # several REX bytes (the fuzzer's kind)
])
def test_lengths(decode, insn, length):
    assert decode(insn + [0x90] * 4) == length


def test_rex_only_in_long_mode(decode):
    # In 32-bit code 0x48 is DEC EAX, not a prefix: not an exiting instruction.
    assert decode([0x48, 0x0F, 0xA2], long_mode=False) == 0
    assert decode([0x48, 0x0F, 0xA2], long_mode=True) == 3


@pytest.mark.parametrize("insn", [
    [0x90, 0x0F, 0xA2],                         # not at the start
    [0x0F, 0x01, 0x05],                         # 0F 01 with a memory operand (SGDT)
    [0x0F, 0xA2][:1],                           # truncated
    [0x66] * 14 + [0x0F, 0xA2],                 # longer than 15 bytes
    [0x89, 0x08],                               # a store: not this decoder's
])
def test_rejects(decode, insn):
    assert decode(insn) == 0
