"""Builds pure C from efi/ as a host shared library for ctypes tests (with
UBSan where the compiler has it); skips the test when there is no compiler."""
from __future__ import annotations

import ctypes
import shutil
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent


def host_library(sources: list[Path], out: Path, includes: list[Path] = (),
                 defines: list[str] = ()) -> ctypes.CDLL:
    cc = shutil.which("cc") or shutil.which("clang") or shutil.which("gcc")
    if not cc:
        pytest.skip("no host C compiler (cc/clang/gcc) on PATH")
    cmd = [cc, "-shared", "-fPIC", "-std=c11", "-Wall", "-Wextra", "-Werror",
           "-Wno-unused-parameter", "-O1", "-g", "-fsanitize=undefined"]
    for inc in includes:
        cmd += ["-I", str(inc)]
    cmd += list(defines)
    cmd += ["-o", str(out)] + [str(s) for s in sources]
    p = subprocess.run(cmd, capture_output=True, text=True)
    if p.returncode != 0 and "sanitize" in p.stderr:
        cmd.remove("-fsanitize=undefined")
        p = subprocess.run(cmd, capture_output=True, text=True)
    assert p.returncode == 0, f"{' '.join(cmd)}\n{p.stderr}"
    return ctypes.CDLL(str(out))


def build_so(out_dir: Path, name: str, sources: list[str], defines=()) -> ctypes.CDLL:
    """`sources` (relative to the repository) as lib<name>.so, with efi/include."""
    return host_library([ROOT / s for s in sources], Path(out_dir) / f"lib{name}.so",
                        [ROOT / "efi/include"], defines)


# ---- struct hv_cfg (efi/include/hv_cfg.h), for the hv.cfg parser tests ----------------
CFG_PATH_MAX = 256
CFG_ARGS_MAX = 1024


class Cfg(ctypes.Structure):
    _fields_ = [
        ("hypervisor", ctypes.c_bool),
        ("log", ctypes.c_int),
        ("next", ctypes.c_char * CFG_PATH_MAX),
        ("args", ctypes.c_char * CFG_ARGS_MAX),
        ("kernel", ctypes.c_char * CFG_PATH_MAX),
        ("initrd", ctypes.c_char * CFG_PATH_MAX),
        ("append", ctypes.c_char * CFG_ARGS_MAX),
        ("next_auto", ctypes.c_bool),
        ("panic_halt", ctypes.c_bool),
        ("debug_fail", ctypes.c_int),
    ]


CFG_ERR_FN = ctypes.CFUNCTYPE(None, ctypes.c_void_p, ctypes.c_uint, ctypes.c_char_p)


def parse_cfg(lib, data: bytes) -> tuple[Cfg, list[tuple[int, str]]]:
    """hv_cfg_defaults + hv_cfg_parse through lib; returns (cfg, [(line, reason)])."""
    cfg = Cfg()
    errors: list[tuple[int, str]] = []

    @CFG_ERR_FN
    def on_err(ctx, line, reason):
        errors.append((line, reason.decode()))

    lib.hv_cfg_parse.argtypes = [ctypes.c_char_p, ctypes.c_size_t, ctypes.POINTER(Cfg),
                                 CFG_ERR_FN, ctypes.c_void_p]
    lib.hv_cfg_parse.restype = ctypes.c_int
    lib.hv_cfg_defaults.argtypes = [ctypes.POINTER(Cfg)]
    lib.hv_cfg_defaults(ctypes.byref(cfg))
    n = lib.hv_cfg_parse(data, len(data), ctypes.byref(cfg), on_err, None)
    assert n == len(errors)
    return cfg, errors
