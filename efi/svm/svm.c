/*
 * svm.c - the AMD-V backend: enabling SVM (APM Vol 2 15.4), the nested
 * page tables, the permission maps, and a VMCB built from the live
 * processor so that after the first VMRUN the caller simply continues,
 * now as a guest.
 *
 * Where the host runs.  After #VMEXIT the processor is back on the host
 * state that VMRUN saved in VM_HSAVE_PA: the hypervisor's own GDT, TSS,
 * IDT, page tables and stack (efi/core/host.c; svm_host_start loads them
 * once), with GIF = 0 and RFLAGS.IF = 0.  GIF = 0 holds every interrupt,
 * NMI, SMI and INIT pending while the host handles an exit (APM 15.17).
 * NMIs are intercepted: one that arrives in the guest exits and stays
 * pending, and the exit handler takes it on the host's IDT (IST1) with a
 * short STGI/CLGI window (svm_exit.c), as VT-x takes it at its IRET.
 */
#include "svm.h"
#include "hv_lib.h"
#include "hv_cfg.h"
#include "../core/gpmap.h"
#include "../core/mtrr.h"
#include "../core/msr_policy.h"

struct svm_global svm;

/* ---- capabilities (CPUID Fn8000_000A, APM Vol 3 E.4.9) ---------------------- */
struct svm_want {
    uint32_t bit;
    bool required;
    const char *name;
    const char *why;
};

static const struct svm_want svm_wants[] = {
    {SVM_F_NPT, true, "npt", "hide hypervisor memory; guest paging stays native"},
    {SVM_F_NRIPS, false, "nrips", "next RIP from the CPU (else decoded from guest bytes)"},
    {SVM_F_FLUSH_ASID, false, "flush-by-asid", "flush only the guest's TLB entries"},
    {SVM_F_DECODE, false, "decode-assists", "not used"},
    {SVM_F_CLEAN, false, "vmcb-clean", "not used: every VMRUN reloads the whole VMCB"},
};

static int svm_caps(void)
{
    struct cpuid_regs r = cpuid2(0x8000000A, 0);
    bool ok = true;

    svm.features = r.edx;
    svm.nasid = r.ebx;
    for (size_t i = 0; i < sizeof(svm_wants) / sizeof(svm_wants[0]); i++) {
        const struct svm_want *w = &svm_wants[i];

        if (svm.features & w->bit)
            continue;
        if (w->required) {
            hv_log("HV: skip reason=missing-svm-feature name=%s (%s)\n", w->name, w->why);
            ok = false;
        } else {
            hv_log("HV: svm lacks %s: %s\n", w->name, w->why);
        }
    }
    if (svm.nasid <= SVM_ASID) {
        hv_log("HV: skip reason=missing-svm-feature name=asid (asids=%u)\n", svm.nasid);
        ok = false;
    }
    hv_log("HV: svm rev=%u asids=%u npt=%u nrips=%u flush-by-asid=%u decode-assists=%u\n",
           r.eax & 0xFF, svm.nasid, !!(svm.features & SVM_F_NPT),
           !!(svm.features & SVM_F_NRIPS), !!(svm.features & SVM_F_FLUSH_ASID),
           !!(svm.features & SVM_F_DECODE));
    return ok ? 0 : -1;
}

/* ---- nested page tables (APM 15.25) ------------------------------------------ */
/* Nested entries are long-mode page-table entries; the walk is a user access,
 * so US is set everywhere (APM 15.25.5).  The memory type of a leaf is
 * chosen through the host PAT (PWT/PCD/PAT bits); the MTRRs apply on top
 * (APM 15.25.8), so a type the PAT lacks falls back to WB, which leaves the
 * MTRR type. */
#define NPT_P    1ull
#define NPT_RW   2ull
#define NPT_US   4ull
#define NPT_PS   0x80ull

static uint8_t pat_index_of[8];           /* memory type -> host PAT index */

static void pat_indices(void)
{
    uint64_t pat = rdmsr(MSR_PAT);

    for (int t = 0; t < 8; t++)
        pat_index_of[t] = 0xFF;
    for (int i = 7; i >= 0; i--)
        pat_index_of[(pat >> (8 * i)) & 7] = (uint8_t)i;
    if (pat_index_of[MT_WB] == 0xFF)
        pat_index_of[MT_WB] = 0;           /* no WB entry: PAT 0, whatever it is */
}

static uint64_t npt_leaf(uint64_t pa, int level, int mt)
{
    unsigned i = pat_index_of[mt & 7] != 0xFF ? pat_index_of[mt & 7] : pat_index_of[MT_WB];
    uint64_t e = pa | NPT_P | NPT_RW | NPT_US | ((i & 3ull) << 3);

    if (level == 1)
        return e | ((i & 4ull) << 5);     /* PAT: bit 7 */
    return e | NPT_PS | ((i & 4ull) << 10);   /* PAT: bit 12 in large leaves */
}

/* The memory type a leaf selects: its PAT index into the host PAT. */
static int npt_leaf_type(uint64_t e, int level)
{
    unsigned i = ((e >> 3) & 3) | (level == 1 ? (e >> 5) & 4 : (e >> 10) & 4);

    return (rdmsr(MSR_PAT) >> (8 * i)) & 7;
}

static struct gpmap_fmt npt_fmt = {
    .table = NPT_P | NPT_RW | NPT_US,
    .write = NPT_RW,
    .ram = NPT_P | NPT_RW,
    .leaf = npt_leaf,
    .leaf_type = npt_leaf_type,
};

int svm_npt_build(void)
{
    unsigned maxphy = cpuid2(0x80000008, 0).eax & 0xFF;
    struct gpmap_result r;

    npt_fmt.leaf_ok[1] = npt_fmt.leaf_ok[2] = true;
    npt_fmt.leaf_ok[3] = (cpuid2(0x80000001, 0).edx & (1u << 26)) != 0;
    pat_indices();
    if (gpmap_build(&npt_fmt, maxphy, &r))
        return -1;
    svm.n_cr3 = (uint64_t)(uintptr_t)r.root;
    svm.apic_pte = r.apic_pte;
    hv_log("HV: npt maxphyaddr=%u pages=%s npt-bytes=%zu\n", maxphy,
           npt_fmt.leaf_ok[3] ? "1g" : "2m", r.bytes);
    return 0;
}

/* Ordinary guest RAM in the nested view (hypercall buffers, string I/O). */
bool svm_gpa_is_ram(uint64_t gpa, uint64_t len)
{
    return gpmap_is_ram(&npt_fmt, (const uint64_t *)(uintptr_t)svm.n_cr3, gpa, len);
}

/* TLB_CONTROL for the next VMRUN on this CPU (APM 15.16.1): the guest's ASID
 * where the CPU can, else everything. */
void svm_flush(struct hv_cpu *c)
{
    vmcb_of(c ? c : this_cpu())->ctl.tlb_control =
        (svm.features & SVM_F_FLUSH_ASID) ? TLB_FLUSH_ASID : TLB_FLUSH_ALL;
}

/* Makes the xAPIC page writable again.  Only this CPU is flushed: another
 * CPU with the read-only translation cached takes one more nested fault,
 * which flushes it (svm_exit.c). */
void svm_apic_unprotect(void)
{
    /* The second MSRPM: the first less the ICR write bit (MSR 0x830, bit 1
     * of its pair, APM 15.11); no CPU uses it before svm_icr_open. */
    memcpy(svm.msrpm_open, svm.msrpm, 8192);
    svm.msrpm_open[0x830 * 2 / 8] &= (uint8_t)~(2u << (0x830 * 2 % 8));
    if (svm.apic_pte)
        __atomic_or_fetch(svm.apic_pte, NPT_RW, __ATOMIC_SEQ_CST);
    svm_flush(NULL);
}

/* Read-only again (before S3, smp.c); the CPUs are flushed on resume. */
void svm_apic_protect(void)
{
    if (svm.apic_pte)
        __atomic_and_fetch(svm.apic_pte, ~NPT_RW, __ATOMIC_SEQ_CST);
    svm_flush(NULL);
}

/* The OS started every AP: this CPU's WRMSR to the x2APIC ICR runs
 * natively too.  Its own VMCB, from its own exit; every VMRUN reloads the
 * VMCB (no clean bits), so the new MSRPM_BASE_PA takes effect at once. */
void svm_icr_open(struct hv_cpu *c)
{
    vmcb_of(c)->ctl.msrpm_pa = (uint64_t)(uintptr_t)svm.msrpm_open;
}

/* ---- permission maps ---------------------------------------------------------- */
/* MSRPM (APM 15.11): 2 bits per MSR (read, write) in three 2 KiB ranges;
 * an MSR outside them always exits. */
static void msr_intercept(uint32_t msr, bool rd, bool wr)
{
    uint32_t base = msr >= 0xC0010000 ? 0x1000 : msr >= 0xC0000000 ? 0x800 : 0;
    uint32_t bit = (msr & 0x1FFF) * 2;

    if ((msr & ~0x1FFFu) != 0 && (msr & ~0x1FFFu) != 0xC0000000 &&
        (msr & ~0x1FFFu) != 0xC0010000)
        return;
    if (rd)
        svm.msrpm[base + bit / 8] |= 1 << (bit % 8);
    if (wr)
        svm.msrpm[base + bit / 8] |= 2 << (bit % 8);
}

/* Exits for the rows of the MSR policy (efi/core/msr_policy.c) that are
 * not plain pass-through: EFER (SVME reads 0; svm_exit.c), VM_CR,
 * VM_HSAVE_PA, the x2APIC ICR, IA32_APIC_BASE relocation, SYSCFG, the
 * IORRs, TOP_MEM, the SMM ranges, the VMX MSRs. */
static int permission_maps(void)
{
    svm.msrpm = hv_alloc(2);
    svm.iopm = hv_alloc(3);
    if (!svm.msrpm || !svm.iopm)
        return -1;
    for (size_t i = 0; i < msr_rule_count; i++) {
        const struct msr_rule *r = &msr_rules[i];

        if (r->vendor == MSR_INTEL)
            continue;
        for (uint32_t m = r->first; m <= r->last && m >= r->first; m++)
            msr_intercept(m, msr_rule_traps_read(r), msr_rule_traps_write(r));
    }
    svm.msrpm_open = hv_alloc(2);               /* filled by svm_apic_unprotect */
    if (!svm.msrpm_open)
        return -1;
    /* IOPM (APM 15.10.1): one bit per port; only PM1a_CNT exits. */
    if (hv_pm1a_cnt_port)
        svm.iopm[hv_pm1a_cnt_port / 8] |= 1 << (hv_pm1a_cnt_port % 8);
    return 0;
}

static int svm_global_init(void)
{
    if (svm_caps() || permission_maps())
        return -1;
    return svm_npt_build();
}

/* ---- the VMCB: controls ---------------------------------------------------------- */
static void write_controls(struct vmcb *v)
{
    /* SMIs are intercepted so that SMM runs in the host's context, as the
     * firmware's SMM code expects (svm_exit.c, exit_smi). */
    v->ctl.icpt3 = ICPT_NMI | ICPT_SMI | ICPT_CPUID | ICPT_INVD | ICPT_INVLPGA | ICPT_IOIO |
                   ICPT_MSR | ICPT_SHUTDOWN;
    /* VMRUN must be intercepted (APM 15.5.1); the rest hide SVM (#UD). */
    v->ctl.icpt4 = ICPT_VMRUN | ICPT_VMMCALL | ICPT_VMLOAD | ICPT_VMSAVE | ICPT_STGI |
                   ICPT_CLGI | ICPT_SKINIT;
    v->ctl.iopm_pa = (uint64_t)(uintptr_t)svm.iopm;
    v->ctl.msrpm_pa = (uint64_t)(uintptr_t)svm.msrpm;
    v->ctl.asid = SVM_ASID;
    v->ctl.tlb_control = TLB_FLUSH_ALL;         /* first run: nothing stale */
    v->ctl.np_enable = 1;
    v->ctl.n_cr3 = svm.n_cr3;
}

/* ---- the VMCB: guest state from the live processor (APM 15.5.1) ------------- */
/* A GDT/LDT descriptor in VMCB form: attributes are descriptor bits 47:40
 * and 55:52 (APM Table B-2). */
static struct vmcb_seg seg_decode(uint16_t sel, uint64_t table, uint32_t table_limit)
{
    struct vmcb_seg s = {sel, 0, 0, 0};
    uint64_t d;

    if ((sel & ~3u) == 0 || (sel | 7u) > table_limit)
        return s;
    d = *(const uint64_t *)(uintptr_t)(table + (sel & ~7u));
    s.base = ((d >> 16) & 0xFFFFFF) | ((d >> 32) & 0xFF000000);
    s.limit = (d & 0xFFFF) | ((d >> 32) & 0xF0000);
    if (d & (1ull << 55))
        s.limit = (s.limit << 12) | 0xFFF;
    s.attrib = ((d >> 40) & 0xFF) | ((d >> 44) & 0xF00);
    return s;
}

#define READ_SEL(insn) ({ uint16_t _v; __asm__ volatile(insn " %0" : "=r"(_v)); _v; })

/* ES, CS, SS, DS and the descriptor tables.  FS, GS, TR, LDTR with their
 * hidden parts, KERNEL_GS_BASE, STAR/LSTAR/CSTAR/SFMASK and SYSENTER are
 * VMSAVE's: svm_cpu_prepare stores them straight from the processor. */
static void write_guest_state(struct vmcb *v)
{
    struct desc_ptr gdt = read_gdtr(), idt = read_idtr();
    uint16_t ldtr = READ_SEL("sldt");
    struct vmcb_seg ldt = seg_decode(ldtr, gdt.base, gdt.limit);
    struct vmcb_seg *segs[4] = {&v->save.es, &v->save.cs, &v->save.ss, &v->save.ds};
    uint16_t sels[4] = {READ_SEL("mov %%es,"), READ_SEL("mov %%cs,"), READ_SEL("mov %%ss,"),
                        READ_SEL("mov %%ds,")};

    for (int i = 0; i < 4; i++)
        *segs[i] = (sels[i] & 4) ? seg_decode(sels[i], ldt.base, ldt.limit)
                                 : seg_decode(sels[i], gdt.base, gdt.limit);
    v->save.gdtr = (struct vmcb_seg){0, 0, gdt.limit, gdt.base};
    v->save.idtr = (struct vmcb_seg){0, 0, idt.limit, idt.base};
    v->save.cpl = v->save.cs.sel & 3;
    v->save.efer = rdmsr(MSR_EFER);            /* SVME set: VMRUN requires it */
    v->save.cr0 = read_cr0();
    v->save.cr3 = read_cr3();
    v->save.cr4 = read_cr4();
    __asm__ volatile("mov %%cr2, %0" : "=r"(v->save.cr2));
    v->save.dr7 = read_dr7();
    __asm__ volatile("mov %%dr6, %0" : "=r"(v->save.dr6));
    v->save.g_pat = rdmsr(MSR_PAT);
    /* RSP, RIP and RFLAGS: svm_launch. */
}

/* ---- per-CPU entry points ------------------------------------------------------- */
/* APM 15.4: EFER.SVME on, then a host save area of our own (the page before
 * struct svm_cpu's); the host TSS made available for svm_host_start's LTR.
 * At prepare, and again after S3 reset both. */
static void svm_enable(struct hv_cpu *c, struct svm_cpu *s)
{
    uint8_t *pages = (uint8_t *)s - SVM_PAGE_CPU * 4096;

    ((uint64_t *)c->gdt)[3] &= ~(1ull << 41);
    wrmsr(MSR_EFER, rdmsr(MSR_EFER) | EFER_SVME);
    wrmsr(MSR_VM_HSAVE_PA, (uint64_t)(uintptr_t)(pages + SVM_PAGE_HSAVE * 4096));
}

static int svm_cpu_prepare(struct hv_cpu *c)
{
    uint8_t *pages = c->backend ? (uint8_t *)c->backend - SVM_PAGE_CPU * 4096
                                : hv_alloc(SVM_PAGES);
    struct svm_cpu *s;
    struct vmcb *v;

    if (!pages)
        return -1;
    s = (struct svm_cpu *)(pages + SVM_PAGE_CPU * 4096);
    v = (struct vmcb *)(pages + SVM_PAGE_VMCB * 4096);
    c->backend = s;
    hv_smp_cpu_init(c);
    s->vmcb = v;
    s->vmcb_pa = (uint64_t)(uintptr_t)v;
    s->host_vmcb_pa = (uint64_t)(uintptr_t)(pages + SVM_PAGE_HOST * 4096);
    s->host_rsp = (uint64_t)(uintptr_t)c->stack_top;
    s->host_cr3 = host_cr3();
    s->host_entry = (void *)svm_host_start;       /* this code runs in the copy */
    s->cpu = c;
    s->gdt_limit = 0x27;                          /* null, code, data, TSS (16 bytes) */
    s->gdt_base = (uint64_t)(uintptr_t)c->gdt;
    s->idt_limit = 0xFFF;
    s->idt_base = host_idt_base();
    s->orig_efer = rdmsr(MSR_EFER);
    svm_enable(c, s);
    memset(v, 0, sizeof(*v));
    write_controls(v);
    write_guest_state(v);
    svm_vmsave(s->vmcb_pa);                       /* FS/GS/TR/LDTR/... as they are */
    if (hv_force(HV_FORCE_VMCB_EFER)) {           /* debug-fail=: VMRUN must refuse it */
        hv_log("HV: debug-fail corrupts vmcb efer: SVME cleared\n");
        v->save.efer &= ~EFER_SVME;
    }
    s->launched = false;
    s->launch_state = v->save;
    s->launch_state.efer |= EFER_SVME;
    c->guest = true;           /* from VMRUN on; a refused VMRUN fails the start */
    return 0;
}

/* Back from S3 (s3.c): the CPU came out of reset, so SVM is enabled
 * again as at prepare (APM 15.4) on the same pages; the control area is as
 * it was, the guest starts in real mode at cs:ip, CR0 as the firmware hands
 * over a waking vector (caches on) or as INIT leaves it for a start-up IPI. */
static __attribute__((noreturn)) void svm_s3_resume(struct hv_cpu *c, uint16_t cs,
                                                    uint16_t ip, bool wake)
{
    struct svm_cpu *s = svm_of(c);
    struct vmcb *v = s->vmcb;

    svm_enable(c, s);
    svm_init_state(v);
    v->save.cs = (struct vmcb_seg){cs, 0x9B, 0xFFFF, (uint64_t)cs << 4};
    v->save.rip = ip;
    if (wake)
        v->save.cr0 = 0x10;                       /* ET: caches on */
    svm_init_events(c, v);
    v->ctl.msrpm_pa = (uint64_t)(uintptr_t)svm.msrpm;   /* the ICR intercepted again */
    v->ctl.clean = 0;
    s->launched = true;                           /* a refused VMRUN is our bug now */
    svm_flush(c);
    svm_s3_enter(s);
}

/* The first VMRUN was refused (VMEXIT_INVALID, svm_exit.c): the CPU is back
 * in its own state at svm_launch's failure return; leave SVM. */
static void svm_launch_failed(struct hv_cpu *c, int rc)
{
    struct svm_cpu *s = svm_of(c);

    hv_log("HV: svm cpu=%u launch failed rc=%d\n", c->index, rc);
    c->guest = false;
    wrmsr(MSR_VM_HSAVE_PA, 0);
    wrmsr(MSR_EFER, s->orig_efer);
}

const struct hv_backend_ops svm_ops = {
    .name = "svm",
    .gpa_map = "npt",
    .global_init = svm_global_init,
    .cpu_prepare = svm_cpu_prepare,
    .launch = svm_launch,
    .launch_failed = svm_launch_failed,
    .skip_insn = svm_skip_insn,
    .inject_exception = svm_inject_exception,
    .guest_cpl = svm_guest_cpl,
    .guest_rip = svm_guest_rip,
    .guest_cr4 = svm_guest_cr4,
    .dump_guest = svm_dump_guest,
    .devirtualize = svm_devirtualize,
    .park_init = svm_park_init,
    .start_sipi = svm_start_sipi,
    .can_leave_now = svm_can_leave_now,
    .host_nmi_window = svm_host_nmi_window,
    .leave_parked = svm_leave_parked,
    .apic_unprotect = svm_apic_unprotect,
    .apic_protect = svm_apic_protect,
    .s3_resume = svm_s3_resume,
    .icr_open = svm_icr_open,
    .flush_ept = svm_flush,
    .guest_paging = svm_guest_paging,
    .guest_rflags = svm_guest_rflags,
    .gpa_is_ram = svm_gpa_is_ram,
};
