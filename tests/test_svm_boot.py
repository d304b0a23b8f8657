"""AMD-V boot tests: the hypervisor virtualizes every CPU with SVM and NPT,
then guest-test checks the guest's view from the inside (CPUID, SVM hidden,
#UD on SVM instructions, EFER/VM_CR/VM_HSAVE_PA, VMMCALL hypercalls, NPT
protection, devirtualization and the firmware afterwards).

QEMU TCG (`-cpu max`) emulates SVM with NPT but without NRIPS, so every
instruction length comes from efi/core/insn_len.c there; Bochs `ryzen` has
NRIPS and flush-by-ASID (the `slow` cases)."""
import re

import pytest

from pytool.runner import Payload, RunSpec, run

from conftest import explain

# Checks every CPU runs and reports as `GUEST: <check> PASS cpu=<i>`.
PER_CPU_CHECKS = [
    "hv-present", "cpuid-prefixed", "svm-hidden", "vmrun-ud", "stgi-ud", "efer-svme-hidden", "vm-cr-locked",
    "vm-cr-write-gp", "vm-hsave-gp", "vmcall-version", "devirtualize", "post-devirt-no-hv-bit",
]
# Checks the BSP alone runs.
BSP_CHECKS = [
    "vmcall-stats", "vmcall-log", "vmcall-bad-function", "vmcall-bad-magic-ud",
    "hv-memory-blocked", "nmi-prompt", "nmi-held-to-iret",
    "devirtualize-call", "post-devirt-no-signature", "post-devirt-stall",
    "post-devirt-conout", "post-devirt-variable",
]


def guest_test_spec(smp: int, engine: str = "qemu", timeout: int = 120) -> RunSpec:
    expect = [{"re": r"HV: cpu=\d+ svm=on", "count": smp}, r"HV: ready cpus=%d$" % smp,
              r"HV: npt maxphyaddr=\d+ pages=\S+ npt-bytes=\d+"] + \
             [{"re": r"GUEST: %s PASS cpu=%d( |$)" % (re.escape(c), i), "count": 1}
              for c in PER_CPU_CHECKS for i in range(smp)] + \
             [r"GUEST: %s PASS cpu=0" % re.escape(c) for c in BSP_CHECKS] + \
             [r"HV: npt-block cpu=0 gpa=[0-9a-f]+ access=r"] + \
             [{"re": r"HV: stats cpu=%d " % i, "count": 1} for i in range(smp)] + \
             [r"GUEST: summary pass=\d+ fail=0$"]
    return RunSpec(engine=engine, vendor="amd", smp=smp, timeout=timeout, live=False,
                   payload=Payload(efi="guest-test"), expect=expect, ordered=False,
                   forbid=[r"HV: panic", r"GUEST: \S+ FAIL", r"HV: vmexit-invalid"],
                   name=f"svm-guest-test-{engine}-{smp}")


@pytest.mark.boot
@pytest.mark.timeout(180)
@pytest.mark.parametrize("smp", [1, 2, 4])
def test_guest_test_tcg(cfg, smp):
    """QEMU TCG, about 12 s each."""
    res = run(guest_test_spec(smp), cfg)
    assert res.passed, explain(res)
    assert len(re.findall(r"HV: cpu=\d+ svm=on", res.serial)) == smp
    assert "HV: svm rev=" in res.serial and "nrips=0" in res.serial   # the decoder path


@pytest.mark.boot
@pytest.mark.slow
@pytest.mark.timeout(900)
@pytest.mark.parametrize("smp", [1, 2])
def test_guest_test_bochs_ryzen(cfg, smp):
    res = run(guest_test_spec(smp, engine="bochs", timeout=400 + 200 * smp), cfg)
    assert res.passed, explain(res)
    assert "nrips=1" in res.serial


# ---- Linux: nothing new in the kernel log against the --no-hv baseline -----------
# loglevel=5 shows KERN_WARNING and worse.  Lines that come and go with TCG's
# timing on either side, with or without the hypervisor:
TIMING_NOISE = [
    r"APIC calibration not consistent with PM-Timer",
    r"Failed to access perfctr msr",
    r"tsc: Unable to calibrate against PIT",
    r"tsc: Marking TSC unstable",
    r"clocksource: ",
]


def _kernel_lines(serial: str) -> set[str]:
    out = set()
    for line in serial.replace("\r", "").splitlines():
        m = re.match(r"^\[\s*\d+\.\d+\] (.*)$", line)
        if m and "GUEST-LINUX:" not in m.group(1) and \
                not any(re.search(n, m.group(1)) for n in TIMING_NOISE):
            out.add(m.group(1).strip())
    return out


def _linux_spec(hv: bool) -> RunSpec:
    append = "console=ttyS0 loglevel=5" + ("" if hv else " hvcheck=baseline")
    expect = ([r"HV: ready cpus=2$"] if hv else [r"HV: skip reason=disabled-by-config$"]) + \
        [r"GUEST-LINUX: userspace up cpus=0-1$", r"GUEST-LINUX: summary pass=12 fail=0$",
         r"reboot: Power down"] + ([r"HV: poweroff"] if hv else [])
    return RunSpec(engine="qemu", vendor="amd", smp=2, memory=512, hv=hv, timeout=200,
                   live=False, guest_ends=True,
                   payload=Payload(kernel="default", initrd="default", append=append),
                   expect=expect, forbid=[r"Kernel panic", r"BUG:", r"Oops", r"HV: panic"],
                   name=f"svm-linux-{'hv' if hv else 'nohv'}-warnings")


@pytest.mark.boot
@pytest.mark.timeout(420)
def test_linux_no_new_warnings_vs_baseline(cfg):
    """Linux at 2 CPUs under SVM and without the hypervisor, same machine: every
    warning-level kernel line of the hv boot also appears in the baseline."""
    base = run(_linux_spec(False), cfg)
    assert base.passed, explain(base)
    hv = run(_linux_spec(True), cfg)
    assert hv.passed, explain(hv)
    new = _kernel_lines(hv.serial) - _kernel_lines(base.serial)
    assert not new, f"kernel lines only under the hypervisor: {sorted(new)}"


def test_kernel_lines_filter():
    log = ("[    0.1] APIC: Stale IRR: 0 ISR: 0\n[ 1.0] GUEST-LINUX: x\n"
           "[    0.7] APIC calibration not consistent with PM-Timer: 103ms\nHV: stats\n")
    assert _kernel_lines(log) == {"APIC: Stale IRR: 0 ISR: 0"}


@pytest.mark.boot
@pytest.mark.slow
@pytest.mark.timeout(400)
def test_more_than_64_cpus(cfg):
    """Per-CPU state is sized from MP Services: 72 CPUs (more than the 64 of a
    u64 CPU mask) all virtualized (about 35 s; 255 took 84 s)."""
    spec = RunSpec(engine="qemu", vendor="amd", smp=72, memory=1024, timeout=360, live=False,
                   payload=Payload(efi="hello"), name="svm-72-cpus",
                   expect=[{"re": r"HV: cpu=\d+ svm=on", "count": 72}, r"HV: ready cpus=72$",
                           r"PAYLOAD: hello"], forbid=[r"HV: panic", r"HV: skip"])
    res = run(spec, cfg)
    assert res.passed, explain(res)
