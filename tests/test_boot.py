"""Boot tests: every scenario in edk2-config.yaml, on the real engines.

Nothing here is mocked: each test builds the app, packs a GPT disk, boots
QEMU or Bochs with OVMF and asserts on the serial output as it streams.
"""
import pytest

from pytool import config
from pytool.runner import Payload, RunSpec, run

from conftest import explain

SCENARIOS = config.load()["scenarios"]


def _param(sc):
    marks = [pytest.mark.boot] + [getattr(pytest.mark, m) for m in sc["marks"]]
    return pytest.param(sc["name"], marks=marks, id=sc["name"])


@pytest.mark.timeout(900)
@pytest.mark.parametrize("name", [_param(sc) for sc in SCENARIOS])
def test_scenario(boot, name):
    res = boot(name)
    assert res.passed, explain(res)
    summary = (res.run_dir / "summary.json").read_text()
    assert '"passed": true' in summary


@pytest.mark.boot
@pytest.mark.timeout(120)
def test_forbidden_pattern_fails_fast(cfg):
    spec = RunSpec(engine="qemu", accel="tcg", vendor="intel", live=False, timeout=100,
                   payload=Payload(efi="hello"), expect=["PAYLOAD: hello"],
                   forbid=[r"HV: caps "], name="forbid-fast")
    res = run(spec, cfg)
    assert not res.passed
    assert res.end_reason == "forbidden", explain(res)
    assert "HV: caps" in res.failure
    assert res.wall < 60, "a forbidden line must end the run at once, not at the deadline"
    assert "PAYLOAD: hello" not in res.serial


@pytest.mark.boot
@pytest.mark.timeout(120)
def test_deadline_fails_the_run(cfg):
    spec = RunSpec(engine="qemu", accel="tcg", vendor="intel", live=False, timeout=8,
                   expect=["this line never appears"], name="deadline")
    res = run(spec, cfg)
    assert not res.passed and res.end_reason == "deadline", explain(res)
