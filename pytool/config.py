"""Load and validate edk2-config.yaml: the one configuration file.

Every section is checked against a small schema so that a typo or a wrong
type is reported with its path ("scenarios[2].smp: expected int, got str")
instead of surfacing later as a confusing boot failure.
"""
from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import yaml

REPO_ROOT = Path(__file__).resolve().parent.parent
CONFIG_PATH = REPO_ROOT / "edk2-config.yaml"

ENGINES = ("auto", "qemu", "bochs")
VENDORS = ("intel", "amd")


class ConfigError(Exception):
    """A malformed edk2-config.yaml; the message names the offending key."""


# Schema: a dict maps key -> (type or nested schema, required, default).
# Types are python types, a tuple of allowed string values, or one of the
# helpers below for lists.
class ListOf:
    def __init__(self, item):
        self.item = item


class MapOf:
    def __init__(self, item):
        self.item = item


class Pattern:
    """An expect/forbid entry: a regex string, or {re: str, count: int}."""


_TARGET = {"cflags": (ListOf(str), False, [])}
_IMAGE = {"dirs": (ListOf(str), True, None)}
_PAYLOAD = {
    "efi": (str, False, None),       # built image name or a path to a .efi
    "args": (str, False, ""),
    "path": (str, False, None),      # ESP path only: for "missing payload" runs
    "linux": (bool, False, False),   # the fetched kernel + pytool's initramfs
    "append": (str, False, ""),
    # linux only: a built image the hypervisor starts first; it gets the
    # kernel's path and command line as its arguments and starts the kernel
    # (efi/apps/x2apic: every CPU to x2APIC mode, then Linux).
    "via": (str, False, None),
}
# A boot chain (pytool/bootchain.py): the hypervisor on a USB stick with
# next=auto, the machine's own OS loader on an internal disk (QEMU only).
_CHAIN = {
    "loader": (("systemd-boot", "grub", "shim"), False, "systemd-boot"),
    "secure_boot": (bool, False, False),
    "sign": (bool, False, True),            # sign the hypervisor (secure_boot only)
    "signed_loader": (bool, False, True),   # grub/shim: Debian's signed binaries
    "first": (str, False, None),            # a built image put first in BootOrder
}
_SCENARIO = {
    "name": (str, True, None),
    "description": (str, False, ""),
    "engine": (ENGINES, False, "auto"),
    "vendor": (VENDORS, False, "intel"),
    "cpu_model": (str, False, None),
    "smp": (int, False, 1),
    "memory": (int, False, 256),
    "hv": (bool, False, True),
    "payload": (_PAYLOAD, False, None),
    "hv_cfg": (str, False, None),    # raw hv.cfg text, replaces the generated one
    "expect": (ListOf(Pattern), False, []),
    "ordered": (bool, False, True),
    "forbid": (ListOf(Pattern), False, []),
    "allow": (ListOf(str), False, []),   # defaults.forbid entries this scenario expects
    "timeout": ((int, float), False, 120),
    "guest_ends": (bool, False, False),  # the guest itself must end the run
    "release": (bool, False, False),
    "marks": (ListOf(str), False, []),
    "chain": (_CHAIN, False, None),
    # The machine offers ACPI S3 and the runner wakes it (QMP system_wakeup)
    # a second after each suspend: QEMU only.
    "s3": (bool, False, False),
}
SCHEMA = {
    "build": ({
        "default_target": (str, False, "DEBUG"),
        "common_cflags": (ListOf(str), False, []),
        "targets": (MapOf(_TARGET), True, None),
        "images": (MapOf(_IMAGE), True, None),
    }, True, None),
    "firmware": ({
        "qemu": ({"code": (str, True, None), "vars": (str, True, None)}, True, None),
        "bochs": ({"rom": (str, True, None), "vgarom": (str, True, None)}, True, None),
    }, True, None),
    "engines": ({
        "qemu": ({
            "machine": (str, False, "q35"),
            "cpu": ({
                "intel": ({"kvm": (str, True, None), "tcg": (str, True, None)}, True, None),
                "amd": ({"kvm": (str, True, None), "tcg": (str, True, None)}, True, None),
            }, True, None),
        }, True, None),
        "bochs": ({
            "cpu": ({"intel": (str, True, None), "amd": (str, True, None),
                     "intel_linux": (str, False, None)}, True, None),
            "ips": (int, False, 50_000_000),
            # An EFI image of ours run before the hypervisor in Bochs only: it
            # installs the ACPI tables OVMF does not publish there, then
            # chain-loads \EFI\BOOT\hv.efi.  null: boot the hypervisor directly.
            "platform_shim": (str, False, None),
        }, True, None),
    }, True, None),
    "defaults": ({
        "engine": (ENGINES, False, "auto"),
        "vendor": (VENDORS, False, "intel"),
        "smp": (int, False, 1),
        "memory": (int, False, 256),
        "timeout": ((int, float), False, 120),
        "forbid": (ListOf(Pattern), False, []),
        # For a plain `python run_qemu.py`: what to chain-load and expect when
        # the command line names neither.
        "payload": (_PAYLOAD, False, None),
        "expect": (ListOf(Pattern), False, []),
    }, False, {}),
    "scenarios": (ListOf(_SCENARIO), False, []),
}


def _type_name(t) -> str:
    if isinstance(t, tuple) and all(isinstance(x, str) for x in t):
        return "one of " + ", ".join(t)
    if isinstance(t, tuple):
        return " or ".join(x.__name__ for x in t)
    if isinstance(t, dict):
        return "mapping"
    if isinstance(t, (ListOf,)):
        return "list"
    if isinstance(t, MapOf):
        return "mapping"
    if t is Pattern:
        return "regex string or {re: ..., count: N}"
    return t.__name__


def _check(value: Any, spec, where: str) -> Any:
    if isinstance(spec, dict):
        if not isinstance(value, dict):
            raise ConfigError(f"{where}: expected a mapping, got {type(value).__name__}")
        unknown = sorted(set(value) - set(spec))
        if unknown:
            raise ConfigError(f"{where}: unknown key '{unknown[0]}' "
                              f"(known: {', '.join(sorted(spec))})")
        out = {}
        for key, (sub, required, default) in spec.items():
            path = f"{where}.{key}" if where else key
            if key not in value or value[key] is None:
                if required:
                    raise ConfigError(f"{path}: required key is missing")
                out[key] = default
                continue
            out[key] = _check(value[key], sub, path)
        return out
    if isinstance(spec, ListOf):
        if not isinstance(value, list):
            raise ConfigError(f"{where}: expected a list, got {type(value).__name__}")
        return [_check(v, spec.item, f"{where}[{i}]") for i, v in enumerate(value)]
    if isinstance(spec, MapOf):
        if not isinstance(value, dict):
            raise ConfigError(f"{where}: expected a mapping, got {type(value).__name__}")
        return {k: _check(v, spec.item, f"{where}.{k}") for k, v in value.items()}
    if spec is Pattern:
        return _check_pattern(value, where)
    if isinstance(spec, tuple) and all(isinstance(x, str) for x in spec):
        if value not in spec:
            raise ConfigError(f"{where}: '{value}' is not {_type_name(spec)}")
        return value
    # bool is an int subclass: refuse it where a number is wanted.
    if isinstance(value, bool) and spec is not bool:
        raise ConfigError(f"{where}: expected {_type_name(spec)}, got bool")
    if not isinstance(value, spec):
        raise ConfigError(f"{where}: expected {_type_name(spec)}, "
                          f"got {type(value).__name__}")
    return value


def _check_pattern(value: Any, where: str) -> dict:
    if isinstance(value, str):
        value = {"re": value, "count": 1}
    value = _check(value, {"re": (str, True, None), "count": (int, False, 1)}, where)
    try:
        re.compile(value["re"])
    except re.error as exc:
        raise ConfigError(f"{where}: bad regex {value['re']!r}: {exc}") from None
    if value["count"] < 1:
        raise ConfigError(f"{where}: count must be at least 1")
    return value


def validate(raw: Any) -> dict:
    """Validate a parsed YAML document; return it with defaults filled in."""
    cfg = _check(raw, SCHEMA, "")
    for k, v in SCHEMA["defaults"][0].items():
        cfg["defaults"].setdefault(k, v[2])
    _check_payload(cfg["defaults"]["payload"], "defaults.payload")
    names = set()
    for i, sc in enumerate(cfg["scenarios"]):
        if sc["name"] in names:
            raise ConfigError(f"scenarios[{i}].name: duplicate scenario '{sc['name']}'")
        names.add(sc["name"])
        _check_payload(sc["payload"], f"scenarios[{i}].payload")
        if sc["smp"] < 1:    # the upper bound depends on the engine: runner.validate_spec
            raise ConfigError(f"scenarios[{i}].smp: must be at least 1")
    if cfg["build"]["default_target"] not in cfg["build"]["targets"]:
        raise ConfigError(f"build.default_target: '{cfg['build']['default_target']}' "
                          f"is not in build.targets")
    return cfg


def _check_payload(pl: dict | None, where: str) -> None:
    if pl is None:
        return
    kinds = [k for k in ("efi", "path") if pl[k]] + (["linux"] if pl["linux"] else [])
    if len(kinds) != 1:
        raise ConfigError(f"{where}: give exactly one of efi, path or linux: true")
    if pl["via"] and not pl["linux"]:
        raise ConfigError(f"{where}.via: only with linux: true")


def loads(text: str, source: str = "<string>") -> dict:
    try:
        raw = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        pos = f" line {mark.line + 1} column {mark.column + 1}" if mark else ""
        problem = getattr(exc, "problem", None) or str(exc)
        raise ConfigError(f"{source}:{pos}: invalid YAML: {problem}") from None
    if raw is None:
        raise ConfigError(f"{source}: the file is empty")
    try:
        return validate(raw)
    except ConfigError as exc:
        raise ConfigError(f"{source}: {exc}") from None


def load(path: Path | str | None = None) -> dict:
    path = Path(path) if path else CONFIG_PATH
    try:
        text = path.read_text()
    except OSError as exc:
        raise ConfigError(f"{path}: cannot read: {exc.strerror}") from None
    return loads(text, str(path))


def scenario(cfg: dict, name: str) -> dict:
    for sc in cfg["scenarios"]:
        if sc["name"] == name:
            return sc
    known = ", ".join(sc["name"] for sc in cfg["scenarios"]) or "none"
    raise ConfigError(f"no scenario named '{name}' (known: {known})")
