"""VT-x boot tests in Bochs tigerlake: the hypervisor virtualizes every CPU,
then guest-test checks the guest's view from the inside (CPUID, #UD on VMX
instructions, MSR virtualization, hypercalls, EPT protection,
devirtualization and the firmware afterwards)."""
import re

import pytest

from pytool.runner import Payload, RunSpec, run

from conftest import explain

# Checks every CPU runs and reports as `GUEST: <check> PASS cpu=<i>`.
PER_CPU_CHECKS = [
    "hv-present", "vmx-hidden", "vmxon-ud", "feature-control-locked",
    "feature-control-write-gp", "vmx-basic-msr-gp", "vmcall-version", "devirtualize",
    "post-devirt-no-hv-bit",
]
# Checks the BSP alone runs.
BSP_CHECKS = [
    "vmcall-stats", "vmcall-log", "vmcall-bad-function", "hv-memory-blocked",
    "log-ring-read-only",
    "nmi-prompt", "nmi-held-to-iret",
    # x2APIC ICR: #GP outside x2APIC mode and for a reserved bit, a legal write sent
    "x2apic-icr-gp-in-xapic-mode", "x2apic-icr-reserved-gp", "x2apic-icr-send",
    "devirtualize-call", "post-devirt-no-signature", "post-devirt-stall",
    "post-devirt-conout", "post-devirt-variable",
]


def _spec(smp: int) -> RunSpec:
    # Every CPU: the APs are woken by MP Services with INIT-SIPI-SIPI, which
    # the hypervisor emulates (efi/core/smp.c); one HC_DEVIRT takes all out.
    expect = [{"re": r"HV: cpu=\d+ vmx=on", "count": smp}, r"HV: ready cpus=%d" % smp] + \
             [{"re": r"GUEST: %s PASS cpu=%d( |$)" % (re.escape(c), i), "count": 1}
              for c in PER_CPU_CHECKS for i in range(smp)] + \
             [r"GUEST: %s PASS cpu=0" % re.escape(c) for c in BSP_CHECKS] + \
             [{"re": r"HV: stats cpu=%d " % i, "count": 1} for i in range(smp)] + \
             [r"GUEST: summary pass=\d+ fail=0"]
    return RunSpec(engine="bochs", vendor="intel", smp=smp, timeout=400, live=False,
                   payload=Payload(efi="guest-test"), expect=expect, ordered=False,
                   forbid=[r"HV: panic", r"GUEST: \S+ FAIL"],
                   name=f"vmx-guest-test-{smp}")


@pytest.mark.boot
@pytest.mark.slow
@pytest.mark.timeout(600)
@pytest.mark.parametrize("smp", [1, 2, 4])
def test_guest_test(cfg, smp):
    res = run(_spec(smp), cfg)
    assert res.passed, explain(res)
    assert len(re.findall(r"HV: cpu=\d+ vmx=on", res.serial)) == smp
