"""Disk images: the ESP (FAT via mtools), the GPT disk around it, the OVMF vars store.

No root and no loop devices: the ESP is made with mtools, the GPT is written here in
Python (UEFI spec 2.10, section 5.3), and the vars store is edited with virt-firmware.

The GPT disk is what a user writes to a USB stick (pytool.usb) and what QEMU and Bochs
boot.  Everything is deterministic for the same inputs (GUIDs are derived from the ESP
contents unless given), so images can be cached and compared.
"""
from __future__ import annotations

import dataclasses
import hashlib
import math
import os
import shutil
import struct
import subprocess
import tempfile
import uuid
import zlib
from pathlib import Path

MIB = 1024 * 1024
SECTOR = 512
ESP_TYPE_GUID = uuid.UUID("C12A7328-F81F-11D2-BA4B-00A0C93EC93B")
ESP_START_LBA = MIB // SECTOR          # partition 1 starts at 1 MiB (alignment)
GPT_ENTRIES = 128
GPT_ENTRY_SIZE = 128
GPT_ENTRY_SECTORS = GPT_ENTRIES * GPT_ENTRY_SIZE // SECTOR   # 32
GPT_HEADER_SIZE = 92
FAT32_MIN_MIB = 36                      # below this FAT32 has too few clusters
# The USB image's ESP: the smallest FAT32 volume (FAT32 is what every firmware
# reads on removable media); the hypervisor and hv.cfg use well under 1 MiB of it.
USB_ESP_MIB = FAT32_MIN_MIB
ESP_VOLUME_SERIAL = "48564553"          # fixed FAT serial ("HVES"): byte-identical images


class ImageError(Exception):
    """An image could not be built; the message says why."""


# ----------------------------------------------------------------------------- ESP
def esp_path(key: str) -> str:
    """Normalise an ESP path (``\\EFI\\BOOT\\X`` or ``EFI/BOOT/X``) to ``/EFI/BOOT/X``."""
    parts = [p for p in key.replace("\\", "/").split("/") if p]
    if not parts or any(p in (".", "..") for p in parts):
        raise ImageError(f"bad ESP path {key!r}")
    return "/" + "/".join(parts)


def _mtools(*args: str) -> str:
    exe = shutil.which(args[0])
    if exe is None:
        raise ImageError(f"{args[0]} not found: install mtools "
                         "(python3 -m pytool.hostsetup)")
    env = dict(os.environ, MTOOLS_SKIP_CHECK="1", MTOOLS_NO_VFAT="0")
    res = subprocess.run([exe, *args[1:]], capture_output=True, text=True, env=env)
    if res.returncode != 0:
        raise ImageError(f"{' '.join(args)} failed (rc={res.returncode}): "
                         f"{(res.stderr or res.stdout).strip()}")
    return res.stdout


def _esp_needed_mib(sizes: list[int], ndirs: int) -> int:
    # 4 KiB slack per file and dir for cluster rounding and directory entries, plus
    # room for two FATs and reserved sectors (~1.6% of the volume at 512-byte clusters).
    payload = sum(-(-s // 4096) * 4096 for s in sizes) + 4096 * (len(sizes) + ndirs)
    return math.ceil(payload * 1.05 / MIB) + 2


def build_esp(out: Path, files: dict[str, Path | bytes], size_mib: int = 64) -> Path:
    """Make a FAT image at ``out`` holding ``files`` (ESP path -> host file or bytes).

    FAT32 from FAT32_MIN_MIB up, FAT12/16 below (mformat picks).  The size grows when the
    files would not fit.  Returns ``out``.
    """
    out = Path(out)
    norm: dict[str, Path | bytes] = {}
    for key, src in files.items():
        if not isinstance(src, (bytes, bytearray)):
            src = Path(src)
            if not src.is_file():
                raise ImageError(f"ESP file {key}: source {src} does not exist "
                                 "(or is not a regular file)")
        dest = esp_path(key)
        if dest.upper() in {k.upper() for k in norm}:
            raise ImageError(f"ESP path {key} given twice (FAT names ignore case)")
        norm[dest] = src
    dirs = sorted({"/".join(k.split("/")[:i]) for k in norm
                   for i in range(2, k.count("/") + 1)}, key=lambda d: (d.count("/"), d))
    sizes = [len(v) if isinstance(v, (bytes, bytearray)) else v.stat().st_size
             for v in norm.values()]
    size_mib = max(int(size_mib), _esp_needed_mib(sizes, len(dirs)), 1)

    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_name(out.name + ".tmp")
    with tempfile.TemporaryDirectory(prefix="esp-") as td:
        for attempt in range(3):
            tmp.unlink(missing_ok=True)
            with open(tmp, "wb") as f:
                f.truncate(size_mib * MIB)
            fmt = ["mformat", "-i", str(tmp), "-T", str(size_mib * MIB // SECTOR),
                   "-h", "64", "-s", "32", "-H", str(ESP_START_LBA),
                   "-N", ESP_VOLUME_SERIAL, "-v", "ESP"]
            if size_mib >= FAT32_MIN_MIB:
                fmt.append("-F")
            _mtools(*fmt, "::")
            try:
                for d in dirs:
                    _mtools("mmd", "-i", str(tmp), "::" + d)
                for n, (dest, src) in enumerate(norm.items()):
                    if isinstance(src, (bytes, bytearray)):
                        p = Path(td, f"blob{n}")
                        p.write_bytes(src)
                        src = p
                    _mtools("mcopy", "-i", str(tmp), "-D", "o", str(src), "::" + dest)
                break
            except ImageError as e:
                if "full" not in str(e).lower() or attempt == 2:
                    tmp.unlink(missing_ok=True)
                    raise
                size_mib *= 2
    os.replace(tmp, out)
    return out


def esp_list(img: Path) -> list[str]:
    """All file paths on a FAT image (``/EFI/BOOT/BOOTX64.EFI`` form, upper/lower as stored)."""
    outp = _mtools("mdir", "-i", str(img), "-/", "-b", "::/")
    return sorted(line.strip()[2:] if line.startswith("::") else line.strip()
                  for line in outp.splitlines() if line.strip() and not line.endswith("/"))


def esp_read(img: Path, path: str) -> bytes:
    """The contents of one file on a FAT image."""
    return subprocess.run(["mtype", "-i", str(img), "::" + esp_path(path)],
                          check=True, capture_output=True,
                          env=dict(os.environ, MTOOLS_SKIP_CHECK="1")).stdout


# ----------------------------------------------------------------------------- GPT
@dataclasses.dataclass(frozen=True)
class GptPartition:
    number: int            # 1-based
    type_guid: uuid.UUID
    part_guid: uuid.UUID
    first_lba: int
    last_lba: int
    attributes: int
    name: str

    @property
    def size_bytes(self) -> int:
        return (self.last_lba - self.first_lba + 1) * SECTOR


@dataclasses.dataclass(frozen=True)
class GptInfo:
    disk_guid: uuid.UUID
    total_sectors: int
    first_usable: int
    last_usable: int
    partitions: list[GptPartition]


def _guid_from(seed: bytes, salt: str) -> uuid.UUID:
    """A random-looking (version 4 format) GUID that depends only on the seed."""
    return uuid.UUID(bytes=hashlib.sha256(salt.encode() + seed).digest()[:16], version=4)


def _entry(type_guid: uuid.UUID, part_guid: uuid.UUID, first: int, last: int,
           attrs: int, name: str) -> bytes:
    raw_name = name.encode("utf-16-le")[:72]
    return struct.pack("<16s16sQQQ72s", type_guid.bytes_le, part_guid.bytes_le,
                       first, last, attrs, raw_name)


def _header(my_lba: int, alt_lba: int, first_usable: int, last_usable: int,
            disk_guid: uuid.UUID, entries_lba: int, entries_crc: int) -> bytes:
    fields = [b"EFI PART", 0x00010000, GPT_HEADER_SIZE, 0, 0, my_lba, alt_lba,
              first_usable, last_usable, disk_guid.bytes_le, entries_lba,
              GPT_ENTRIES, GPT_ENTRY_SIZE, entries_crc]
    fmt = "<8sIIIIQQQQ16sQIII"
    crc = zlib.crc32(struct.pack(fmt, *fields))
    fields[3] = crc
    return struct.pack(fmt, *fields).ljust(SECTOR, b"\0")


def _protective_mbr(total_sectors: int) -> bytes:
    # UEFI 2.10 5.2.3: one 0xEE partition from LBA 1 covering the disk (capped at 2^32-1).
    size = min(total_sectors - 1, 0xFFFFFFFF)
    part = struct.pack("<B3sB3sII", 0, b"\x00\x02\x00", 0xEE, b"\xff\xff\xff", 1, size)
    return bytes(446) + part + bytes(48) + b"\x55\xaa"


def build_gpt_disk(esp_img: Path, out: Path, *, disk_guid: uuid.UUID | None = None,
                   part_guid: uuid.UUID | None = None) -> Path:
    """Wrap ``esp_img`` into a GPT disk image: the ESP is partition 1 at 1 MiB.

    Layout: LBA0 protective MBR, LBA1 header, LBA2-33 entries, ESP at LBA 2048, 1 MiB
    tail holding the backup entries and header (last LBA).  GUIDs default to values
    derived from the ESP contents, so the same ESP gives a byte-identical disk.
    """
    esp_img, out = Path(esp_img), Path(out)
    if not esp_img.is_file():
        raise ImageError(f"ESP image {esp_img} does not exist")
    esp_size = esp_img.stat().st_size
    if esp_size == 0:
        raise ImageError(f"ESP image {esp_img} is empty")
    esp_sectors = -(-esp_size // MIB) * MIB // SECTOR
    total = ESP_START_LBA + esp_sectors + MIB // SECTOR
    last_lba = total - 1
    first_usable = 2 + GPT_ENTRY_SECTORS
    last_usable = last_lba - 1 - GPT_ENTRY_SECTORS
    if disk_guid is None or part_guid is None:
        h = hashlib.sha256()
        with open(esp_img, "rb") as f:
            for chunk in iter(lambda: f.read(MIB), b""):
                h.update(chunk)
        seed = h.digest()
        disk_guid = disk_guid or _guid_from(seed, "disk")
        part_guid = part_guid or _guid_from(seed, "esp")

    entries = _entry(ESP_TYPE_GUID, part_guid, ESP_START_LBA,
                     ESP_START_LBA + esp_sectors - 1, 0, "EFI System Partition")
    entries = entries.ljust(GPT_ENTRIES * GPT_ENTRY_SIZE, b"\0")
    ecrc = zlib.crc32(entries)
    primary = _header(1, last_lba, first_usable, last_usable, disk_guid, 2, ecrc)
    backup = _header(last_lba, 1, first_usable, last_usable, disk_guid,
                     last_lba - GPT_ENTRY_SECTORS, ecrc)

    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_name(out.name + ".tmp")
    with open(tmp, "wb") as f:
        f.truncate(total * SECTOR)          # sparse: unwritten ranges read as zero
        f.write(_protective_mbr(total) + primary + entries)
        f.seek(ESP_START_LBA * SECTOR)
        with open(esp_img, "rb") as src:
            shutil.copyfileobj(src, f, MIB)
        f.seek((last_lba - GPT_ENTRY_SECTORS) * SECTOR)
        f.write(entries + backup)
    os.replace(tmp, out)
    return out


def read_gpt(disk: Path) -> GptInfo:
    """Parse and check a GPT disk image (both headers, both entry arrays, all CRCs)."""
    with open(disk, "rb") as f:
        size = os.fstat(f.fileno()).st_size
        total = size // SECTOR

        def rd(lba: int, n: int = 1) -> bytes:
            f.seek(lba * SECTOR)
            return f.read(n * SECTOR)

        mbr = rd(0)
        if mbr[510:512] != b"\x55\xaa" or mbr[446 + 4] != 0xEE:
            raise ImageError(f"{disk}: no protective MBR")
        hdrs = []
        for lba in (1, total - 1):
            raw = rd(lba)
            (sig, rev, hsize, hcrc, _res, my, alt, fu, lu, dguid, elba, n, esz,
             ecrc) = struct.unpack_from("<8sIIIIQQQQ16sQIII", raw)
            if sig != b"EFI PART" or hsize != GPT_HEADER_SIZE:
                raise ImageError(f"{disk}: no GPT header at LBA {lba}")
            zeroed = raw[:16] + b"\0\0\0\0" + raw[20:hsize]
            if zlib.crc32(zeroed) != hcrc:
                raise ImageError(f"{disk}: header CRC mismatch at LBA {lba}")
            if my != lba:
                raise ImageError(f"{disk}: header at LBA {lba} says it is at {my}")
            ents = rd(elba, n * esz // SECTOR)
            if zlib.crc32(ents) != ecrc:
                raise ImageError(f"{disk}: entry array CRC mismatch (header LBA {lba})")
            hdrs.append((alt, fu, lu, uuid.UUID(bytes_le=dguid), ents, n, esz))
        if hdrs[0][0] != total - 1 or hdrs[1][0] != 1:
            raise ImageError(f"{disk}: alternate LBAs do not point at each other")
        if hdrs[0][4] != hdrs[1][4]:
            raise ImageError(f"{disk}: primary and backup entry arrays differ")
        _alt, fu, lu, dguid, ents, n, esz = hdrs[0]
        parts = []
        for i in range(n):
            e = ents[i * esz:(i + 1) * esz]
            tg, pg, first, last, attrs, name = struct.unpack_from("<16s16sQQQ72s", e)
            if tg == bytes(16):
                continue
            parts.append(GptPartition(i + 1, uuid.UUID(bytes_le=tg), uuid.UUID(bytes_le=pg),
                                      first, last, attrs,
                                      name.decode("utf-16-le").rstrip("\0")))
        return GptInfo(dguid, total, fu, lu, parts)


def extract_partition(disk: Path, out: Path, number: int = 1) -> Path:
    """Copy partition ``number`` of a GPT disk image out to ``out``."""
    part = next((p for p in read_gpt(disk).partitions if p.number == number), None)
    if part is None:
        raise ImageError(f"{disk}: no partition {number}")
    with open(disk, "rb") as src, open(out, "wb") as dst:
        src.seek(part.first_lba * SECTOR)
        left = part.size_bytes
        while left:
            buf = src.read(min(MIB, left))
            if not buf:
                raise ImageError(f"{disk}: truncated inside partition {number}")
            dst.write(buf)
            left -= len(buf)
    return Path(out)


# ------------------------------------------------------------------------ vars store
def make_vars_store(template: Path, out: Path,
                    loader_path: str = "\\EFI\\BOOT\\BOOTX64.EFI",
                    title: str = "micro-hypervisor", *, disk: Path | None = None,
                    optdata: bytes | None = None) -> Path:
    """Copy an OVMF VARS template to ``out`` with a Boot#### entry for ``loader_path``,
    first in BootOrder.

    Without ``disk`` the entry's device path is a bare File() node, which edk2's boot
    manager expands by searching every file system.  With ``disk`` (a GPT image from
    build_gpt_disk) it is the short-form HD(1,GPT,<guid>,start,size)/File() path that
    names the ESP itself.  Returns ``out``.
    """
    try:
        from virt.firmware.efi import bootentry, devpath
        from virt.firmware.varstore import autodetect
    except ImportError as e:  # pragma: no cover - pip dependency
        raise ImageError("virt-firmware missing: run python3 -m pytool.hostsetup") from e
    template, out = Path(template), Path(out)
    if not template.is_file():
        raise ImageError(f"OVMF vars template {template} does not exist")
    store = autodetect.open_varstore(str(template))
    if store is None:
        raise ImageError(f"{template} is not an edk2 variable store")
    varlist = store.get_varlist()

    fpath = "\\" + esp_path(loader_path)[1:].replace("/", "\\")
    path = devpath.DevicePath()
    if disk is not None:
        esp = next((p for p in read_gpt(disk).partitions if p.type_guid == ESP_TYPE_GUID),
                   None)
        if esp is None:
            raise ImageError(f"{disk}: no EFI System Partition")
        hd = devpath.DevicePathElem()
        hd.set_gpt(esp.number, esp.first_lba, esp.last_lba - esp.first_lba + 1,
                   str(esp.part_guid))
        path.append(hd)
    fnode = devpath.DevicePathElem()
    fnode.set_filepath(fpath)
    path.append(fnode)

    # Reuse an entry of ours with the same title (a template made by this function),
    # otherwise take the first free Boot#### number.
    index = None
    for name, var in varlist.items():
        if name.startswith("Boot") and len(name) == 8 and name[4:].isalnum() \
                and name not in ("BootNext",):
            try:
                if str(bootentry.BootEntry(data=var.data).title) == title:
                    index = int(name[4:], 16)
            except (ValueError, struct.error):
                continue
    if index is None:
        index = varlist.add_boot_entry(title, path, optdata)
    else:
        varlist.set_boot_entry(index, title, path, optdata)
    order = []
    if "BootOrder" in varlist:
        data = varlist["BootOrder"].data
        order = [v for (v,) in struct.iter_unpack("<H", data[:len(data) // 2 * 2])]
    else:
        varlist.create("BootOrder")
    varlist["BootOrder"].set_boot_order([index] + [i for i in order if i != index])

    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_name(out.name + ".tmp")
    try:
        store.write_varstore(str(tmp), varlist)
    except SystemExit as e:   # virt-firmware exits when the store is full
        tmp.unlink(missing_ok=True)
        raise ImageError(f"{template}: variable store too small for the boot entry") from e
    os.replace(tmp, out)
    return out


def read_boot_entries(vars_store: Path) -> tuple[list[int], dict[int, tuple[str, str]]]:
    """(BootOrder, {index: (title, device path text)}) of a vars store."""
    from virt.firmware.efi import bootentry
    from virt.firmware.varstore import autodetect
    store = autodetect.open_varstore(str(vars_store))
    if store is None:
        raise ImageError(f"{vars_store} is not an edk2 variable store")
    varlist = store.get_varlist()
    order = []
    if "BootOrder" in varlist:
        order = [v for (v,) in struct.iter_unpack("<H", varlist["BootOrder"].data)]
    entries = {}
    for name, var in varlist.items():
        if len(name) == 8 and name.startswith("Boot") and name != "BootNext":
            try:
                idx = int(name[4:], 16)
            except ValueError:
                continue
            e = bootentry.BootEntry(data=var.data)
            entries[idx] = (str(e.title), str(e.devicepath))
    return order, entries
