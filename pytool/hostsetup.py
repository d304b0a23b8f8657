"""Set up a Debian 12 host (or CI machine) for building and testing: one idempotent step.

    python3 -m pytool.hostsetup            # do what is missing
    python3 -m pytool.hostsetup --check    # only report; exit 1 when something is missing
    python3 -m pytool.hostsetup --no-apt   # never run apt-get install/update

Steps, each printing one line:
  apt     the Debian packages below (apt-get update + install only when some are missing)
  pip     `pip install -e <repo>[test]` into this interpreter (skipped when satisfied)
  kernel  the Linux guest kernel: the package linux-image-cloud-amd64 depends on is
          fetched with `apt-get download` and unpacked with `dpkg-deb -x` into
          build/linux/<release>/ (nothing is installed on the host); its vmlinuz is
          recorded in build/linux/kernel.json (read by pytool.linux.find_kernel)

Standard library only: this runs before any pip package exists.
"""
from __future__ import annotations

import argparse
import hashlib
import importlib.metadata as md
import json
import os
import re
import shutil
import subprocess
import sys
import sysconfig
import tempfile
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
KERNEL_META = "linux-image-cloud-amd64"
KERNEL_DIR = Path("build/linux")

# Debian package -> why we need it.
APT_PACKAGES = {
    "clang": "compiler for the EFI images",
    "lld": "PE/COFF linker (lld-link)",
    "llvm": "llvm-objcopy, llvm-readobj",
    "gnu-efi": "EFI headers",
    "qemu-system-x86": "QEMU engine",
    "ovmf": "UEFI firmware for QEMU and Bochs",
    "bochs": "Bochs engine",
    "bochsbios": "Bochs BIOS",
    "bochs-term": "Bochs terminal display (headless runs)",
    "vgabios": "Bochs VGA BIOS",
    "mtools": "ESP image without root (pytool.images)",
    "dosfstools": "fsck.vfat for checking ESP images",
    "gdisk": "sgdisk -v checks of the GPT disk image",
    "busybox-static": "guest initramfs userland (pytool.linux)",
    "cpio": "initramfs checks",
    "gcc": "builds hvcheck, the static Linux guest checker",
    "libc6-dev": "static glibc for hvcheck",
    "systemd-boot-efi": "systemd-boot, the boot-chain scenarios' loader (pytool.bootchain)",
    "grub-efi-amd64-bin": "unsigned GRUB for the boot-chain scenarios",
    "grub-efi-amd64-signed": "Debian's signed GRUB (the Secure Boot chain)",
    "shim-signed": "Microsoft-signed shim and MokManager (the Secure Boot chain)",
    "sbsigntool": "sbsign/sbverify: signs the hypervisor (image --sign)",
    "openssl": "the generated Secure Boot test key",
}


class SetupError(Exception):
    """A step cannot be done; the message says why and what to do."""


def say(step: str, msg: str) -> None:
    print(f"hostsetup: {step:6} {msg}", flush=True)


def _run(cmd: list[str], *, cwd: Path | None = None, env: dict | None = None,
         what: str = "") -> str:
    try:
        res = subprocess.run(cmd, cwd=cwd, capture_output=True, text=True,
                             env=dict(os.environ, **(env or {})))
    except FileNotFoundError:
        raise SetupError(f"{cmd[0]} not found ({what or 'needed by hostsetup'})") from None
    if res.returncode != 0:
        tail = "\n".join((res.stdout + res.stderr).strip().splitlines()[-15:])
        raise SetupError(f"{' '.join(cmd)} failed with exit code {res.returncode}"
                         + (f":\n{tail}" if tail else ""))
    return res.stdout


# ------------------------------------------------------------------------------ apt
def wanted_packages() -> list[str]:
    pkgs = list(APT_PACKAGES)
    # A Debian system python without pip (fresh CI image) gets it from Debian.
    if sys.prefix == "/usr" and not _have_pip():
        pkgs.append("python3-pip")
    return pkgs


def _have_pip() -> bool:
    import importlib.util
    return importlib.util.find_spec("pip") is not None


def missing_packages(pkgs: list[str]) -> list[str]:
    if shutil.which("dpkg-query") is None:
        raise SetupError("dpkg-query not found: this is not a Debian host. Install "
                         f"the equivalents of {' '.join(pkgs)} by hand and rerun "
                         "with --no-apt")
    res = subprocess.run(["dpkg-query", "-W", "-f=${Package} ${Status}\\n", *pkgs],
                         capture_output=True, text=True)
    installed = {line.split()[0] for line in res.stdout.splitlines()
                 if line.endswith(" install ok installed")}
    return [p for p in pkgs if p not in installed]


class Apt:
    """apt-get, with `update` run at most once per hostsetup run."""

    def __init__(self) -> None:
        self.updated = False
        self.env = {"DEBIAN_FRONTEND": "noninteractive"}

    def update(self) -> None:
        if not self.updated:
            _need_root("apt-get update")
            _run(["apt-get", "update", "-q"], env=self.env, what="apt-get")
            self.updated = True

    def install(self, pkgs: list[str]) -> None:
        self.update()
        _run(["apt-get", "install", "-y", "-q", "--no-install-recommends", *pkgs],
             env=self.env, what="apt-get")


def _need_root(action: str, pkgs: list[str] | None = None) -> None:
    if os.geteuid() != 0:
        hint = (f"; or, as root: apt-get install --no-install-recommends {' '.join(pkgs)}"
                if pkgs else "")
        raise SetupError(f"{action} needs root and this is not root: rerun "
                         f"`sudo {sys.executable} -m pytool.hostsetup`{hint}")


def step_apt(args: argparse.Namespace, apt: Apt) -> bool:
    pkgs = wanted_packages()
    missing = missing_packages(pkgs)
    if not missing:
        say("apt", f"all {len(pkgs)} Debian packages present")
        return True
    if args.check or args.no_apt:
        say("apt", f"MISSING: {' '.join(missing)}"
            + (" (--no-apt: not installing)" if args.no_apt and not args.check else ""))
        return False
    _need_root(f"installing {' '.join(missing)}", missing)
    apt.install(missing)
    still = missing_packages(pkgs)
    if still:
        raise SetupError(f"apt-get install finished but still missing: {' '.join(still)}")
    say("apt", f"installed {' '.join(missing)}")
    return True


# ------------------------------------------------------------------------------ pip
def _norm(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def _vtuple(v: str) -> tuple[int, ...]:
    out = []
    for part in v.split("."):
        m = re.match(r"\d+", part)
        if not m:
            break
        out.append(int(m.group()))
    return tuple(out)


def _requirements() -> list[str]:
    """dependencies + the test extra, from pyproject.toml."""
    text = (REPO / "pyproject.toml").read_text()
    try:
        import tomllib
        proj = tomllib.loads(text)["project"]
        return list(proj.get("dependencies", [])) + \
            list(proj.get("optional-dependencies", {}).get("test", []))
    except ImportError:  # python 3.10: rough parse of the quoted requirement strings
        return re.findall(r'^\s*"([A-Za-z0-9_.\-]+\s*(?:[<>=!~]=?[^"]*)?)",?\s*$', text,
                          re.M)


def unmet_requirements() -> list[str]:
    """What `pip install -e <repo>[test]` would change; empty when nothing."""
    unmet = []
    # The repo's own pytool.egg-info (left by the editable build) can shadow the
    # installed dist-info when running from the repo, so look at every copy.
    dists = list(md.distributions(name="pytool"))
    ours = None
    for dist in dists:
        direct = json.loads(dist.read_text("direct_url.json") or "{}")
        url = direct.get("url", "")
        if direct.get("dir_info", {}).get("editable") and \
                Path(url.removeprefix("file://")).resolve() == REPO:
            ours = dist
    if not dists:
        unmet.append("pytool")
    elif ours is None:
        unmet.append(f"pytool (installed, but not editable from {REPO})")
    elif ours.version != _project_version():
        unmet.append(f"pytool (metadata {ours.version}, pyproject {_project_version()})")
    for req in _requirements():
        m = re.match(r"\s*([A-Za-z0-9_.\-]+)\s*(?:>=\s*([0-9][^,;\s]*))?", req)
        if not m:
            continue
        name, minimum = m.group(1), m.group(2)
        try:
            have = md.version(name)
        except md.PackageNotFoundError:
            try:
                have = md.version(_norm(name))
            except md.PackageNotFoundError:
                unmet.append(req)
                continue
        if minimum and _vtuple(have) < _vtuple(minimum):
            unmet.append(f"{req} (have {have})")
    return unmet


def _project_version() -> str:
    m = re.search(r'^version\s*=\s*"([^"]+)"', (REPO / "pyproject.toml").read_text(), re.M)
    return m.group(1) if m else ""


def step_pip(args: argparse.Namespace) -> bool:
    unmet = unmet_requirements()
    if not unmet:
        say("pip", f"pytool (editable, {REPO}) and its test requirements present in "
            f"{sys.executable}")
        return True
    if args.check:
        say("pip", f"MISSING in {sys.executable}: {', '.join(unmet)}")
        return False
    if not _have_pip():
        raise SetupError(f"{sys.executable} has no pip: install python3-pip "
                         "(rerun without --no-apt as root) or use a virtualenv")
    cmd = [sys.executable, "-m", "pip", "install", "-q", "-e", f"{REPO}[test]"]
    externally = Path(sysconfig.get_path("stdlib"), "EXTERNALLY-MANAGED")
    if externally.exists() and sys.prefix == sys.base_prefix:
        cmd.append("--break-system-packages")   # PEP 668: a Debian system python (CI)
    _run(cmd, what="pip")
    still = unmet_requirements()
    if still:
        raise SetupError(f"pip install finished but still unmet: {', '.join(still)}")
    say("pip", f"installed {', '.join(unmet)} into {sys.executable}")
    return True


# --------------------------------------------------------------------------- kernel
def kernel_package(apt: Apt, may_update: bool) -> str:
    """The versioned linux-image-* package the meta package depends on."""
    def resolve() -> str | None:
        res = subprocess.run(["apt-cache", "depends", KERNEL_META],
                             capture_output=True, text=True)
        m = re.search(r"Depends:\s*(linux-image-[0-9][^\s:]*)", res.stdout)
        if not m:
            res = subprocess.run(["apt-cache", "show", KERNEL_META],
                                 capture_output=True, text=True)
            m = re.search(r"^Depends:.*?(linux-image-[0-9][^\s,(]*)", res.stdout, re.M)
        return m.group(1) if m else None

    if shutil.which("apt-cache") is None:
        raise SetupError("apt-cache not found: the guest kernel is fetched from Debian; "
                         "on another host put a bzImage at build/linux/<release>/ and "
                         "write build/linux/kernel.json {\"vmlinuz\": ...} by hand")
    name = resolve()
    if name is None and may_update:
        apt.update()
        name = resolve()
    if name is None:
        raise SetupError(f"cannot resolve {KERNEL_META} (apt-cache knows no such "
                         "package): run `apt-get update` as root")
    return name


def step_kernel(args: argparse.Namespace, apt: Apt) -> bool:
    meta = REPO / KERNEL_DIR / "kernel.json"
    try:
        rec = json.loads(meta.read_text())
    except (OSError, ValueError):
        rec = {}
    have = (REPO / rec.get("vmlinuz", "\0")).is_file() if rec.get("vmlinuz") else False
    may_update = not (args.check or args.no_apt) and os.geteuid() == 0
    try:
        name = kernel_package(apt, may_update)
    except SetupError:
        if have:   # offline or no apt lists: what we have is good enough
            say("kernel", f"{rec['vmlinuz']} already there (could not check for a newer "
                "package)")
            return True
        raise
    if have and rec.get("package") == name:
        say("kernel", f"{rec['vmlinuz']} ({name} {rec.get('version', '')}) already there")
        return True
    if args.check:
        say("kernel", f"MISSING: {name} not fetched (build/linux/kernel.json)")
        return False

    release = name.removeprefix("linux-image-")
    dest = REPO / KERNEL_DIR / release
    (REPO / KERNEL_DIR).mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=REPO / KERNEL_DIR, prefix="dl-") as td:
        os.chmod(td, 0o755)     # apt's _apt sandbox user must be able to write there
        try:
            _run(["apt-get", "download", "-q", name], cwd=Path(td), what="apt-get")
        except SetupError:
            if not may_update or apt.updated:
                raise
            apt.update()        # stale lists: the .deb moved on the mirror
            _run(["apt-get", "download", "-q", name], cwd=Path(td), what="apt-get")
        debs = sorted(Path(td).glob(f"{name}_*.deb"))
        if not debs:
            raise SetupError(f"apt-get download {name} produced no .deb")
        version = _run(["dpkg-deb", "-f", str(debs[0]), "Version"]).strip()
        if dest.exists():
            shutil.rmtree(dest)
        _run(["dpkg-deb", "-x", str(debs[0]), str(dest)], what="dpkg")
    kernels = sorted((dest / "boot").glob("vmlinuz-*"))
    if not kernels:
        raise SetupError(f"{name} has no boot/vmlinuz-*")
    vmlinuz = kernels[0].relative_to(REPO)
    rec = {"package": name, "version": version, "release": release,
           "vmlinuz": str(vmlinuz),
           "sha256": hashlib.sha256(kernels[0].read_bytes()).hexdigest()}
    meta.write_text(json.dumps(rec, indent=2) + "\n")
    say("kernel", f"fetched {name} {version} -> {vmlinuz}")
    return True


# ----------------------------------------------------------------------------- main
def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python3 -m pytool.hostsetup",
                                 description=__doc__.split("\n\n")[0])
    ap.add_argument("--check", action="store_true",
                    help="only report what is missing (exit 1 if anything is)")
    ap.add_argument("--no-apt", action="store_true",
                    help="never run apt-get install/update (the kernel is still "
                         "fetched with apt-get download, which needs no root)")
    args = ap.parse_args(argv)
    apt = Apt()
    ok = True
    try:
        for step in (lambda: step_apt(args, apt), lambda: step_pip(args),
                     lambda: step_kernel(args, apt)):
            ok = step() and ok
    except SetupError as e:
        print(f"hostsetup: error: {e}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("hostsetup: interrupted", file=sys.stderr)
        return 130
    if not ok and not args.check:
        print("hostsetup: error: some Debian packages are missing (see above); "
              "rerun as root without --no-apt", file=sys.stderr)
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
