"""The one runner: build, pack the ESP, boot an engine, assert on serial.

`run(spec)` is what `python run_qemu.py`, the CLI, pytest and the benchmarks
call.  It owns the run folder qemu_runs/<stamp>-<engine>-<vendor>/ with the
command line, generated configs, serial.log, events.json and summary.json.
"""
from __future__ import annotations

import asyncio
import datetime as _dt
import json
import re
import shutil
import struct
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

from . import config as _config
from .engines.base import EngineError, stop_on_signals
from .engines.bochs import BochsEngine, BochsSetup
from .engines.kvm import KvmVerdict, kvm_verdict
from .engines.qemu import QemuEngine, QemuSetup
from .matcher import SerialMatcher, clean_line

ROOT = _config.REPO_ROOT
RUNS = ROOT / "qemu_runs"
KEEP_RUNS = 60

ESP_BOOT = "\\EFI\\BOOT\\BOOTX64.EFI"
ESP_CFG = "\\EFI\\BOOT\\hv.cfg"
ESP_HV_BEHIND_SHIM = "\\EFI\\BOOT\\hv.efi"   # where a platform shim finds the hypervisor
ESP_DIR = "\\EFI\\hv"


class RunError(Exception):
    """Bad input for a run (missing payload, unknown image...): one clear line."""


@dataclass
class Payload:
    efi: str | None = None          # built image name ("hello") or a path to .efi
    args: str = ""
    path: str | None = None         # an ESP path only (nothing copied): negative tests
    kernel: str | None = None       # Linux EFI-stub kernel; "default" = the fetched one
    initrd: str | None = None       # "default" = pytool's busybox initramfs
    append: str = ""
    linux_chain: bool = False       # a bootloader chain that ends in our Linux guest
    via: str | None = None          # kernel only: a built image started first, that
                                    # starts the kernel (args: its path, command line)


@dataclass
class RunSpec:
    engine: str = "auto"
    vendor: str = "intel"
    smp: int = 1
    memory: int = 256
    hv: bool = True
    payload: Payload | None = None
    expect: list = field(default_factory=list)
    forbid: list = field(default_factory=list)
    ordered: bool = True
    timeout: float = 120
    keep_running: bool = False
    guest_ends: bool = False        # pass only if the guest ends the run itself
    release: bool = False
    cpu_model: str | None = None    # override the engine's model for the vendor
    accel: str | None = None        # force "tcg" or "kvm" (QEMU)
    hv_cfg: str | None = None       # raw hv.cfg text instead of the generated one
    name: str | None = None         # scenario name
    live: bool = True               # stream serial to stdout
    chain: "object | None" = None   # bootchain.Chain: USB stick + the machine's own OS
    s3: bool = False                # offer ACPI S3; wake the machine after each suspend


@dataclass
class RunResult:
    passed: bool
    end_reason: str
    engine: str
    accel: str | None
    vendor: str
    smp: int
    cpu_model: str
    wall: float
    run_dir: Path
    serial: str
    failure: str | None
    assertions: list
    exit_code: int | None
    guest_exit: int | None
    events: list

    def assertion_report(self) -> str:
        out = []
        for a in self.assertions:
            mark = "ok  " if a["ok"] else "FAIL"
            when = f" @{a['time']:.1f}s" if a["time"] is not None else ""
            cnt = f" x{a['count']}" if a["count"] > 1 else ""
            out.append(f"  {mark} {a['kind']:6} {a['pattern']}{cnt} (seen {a['seen']}){when}")
        return "\n".join(out)


# --------------------------------------------------------------------------
# Validation: every argument is checked before anything is built or booted,
# and each mistake is one line (RunError).

# The smallest guest memory (MiB) OVMF boots the hypervisor in, per engine,
# measured at 1 CPU by booting hello: QEMU 7.2 + OVMF_CODE_4M 43 hangs, 44 boots;
# Bochs 2.7 + OVMF.fd 42 hangs, 44 boots.  Below it OVMF hangs without a word on
# serial.  tests/test_runner_validation.py boots QEMU at the minimum.
MIN_MEMORY_MB = {"qemu": 44, "bochs": 44}
# Most CPUs the engine itself accepts: QEMU 7.2's q35 ("The max CPUs supported
# by machine 'pc-q35-7.2' is 288"), Bochs 2.7's n_processors range (1..255).
MAX_CPUS = {"qemu": 288, "bochs": 255}
HV_CORE_H = ROOT / "efi" / "core" / "hv_core.h"

CHAINLOAD_FAILED = "HV: chainload failed"
# What "Linux reached userspace" looks like on serial: pytool's initramfs says
# so itself; any other init is announced by the kernel (KERN_INFO: not with quiet).
LINUX_USERSPACE_OURS = r"GUEST-LINUX: userspace up"
LINUX_USERSPACE_ANY = r"Run \S+ as init process"


def hv_max_cpus(header: Path = HV_CORE_H) -> int:
    """HV_MAX_CPUS as the C code defines it (never a copy of the number)."""
    m = re.search(r"^#define\s+HV_MAX_CPUS\s+(\d+)", header.read_text(), re.M)
    if not m:
        raise RunError(f"{header}: no '#define HV_MAX_CPUS <n>'")
    return int(m.group(1))


def _patterns(pats) -> list[str]:
    return [p["re"] if isinstance(p, dict) else p for p in pats]


def _mentions(pats, word: str) -> bool:
    return any(word in p for p in _patterns(pats))


def pe_kind(path: Path) -> str:
    """'efi-app', 'linux-efi-stub' (an EFI application that is also a bzImage)
    or why the file is neither (PE/COFF, UEFI 2.10 section 2.1.1)."""
    try:
        with open(path, "rb") as f:
            head = f.read(4096)
    except OSError as exc:
        return f"cannot be read ({exc.strerror})"
    if len(head) < 0x40 or head[:2] != b"MZ":
        return "is not a PE image (no MZ header)"
    (lfanew,) = struct.unpack_from("<I", head, 0x3C)
    if lfanew + 24 + 70 > len(head) or head[lfanew:lfanew + 4] != b"PE\0\0":
        return "is not a PE image (no PE signature)"
    (machine,) = struct.unpack_from("<H", head, lfanew + 4)
    opt = lfanew + 24
    (magic,) = struct.unpack_from("<H", head, opt)
    (subsystem,) = struct.unpack_from("<H", head, opt + 68)
    if machine != 0x8664 or magic != 0x20B:
        return f"is not a PE32+ x86-64 image (machine {machine:#x}, magic {magic:#x})"
    if subsystem != 10:
        return f"is not an EFI application (PE subsystem {subsystem}, want 10)"
    if len(head) >= 0x206 and head[0x202:0x206] == b"HdrS":
        return "linux-efi-stub"
    return "efi-app"


def validate_spec(spec: RunSpec, engine: str, hv_max: int | None = None,
                  image_names=()) -> None:
    """Raise RunError with one line for the first bad argument."""
    for kind, pats in (("expect", spec.expect), ("forbid", spec.forbid)):
        for p in _patterns(pats):
            try:
                re.compile(p)
            except re.error as exc:
                raise RunError(f"--{kind} {p!r} is not a valid regex: {exc}") from None
    if not spec.timeout > 0:
        raise RunError(f"--timeout {spec.timeout:g}: must be more than 0 seconds")
    if spec.s3 and engine != "qemu":
        raise RunError(f"--s3: only QEMU can suspend to RAM and wake (engine {engine})")
    low = MIN_MEMORY_MB.get(engine, 0)
    if spec.memory < low:
        raise RunError(f"--memory {spec.memory}: OVMF on {engine} needs at least "
                       f"{low} MiB")
    hv_max = hv_max_cpus() if hv_max is None else hv_max
    top = MAX_CPUS.get(engine, hv_max)
    if not 1 <= spec.smp <= top:
        raise RunError(f"--smp {spec.smp}: {engine} runs 1 to {top} CPUs")
    if spec.smp > hv_max and spec.hv and not _mentions(spec.expect, "too-many-cpus"):
        raise RunError(f"--smp {spec.smp}: the hypervisor handles at most HV_MAX_CPUS="
                       f"{hv_max} (efi/core/hv_core.h); with more it prints "
                       f"'HV: skip reason=too-many-cpus' (expect that to run it)")
    p = spec.payload
    if p and p.via and (not p.kernel or p.via not in (image_names or ())):
        raise RunError(f"via {p.via}: want a built image (edk2-config.yaml build.images) "
                       f"and a kernel to start")
    if p and p.kernel and p.kernel != "default":
        kind = pe_kind(Path(p.kernel))
        if kind != "linux-efi-stub":
            why = ("is an EFI application but not a Linux kernel (no bzImage "
                   "header)" if kind == "efi-app" else kind)
            raise RunError(f"--kernel {p.kernel} {why}: want a Linux EFI-stub kernel")
    if p and p.efi and p.efi not in image_names and Path(p.efi).is_file():
        kind = pe_kind(Path(p.efi))
        if kind not in ("efi-app", "linux-efi-stub"):
            raise RunError(f"--chainload {p.efi} {kind}: want a PE32+ EFI application")


def implied_expectations(spec: RunSpec) -> tuple[list, list]:
    """(expect, forbid) the run adds to what was asked, so that it never
    passes on a lie: a failed chain-load fails the run unless it was
    expected, and a Linux payload must reach userspace."""
    expect, forbid = [], []
    if not _mentions(spec.expect, "chainload failed"):
        forbid.append(CHAINLOAD_FAILED)
    p = spec.payload
    if p and (p.kernel or p.linux_chain) and not (
            _mentions(spec.expect, "userspace") or _mentions(spec.expect, "init process")):
        ours = p.initrd == "default" or (p.linux_chain and not p.initrd)
        expect.append(LINUX_USERSPACE_OURS if ours else LINUX_USERSPACE_ANY)
    return expect, forbid


class RunMatcher(SerialMatcher):
    """The matcher plus implied expectations: they must match too, but in any
    order relative to the explicit ones (the user's order is theirs)."""

    def __init__(self, expect, forbid, implied=(), **kw):
        super().__init__(expect, forbid, **kw)
        self.implied = SerialMatcher(implied, (), ordered=False).expect
        for a in self.implied:
            a.kind = "expect"

    def feed(self, raw_line: str) -> None:
        super().feed(raw_line)
        line = clean_line(raw_line)
        for a in self.implied:
            if not a.satisfied and a.search(line):
                a.seen += 1
                a.line = line
                a.matched_at = self.elapsed()

    @property
    def done(self) -> bool:
        return super().done and all(a.satisfied for a in self.implied)

    @property
    def passed(self) -> bool:
        return super().passed and all(a.ok for a in self.implied)

    def unmet(self):
        return super().unmet() + [a for a in self.implied if not a.satisfied]

    def results(self) -> list[dict]:
        return super().results() + [dict(a.as_dict(), kind="implied")
                                    for a in self.implied]


# --------------------------------------------------------------------------
# Pieces (pure where possible, unit-tested)

def make_hv_cfg(payload: Payload | None, hv: bool = True, log: str = "info",
                next_auto: bool = False) -> str:
    """The ESP config file that tells the app what to chain-load.  next_auto:
    boot the machine's own OS (BootNext/BootOrder, then well-known paths)."""
    lines = ["# hv.cfg generated by pytool", f"hypervisor={'on' if hv else 'off'}",
             f"log={log}"]
    if next_auto:
        lines.append("next=auto")
    if payload is None or next_auto:
        return "\n".join(lines) + "\n"
    if payload.kernel and payload.via:
        args = [f"{ESP_DIR}\\vmlinuz.efi"] + (
            [f"initrd={ESP_DIR}\\initrd.img"] if payload.initrd else []) + (
            [payload.append] if payload.append else [])
        lines += [f"next={ESP_DIR}\\{_efi_name(payload.via)}", f"args={' '.join(args)}"]
    elif payload.kernel:
        lines.append(f"kernel={ESP_DIR}\\vmlinuz.efi")
        if payload.initrd:
            lines.append(f"initrd={ESP_DIR}\\initrd.img")
        if payload.append:
            lines.append(f"append={payload.append}")
    else:
        if payload.path:
            lines.append(f"next={payload.path}")
        elif payload.efi:
            lines.append(f"next={ESP_DIR}\\{_efi_name(payload.efi)}")
        if payload.args:
            lines.append(f"args={payload.args}")
    return "\n".join(lines) + "\n"


def _efi_name(efi: str) -> str:
    return Path(efi).name if efi.lower().endswith(".efi") else f"{efi}.efi"


def payload_from_config(pl: dict | None) -> Payload | None:
    if not pl:
        return None
    if pl["linux"]:
        return Payload(kernel="default", initrd="default", append=pl["append"],
                       via=pl["via"])
    return Payload(efi=pl["efi"], args=pl["args"], path=pl["path"])


def spec_from_scenario(cfg: dict, sc: dict, **overrides) -> RunSpec:
    payload = payload_from_config(sc["payload"])
    defaults = cfg["defaults"]
    spec = RunSpec(engine=sc["engine"], vendor=sc["vendor"], smp=sc["smp"],
                   memory=sc["memory"], hv=sc["hv"], payload=payload,
                   expect=list(sc["expect"]),
                   forbid=[f for f in defaults.get("forbid") or []
                           if f.get("re", f) not in sc.get("allow", [])] + list(sc["forbid"]),
                   ordered=sc["ordered"], timeout=sc["timeout"], release=sc["release"],
                   guest_ends=sc["guest_ends"],
                   cpu_model=sc["cpu_model"], hv_cfg=sc["hv_cfg"], name=sc["name"],
                   s3=sc["s3"])
    if sc.get("chain"):
        from .bootchain import Chain
        spec.chain = Chain(**sc["chain"])
        if spec.payload:
            spec.payload.linux_chain = True
    for k, v in overrides.items():
        setattr(spec, k, v)
    return spec


def pick_engine(cfg: dict, spec: RunSpec, say=print) -> tuple[str, str | None]:
    """(engine, accel).  auto: QEMU+KVM where nesting works; else Bochs for
    Intel (VT-x needs it: TCG has no VMX) and QEMU TCG for AMD (TCG emulates SVM)."""
    if spec.engine == "bochs":
        return "bochs", None
    if spec.engine == "qemu":
        if spec.accel:
            return "qemu", spec.accel
        v = _kvm(cfg, spec.vendor)
        return "qemu", "kvm" if v.usable else "tcg"
    v = _kvm(cfg, spec.vendor)
    if v.usable:
        return "qemu", "kvm"
    fallback = ("bochs", None) if spec.vendor == "intel" else ("qemu", "tcg")
    say(f"engine: {fallback[0]}{'/' + fallback[1] if fallback[1] else ''} "
        f"(no KVM-nested {spec.vendor} guest here: {v.reason})")
    return fallback


def _kvm(cfg: dict, vendor: str) -> KvmVerdict:
    def probe(vendor: str) -> KvmVerdict:
        spec = RunSpec(engine="qemu", accel="kvm", vendor=vendor, hv=False, timeout=40,
                       expect=[r"HV: caps "], live=False, name="kvm-probe")
        try:
            res = run(spec, cfg)
        except (EngineError, RunError) as exc:
            return KvmVerdict(False, f"probe boot failed: {str(exc).splitlines()[0]}")
        want = "vmx" if vendor == "intel" else "svm"
        if f"virt={want}" in res.serial:
            return KvmVerdict(True, f"probe boot under KVM saw virt={want}")
        return KvmVerdict(False, f"probe boot under KVM did not see virt={want} "
                                 f"({res.end_reason})")
    return kvm_verdict(vendor, ROOT / "build", probe)


def _run_dir(engine: str, vendor: str, name: str | None) -> Path:
    RUNS.mkdir(exist_ok=True)
    stamp = _dt.datetime.now().strftime("%Y%m%d-%H%M%S-%f")
    d = RUNS / f"{stamp}-{engine}-{vendor}" if not name else \
        RUNS / f"{stamp}-{engine}-{vendor}-{name}"
    d.mkdir()
    old = sorted(p for p in RUNS.iterdir() if p.is_dir())
    for p in old[:-KEEP_RUNS]:
        shutil.rmtree(p, ignore_errors=True)
    return d


def _platform_shim(cfg: dict, engine: str) -> str | None:
    return cfg["engines"]["bochs"]["platform_shim"] if engine == "bochs" else None


def _esp_files(cfg: dict, spec: RunSpec, built: dict, run_dir: Path,
               shim: str | None = None) -> dict:
    if shim:
        files: dict = {ESP_BOOT: built[shim], ESP_HV_BEHIND_SHIM: built["hv"]}
    else:
        files = {ESP_BOOT: built["hv"]}
    files[ESP_CFG] = (spec.hv_cfg if spec.hv_cfg is not None
                      else make_hv_cfg(spec.payload, spec.hv,
                                       next_auto=spec.chain is not None)).encode()
    p = spec.payload
    if p is None or spec.chain is not None:
        return files        # a chain's next stage is on the internal disk
    if p.kernel:
        from . import linux
        kernel = linux.find_kernel(ROOT) if p.kernel == "default" else Path(p.kernel)
        if not kernel.is_file():
            raise RunError(f"kernel not found: {kernel}")
        files[f"{ESP_DIR}\\vmlinuz.efi"] = kernel
        if p.initrd:
            # Per run: parallel workers must not share one temporary file.
            initrd = (linux.build_initramfs(run_dir / "initramfs.cpio.gz")
                      if p.initrd == "default" else Path(p.initrd))
            if not initrd.is_file():
                raise RunError(f"initrd not found: {initrd}")
            files[f"{ESP_DIR}\\initrd.img"] = initrd
        if p.via:
            files[f"{ESP_DIR}\\{_efi_name(p.via)}"] = built[p.via]
    elif p.efi:
        src = built.get(p.efi) if p.efi in built else Path(p.efi)
        if not Path(src).is_file():
            raise RunError(f"payload not found: {p.efi} (neither a built image "
                           f"name nor an existing .efi file)")
        files[f"{ESP_DIR}\\{_efi_name(p.efi)}"] = Path(src)
    return files


def _build(cfg: dict, spec: RunSpec, say, shim: str | None = None) -> dict:
    from .build import build_images
    target = "RELEASE" if spec.release else cfg["build"]["default_target"]
    names = ["hv"] + ([shim] if shim else [])
    if spec.payload and spec.payload.efi and spec.payload.efi in cfg["build"]["images"]:
        names.append(spec.payload.efi)
    if spec.payload and spec.payload.via:
        names.append(spec.payload.via)
    if spec.chain is not None and spec.chain.first:
        names.append(spec.chain.first)
    return build_images(ROOT, cfg["build"], target, names, log=lambda *a: None)


def _cpu_model(cfg: dict, spec: RunSpec, engine: str, accel: str | None) -> str:
    if spec.cpu_model:
        return spec.cpu_model
    if engine == "bochs":
        cpus = cfg["engines"]["bochs"]["cpu"]
        if spec.vendor == "intel" and spec.payload and \
                (spec.payload.kernel or spec.payload.linux_chain) and cpus.get("intel_linux"):
            return cpus["intel_linux"]      # Linux hangs on tigerlake's xstate setup
        return cpus[spec.vendor]
    return cfg["engines"]["qemu"]["cpu"][spec.vendor][accel]


KEYS = ROOT / "build" / "keys"


def _chain_setup(cfg: dict, spec: RunSpec, built: dict, run_dir: Path, files: dict,
                 engine: str = "qemu") -> dict:
    """A chain run: sign the hypervisor on the stick if asked, build the
    internal disk with the OS loader, and the vars store that boots it."""
    from . import bootchain, images, linux
    ch = spec.chain
    if ch.secure_boot and ch.sign:
        key, cert = bootchain.make_test_key(KEYS)
        files[ESP_BOOT] = bootchain.sign(Path(files[ESP_BOOT]), run_dir / "hv-signed.efi",
                                         key, cert)
    p = spec.payload or Payload(kernel="default", initrd="default")
    kernel = linux.find_kernel(ROOT) if p.kernel in (None, "default") else Path(p.kernel)
    initrd = (linux.build_initramfs(run_dir / "initramfs.cpio.gz")
              if p.initrd in (None, "default") else Path(p.initrd))
    internal = bootchain.esp_files(ch, kernel, initrd, p.append)
    if ch.first:
        internal[f"\\EFI\\{ch.first}\\{ch.first}.efi"] = built[ch.first]
        if ch.first == "hv":        # a copy of us that would walk again: a loop
            internal["\\EFI\\hv\\hv.cfg"] = make_hv_cfg(None, next_auto=True).encode()
    esp = images.build_esp(run_dir / "internal-esp.img", internal)
    disk = images.build_gpt_disk(esp, run_dir / "internal.img")
    esp.unlink()
    if engine == "bochs":
        # Bochs' OVMF keeps no variables: its BootOrder holds the disks the firmware
        # found, so next=auto reaches the loader through the internal disk's entry.
        return {"internal_disks": (disk,)}
    if ch.secure_boot:
        _, cert = bootchain.make_test_key(KEYS)
        template = bootchain.enroll_db(bootchain.OVMF_MS_VARS, run_dir / "vars-sb.fd", cert)
    else:
        template = Path(cfg["firmware"]["qemu"]["vars"])
    vars_ = images.make_vars_store(template, run_dir / "OVMF_VARS.fd",
                                   bootchain.loader_path(ch), title="debian", disk=disk)
    if ch.first:
        vars_ = images.make_vars_store(vars_, run_dir / "OVMF_VARS.fd",
                                       f"\\EFI\\{ch.first}\\{ch.first}.efi",
                                       title=ch.first, disk=disk)
    return {"usb_stick": True, "internal_disks": (disk,), "vars": vars_,
            "secure_boot": ch.secure_boot,
            **({"code": bootchain.OVMF_SECBOOT_CODE} if ch.secure_boot else {})}


def _make_engine(cfg: dict, spec: RunSpec, engine: str, accel, cpu: str,
                 run_dir: Path, disk: Path, chain_kw: dict | None = None):
    from . import images
    fw = cfg["firmware"]
    if engine == "qemu" and chain_kw:
        kw = dict(cpu=cpu, accel=accel, smp=spec.smp, memory=spec.memory,
                  code=Path(fw["qemu"]["code"]), disk=disk,
                  machine=cfg["engines"]["qemu"]["machine"], s3=spec.s3)
        kw.update(chain_kw)
        return QemuEngine(run_dir, QemuSetup(**kw))
    if engine == "qemu":
        vars_copy = images.make_vars_store(Path(fw["qemu"]["vars"]), run_dir / "OVMF_VARS.fd",
                                           ESP_BOOT)
        return QemuEngine(run_dir, QemuSetup(
            cpu=cpu, accel=accel, smp=spec.smp, memory=spec.memory,
            code=Path(fw["qemu"]["code"]), vars=vars_copy, disk=disk,
            machine=cfg["engines"]["qemu"]["machine"], s3=spec.s3))
    return BochsEngine(run_dir, BochsSetup(
        cpu_model=cpu, smp=spec.smp, memory=spec.memory, rom=Path(fw["bochs"]["rom"]),
        vgarom=Path(fw["bochs"]["vgarom"]), disk=disk,
        ips=cfg["engines"]["bochs"]["ips"], **(chain_kw or {})))


def run(spec: RunSpec, cfg: dict | None = None, say=print) -> RunResult:
    """Build if needed, boot, assert.  Raises EngineError/RunError/BuildError
    for problems that prevent a run; a run that ran returns a RunResult.
    SIGTERM and SIGHUP raise engines.base.Terminated once the emulator is stopped."""
    cfg = cfg or _config.load()
    with stop_on_signals():
        return _run(spec, cfg, say)


def _run(spec: RunSpec, cfg: dict, say) -> RunResult:
    from . import images
    t0 = time.monotonic()
    validate_spec(spec, spec.engine if spec.engine != "auto" else "qemu",
                  image_names=cfg["build"]["images"])
    engine_name, accel = pick_engine(cfg, spec, say)
    if engine_name != spec.engine:
        validate_spec(spec, engine_name, image_names=cfg["build"]["images"])
    shim = _platform_shim(cfg, engine_name)
    built = _build(cfg, spec, say, shim)
    cpu = _cpu_model(cfg, spec, engine_name, accel)
    run_dir = _run_dir(engine_name, spec.vendor, spec.name)
    files = _esp_files(cfg, spec, built, run_dir, shim)
    chain_kw = None
    if spec.chain is not None:
        if engine_name != "qemu" and spec.chain.secure_boot:
            raise RunError(f"Secure Boot chains run on QEMU only (engine {engine_name})")
        chain_kw = _chain_setup(cfg, spec, built, run_dir, files, engine_name)
    (run_dir / "hv.cfg").write_bytes(files[ESP_CFG])
    esp = images.build_esp(run_dir / "esp.img", files,
                           **({"size_mib": images.USB_ESP_MIB} if spec.chain else {}))
    disk = images.build_gpt_disk(esp, run_dir / "disk.img")
    esp.unlink()                            # the disk holds it; keep run folders small
    (run_dir / "initramfs.cpio.gz").unlink(missing_ok=True)
    eng = _make_engine(cfg, spec, engine_name, accel, cpu, run_dir, disk, chain_kw)

    implied, implied_forbid = implied_expectations(spec)
    matcher = RunMatcher(spec.expect, list(spec.forbid) + implied_forbid, implied,
                         ordered=spec.ordered, timeout=spec.timeout)
    live = (lambda line: say(line)) if spec.live else None
    say(f"run: {run_dir.relative_to(ROOT)}  engine={engine_name}"
          f"{'/' + accel if accel else ''} cpu={cpu} smp={spec.smp} vendor={spec.vendor}")
    eres = asyncio.run(eng.run(matcher, run_dir / "serial.log", live,
                               spec.keep_running or spec.guest_ends))
    if spec.guest_ends and eres.end_reason == "deadline" and not matcher.unmet():
        matcher.failure = f"the guest did not end the run within {spec.timeout:g}s"
    if eres.end_reason == "guest-ended" and matcher.unmet():
        matcher.fail("the guest ended the run before every expected pattern matched")
    if eres.guest_exit not in (None, 0):
        matcher.fail(f"the guest reported exit status {eres.guest_exit}")
    if not spec.expect and eres.end_reason == "deadline":
        matcher.failure = None  # nothing was expected: the deadline is just the end
    passed = matcher.passed and not matcher.unmet()
    wall = time.monotonic() - t0
    res = RunResult(passed=passed, end_reason=eres.end_reason, engine=engine_name,
                    accel=accel, vendor=spec.vendor, smp=spec.smp, cpu_model=cpu,
                    wall=wall, run_dir=run_dir,
                    serial=(run_dir / "serial.log").read_text(errors="replace"),
                    failure=matcher.failure, assertions=matcher.results(),
                    exit_code=eres.exit_code, guest_exit=eres.guest_exit,
                    events=eres.events)
    _write_summary(spec, res, eres)
    return res


def _write_summary(spec: RunSpec, res: RunResult, eres) -> None:
    (res.run_dir / "events.json").write_text(json.dumps(res.events, indent=1))
    summary = {
        "arguments": asdict(spec), "engine": res.engine, "accel": res.accel,
        "vendor": res.vendor, "cpu_model": res.cpu_model, "smp": res.smp,
        "passed": res.passed, "exit_status": 0 if res.passed else 1,
        "end_reason": res.end_reason, "failure": res.failure,
        "emulator_exit_code": res.exit_code, "guest_exit": res.guest_exit,
        "assertions": res.assertions, "wall_seconds": round(res.wall, 3),
        "emulator_stderr_tail": eres.stderr_tail[-2000:],
    }
    (res.run_dir / "summary.json").write_text(json.dumps(summary, indent=1, default=str))


def format_summary(res: RunResult) -> str:
    eng = res.engine + (f"/{res.accel}" if res.accel else "")
    lines = [
        "=" * 72,
        f"{'PASS' if res.passed else 'FAIL'}  engine={eng} vendor={res.vendor} "
        f"cpu={res.cpu_model} cpus={res.smp} wall={res.wall:.1f}s end={res.end_reason}",
    ]
    if res.failure:
        lines.append(f"  reason: {res.failure}")
    if res.assertions:
        lines.append(res.assertion_report())
    lines.append(f"  run folder: {res.run_dir.relative_to(ROOT)}")
    return "\n".join(lines)
