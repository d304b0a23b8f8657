"""The software VM-entry checker (efi/vmx/vmx_check.c) built for the host: a valid
state passes, and a state violating each check (SDM Vol 3C 27.2, 27.3) is named
by that check, the first failure in SDM order."""
from __future__ import annotations

import ctypes
import re
from pathlib import Path

import pytest

from hostcc import build_so

ROOT = Path(__file__).resolve().parent.parent
HEADER = ROOT / "efi/vmx/vmx_check.h"


def field_names() -> list[str]:
    text = HEADER.read_text()
    body = text[text.index("#define VMX_CHECK_FIELDS(X)"):text.index("struct vmx_check_state")]
    names = []
    for m in re.finditer(r"VMX_CHECK_SEG\(X, (\w+)\)|X\((\w+)\)", body):
        if m.group(1):
            names += [f"{m.group(1)}_{f}" for f in ("sel", "base", "limit", "ar")]
        else:
            names.append(m.group(2))
    return names


class State(ctypes.Structure):
    _fields_ = [(n, ctypes.c_uint64) for n in field_names()]


@pytest.fixture(scope="module")
def lib(tmp_path_factory):
    so = build_so(tmp_path_factory.mktemp("vmxcheck"), "vmxcheck",
                  ["efi/vmx/vmx_check.c", "efi/lib/fmt.c"])
    so.vmx_entry_check.argtypes = [ctypes.POINTER(State), ctypes.c_char_p, ctypes.c_size_t]
    return so


def caps(must1: int, may1: int) -> int:
    return (may1 << 32) | must1


def valid() -> State:
    """A 64-bit firmware guest under our controls, as vmx.c builds it on Bochs."""
    s = State()
    s.cap_pin, s.cap_proc = caps(0x16, 0x7F), caps(0x0401E172, 0xFFFFFFFF)
    s.cap_proc2, s.cap_exit = caps(0, 0x001FFFFF), caps(0x00036DFF, 0x003FFFFF)
    s.cap_entry, s.cap_misc = caps(0x000011FF, 0x0000FFFF), 0x1C0 | (4 << 16)
    s.cap_cr0_fixed0, s.cap_cr0_fixed1 = 0x80000021, 0xFFFFFFFF
    s.cap_cr4_fixed0, s.cap_cr4_fixed1 = 0x2000, 0x3767FF
    s.maxphyaddr = 40
    s.pin = 0x16 | 0x28                         # NMI exiting, virtual NMIs
    s.proc = 0x0401E172 | (1 << 25) | (1 << 28) | (1 << 31)
    s.proc2 = 0x2 | 0x20 | 0x80                 # EPT, VPID, unrestricted guest
    s.exit = 0x00036DFF | (1 << 9) | (3 << 20)
    s.entry = 0x000011FF | (1 << 9) | (1 << 15)
    s.eptp, s.vpid = 0x1234000 | (3 << 3) | 6, 1
    s.host_cr0, s.host_cr3, s.host_cr4 = 0x80010033, 0x1e000000, 0x2620
    s.host_efer, s.host_rip = 0xD00, 0x1e176000
    s.host_cs_sel, s.host_ss_sel, s.host_ds_sel, s.host_es_sel = 8, 0x10, 0x10, 0x10
    s.host_tr_sel, s.host_gs_base, s.host_gdtr_base = 0x18, 0x1e180000, 0x1e181000
    s.cr0, s.cr3, s.cr4, s.efer = 0x80010033, 0x1fc01000, 0x2668, 0xD00
    s.rip, s.rflags, s.link_pointer, s.pat = 0x1f000000, 0x246, 2**64 - 1, 0x0007040600070406
    s.gdtr_base, s.gdtr_limit, s.idtr_base, s.idtr_limit = 0x1f9ee000, 0x47, 0x1f5ee000, 0xFFF
    for seg in ("es", "ss", "ds", "fs", "gs"):
        setattr(s, f"{seg}_sel", 0x30)
        setattr(s, f"{seg}_limit", 0xFFFFFFFF)
        setattr(s, f"{seg}_ar", 0xC093)
    s.cs_sel, s.cs_limit, s.cs_ar = 0x38, 0xFFFFFFFF, 0xA09B
    s.ldtr_ar = 1 << 16
    s.tr_limit, s.tr_ar = 0x67, 0x8B
    return s


def check(lib, s: State) -> str | None:
    out = ctypes.create_string_buffer(200)
    rc = lib.vmx_entry_check(ctypes.byref(s), out, len(out))
    assert (rc == 0) == (out.value == b"")
    return out.value.decode() or None


def test_valid_state_passes(lib):
    assert check(lib, valid()) is None


def with_(**kw) -> State:
    s = valid()
    for k, v in kw.items():
        setattr(s, k, v)
    return s


V = valid()
CASES = [
    (dict(pin=V.pin & ~2), "ctls.pin: bit 1 must be 1 (allowed-0 setting)"),
    (dict(pin=V.pin | (1 << 31)), "ctls.pin: bit 31 must be 0 (allowed-1 setting)"),
    (dict(proc=V.proc & ~0x100), "ctls.proc: bit 8 must be 1 (allowed-0 setting)"),
    (dict(proc2=V.proc2 | (1 << 30)), "ctls.proc2: bit 30 must be 0 (allowed-1 setting)"),
    (dict(cr3_target_count=5), "ctls.cr3-targets: more than IA32_VMX_MISC allows"),
    (dict(pin=0x16 | 0x20), "ctls.pin: virtual NMIs without NMI exiting"),
    (dict(eptp=V.eptp & ~7 | 1), "ctls.eptp: memory type must be UC (0) or WB (6)"),
    (dict(eptp=V.eptp & ~0x38), "ctls.eptp: page-walk length must be 4 (bits 5:3 = 3)"),
    (dict(vpid=0), "ctls.vpid: VPID 0 with enable-VPID"),
    (dict(proc2=0x80), "ctls.proc2: unrestricted guest without EPT"),
    (dict(exit=V.exit & ~1), "ctls.exit: bit 0 must be 1 (allowed-0 setting)"),
    (dict(entry=V.entry | (1 << 31)), "ctls.entry: bit 31 must be 0 (allowed-1 setting)"),
    (dict(entry_intr_info=(1 << 31) | (1 << 20)), "ctls.entry-intr-info: reserved bits 30:12 set"),
    (dict(host_cr0=V.host_cr0 & ~1), "host.cr0: bit 0 must be 1 (IA32_VMX_CR0_FIXED0)"),
    (dict(host_cr4=V.host_cr4 & ~0x2000), "host.cr4: bit 13 must be 1 (IA32_VMX_CR4_FIXED0)"),
    (dict(host_cr4=V.host_cr4 & ~0x20), "host.cr4: PAE clear with host address-space size"),
    (dict(host_cr3=1 << 45), "host.cr3: bits beyond MAXPHYADDR set"),
    (dict(host_sysenter_eip=1 << 60), "host.sysenter: SYSENTER_ESP/EIP not canonical"),
    (dict(host_efer=0x100), "host.efer: LMA/LME differ from the host address-space size control"),
    (dict(host_ss_sel=0x13), "host.selectors: ss selector RPL/TI must be 0"),
    (dict(host_tr_sel=0), "host.selectors: tr selector is 0"),
    (dict(host_gdtr_base=1 << 50), "host.bases: FS/GS/TR/GDTR/IDTR base not canonical"),
    (dict(host_rip=0x0000900000000000), "host.rip: not canonical"),
    (dict(cr0=V.cr0 & ~1), "guest.cr0: PG set without PE"),
    (dict(cr0=V.cr0 & ~0x20), "guest.cr0: bit 5 must be 1 (IA32_VMX_CR0_FIXED0)"),
    (dict(cr4=V.cr4 & ~0x2000), "guest.cr4: bit 13 must be 1 (IA32_VMX_CR4_FIXED0)"),
    (dict(cr4=V.cr4 & ~0x20), "guest.cr4: PAE clear with IA-32e mode guest"),
    (dict(cr0=V.cr0 & ~(1 << 31)), "guest.cr0: cr0.PG clear with IA-32e mode guest"),
    (dict(cr3=1 << 41), "guest.cr3: bits beyond MAXPHYADDR set"),
    (dict(entry=V.entry | 4, dr7=1 << 40), "guest.dr7: bits 63:32 set"),
    (dict(sysenter_esp=1 << 63), "guest.sysenter: SYSENTER_ESP/EIP not canonical"),
    (dict(entry=V.entry | (1 << 14), pat=0x0007040600070402), "guest.pat: entry 0 has invalid type 2"),
    (dict(efer=0x100), "guest.efer: LMA differs from the IA-32e mode guest control"),
    (dict(efer=0x4000), "guest.efer: reserved bits set"),
    (dict(tr_ar=0x89), "guest.tr: type must be a busy TSS (11)"),
    (dict(tr_ar=1 << 16), "guest.tr: unusable"),
    (dict(tr_ar=0x0B), "guest.tr: tr not present"),
    (dict(ldtr_ar=0x83, ldtr_limit=0xFFFF), "guest.ldtr: usable LDTR must be TI=0, type 2, S=0"),
    (dict(cs_ar=0xA091), "guest.cs: type must be an accessed code segment"),
    (dict(cs_ar=0xE09B), "guest.cs: L and D both set in IA-32e mode"),
    (dict(cs_limit=0xFFFF0000), "guest.cs: cs limit 11:0 not all 1 with G set"),
    (dict(ss_ar=0xC09B), "guest.ss: type must be read/write data (3 or 7)"),
    (dict(ds_ar=0xC092), "guest.segments: ds type not accessed"),
    (dict(fs_base=1 << 50), "guest.segments: fs base out of range"),
    (dict(gs_ar=0xC093 | 0x100), "guest.segments: gs access rights: reserved bits set"),
    (dict(idtr_limit=0x10000), "guest.dtr: GDTR/IDTR limit bits 31:16 set"),
    (dict(rip=1 << 50), "guest.rip: not canonical in 64-bit mode"),
    (dict(rflags=0x244), "guest.rflags: reserved bits wrong (bit 1 must be 1; 3, 5, 15, 63:22 must be 0)"),
    (dict(rflags=0x20246), "guest.rflags: VM set in IA-32e mode or with CR0.PE clear"),
    (dict(activity=4), "guest.activity: state not supported (IA32_VMX_MISC)"),
    (dict(interruptibility=3), "guest.interruptibility: blocking by STI and by MOV SS both set"),
    (dict(interruptibility=1, rflags=0x46), "guest.interruptibility: blocking by STI with RFLAGS.IF clear"),
    (dict(link_pointer=0), "guest.link-pointer: must be FFFFFFFF_FFFFFFFF (no VMCS shadowing)"),
]


@pytest.mark.parametrize("change,expected", CASES, ids=[c[1].split(":")[0] + "-" + str(i)
                                                        for i, c in enumerate(CASES)])
def test_each_violation_is_named(lib, change, expected):
    assert check(lib, with_(**change)) == expected


def test_unrestricted_guest_may_run_without_paging(lib):
    """Real mode (PE=PG=0) is a legal guest with unrestricted guest (an AP at SIPI)."""
    s = with_(cr0=0x30, entry=V.entry & ~(1 << 9), efer=0, cr4=0x2000, rip=0x9000,
              cs_sel=0x9900, cs_base=0x99000, cs_limit=0xFFFF, cs_ar=0x9B)
    for seg in ("es", "ss", "ds", "fs", "gs"):
        setattr(s, f"{seg}_sel", 0)
        setattr(s, f"{seg}_limit", 0xFFFF)
        setattr(s, f"{seg}_ar", 0x93)
    assert check(lib, s) is None
    s.proc2 = 0x22                              # without unrestricted guest: not allowed
    assert check(lib, s) == "guest.cr0: bit 0 must be 1 (IA32_VMX_CR0_FIXED0)"
