"""Shared fixtures.  Boot tests use the same runner as run_qemu.py."""
import pytest

from pytool import config
from pytool.runner import format_summary, run, spec_from_scenario


@pytest.fixture(scope="session")
def cfg():
    return config.load()


def explain(res) -> str:
    """What a failing boot test prints: the summary and the serial tail."""
    tail = "\n".join(res.serial.splitlines()[-40:])
    return f"{format_summary(res)}\n--- serial tail ---\n{tail}"


@pytest.fixture
def boot(cfg):
    """boot(scenario_name, **overrides) -> RunResult, asserting nothing itself."""
    def _boot(name, **overrides):
        spec = spec_from_scenario(cfg, config.scenario(cfg, name), live=False, **overrides)
        return run(spec, cfg)
    return _boot


def pytest_collection_modifyitems(config, items):
    """Start the slowest boots first so that parallel workers finish together."""
    def weight(item):
        if item.get_closest_marker("slow"):
            return 0
        if item.get_closest_marker("boot"):
            return 1
        return 2
    items.sort(key=weight)   # stable: file order is kept within each group
