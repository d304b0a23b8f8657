"""The Linux guest: the kernel fetched by pytool.hostsetup and a busybox initramfs.

The initramfs is a gzip'd newc cpio written here in Python with fixed mtimes and inode
numbers, so the same inputs give a byte-identical file (cacheable).  Its /init reports
on the serial console through the kernel log:

    GUEST-LINUX: userspace up cpus=<online>   (the kernel's online list: 0, 0-3)
    GUEST-LINUX: hvcheck: <line>          (only when /bin/hvcheck exists)
    GUEST-LINUX: hvcheck rc=<rc>
    GUEST-LINUX: ipis <RES|CAL|TLB|NMI> cpu0=<n> ...   (hvtest=ipis: IPIs received)
    GUEST-LINUX: hvlog: <line>            (only when /bin/hvlog exists and EFI booted)
    GUEST-LINUX: hvlog rc=<rc>
    GUEST-LINUX: hvlog-stats <1|2>: <line>   (hvlog --stats, run twice)
    GUEST-LINUX: hvlog-stats <1|2> rc=<rc>
    GUEST-LINUX: done

and then powers the machine off (reboots it with `hvtest=reboot` on the command line).
"""
from __future__ import annotations

import dataclasses
import gzip
import io
import json
import os
import re
import shlex
import shutil
import stat
import struct
import subprocess
from pathlib import Path
from typing import Iterable

REPO_ROOT = Path(__file__).resolve().parent.parent
KERNEL_JSON = Path("build/linux/kernel.json")
HVCHECK_SRC = Path("efi/linux/hvcheck.c")
HV_CORE_H = Path("efi/core/hv_core.h")
HVCHECK_OUT = Path("build/linux/hvcheck")
HVCHECK_CFLAGS = ["-static", "-O2", "-Wall", "-Wextra", "-Werror", "-std=gnu11"]
BUSYBOX = Path("/bin/busybox")
MARK = "GUEST-LINUX:"
UP_LINE = f"{MARK} userspace up"
DONE_LINE = f"{MARK} done"


class LinuxError(Exception):
    """The guest kernel or initramfs is not available; the message says why."""


def find_kernel(root: Path) -> Path:
    """The guest vmlinuz recorded by ``python3 -m pytool.hostsetup``."""
    meta = Path(root) / KERNEL_JSON
    hint = "run `python3 -m pytool.hostsetup` to fetch it"
    try:
        data = json.loads(meta.read_text())
    except FileNotFoundError:
        raise LinuxError(f"no guest kernel: {meta} missing; {hint}") from None
    except (OSError, ValueError) as e:
        raise LinuxError(f"guest kernel record {meta} unreadable ({e}); {hint}") from None
    vmlinuz = Path(data.get("vmlinuz", ""))
    if not vmlinuz.is_absolute():
        vmlinuz = Path(root) / vmlinuz
    if not data.get("vmlinuz") or not vmlinuz.is_file():
        raise LinuxError(f"guest kernel {vmlinuz} (from {meta}) missing; {hint}")
    return vmlinuz


# -------------------------------------------------------------------------- hvcheck
_SIG_RE = re.compile(r'^\s*#\s*define\s+HV_CPUID_SIGNATURE\s+"([^"\\]*)"', re.M)


def hv_signature(root: Path = REPO_ROOT) -> str:
    """The 12-byte CPUID 0x40000000 signature from efi/core/hv_core.h."""
    header = Path(root) / HV_CORE_H
    try:
        m = _SIG_RE.search(header.read_text(errors="replace"))
    except OSError as e:
        raise LinuxError(f"cannot read the hypervisor signature: {e}") from None
    if not m:
        raise LinuxError(f"{header}: no `#define HV_CPUID_SIGNATURE \"...\"`")
    sig = m.group(1)
    if len(sig) != 12 or not sig.isascii() or not sig.isprintable():
        raise LinuxError(f"{header}: HV_CPUID_SIGNATURE {sig!r} is not 12 printable "
                         "ASCII characters")
    return sig


def build_hvcheck(root: Path = REPO_ROOT, out: Path | None = None,
                  signature: str | None = None, cc: str = "gcc") -> Path:
    """Build efi/linux/hvcheck.c as a static x86-64 binary (``gcc -static -O2``).

    Cached: rebuilt only when the source, hv_core.h or the command line changed
    (a stamp file beside the output records the command)."""
    root = Path(root)
    src = root / HVCHECK_SRC
    out = Path(out) if out else root / HVCHECK_OUT
    sig = signature if signature is not None else hv_signature(root)
    compiler = shutil.which(cc)
    if not compiler:
        raise LinuxError(f"{cc} not found: install gcc (python3 -m pytool.hostsetup)")
    cmd = [compiler, *HVCHECK_CFLAGS, f'-DHV_SIGNATURE="{sig}"', "-o", str(out), str(src)]
    return _cached_build(cmd, out, [src, root / HV_CORE_H], "hvcheck")


def _cached_build(cmd: list[str], out: Path, deps: list[Path], what: str) -> Path:
    """Run the compiler command `cmd` unless `out` is newer than every dependency and a
    stamp file beside it records the same command."""
    stamp = out.with_name(out.name + ".cmd")
    try:
        fresh = (stamp.read_text() == shlex.join(cmd) and
                 out.stat().st_mtime_ns >= max(p.stat().st_mtime_ns for p in deps))
    except OSError:
        fresh = False
    if fresh:
        return out
    out.parent.mkdir(parents=True, exist_ok=True)
    stamp.unlink(missing_ok=True)
    res = subprocess.run(cmd, capture_output=True, text=True)
    if res.returncode != 0:
        raise LinuxError(f"building {what} failed: {shlex.join(cmd)}\n"
                         f"{res.stdout}{res.stderr}".rstrip())
    stamp.write_text(shlex.join(cmd))
    return out


HVLOG_SRCS = (Path("efi/linux/hvlog.c"), Path("efi/lib/ring.c"))
HVLOG_DEPS = (Path("efi/include/hv_ring.h"),)
HVLOG_OUT = Path("build/linux/hvlog")


def build_hvlog(root: Path = REPO_ROOT, out: Path | None = None, cc: str = "gcc") -> Path:
    """Build efi/linux/hvlog.c (with the ring code it shares with the hypervisor,
    efi/lib/ring.c) as a static x86-64 binary.  Cached like build_hvcheck."""
    root = Path(root)
    out = Path(out) if out else root / HVLOG_OUT
    compiler = shutil.which(cc)
    if not compiler:
        raise LinuxError(f"{cc} not found: install gcc (python3 -m pytool.hostsetup)")
    cmd = [compiler, *HVCHECK_CFLAGS, "-I", str(root / "efi/include"), "-o", str(out),
           *(str(root / s) for s in HVLOG_SRCS)]
    return _cached_build(cmd, out, [root / p for p in HVLOG_SRCS + HVLOG_DEPS], "hvlog")


MSR_MODULE = "kernel/arch/x86/kernel/msr.ko"   # /dev/cpu/N/msr, for hvcheck's MSR checks
EFIVARFS_MODULE = "kernel/fs/efivarfs/efivarfs.ko"   # the HvLog variable, for hvlog


def kernel_module(root: Path, module: str) -> Path:
    """A module file of the fetched kernel package (build/linux/<release>/lib/modules)."""
    meta = Path(root) / KERNEL_JSON
    try:
        release = json.loads(meta.read_text())["release"]
    except (OSError, ValueError, KeyError) as e:
        raise LinuxError(f"cannot read {meta}: {e}; run `python3 -m pytool.hostsetup`") \
            from None
    path = Path(root) / "build/linux" / release / "lib/modules" / release / module
    if not path.is_file():
        raise LinuxError(f"kernel module {path} missing; run `python3 -m pytool.hostsetup`")
    return path


def default_extra_files(root: Path = REPO_ROOT) -> dict[str, Path]:
    """What the default initramfs carries besides busybox: /bin/hvcheck, and the
    kernel's msr driver that hvcheck reads MSRs through."""
    return {"/bin/hvcheck": build_hvcheck(root),
            "/bin/hvlog": build_hvlog(root),
            "/lib/modules/msr.ko": kernel_module(root, MSR_MODULE),
            "/lib/modules/efivarfs.ko": kernel_module(root, EFIVARFS_MODULE)}


# ----------------------------------------------------------------------------- cpio
@dataclasses.dataclass
class CpioEntry:
    """One archive member.  ``mode`` holds the file type bits too (stat.S_IF*)."""
    name: str
    mode: int
    data: bytes = b""          # file contents, or the target of a symlink
    rdev: tuple[int, int] = (0, 0)
    uid: int = 0
    gid: int = 0
    mtime: int = 0


def cpio_dir(name: str, perm: int = 0o755) -> CpioEntry:
    return CpioEntry(name, stat.S_IFDIR | perm)


def cpio_file(name: str, data: bytes, perm: int = 0o644) -> CpioEntry:
    return CpioEntry(name, stat.S_IFREG | perm, data)


def cpio_symlink(name: str, target: str) -> CpioEntry:
    return CpioEntry(name, stat.S_IFLNK | 0o777, target.encode())


def cpio_chardev(name: str, major: int, minor: int, perm: int = 0o600) -> CpioEntry:
    return CpioEntry(name, stat.S_IFCHR | perm, rdev=(major, minor))


def _pad4(n: int) -> bytes:
    return b"\0" * (-n % 4)


def cpio_newc_bytes(entries: Iterable[CpioEntry]) -> bytes:
    """The uncompressed newc ("070701") archive, trailer included."""
    buf = io.BytesIO()

    def member(ino: int, e: CpioEntry) -> None:
        name = e.name.lstrip("/").encode() + b"\0"
        if e.name != "TRAILER!!!" and name in (b"\0", b".\0"):
            name = b".\0"
        is_dir = stat.S_ISDIR(e.mode)
        data = b"" if is_dir or stat.S_ISCHR(e.mode) or stat.S_ISBLK(e.mode) else e.data
        fields = (ino, e.mode, e.uid, e.gid, 2 if is_dir else 1, e.mtime, len(data),
                  0, 0, e.rdev[0], e.rdev[1], len(name), 0)
        hdr = b"070701" + b"".join(b"%08X" % f for f in fields)
        buf.write(hdr + name + _pad4(len(hdr) + len(name)))
        buf.write(data + _pad4(len(data)))

    seen = set()
    ino = 0
    for ino, e in enumerate(entries, start=1):
        key = e.name.strip("/")
        if key in seen:
            raise ValueError(f"cpio: {e.name} given twice")
        seen.add(key)
        member(ino, e)
    member(0, CpioEntry("TRAILER!!!", 0))
    return buf.getvalue()


def write_cpio_newc(entries: Iterable[CpioEntry], out: Path, compress: bool = True) -> Path:
    """Write a newc cpio archive (gzip'd unless ``compress`` is False) to ``out``."""
    raw = cpio_newc_bytes(entries)
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_name(out.name + ".tmp")
    if compress:
        with open(tmp, "wb") as f:
            # mtime=0 and no file name in the gzip header: byte-identical rebuilds.
            with gzip.GzipFile(filename="", mode="wb", fileobj=f, mtime=0,
                               compresslevel=9) as gz:
                gz.write(raw)
    else:
        tmp.write_bytes(raw)
    os.replace(tmp, out)
    return out


# ----------------------------------------------------------------------- initramfs
INIT_SCRIPT = r"""#!/bin/sh
# /init of the micro-hypervisor test guest (pytool.linux).  Lines go to /dev/kmsg at
# level 2 so they pass `quiet` and reach the serial console through the kernel log even
# if the machine powers off before the tty drains.  They are not echoed to
# /dev/console as well: with console=ttyS0 that printed each line twice, and the echo
# interleaved mid-line with kernel messages on the same UART.
mount -t proc proc /proc
mount -t sysfs sysfs /sys
mount -t devtmpfs devtmpfs /dev
echo on > /proc/sys/kernel/printk_devkmsg   # no rate limit on our kmsg lines

say() {
    echo "<2>$*" > /dev/kmsg
}

say "GUEST-LINUX: userspace up cpus=$(cat /sys/devices/system/cpu/online)"

[ -f /lib/modules/msr.ko ] && insmod /lib/modules/msr.ko   # /dev/cpu/N/msr

# run_hvcheck [PREFIX]: its report lines, each after "GUEST-LINUX: PREFIX".
run_hvcheck() {
    [ -x /bin/hvcheck ] || return 0
    /bin/hvcheck > /tmp/hvcheck.out 2>&1
    rc=$?
    while IFS= read -r line; do
        case "$line" in
            "GUEST-LINUX: "*) say "GUEST-LINUX: $1${line#GUEST-LINUX: }" ;;
            *) say "GUEST-LINUX: $1hvcheck: $line" ;;
        esac
    done < /tmp/hvcheck.out
    say "GUEST-LINUX: $1hvcheck rc=$rc"
}
run_hvcheck

# hvtest=sysrq on the command line: an NMI backtrace of every CPU (issue 8: NMIs
# reach the guest promptly); the kernel logs "NMI backtrace for cpu N" per CPU.
case " $(cat /proc/cmdline) " in
    *" hvtest=sysrq "*)
        echo 1 > /proc/sys/kernel/sysrq
        echo l > /proc/sysrq-trigger
        sleep 2
        n=0
        dmesg > /tmp/dmesg.out
        while IFS= read -r line; do
            case "$line" in *"NMI backtrace for cpu"*) n=$((n + 1)) ;; esac
        done < /tmp/dmesg.out
        say "GUEST-LINUX: sysrq-nmi backtraces=$n cpus=$(cat /sys/devices/system/cpu/online)"
        ;;
esac
# hvtest=ipis: the IPIs each CPU received (rescheduling, function calls, TLB
# shootdowns, NMIs: /proc/interrupts), so a test knows that IPIs were sent
# and how many, e.g. after the hypervisor stopped intercepting them.
case " $(cat /proc/cmdline) " in
    *" hvtest=ipis "*)
        ncpu=$(grep -c ^processor /proc/cpuinfo)
        while IFS= read -r line; do
            set -- $line
            case "$1" in
                RES:|CAL:|TLB:|NMI:)
                    out="GUEST-LINUX: ipis ${1%:}"
                    i=0
                    while [ $i -lt $ncpu ] && [ $# -gt 1 ]; do
                        shift
                        out="$out cpu$i=$1"
                        i=$((i + 1))
                    done
                    say "$out"
                    ;;
            esac
        done < /proc/interrupts
        ;;
esac
# The hypervisor's log ring (efi/linux/hvlog.c): its HVLG ACPI table, else its EFI
# variable and /dev/mem.  Then its live exit counters, twice (they only grow).
if [ -x /bin/hvlog ] && [ -d /sys/firmware/efi ]; then
    [ -f /lib/modules/efivarfs.ko ] && insmod /lib/modules/efivarfs.ko
    mount -t efivarfs efivarfs /sys/firmware/efi/efivars
    /bin/hvlog > /tmp/hvlog.out 2>&1
    rc=$?
    while IFS= read -r line; do
        say "GUEST-LINUX: hvlog: $line"
    done < /tmp/hvlog.out
    say "GUEST-LINUX: hvlog rc=$rc"
    for i in 1 2; do
        /bin/hvlog --stats > /tmp/hvstats.out 2>&1
        rc=$?
        while IFS= read -r line; do
            say "GUEST-LINUX: hvlog-stats $i: $line"
        done < /tmp/hvstats.out
        say "GUEST-LINUX: hvlog-stats $i rc=$rc"
    done
fi

# The physical memory map as Linux uses it (top-level ranges only), so the host
# side can check that the hypervisor's memory is reserved and never System RAM.
while IFS= read -r line; do
    case "$line" in
        " "*) ;;
        *"System RAM"*|*Reserved*) say "GUEST-LINUX: iomem $line" ;;
    esac
done < /proc/iomem

# hvtest=reboot-all (QEMU, whose variable store lives across resets): each of
# Linux's reboot paths on a boot of its own - ACPI reset register, keyboard
# controller, EFI ResetSystem, triple fault - then the rest of this script.  An
# EFI variable per boot (attributes NV+BS+RT) says which boot this is.
REBOOTS="acpi kbd efi triple"
BOOTVAR=/sys/firmware/efi/efivars/HvTestBoot
BOOTGUID=5d3c8a41-7b2e-4f6a-9c1d-2e8b0f4a6c17
boot=0
case " $(cat /proc/cmdline) " in
    *" hvtest=reboot-all "*)
        boot=1
        while [ -e "$BOOTVAR$boot-$BOOTGUID" ]; do boot=$((boot + 1)); done ;;
esac
set -- $REBOOTS
reboot_type=$(eval echo \${$boot})
if [ "$boot" -gt 0 ] && [ -n "$reboot_type" ]; then
    printf '\007\000\000\000\001' > "$BOOTVAR$boot-$BOOTGUID"
    echo "$reboot_type" > /sys/kernel/reboot/type
    say "GUEST-LINUX: reboot boot=$boot type=$(cat /sys/kernel/reboot/type)"
    sleep 1
    reboot -f
fi
[ "$boot" -gt 0 ] && say "GUEST-LINUX: reboot boot=$boot type=none: every path done"

# hvtest=s3: suspend to RAM; the runner wakes the machine (scenario `s3: true`).
# Twice, as laptops do.  The hypervisor takes every CPU back on resume
# (efi/core/s3.c): hvcheck runs again on every CPU, and the ring tells how
# the CPUs came back.
case " $(cat /proc/cmdline) " in
    *" hvtest=s3 "*)
        for cycle in 1 2; do
            say "GUEST-LINUX: s3 suspend cycle=$cycle"
            echo mem > /sys/power/state
            say "GUEST-LINUX: s3 resumed rc=$? cpus=$(cat /sys/devices/system/cpu/online)"
        done
        run_hvcheck "after-s3 "
        [ -x /bin/hvlog ] && /bin/hvlog > /tmp/hvlog-s3.out 2>&1
        while IFS= read -r line; do
            case "$line" in
                *"HV: sleep "*|*"HV: resume "*) say "GUEST-LINUX: after-s3 hvlog: $line" ;;
            esac
        done < /tmp/hvlog-s3.out ;;
esac

say "GUEST-LINUX: done"
sleep 1
# hvtest=reboot: end with a reboot instead: by triple fault on the first boot of a
# run (the hypervisor found no previous log ring), by the keyboard controller after.
case " $(cat /proc/cmdline) " in
    *" hvtest=reboot "*)
        case "$(cat /tmp/hvlog.out 2>/dev/null)" in
            *prev-boot-id=0000000000000000*) echo triple > /sys/kernel/reboot/type ;;
            *) echo kbd > /sys/kernel/reboot/type ;;
        esac
        say "GUEST-LINUX: reboot type=$(cat /sys/kernel/reboot/type)"
        reboot -f ;;
esac
poweroff -f
"""

# Applets the init script runs as commands (echo, [ and read are ash builtins, but the
# symlinks cost nothing and help when someone drops into the shell).
APPLETS = ("sh", "mount", "mkdir", "cat", "echo", "sleep", "poweroff", "ls", "dmesg",
           "[", "test", "insmod", "reboot", "printf")


def _is_static_elf(path: Path) -> bool:
    """True for a 64-bit ELF without PT_INTERP (statically linked)."""
    with open(path, "rb") as f:
        eh = f.read(64)
        if len(eh) < 64 or eh[:4] != b"\x7fELF" or eh[4] != 2:
            return False
        phoff, = struct.unpack_from("<Q", eh, 0x20)
        phentsize, phnum = struct.unpack_from("<HH", eh, 0x36)
        f.seek(phoff)
        ph = f.read(phentsize * phnum)
    return all(struct.unpack_from("<I", ph, i * phentsize)[0] != 3 for i in range(phnum))


def build_initramfs(out: Path, extra_files: dict[str, Path] | None = None,
                    init_script: str | None = None, busybox: Path = BUSYBOX) -> Path:
    """Write the gzip'd guest initramfs to ``out``.

    ``extra_files`` maps guest paths (``/bin/hvcheck``) to host files; executables keep
    their mode.  None (the default) means ``default_extra_files()``: hvcheck, built
    from efi/linux/hvcheck.c; ``{}`` means nothing extra.  ``init_script`` replaces
    the default /init.  Byte-identical for the same inputs.
    """
    busybox = Path(busybox)
    if not busybox.is_file():
        raise LinuxError(f"{busybox} missing: install busybox-static "
                         "(python3 -m pytool.hostsetup)")
    if not _is_static_elf(busybox):
        raise LinuxError(f"{busybox} is not a static x86-64 binary: install "
                         "busybox-static instead of busybox")
    if extra_files is None:
        extra_files = default_extra_files()
    entries: dict[str, CpioEntry] = {}

    def add(e: CpioEntry) -> None:
        parts = e.name.strip("/").split("/")
        for i in range(1, len(parts)):
            d = "/".join(parts[:i])
            entries.setdefault(d, cpio_dir(d))
        entries[e.name.strip("/")] = dataclasses.replace(e, name=e.name.strip("/"))

    for d in ("bin", "dev", "proc", "sys", "tmp", "sbin"):
        add(cpio_dir(d, 0o1777 if d == "tmp" else 0o755))
    add(cpio_chardev("dev/console", 5, 1))
    add(cpio_chardev("dev/ttyS0", 4, 64))
    add(cpio_file("bin/busybox", busybox.read_bytes(), 0o755))
    for a in APPLETS:
        add(cpio_symlink(f"bin/{a}", "busybox"))
    add(cpio_file("init", (init_script or INIT_SCRIPT).encode(), 0o755))
    for guest, host in sorted((extra_files or {}).items()):
        host = Path(host)
        if not host.is_file():
            raise LinuxError(f"initramfs file {guest}: {host} does not exist")
        perm = 0o755 if os.access(host, os.X_OK) else 0o644
        add(cpio_file(guest, host.read_bytes(), perm))
    # Parents before children, stable order.
    ordered = sorted(entries.values(), key=lambda e: e.name.split("/"))
    return write_cpio_newc(ordered, out)


def qemu_direct_boot_cmd(vmlinuz: Path, initrd: Path, *, qemu: str = "qemu-system-x86_64",
                         smp: int = 1, append: str = "console=ttyS0 quiet",
                         cpu: str | None = None) -> list[str]:
    """QEMU TCG command line that boots the guest without firmware (a self-check).
    ``cpu`` is a -cpu model ("qemu64,-hypervisor": a bare CPU for hvcheck=baseline)."""
    return [qemu,
            "-M", "q35", "-m", "512", "-smp", str(smp),
            *(["-cpu", cpu] if cpu else []),
            "-nographic",            # serial on stdio
            "-kernel", str(vmlinuz), "-initrd", str(initrd),
            "-append", append,
            "-no-reboot"]            # a panic ends the run instead of looping
