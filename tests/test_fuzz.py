"""The differential guest fuzzer (efi/apps/fuzz): one seed, run with and
without the hypervisor on 2 CPUs (BSP and an AP) - VT-x in Bochs tigerlake,
AMD-V in QEMU TCG (no NRIPS: every skipped instruction's length comes from
efi/core/insn_len.c) - must see the same outcome for every operation class,
apart from what the README documents; no `HV: panic`.  Longer runs:
`python3 -m pytool.bench fuzz [--vendor amd]`."""
import pytest

from pytool.fuzzdiff import FuzzRun, ClassResult, classes, differences, parse, run_pair

from conftest import explain

HV_CHECKS = ["hc-log-apic-page", "hc-log-ioapic-mmio", "hc-log-flash", "hc-log-pool",
             "hc-log-ram"]


def test_parse_and_compare():
    a = "FUZZ: class=io cpu=1 ops=5 faults=0 documented=0 hash=00000000000000aa\n" \
        "FUZZ: check cpu=1 at=5000 hash=0000000000000001\nFUZZ: done cpu=1 ops=5\n"
    b = a.replace("00aa", "00ab").replace("0001\n", "0002\n") + "HV: panic x\n"
    ra, rb = parse(a), parse(b)
    assert ra.classes[("io", 1)] == ClassResult(5, 0, 0, "00000000000000aa")
    assert ra.done_cpus == {1} and rb.panics == 1
    assert differences(ra, ra) == []
    d = differences(ra, rb)
    assert len(d) == 1 and "io cpu=1" in d[0] and "checkpoint at op 5000" in d[0]
    assert differences(ra, FuzzRun()) == ["io cpu=1: only in the native run"]


AMD_HV_CHECKS = ["msr-top-mem-write-gp", "msr-iorr-write-gp", "msr-smm-addr-write-gp",
                 "msr-vm-cr-write-gp"]


def check_pair(native_res, hv_res, vendor):
    assert native_res.passed, explain(native_res)
    assert hv_res.passed, explain(hv_res)
    native, hv = parse(native_res.serial), parse(hv_res.serial)
    assert native.done_cpus == hv.done_cpus == {0, 1}
    assert hv.panics == 0
    for cpu in (0, 1):
        assert all((c, cpu) in hv.classes and hv.classes[(c, cpu)].ops for c in classes(vendor))
    assert hv.hv_checks == {c: True for c in HV_CHECKS + (AMD_HV_CHECKS if vendor == "amd"
                                                          else [])}
    assert differences(native, hv) == []
    return native, hv


@pytest.mark.boot
@pytest.mark.slow
@pytest.mark.timeout(900)
def test_fuzz_hv_matches_native(cfg):
    check_pair(*run_pair(cfg, seed=1, ops=10000), "intel")


@pytest.mark.boot
@pytest.mark.timeout(300)
def test_fuzz_hv_matches_native_amd(cfg):
    """AMD-V on QEMU TCG (no NRIPS): the SVM instructions, VMMCALL, AMD's
    MSRs; about 20 s."""
    native_res, hv_res = run_pair(cfg, seed=1, ops=10000, vendor="amd", engine="qemu")
    native, hv = check_pair(native_res, hv_res, "amd")
    assert "vendor=amd qemu=1" in hv_res.serial
    # Each CPU met the hypervisor's own answers (VM_CR, VM_HSAVE_PA and the
    # VMX MSRs from the MSR policy, hypercalls), so the run tested them.
    for cpu in (0, 1):
        assert hv.classes[("svm", cpu)].faults > 0
        assert hv.classes[("rdmsr", cpu)].documented > 0
        assert hv.classes[("wrmsr", cpu)].documented > 0
        assert hv.classes[("vmcall", cpu)].documented > 0


@pytest.mark.boot
@pytest.mark.timeout(400)
def test_fuzz_hv_matches_native_amd_bochs(cfg):
    """AMD-V in Bochs ryzen (NRIPS), a short seed: Bochs compares what QEMU
    TCG cannot - RF in the RFLAGS a fault pushes (injected #UD/#GP), and an
    AP that OVMF restarts by INIT-SIPI keeping its MSRs.  About 40 s."""
    check_pair(*run_pair(cfg, seed=3, ops=2000, vendor="amd", engine="bochs"), "amd")
