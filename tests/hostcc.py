"""Builds pure C from efi/ as a host shared library for ctypes tests (with
UBSan where the compiler has it); skips the test when there is no compiler."""
from __future__ import annotations

import ctypes
import shutil
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent


def host_library(sources: list[Path], out: Path, includes: list[Path] = ()) -> ctypes.CDLL:
    cc = shutil.which("cc") or shutil.which("clang") or shutil.which("gcc")
    if not cc:
        pytest.skip("no host C compiler (cc/clang/gcc) on PATH")
    cmd = [cc, "-shared", "-fPIC", "-std=c11", "-Wall", "-Wextra", "-Werror",
           "-Wno-unused-parameter", "-O1", "-g", "-fsanitize=undefined"]
    for inc in includes:
        cmd += ["-I", str(inc)]
    cmd += ["-o", str(out)] + [str(s) for s in sources]
    p = subprocess.run(cmd, capture_output=True, text=True)
    if p.returncode != 0 and "sanitize" in p.stderr:
        cmd.remove("-fsanitize=undefined")
        p = subprocess.run(cmd, capture_output=True, text=True)
    assert p.returncode == 0, f"{' '.join(cmd)}\n{p.stderr}"
    return ctypes.CDLL(str(out))
