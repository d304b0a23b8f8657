"""pytool.images: ESP contents, GPT structure and CRCs, OVMF vars store."""
import shutil
import struct
import subprocess
import uuid
import zlib
from pathlib import Path

import pytest

from pytool import images
from pytool.images import ESP_TYPE_GUID, MIB, SECTOR, ImageError

needs_mtools = pytest.mark.skipif(shutil.which("mformat") is None, reason="mtools missing")
OVMF_VARS = [Path("/usr/share/OVMF/OVMF_VARS_4M.fd"), Path("/usr/share/OVMF/OVMF_VARS.fd")]


@pytest.fixture
def esp(tmp_path):
    src = tmp_path / "hello.efi"
    src.write_bytes(b"MZ" + bytes(range(256)) * 40)
    return images.build_esp(tmp_path / "esp.img", {
        "\\EFI\\BOOT\\BOOTX64.EFI": src,
        "/EFI/BOOT/hv.cfg": b"hypervisor=on\n",
        "EFI\\hv\\payload.efi": b"payload",
    }, size_mib=40)


@needs_mtools
def test_esp_contents(esp, tmp_path):
    assert esp.stat().st_size == 40 * MIB
    assert images.esp_list(esp) == ["/EFI/BOOT/BOOTX64.EFI", "/EFI/BOOT/hv.cfg",
                                    "/EFI/hv/payload.efi"]
    assert images.esp_read(esp, "\\EFI\\BOOT\\hv.cfg") == b"hypervisor=on\n"
    assert images.esp_read(esp, "/EFI/BOOT/BOOTX64.EFI") == \
        (tmp_path / "hello.efi").read_bytes()
    info = subprocess.run(["minfo", "-i", str(esp), "::"], capture_output=True, text=True,
                          env={"MTOOLS_SKIP_CHECK": "1"}).stdout
    assert "FAT32" in info or "fat32" in info.lower()


@needs_mtools
def test_esp_small_is_fat16_or_12(tmp_path):
    img = images.build_esp(tmp_path / "small.img", {"/a/b.txt": b"x"}, size_mib=4)
    assert img.stat().st_size == 4 * MIB
    assert images.esp_read(img, "/a/b.txt") == b"x"


@needs_mtools
def test_esp_grows_when_files_do_not_fit(tmp_path):
    big = tmp_path / "big.bin"
    big.write_bytes(b"\xa5" * (5 * MIB))
    img = images.build_esp(tmp_path / "esp.img", {"/EFI/hv/vmlinuz": big}, size_mib=2)
    assert img.stat().st_size > 5 * MIB
    assert images.esp_read(img, "/EFI/hv/vmlinuz") == big.read_bytes()


def test_esp_missing_file_is_clear(tmp_path):
    with pytest.raises(ImageError, match="nope.efi does not exist"):
        images.build_esp(tmp_path / "esp.img", {"/EFI/BOOT/BOOTX64.EFI": tmp_path / "nope.efi"})


def test_esp_bad_path(tmp_path):
    with pytest.raises(ImageError, match="bad ESP path"):
        images.build_esp(tmp_path / "esp.img", {"/EFI/../x": b""})


def test_esp_path_normalisation():
    assert images.esp_path("\\EFI\\BOOT\\BOOTX64.EFI") == "/EFI/BOOT/BOOTX64.EFI"
    assert images.esp_path("EFI//hv/x") == "/EFI/hv/x"


def _fake_esp(tmp_path, size=3 * MIB + 5):
    p = tmp_path / "fake-esp.img"
    p.write_bytes(bytes([7]) * size)
    return p


def test_gpt_layout_and_crcs(tmp_path):
    esp = _fake_esp(tmp_path)
    disk = images.build_gpt_disk(esp, tmp_path / "disk.img")
    raw = disk.read_bytes()
    total = len(raw) // SECTOR
    assert len(raw) % SECTOR == 0
    # protective MBR
    assert raw[510:512] == b"\x55\xaa"
    assert raw[446 + 4] == 0xEE
    assert struct.unpack_from("<II", raw, 446 + 8) == (1, total - 1)
    # primary header: CRC over 92 bytes with the CRC field zeroed
    hdr = raw[SECTOR:SECTOR + 92]
    assert hdr[:8] == b"EFI PART"
    crc = struct.unpack_from("<I", hdr, 16)[0]
    assert zlib.crc32(hdr[:16] + bytes(4) + hdr[20:]) == crc
    my, alt, first, last = struct.unpack_from("<QQQQ", hdr, 24)
    assert (my, alt, first, last) == (1, total - 1, 34, total - 34)
    elba, n, esz, ecrc = struct.unpack_from("<QIII", hdr, 72)
    assert (elba, n, esz) == (2, 128, 128)
    ents = raw[2 * SECTOR:(2 + 32) * SECTOR]
    assert zlib.crc32(ents) == ecrc
    # backup header at the last LBA, entries right before it
    bhdr = raw[(total - 1) * SECTOR:(total - 1) * SECTOR + 92]
    assert struct.unpack_from("<QQ", bhdr, 24) == (total - 1, 1)
    assert struct.unpack_from("<Q", bhdr, 72)[0] == total - 33
    assert raw[(total - 33) * SECTOR:(total - 1) * SECTOR] == ents
    # the partition: ESP type, 1 MiB aligned, holding the ESP bytes
    info = images.read_gpt(disk)
    (p,) = info.partitions
    assert p.type_guid == ESP_TYPE_GUID
    assert p.first_lba == 2048 and p.first_lba * SECTOR % MIB == 0
    assert p.name == "EFI System Partition"
    assert p.last_lba <= info.last_usable
    assert raw[p.first_lba * SECTOR:p.first_lba * SECTOR + esp.stat().st_size] == \
        esp.read_bytes()
    assert p.size_bytes == 4 * MIB   # rounded up to whole MiB


def test_gpt_is_deterministic_and_guids_overridable(tmp_path):
    esp = _fake_esp(tmp_path)
    a = images.build_gpt_disk(esp, tmp_path / "a.img").read_bytes()
    b = images.build_gpt_disk(esp, tmp_path / "b.img").read_bytes()
    assert a == b
    g = uuid.UUID("12345678-1234-4234-8234-123456789abc")
    info = images.read_gpt(images.build_gpt_disk(esp, tmp_path / "c.img", disk_guid=g,
                                                 part_guid=g))
    assert info.disk_guid == g and info.partitions[0].part_guid == g


def test_read_gpt_detects_corruption(tmp_path):
    disk = images.build_gpt_disk(_fake_esp(tmp_path), tmp_path / "disk.img")
    with open(disk, "r+b") as f:
        f.seek(2 * SECTOR + 56 + 2)      # inside the partition name
        f.write(b"?")
    with pytest.raises(ImageError, match="entry array CRC"):
        images.read_gpt(disk)


def test_extract_partition_round_trip(tmp_path):
    esp = _fake_esp(tmp_path, 2 * MIB)
    disk = images.build_gpt_disk(esp, tmp_path / "disk.img")
    assert images.extract_partition(disk, tmp_path / "out.img").read_bytes() == \
        esp.read_bytes()


@pytest.mark.skipif(shutil.which("sgdisk") is None, reason="gdisk missing")
def test_sgdisk_verifies(tmp_path):
    disk = images.build_gpt_disk(_fake_esp(tmp_path), tmp_path / "disk.img")
    res = subprocess.run(["sgdisk", "-v", str(disk)], capture_output=True, text=True)
    assert res.returncode == 0, res.stdout + res.stderr
    assert "No problems found" in res.stdout
    res = subprocess.run(["sgdisk", "-i", "1", str(disk)], capture_output=True, text=True)
    assert "C12A7328-F81F-11D2-BA4B-00A0C93EC93B" in res.stdout
    assert "First sector: 2048" in res.stdout


@needs_mtools
def test_esp_inside_disk_is_readable(esp, tmp_path):
    disk = images.build_gpt_disk(esp, tmp_path / "disk.img")
    back = images.extract_partition(disk, tmp_path / "back.img")
    assert images.esp_read(back, "/EFI/hv/payload.efi") == b"payload"


def _vars_template():
    for p in OVMF_VARS:
        if p.is_file():
            return p
    pytest.skip("ovmf missing")


def test_vars_store_boot_entry_first(tmp_path):
    pytest.importorskip("virt.firmware")
    out = images.make_vars_store(_vars_template(), tmp_path / "vars.fd")
    assert out.stat().st_size == _vars_template().stat().st_size
    order, entries = images.read_boot_entries(out)
    assert order and order[0] in entries
    title, path = entries[order[0]]
    assert title == "micro-hypervisor"
    assert path.endswith("FilePath(\\EFI\\BOOT\\BOOTX64.EFI)")
    # idempotent on its own output: same entry reused, still first, no duplicates
    again = images.make_vars_store(out, tmp_path / "vars2.fd", loader_path="/EFI/hv/x.efi")
    order2, entries2 = images.read_boot_entries(again)
    assert order2[0] == order[0] and order2.count(order[0]) == 1
    assert entries2[order[0]][1].endswith("FilePath(\\EFI\\hv\\x.efi)")


def test_vars_store_hd_path_and_cli_readback(tmp_path):
    pytest.importorskip("virt.firmware")
    disk = images.build_gpt_disk(_fake_esp(tmp_path), tmp_path / "disk.img")
    out = images.make_vars_store(_vars_template(), tmp_path / "vars.fd", disk=disk,
                                 title="hv test")
    order, entries = images.read_boot_entries(out)
    assert entries[order[0]][0] == "hv test"
    assert entries[order[0]][1].startswith("Partition(nr=1)")
    exe = shutil.which("virt-fw-vars")
    if exe:
        res = subprocess.run([exe, "-i", str(out), "-p"], capture_output=True, text=True)
        assert res.returncode == 0
        assert f"Boot{order[0]:04X}" in res.stdout and 'title="hv test"' in res.stdout
        assert f"BootOrder           : boot order: {order[0]:04X}" in res.stdout


def test_vars_store_missing_template(tmp_path):
    with pytest.raises(ImageError, match="does not exist"):
        images.make_vars_store(tmp_path / "nope.fd", tmp_path / "v.fd")


OVMF_CODE = Path("/usr/share/OVMF/OVMF_CODE_4M.fd")


@pytest.mark.boot
@pytest.mark.timeout(200)
@pytest.mark.parametrize("hd_path", [True, False], ids=["hd-devpath", "file-devpath"])
@pytest.mark.skipif(shutil.which("qemu-system-x86_64") is None or not OVMF_CODE.is_file()
                    or shutil.which("mformat") is None, reason="qemu/ovmf/mtools missing")
def test_ovmf_boots_disk_through_boot_entry(tmp_path, hd_path):
    """OVMF reads our GPT + ESP and starts our Boot#### entry (not the fallback path):
    the Linux EFI stub kernel stands in for the hypervisor, its command line comes
    from the entry's optional data."""
    pytest.importorskip("virt.firmware")
    from pytool import linux
    try:
        vmlinuz = linux.find_kernel(Path(__file__).resolve().parent.parent)
        initrd = linux.build_initramfs(tmp_path / "initrd.img")
    except linux.LinuxError as e:
        pytest.skip(str(e))
    esp = images.build_esp(tmp_path / "esp.img", {"/EFI/hv/vmlinuz.efi": vmlinuz,
                                                  "/EFI/hv/initrd.img": initrd})
    disk = images.build_gpt_disk(esp, tmp_path / "disk.img")
    cmdline = "console=ttyS0 quiet initrd=\\EFI\\hv\\initrd.img\0"
    if not OVMF_VARS[0].is_file():
        pytest.skip("OVMF_VARS_4M.fd missing")
    vars_fd = images.make_vars_store(OVMF_VARS[0], tmp_path / "vars.fd",
                                     loader_path="\\EFI\\hv\\vmlinuz.efi",
                                     disk=disk if hd_path else None,
                                     optdata=cmdline.encode("utf-16-le"))
    res = subprocess.run(
        ["timeout", "150", "qemu-system-x86_64", "-M", "q35", "-m", "512", "-nographic",
         "-no-reboot",
         "-drive", f"if=pflash,format=raw,readonly=on,file={OVMF_CODE}",
         "-drive", f"if=pflash,format=raw,file={vars_fd}",
         "-drive", f"file={disk},format=raw,if=virtio"],
        stdin=subprocess.DEVNULL, capture_output=True)
    serial = res.stdout.decode(errors="replace")
    assert res.returncode == 0, serial[-3000:]
    assert 'starting Boot0000 "micro-hypervisor"' in serial, serial[-3000:]
    assert "GUEST-LINUX: userspace up" in serial and "reboot: Power down" in serial
