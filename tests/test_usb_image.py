"""The USB image as a user writes it: what is on it, signed with sbsign, and
`usb --dry-run` (no boots; the boot chains are scenarios in edk2-config.yaml)."""
import shutil
import subprocess
import sys

import pytest

from pytool import images

from test_runner_lifecycle import ROOT

HVTOOL = [sys.executable, "-m", "pytool"]


@pytest.fixture(scope="module")
def signed_image(tmp_path_factory):
    out = tmp_path_factory.mktemp("usbimg")
    r = subprocess.run(HVTOOL + ["image", "--out", str(out), "--test-key"], cwd=ROOT,
                       capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr
    return out


def test_image_is_small_and_holds_only_the_hypervisor(signed_image):
    disk = signed_image / "disk.img"
    assert disk.stat().st_size <= 40 * images.MIB
    esp = images.extract_partition(disk, signed_image / "esp-copy.img")
    assert images.esp_list(esp) == ["/EFI/BOOT/BOOTX64.EFI", "/EFI/BOOT/hv.cfg"]
    cfg = images.esp_read(esp, "/EFI/BOOT/hv.cfg").decode()
    assert "next=auto" in cfg.splitlines()      # the machine's own OS boots next


@pytest.mark.skipif(not shutil.which("sbverify"), reason="sbsigntool missing")
def test_image_hypervisor_is_signed_with_the_test_key(signed_image):
    esp = images.extract_partition(signed_image / "disk.img", signed_image / "esp2.img")
    hv = signed_image / "BOOTX64.EFI"
    hv.write_bytes(images.esp_read(esp, "/EFI/BOOT/BOOTX64.EFI"))
    cert = ROOT / "build" / "keys" / "pytool-test.crt"
    ok = subprocess.run(["sbverify", "--cert", str(cert), str(hv)], capture_output=True)
    assert ok.returncode == 0, ok.stderr
    unsigned = subprocess.run(["sbverify", "--cert", str(cert),
                               str(ROOT / "build" / "DEBUG" / "hv.efi")],
                              capture_output=True)
    assert unsigned.returncode != 0
    assert (signed_image / "OVMF_VARS.secboot.fd").is_file()


def test_sign_with_a_missing_key_is_one_line(tmp_path):
    r = subprocess.run(HVTOOL + ["image", "--out", str(tmp_path), "--sign",
                                 str(tmp_path / "k.key"), str(tmp_path / "c.crt")],
                       cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert r.returncode == 2
    assert r.stderr.strip() == f"error: --sign: {tmp_path}/k.key does not exist"


def test_usb_dry_run_lists_the_image_and_writes_nothing(signed_image):
    disk = signed_image / "disk.img"
    before = disk.read_bytes()
    r = subprocess.run(HVTOOL + ["usb", "--dry-run", "--image", str(disk)], cwd=ROOT,
                       capture_output=True, text=True, timeout=60)
    assert r.returncode == 0, r.stderr
    assert "\\EFI\\BOOT\\BOOTX64.EFI" in r.stdout and "| next=auto" in r.stdout
    assert r.stdout.rstrip().endswith("dry run: nothing written")
    assert disk.read_bytes() == before


def test_usb_without_a_device_is_one_line():
    r = subprocess.run(HVTOOL + ["usb"], cwd=ROOT, capture_output=True, text=True,
                       timeout=60)
    assert r.returncode == 2
    assert r.stderr.strip() == "error: give the device to write, e.g. /dev/sdX (or --dry-run)"
