"""Write the GPT disk image (pytool.images.build_gpt_disk) to a USB stick.

    python3 -m pytool.usb build/disk.img /dev/sdX [--yes] [--force]

Refuses, unless --force, when the target disk or any partition of it is mounted or used
as swap, when the kernel says it is not removable, or when it holds the running system
(the disk behind / or /boot, also through device-mapper).  Never writes to a partition,
to something that is not a block device, or when the image does not fit.

Every outside input (sysfs, procfs, stat, the prompt, the output) can be replaced, so
the tests drive it with a fake tree and a regular file standing in for the device.
"""
from __future__ import annotations

import argparse
import dataclasses
import os
import stat as stat_mod
import sys
from pathlib import Path
from typing import Callable

CHUNK = 4 * 1024 * 1024
BLKRRPART = 0x125F     # ioctl: re-read the partition table


class UsbError(Exception):
    """Refused or failed; the message says why."""


@dataclasses.dataclass
class BlockDev:
    name: str                 # sdb
    devnum: str               # "8:16"
    sysdir: Path              # <sysfs>/block/sdb
    size: int                 # bytes
    removable: bool
    model: str
    parts: dict[str, str]     # partition name -> "maj:min"


def _read(p: Path, default: str = "") -> str:
    try:
        return p.read_text().strip()
    except OSError:
        return default


def _human(n: int) -> str:
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if n < 1024 or unit == "TiB":
            return f"{n:.1f} {unit}" if unit != "B" else f"{n} B"
        n /= 1024
    return str(n)  # pragma: no cover


def _find_disk(devnum: str, sysfs: Path) -> tuple[str, bool]:
    """(disk name, is_partition) for a "maj:min"; raises when sysfs has no such device."""
    block = sysfs / "block"
    for d in sorted(block.iterdir()) if block.is_dir() else []:
        if _read(d / "dev") == devnum:
            return d.name, False
        for p in d.iterdir():
            if (p / "partition").exists() and _read(p / "dev") == devnum:
                return d.name, True
    raise UsbError(f"block device {devnum} not found under {block}")


def _blockdev(name: str, sysfs: Path) -> BlockDev:
    d = sysfs / "block" / name
    parts = {p.name: _read(p / "dev") for p in sorted(d.iterdir())
             if (p / "partition").exists()}
    model = " ".join(x for x in (_read(d / "device" / "vendor"),
                                 _read(d / "device" / "model")) if x) or "unknown model"
    return BlockDev(name=name, devnum=_read(d / "dev"), sysdir=d,
                    size=int(_read(d / "size", "0") or 0) * 512,
                    removable=_read(d / "removable", "0") == "1",
                    model=model, parts=parts)


def _holders(names: set[str], sysfs: Path) -> set[str]:
    """``names`` plus every device-mapper/md device stacked on top of them."""
    todo, seen = list(names), set(names)
    while todo:
        n = todo.pop()
        for base in (sysfs / "block" / n, *(sysfs / "block").glob(f"*/{n}")):
            h = base / "holders"
            if h.is_dir():
                for x in h.iterdir():
                    if x.name not in seen:
                        seen.add(x.name)
                        todo.append(x.name)
    return seen


def _slaves_to_disks(name: str, sysfs: Path, depth: int = 0) -> set[str]:
    """The whole disks under a block device name (a disk, a partition or a dm device)."""
    block = sysfs / "block"
    if (block / name).is_dir():
        slaves = block / name / "slaves"
        if slaves.is_dir() and any(slaves.iterdir()) and depth < 8:
            out: set[str] = set()
            for s in slaves.iterdir():
                out |= _slaves_to_disks(s.name, sysfs, depth + 1)
            return out
        return {name}
    parent = next(iter(block.glob(f"*/{name}")), None) if block.is_dir() else None
    return {parent.parent.name} if parent is not None else set()


def _name_of_devnum(devnum: str, sysfs: Path) -> str | None:
    try:
        disk, is_part = _find_disk(devnum, sysfs)
    except UsbError:
        return None
    if not is_part:
        return disk
    for p in (sysfs / "block" / disk).iterdir():
        if _read(p / "dev") == devnum:
            return p.name
    return None  # pragma: no cover


def _mount_table(proc: Path) -> list[tuple[str, str, str]]:
    """(maj:min or "", source, mount point) for each mount, from mountinfo and mounts."""
    rows = []
    for line in _read(proc / "self" / "mountinfo").splitlines():
        f = line.split()
        if len(f) < 10 or "-" not in f:
            continue
        sep = f.index("-")
        rows.append((f[2], f[sep + 2], f[4]))
    for line in _read(proc / "mounts").splitlines():
        f = line.split()
        if len(f) >= 2:
            rows.append(("", f[0], f[1]))
    return rows


def _source_name(source: str) -> str:
    """Kernel name of a mount source: /dev/sdb1 -> sdb1, /dev/mapper/x -> dm-N."""
    if not source.startswith("/dev/"):
        return ""
    try:
        return Path(os.path.realpath(source)).name
    except OSError:  # pragma: no cover
        return Path(source).name


def check_target(dev: BlockDev, sysfs: Path, proc: Path) -> list[str]:
    """Reasons to refuse writing ``dev`` (empty when it looks like a spare USB stick)."""
    reasons = []
    own = {dev.name, *dev.parts}
    stacked = _holders(own, sysfs)
    numbers = {dev.devnum, *dev.parts.values()}
    numbers |= {_read(sysfs / "block" / h / "dev") for h in stacked - own}
    numbers.discard("")

    table = _mount_table(proc)
    system: set[str] = set()
    for num, src, mnt in table:
        if mnt in ("/", "/boot", "/boot/efi", "/usr"):
            names = {_source_name(src)}
            if num:
                names.add(_name_of_devnum(num, sysfs) or "")
            for n in names - {""}:
                system |= _slaves_to_disks(n, sysfs)
    if dev.name in system:
        reasons.append(f"/dev/{dev.name} holds the running system (/ or /boot)")

    mounted = sorted({f"{src} on {mnt}" for num, src, mnt in table
                      if num in numbers or _source_name(src) in stacked})
    if mounted:
        reasons.append(f"/dev/{dev.name} is in use: mounted " + ", ".join(mounted))
    swaps = [line.split()[0] for line in _read(proc / "swaps").splitlines()[1:] if line]
    swapping = [s for s in swaps if _source_name(s) in stacked]
    if swapping:
        reasons.append(f"/dev/{dev.name} is in use as swap: " + ", ".join(swapping))
    if not dev.removable:
        reasons.append(f"/dev/{dev.name} is not removable ({dev.sysdir / 'removable'} "
                       "is 0): is this really the USB stick?")
    return reasons


def describe_image(image: Path) -> list[str]:
    """What the image holds: its partitions and every file on the ESP, with sizes,
    and the hv.cfg text (what `usb --dry-run` prints)."""
    from . import images
    image = Path(image)
    if not image.is_file():
        raise UsbError(f"image {image} does not exist (build it: python3 -m pytool image)")
    gpt = images.read_gpt(image)
    lines = [f"image:  {image} ({_human(image.stat().st_size)}), GPT disk "
             f"{gpt.disk_guid}"]
    import tempfile
    for part in gpt.partitions:
        lines.append(f"  partition {part.number} '{part.name}' {_human(part.size_bytes)} "
                     f"at LBA {part.first_lba}")
        if part.type_guid != images.ESP_TYPE_GUID:
            continue
        with tempfile.TemporaryDirectory() as td:
            esp = images.extract_partition(image, Path(td) / "esp.img", part.number)
            used = 0
            for f in images.esp_list(esp):
                data = images.esp_read(esp, f)
                used += len(data)
                lines.append(f"    {f.replace('/', chr(92)):40} {_human(len(data))}")
                if f.lower().endswith("/hv.cfg"):
                    lines += [f"      | {t}" for t in data.decode(errors="replace")
                              .splitlines() if t.strip()]
            lines.append(f"    files use {_human(used)} of {_human(part.size_bytes)}")
    return lines


def write_image(image: Path, device: Path, yes: bool = False, force: bool = False,
                sysfs: Path = Path("/sys"), proc: Path = Path("/proc"),
                input: Callable[[str], str] = input, out: Callable[[str], None] = print,
                stat: Callable[[str], os.stat_result] = os.stat,
                dry_run: bool = False) -> int:
    """Write ``image`` to the whole-disk block device ``device``; returns bytes written.
    dry_run: every check and message, then return 0 without asking or writing."""
    image, device = Path(image), Path(device)
    if not image.is_file():
        raise UsbError(f"image {image} does not exist (build it first)")
    isize = image.stat().st_size
    try:
        st = stat(str(device))
    except FileNotFoundError:
        raise UsbError(f"{device} does not exist") from None
    if not stat_mod.S_ISBLK(st.st_mode):
        raise UsbError(f"{device} is not a block device (give the whole disk, "
                       "e.g. /dev/sdb)")
    devnum = f"{os.major(st.st_rdev)}:{os.minor(st.st_rdev)}"
    name, is_part = _find_disk(devnum, Path(sysfs))
    if is_part:
        raise UsbError(f"{device} is a partition of /dev/{name}: give the whole disk "
                       f"/dev/{name}")
    dev = _blockdev(name, Path(sysfs))
    if dev.size and isize > dev.size:
        raise UsbError(f"image {image} ({_human(isize)}) is larger than {device} "
                       f"({_human(dev.size)})")

    out(f"target: {device} (/dev/{dev.name}, {devnum}) {dev.model}, {_human(dev.size)}, "
        f"{'removable' if dev.removable else 'NOT removable'}, "
        f"partitions: {', '.join(dev.parts) or 'none'}")
    out(f"image:  {image} ({_human(isize)}); everything on {device} will be overwritten")
    reasons = check_target(dev, Path(sysfs), Path(proc))
    for r in reasons:
        out(f"{'WARNING' if force else 'refusing'}: {r}")
    if dry_run:
        out(f"dry run: would {'refuse' if reasons and not force else 'write'} "
            f"{device}")
        return 0
    if reasons and not force:
        raise UsbError(f"refusing to write {device}: {reasons[0]}"
                       + (f" (and {len(reasons) - 1} more)" if len(reasons) > 1 else "")
                       + "; use --force to override")
    if not yes:
        answer = input(f"Type 'yes' to overwrite {device}: ")
        if answer.strip().lower() != "yes":
            raise UsbError("not confirmed; nothing written")

    flags = os.O_WRONLY | getattr(os, "O_CLOEXEC", 0)
    if not force:
        flags |= os.O_EXCL     # for block devices: fails if the kernel has it in use
    written = 0
    try:
        fd = os.open(device, flags)
    except OSError as e:
        raise UsbError(f"cannot open {device} for writing: {e.strerror}") from None
    try:
        with open(image, "rb") as src:
            while buf := src.read(CHUNK):
                view = memoryview(buf)
                while view:
                    n = os.write(fd, view)
                    view = view[n:]
                    written += n
        os.fsync(fd)
        if stat_mod.S_ISBLK(os.fstat(fd).st_mode):
            try:
                import fcntl
                fcntl.ioctl(fd, BLKRRPART)
            except OSError:
                pass            # the kernel re-reads it on the next plug-in anyway
    except OSError as e:
        raise UsbError(f"writing {device} failed after {written} bytes: {e.strerror}") \
            from None
    finally:
        os.close(fd)
    out(f"wrote {written} bytes to {device} and synced")
    return written


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python3 -m pytool.usb", description=__doc__.split(
        "\n\n")[0])
    ap.add_argument("image", type=Path, help="GPT disk image (build/.../disk.img)")
    ap.add_argument("device", type=Path, help="whole-disk block device, e.g. /dev/sdb")
    ap.add_argument("--yes", "-y", action="store_true", help="do not ask")
    ap.add_argument("--force", action="store_true",
                    help="write even if mounted, not removable or the system disk")
    a = ap.parse_args(argv)
    try:
        write_image(a.image, a.device, yes=a.yes, force=a.force)
    except UsbError as e:
        print(f"usb: {e}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("usb: interrupted", file=sys.stderr)
        return 130
    return 0


if __name__ == "__main__":
    sys.exit(main())
