"""edk2-config.yaml validation: every mistake names its key."""
import pytest
import yaml

from pytool import config
from pytool.config import ConfigError


def real() -> dict:
    return yaml.safe_load(config.CONFIG_PATH.read_text())


def check(raw) -> dict:
    return config.loads(yaml.safe_dump(raw), "cfg.yaml")


def test_the_shipped_config_is_valid():
    cfg = config.load()
    assert cfg["build"]["images"]["hv"]["dirs"]
    names = [s["name"] for s in cfg["scenarios"]]
    assert "tcg-intel-failopen" in names
    sc = config.scenario(cfg, "tcg-intel-failopen")
    assert sc["expect"][0]["count"] == 1


def test_defaults_are_filled_in():
    raw = real()
    raw["scenarios"] = [{"name": "x"}]
    sc = check(raw)["scenarios"][0]
    assert (sc["engine"], sc["vendor"], sc["smp"], sc["hv"], sc["ordered"]) == \
        ("auto", "intel", 1, True, True)


def test_bad_yaml_reports_line():
    with pytest.raises(ConfigError, match=r"cfg.yaml: line \d+ column \d+: invalid YAML"):
        config.loads("build:\n  - [unclosed\n", "cfg.yaml")


def test_empty_file():
    with pytest.raises(ConfigError, match="empty"):
        config.loads("", "cfg.yaml")


@pytest.mark.parametrize("mutate, message", [
    (lambda r: r["scenarios"].append({"name": "y", "smpp": 2}),
     r"scenarios\[\d+\]: unknown key 'smpp'"),
    (lambda r: r.update(buidl={}), r"unknown key 'buidl'"),
    (lambda r: r["scenarios"].append({"name": "y", "smp": "two"}),
     r"scenarios\[\d+\]\.smp: expected int, got str"),
    (lambda r: r["scenarios"].append({"name": "y", "smp": True}),
     r"scenarios\[\d+\]\.smp: expected int, got bool"),
    (lambda r: r["scenarios"].append({"name": "y", "engine": "vmware"}),
     r"scenarios\[\d+\]\.engine: 'vmware' is not one of auto, qemu, bochs"),
    (lambda r: r["scenarios"].append({"name": "y", "expect": ["(unclosed"]}),
     r"scenarios\[\d+\]\.expect\[0\]: bad regex"),
    (lambda r: r["scenarios"].append({"name": "y", "expect": [{"re": "x", "count": 0}]}),
     r"count must be at least 1"),
    (lambda r: r["scenarios"].append({"name": "y", "payload": {"efi": "a", "linux": True}}),
     r"payload: give exactly one of"),
    (lambda r: r["scenarios"].append({"name": "y", "payload": {"efi": "a", "via": "x2apic"}}),
     r"payload\.via: only with linux: true"),
    (lambda r: r["scenarios"].append(dict(r["scenarios"][0])),
     r"duplicate scenario"),
    (lambda r: r["build"].pop("images"), r"build\.images: required key is missing"),
    (lambda r: r["build"].update(default_target="FAST"), r"not in build\.targets"),
    (lambda r: r["firmware"].update(qemu="ovmf.fd"), r"firmware\.qemu: expected a mapping"),
    (lambda r: r.update(scenarios={"a": 1}), r"scenarios: expected a list"),
])
def test_mistakes_are_named(mutate, message):
    raw = real()
    mutate(raw)
    with pytest.raises(ConfigError, match=message):
        check(raw)


def test_missing_file(tmp_path):
    with pytest.raises(ConfigError, match="cannot read"):
        config.load(tmp_path / "nope.yaml")


def test_unknown_scenario_lists_known():
    with pytest.raises(ConfigError, match="known: .*tcg-intel-failopen"):
        config.scenario(config.load(), "nope")
