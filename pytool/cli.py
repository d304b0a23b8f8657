"""Command line: `python run_qemu.py ...` is `hvtool run ...`.

Subcommands are thin: each parses its flags and calls the module that does the
work (runner, build, images, usb), so the same code serves the CLI, pytest and
the benchmarks.
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

from . import config as _config

SUBCOMMANDS = ("run", "scenario", "build", "image", "usb")


def _add_run_options(p: argparse.ArgumentParser) -> None:
    p.add_argument("--engine", choices=_config.ENGINES, default=None,
                   help="auto: QEMU+KVM where nested virtualization works, else Bochs "
                        "for intel and QEMU TCG for amd (default: auto)")
    p.add_argument("--vendor", choices=_config.VENDORS, default=None,
                   help="CPU vendor profile (default: intel)")
    p.add_argument("--smp", type=_positive, default=None, help="number of CPUs")
    p.add_argument("--memory", type=_positive, default=None, metavar="MB")
    p.add_argument("--cpu-model", default=None,
                   help="override the engine's CPU model for the vendor")
    p.add_argument("--chainload", metavar="FILE.efi",
                   help="an EFI binary (or a built image name) to run as the next stage")
    p.add_argument("--args", default="", metavar="STR",
                   help="load options for --chainload (the image name is word 0)")
    p.add_argument("--kernel", metavar="K",
                   help="a Linux EFI-stub kernel as the next stage ('default': the "
                        "fetched Debian kernel)")
    p.add_argument("--initrd", metavar="I",
                   help="initrd for --kernel ('default': pytool's busybox initramfs)")
    p.add_argument("--append", default="", metavar="STR", help="Linux command line")
    p.add_argument("--no-hv", action="store_true",
                   help="same next stage without virtualization (the baseline)")
    p.add_argument("--timeout", type=float, default=None, metavar="S")
    p.add_argument("--expect", action="append", default=None, metavar="RE",
                   help="a serial pattern that must appear (repeatable, in order)")
    p.add_argument("--unordered", action="store_true",
                   help="expected patterns may match in any order")
    p.add_argument("--forbid", action="append", default=None, metavar="RE",
                   help="a serial pattern that fails the run at once (repeatable)")
    p.add_argument("--keep-running", action="store_true",
                   help="do not stop when every expected pattern has matched")
    p.add_argument("--release", action="store_true", help="build and boot RELEASE")
    p.add_argument("--accel", choices=("tcg", "kvm"), default=None,
                   help="force the QEMU accelerator")
    p.add_argument("--quiet", action="store_true", help="do not stream serial output")
    p.add_argument("--s3", action="store_true",
                   help="offer ACPI S3 and wake the machine a second after each "
                        "suspend (QEMU)")


def _positive(text: str) -> int:
    try:
        v = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"'{text}' is not a whole number") from None
    if v < 1:
        raise argparse.ArgumentTypeError(f"'{text}' must be at least 1")
    return v


def parser(prog: str = "hvtool") -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(prog=prog, description="Build, pack and boot the "
                                 "micro-hypervisor; assert on its serial output.")
    ap.add_argument("--config", type=Path, default=None, help="edk2-config.yaml to use")
    sub = ap.add_subparsers(dest="cmd", required=True)

    p = sub.add_parser("run", help="boot once with the given options")
    _add_run_options(p)
    p.add_argument("--scenario", help="start from a scenario in edk2-config.yaml")

    p = sub.add_parser("scenario", help="run scenarios from edk2-config.yaml")
    p.add_argument("names", nargs="*", help="scenario names (none: --list)")
    p.add_argument("--list", action="store_true")

    p = sub.add_parser("build", help="build the EFI images")
    p.add_argument("--release", action="store_true")
    p.add_argument("images", nargs="*")

    p = sub.add_parser("image", help="make the ESP, the GPT (USB) disk and a vars store")
    p.add_argument("--out", type=Path, default=Path("build/image"))
    p.add_argument("--release", action="store_true")
    p.add_argument("--chainload", metavar="FILE.efi")
    p.add_argument("--args", default="")
    p.add_argument("--kernel")
    p.add_argument("--initrd")
    p.add_argument("--append", default="")
    p.add_argument("--sign", nargs=2, metavar=("KEY", "CERT"), type=Path,
                   help="sign the hypervisor (and a --chainload payload) with sbsign; "
                        "also writes OVMF_VARS.secboot.fd with CERT in db")
    p.add_argument("--test-key", action="store_true",
                   help="like --sign with a generated test key (build/keys/pytool-test.*)")

    p = sub.add_parser("usb", help="write the GPT disk image to a USB stick")
    p.add_argument("device", nargs="?", help="the block device, e.g. /dev/sdX")
    p.add_argument("--image", type=Path, default=Path("build/image/disk.img"))
    p.add_argument("--yes", action="store_true", help="do not ask for confirmation")
    p.add_argument("--force", action="store_true",
                   help="write even to a mounted, fixed or system disk")
    p.add_argument("--dry-run", action="store_true",
                   help="print what would be written (and the checks on DEVICE); "
                        "write nothing")
    return ap


def spec_from_args(a: argparse.Namespace, cfg: dict):
    from .runner import Payload, RunSpec, payload_from_config, spec_from_scenario
    d = cfg["defaults"]
    spec = (spec_from_scenario(cfg, _config.scenario(cfg, a.scenario))
            if getattr(a, "scenario", None) else
            RunSpec(engine=d["engine"], vendor=d["vendor"], smp=d["smp"],
                    memory=d["memory"], timeout=d["timeout"],
                    payload=payload_from_config(d["payload"]),
                    expect=list(d["expect"]), forbid=list(d["forbid"])))
    if a.chainload and a.kernel:
        raise SystemExit("error: --chainload and --kernel are alternatives; give one")
    if (a.initrd or a.append) and not a.kernel:
        raise SystemExit("error: --initrd and --append need --kernel")
    if a.args and not a.chainload:
        raise SystemExit("error: --args needs --chainload")
    if a.chainload or a.kernel:
        spec.payload = (Payload(efi=a.chainload, args=a.args) if a.chainload else
                        Payload(kernel=a.kernel, initrd=a.initrd, append=a.append))
        if not getattr(a, "scenario", None):
            spec.expect = []        # the defaults' expectations are about hello
    for name in ("engine", "vendor", "smp", "memory", "timeout", "cpu_model", "accel"):
        v = getattr(a, name)
        if v is not None:
            setattr(spec, name, v)
    if a.expect is not None:
        spec.expect = a.expect
    if a.forbid is not None:
        spec.forbid = list(spec.forbid) + a.forbid
    spec.ordered = spec.ordered and not a.unordered
    spec.hv = spec.hv and not a.no_hv
    spec.keep_running = a.keep_running
    spec.s3 = spec.s3 or a.s3
    spec.release = spec.release or a.release
    spec.live = not a.quiet
    return spec


def _cmd_run(a, cfg) -> int:
    from .runner import format_summary, run
    spec = spec_from_args(a, cfg)
    res = run(spec, cfg)
    print(format_summary(res))
    return 0 if res.passed else 1


def _cmd_scenario(a, cfg) -> int:
    from .runner import format_summary, run, spec_from_scenario
    if a.list or not a.names:
        for sc in cfg["scenarios"]:
            print(f"{sc['name']:28} {sc['engine']:5} {sc['vendor']:5} smp={sc['smp']}  "
                  f"{sc['description']}")
        return 0
    failed = 0
    for name in a.names:
        res = run(spec_from_scenario(cfg, _config.scenario(cfg, name)), cfg)
        print(format_summary(res))
        failed += not res.passed
    return 1 if failed else 0


def _cmd_build(a, cfg) -> int:
    from .build import build_images
    target = "RELEASE" if a.release else cfg["build"]["default_target"]
    out = build_images(_config.REPO_ROOT, cfg["build"], target, a.images or None)
    for name, path in out.items():
        print(f"{name}: {path}")
    return 0


def _cmd_image(a, cfg) -> int:
    """The USB image as a user writes it: the hypervisor as the removable-media
    loader, hv.cfg (next=auto unless a next stage is given), optionally signed."""
    from . import bootchain, images
    from .runner import ESP_BOOT, ESP_CFG, KEYS, Payload, RunSpec, _build, _esp_files, \
        make_hv_cfg
    payload = None
    if a.chainload:
        payload = Payload(efi=a.chainload, args=a.args)
    elif a.kernel:
        payload = Payload(kernel=a.kernel, initrd=a.initrd, append=a.append)
    spec = RunSpec(payload=payload, release=a.release)
    out = a.out
    out.mkdir(parents=True, exist_ok=True)
    files = _esp_files(cfg, spec, _build(cfg, spec, print), out)
    files[ESP_CFG] = make_hv_cfg(payload, next_auto=payload is None).encode()
    key = cert = None
    if a.test_key:
        key, cert = bootchain.make_test_key(KEYS)
    elif a.sign:
        key, cert = a.sign
        for f in (key, cert):
            if not f.is_file():
                raise bootchain.ChainError(f"--sign: {f} does not exist")
    if key:
        for esp_path, src in list(files.items()):
            if isinstance(src, Path) and esp_path.lower().endswith(".efi"):
                files[esp_path] = bootchain.sign(src, out / "signed" / Path(src).name,
                                                 key, cert)
                print(f"signed:    {esp_path} ({Path(src).name}) with {cert}")
    esp = images.build_esp(out / "esp.img", files, size_mib=images.USB_ESP_MIB)
    disk = images.build_gpt_disk(esp, out / "disk.img")
    vars_ = images.make_vars_store(Path(cfg["firmware"]["qemu"]["vars"]),
                                   out / "OVMF_VARS.fd", ESP_BOOT)
    print(f"ESP:       {esp}\nUSB disk:  {disk}\nOVMF vars: {vars_}")
    if key:
        sb = bootchain.enroll_db(bootchain.OVMF_MS_VARS, out / "OVMF_VARS.secboot.fd", cert)
        print(f"SB vars:   {sb} (Microsoft keys + {cert.name} in db, Secure Boot on)")
    print(f"write it:  python3 -m pytool usb /dev/sdX --image {disk}")
    return 0


def _cmd_usb(a, cfg) -> int:
    from .usb import UsbError, describe_image, write_image
    if a.dry_run:
        for line in describe_image(a.image):
            print(line)
        if a.device:
            write_image(a.image, Path(a.device), yes=True, force=a.force, dry_run=True)
        print("dry run: nothing written")
        return 0
    if not a.device:
        raise UsbError("give the device to write, e.g. /dev/sdX (or --dry-run)")
    write_image(a.image, Path(a.device), yes=a.yes, force=a.force)
    return 0


def _known_errors() -> tuple:
    errs = [_config.ConfigError, OSError]
    from .engines.base import EngineError
    from .runner import RunError
    errs += [EngineError, RunError]
    for mod, name in (("build", "BuildError"), ("validate", "ImageValidationError"),
                      ("images", "ImageError"), ("usb", "UsbError"), ("linux", "LinuxError"),
                      ("bootchain", "ChainError")):
        try:
            m = __import__(f"pytool.{mod}", fromlist=[name])
            if hasattr(m, name):
                errs.append(getattr(m, name))
        except ImportError:
            pass
    return tuple(errs)


def main(argv=None, prog: str = "hvtool") -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    a = parser(prog).parse_args(argv)
    try:
        cfg = _config.load(a.config)
        return {"run": _cmd_run, "scenario": _cmd_scenario, "build": _cmd_build,
                "image": _cmd_image, "usb": _cmd_usb}[a.cmd](a, cfg)
    except KeyboardInterrupt as exc:
        from .engines.base import Terminated
        if isinstance(exc, Terminated):
            print(f"\nterminated by {exc.name}: every emulator this run started has "
                  f"been stopped", file=sys.stderr)
            return 128 + exc.signum
        print("\ninterrupted: every emulator this run started has been stopped",
              file=sys.stderr)
        return 130
    except _known_errors() as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2


def run_qemu_main(argv=None) -> int:
    """`python run_qemu.py [run options]`: the main job."""
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv[:1] and argv[0] in SUBCOMMANDS:
        return main(argv, prog="run_qemu.py")
    lead = []
    while argv[:1] == ["--config"] or (argv[:1] and argv[0].startswith("--config=")):
        n = 1 if "=" in argv[0] else 2
        lead, argv = lead + argv[:n], argv[n:]
    return main(lead + ["run"] + argv, prog="run_qemu.py")
