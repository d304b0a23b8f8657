"""pytool.usb: refusal cases and the happy path, on a fake sysfs/procfs tree with a
regular file standing in for the block device."""
import os
import stat
import types
from pathlib import Path

import pytest

from pytool import usb
from pytool.usb import UsbError

IMAGE_SIZE = 3 * 1024 * 1024 + 512


class Host:
    """A fake /sys and /proc, plus a stat() that makes chosen files look like disks."""

    def __init__(self, tmp: Path):
        self.sys = tmp / "sys"
        self.proc = tmp / "proc"
        (self.sys / "block").mkdir(parents=True)
        (self.proc / "self").mkdir(parents=True)
        (self.proc / "mounts").write_text("proc /proc proc rw 0 0\n")
        (self.proc / "self" / "mountinfo").write_text(
            "22 27 0:21 / /proc rw,relatime - proc proc rw\n")
        (self.proc / "swaps").write_text("Filename Type Size Used Priority\n")
        self.devs: dict[str, tuple[int, int]] = {}
        self.tmp = tmp
        self.image = tmp / "disk.img"
        self.image.write_bytes(bytes(range(256)) * (IMAGE_SIZE // 256))

    def disk(self, name, major, minor, *, removable=True, sectors=1 << 20,
             parts=(), model="SanDisk Cruzer", holders=()):
        d = self.sys / "block" / name
        (d / "device").mkdir(parents=True)
        (d / "holders").mkdir()
        (d / "dev").write_text(f"{major}:{minor}\n")
        (d / "removable").write_text("1\n" if removable else "0\n")
        (d / "size").write_text(f"{sectors}\n")
        (d / "device" / "vendor").write_text("ACME    \n")
        (d / "device" / "model").write_text(model + "\n")
        for i, p in enumerate(parts, start=1):
            pd = d / p
            (pd / "holders").mkdir(parents=True)
            (pd / "dev").write_text(f"{major}:{minor + i}\n")
            (pd / "partition").write_text(f"{i}\n")
        for h in holders:       # (partition or disk name, dm name, "maj:min")
            on, dm, num = h
            base = d if on == name else d / on
            (base / "holders" / dm).mkdir()
            dmd = self.sys / "block" / dm
            (dmd / "slaves" / on).mkdir(parents=True)
            (dmd / "holders").mkdir(exist_ok=True)
            (dmd / "dev").write_text(num + "\n")
        dev = self.tmp / f"dev-{name}"
        dev.write_bytes(b"\xee" * 4096)
        self.devs[str(dev)] = (major, minor)
        for i, p in enumerate(parts, start=1):
            pdev = self.tmp / f"dev-{p}"
            pdev.write_bytes(b"")
            self.devs[str(pdev)] = (major, minor + i)
        return dev

    def mount(self, source, target, num="0:99"):
        with open(self.proc / "mounts", "a") as f:
            f.write(f"{source} {target} vfat rw 0 0\n")
        with open(self.proc / "self" / "mountinfo", "a") as f:
            f.write(f"40 27 {num} / {target} rw,relatime - vfat {source} rw\n")

    def stat(self, path):
        if path in self.devs:
            return types.SimpleNamespace(st_mode=stat.S_IFBLK | 0o660,
                                         st_rdev=os.makedev(*self.devs[path]))
        return os.stat(path)

    def write(self, dev, **kw):
        lines = []
        kw.setdefault("yes", True)
        n = usb.write_image(self.image, dev, sysfs=self.sys, proc=self.proc,
                            stat=self.stat, out=lines.append, **kw)
        return n, "\n".join(lines)


@pytest.fixture
def host(tmp_path):
    return Host(tmp_path)


def test_happy_path_with_yes(host):
    dev = host.disk("sdb", 8, 16, parts=("sdb1",))
    n, text = host.write(dev)
    assert n == IMAGE_SIZE
    assert dev.read_bytes() == host.image.read_bytes()
    assert "ACME SanDisk Cruzer" in text and "512.0 MiB" in text and "3.0 MiB" in text
    assert f"wrote {IMAGE_SIZE} bytes" in text


def test_asks_and_honours_answer(host):
    dev = host.disk("sdb", 8, 16)
    asked = []
    with pytest.raises(UsbError, match="not confirmed"):
        host.write(dev, yes=False, input=lambda q: asked.append(q) or "n")
    assert "overwrite" in asked[0]
    assert dev.read_bytes() == b"\xee" * 4096          # untouched
    n, _ = host.write(dev, yes=False, input=lambda q: "yes")
    assert n == IMAGE_SIZE


def test_refuses_mounted_partition(host):
    dev = host.disk("sdb", 8, 16, parts=("sdb1", "sdb2"))
    host.mount("/dev/sdb2", "/media/stick")
    with pytest.raises(UsbError, match="mounted /dev/sdb2 on /media/stick"):
        host.write(dev)
    assert dev.read_bytes() == b"\xee" * 4096
    n, text = host.write(dev, force=True)
    assert n == IMAGE_SIZE and "WARNING" in text


def test_refuses_mounted_by_devnum_only(host):
    dev = host.disk("sdc", 8, 32, parts=("sdc1",))
    host.mount("weird-source", "/mnt/x", num="8:33")
    with pytest.raises(UsbError, match="in use"):
        host.write(dev)


def test_refuses_mounted_through_device_mapper(host):
    dev = host.disk("sdb", 8, 16, parts=("sdb1",), holders=[("sdb1", "dm-3", "254:3")])
    host.mount("/dev/mapper/crypt", "/home/me/vault", num="254:3")
    with pytest.raises(UsbError, match="in use"):
        host.write(dev)


def test_refuses_swap(host):
    dev = host.disk("sdb", 8, 16, parts=("sdb1",))
    (host.proc / "swaps").write_text("Filename Type Size Used Priority\n"
                                     "/dev/sdb1 partition 100 0 -2\n")
    with pytest.raises(UsbError, match="swap"):
        host.write(dev)


def test_refuses_not_removable(host):
    dev = host.disk("sdd", 8, 48, removable=False)
    with pytest.raises(UsbError, match="not removable"):
        host.write(dev)
    n, _ = host.write(dev, force=True)
    assert n == IMAGE_SIZE


def test_refuses_running_system(host):
    # / is on dm-1 (e.g. LVM) whose slave is nvme0n1p2; /boot is nvme0n1p1.
    dev = host.disk("nvme0n1", 259, 0, removable=True, parts=("nvme0n1p1", "nvme0n1p2"),
                    holders=[("nvme0n1p2", "dm-1", "254:1")])
    host.mount("/dev/mapper/vg-root", "/", num="254:1")
    with pytest.raises(UsbError, match="holds the running system"):
        host.write(dev)


def test_running_system_through_boot_partition(host):
    dev = host.disk("sda", 8, 0, parts=("sda1",))
    host.mount("/dev/sda1", "/boot", num="8:1")
    with pytest.raises(UsbError, match="running system"):
        host.write(dev)


def test_other_disk_mounted_is_fine(host):
    host.disk("sda", 8, 0, removable=False, parts=("sda1",))
    host.mount("/dev/sda1", "/", num="8:1")
    dev = host.disk("sdb", 8, 16, parts=("sdb1",))
    n, _ = host.write(dev)
    assert n == IMAGE_SIZE


def test_not_a_block_device(host, tmp_path):
    plain = tmp_path / "plain.bin"
    plain.write_bytes(b"")
    with pytest.raises(UsbError, match="not a block device"):
        host.write(plain)
    with pytest.raises(UsbError, match="does not exist"):
        host.write(tmp_path / "nothing")


def test_partition_instead_of_disk(host, tmp_path):
    host.disk("sdb", 8, 16, parts=("sdb1",))
    with pytest.raises(UsbError, match="is a partition of /dev/sdb"):
        host.write(tmp_path / "dev-sdb1")


def test_image_larger_than_device(host):
    dev = host.disk("sdb", 8, 16, sectors=2048)        # 1 MiB
    with pytest.raises(UsbError, match="larger than"):
        host.write(dev, force=True)


def test_missing_image(host, tmp_path):
    dev = host.disk("sdb", 8, 16)
    with pytest.raises(UsbError, match="does not exist"):
        usb.write_image(tmp_path / "none.img", dev, yes=True, sysfs=host.sys,
                        proc=host.proc, stat=host.stat, out=lambda s: None)


def test_cli_reports_error(tmp_path, capsys):
    assert usb.main([str(tmp_path / "none.img"), str(tmp_path / "dev"), "--yes"]) == 1
    assert "usb: image" in capsys.readouterr().err
