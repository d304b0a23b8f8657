"""No emulator outlives its run: SIGTERM, SIGHUP, the parent's death and a
pytest timeout each end it (Ctrl-C: test_runner_lifecycle.py).

Each test boots QEMU TCG for real, waits until the hypervisor prints, then
ends the runner the way a CI job limit, a closed terminal, a supervisor or
pytest-timeout would, and looks for any process still naming the run folder.
"""
import os
import signal
import subprocess
import sys
import textwrap
import time
import uuid

import pytest

from test_runner_lifecycle import RUN_QEMU, ROOT, processes_mentioning

NEVER = "this line never appears"


def _start_run():
    proc = subprocess.Popen(RUN_QEMU + ["--engine", "qemu", "--accel", "tcg", "--quiet",
                                        "--timeout", "150", "--expect", NEVER],
                            cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True)
    first = proc.stdout.readline()           # "run: qemu_runs/<folder>  engine=..."
    assert first.startswith("run: "), first + proc.stderr.read()
    run_dir = ROOT / first.split()[1]
    _wait_for_hv(run_dir, proc)
    return proc, run_dir


def _wait_for_hv(run_dir, proc=None):
    deadline = time.time() + 120
    while time.time() < deadline:
        log = run_dir / "serial.log"
        if log.exists() and "HV: start" in log.read_text(errors="replace"):
            return
        time.sleep(0.3)
    if proc:
        proc.kill()
    pytest.fail("the run never reached HV: start")


def _gone(text, within=10.0):
    deadline = time.time() + within
    while time.time() < deadline:
        if not processes_mentioning(text):
            return True
        time.sleep(0.2)
    left = processes_mentioning(text)
    for pid in left:                         # do not leak it into other tests
        os.kill(pid, signal.SIGKILL)
    return False


@pytest.mark.boot
@pytest.mark.timeout(200)
@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGHUP], ids=["SIGTERM", "SIGHUP"])
def test_signal_stops_the_emulator(sig):
    proc, run_dir = _start_run()
    assert processes_mentioning(str(run_dir)), "QEMU should be running now"
    proc.send_signal(sig)
    out, err = proc.communicate(timeout=60)
    name = signal.Signals(sig).name
    assert proc.returncode == 128 + sig, err
    assert f"terminated by {name}" in err and "Traceback" not in err, err
    assert _gone(str(run_dir)), f"an emulator outlived {name}"


@pytest.mark.boot
@pytest.mark.timeout(200)
def test_parent_death_stops_the_emulator():
    """SIGKILL: no handler, no atexit runs; PR_SET_PDEATHSIG ends QEMU."""
    proc, run_dir = _start_run()
    assert processes_mentioning(str(run_dir))
    proc.kill()
    proc.communicate(timeout=30)
    assert _gone(str(run_dir)), "an emulator outlived its killed parent"


@pytest.mark.boot
@pytest.mark.timeout(200)
@pytest.mark.parametrize("method", ["signal", "thread"])
def test_pytest_timeout_stops_the_emulator(tmp_path, method):
    token = f"ptimeout-{uuid.uuid4().hex[:10]}"
    (tmp_path / "test_child.py").write_text(textwrap.dedent(f"""
        import pytest
        from pytool.runner import RunSpec, run

        @pytest.mark.timeout(25, method="{method}")
        def test_boot_that_hangs():
            run(RunSpec(engine="qemu", accel="tcg", timeout=150, live=False,
                        expect=["{NEVER}"], name="{token}"))
        """))
    r = subprocess.run([sys.executable, "-m", "pytest", "-p", "no:xdist", "-p",
                        "no:cacheprovider", "-q", "--rootdir", str(tmp_path),
                        str(tmp_path / "test_child.py")],
                       cwd=ROOT, capture_output=True, text=True, timeout=150,
                       env=dict(os.environ, PYTHONPATH=str(ROOT)))
    assert r.returncode != 0 and "Timeout" in r.stdout + r.stderr, r.stdout[-2000:]
    runs = [d for d in (ROOT / "qemu_runs").iterdir() if d.name.endswith(token)]
    assert runs, "the child test never started a run"
    assert "HV: start" in (runs[0] / "serial.log").read_text(errors="replace"), \
        "the timeout must hit while QEMU runs"
    assert _gone(token), f"an emulator outlived a pytest timeout (method={method})"
