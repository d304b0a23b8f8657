"""Benchmarks: boot the real thing and print numbers (never a timed test).

    python3 -m pytool.bench vmx [--smp 1 4]     # CPUID round trip, init cost, memory
    python3 -m pytool.bench svm [--smp 1 4]     # the same for AMD-V (Bochs ryzen / QEMU TCG)
    python3 -m pytool.bench linux [--smp 2]     # boot-time ratio, VM exits by reason
    python3 -m pytool.bench linux --vendor amd --engine qemu   # ... under SVM on TCG
    python3 -m pytool.bench tcb                 # lines of code: core, vmx, svm
    python3 -m pytool.bench repeat NAME [-n 10] # the same scenario N times: flakes?

In Bochs, RDTSC counts instructions, so the tick figures are instruction
counts: deterministic, and a direct measure of exit-path length.
"""
from __future__ import annotations

import argparse
import re
import sys
from collections import Counter

from . import config as _config
from .runner import Payload, RunSpec, format_summary, run

_NUM = {
    "cpuid_ticks": r"GUEST: bench cpuid-ticks=(\d+)",
    "loop_ticks": r"GUEST: bench loop-ticks=(\d+)",   # the loop's share of cpuid-ticks
    "init_ticks": r"HV: init ticks=(\d+)",
    "mem_total": r"HV: mem total=(\d+)",
    "mem_percpu": r"HV: mem total=\d+ percpu=(\d+)",
    "mem_used": r"HV: mem total=\d+ percpu=\d+ used=(\d+)",
    "ept_bytes": r"HV: ept .*ept-bytes=(\d+)",
    "npt_bytes": r"HV: npt .*npt-bytes=(\d+)",
}


def parse_numbers(serial: str) -> dict[str, int]:
    """The last value of each benchmark line found in a serial log."""
    out = {}
    for key, rx in _NUM.items():
        found = re.findall(rx, serial)
        if found:
            out[key] = int(found[-1])
    return out


def parse_exit_stats(serial: str) -> tuple[Counter, dict[int, Counter]]:
    """Exit counts from `HV: stats cpu=<i> <reason>=<n> ...` lines.

    A CPU may report more than once (on demand, then at power-off): its last
    report wins.  Returns the totals and the per-CPU counters."""
    per_cpu: dict[int, Counter] = {}
    for m in re.finditer(r"HV: stats cpu=(\d+)((?: [\w-]+=\d+)*)", serial):
        per_cpu[int(m.group(1))] = Counter(
            {k: int(v) for k, v in re.findall(r"([\w-]+)=(\d+)", m.group(2))})
    total: Counter = Counter()
    for c in per_cpu.values():
        total.update(c)
    return total, per_cpu


def _boot(cfg, **kw):
    res = run(RunSpec(live=False, **kw), cfg)
    if not res.passed:
        print(format_summary(res), file=sys.stderr)
    return res


def bench_vmx(cfg: dict, smps: list[int]) -> int:
    print(f"{'cpus':>4} {'cpuid ticks':>12} {'loop':>5} {'init ticks':>12} {'mem total':>10} "
          f"{'per cpu':>9} {'used':>9} {'ept':>8}   run")
    bad = 0
    for n in smps:
        res = _boot(cfg, engine="bochs", vendor="intel", smp=n, timeout=300 + 60 * n,
                    payload=Payload(efi="guest-test"), name=f"bench-vmx-{n}",
                    expect=[r"GUEST: summary "], forbid=[r"HV: panic"])
        v = parse_numbers(res.serial)
        bad += not res.passed
        print(f"{n:>4} {v.get('cpuid_ticks', '-'):>12} {v.get('loop_ticks', '-'):>5} "
              f"{v.get('init_ticks', '-'):>12} "
              f"{v.get('mem_total', '-'):>10} {v.get('mem_percpu', '-'):>9} "
              f"{v.get('mem_used', '-'):>9} {v.get('ept_bytes', '-'):>8}   "
              f"{res.run_dir.name}")
    print("targets: CPUID round trip <= 120 ticks; resident memory <= 1 MiB for 4 CPUs "
          "(EPT splits reported separately)")
    return 1 if bad else 0


def bench_svm(cfg: dict, smps: list[int]) -> int:
    """AMD-V: the CPUID round trip in Bochs ryzen (RDTSC counts instructions there,
    as for `bench vmx`), memory at each CPU count under QEMU TCG (seconds)."""
    bad = 0
    res = _boot(cfg, engine="bochs", vendor="amd", smp=1, timeout=900,
                payload=Payload(efi="guest-test"), name="bench-svm-bochs-1",
                expect=[r"GUEST: summary "], forbid=[r"HV: panic"])
    v = parse_numbers(res.serial)
    bad += not res.passed
    print(f"bochs ryzen, 1 cpu: cpuid round trip {v.get('cpuid_ticks', '-')} ticks "
          f"(loop share {v.get('loop_ticks', '-')}), init {v.get('init_ticks', '-')} ticks  "
          f"(run {res.run_dir.name})")
    print(f"{'cpus':>4} {'mem total':>10} {'per cpu':>9} {'used':>9} {'npt':>8}   run (qemu tcg)")
    for n in smps:
        res = _boot(cfg, engine="qemu", vendor="amd", smp=n, timeout=180,
                    payload=Payload(efi="guest-test"), name=f"bench-svm-tcg-{n}",
                    expect=[r"GUEST: summary "], forbid=[r"HV: panic"])
        v = parse_numbers(res.serial)
        bad += not res.passed
        print(f"{n:>4} {v.get('mem_total', '-'):>10} {v.get('mem_percpu', '-'):>9} "
              f"{v.get('mem_used', '-'):>9} {v.get('npt_bytes', '-'):>8}   {res.run_dir.name}")
    print("targets: CPUID round trip <= 120 ticks; resident memory <= 1 MiB for 4 CPUs")
    return 1 if bad else 0


def count_lines(paths) -> int:
    """Non-blank lines of the C/asm/header files under the given folders."""
    from pathlib import Path
    n = 0
    for p in paths:
        for f in sorted(Path(p).rglob("*")):
            if f.suffix in (".c", ".h", ".S"):
                n += sum(1 for line in f.read_text().splitlines() if line.strip())
    return n


def bench_tcb() -> int:
    from .config import REPO_ROOT
    for name in ("core", "vmx", "svm", "platform", "lib"):
        print(f"efi/{name:9} {count_lines([REPO_ROOT / 'efi' / name]):6} lines")
    return 0


def bench_linux(cfg: dict, smp: int, engine: str, vendor: str = "intel") -> int:
    marker = r"GUEST-LINUX: userspace up"
    times = {}
    results = {}
    for hv in (False, True):
        res = _boot(cfg, engine=engine, vendor=vendor, smp=smp, memory=512, hv=hv,
                    timeout=900, payload=Payload(kernel="default", initrd="default",
                                                 append="console=ttyS0 quiet"),
                    expect=[marker, r"GUEST-LINUX: done"], guest_ends=True,
                    name=f"bench-linux-{vendor}-{'hv' if hv else 'nohv'}-{smp}")
        results[hv] = res
        hit = next((a for a in res.assertions if a["pattern"] == marker), None)
        times[hv] = hit["time"] if hit and hit["time"] is not None else None
        print(f"{'hv' if hv else 'no-hv':6} smp={smp} to userspace: "
              f"{times[hv] if times[hv] is not None else '-'} s  (run {res.run_dir.name})")
    if times[False] and times[True]:
        print(f"boot-time ratio hv/no-hv: {times[True] / times[False]:.3f} (target <= 1.05)")
    total, per_cpu = parse_exit_stats(results[True].serial)
    if total:
        print(f"VM exits during the boot, all CPUs: {sum(total.values())} (target <= 5000)")
        for reason, n in total.most_common():
            print(f"  {reason:24} {n}")
    else:
        print("no `HV: stats` lines in the hv run: exit counts unavailable")
    return 0 if all(r.passed for r in results.values()) else 1


def bench_repeat(cfg: dict, name: str, count: int) -> int:
    """Boot one scenario `count` times in a row; every boot must pass."""
    from .runner import spec_from_scenario
    sc = _config.scenario(cfg, name)
    failed = 0
    walls = []
    for i in range(1, count + 1):
        res = run(spec_from_scenario(cfg, sc, live=False), cfg)
        walls.append(res.wall)
        failed += not res.passed
        print(f"{i:3}/{count} {'PASS' if res.passed else 'FAIL'} {res.wall:7.1f}s "
              f"{res.end_reason:17} {res.run_dir.name}"
              + (f"  ({res.failure})" if res.failure else ""), flush=True)
    print(f"{name}: {count - failed} of {count} passed; wall min/avg/max "
          f"{min(walls):.1f}/{sum(walls) / len(walls):.1f}/{max(walls):.1f} s")
    return 1 if failed else 0


def bench_fuzz(cfg: dict, seeds: list[int], ops: int, smp: int, vendor: str = "intel",
               engine: str | None = None) -> int:
    """The differential fuzzer, --no-hv vs --hv on the same engine and CPU
    model, per seed: op counts and differences per class (pytool/fuzzdiff.py)."""
    from .fuzzdiff import default_engine, differences, parse, run_pair
    bad = 0
    engine = engine or default_engine(vendor)
    print(f"fuzz vendor={vendor} engine={engine} smp={smp}")
    for seed in seeds:
        native_res, hv_res = run_pair(cfg, seed, ops, smp, vendor, engine)
        native, hv = parse(native_res.serial), parse(hv_res.serial)
        diffs = differences(native, hv)
        ok = native_res.passed and hv_res.passed and not diffs and not hv.panics
        bad += not ok
        print(f"seed={seed} ops={ops} cpus={sorted(hv.done_cpus)} panics={hv.panics} "
              f"wall={native_res.wall:.0f}+{hv_res.wall:.0f}s "
              f"undocumented-differences={len(diffs)} hv-checks="
              f"{sum(hv.hv_checks.values())}/{len(hv.hv_checks)} "
              f"runs={native_res.run_dir.name},{hv_res.run_dir.name}")
        print(f"  {'class':8} {'cpu':>3} {'ops':>7} {'faults':>7} {'documented':>10}  same")
        for (cls, cpu), r in sorted(hv.classes.items(), key=lambda kv: (kv[0][1], kv[0][0])):
            n = native.classes.get((cls, cpu))
            print(f"  {cls:8} {cpu:>3} {r.ops:>7} {r.faults:>7} {r.documented:>10}  "
                  f"{'yes' if n and n.hash == r.hash else 'NO'}")
        for d in diffs:
            print(f"  difference: {d}")
    return 1 if bad else 0


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(prog="python3 -m pytool.bench", description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = ap.add_subparsers(dest="what", required=True)
    p = sub.add_parser("vmx", help="CPUID round trip, init cost and memory in Bochs")
    p.add_argument("--smp", type=int, nargs="+", default=[1, 4])
    p = sub.add_parser("svm", help="AMD-V: CPUID round trip (Bochs ryzen), memory (TCG)")
    p.add_argument("--smp", type=int, nargs="+", default=[1, 4])
    p = sub.add_parser("linux", help="Linux boot-time ratio and exit counts")
    p.add_argument("--smp", type=int, default=2)
    p.add_argument("--engine", choices=("bochs", "qemu", "auto"), default="bochs")
    p.add_argument("--vendor", choices=("intel", "amd"), default="intel")
    sub.add_parser("tcb", help="lines of code of the core and each backend")
    p = sub.add_parser("repeat", help="boot one scenario N times in a row")
    p.add_argument("scenario")
    p.add_argument("-n", "--count", type=int, default=10)
    p = sub.add_parser("fuzz", help="differential fuzzer, --hv vs --no-hv on one engine")
    p.add_argument("--seeds", type=int, nargs="+", default=[1, 2, 3])
    p.add_argument("--ops", type=int, default=50000, help="operations per CPU")
    p.add_argument("--smp", type=int, default=2)
    p.add_argument("--vendor", choices=("intel", "amd"), default="intel")
    p.add_argument("--engine", choices=("bochs", "qemu"), default=None,
                   help="default: bochs for intel (tigerlake), qemu TCG for amd "
                        "(bochs: ryzen)")
    a = ap.parse_args(argv)
    if a.what == "tcb":
        return bench_tcb()
    cfg = _config.load()
    if a.what == "fuzz":
        if a.vendor == "intel" and a.engine == "qemu":
            ap.error("fuzz --vendor intel needs bochs: QEMU TCG emulates no VMX")
        return bench_fuzz(cfg, a.seeds, a.ops, a.smp, a.vendor, a.engine)
    if a.what == "repeat":
        return bench_repeat(cfg, a.scenario, a.count)
    if a.what == "vmx":
        return bench_vmx(cfg, a.smp)
    if a.what == "svm":
        return bench_svm(cfg, a.smp)
    return bench_linux(cfg, a.smp, a.engine, a.vendor)


if __name__ == "__main__":
    sys.exit(main())
