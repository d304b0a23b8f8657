"""Bad arguments are one clear line before anything boots; a run never passes
on a lie (a failed chain-load, a Linux that never reached userspace); an
emulator that refuses to start says why on the console."""
import struct
import subprocess

import pytest

from pytool import runner
from pytool.runner import (MAX_CPUS, MIN_MEMORY_MB, Payload, RunError, RunSpec,
                           hv_max_cpus, implied_expectations, pe_kind, validate_spec)

from conftest import explain
from test_runner_lifecycle import ROOT, RUN_QEMU


def fake_pe(path, subsystem=10, machine=0x8664, magic=0x20B, bzimage=False):
    head = bytearray(1024)
    head[:2] = b"MZ"
    struct.pack_into("<I", head, 0x3C, 0x80)
    head[0x80:0x84] = b"PE\0\0"
    struct.pack_into("<H", head, 0x84, machine)
    struct.pack_into("<H", head, 0x98, magic)
    struct.pack_into("<H", head, 0x98 + 68, subsystem)
    if bzimage:
        head[0x202:0x206] = b"HdrS"
    path.write_bytes(bytes(head))
    return path


def test_pe_kinds(tmp_path):
    assert pe_kind(fake_pe(tmp_path / "a.efi")) == "efi-app"
    assert pe_kind(fake_pe(tmp_path / "k", bzimage=True)) == "linux-efi-stub"
    assert "EFI application" in pe_kind(fake_pe(tmp_path / "d.efi", subsystem=11))
    assert "PE32+" in pe_kind(fake_pe(tmp_path / "i.efi", machine=0x14C, magic=0x10B))
    assert "no MZ" in pe_kind(ROOT / "README.md")
    assert "cannot be read" in pe_kind(tmp_path / "nope")


def test_real_images_have_the_right_kind():
    from pytool import linux
    assert pe_kind(linux.find_kernel(ROOT)) == "linux-efi-stub"


def test_hv_max_cpus_comes_from_the_header(tmp_path):
    h = tmp_path / "hv_core.h"
    h.write_text("#define HV_MAX_CPUS 256\n")
    assert hv_max_cpus(h) == 256
    assert hv_max_cpus() >= 1


@pytest.mark.parametrize("spec, engine, msg", [
    (RunSpec(expect=["("]), "qemu", "--expect '(' is not a valid regex"),
    (RunSpec(forbid=[{"re": "[", "count": 1}]), "qemu", "--forbid '[' is not a valid"),
    (RunSpec(timeout=-1), "qemu", "--timeout -1: must be more than 0"),
    (RunSpec(timeout=0), "qemu", "--timeout 0: must be more than 0"),
    (RunSpec(memory=1), "qemu", f"needs at least {MIN_MEMORY_MB['qemu']} MiB"),
    (RunSpec(memory=1), "bochs", f"needs at least {MIN_MEMORY_MB['bochs']} MiB"),
    (RunSpec(smp=0), "qemu", "--smp 0: qemu runs 1 to"),
    (RunSpec(s3=True), "bochs", "--s3: only QEMU can suspend to RAM and wake"),
    (RunSpec(smp=MAX_CPUS["bochs"] + 1), "bochs", "bochs runs 1 to 255 CPUs"),
    (RunSpec(smp=MAX_CPUS["qemu"] + 1), "qemu", "qemu runs 1 to 288 CPUs"),
])
def test_bad_arguments(spec, engine, msg):
    with pytest.raises(RunError, match=None) as e:
        validate_spec(spec, engine, hv_max=64)
    assert msg in str(e.value) and "\n" not in str(e.value)


def test_smp_beyond_hv_max_cpus():
    with pytest.raises(RunError, match="HV_MAX_CPUS=64"):
        validate_spec(RunSpec(smp=65), "qemu", hv_max=64)
    validate_spec(RunSpec(smp=65, hv=False), "qemu", hv_max=64)
    validate_spec(RunSpec(smp=65, expect=["skip reason=too-many-cpus"]), "qemu", hv_max=64)


def test_payload_kinds(tmp_path):
    with pytest.raises(RunError, match="want a Linux EFI-stub kernel"):
        validate_spec(RunSpec(payload=Payload(kernel="/etc/passwd")), "qemu", hv_max=64)
    app = fake_pe(tmp_path / "app.efi")
    with pytest.raises(RunError, match="not a Linux kernel"):
        validate_spec(RunSpec(payload=Payload(kernel=str(app))), "qemu", hv_max=64)
    drv = fake_pe(tmp_path / "drv.efi", subsystem=11)
    with pytest.raises(RunError, match="want a PE32\\+ EFI application"):
        validate_spec(RunSpec(payload=Payload(efi=str(drv))), "qemu", hv_max=64)
    validate_spec(RunSpec(payload=Payload(efi=str(app))), "qemu", hv_max=64)
    validate_spec(RunSpec(payload=Payload(efi="hello")), "qemu", hv_max=64,
                  image_names={"hello": {}})


def test_implied_expectations():
    exp, forb = implied_expectations(RunSpec(payload=Payload(efi="hello")))
    assert exp == [] and forb == [runner.CHAINLOAD_FAILED]
    exp, forb = implied_expectations(RunSpec(expect=["HV: chainload failed .*"]))
    assert forb == []
    exp, _ = implied_expectations(RunSpec(payload=Payload(kernel="default",
                                                          initrd="default")))
    assert exp == [runner.LINUX_USERSPACE_OURS]
    exp, _ = implied_expectations(RunSpec(payload=Payload(kernel="k", initrd="/my.img")))
    assert exp == [runner.LINUX_USERSPACE_ANY]
    exp, _ = implied_expectations(RunSpec(payload=Payload(kernel="default",
                                                          initrd="default"),
                                          expect=["GUEST-LINUX: userspace up cpus=0"]))
    assert exp == []


@pytest.mark.parametrize("argv, line", [
    (["--expect", "("], "error: --expect '(' is not a valid regex: missing ), "
                        "unterminated subpattern at position 0"),
    (["--timeout", "-1"], "error: --timeout -1: must be more than 0 seconds"),
    (["--memory", "1"], f"error: --memory 1: OVMF on qemu needs at least "
                        f"{MIN_MEMORY_MB['qemu']} MiB"),
    (["--smp", "300"], "error: --smp 300: qemu runs 1 to 288 CPUs"),
    (["--kernel", "/etc/passwd"], "error: --kernel /etc/passwd is not a PE image "
                                  "(no MZ header): want a Linux EFI-stub kernel"),
    (["--chainload", "/etc/passwd"], "error: --chainload /etc/passwd is not a PE image "
                                     "(no MZ header): want a PE32+ EFI application"),
])
def test_cli_one_line(argv, line):
    r = subprocess.run(RUN_QEMU + ["--engine", "qemu", "--accel", "tcg", "--quiet"] + argv,
                       cwd=ROOT, capture_output=True, text=True, timeout=60)
    assert r.returncode == 2 and r.stdout == ""
    assert r.stderr.strip() == line


@pytest.mark.parametrize("engine, said", [
    ("bochs", "cpu directive malformed"),
    ("qemu", "unable to find CPU model 'no-such-cpu'"),
])
def test_emulator_refusal_is_printed(engine, said):
    r = subprocess.run(RUN_QEMU + ["--engine", engine, "--accel", "tcg", "--quiet",
                                   "--cpu-model", "no-such-cpu", "--timeout", "30"]
                       if engine == "qemu" else
                       RUN_QEMU + ["--engine", engine, "--quiet", "--cpu-model",
                                   "no-such-cpu", "--timeout", "30"],
                       cwd=ROOT, capture_output=True, text=True, timeout=90)
    assert r.returncode == 2, r.stdout + r.stderr
    assert f"refused to start (exit code 1)" in r.stderr and said in r.stderr, r.stderr
    assert "Traceback" not in r.stderr


@pytest.mark.boot
@pytest.mark.timeout(120)
def test_failed_chainload_fails_the_run(cfg):
    """No expectation at all, a next stage that is not there, and the
    smallest memory OVMF boots in: the run fails on the chain-load line."""
    res = runner.run(RunSpec(engine="qemu", accel="tcg", memory=MIN_MEMORY_MB["qemu"],
                             live=False, timeout=60,
                             payload=Payload(path="\\EFI\\hv\\missing.efi"),
                             name="chainload-fails"), cfg)
    assert not res.passed and res.end_reason == "forbidden", explain(res)
    assert "HV: chainload failed path=\\EFI\\hv\\missing.efi status=EFI_NOT_FOUND" \
        in res.failure
    assert "HV: start" in res.serial        # it did boot at the minimum memory



def test_via_starts_the_kernel_through_a_built_image(cfg, tmp_path):
    """payload via: the hypervisor starts that image, which gets the kernel's
    path, the initrd and the command line as its arguments."""
    p = Payload(kernel="default", initrd="default", append="console=ttyS0 noapic",
                via="x2apic")
    text = runner.make_hv_cfg(p)
    assert "next=\\EFI\\hv\\x2apic.efi\n" in text and "kernel=" not in text
    assert ("args=\\EFI\\hv\\vmlinuz.efi initrd=\\EFI\\hv\\initrd.img "
            "console=ttyS0 noapic\n") in text
    built = {"hv": tmp_path / "hv.efi", "x2apic": tmp_path / "x2apic.efi"}
    files = runner._esp_files(cfg, RunSpec(payload=p), built, tmp_path)
    assert files["\\EFI\\hv\\x2apic.efi"] == built["x2apic"]
    assert "\\EFI\\hv\\vmlinuz.efi" in files and "\\EFI\\hv\\initrd.img" in files
    with pytest.raises(RunError, match="via nosuch: want a built image"):
        validate_spec(RunSpec(payload=Payload(kernel="default", via="nosuch")), "bochs",
                      image_names=cfg["build"]["images"])
