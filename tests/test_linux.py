"""pytool.linux: kernel lookup, the newc cpio writer, the initramfs and a direct boot."""
import gzip
import json
import os
import shutil
import stat
import subprocess
from pathlib import Path

import pytest

from pytool import linux
from pytool.linux import LinuxError

REPO = Path(__file__).resolve().parent.parent
needs_cpio = pytest.mark.skipif(shutil.which("cpio") is None, reason="cpio missing")
needs_busybox = pytest.mark.skipif(not linux.BUSYBOX.is_file(), reason="busybox-static missing")


def test_find_kernel_missing_says_run_hostsetup(tmp_path):
    with pytest.raises(LinuxError, match=r"python3 -m pytool\.hostsetup"):
        linux.find_kernel(tmp_path)


def test_find_kernel_reads_record(tmp_path):
    k = tmp_path / "build/linux/6.1/boot/vmlinuz-6.1"
    k.parent.mkdir(parents=True)
    k.write_bytes(b"MZ")
    (tmp_path / "build/linux/kernel.json").write_text(
        json.dumps({"vmlinuz": "build/linux/6.1/boot/vmlinuz-6.1"}))
    assert linux.find_kernel(tmp_path) == k
    k.unlink()
    with pytest.raises(LinuxError, match="missing; run"):
        linux.find_kernel(tmp_path)


def _entries():
    return [
        linux.cpio_dir("bin"),
        linux.cpio_file("bin/tool", b"#!/bin/sh\necho hi\n", 0o755),
        linux.cpio_file("etc.txt", b"odd length!"),      # exercises padding
        linux.cpio_symlink("bin/alias", "tool"),
        linux.cpio_dir("dev"),
        linux.cpio_chardev("dev/console", 5, 1),
        linux.cpio_chardev("dev/ttyS0", 4, 64),
        linux.cpio_file("empty", b""),
    ]


def test_cpio_newc_format():
    raw = linux.cpio_newc_bytes(_entries())
    assert raw.startswith(b"070701")
    assert len(raw) % 4 == 0
    assert b"TRAILER!!!\0" in raw[-128:]
    assert raw == linux.cpio_newc_bytes(_entries())      # deterministic
    with pytest.raises(ValueError, match="twice"):
        linux.cpio_newc_bytes([linux.cpio_dir("a"), linux.cpio_dir("a/")])


@needs_cpio
def test_cpio_listing_matches(tmp_path):
    out = linux.write_cpio_newc(_entries(), tmp_path / "a.cpio.gz")
    raw = gzip.decompress(out.read_bytes())
    res = subprocess.run(["cpio", "-itv", "--quiet"], input=raw, capture_output=True)
    assert res.returncode == 0, res.stderr
    lines = res.stdout.decode().splitlines()
    names = [line.split()[-1] if "->" not in line else line.split()[-3] for line in lines]
    assert names == ["bin", "bin/tool", "etc.txt", "bin/alias", "dev", "dev/console",
                     "dev/ttyS0", "empty"]
    console = next(line for line in lines if line.endswith("dev/console"))
    assert console.startswith("crw-------") and "5,   1" in console
    assert next(line for line in lines if "ttyS0" in line).split()[4:6] == ["4,", "64"]
    assert "bin/alias -> tool" in res.stdout.decode()


@needs_cpio
def test_cpio_extract_round_trip(tmp_path):
    out = linux.write_cpio_newc(_entries(), tmp_path / "a.cpio", compress=False)
    dest = tmp_path / "x"
    dest.mkdir()
    res = subprocess.run(["cpio", "-idv", "--quiet", "--no-absolute-filenames", "-F",
                          str(out)], cwd=dest, capture_output=True, text=True)
    if os.geteuid() == 0:
        assert res.returncode == 0, res.stderr
        st = os.lstat(dest / "dev/ttyS0")
        assert stat.S_ISCHR(st.st_mode) and (os.major(st.st_rdev), os.minor(st.st_rdev)) \
            == (4, 64)
    assert (dest / "bin/tool").read_bytes() == b"#!/bin/sh\necho hi\n"
    assert os.stat(dest / "bin/tool").st_mode & 0o777 == 0o755
    assert (dest / "etc.txt").read_bytes() == b"odd length!"
    assert os.readlink(dest / "bin/alias") == "tool"
    assert (dest / "empty").read_bytes() == b""


@needs_busybox
@needs_cpio
def test_initramfs_contents_and_determinism(tmp_path):
    hv = tmp_path / "hvcheck"
    hv.write_text("#!/bin/sh\necho ok\n")
    hv.chmod(0o755)
    a = linux.build_initramfs(tmp_path / "a.gz", extra_files={"/bin/hvcheck": hv})
    b = linux.build_initramfs(tmp_path / "b.gz", extra_files={"/bin/hvcheck": hv})
    assert a.read_bytes() == b.read_bytes()
    listing = subprocess.run(["cpio", "-itv", "--quiet"], input=gzip.decompress(a.read_bytes()),
                             capture_output=True).stdout.decode()
    for want in ("bin/busybox", "bin/sh -> busybox", "bin/poweroff -> busybox",
                 "bin/mount -> busybox", "dev/console", "dev/ttyS0", "bin/hvcheck"):
        assert want in listing, want
    init = next(line for line in listing.splitlines() if line.endswith(" init"))
    assert init.startswith("-rwxr-xr-x")
    hvl = next(line for line in listing.splitlines() if line.endswith("bin/hvcheck"))
    assert hvl.startswith("-rwxr-xr-x")
    for line in listing.splitlines():
        assert "Jan  1  1970" in line          # fixed mtimes


def test_init_script_protocol():
    s = linux.INIT_SCRIPT
    for want in ("mount -t proc", "mount -t sysfs", "mount -t devtmpfs",
                 "/sys/devices/system/cpu/online", "/dev/kmsg", "/dev/console",
                 "GUEST-LINUX: userspace up cpus=", "/bin/hvcheck", "GUEST-LINUX: done",
                 "sleep 1", "poweroff -f"):
        assert want in s


def test_initramfs_missing_busybox(tmp_path):
    with pytest.raises(LinuxError, match="busybox-static"):
        linux.build_initramfs(tmp_path / "i.gz", busybox=tmp_path / "nope")
    dyn = tmp_path / "dyn"
    dyn.write_bytes(b"not an elf")
    with pytest.raises(LinuxError, match="not a static"):
        linux.build_initramfs(tmp_path / "i.gz", busybox=dyn)


@pytest.mark.boot
@pytest.mark.timeout(180)
@needs_busybox
@pytest.mark.skipif(shutil.which("qemu-system-x86_64") is None, reason="qemu missing")
def test_direct_qemu_boot(tmp_path):
    """Boots the guest kernel + initramfs in QEMU TCG without firmware (~6 s)."""
    try:
        vmlinuz = linux.find_kernel(REPO)
    except LinuxError as e:
        pytest.skip(str(e))
    hv = tmp_path / "hvcheck"
    hv.write_text("#!/bin/sh\necho hvcheck says hi\nexit 3\n")
    hv.chmod(0o755)
    initrd = linux.build_initramfs(tmp_path / "initrd.img", {"/bin/hvcheck": hv})
    cmd = ["timeout", "120", *linux.qemu_direct_boot_cmd(vmlinuz, initrd, smp=2)]
    res = subprocess.run(cmd, stdin=subprocess.DEVNULL, capture_output=True)
    serial = res.stdout.decode(errors="replace")
    assert res.returncode == 0, f"rc={res.returncode}\n{serial[-3000:]}"
    assert f"{linux.UP_LINE} cpus=2" in serial, serial[-3000:]
    assert "GUEST-LINUX: hvcheck: hvcheck says hi" in serial
    assert "GUEST-LINUX: hvcheck rc=3" in serial
    assert linux.DONE_LINE in serial
    assert "reboot: Power down" in serial
