"""efi/lib/devpath.c built for the host: a file's device path is the volume's
path, one FILEPATH node (UEFI 2.10 10.3.5.4, UCS-2, NUL-terminated), End."""
from __future__ import annotations

import ctypes
from pathlib import Path

import pytest

from hostcc import host_library

ROOT = Path(__file__).resolve().parent.parent
# A PciRoot(0)/Pci(1,1) volume path, then End.
VOL = bytes([2, 1, 12, 0]) + bytes(8) + bytes([1, 1, 6, 0, 1, 1]) + bytes([0x7F, 0xFF, 4, 0])


@pytest.fixture(scope="module")
def lib(tmp_path_factory):
    so = host_library([ROOT / "efi/lib/devpath.c"],
                      tmp_path_factory.mktemp("devpath") / "libdevpath.so",
                      [ROOT / "efi/include", Path("/usr/include/efi"),
                       Path("/usr/include/efi/x86_64")])
    so.hv_file_dp.restype = ctypes.c_size_t
    so.hv_file_dp.argtypes = [ctypes.c_char_p, ctypes.c_char_p, ctypes.c_void_p,
                              ctypes.c_size_t]
    return so


def test_file_node_follows_the_volume(lib):
    buf = ctypes.create_string_buffer(256)
    n = lib.hv_file_dp(VOL, b"\\EFI\\hv\\vmlinuz.efi", buf, 256)
    name = "\\EFI\\hv\\vmlinuz.efi\0".encode("utf-16-le")
    node = bytes([4, 4, 4 + len(name), 0]) + name
    assert buf.raw[:n] == VOL[:-4] + node + bytes([0x7F, 0xFF, 4, 0])


def test_too_small_a_buffer_writes_nothing(lib):
    buf = ctypes.create_string_buffer(b"\xAA" * 64, 64)
    assert lib.hv_file_dp(VOL, b"\\EFI\\hv\\vmlinuz.efi", buf, 64) == 0
    assert buf.raw == b"\xAA" * 64
