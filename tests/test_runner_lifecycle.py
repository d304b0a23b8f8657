"""The runner as a user meets it: clear errors, and no emulator left behind."""
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml

from pytool import config

ROOT = config.REPO_ROOT
RUN_QEMU = [sys.executable, "-u", str(ROOT / "run_qemu.py")]


def processes_mentioning(text: str) -> list[int]:
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit() or int(entry.name) == os.getpid():
            continue
        try:
            cmd = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode()
        except OSError:
            continue
        if text in cmd:
            found.append(int(entry.name))
    return found


@pytest.mark.boot
@pytest.mark.timeout(180)
def test_ctrl_c_stops_the_emulator():
    proc = subprocess.Popen(RUN_QEMU + ["--engine", "qemu", "--accel", "tcg", "--quiet",
                                        "--timeout", "150", "--expect", "never appears"],
                            cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True)
    first = proc.stdout.readline()           # "run: qemu_runs/<folder>  engine=..."
    assert first.startswith("run: "), first
    run_dir = ROOT / first.split()[1]
    deadline = time.time() + 120
    while time.time() < deadline:            # wait until QEMU is up and printing
        if (run_dir / "serial.log").exists() and \
                "HV: start" in (run_dir / "serial.log").read_text(errors="replace"):
            break
        time.sleep(0.5)
    else:
        proc.kill()
        pytest.fail("the run never reached HV: start")
    assert processes_mentioning(str(run_dir)), "QEMU should be running now"
    proc.send_signal(signal.SIGINT)
    out, err = proc.communicate(timeout=60)
    assert proc.returncode == 130, err
    assert "interrupted" in err and "Traceback" not in err
    time.sleep(0.5)
    assert processes_mentioning(str(run_dir)) == [], "an emulator outlived Ctrl-C"


def test_missing_host_tool_is_one_clear_line(tmp_path):
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    for d in os.environ["PATH"].split(os.pathsep):
        for tool in Path(d).glob("*") if Path(d).is_dir() else []:
            target = bin_dir / tool.name
            if tool.name != "qemu-system-x86_64" and not target.exists():
                target.symlink_to(tool)
    env = dict(os.environ, PATH=str(bin_dir))
    r = subprocess.run(RUN_QEMU + ["--engine", "qemu", "--accel", "tcg", "--quiet"],
                       cwd=ROOT, env=env, capture_output=True, text=True, timeout=120)
    assert r.returncode == 2
    assert r.stderr.strip() == ("error: qemu-system-x86_64 not found on PATH: "
                                "run `python3 -m pytool.hostsetup`")


def test_missing_firmware_is_one_clear_line(tmp_path):
    raw = yaml.safe_load(config.CONFIG_PATH.read_text())
    raw["firmware"]["bochs"]["rom"] = str(tmp_path / "OVMF.fd")
    cfg = tmp_path / "cfg.yaml"
    cfg.write_text(yaml.safe_dump(raw))
    r = subprocess.run(RUN_QEMU + ["--config", str(cfg), "--engine", "bochs", "--quiet"],
                       cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert r.returncode == 2
    assert r.stderr.strip() == (f"error: OVMF.fd for Bochs not found at {tmp_path}/OVMF.fd:"
                                f" run `python3 -m pytool.hostsetup`")


def test_malformed_config_is_one_clear_line(tmp_path):
    cfg = tmp_path / "cfg.yaml"
    cfg.write_text(config.CONFIG_PATH.read_text().replace("smp: 1\n", "smp: one\n", 1))
    r = subprocess.run(RUN_QEMU + ["--config", str(cfg)], cwd=ROOT,
                       capture_output=True, text=True, timeout=60)
    assert r.returncode == 2
    assert r.stderr.startswith(f"error: {cfg}: ") and "expected int, got str" in r.stderr
    assert "Traceback" not in r.stderr


def test_missing_chainload_file_is_one_clear_line(tmp_path):
    r = subprocess.run(RUN_QEMU + ["--engine", "qemu", "--accel", "tcg", "--quiet",
                                   "--chainload", str(tmp_path / "nope.efi")],
                       cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert r.returncode == 2
    assert "error: payload not found" in r.stderr and "Traceback" not in r.stderr
