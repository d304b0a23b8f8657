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
                 "/sys/devices/system/cpu/online", "/dev/kmsg",
                 "GUEST-LINUX: userspace up cpus=", "/bin/hvcheck", "GUEST-LINUX: done",
                 '"GUEST-LINUX: "*) say "GUEST-LINUX: $1${line#GUEST-LINUX: }"',
                 "sleep 1", "poweroff -f", "/bin/hvlog --stats", "GUEST-LINUX: hvlog-stats $i"):
        assert want in s


def test_initramfs_missing_busybox(tmp_path):
    with pytest.raises(LinuxError, match="busybox-static"):
        linux.build_initramfs(tmp_path / "i.gz", busybox=tmp_path / "nope")
    dyn = tmp_path / "dyn"
    dyn.write_bytes(b"not an elf")
    with pytest.raises(LinuxError, match="not a static"):
        linux.build_initramfs(tmp_path / "i.gz", busybox=dyn)


@pytest.fixture
def vmlinuz():
    """The guest kernel fetched by hostsetup (skips where it was never fetched)."""
    try:
        return linux.find_kernel(REPO)
    except LinuxError as e:
        pytest.skip(str(e))


@pytest.mark.boot
@pytest.mark.timeout(180)
@needs_busybox
@pytest.mark.skipif(shutil.which("qemu-system-x86_64") is None, reason="qemu missing")
def test_direct_qemu_boot(tmp_path, vmlinuz):
    """Boots the guest kernel + initramfs in QEMU TCG without firmware (~6 s)."""
    hv = tmp_path / "hvcheck"
    hv.write_text("#!/bin/sh\necho hvcheck says hi\necho 'GUEST-LINUX: own line'\nexit 3\n")
    hv.chmod(0o755)
    initrd = linux.build_initramfs(tmp_path / "initrd.img", {"/bin/hvcheck": hv})
    cmd = ["timeout", "120", *linux.qemu_direct_boot_cmd(vmlinuz, initrd, smp=2)]
    res = subprocess.run(cmd, stdin=subprocess.DEVNULL, capture_output=True)
    serial = res.stdout.decode(errors="replace")
    assert res.returncode == 0, f"rc={res.returncode}\n{serial[-3000:]}"
    assert f"{linux.UP_LINE} cpus=0-1" in serial, serial[-3000:]
    assert "GUEST-LINUX: hvcheck: hvcheck says hi" in serial
    assert "GUEST-LINUX: own line" in serial            # marked lines pass through
    assert "hvcheck: GUEST-LINUX:" not in serial
    assert "GUEST-LINUX: hvcheck rc=3" in serial
    assert linux.DONE_LINE in serial
    assert "reboot: Power down" in serial


# ---------------------------------------------------------------------- hvcheck
needs_gcc = pytest.mark.skipif(shutil.which("gcc") is None, reason="gcc missing")
HV_H = '#define HV_CPUID_SIGNATURE   "MicroHvisor!"   /* EBX, ECX, EDX; 12 bytes */\n'


def _fake_root(tmp_path, header=HV_H):
    (tmp_path / "efi/core").mkdir(parents=True)
    (tmp_path / "efi/core/hv_core.h").write_text(header)
    (tmp_path / "efi/linux").mkdir(parents=True)
    shutil.copy(REPO / "efi/linux/hvcheck.c", tmp_path / "efi/linux/hvcheck.c")
    return tmp_path


def test_hv_signature_from_header(tmp_path):
    assert linux.hv_signature(REPO) == "MicroHvisor!"          # what the core answers
    assert linux.hv_signature(_fake_root(tmp_path / "a")) == "MicroHvisor!"
    with pytest.raises(LinuxError, match="no `#define HV_CPUID_SIGNATURE"):
        linux.hv_signature(_fake_root(tmp_path / "b", "#define OTHER 1\n"))
    with pytest.raises(LinuxError, match="not 12 printable"):
        linux.hv_signature(_fake_root(tmp_path / "c", '#define HV_CPUID_SIGNATURE "short"\n'))
    with pytest.raises(LinuxError, match="cannot read"):
        linux.hv_signature(tmp_path / "missing")


@pytest.fixture(scope="module")
def hvcheck_kvm(tmp_path_factory):
    """hvcheck built with KVM's signature, so the host (a KVM guest) can run it."""
    if shutil.which("gcc") is None:
        pytest.skip("gcc missing")
    root = _fake_root(tmp_path_factory.mktemp("hvk"))
    return linux.build_hvcheck(root, signature="KVMKVMKVM")   # + 3 NULs, as KVM


@needs_gcc
def test_build_hvcheck_static_and_cached(tmp_path):
    root = _fake_root(tmp_path)
    out = linux.build_hvcheck(root)
    assert out == root / "build/linux/hvcheck" and linux._is_static_elf(out)
    assert "MicroHvisor!" in (root / "build/linux/hvcheck.cmd").read_text()
    t = out.stat().st_mtime_ns
    assert linux.build_hvcheck(root).stat().st_mtime_ns == t       # cached
    src = root / "efi/linux/hvcheck.c"
    os.utime(src, ns=(t + 10**9, t + 10**9))
    assert linux.build_hvcheck(root).stat().st_mtime_ns != t       # source changed
    bad = root / "efi/linux/hvcheck.c"
    bad.write_text("int main(void) { return x; }\n")
    with pytest.raises(LinuxError, match="building hvcheck failed"):
        linux.build_hvcheck(root)


def _run_hvcheck(exe, tmp_path, cmdline="console=ttyS0", **env):
    (tmp_path / "cmdline").write_text(cmdline + "\n")
    e = {"HVCHECK_CMDLINE": str(tmp_path / "cmdline"), **env}
    res = subprocess.run([str(exe)], capture_output=True, text=True,
                         env={**os.environ, **e})
    lines = res.stdout.splitlines()
    checks = {}
    for line in lines:
        parts = line.split()
        if len(parts) >= 4 and parts[2].startswith("cpu="):
            checks.setdefault(parts[1], []).append(parts[3])
    return res.returncode, lines, checks


def _assert_format(lines, rc):
    import re
    pat = re.compile(r"^GUEST-LINUX: (hvcheck |summary |(hv-present|hv-signature|"
                     r"vmx-hidden|vmcall-ring3-sigill|msr-gp-reflected|feature-control|"
                     r"svm-hidden|vmmcall-ring3-sigill|efer-svme-hidden) cpu=\d+ "
                     r"(PASS|FAIL) \S)")
    for line in lines:
        assert pat.match(line), line
    m = re.match(r"^GUEST-LINUX: summary pass=(\d+) fail=(\d+)$", lines[-1])
    assert m, lines[-1]
    ncpu = int(re.search(r"cpus=(\d+)", lines[-2]).group(1))
    assert ncpu == len(os.sched_getaffinity(0))
    assert int(m.group(1)) + int(m.group(2)) == 6 * ncpu
    assert rc == min(int(m.group(2)), 100)


def test_hvcheck_on_this_host(hvcheck_kvm, tmp_path):
    """Real CPUID: this host is a KVM guest, so hv-present holds and the signature
    is KVM's.  VMCALL at CPL 3 depends on the host's hypervisor: format only."""
    rc, lines, checks = _run_hvcheck(hvcheck_kvm, tmp_path)
    _assert_format(lines, rc)
    if "KVMKVMKVM" not in "\n".join(lines):
        pytest.skip("host is not a KVM guest")
    assert set(checks["hv-present"]) == {"PASS"}
    assert set(checks["hv-signature"]) == {"PASS"}


def test_hvcheck_baseline_expectations(hvcheck_kvm, tmp_path):
    # A bare CPU with VMX: baseline passes the CPUID checks, VMX is informational.
    rc, lines, checks = _run_hvcheck(hvcheck_kvm, tmp_path, "quiet hvcheck=baseline",
                                     HVCHECK_FAKE_ECX1="0x20")
    _assert_format(lines, rc)
    assert "mode=baseline" in lines[0]
    for c in ("hv-present", "hv-signature", "vmx-hidden"):
        assert set(checks[c]) == {"PASS"}, (c, lines)
    assert any("hv-signature cpu=0 PASS sig=none expect=none" in x for x in lines)
    # A hypervisor underneath a baseline run is a failure of both CPUID checks.
    rc, lines, checks = _run_hvcheck(hvcheck_kvm, tmp_path, "hvcheck=baseline",
                                     HVCHECK_FAKE_ECX1=str(1 << 31),
                                     HVCHECK_FAKE_SIG="MicroHvisor!")
    _assert_format(lines, rc)
    assert set(checks["hv-present"]) == {"FAIL"} and set(checks["hv-signature"]) == {"FAIL"}


def test_hvcheck_hv_mode_expectations(hvcheck_kvm, tmp_path):
    rc, lines, checks = _run_hvcheck(hvcheck_kvm, tmp_path, "hvcheck=baselinex",
                                     HVCHECK_FAKE_ECX1=str(1 << 31),
                                     HVCHECK_FAKE_SIG="KVMKVMKVM")
    _assert_format(lines, rc)
    assert "mode=hv" in lines[0]                            # only the exact word counts
    assert {c: set(v) for c, v in checks.items()
            if c not in ("vmcall-ring3-sigill", "msr-gp-reflected", "feature-control")} == \
        {"hv-present": {"PASS"}, "hv-signature": {"PASS"}, "vmx-hidden": {"PASS"}}
    # Wrong signature, VMX leaked to the guest, no hypervisor bit.
    rc, lines, checks = _run_hvcheck(hvcheck_kvm, tmp_path, HVCHECK_FAKE_ECX1=str(1 << 31 | 1 << 5),
                                     HVCHECK_FAKE_SIG="OtherHV")
    _assert_format(lines, rc)
    assert set(checks["hv-signature"]) == {"FAIL"} and set(checks["vmx-hidden"]) == {"FAIL"}
    assert any('sig="OtherHV"' in x for x in lines)
    rc, lines, checks = _run_hvcheck(hvcheck_kvm, tmp_path, HVCHECK_FAKE_ECX1="0")
    assert set(checks["hv-present"]) == {"FAIL"} and set(checks["hv-signature"]) == {"FAIL"}


def test_hvcheck_amd_expectations(hvcheck_kvm, tmp_path):
    """The AMD twins of the VMX checks: names, and svm-hidden from CPUID."""
    rc, lines, checks = _run_hvcheck(hvcheck_kvm, tmp_path, HVCHECK_FAKE_VENDOR="amd",
                                     HVCHECK_FAKE_ECX1=str(1 << 31),
                                     HVCHECK_FAKE_SIG="KVMKVMKVM", HVCHECK_FAKE_ECX81="0")
    _assert_format(lines, rc)
    assert "vendor=amd" in lines[0]
    assert set(checks) == {"hv-present", "hv-signature", "svm-hidden", "vmmcall-ring3-sigill",
                           "msr-gp-reflected", "efer-svme-hidden"}
    assert set(checks["svm-hidden"]) == {"PASS"}
    rc, lines, checks = _run_hvcheck(hvcheck_kvm, tmp_path, HVCHECK_FAKE_VENDOR="amd",
                                     HVCHECK_FAKE_ECX1=str(1 << 31),
                                     HVCHECK_FAKE_SIG="KVMKVMKVM", HVCHECK_FAKE_ECX81="4")
    assert set(checks["svm-hidden"]) == {"FAIL"}
    rc, lines, checks = _run_hvcheck(hvcheck_kvm, tmp_path, "hvcheck=baseline",
                                     HVCHECK_FAKE_VENDOR="amd", HVCHECK_FAKE_ECX1="0",
                                     HVCHECK_FAKE_ECX81="4")
    assert set(checks["svm-hidden"]) == {"PASS"}          # baseline: SVM may show


@needs_busybox
@needs_cpio
@needs_gcc
def test_default_initramfs_has_hvcheck(tmp_path):
    a = linux.build_initramfs(tmp_path / "a.gz")
    b = linux.build_initramfs(tmp_path / "b.gz")
    assert a.read_bytes() == b.read_bytes()
    listing = subprocess.run(["cpio", "-itv", "--quiet"], input=gzip.decompress(a.read_bytes()),
                             capture_output=True).stdout.decode()
    hvl = next(line for line in listing.splitlines() if line.endswith("bin/hvcheck"))
    assert hvl.startswith("-rwxr-xr-x")
    none = linux.build_initramfs(tmp_path / "c.gz", extra_files={})
    assert b"bin/hvcheck\0" not in gzip.decompress(none.read_bytes())


@pytest.mark.boot
@pytest.mark.timeout(180)
@needs_busybox
@needs_gcc
@pytest.mark.skipif(shutil.which("qemu-system-x86_64") is None, reason="qemu missing")
def test_direct_qemu_boot_hvcheck_baseline(tmp_path, vmlinuz):
    """The real hvcheck in QEMU TCG without firmware, in baseline mode (~8 s)."""
    initrd = linux.build_initramfs(tmp_path / "initrd.img")
    cmd = ["timeout", "120", *linux.qemu_direct_boot_cmd(
        vmlinuz, initrd, smp=2, append="console=ttyS0 quiet hvcheck=baseline",
        cpu="qemu64,-hypervisor")]        # TCG sets the bit ("TCGTCGTCGTCG") by default
    res = subprocess.run(cmd, stdin=subprocess.DEVNULL, capture_output=True)
    serial = res.stdout.decode(errors="replace").replace("\r", "")
    assert res.returncode == 0, f"rc={res.returncode}\n{serial[-3000:]}"
    assert "GUEST-LINUX: hvcheck mode=baseline" in serial, serial[-3000:]
    # qemu64 is an AuthenticAMD model: hvcheck runs the AMD twins of the VMX checks.
    assert 'vendor=amd' in serial, serial[-3000:]
    for check in ("hv-present", "hv-signature", "svm-hidden", "vmmcall-ring3-sigill",
                  "msr-gp-reflected", "efer-svme-hidden"):
        for cpu in (0, 1):
            assert f"GUEST-LINUX: {check} cpu={cpu} PASS" in serial, (check, serial[-3000:])
    assert "GUEST-LINUX: summary pass=12 fail=0" in serial
    assert "GUEST-LINUX: hvcheck rc=0" in serial
