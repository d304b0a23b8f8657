"""Does /dev/kvm really run a guest with nested VMX (or SVM)?

Never assumed: cheap host checks first (the device opens, the host CPU is of
the profile's vendor and shows the virtualization flag), then a real probe
boot under KVM that must print `HV: caps ... virt=vmx|svm`.  The verdict is
cached per host, kernel and QEMU version, since the probe boot costs seconds.
"""
from __future__ import annotations

import json
import os
import platform
import subprocess
from dataclasses import dataclass
from pathlib import Path

VENDOR_ID = {"intel": "GenuineIntel", "amd": "AuthenticAMD"}
FLAG = {"intel": "vmx", "amd": "svm"}


@dataclass
class KvmVerdict:
    usable: bool
    reason: str


def host_checks(vendor: str, dev: Path = Path("/dev/kvm"),
                cpuinfo: Path = Path("/proc/cpuinfo")) -> KvmVerdict | None:
    """A verdict when the host alone rules KVM out; None when a probe boot must decide."""
    if not dev.exists():
        return KvmVerdict(False, f"{dev} does not exist")
    try:
        fd = os.open(dev, os.O_RDWR)
        os.close(fd)
    except OSError as exc:
        return KvmVerdict(False, f"cannot open {dev}: {exc.strerror}")
    try:
        text = cpuinfo.read_text()
    except OSError:
        return KvmVerdict(False, f"cannot read {cpuinfo}")
    vendor_id = next((l.split(":", 1)[1].strip() for l in text.splitlines()
                      if l.startswith("vendor_id")), "")
    if vendor_id != VENDOR_ID[vendor]:
        return KvmVerdict(False, f"host CPU is {vendor_id or 'unknown'}, "
                                 f"the {vendor} profile needs {VENDOR_ID[vendor]}")
    flags = next((l.split(":", 1)[1].split() for l in text.splitlines()
                  if l.startswith("flags")), [])
    if FLAG[vendor] not in flags:
        return KvmVerdict(False, f"host CPU does not expose {FLAG[vendor]} "
                                 f"(no nested virtualization)")
    return None


def _cache_key(vendor: str) -> str:
    try:
        qemu = subprocess.run(["qemu-system-x86_64", "--version"], capture_output=True,
                              text=True, timeout=10).stdout.splitlines()[0]
    except (OSError, IndexError, subprocess.TimeoutExpired):
        qemu = "none"
    return f"{vendor}|{platform.node()}|{platform.release()}|{qemu}"


def kvm_verdict(vendor: str, cache_dir: Path, probe_boot) -> KvmVerdict:
    """probe_boot(vendor) -> KvmVerdict runs the real boot; it is called at most
    once per host/kernel/QEMU combination."""
    early = host_checks(vendor)
    if early is not None:
        return early
    cache = cache_dir / f"kvm-probe-{vendor}.json"
    key = _cache_key(vendor)
    try:
        saved = json.loads(cache.read_text())
        if saved.get("key") == key:
            return KvmVerdict(saved["usable"], saved["reason"] + " (cached)")
    except (OSError, ValueError, KeyError):
        pass
    verdict = probe_boot(vendor)
    cache_dir.mkdir(parents=True, exist_ok=True)
    cache.write_text(json.dumps({"key": key, "usable": verdict.usable,
                                 "reason": verdict.reason}))
    return verdict
