"""Host builds of pure C files of the EFI images as shared libraries, for ctypes."""
from __future__ import annotations

import ctypes
import shutil
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent


def build_so(out_dir: Path, name: str, sources: list[str], defines=()) -> ctypes.CDLL:
    """Compile `sources` (paths relative to the repository) into lib<name>.so."""
    cc = shutil.which("cc") or shutil.which("gcc") or shutil.which("clang")
    if not cc:
        pytest.skip("no host C compiler")
    out = Path(out_dir) / f"lib{name}.so"
    cmd = [cc, "-shared", "-fPIC", "-std=c11", "-Wall", "-Wextra", "-Werror",
           "-Wno-unused-parameter", "-O1", *defines, "-I", str(ROOT / "efi/include"),
           "-o", str(out), *(str(ROOT / s) for s in sources)]
    p = subprocess.run(cmd, capture_output=True, text=True)
    assert p.returncode == 0, f"{' '.join(cmd)}\n{p.stderr}"
    return ctypes.CDLL(str(out))
