"""The benchmark scripts' log parsing (the numbers themselves come from boots)."""
from pytool.bench import parse_exit_stats, parse_numbers

LOG = """\
HV: ept maxphyaddr=40 pages=1g ept-bytes=24576
HV: mem total=294912 percpu=57344 used=151552
HV: init ticks=3283670
GUEST: bench cpuid-ticks=97
GUEST: bench loop-ticks=5
HV: stats cpu=0 cpuid=10 cr=2 xsetbv=1
HV: stats cpu=1 cpuid=4 init=1 sipi=1
HV: stats cpu=0 cpuid=12 cr=2 xsetbv=1 vmcall=3
"""


def test_numbers():
    v = parse_numbers(LOG)
    assert v == {"cpuid_ticks": 97, "loop_ticks": 5, "init_ticks": 3283670, "mem_total": 294912,
                 "mem_percpu": 57344, "mem_used": 151552, "ept_bytes": 24576}


def test_missing_numbers_are_absent():
    assert parse_numbers("nothing here") == {}


def test_exit_stats_last_report_per_cpu_wins():
    total, per_cpu = parse_exit_stats(LOG)
    assert per_cpu[0]["cpuid"] == 12 and per_cpu[0]["vmcall"] == 3
    assert total == {"cpuid": 16, "cr": 2, "xsetbv": 1, "vmcall": 3, "init": 1, "sipi": 1}
