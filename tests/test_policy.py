"""Host builds of the hypervisor's pure policy code, tested through ctypes:
the CPUID policy (efi/core/cpuid_policy.c), the VMX control choice
(efi/vmx/vmx_ctl.c) and the MSR policy table (efi/core/msr_policy.c).

The CPUID checks run over real and synthetic CPUID dumps
(tests/data/cpuid/, see its README) and over synthetic VMX capability-MSR
sets with each optional control present or absent, and assert that no
advertised feature lacks the control that makes it work in the guest.
The feature -> control table below is written from the SDM (Vol 3C Table
25-7), independently of the C rule table.
"""
from __future__ import annotations

import ctypes
import itertools
import re
from pathlib import Path

import pytest

from hostcc import host_library

ROOT = Path(__file__).resolve().parent.parent
DUMPS = ROOT / "tests/data/cpuid"
SOURCES = [ROOT / "efi/core/cpuid_policy.c", ROOT / "efi/core/msr_policy.c",
           ROOT / "efi/vmx/vmx_ctl.c"]

EAX, EBX, ECX, EDX = range(4)
ANY = 0xFFFFFFFF

# VMX secondary controls (SDM Vol 3C 25.6.2, Table 25-7).
PROC2_EPT, PROC2_RDTSCP, PROC2_VPID, PROC2_UG = 1 << 1, 1 << 3, 1 << 5, 1 << 7
PROC2_INVPCID, PROC2_XSAVES, PROC2_PT_GPA, PROC2_WAITPKG = 1 << 12, 1 << 20, 1 << 24, 1 << 26
PROC_SECONDARY = 1 << 31
OPTIONAL_PROC2 = [PROC2_RDTSCP, PROC2_INVPCID, PROC2_XSAVES, PROC2_WAITPKG, PROC2_PT_GPA,
                  PROC2_VPID]

# feature (leaf, subleaf, register, bit) -> the proc2 control it needs.
GATED = {
    "rdtscp": ((0x80000001, 0, EDX, 27), PROC2_RDTSCP),
    "invpcid": ((7, 0, EBX, 10), PROC2_INVPCID),
    "xsaves": ((0xD, 1, EAX, 3), PROC2_XSAVES),
    "waitpkg": ((7, 0, ECX, 5), PROC2_WAITPKG),
    # Intel PT writes host-physical addresses without "PT uses GPA" (which
    # the hypervisor never sets): it must read as absent in every case.
    "intel-pt": ((7, 0, EBX, 25), 1 << 63),
    "xss-pt-state": ((0xD, 1, ECX, 8), 1 << 63),
}
CR4_OSXSAVE, CR4_PKE = 1 << 18, 1 << 22


class CpuidCtls(ctypes.Structure):
    _fields_ = [("amd", ctypes.c_bool), ("rdtscp", ctypes.c_bool),
                ("invpcid", ctypes.c_bool), ("xsaves", ctypes.c_bool),
                ("waitpkg", ctypes.c_bool), ("pt_gpa", ctypes.c_bool),
                ("max_std", ctypes.c_uint32), ("max_ext", ctypes.c_uint32)]


class CtlWant(ctypes.Structure):
    _fields_ = [("bit", ctypes.c_uint32), ("required", ctypes.c_bool),
                ("name", ctypes.c_char_p), ("why", ctypes.c_char_p)]


class CtlGroup(ctypes.Structure):
    _fields_ = [("name", ctypes.c_char_p), ("want", ctypes.POINTER(CtlWant)),
                ("n", ctypes.c_size_t)]


class MsrRule(ctypes.Structure):
    _fields_ = [("first", ctypes.c_uint32), ("last", ctypes.c_uint32),
                ("vendor", ctypes.c_uint8), ("rd", ctypes.c_uint8), ("wr", ctypes.c_uint8),
                ("rd_clear", ctypes.c_uint64), ("rd_set", ctypes.c_uint64),
                ("wr_fixed", ctypes.c_uint64), ("wr_zero", ctypes.c_uint64),
                ("why", ctypes.c_char_p)]


CTL_PROC2 = 2
MSR_DO_WRITE, MSR_DO_GP, MSR_DO_DROP, MSR_DO_ICR = range(4)


@pytest.fixture(scope="module")
def lib(tmp_path_factory):
    so = host_library(SOURCES, tmp_path_factory.mktemp("policy") / "libpolicy.so")
    so.cpuid_policy_compute.argtypes = [ctypes.POINTER(CpuidCtls), ctypes.c_void_p]
    so.cpuid_policy_compute.restype = ctypes.c_int
    so.cpuid_policy_apply.argtypes = [ctypes.c_void_p, ctypes.c_uint32, ctypes.c_uint32,
                                      ctypes.POINTER(ctypes.c_uint32), ctypes.c_uint64]
    so.vmx_ctl_pick.argtypes = [ctypes.c_uint64, ctypes.POINTER(CtlGroup),
                                ctypes.POINTER(ctypes.c_uint32)]
    so.vmx_ctl_pick.restype = ctypes.c_uint32
    so.vmx_cpuid_ctls.argtypes = [ctypes.c_uint32] * 4 + [ctypes.POINTER(CpuidCtls)]
    so.msr_policy_find.argtypes = [ctypes.c_uint32, ctypes.c_bool]
    so.msr_policy_find.restype = ctypes.POINTER(MsrRule)
    so.msr_policy_read.argtypes = [ctypes.POINTER(MsrRule), ctypes.c_bool, ctypes.c_uint64,
                                   ctypes.POINTER(ctypes.c_uint64)]
    so.msr_policy_read.restype = ctypes.c_int
    so.msr_policy_write.argtypes = [ctypes.POINTER(MsrRule), ctypes.c_uint64, ctypes.c_bool,
                                    ctypes.c_uint64]
    so.msr_policy_write.restype = ctypes.c_int
    return so


# ---- CPUID dumps -------------------------------------------------------------

LINE = re.compile(r"^\s*0x([0-9a-f]+) 0x([0-9a-f]+): eax=0x([0-9a-f]+) ebx=0x([0-9a-f]+) "
                  r"ecx=0x([0-9a-f]+) edx=0x([0-9a-f]+)\s*$")


def load_dump(path: Path) -> dict[tuple[int, int], list[int]]:
    leaves = {}
    for line in path.read_text().splitlines():
        m = LINE.match(line)
        if m:
            leaf, sub, *regs = (int(g, 16) for g in m.groups())
            leaves.setdefault((leaf, sub), regs)
    assert leaves, path
    return leaves


def dumps():
    return sorted(DUMPS.glob("*.txt"))


def is_amd(d) -> bool:
    return d[(0, 0)][1] == 0x68747541          # "Auth"


def policy(lib, ctls: CpuidCtls, d):
    ctls.max_std = d[(0, 0)][0]
    ctls.max_ext = d.get((0x80000000, 0), [0x80000000])[0]
    buf = ctypes.create_string_buffer(4096)
    assert lib.cpuid_policy_compute(ctypes.byref(ctls), buf) == 0
    return buf


def guest_view(lib, pol, d, cr4: int) -> dict[tuple[int, int], list[int]]:
    out = {}
    for (leaf, sub), regs in d.items():
        v = (ctypes.c_uint32 * 4)(*regs)
        lib.cpuid_policy_apply(pol, leaf, sub, v, cr4)
        out[(leaf, sub)] = list(v)
    return out


def bit(view, leaf, sub, reg, b) -> bool:
    regs = view.get((leaf, sub))
    return bool(regs and (regs[reg] >> b) & 1)


def cap_sets():
    """Synthetic IA32_VMX_PROCBASED_CTLS2 values: the required controls always
    allowed, each optional one present or absent."""
    base = PROC2_EPT | PROC2_UG
    for combo in itertools.product([False, True], repeat=len(OPTIONAL_PROC2)):
        may = base | sum(b for b, on in zip(OPTIONAL_PROC2, combo) if on)
        yield may << 32                           # allowed-1 settings; no must-be-1


def proc2_for(lib, cap: int) -> int:
    group = (CtlGroup * 5).in_dll(lib, "vmx_ctl_groups")[CTL_PROC2]
    missing = ctypes.c_uint32()
    return lib.vmx_ctl_pick(cap, ctypes.byref(group), ctypes.byref(missing))


@pytest.mark.parametrize("dump", [p for p in dumps() if not is_amd(load_dump(p))],
                         ids=lambda p: p.stem)
def test_no_feature_without_its_control(lib, dump):
    d = load_dump(dump)
    for cap in cap_sets():
        proc2 = proc2_for(lib, cap)
        assert proc2 & ~(cap >> 32) == 0, "picked a control the CPU does not allow"
        ctls = CpuidCtls()
        lib.vmx_cpuid_ctls(PROC_SECONDARY, proc2, 0, 0, ctypes.byref(ctls))
        pol = policy(lib, ctls, d)
        for cr4 in (0, CR4_OSXSAVE | CR4_PKE):
            view = guest_view(lib, pol, d, cr4)
            for name, ((leaf, sub, reg, b), need) in GATED.items():
                if bit(view, leaf, sub, reg, b):
                    assert proc2 & need == need, \
                        f"{dump.stem}: {name} advertised without its control (proc2={proc2:#x})"
                elif bit(d, leaf, sub, reg, b) and need < (1 << 32) and proc2 & need:
                    pytest.fail(f"{dump.stem}: {name} hidden although its control is on")
            assert not bit(view, 1, 0, ECX, 5), "VMX must read as absent"
            assert bit(view, 1, 0, ECX, 31), "hypervisor-present bit"
            assert bit(view, 1, 0, ECX, 27) == bool(cr4 & CR4_OSXSAVE), "OSXSAVE follows CR4"
            if d[(0, 0)][0] >= 7:
                assert bit(view, 7, 0, ECX, 4) == bool(cr4 & CR4_PKE), "OSPKE follows CR4.PKE"
            for sub in (0, 1):
                if (0x14, sub) in view:
                    assert view[(0x14, sub)] == [0, 0, 0, 0], "PT leaf must be empty"
            # Leaves the policy does not own are untouched.
            for key in d:
                if key[0] in (0, 2, 4, 0xB, 0x80000002, 0x80000008):
                    assert view[key] == d[key]


def test_waitpkg_example_is_caught(lib):
    """The issue's example: WAITPKG on a CPU whose VMCS lacks 'enable user
    wait and pause' (Linux uses TPAUSE for udelay and took #UD)."""
    d = load_dump(DUMPS / "intel-client-synthetic.txt")
    assert bit(d, 7, 0, ECX, 5), "the synthetic dump must have WAITPKG"
    cap = (PROC2_EPT | PROC2_UG | PROC2_RDTSCP) << 32
    ctls = CpuidCtls()
    lib.vmx_cpuid_ctls(PROC_SECONDARY, proc2_for(lib, cap), 0, 0, ctypes.byref(ctls))
    view = guest_view(lib, policy(lib, ctls, d), d, 0)
    assert not bit(view, 7, 0, ECX, 5)
    assert not bit(view, 7, 0, EBX, 10) and not bit(view, 0xD, 1, EAX, 3)
    assert bit(view, 0x80000001, 0, EDX, 27), "RDTSCP control present: RDTSCP stays"


def test_amd_policy(lib):
    d = load_dump(DUMPS / "amd-epyc-synthetic.txt")
    assert bit(d, 0x80000001, 0, ECX, 2) and d[(0x8000000A, 0)] != [0, 0, 0, 0]
    ctls = CpuidCtls(amd=True, rdtscp=True, invpcid=True, xsaves=True, waitpkg=True)
    view = guest_view(lib, policy(lib, ctls, d), d, CR4_OSXSAVE)
    assert not bit(view, 0x80000001, 0, ECX, 2), "SVM must read as absent"
    assert view[(0x8000000A, 0)] == [0, 0, 0, 0]
    assert bit(view, 1, 0, ECX, 31) and bit(view, 1, 0, ECX, 27)
    assert not bit(view, 7, 0, ECX, 4), "OSPKE follows CR4.PKE (clear)"
    assert bit(view, 0x80000001, 0, EDX, 27), "RDTSCP stays"
    # The Intel-only gate must not hide AMD's own RDTSCP/INVPCID.
    ctls = CpuidCtls(amd=True)
    view = guest_view(lib, policy(lib, ctls, d), d, 0)
    assert bit(view, 7, 0, EBX, 10)


def test_leaf_beyond_max_untouched(lib):
    """A CPU whose max basic leaf is below 0x14 answers leaf 0x14 with other
    data; the policy must not zero what it does not own."""
    d = load_dump(DUMPS / "amd-epyc-synthetic.txt")
    ctls = CpuidCtls(amd=False)
    pol = policy(lib, ctls, d)
    v = (ctypes.c_uint32 * 4)(1, 2, 3, 4)
    lib.cpuid_policy_apply(pol, 0x14, 0, v, 0)
    assert list(v) == [1, 2, 3, 4]


# ---- MSR policy ----------------------------------------------------------------

def rd(lib, msr, amd=False, ok=True, native=0):
    out = ctypes.c_uint64()
    rule = lib.msr_policy_find(msr, amd)
    rc = lib.msr_policy_read(rule, ok, native, ctypes.byref(out))
    return None if rc else out.value


def wr(lib, msr, val, cur=0, amd=False, cur_ok=True):
    return lib.msr_policy_write(lib.msr_policy_find(msr, amd), val, cur_ok, cur)


def rules(lib):
    n = ctypes.c_size_t.in_dll(lib, "msr_rule_count").value
    return (MsrRule * n).in_dll(lib, "msr_rules")


def test_msr_table_is_well_formed(lib):
    rows = rules(lib)
    for vendor in (1, 2):
        seen = []
        for r in rows:
            if r.vendor in (0, vendor):
                for a, b in seen:
                    assert r.last < a or r.first > b, f"overlap at {r.first:#x}"
                seen.append((r.first, r.last))
    assert all(r.why and r.first <= r.last for r in rows)


def test_intel_pt_denied(lib):
    """PT writes its output to host-physical addresses, which EPT does not
    check: every PT MSR is #GP (PT is hidden in CPUID)."""
    for msr in [0x560, 0x561, 0x570, 0x571, 0x572] + list(range(0x580, 0x588)):
        assert rd(lib, msr, native=0x1234) is None
        assert wr(lib, msr, 0) == MSR_DO_GP
    assert wr(lib, 0xDA0, 1 << 8) == MSR_DO_GP, "XSS PT-state bit"
    assert wr(lib, 0xDA0, 1 << 0) == MSR_DO_WRITE


def test_apic_base_relocation_denied(lib):
    cur = 0xFEE00000 | (1 << 11) | (1 << 8)
    assert wr(lib, 0x1B, 0x12345000 | (1 << 11), cur) == MSR_DO_GP
    assert wr(lib, 0x1B, cur | (1 << 10), cur) == MSR_DO_WRITE, "x2APIC enable passes"
    assert wr(lib, 0x1B, cur, cur_ok=False) == MSR_DO_GP
    assert rd(lib, 0x1B, native=cur) == cur


def test_vmx_and_feature_control(lib):
    assert rd(lib, 0x3A, native=0x5) == 0x1, "locked, VMX off"
    assert rd(lib, 0x3A, native=0x0) == 0x1
    assert wr(lib, 0x3A, 0x5) == MSR_DO_GP
    for msr in range(0x480, 0x494):
        assert rd(lib, msr, native=1) is None and wr(lib, msr, 0) == MSR_DO_GP
    assert wr(lib, 0x830, 0x4500, amd=False) == MSR_DO_ICR
    assert wr(lib, 0x79, 0x1000) == MSR_DO_DROP
    assert wr(lib, 0x9B, 1) == MSR_DO_GP


def test_amd_rows(lib):
    assert rd(lib, 0xC0010114, amd=True, ok=False) == 0x18, "VM_CR locked + SVMDIS"
    assert wr(lib, 0xC0010114, 0, amd=True) == MSR_DO_GP
    assert rd(lib, 0xC0010117, amd=True) is None and wr(lib, 0xC0010117, 0, amd=True) == MSR_DO_GP
    efer = (1 << 12) | (1 << 10) | (1 << 8)
    assert rd(lib, 0xC0000080, amd=True, native=efer) == efer & ~(1 << 12)
    assert wr(lib, 0xC0000080, efer, amd=True) == MSR_DO_GP
    assert wr(lib, 0xC0000080, efer & ~(1 << 12), amd=True) == MSR_DO_WRITE
    sys = 1 << 17
    assert wr(lib, 0xC0010010, sys | (1 << 19), sys, amd=True) == MSR_DO_WRITE
    assert wr(lib, 0xC0010010, sys | (1 << 23), sys, amd=True) == MSR_DO_GP, "SMEE"
    # AMD rows do not apply on Intel: plain pass-through there.
    assert not lib.msr_policy_find(0xC0010117, False)
    assert not lib.msr_policy_find(0xC0000080, False)
    assert rd(lib, 0x10, native=7) == 7 and wr(lib, 0x10, 7) == MSR_DO_WRITE
    assert rd(lib, 0x10, ok=False) is None, "a real #GP is reflected"
