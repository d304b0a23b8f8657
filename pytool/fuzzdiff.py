"""The differential fuzzer (efi/apps/fuzz): run one seed with and without
the hypervisor on the same engine and CPU model (VT-x: Bochs tigerlake;
AMD-V: QEMU TCG or Bochs ryzen) and compare what each CPU saw, class by
class.

The payload already folds the differences the README's guest interface
documents into a `documented` count, so any hash that differs is an
undocumented difference.  Used by tests/test_fuzz.py and
`python3 -m pytool.bench fuzz`."""
from __future__ import annotations

import re
from dataclasses import dataclass, field

from .runner import Payload, RunSpec, run

CLASS_RE = re.compile(r"FUZZ: class=(\w+) cpu=(\d+) ops=(\d+) faults=(\d+) documented=(\d+) "
                      r"hash=([0-9a-f]{16})")
CHECK_RE = re.compile(r"FUZZ: check cpu=(\d+) at=(\d+) hash=([0-9a-f]{16})")
HVCHECK_RE = re.compile(r"FUZZ: hv-check (\S+) (PASS|FAIL)")


@dataclass
class ClassResult:
    ops: int
    faults: int
    documented: int
    hash: str


@dataclass
class FuzzRun:
    classes: dict[tuple[str, int], ClassResult] = field(default_factory=dict)
    checks: dict[tuple[int, int], str] = field(default_factory=dict)
    done_cpus: set[int] = field(default_factory=set)
    hv_checks: dict[str, bool] = field(default_factory=dict)
    panics: int = 0


def parse(serial: str) -> FuzzRun:
    r = FuzzRun()
    for m in CLASS_RE.finditer(serial):
        r.classes[(m.group(1), int(m.group(2)))] = ClassResult(
            int(m.group(3)), int(m.group(4)), int(m.group(5)), m.group(6))
    for m in CHECK_RE.finditer(serial):
        r.checks[(int(m.group(1)), int(m.group(2)))] = m.group(3)
    r.done_cpus = {int(x) for x in re.findall(r"FUZZ: done cpu=(\d+)", serial)}
    r.hv_checks = {m.group(1): m.group(2) == "PASS" for m in HVCHECK_RE.finditer(serial)}
    r.panics = serial.count("HV: panic")
    return r


def differences(native: FuzzRun, hv: FuzzRun) -> list[str]:
    """Every way the hv run differs from the native one, one line each."""
    out = []
    for key in sorted(set(native.classes) | set(hv.classes)):
        a, b = native.classes.get(key), hv.classes.get(key)
        if a is None or b is None:
            out.append(f"{key[0]} cpu={key[1]}: only in the {'hv' if a is None else 'native'} run")
        elif (a.ops, a.documented, a.hash) != (b.ops, b.documented, b.hash):
            first = next((at for (cpu, at) in sorted(native.checks) if cpu == key[1] and
                          native.checks[(cpu, at)] != hv.checks.get((cpu, at))), None)
            out.append(f"{key[0]} cpu={key[1]}: native faults={a.faults} hash={a.hash}, "
                       f"hv faults={b.faults} hash={b.hash}"
                       + (f" (first differing checkpoint at op {first})" if first else ""))
    return out


# The fuzzer's classes; the virtualization instructions' class is named
# after the vendor's extension.
def classes(vendor: str = "intel") -> list[str]:
    return ["cpuid", "rdmsr", "wrmsr", "cr", "xsetbv", "io", "apic",
            "svm" if vendor == "amd" else "vmx", "vmcall"]


def default_engine(vendor: str) -> str:
    """VT-x needs Bochs (QEMU TCG has no VMX); AMD-V runs fastest on QEMU TCG."""
    return "qemu" if vendor == "amd" else "bochs"


def fuzz_spec(seed: int, ops: int, hv: bool, smp: int = 2, trace: str = "",
              vendor: str = "intel", engine: str | None = None) -> RunSpec:
    engine = engine or default_engine(vendor)
    # AMD: the emulators lack MOV CR's long-mode #GP checks in an SVM guest
    # (fuzz.c, lax_cr), and the hypervisor intercepts no CR write there.
    args = f"seed={seed} ops={ops}" + (f" trace={trace}" if trace else "") + \
        (" lax-cr=1" if vendor == "amd" else "")
    # Bochs runs about 100 operations per second per CPU; QEMU TCG far more.
    per_100 = 1 if engine == "bochs" else 10
    return RunSpec(engine=engine, accel="tcg" if engine == "qemu" else None, vendor=vendor,
                   smp=smp, hv=hv, live=False, timeout=240 + ops * smp // (100 * per_100),
                   payload=Payload(efi="fuzz", args=args),
                   expect=[r"FUZZ: summary"], forbid=[r"HV: panic"],
                   name=f"fuzz-{vendor}-{'hv' if hv else 'nohv'}-{seed}")


def run_pair(cfg: dict, seed: int, ops: int, smp: int = 2, vendor: str = "intel",
             engine: str | None = None):
    """(native result, hv result) for one seed, on the same engine and CPU model."""
    return (run(fuzz_spec(seed, ops, False, smp, vendor=vendor, engine=engine), cfg),
            run(fuzz_spec(seed, ops, True, smp, vendor=vendor, engine=engine), cfg))
