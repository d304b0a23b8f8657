"""Boot-chain pieces without booting: the internal ESP per loader, hv.cfg with
next=auto, the QEMU command line for a USB stick under Secure Boot, the
Bochs second disk, and the scenario key."""
from pathlib import Path

import pytest

from pytool import bootchain, config
from pytool.bootchain import Chain
from pytool.engines.bochs import BochsSetup, bochsrc
from pytool.engines.qemu import QemuSetup, qemu_command
from pytool.runner import make_hv_cfg, spec_from_scenario


def pairs(cmd):
    return {(cmd[i], cmd[i + 1]) for i in range(len(cmd) - 1)}


@pytest.mark.parametrize("loader, must", [
    ("systemd-boot", ["\\EFI\\systemd\\systemd-bootx64.efi", "\\EFI\\BOOT\\BOOTX64.EFI",
                      "\\loader\\loader.conf", "\\loader\\entries\\debian.conf"]),
    ("grub", ["\\EFI\\debian\\grubx64.efi", "\\EFI\\debian\\grub.cfg"]),
    ("shim", ["\\EFI\\debian\\shimx64.efi", "\\EFI\\debian\\grubx64.efi",
              "\\EFI\\debian\\mmx64.efi", "\\EFI\\debian\\grub.cfg"]),
])
def test_internal_esp(loader, must):
    if not bootchain.SYSTEMD_BOOT.is_file() or not bootchain.SHIM_SIGNED.is_file():
        pytest.skip("Debian loaders not installed (python3 -m pytool.hostsetup)")
    files = bootchain.esp_files(Chain(loader=loader), Path("/k"), Path("/i"), "quiet x=1")
    assert set(must) <= set(files) and files["\\vmlinuz"] == Path("/k")
    assert bootchain.loader_path(Chain(loader=loader)) in files
    text = b"".join(v for v in files.values() if isinstance(v, bytes)).decode()
    assert "quiet x=1" in text and "/vmlinuz" in text and "/initrd.img" in text
    if loader == "shim":
        assert files["\\EFI\\debian\\grubx64.efi"] == bootchain.GRUB_SIGNED


def test_hv_cfg_next_auto():
    assert "next=auto" in make_hv_cfg(None, next_auto=True).splitlines()
    assert "next=auto" not in make_hv_cfg(None)


def test_qemu_usb_stick_secure_boot():
    s = QemuSetup(cpu="Nehalem", accel="tcg", smp=1, memory=512, code=Path("/sb.fd"),
                  vars=Path("/v.fd"), disk=Path("/stick.img"), usb_stick=True,
                  internal_disks=(Path("/internal.img"),), secure_boot=True)
    cmd = qemu_command(s, Path("/q.sock"))
    p = pairs(cmd)
    assert ("-machine", "q35,smm=on") in p
    assert ("-global", "driver=cfi.pflash01,property=secure,value=on") in p
    assert ("-device", "qemu-xhci,id=xhci") in p
    assert ("-device", "usb-storage,bus=xhci.0,drive=esp,bootindex=0") in p
    assert ("-device", "ide-hd,drive=internal0,bus=ide.1,bootindex=1") in p
    assert not any("ide-hd,drive=esp" in c for c in cmd)


def test_bochs_internal_disk():
    s = BochsSetup(cpu_model="x", smp=1, memory=512, rom=Path("/r"), vgarom=Path("/v"),
                   disk=Path("/d.img"), internal_disks=(Path("/i.img"),))
    assert "ata0-slave: type=disk, path=/i.img, mode=flat" in bochsrc(s, Path("/c"),
                                                                     Path("/l"))


def test_chain_scenarios_load():
    cfg = config.load()
    chains = [sc for sc in cfg["scenarios"] if sc["chain"]]
    assert {c["chain"]["loader"] for c in chains} == {"systemd-boot", "grub", "shim"}
    spec = spec_from_scenario(cfg, config.scenario(cfg, "sb-chain-shim"))
    assert spec.chain.secure_boot and spec.chain.sign and spec.payload.linux_chain


def test_bad_chain_key_is_named():
    raw = config.CONFIG_PATH.read_text() + \
        "\n  - name: bad-chain\n    chain: {loader: lilo}\n"
    with pytest.raises(config.ConfigError, match=r"chain\.loader: 'lilo' is not one of"):
        config.loads(raw)
