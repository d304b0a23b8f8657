"""VT-x boot tests in Bochs tigerlake: the hypervisor virtualizes every CPU,
then guest-test checks the guest's view from the inside (CPUID, #UD on VMX
instructions, MSR virtualization, hypercalls, EPT protection,
devirtualization and the firmware afterwards)."""
import re

import pytest

from pytool.runner import Payload, RunSpec, run

from conftest import explain

GUEST_CHECKS = [
    "hv-present", "vmx-hidden", "vmxon-ud", "feature-control-locked",
    "feature-control-write-gp", "vmx-basic-msr-gp", "vmcall-version", "vmcall-stats",
    "vmcall-log", "vmcall-bad-function", "hv-memory-blocked", "devirtualize",
    "post-devirt-no-hv-bit", "post-devirt-no-signature", "post-devirt-stall",
    "post-devirt-conout", "post-devirt-variable",
]


def _spec(smp: int) -> RunSpec:
    # bsp-only: Bochs 2.7 keeps INIT pending after an INIT VM exit, so an AP
    # woken with INIT-SIPI-SIPI by MP Services never runs again (see report).
    expect = [r"HV: ready cpus=%d" % smp] + \
             [r"GUEST: %s PASS" % re.escape(c) for c in GUEST_CHECKS] + \
             [r"GUEST: summary pass=\d+ fail=0"]
    return RunSpec(engine="bochs", vendor="intel", smp=smp, timeout=400, live=False,
                   payload=Payload(efi="guest-test", args="bsp-only"),
                   expect=expect, forbid=[r"HV: panic", r"GUEST: \S+ FAIL"],
                   name=f"vmx-guest-test-{smp}")


@pytest.mark.boot
@pytest.mark.slow
@pytest.mark.timeout(600)
@pytest.mark.parametrize("smp", [1, 2, 4])
def test_guest_test(cfg, smp):
    res = run(_spec(smp), cfg)
    assert res.passed, explain(res)
    assert len(re.findall(r"HV: cpu=\d+ vmx=on", res.serial)) == smp
