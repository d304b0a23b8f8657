/*
 * vmx.c - the VT-x backend: capabilities and controls, VMXON, and a VMCS
 * built from the live processor so that after VMLAUNCH the caller simply
 * continues, now as a guest.
 */
#include "vmx.h"
#include "hv_lib.h"
#include "../core/msr_policy.h"

struct vmx_global vmx;

/* ---- controls: wanted & allowed (vmx_ctl.c) ----------------------------- */
static uint32_t ctl_compute(int group, uint32_t msr, bool *ok)
{
    const struct ctl_group *g = &vmx_ctl_groups[group];
    uint32_t missing, v = vmx_ctl_pick(rdmsr(msr), g, &missing);

    for (size_t i = 0; i < g->n; i++) {
        const struct ctl_want *w = &g->want[i];

        if (!(missing & w->bit))
            continue;
        if (w->required) {
            hv_log("HV: skip reason=missing-vmx-feature name=%s (%s: %s)\n", w->name,
                   g->name, w->why);
            *ok = false;
        } else {
            hv_log("HV: vmx %s lacks %s: %s\n", g->name, w->name, w->why);
        }
    }
    return v;
}

static int controls_compute(void)
{
    uint64_t basic = rdmsr(MSR_VMX_BASIC);
    bool t = basic & VMX_BASIC_TRUE_CTLS, ok = true;

    vmx.revision = basic & 0x7FFFFFFF;
    vmx.ins_outs_info = basic & (1ull << 54);
    vmx.pin = ctl_compute(CTL_PIN, t ? MSR_VMX_TRUE_PIN : MSR_VMX_PINBASED, &ok);
    vmx.proc = ctl_compute(CTL_PROC, t ? MSR_VMX_TRUE_PROC : MSR_VMX_PROCBASED, &ok);
    if (ok)
        vmx.proc2 = ctl_compute(CTL_PROC2, MSR_VMX_PROCBASED2, &ok);
    vmx.exit = ctl_compute(CTL_EXIT, t ? MSR_VMX_TRUE_EXIT : MSR_VMX_EXIT, &ok);
    vmx.entry = ctl_compute(CTL_ENTRY, t ? MSR_VMX_TRUE_ENTRY : MSR_VMX_ENTRY, &ok);
    vmx.preempt_timer = (rdmsr(t ? MSR_VMX_TRUE_PIN : MSR_VMX_PINBASED) >> 32) &
                        PIN_PREEMPT_TIMER;
    /* Without the TRUE capability MSRs, CR3-load/store exiting are default-1
     * (SDM Vol 3C A.2): every MOV to/from CR3 would exit, which we do not
     * emulate (PAE PDPTE loading).  Refuse, with the reason. */
    if (vmx.proc & (3u << 15)) {
        hv_log("HV: skip reason=missing-vmx-feature name=true-controls (proc: "
               "CR3-load/store exiting cannot be cleared)\n");
        ok = false;
    }
    /* NMI-window exiting needs virtual NMIs (SDM 26.2.1.1); we only toggle it. */
    if (!(vmx.pin & PIN_VIRTUAL_NMIS))
        vmx.pin &= ~PIN_NMI_EXITING;
    return ok ? 0 : -1;
}

/* VPID is only useful with INVVPID (single-context or all-context), which we
 * need after emulated CR0/CR4 writes and INIT (SDM 29.4.3.3); vmx_flush_vpid
 * uses whichever type EPT_VPID_CAP offers. */
static void vpid_check(void)
{
    uint64_t cap = vmx.ept_vpid_cap;

    if ((vmx.proc2 & PROC2_VPID) &&
        (!(cap & (1ull << 32)) || !(cap & ((1ull << 41) | (1ull << 42))))) {
        hv_log("HV: vmx vpid disabled: no usable INVVPID\n");
        vmx.proc2 &= ~PROC2_VPID;
    }
}

/* MSR bitmap (SDM 25.6.9): read-low, read-high, write-low, write-high,
 * 1 KiB each.  Exits for the rows of the MSR policy (efi/core/msr_policy.c)
 * that are not plain pass-through; MSRs outside both bitmap ranges always
 * exit and meet the same table in efi/core/exit.c. */
static void msr_bitmap_set(uint32_t msr, unsigned off)
{
    uint32_t base = msr >= 0xC0000000 ? 1024 : 0, bit = msr & 0x1FFF;

    if (msr > 0x1FFF && (msr < 0xC0000000 || msr > 0xC0001FFF))
        return;                                 /* outside the bitmap: always exits */
    vmx.msr_bitmap[off + base + bit / 8] |= 1 << (bit % 8);
}

static void msr_intercepts_from_policy(void)
{
    for (size_t i = 0; i < msr_rule_count; i++) {
        const struct msr_rule *r = &msr_rules[i];

        if (r->vendor == MSR_AMD)
            continue;
        for (uint32_t m = r->first; m <= r->last && m >= r->first; m++) {
            if (msr_rule_traps_read(r))
                msr_bitmap_set(m, 0);
            if (msr_rule_traps_write(r))
                msr_bitmap_set(m, 2048);
        }
    }
}

/* The OS started every AP: xAPIC ICR writes run natively on every CPU, and
 * the second MSR bitmap is filled: the first one less the x2APIC ICR write
 * intercept (bit 0x830 of the write bitmap for low MSRs, SDM Vol 3C 25.6.9).
 * No CPU uses it yet and the first never changes, so no bitmap changes under
 * a CPU in VMX non-root operation (25.11.4); each CPU then switches its own
 * VMCS over (vmx_icr_open). */
static void vmx_apic_unprotect(void)
{
    uint32_t bit = 0x830;

    memcpy(vmx.msr_bitmap_open, vmx.msr_bitmap, 4096);
    vmx.msr_bitmap_open[2048 + bit / 8] &= (uint8_t)~(1u << (bit % 8));
    ept_apic_unprotect();
}

static void vmx_icr_open(struct hv_cpu *c)
{
    (void)c;
    vmcs_write64(VMCS_MSR_BITMAP, (uint64_t)(uintptr_t)vmx.msr_bitmap_open);
}

/* The guest's CPUID, once, from the controls the VMCS really has. */
static int cpuid_policy_from_controls(void)
{
    struct cpuid_ctls ctls;

    vmx_cpuid_ctls(vmx.proc, vmx.proc2, vmx.exit, vmx.entry, &ctls);
    return hv_cpuid_policy_init(&ctls);
}

static int vmx_global_init(void)
{
    vmx.ept_vpid_cap = rdmsr(MSR_VMX_EPT_VPID_CAP);
    vmx.misc = rdmsr(MSR_VMX_MISC);
    if (controls_compute())
        return -1;
    vpid_check();
    vmx.cr0_fixed0 = rdmsr(MSR_VMX_CR0_FIXED0);
    vmx.cr0_fixed1 = rdmsr(MSR_VMX_CR0_FIXED1);
    vmx.cr4_fixed0 = rdmsr(MSR_VMX_CR4_FIXED0);
    vmx.cr4_fixed1 = rdmsr(MSR_VMX_CR4_FIXED1);
    /* The guest owns every CR bit VMX does not pin.  Unrestricted guest
     * frees PE and PG (SDM 26.3.1.1). */
    vmx.cr0_mask = (vmx.cr0_fixed0 | ~vmx.cr0_fixed1) & 0xFFFFFFFFull & ~(CR0_PE | CR0_PG);
    vmx.cr4_mask = (vmx.cr4_fixed0 | ~vmx.cr4_fixed1) & 0xFFFFFFFFull;
    vmx.msr_bitmap = hv_alloc(1);
    if (!vmx.msr_bitmap)
        return -1;
    msr_intercepts_from_policy();
    vmx.msr_bitmap_open = hv_alloc(1);
    if (!vmx.msr_bitmap_open || cpuid_policy_from_controls())
        return -1;
    /* I/O bitmaps A (0-0x7FFF) and B (SDM 25.6.4): only PM1a_CNT exits. */
    vmx.io_bitmap = hv_alloc(2);
    if (!vmx.io_bitmap)
        return -1;
    /* PM1a_CNT is 16 bits wide: both ports, so a byte write of SLP_EN is seen. */
    for (uint32_t p = hv_pm1a_cnt_port; hv_pm1a_cnt_port && p <= hv_pm1a_cnt_port + 1u &&
                                        p <= 0xFFFF && (vmx.proc & PROC_IO_BITMAPS); p++)
        vmx.io_bitmap[p / 8] |= 1 << (p % 8);
    if (hv_cpu_total > 1 && (!(vmx.pin & PIN_NMI_EXITING) || !(vmx.misc & (1u << 6)))) {
        hv_log("HV: skip reason=missing-vmx-feature name=nmi-exiting/hlt-activity "
               "(INIT/SIPI emulation wakes APs with NMIs)\n");
        return -1;
    }
    return ept_build(&vmx.eptp);
}

/* ---- per CPU: enable VMX ---------------------------------------------------- */
/* IA32_FEATURE_CONTROL (SDM Vol 3C 24.7): lock it with VMX outside SMX on
 * when the firmware left it open; refuse when it is locked with VMX off. */
static int feature_control_enable(void)
{
    uint64_t fc = rdmsr(MSR_FEATURE_CONTROL);

    if (!(fc & FC_LOCK)) {
        wrmsr(MSR_FEATURE_CONTROL, fc | FC_LOCK | FC_VMX_OUTSIDE_SMX);
        return 0;
    }
    if (!(fc & FC_VMX_OUTSIDE_SMX)) {
        hv_log("HV: skip reason=vmx-disabled-by-firmware\n");
        return -1;
    }
    return 0;
}

/* CR0/CR4 bits fixed in VMX operation (SDM Vol 3C 24.8, App. A.7/A.8). */
static void apply_fixed_crs(struct vmx_cpu *v)
{
    v->orig_cr0 = read_cr0();
    v->orig_cr4 = read_cr4();
    write_cr0((v->orig_cr0 | vmx.cr0_fixed0) & vmx.cr0_fixed1);
    write_cr4((v->orig_cr4 | vmx.cr4_fixed0) & vmx.cr4_fixed1);
}

static void restore_crs(struct vmx_cpu *v)
{
    write_cr4(v->orig_cr4);
    write_cr0(v->orig_cr0);
}

/* ---- VMCS: controls --------------------------------------------------------- */
static int write_controls(struct hv_cpu *c, struct vmx_cpu *v)
{
    int e = 0;

    e |= vmcs_write32(VMCS_PIN_CTLS, vmx.pin);
    e |= vmcs_write32(VMCS_PROC_CTLS, vmx.proc);
    e |= vmcs_write32(VMCS_PROC_CTLS2, vmx.proc2);
    e |= vmcs_write32(VMCS_EXIT_CTLS, vmx.exit);
    e |= vmcs_write32(VMCS_ENTRY_CTLS, vmx.entry);
    e |= vmcs_write32(VMCS_EXCEPTION_BITMAP, 0);
    e |= vmcs_write32(VMCS_CR3_TARGET_COUNT, 0);
    e |= vmcs_write32(VMCS_EXIT_MSR_STORE_COUNT, 0);
    e |= vmcs_write32(VMCS_EXIT_MSR_LOAD_COUNT, 0);
    e |= vmcs_write32(VMCS_ENTRY_MSR_LOAD_COUNT, 0);
    e |= vmcs_write32(VMCS_ENTRY_INTR_INFO, 0);
    e |= vmcs_write64(VMCS_MSR_BITMAP, (uint64_t)(uintptr_t)vmx.msr_bitmap);
    if (vmx.proc & PROC_IO_BITMAPS) {
        e |= vmcs_write64(VMCS_IO_BITMAP_A, (uint64_t)(uintptr_t)vmx.io_bitmap);
        e |= vmcs_write64(VMCS_IO_BITMAP_B, (uint64_t)(uintptr_t)vmx.io_bitmap + 4096);
    }
    e |= vmcs_write64(VMCS_EPT_POINTER, vmx.eptp);
    if (vmx.proc2 & PROC2_VPID)
        e |= vmcs_write16(VMCS_VPID, 1);
    if (vmx.proc2 & PROC2_XSAVES)
        e |= vmcs_write64(VMCS_XSS_EXIT_BITMAP, 0);     /* no XSS bit exits */
    /* CR4.VMXE and the other pinned bits read as the guest last wrote them. */
    e |= vmcs_writenat(VMCS_CR0_MASK, vmx.cr0_mask);
    e |= vmcs_writenat(VMCS_CR4_MASK, vmx.cr4_mask);
    e |= vmcs_writenat(VMCS_CR0_SHADOW, v->orig_cr0);
    e |= vmcs_writenat(VMCS_CR4_SHADOW, v->orig_cr4);
    (void)c;
    return e;
}

/* ---- VMCS: host state (SDM Vol 3C 25.5, checks 27.2.2/27.2.3) ------------- */
#define HOST_CR0_BITS 0x80010033ull   /* PG WP NE ET MP PE */
#define HOST_CR4_BITS 0x660ull        /* OSXMMEXCPT OSFXSR MCE PAE: a machine check
                                       * in the host is reported, not a shutdown */

static int write_host_state(struct hv_cpu *c)
{
    uint64_t cr4 = HOST_CR4_BITS | CR4_VMXE, e = 0;

    if (cpuid2(1, 0).ecx & (1u << 26))
        cr4 |= CR4_OSXSAVE;                  /* the host emulates XSETBV */
    e |= vmcs_writenat(VMCS_HOST_CR0, (HOST_CR0_BITS | vmx.cr0_fixed0) & vmx.cr0_fixed1);
    e |= vmcs_writenat(VMCS_HOST_CR3, host_cr3());
    e |= vmcs_writenat(VMCS_HOST_CR4, (cr4 | vmx.cr4_fixed0) & vmx.cr4_fixed1);
    e |= vmcs_write16(VMCS_HOST_CS_SEL, HOST_CS);
    e |= vmcs_write16(VMCS_HOST_SS_SEL, HOST_DS);
    e |= vmcs_write16(VMCS_HOST_DS_SEL, HOST_DS);
    e |= vmcs_write16(VMCS_HOST_ES_SEL, HOST_DS);
    e |= vmcs_write16(VMCS_HOST_FS_SEL, 0);
    e |= vmcs_write16(VMCS_HOST_GS_SEL, 0);
    e |= vmcs_write16(VMCS_HOST_TR_SEL, HOST_TR);
    e |= vmcs_writenat(VMCS_HOST_FS_BASE, 0);
    e |= vmcs_writenat(VMCS_HOST_GS_BASE, (uint64_t)(uintptr_t)c);   /* this_cpu() */
    e |= vmcs_writenat(VMCS_HOST_TR_BASE, host_tss_base(c));
    e |= vmcs_writenat(VMCS_HOST_GDTR_BASE, (uint64_t)(uintptr_t)c->gdt);
    e |= vmcs_writenat(VMCS_HOST_IDTR_BASE, host_idt_base());
    e |= vmcs_write32(VMCS_HOST_SYSENTER_CS, 0);
    e |= vmcs_writenat(VMCS_HOST_SYSENTER_ESP, 0);
    e |= vmcs_writenat(VMCS_HOST_SYSENTER_EIP, 0);
    if (vmx.exit & EXIT_LOAD_PAT)                  /* the field exists only with it */
        e |= vmcs_write64(VMCS_HOST_PAT, 0x0007040600070406ull);     /* reset PAT */
    e |= vmcs_write64(VMCS_HOST_EFER, rdmsr(MSR_EFER));
    e |= vmcs_writenat(VMCS_HOST_RSP, (uint64_t)(uintptr_t)c->stack_top);
    e |= vmcs_writenat(VMCS_HOST_RIP, (uint64_t)(uintptr_t)vmx_exit_entry);
    return e ? -1 : 0;
}

/* ---- VMCS: guest state from the live processor (SDM Vol 3C 25.4) ---------- */
struct seg {
    uint16_t sel;
    uint64_t base;
    uint32_t limit, ar;
};

#define AR_UNUSABLE (1u << 16)

/* Decodes a GDT/LDT descriptor into VMCS form: access rights are descriptor
 * bits 47:40 and 55:52 (SDM 25.4.1, Table 25-2). */
static struct seg seg_decode(uint16_t sel, uint64_t table, uint32_t table_limit)
{
    struct seg s = {sel, 0, 0, AR_UNUSABLE};
    const uint8_t *p = (const uint8_t *)(uintptr_t)table + (sel & ~7u);
    uint64_t d;

    if ((sel & ~3u) == 0 || (sel | 7u) > table_limit)
        return s;
    d = *(const uint64_t *)p;
    s.base = ((d >> 16) & 0xFFFFFF) | ((d >> 32) & 0xFF000000);
    s.limit = (d & 0xFFFF) | ((d >> 32) & 0xF0000);
    if (d & (1ull << 55))
        s.limit = (s.limit << 12) | 0xFFF;
    s.ar = ((d >> 40) & 0xFF) | ((d >> 40) & 0xF000);
    if (!(d & (1ull << 44)))
        s.base |= (uint64_t)*(const uint32_t *)(p + 8) << 32;   /* 16-byte system desc */
    else
        s.ar |= 1;     /* accessed: the CPU set it when it loaded the register */
    return s;
}

#define READ_SEL(insn) ({ uint16_t _v; __asm__ volatile(insn " %0" : "=r"(_v)); _v; })

static int write_seg(enum vmx_seg i, struct seg s)
{
    return vmcs_write16(VMCS_GUEST_SEL(i), s.sel) | vmcs_write32(VMCS_GUEST_LIMIT(i), s.limit) |
           vmcs_write32(VMCS_GUEST_AR(i), s.ar) | vmcs_writenat(VMCS_GUEST_BASE(i), s.base);
}

static int write_guest_segments(void)
{
    struct desc_ptr gdt = read_gdtr();
    struct seg ldt = seg_decode(READ_SEL("sldt"), gdt.base, gdt.limit);
    struct seg tr = seg_decode(READ_SEL("str"), gdt.base, gdt.limit);
    uint64_t lb = ldt.ar & AR_UNUSABLE ? 0 : ldt.base;
    uint32_t ll = ldt.ar & AR_UNUSABLE ? 0 : ldt.limit;
    uint16_t sels[6] = {READ_SEL("mov %%es,"), READ_SEL("mov %%cs,"), READ_SEL("mov %%ss,"),
                        READ_SEL("mov %%ds,"), READ_SEL("mov %%fs,"), READ_SEL("mov %%gs,")};
    int e = 0;

    for (int i = SEG_ES; i <= SEG_GS; i++) {
        struct seg s = (sels[i] & 4) ? seg_decode(sels[i], lb, ll)
                                     : seg_decode(sels[i], gdt.base, gdt.limit);
        if (i == SEG_FS || i == SEG_GS)
            s.base = rdmsr(i == SEG_FS ? MSR_FS_BASE : MSR_GS_BASE);
        e |= write_seg((enum vmx_seg)i, s);
    }
    /* SDM 26.3.1.2: TR must be a usable busy TSS.  UEFI firmware often runs
     * with TR = 0; give the guest an equivalent busy 64-bit TSS at 0. */
    if (tr.ar & AR_UNUSABLE)
        tr = (struct seg){0, 0, 0x67, 0x8B};
    tr.ar = (tr.ar & ~0xFu) | 0xB;
    e |= write_seg(SEG_LDTR, ldt);
    e |= write_seg(SEG_TR, tr);
    e |= vmcs_write32(VMCS_GUEST_GDTR_LIMIT, gdt.limit);
    e |= vmcs_writenat(VMCS_GUEST_GDTR_BASE, gdt.base);
    gdt = read_idtr();
    e |= vmcs_write32(VMCS_GUEST_IDTR_LIMIT, gdt.limit);
    e |= vmcs_writenat(VMCS_GUEST_IDTR_BASE, gdt.base);
    return e;
}

/* RSP, RIP and RFLAGS are written by vmx_launch itself. */
static int write_guest_state(void)
{
    int e = write_guest_segments();

    e |= vmcs_writenat(VMCS_GUEST_CR0, read_cr0());
    e |= vmcs_writenat(VMCS_GUEST_CR3, read_cr3());
    e |= vmcs_writenat(VMCS_GUEST_CR4, read_cr4());
    e |= vmcs_writenat(VMCS_GUEST_DR7, read_dr7());
    e |= vmcs_write64(VMCS_GUEST_DEBUGCTL, rdmsr(MSR_DEBUGCTL));
    if (vmx.entry & ENTRY_LOAD_PAT || vmx.exit & EXIT_SAVE_PAT)
        e |= vmcs_write64(VMCS_GUEST_PAT, rdmsr(MSR_PAT));
    e |= vmcs_write64(VMCS_GUEST_EFER, rdmsr(MSR_EFER));
    e |= vmcs_write32(VMCS_GUEST_SYSENTER_CS, (uint32_t)rdmsr(MSR_SYSENTER_CS));
    e |= vmcs_writenat(VMCS_GUEST_SYSENTER_ESP, rdmsr(MSR_SYSENTER_ESP));
    e |= vmcs_writenat(VMCS_GUEST_SYSENTER_EIP, rdmsr(MSR_SYSENTER_EIP));
    e |= vmcs_write64(VMCS_LINK_POINTER, ~0ull);
    e |= vmcs_write32(VMCS_GUEST_INTERRUPTIBILITY, 0);
    e |= vmcs_write32(VMCS_GUEST_ACTIVITY, ACTIVITY_ACTIVE);
    e |= vmcs_writenat(VMCS_GUEST_PENDING_DBG, 0);
    return e;
}

/* ---- per-CPU entry points --------------------------------------------------- */
static int vmx_cpu_prepare(struct hv_cpu *c)
{
    struct vmx_cpu *v = c->backend = c->backend ? c->backend : hv_alloc(1);

    if (!v || feature_control_enable())
        return -1;
    hv_smp_cpu_init(c);
    v->vmxon = v->vmxon ? v->vmxon : hv_alloc(1);
    v->vmcs = v->vmcs ? v->vmcs : hv_alloc(1);
    if (!v->vmxon || !v->vmcs)
        return -1;
    *(uint32_t *)v->vmxon = vmx.revision;       /* SDM 25.11.5 */
    *(uint32_t *)v->vmcs = vmx.revision;
    apply_fixed_crs(v);
    if (vmx_check(vmx_on((uint64_t)(uintptr_t)v->vmxon), "vmxon")) {
        restore_crs(v);
        return -1;
    }
    if (vmx_check(vmx_clear((uint64_t)(uintptr_t)v->vmcs), "vmclear") ||
        vmx_check(vmx_ptrld((uint64_t)(uintptr_t)v->vmcs), "vmptrld") ||
        write_controls(c, v) || write_host_state(c) || write_guest_state()) {
        vmx_off();
        restore_crs(v);
        return -1;
    }
    /* No stale guest-physical or VPID-tagged translations from a previous
     * VMX user (firmware, an earlier run) may survive into ours (SDM 29.4.3). */
    ept_flush(c);
    vmx_flush_vpid();
    if (vmx.preempt_timer && (vmx.pin & PIN_NMI_EXITING))
        c->nmi_kick = vmx_nmi_kick;
    vmx_force_before_launch(c);                 /* debug-fail= only (vmx_report.c) */
    vmx_entry_check_report(c, false);           /* names a check the launch would fail */
    c->guest = true;           /* from VMLAUNCH on; a failed launch fails the start */
    return 0;
}

static void vmx_launch_failed(struct hv_cpu *c, int rc)
{
    c->nmi_kick = NULL;
    c->guest = false;          /* hv_devirt_all must not wait for (or NMI) it */
    vmx_check((enum vmx_result)rc, "vmlaunch");
    if (rc == VMX_FAIL_VALID)
        vmx_entry_check_report(c, true);
    vmx_off();
    restore_crs(vmx_of(c));
}

const struct hv_backend_ops vmx_ops = {
    .name = "vmx",
    .gpa_map = "ept",
    .global_init = vmx_global_init,
    .cpu_prepare = vmx_cpu_prepare,
    .launch = vmx_launch,
    .launch_failed = vmx_launch_failed,
    .skip_insn = vmx_skip_insn,
    .inject_exception = vmx_inject_exception,
    .guest_cpl = vmx_guest_cpl,
    .guest_rip = vmx_guest_rip,
    .guest_cr4 = vmx_guest_cr4,
    .dump_guest = vmx_dump_guest,
    .devirtualize = vmx_devirtualize,
    .park_init = vmx_park_init,
    .start_sipi = vmx_start_sipi,
    .can_leave_now = vmx_can_leave_now,
    .leave_parked = vmx_leave_parked,
    .apic_unprotect = vmx_apic_unprotect,
    .icr_open = vmx_icr_open,
    .flush_ept = ept_flush,
    .guest_paging = vmx_guest_paging,
    .guest_rflags = vmx_guest_rflags,
    .gpa_is_ram = ept_gpa_is_ram,
};
