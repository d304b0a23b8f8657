"""PE/COFF checks every EFI image must pass before it goes on an ESP.

validate_image() runs edk2-pytool-extensions' image validation with the APP
profile (W^X sections, 4 KiB section alignment, subsystem), then our own
rules.  The first rule that breaks raises ImageValidationError naming it.
"""
from __future__ import annotations

import logging
from pathlib import Path

import pefile
from edk2toolext import image_validation as iv

IMAGE_SUBSYSTEM_EFI_APPLICATION = 10
IMAGE_FILE_MACHINE_AMD64 = 0x8664
DLLCHAR_NX_COMPAT = 0x0100
DIR_IMPORT = pefile.DIRECTORY_ENTRY["IMAGE_DIRECTORY_ENTRY_IMPORT"]
DIR_BASERELOC = pefile.DIRECTORY_ENTRY["IMAGE_DIRECTORY_ENTRY_BASERELOC"]

# edk2 test class -> the rule name we report.
EDK2_RULES = (
    (iv.TestWriteExecuteFlags, "edk2-data-code-separation"),
    (iv.TestSectionAlignment, "edk2-section-alignment"),
    (iv.TestSubsystemValue, "edk2-subsystem"),
)


class ImageValidationError(Exception):
    """An image broke a rule; .rule names it, .detail says how."""

    def __init__(self, rule: str, detail: str):
        self.rule = rule
        self.detail = detail
        super().__init__(f"image validation rule {rule} failed: {detail}")


class _Collect(logging.Handler):
    def __init__(self) -> None:
        super().__init__(logging.WARNING)
        self.lines: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.lines.append(record.getMessage())


def _run_edk2(pe: pefile.PE, path: Path) -> None:
    for cls, rule in EDK2_RULES:
        manager = iv.TestManager()
        manager.add_test(cls())
        collect = _Collect()
        root = logging.getLogger()
        root.addHandler(collect)
        try:
            result = manager.run_tests(pe, "APP")
        finally:
            root.removeHandler(collect)
        if result == iv.Result.FAIL:
            detail = "; ".join(collect.lines) or "failed"
            raise ImageValidationError(rule, f"{path.name}: {detail}")


def validate_image(path: Path) -> None:
    path = Path(path)
    try:
        pe = pefile.PE(str(path))
    except (pefile.PEFormatError, OSError) as e:
        raise ImageValidationError("pe-format", f"{path}: {e}") from None
    try:
        if pe.FILE_HEADER.Machine != IMAGE_FILE_MACHINE_AMD64:
            raise ImageValidationError(
                "machine-x64", f"{path.name}: machine {pe.FILE_HEADER.Machine:#x}")
        _run_edk2(pe, path)
        opt = pe.OPTIONAL_HEADER
        if opt.Subsystem != IMAGE_SUBSYSTEM_EFI_APPLICATION:
            raise ImageValidationError(
                "subsystem-efi-application",
                f"{path.name}: subsystem {opt.Subsystem}, want "
                f"{IMAGE_SUBSYSTEM_EFI_APPLICATION}")
        if not opt.DllCharacteristics & DLLCHAR_NX_COMPAT:
            raise ImageValidationError(
                "nx-compat", f"{path.name}: DllCharacteristics "
                f"{opt.DllCharacteristics:#06x} lacks NX_COMPAT")
        dirs = opt.DATA_DIRECTORY
        reloc = dirs[DIR_BASERELOC] if len(dirs) > DIR_BASERELOC else None
        if reloc is None or not reloc.VirtualAddress or not reloc.Size:
            raise ImageValidationError(
                "base-relocations", f"{path.name}: no base relocation directory "
                "(firmware may load the image anywhere)")
        imports = dirs[DIR_IMPORT] if len(dirs) > DIR_IMPORT else None
        if imports is not None and (imports.VirtualAddress or imports.Size):
            raise ImageValidationError(
                "no-imports", f"{path.name}: has an import directory; an EFI "
                "image cannot import DLLs")
    finally:
        pe.close()
