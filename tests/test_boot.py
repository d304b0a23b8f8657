"""Boot tests: every scenario in edk2-config.yaml, on the real engines.

Nothing here is mocked: each test builds the app, packs a GPT disk, boots
QEMU or Bochs with OVMF and asserts on the serial output as it streams.
"""
import re

import pytest

from pytool import config
from pytool.runner import Payload, RunSpec, run

from conftest import explain

SCENARIOS = config.load()["scenarios"]


def _param(sc):
    marks = [pytest.mark.boot] + [getattr(pytest.mark, m) for m in sc["marks"]]
    return pytest.param(sc["name"], marks=marks, id=sc["name"])


@pytest.mark.timeout(1800)       # each scenario has its own, shorter, deadline
@pytest.mark.parametrize("name", [_param(sc) for sc in SCENARIOS])
def test_scenario(boot, name):
    res = boot(name)
    assert res.passed, explain(res)
    summary = (res.run_dir / "summary.json").read_text()
    assert '"passed": true' in summary
    for check in AFTER.get(name, []):
        check(res)


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


# --- checks made after particular scenarios, on the same boot --------------

def iomem_ranges(serial: str) -> list[tuple[int, int, str]]:
    """`GUEST-LINUX: iomem 00100000-0e1fffff : System RAM` lines."""
    out = []
    for m in re.finditer(r"GUEST-LINUX: iomem ([0-9a-f]+)-([0-9a-f]+) : (.+?)\s*$",
                         serial, re.M):
        out.append((int(m.group(1), 16), int(m.group(2), 16), m.group(3)))
    return out


def check_hv_memory_reserved(res) -> None:
    """The hypervisor's resident pool is reserved in Linux's map, never System RAM,
    and the guest never touched it (no EPT block was logged).  Per boot: a run that
    reboots gets a new pool each time."""
    boots = re.split(r"(?m)(?=^HV: resident image=)", res.serial)[1:]
    assert boots, "the hypervisor did not report its resident pool"
    mapped = [b for b in boots if iomem_ranges(b)]
    assert mapped, "the guest printed no memory map"
    for boot in mapped:               # a run may end before its last boot's Linux
        m = re.match(r"HV: resident image=(0x[0-9a-f]+) pool-pages=(\d+)", boot)
        lo = int(m.group(1), 16)
        hi = lo + int(m.group(2)) * 4096 - 1
        ranges = iomem_ranges(boot)
        ram = [r for r in ranges if r[2] == "System RAM" and r[0] <= hi and lo <= r[1]]
        assert not ram, f"hypervisor pool {lo:#x}-{hi:#x} overlaps System RAM {ram}"
        assert any(r[2] == "Reserved" and r[0] <= lo and hi <= r[1] for r in ranges), \
            f"hypervisor pool {lo:#x}-{hi:#x} is not inside a Reserved range: {ranges}"
    assert "HV: ept-block" not in res.serial
    assert "HV: npt-block" not in res.serial


def hvlog_and_serial(serial: str) -> tuple[list[str], list[str]]:
    """The `HV:` lines hvlog printed in the guest, and the `HV:` lines of this boot's
    serial output (previous-boot lines are printed before the ring exists)."""
    hvlog, hv = [], []
    for line in serial.splitlines():
        m = re.search(r"GUEST-LINUX: hvlog: (HV: .*?)\s*$", line)
        if m:
            hvlog.append(m.group(1))
        elif "GUEST-LINUX" not in line and "HV: " in line:
            text = line[line.index("HV: "):].rstrip()
            if not text.startswith("HV: previous-boot"):
                hv.append(text)
    return hvlog, hv


def check_hvlog_matches_serial(res, via: str = "acpi") -> None:
    """In Linux, hvlog (efi/linux/hvlog.c) read the log ring (through the HVLG ACPI
    table: /sys/firmware/acpi/tables/HVLG, which kernel lockdown leaves open): it
    printed exactly the HV: lines serial showed up to then, `HV: ready` and every
    AP's start-up line included, and the table's ACPI checksum held."""
    hvlog, hv = hvlog_and_serial(res.serial)
    assert "GUEST-LINUX: hvlog rc=0" in res.serial, "hvlog failed in the guest"
    assert hvlog, "hvlog printed no HV: lines"
    assert hvlog == hv[:len(hvlog)], (hvlog, hv)
    assert re.search(rf"GUEST-LINUX: hvlog: hvlog: ring=\S+ .* via={via} acpi-checksum=ok",
                     res.serial), "hvlog found the ring another way, or the checksum was off"
    assert "Incorrect checksum in table [HVLG]" not in res.serial
    ready = re.search(r"HV: ready cpus=(\d+)", res.serial)
    if not ready:                                   # skipped: the ring still tells why
        assert any(line.startswith("HV: skip reason=") for line in hvlog)
        return
    assert any(line.startswith("HV: ready cpus=") for line in hvlog)
    cpus = int(ready.group(1))
    for i in range(cpus):
        assert f"HV: cpu={i} vmx=on" in hvlog or f"HV: cpu={i} svm=on" in hvlog
    if cpus > 1:
        assert any(line.startswith("HV: apic-intercept off") for line in hvlog)


def hvlog_stats(serial: str, run: int) -> dict[int, dict[str, int]]:
    """`GUEST-LINUX: hvlog-stats <run>: cpu=<i> <kind>=<n> ...` as {cpu: {kind: n}}."""
    out = {}
    for m in re.finditer(rf"GUEST-LINUX: hvlog-stats {run}: cpu=(\d+)(.*?)\s*$", serial, re.M):
        out[int(m.group(1))] = {k: int(v) for k, v in re.findall(r"(\w+)=(\d+)", m.group(2))}
    return out


def check_hvlog_stats_live(res) -> None:
    """`hvlog --stats`, run twice in Linux, read every CPU's exit counters live from
    the HVLG table: nonzero on every CPU, none smaller the second time, and the
    second snapshot counts the exits in between (its own CPUIDs at least)."""
    for run in (1, 2):
        assert f"GUEST-LINUX: hvlog-stats {run} rc=0" in res.serial, "hvlog --stats failed"
    first, second = hvlog_stats(res.serial, 1), hvlog_stats(res.serial, 2)
    cpus = int(re.search(r"HV: ready cpus=(\d+)", res.serial).group(1))
    assert sorted(first) == sorted(second) == list(range(cpus)), (first, second)
    for cpu in range(cpus):
        assert sum(first[cpu].values()) > 0, (cpu, first[cpu])
        for kind, n in first[cpu].items():
            assert second[cpu].get(kind, 0) >= n, (cpu, kind, n, second[cpu])
    assert sum(sum(c.values()) for c in second.values()) > \
        sum(sum(c.values()) for c in first.values())


AFTER = {name: [check_hv_memory_reserved] for name in
         (sc["name"] for sc in SCENARIOS)
         if name.startswith(("bochs-linux-hv", "tcg-linux-svm", "bochs-linux-svm"))}
AFTER["bochs-linux-hv-2"] = AFTER["bochs-linux-hv-2"] + [check_hvlog_matches_serial,
                                                     check_hvlog_stats_live]
# Under Secure Boot, kernel lockdown closes /dev/mem: the HVLG table still works.
AFTER["sb-chain-shim-amd"] = [check_hvlog_matches_serial, check_hvlog_stats_live]
AFTER["sb-chain-shim"] = [check_hvlog_matches_serial]      # TCG: no VMX, the ring says so


class _Fake:
    def __init__(self, serial):
        self.serial = serial


_LOG = """HV: resident image=0x1e186000 pool-pages=72
[  137.4] GUEST-LINUX: iomem 00100000-1e185fff : System RAM
[  137.5] GUEST-LINUX: iomem 1e186000-1e1cdfff : Reserved
[  137.6] GUEST-LINUX: iomem 1e1ce000-1ecbafff : System RAM
"""


_LOG2 = """HV: resident image=0x2e186000 pool-pages=72
[  7.4] GUEST-LINUX: iomem 00100000-2e185fff : System RAM
[  7.5] GUEST-LINUX: iomem 2e186000-2e1cdfff : Reserved
"""


def test_hv_memory_check_accepts_a_reserved_pool():
    check_hv_memory_reserved(_Fake(_LOG))
    check_hv_memory_reserved(_Fake(_LOG + _LOG2))   # a reboot: each boot its own pool


def test_hv_memory_check_skips_a_boot_cut_short():
    check_hv_memory_reserved(_Fake(_LOG + "HV: resident image=0x3e186000 pool-pages=72\n"))
    with pytest.raises(AssertionError, match="no memory map"):
        check_hv_memory_reserved(_Fake("HV: resident image=0x3e186000 pool-pages=72\n"))


def test_hv_memory_check_rejects_a_later_boot():
    with pytest.raises(AssertionError):
        check_hv_memory_reserved(_Fake(_LOG + _LOG2.replace(": Reserved", ": System RAM")))


@pytest.mark.parametrize("log", [
    _LOG.replace("1e186000-1e1cdfff : Reserved", "1e186000-1e1cdfff : System RAM"),
    _LOG.replace("pool-pages=72", "pool-pages=73"),
    _LOG + "HV: ept-block cpu=0 gpa=1e186000 access=r-- rip=0\n",
])
def test_hv_memory_check_rejects(log):
    with pytest.raises(AssertionError):
        check_hv_memory_reserved(_Fake(log))


_HVLOG = """HV: start version=0.1.0 cpus=2
HV: ready cpus=2
HV: cpu=0 vmx=on
[  1.0] GUEST-LINUX: hvlog: HV: start version=0.1.0 cpus=2
[  1.1] GUEST-LINUX: hvlog: HV: ready cpus=2
"""


def test_hvlog_and_serial_split():
    assert hvlog_and_serial("HV: previous-boot x\n" + _HVLOG) == (
        ["HV: start version=0.1.0 cpus=2", "HV: ready cpus=2"],
        ["HV: start version=0.1.0 cpus=2", "HV: ready cpus=2", "HV: cpu=0 vmx=on"])
