"""Engine command lines, generated configs and the KVM decision (no boots)."""
from pathlib import Path

import pytest

from pytool import cli, config
from pytool.engines.bochs import BochsSetup, bochsrc
from pytool.engines.kvm import host_checks
from pytool.engines.qemu import QemuSetup, qemu_command
from pytool.runner import Payload, make_hv_cfg, pick_engine, spec_from_scenario, RunSpec


def qsetup(**kw):
    base = dict(cpu="Nehalem", accel="tcg", smp=2, memory=256, code=Path("/fw/code.fd"),
                vars=Path("/run/vars.fd"), disk=Path("/run/disk.img"))
    base.update(kw)
    return QemuSetup(**base)


def pairs(cmd):
    return {(cmd[i], cmd[i + 1]) for i in range(len(cmd) - 1)}


def test_qemu_command():
    cmd = qemu_command(qsetup(), Path("/run/qmp.sock"))
    p = pairs(cmd)
    assert ("-machine", "q35") in p and ("-accel", "tcg") in p and ("-cpu", "Nehalem") in p
    assert ("-smp", "2") in p and ("-m", "256") in p
    assert ("-drive", "if=pflash,format=raw,unit=0,readonly=on,file=/fw/code.fd") in p
    assert ("-drive", "if=pflash,format=raw,unit=1,file=/run/vars.fd") in p
    assert ("-chardev", "socket,id=qmp,path=/run/qmp.sock") in p
    assert ("-device", "isa-debug-exit,iobase=0xf4,iosize=0x04") in p
    assert "-nodefaults" in cmd


def test_qemu_s3_is_offered_only_when_asked():
    assert ("-global", "ICH9-LPC.disable_s3=0") in pairs(qemu_command(qsetup(s3=True), Path("/q")))
    assert "ICH9-LPC.disable_s3=0" not in qemu_command(qsetup(), Path("/q"))


def test_qemu_kvm_profile():
    cmd = qemu_command(qsetup(accel="kvm", cpu="host,+vmx"), Path("/q"))
    assert ("-accel", "kvm") in pairs(cmd) and ("-cpu", "host,+vmx") in pairs(cmd)


def test_bochsrc():
    s = BochsSetup(cpu_model="tigerlake", smp=4, memory=512, rom=Path("/o/OVMF.fd"),
                   vgarom=Path("/v.bin"), disk=Path("/r/disk.img"))
    rc = bochsrc(s, Path("/r/com1.raw"), Path("/r/bochs.log"))
    assert "romimage: file=/o/OVMF.fd, address=0xffe00000" in rc
    assert "cpu: model=tigerlake, count=4," in rc
    assert "megs: 512" in rc
    assert "ata0-master: type=disk, path=/r/disk.img, mode=flat" in rc
    assert "com1: enabled=1, mode=file, dev=/r/com1.raw" in rc
    assert 'display_library: rfb, options="timeout=0"' in rc


def test_hv_cfg_for_efi_payload():
    text = make_hv_cfg(Payload(efi="hello", args="a b"))
    assert "hypervisor=on" in text
    assert "next=\\EFI\\hv\\hello.efi" in text and "args=a b" in text


def test_hv_cfg_for_linux_and_no_hv():
    text = make_hv_cfg(Payload(kernel="default", initrd="default", append="console=ttyS0"),
                       hv=False)
    assert "hypervisor=off" in text
    assert "kernel=\\EFI\\hv\\vmlinuz.efi" in text
    assert "initrd=\\EFI\\hv\\initrd.img" in text and "append=console=ttyS0" in text


def test_host_checks_without_device(tmp_path):
    v = host_checks("intel", dev=tmp_path / "kvm")
    assert not v.usable and "does not exist" in v.reason


def test_host_checks_wrong_vendor(tmp_path):
    dev = tmp_path / "kvm"
    dev.write_text("")
    info = tmp_path / "cpuinfo"
    info.write_text("vendor_id\t: AuthenticAMD\nflags\t\t: fpu svm\n")
    v = host_checks("intel", dev=dev, cpuinfo=info)
    assert not v.usable and "GenuineIntel" in v.reason
    assert host_checks("amd", dev=dev, cpuinfo=info) is None   # a probe boot decides


def test_host_checks_no_nesting(tmp_path):
    dev = tmp_path / "kvm"
    dev.write_text("")
    info = tmp_path / "cpuinfo"
    info.write_text("vendor_id\t: GenuineIntel\nflags\t\t: fpu sse hypervisor\n")
    v = host_checks("intel", dev=dev, cpuinfo=info)
    assert not v.usable and "vmx" in v.reason


def test_pick_engine_explicit():
    cfg = config.load()
    assert pick_engine(cfg, RunSpec(engine="bochs")) == ("bochs", None)
    assert pick_engine(cfg, RunSpec(engine="qemu", accel="tcg")) == ("qemu", "tcg")


def test_scenario_to_spec_merges_default_forbid():
    cfg = config.load()
    spec = spec_from_scenario(cfg, config.scenario(cfg, "tcg-intel-failopen"))
    assert spec.payload.efi == "hello" and spec.payload.args == "alpha beta"
    assert any(f["re"] == "HV: panic" for f in spec.forbid)


def args(*argv):
    a = cli.parser().parse_args(["run", *argv])
    return cli.spec_from_args(a, config.load())


def test_cli_run_options():
    s = args("--engine", "qemu", "--vendor", "amd", "--smp", "4", "--memory", "512",
             "--chainload", "x.efi", "--args", "1 2", "--timeout", "9", "--expect", "A",
             "--forbid", "B", "--no-hv", "--keep-running", "--release")
    assert (s.engine, s.vendor, s.smp, s.memory, s.timeout) == ("qemu", "amd", 4, 512, 9)
    assert s.payload.efi == "x.efi" and s.payload.args == "1 2"
    assert s.expect == ["A"] and "B" in s.forbid and not s.hv
    assert s.keep_running and s.release


def test_cli_kernel_options():
    s = args("--kernel", "default", "--initrd", "default", "--append", "quiet")
    assert s.payload.kernel == "default" and s.payload.append == "quiet"


@pytest.mark.parametrize("argv, message", [
    (["--smp", "0"], "must be at least 1"),
    (["--smp", "two"], "not a whole number"),
    (["--engine", "vbox"], "invalid choice"),
    (["--bogus"], "unrecognized arguments"),
])
def test_cli_bad_flags(argv, message, capsys):
    with pytest.raises(SystemExit) as e:
        cli.run_qemu_main(argv)
    assert e.value.code == 2
    assert message in capsys.readouterr().err


@pytest.mark.parametrize("argv", [["--chainload", "a.efi", "--kernel", "k"],
                                  ["--initrd", "i"], ["--args", "x"]])
def test_cli_conflicts(argv):
    with pytest.raises(SystemExit, match="error:"):
        args(*argv)


def test_cli_defaults_boot_hello_and_expect_status_lines():
    s = args()
    assert s.payload.efi == "hello"
    assert [e["re"] for e in s.expect][:2] == ["HV: start version=", "HV: caps vendor="]


def test_cli_own_payload_drops_default_expectations():
    s = args("--kernel", "default")
    assert s.expect == [] and s.payload.kernel == "default"
