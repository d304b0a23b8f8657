"""pytool.hostsetup: --check reports without installing anything."""
import subprocess
import sys
from pathlib import Path

import pytest

from pytool import hostsetup

REPO = Path(__file__).resolve().parent.parent


def test_check_prints_one_line_per_step():
    res = subprocess.run([sys.executable, "-m", "pytool.hostsetup", "--check"],
                         cwd=REPO, capture_output=True, text=True, timeout=120)
    lines = res.stdout.splitlines()
    assert [line.split()[1] for line in lines] == ["apt", "pip", "kernel"], res.stdout
    assert res.returncode in (0, 1)
    assert (res.returncode == 0) == ("MISSING" not in res.stdout)
    assert "Traceback" not in res.stderr


def test_not_root_with_missing_packages_is_clear(monkeypatch, capsys):
    monkeypatch.setattr(hostsetup, "missing_packages", lambda pkgs: ["bochs"])
    monkeypatch.setattr(hostsetup.os, "geteuid", lambda: 1000)
    monkeypatch.setattr(hostsetup.Apt, "install",
                        lambda self, p: pytest.fail("must not install"))
    assert hostsetup.main([]) == 1
    err = capsys.readouterr().err
    assert "needs root" in err and "bochs" in err and "Traceback" not in err


def test_no_apt_reports_missing(monkeypatch, capsys):
    monkeypatch.setattr(hostsetup, "missing_packages", lambda pkgs: ["gdisk"])
    monkeypatch.setattr(hostsetup, "step_pip", lambda args: True)
    monkeypatch.setattr(hostsetup, "step_kernel", lambda args, apt: True)
    monkeypatch.setattr(hostsetup.Apt, "install",
                        lambda self, p: pytest.fail("must not install"))
    assert hostsetup.main(["--no-apt"]) == 1
    assert "MISSING: gdisk" in capsys.readouterr().out


def test_requirements_come_from_pyproject():
    reqs = hostsetup._requirements()
    assert any(r.startswith("pytest") for r in reqs)
    assert any(r.startswith("virt-firmware") for r in reqs)
    assert hostsetup._vtuple("0.27.1rc1") == (0, 27, 1)
