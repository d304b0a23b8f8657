"""The machine's own OS behind the hypervisor: a Debian-style internal disk.

A chain run models the design card's first user: the hypervisor on a USB stick
(usb-storage on qemu-xhci, \\EFI\\BOOT\\BOOTX64.EFI, `next=auto`, no Boot####
of ours) and an internal disk whose ESP holds what Debian installs there:

    systemd-boot  \\EFI\\systemd\\systemd-bootx64.efi (+ \\EFI\\BOOT\\BOOTX64.EFI),
                  \\loader\\loader.conf, \\loader\\entries\\debian.conf
    grub          \\EFI\\debian\\grubx64.efi + \\EFI\\debian\\grub.cfg
    shim          \\EFI\\debian\\shimx64.efi in front of that grubx64.efi

with the kernel and initramfs on the same ESP, and a `Boot0001 "debian"` entry
for the loader, first in BootOrder, in the vars store.  Files come from the
Debian packages systemd-boot-efi, grub-efi-amd64-bin / -signed and shim-signed
(pytool.hostsetup).  Secure Boot helpers (keys, signing, enrollment) live here too.
"""
from __future__ import annotations

import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path

LOADERS = ("systemd-boot", "grub", "shim")

SYSTEMD_BOOT = Path("/usr/lib/systemd/boot/efi/systemd-bootx64.efi")
GRUB = Path("/usr/lib/grub/x86_64-efi/monolithic/grubx64.efi")       # unsigned
GRUB_SIGNED = Path("/usr/lib/grub/x86_64-efi-signed/grubx64.efi.signed")
SHIM_SIGNED = Path("/usr/lib/shim/shimx64.efi.signed")
MOKMANAGER_SIGNED = Path("/usr/lib/shim/mmx64.efi.signed")

# Secure Boot firmware (Debian's ovmf): the code that verifies images (SMM
# protects the variable store) and a store with Microsoft's KEK and db.
OVMF_SECBOOT_CODE = Path("/usr/share/OVMF/OVMF_CODE_4M.secboot.fd")
OVMF_MS_VARS = Path("/usr/share/OVMF/OVMF_VARS_4M.ms.fd")


class ChainError(Exception):
    """A chain run cannot be set up: one line saying why and what to do."""


@dataclass
class Chain:
    loader: str = "systemd-boot"        # systemd-boot | grub | shim
    secure_boot: bool = False           # secboot OVMF, MS keys + our cert in db
    sign: bool = True                   # sign the hypervisor (only with secure_boot)
    signed_loader: bool = True          # grub/shim: Debian's signed binaries
    first: str | None = None            # an image of ours put first in BootOrder


def _need(path: Path, package: str) -> Path:
    if not path.is_file():
        raise ChainError(f"{path} not found: install {package} "
                         f"(python3 -m pytool.hostsetup)")
    return path


def loader_path(chain: Chain) -> str:
    return {"systemd-boot": "\\EFI\\systemd\\systemd-bootx64.efi",
            "grub": "\\EFI\\debian\\grubx64.efi",
            "shim": "\\EFI\\debian\\shimx64.efi"}[chain.loader]


def esp_files(chain: Chain, kernel: Path, initrd: Path, append: str) -> dict:
    """ESP path -> host file or bytes for the internal disk."""
    files: dict = {"\\vmlinuz": kernel, "\\initrd.img": initrd}
    if chain.loader == "systemd-boot":
        sdb = _need(SYSTEMD_BOOT, "systemd-boot-efi")
        files["\\EFI\\systemd\\systemd-bootx64.efi"] = sdb
        files["\\EFI\\BOOT\\BOOTX64.EFI"] = sdb           # what bootctl installs too
        files["\\loader\\loader.conf"] = b"default debian.conf\ntimeout 0\n"
        files["\\loader\\entries\\debian.conf"] = (
            "title Debian GNU/Linux (pytool guest)\nlinux /vmlinuz\n"
            f"initrd /initrd.img\noptions {append}\n").encode()
        return files
    grub = (_need(GRUB_SIGNED, "grub-efi-amd64-signed") if chain.signed_loader
            else _need(GRUB, "grub-efi-amd64-bin"))
    files["\\EFI\\debian\\grubx64.efi"] = grub
    files["\\EFI\\debian\\grub.cfg"] = (
        "set timeout=0\nset default=0\n"
        "menuentry 'Debian GNU/Linux (pytool guest)' {\n"
        f"  linux /vmlinuz {append}\n  initrd /initrd.img\n}}\n").encode()
    if chain.loader == "shim":
        files["\\EFI\\debian\\shimx64.efi"] = _need(SHIM_SIGNED, "shim-signed")
        files["\\EFI\\debian\\mmx64.efi"] = _need(MOKMANAGER_SIGNED, "shim-signed")
    return files


# ------------------------------------------------------------------ Secure Boot
def make_test_key(out_dir: Path, name: str = "pytool-test") -> tuple[Path, Path]:
    """A self-signed RSA-2048 db key and certificate (PEM), made once."""
    import fcntl
    out_dir.mkdir(parents=True, exist_ok=True)
    key, cert = out_dir / f"{name}.key", out_dir / f"{name}.crt"
    with open(out_dir / ".lock", "w") as lock:      # parallel test workers
        fcntl.flock(lock, fcntl.LOCK_EX)
        if not (key.is_file() and cert.is_file()):
            tmp_key, tmp_cert = key.with_suffix(".key.tmp"), cert.with_suffix(".crt.tmp")
            _tool("openssl", "req", "-new", "-x509", "-newkey", "rsa:2048", "-nodes",
                  "-sha256", "-days", "3650", "-subj", f"/CN={name} Secure Boot db key/",
                  "-keyout", str(tmp_key), "-out", str(tmp_cert))
            tmp_key.replace(key)
            tmp_cert.replace(cert)
    return key, cert


def sign(src: Path, out: Path, key: Path, cert: Path) -> Path:
    """sbsign src into out (Authenticode, SHA-256); sbverify checks it."""
    out.parent.mkdir(parents=True, exist_ok=True)
    _tool("sbsign", "--key", str(key), "--cert", str(cert), "--output", str(out), str(src))
    _tool("sbverify", "--cert", str(cert), str(out))
    return out


def enroll_db(template: Path, out: Path, cert: Path) -> Path:
    """A copy of a vars store (OVMF_VARS_4M.ms.fd: PK, Microsoft KEK and db)
    with cert added to db, Secure Boot enabled (virt-fw-vars)."""
    exe = shutil.which("virt-fw-vars")
    if not exe:
        raise ChainError("virt-fw-vars not found: pip install virt-firmware "
                         "(python3 -m pytool.hostsetup)")
    _tool(exe, "--input", str(template), "--output", str(out),
          "--add-db", "a0baa8a3-041d-48a8-bc87-c36d121b5e3d", str(cert), "--secure-boot")
    return out


def _tool(*cmd: str) -> str:
    exe = shutil.which(cmd[0]) or cmd[0]
    try:
        r = subprocess.run([exe, *cmd[1:]], capture_output=True, text=True)
    except FileNotFoundError:
        raise ChainError(f"{cmd[0]} not found: run python3 -m pytool.hostsetup") from None
    if r.returncode != 0:
        tail = (r.stderr or r.stdout).strip().splitlines()[-3:]
        raise ChainError(f"{' '.join(cmd[:2])} failed (rc={r.returncode}): "
                         + " / ".join(tail))
    return r.stdout
