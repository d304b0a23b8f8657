"""Host unit tests for efi/core/mtrr.c (pure logic, built with the host cc)."""
import ctypes
import shutil
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
UC, WC, WT, WP, WB = 0, 1, 4, 5, 6
VALID = 1 << 11
GIB = 1 << 30
MIB = 1 << 20


class Var(ctypes.Structure):
    _fields_ = [("base", ctypes.c_uint64), ("mask", ctypes.c_uint64)]


class State(ctypes.Structure):
    _fields_ = [("enabled", ctypes.c_bool), ("fixed_enabled", ctypes.c_bool),
                ("def_type", ctypes.c_uint8), ("fixed", ctypes.c_uint8 * 88),
                ("nvar", ctypes.c_uint), ("var", Var * 32), ("phys_mask", ctypes.c_uint64)]


@pytest.fixture(scope="module")
def lib(tmp_path_factory):
    cc = shutil.which("cc") or shutil.which("clang")
    if not cc:
        pytest.skip("no host C compiler")
    so = tmp_path_factory.mktemp("mtrr") / "libmtrr.so"
    subprocess.run([cc, "-shared", "-fPIC", "-O1", "-o", str(so),
                    str(ROOT / "efi/core/mtrr.c")], check=True)
    lib = ctypes.CDLL(str(so))
    lib.mtrr_range_type.restype = ctypes.c_int
    lib.mtrr_range_type.argtypes = [ctypes.POINTER(State), ctypes.c_uint64, ctypes.c_uint64]
    return lib


def state(def_type=WB, var=(), fixed=None):
    s = State(enabled=True, fixed_enabled=fixed is not None, def_type=def_type,
              phys_mask=(1 << 40) - 1)
    for i, t in enumerate(fixed or []):
        s.fixed[i] = t
    s.nvar = len(var)
    for i, (base, size, t) in enumerate(var):
        s.var[i] = Var(base | t, (((1 << 40) - 1) & ~(size - 1)) | VALID)
    return s


def rt(lib, s, base, size):
    return lib.mtrr_range_type(ctypes.byref(s), base, size)


def test_disabled_is_uc(lib):
    s = state()
    s.enabled = False
    assert rt(lib, s, 0, GIB) == UC


def test_default_type_when_nothing_matches(lib):
    assert rt(lib, state(WB), 4 * GIB, GIB) == WB


def test_pci_hole_uc_splits_the_fourth_gib(lib):
    s = state(WB, var=[(3 * GIB, GIB, UC)])
    assert rt(lib, s, 3 * GIB, GIB) == UC
    assert rt(lib, s, 2 * GIB, GIB) == WB
    s = state(WB, var=[(0xE0000000, 512 * MIB, UC)])
    assert rt(lib, s, 3 * GIB, GIB) == -1          # half UC, half WB
    assert rt(lib, s, 0xE0000000, 2 * MIB) == UC


def test_overlap_precedence(lib):
    assert rt(lib, state(UC, var=[(0, GIB, WB), (0, GIB, UC)]), 0, 2 * MIB) == UC
    assert rt(lib, state(UC, var=[(0, GIB, WB), (0, GIB, WT)]), 0, 2 * MIB) == WT
    assert rt(lib, state(UC, var=[(0, GIB, WB), (0, GIB, WC)]), 0, 2 * MIB) == UC


def test_fixed_ranges_below_1mib(lib):
    fixed = [WB] * 88
    fixed[16] = UC                                   # 0xA0000-0xA3FFF
    s = state(WB, fixed=fixed)
    assert rt(lib, s, 0, 4096) == WB
    assert rt(lib, s, 0xA0000, 4096) == UC
    assert rt(lib, s, 0x80000, 0x20000) == WB
    assert rt(lib, s, 0, 2 * MIB) == -1              # straddles 1 MiB
