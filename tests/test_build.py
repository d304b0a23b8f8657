"""pytool.build and pytool.validate: real clang/lld-link builds.

The incremental and error tests build a small scratch tree (efi/lib and
efi/include copied from the repo plus a tiny app), so they never touch
files other people are editing; the validation tests use the real images.
"""
from __future__ import annotations

import os
import shutil
import time
from pathlib import Path

import pefile
import pytest
import yaml

from pytool import build
from pytool.build import BuildError, build_images
from pytool.validate import ImageValidationError, validate_image

ROOT = Path(__file__).resolve().parent.parent

pytestmark = pytest.mark.skipif(
    not (shutil.which("clang") and shutil.which("lld-link")),
    reason="clang or lld-link missing (python3 -m pytool.hostsetup)")


def repo_build_cfg() -> dict:
    return yaml.safe_load((ROOT / "edk2-config.yaml").read_text())["build"]


APP_C = r"""
#include "hv.h"
#include "hv_efi.h"
#include "hv_lib.h"
#include "extra.h"

EFI_STATUS EFIAPI efi_main(EFI_HANDLE image, EFI_SYSTEM_TABLE *st)
{
    serial_init();
    hv_log("APP: %d\n", EXTRA);
    return EFI_SUCCESS;
}
"""


@pytest.fixture
def scratch(tmp_path):
    """A minimal source tree: app/ + efi/lib + efi/include."""
    root = tmp_path / "src"
    shutil.copytree(ROOT / "efi/lib", root / "efi/lib")
    shutil.copytree(ROOT / "efi/include", root / "efi/include")
    (root / "app").mkdir()
    (root / "app/app.c").write_text(APP_C)
    (root / "app/extra.h").write_text("#define EXTRA 7\n")
    cfg = {
        "common_cflags": repo_build_cfg()["common_cflags"],
        "targets": {"DEBUG": {"cflags": ["-O1", "-g"]},
                    "RELEASE": {"cflags": ["-O2"]}},
        "images": {"app": {"dirs": ["app", "efi/lib"]}},
    }
    return root, cfg


def run_build(root, cfg, target="DEBUG"):
    lines: list[str] = []
    out = build_images(root, cfg, target, log=lines.append)
    return out, lines


def compiled(lines):
    return sorted(l.split(" cc ", 1)[1] for l in lines if " cc " in l)


def bump(p: Path):
    t = time.time() + 5
    os.utime(p, (t, t))


def test_incremental(scratch):
    root, cfg = scratch
    out, lines = run_build(root, cfg)
    efi = out["app"]
    assert efi == root / "build/DEBUG/app.efi" and efi.is_file()
    assert "app/app.c" in compiled(lines) and any(" link " in l for l in lines)
    log = (root / "build/DEBUG/build.log").read_text()
    assert "app/app.c" in log

    # Nothing changed: no compile, no link.
    mtime = efi.stat().st_mtime_ns
    _, lines = run_build(root, cfg)
    assert compiled(lines) == [] and not any(" link " in l for l in lines)
    assert efi.stat().st_mtime_ns == mtime

    # A private header: only its includer.
    bump(root / "app/extra.h")
    _, lines = run_build(root, cfg)
    assert compiled(lines) == ["app/app.c"]
    assert any(" link " in l for l in lines)

    # A shared header: every file that includes it.
    bump(root / "efi/include/hv_lib.h")
    _, lines = run_build(root, cfg)
    assert "app/app.c" in compiled(lines) and "efi/lib/fmt.c" in compiled(lines)

    # Flags changed (a new -D): everything.
    cfg["targets"]["DEBUG"]["cflags"].append("-DNEW_FLAG=1")
    _, lines = run_build(root, cfg)
    assert len(compiled(lines)) == 1 + len(list((root / "efi/lib").glob("*.c")))

    # Another target builds into its own directory.
    out, _ = run_build(root, cfg, "RELEASE")
    assert out["app"] == root / "build/RELEASE/app.efi"
    validate_image(out["app"])


def test_compile_error(scratch):
    root, cfg = scratch
    (root / "app/app.c").write_text(APP_C + "\nint broken(void) { return undeclared_thing; }\n")
    with pytest.raises(BuildError) as ei:
        run_build(root, cfg)
    msg = str(ei.value)
    assert "app/app.c" in msg and "undeclared_thing" in msg and "clang" in msg
    assert "undeclared_thing" in (root / "build/DEBUG/build.log").read_text()


def test_warning_is_error(scratch):
    root, cfg = scratch
    (root / "app/app.c").write_text(APP_C + "\nstatic int unused_fn(void) { return 1; }\n")
    with pytest.raises(BuildError, match="unused_fn"):
        run_build(root, cfg)


def test_missing_clang(scratch, monkeypatch):
    root, cfg = scratch
    real = shutil.which
    monkeypatch.setattr(build.shutil, "which",
                        lambda n, *a, **k: None if n == "clang" else real(n, *a, **k))
    with pytest.raises(BuildError, match=r"^clang not found: run python3 -m pytool.hostsetup$"):
        run_build(root, cfg)


def test_unknown_image(scratch):
    root, cfg = scratch
    with pytest.raises(BuildError, match="unknown image"):
        build_images(root, cfg, "DEBUG", ["nope"], log=lambda s: None)


# ---- the real images -------------------------------------------------------

@pytest.fixture(scope="module")
def real_build_dir(tmp_path_factory):
    return tmp_path_factory.mktemp("realbuild")


@pytest.fixture(scope="module")
def hello_image(real_build_dir):
    # hello links only efi/apps/hello + efi/lib: it is the stable base for
    # the doctored-image tests, whatever state the backends are in.
    return build_images(ROOT, repo_build_cfg(), "DEBUG", ["hello"],
                        log=lambda s: None, build_dir=real_build_dir)["hello"]


def test_hello_image_validates(hello_image):
    validate_image(hello_image)


def test_hv_image_builds_and_validates(real_build_dir):
    out = build_images(ROOT, repo_build_cfg(), "DEBUG", ["hv"],
                       log=lambda s: None, build_dir=real_build_dir)
    validate_image(out["hv"])


def doctor(src: Path, dst: Path, change) -> Path:
    pe = pefile.PE(str(src))
    change(pe)
    pe.write(str(dst))
    pe.close()
    return dst


def _clear_nx(pe):
    pe.OPTIONAL_HEADER.DllCharacteristics &= ~0x0100


def _strip_relocs(pe):
    d = pe.OPTIONAL_HEADER.DATA_DIRECTORY[5]
    d.VirtualAddress = 0
    d.Size = 0


def _fake_imports(pe):
    d = pe.OPTIONAL_HEADER.DATA_DIRECTORY[1]
    d.VirtualAddress = pe.sections[1].VirtualAddress
    d.Size = 40


def _driver_subsystem(pe):
    pe.OPTIONAL_HEADER.Subsystem = 11


def _wx_text(pe):
    pe.sections[0].Characteristics |= 0x80000000


def _misalign(pe):
    pe.OPTIONAL_HEADER.SectionAlignment = 0x200


@pytest.mark.parametrize("change,rule", [
    (_clear_nx, "nx-compat"),
    (_strip_relocs, "base-relocations"),
    (_fake_imports, "no-imports"),
    (_driver_subsystem, "edk2-subsystem"),
    (_wx_text, "edk2-data-code-separation"),
    (_misalign, "edk2-section-alignment"),
])
def test_doctored_image_fails(hello_image, tmp_path, change, rule):
    bad = doctor(hello_image, tmp_path / "bad.efi", change)
    with pytest.raises(ImageValidationError) as ei:
        validate_image(bad)
    assert ei.value.rule == rule
    assert rule in str(ei.value)


def test_not_a_pe(tmp_path):
    p = tmp_path / "x.efi"
    p.write_bytes(b"MZ nonsense")
    with pytest.raises(ImageValidationError) as ei:
        validate_image(p)
    assert ei.value.rule == "pe-format"
