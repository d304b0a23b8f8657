/*
 * svm_exit.c - #VMEXIT decoding and the SVM-specific handlers.
 *
 * Every exit code (APM Vol 2 Appendix C) goes through one table that names
 * it and gives its arch-neutral kind (counted; handled by efi/core/exit.c
 * when the entry has no SVM handler) and optionally an SVM handler.  A code
 * with neither is unexpected: panic with its decoded name.
 */
#include "svm.h"
#include "hv_lib.h"

#define RFLAGS_TF (1ull << 8)

typedef void (*svm_handler)(struct hv_cpu *c, struct vmcb *v);

struct exit_entry {
    const char *name;
    enum hv_exit kind;
    svm_handler fn;        /* NULL: core handler for kind, or panic if OTHER */
};

static void exit_nmi(struct hv_cpu *c, struct vmcb *v);
static void exit_vintr(struct hv_cpu *c, struct vmcb *v);
static void exit_io(struct hv_cpu *c, struct vmcb *v);
static void exit_msr(struct hv_cpu *c, struct vmcb *v);
static void exit_shutdown(struct hv_cpu *c, struct vmcb *v);
static void exit_smi(struct hv_cpu *c, struct vmcb *v);
static void exit_iret(struct hv_cpu *c, struct vmcb *v);
static void exit_db(struct hv_cpu *c, struct vmcb *v);

#define VIRT_INSN(n) {n, HV_EXIT_VIRT_INSN, NULL}
static const struct exit_entry exit_table[] = {
    [VMEXIT_DB] = {"db", HV_EXIT_NMI_WINDOW, exit_db},
    [VMEXIT_INTR] = {"intr", HV_EXIT_OTHER, NULL},
    [VMEXIT_NMI] = {"nmi", HV_EXIT_NMI, exit_nmi},
    [VMEXIT_SMI] = {"smi", HV_EXIT_SMI, exit_smi},
    [VMEXIT_INIT] = {"init", HV_EXIT_OTHER, NULL},
    [VMEXIT_VINTR] = {"vintr", HV_EXIT_NMI_WINDOW, exit_vintr},
    [VMEXIT_CPUID] = {"cpuid", HV_EXIT_CPUID, NULL},
    [VMEXIT_IRET] = {"iret", HV_EXIT_NMI_WINDOW, exit_iret},
    [VMEXIT_INVD] = {"invd", HV_EXIT_INVD, NULL},
    [VMEXIT_HLT] = {"hlt", HV_EXIT_OTHER, NULL},
    [VMEXIT_INVLPGA] = VIRT_INSN("invlpga"),
    [VMEXIT_IOIO] = {"ioio", HV_EXIT_IO, exit_io},
    [VMEXIT_MSR] = {"msr", HV_EXIT_RDMSR, exit_msr},
    [VMEXIT_SHUTDOWN] = {"shutdown", HV_EXIT_TRIPLE_FAULT, exit_shutdown},
    [VMEXIT_VMRUN] = VIRT_INSN("vmrun"),
    [VMEXIT_VMMCALL] = {"vmmcall", HV_EXIT_HYPERCALL, NULL},
    [VMEXIT_VMLOAD] = VIRT_INSN("vmload"),
    [VMEXIT_VMSAVE] = VIRT_INSN("vmsave"),
    [VMEXIT_STGI] = VIRT_INSN("stgi"),
    [VMEXIT_CLGI] = VIRT_INSN("clgi"),
    [VMEXIT_SKINIT] = VIRT_INSN("skinit"),
    [VMEXIT_XSETBV] = {"xsetbv", HV_EXIT_XSETBV, NULL},
};
#define EXIT_TABLE_SIZE (sizeof(exit_table) / sizeof(exit_table[0]))

/* ---- services for the core ---------------------------------------------------- */
/* The next RIP: from the CPU with NRIPS (APM 15.7.1), else decoded from the
 * guest's instruction bytes (efi/core/insn_len.c; bytes it cannot decode
 * get a logged #UD).  The interrupt shadow of a STI/MOV SS ends with the
 * instruction completed. */
void svm_skip_insn(struct hv_cpu *c)
{
    struct vmcb *v = vmcb_of(c);
    unsigned len;

    if (svm.features & SVM_F_NRIPS) {
        v->save.rip = v->ctl.next_rip;
    } else if ((len = hv_insn_len(c)) != 0) {
        v->save.rip += len;
    } else {
        svm_inject_exception(c, VEC_UD, false, 0);
        return;
    }
    v->ctl.int_state &= ~INT_SHADOW;
}

/* Event injection (APM 15.20).  Real mode pushes no error code.  A fault
 * pushes RFLAGS with RF set (APM Vol 2 13.1.2.2, SDM Vol 3A 18.3.1.1); an
 * injected event takes RFLAGS as it is (Bochs ryzen, found by the fuzzer),
 * so we set it, not for the traps #DB, #BP, #OF - as vmx_inject_exception. */
void svm_inject_exception(struct hv_cpu *c, uint8_t vec, bool has_err, uint32_t err)
{
    struct vmcb *v = vmcb_of(c);
    uint64_t e = vec | EVT_TYPE_EXC | EVT_VALID;

    if (has_err && (v->save.cr0 & CR0_PE))
        e |= EVT_ERR_VALID | ((uint64_t)err << 32);
    if (vec != 1 && vec != 3 && vec != 4)
        v->save.rflags |= 1ull << 16;              /* RF */
    v->ctl.eventinj = e;
}

unsigned svm_guest_cpl(struct hv_cpu *c) { return vmcb_of(c)->save.cpl & 3; }
uint64_t svm_guest_rip(struct hv_cpu *c) { return vmcb_of(c)->save.rip; }
uint64_t svm_guest_cr4(struct hv_cpu *c) { return vmcb_of(c)->save.cr4; }

void svm_guest_paging(struct hv_cpu *c, struct hv_guest_paging *p)
{
    struct vmcb *v = vmcb_of(c);

    p->cr0 = v->save.cr0;
    p->cr3 = v->save.cr3;
    p->cr4 = v->save.cr4;
    p->efer = v->save.efer;
    p->cs_base = v->save.cs.base;
    p->rip = v->save.rip;
    p->rsp = v->save.rsp;
    p->cs_long = (v->save.cs.attrib >> 9) & 1;     /* descriptor bit 53 */
    p->cs_32 = (v->save.cs.attrib >> 10) & 1;      /* descriptor bit 54 */
    p->gdtr_base = v->save.gdtr.base;
    p->gdtr_limit = v->save.gdtr.limit;
    p->idtr_base = v->save.idtr.base;
}

uint64_t svm_guest_rflags(struct hv_cpu *c, uint64_t mask, uint64_t val)
{
    struct vmcb *v = vmcb_of(c);
    uint64_t f = v->save.rflags;

    if (mask)
        v->save.rflags = (f & ~mask) | (val & mask);
    return f;
}

static void dump_seg(const char *n, const struct vmcb_seg *s)
{
    hv_log("HV: guest %s sel=%x attrib=%x limit=%x base=%llx\n", n, s->sel, s->attrib,
           s->limit, (unsigned long long)s->base);
}

void svm_dump_guest(struct hv_cpu *c)
{
    struct vmcb *v = vmcb_of(c);

    hv_log("HV: guest cpu=%u rip=%llx rsp=%llx rflags=%llx cpl=%u cr0=%llx cr3=%llx "
           "cr4=%llx efer=%llx\n", c->index, (unsigned long long)v->save.rip,
           (unsigned long long)v->save.rsp, (unsigned long long)v->save.rflags, v->save.cpl,
           (unsigned long long)v->save.cr0, (unsigned long long)v->save.cr3,
           (unsigned long long)v->save.cr4, (unsigned long long)v->save.efer);
    dump_seg("es", &v->save.es);
    dump_seg("cs", &v->save.cs);
    dump_seg("ss", &v->save.ss);
    dump_seg("ds", &v->save.ds);
    dump_seg("fs", &v->save.fs);
    dump_seg("gs", &v->save.gs);
    dump_seg("ldtr", &v->save.ldtr);
    dump_seg("tr", &v->save.tr);
    hv_log("HV: guest gdtr=%llx/%x idtr=%llx/%x dr6=%llx dr7=%llx pat=%llx\n",
           (unsigned long long)v->save.gdtr.base, v->save.gdtr.limit,
           (unsigned long long)v->save.idtr.base, v->save.idtr.limit,
           (unsigned long long)v->save.dr6, (unsigned long long)v->save.dr7,
           (unsigned long long)v->save.g_pat);
    hv_log("HV: vmcb exitcode=%llx info1=%llx info2=%llx intinfo=%llx eventinj=%llx "
           "int-state=%llx asid=%u tlb=%u np=%llx ncr3=%llx icpt=%x/%x\n",
           (unsigned long long)v->ctl.exitcode, (unsigned long long)v->ctl.exitinfo1,
           (unsigned long long)v->ctl.exitinfo2, (unsigned long long)v->ctl.exitintinfo,
           (unsigned long long)v->ctl.eventinj, (unsigned long long)v->ctl.int_state,
           v->ctl.asid, v->ctl.tlb_control, (unsigned long long)v->ctl.np_enable,
           (unsigned long long)v->ctl.n_cr3, v->ctl.icpt3, v->ctl.icpt4);
    hv_dump_regs(c->regs);
}

/* ---- VMEXIT_INVALID: which VMRUN consistency check failed (APM 15.5.1) -------- */
struct vmcb_check {
    const char *what;
    bool (*bad)(const struct vmcb *v);
};

#define LONG_PAGING(v) (((v)->save.efer & EFER_LME) && ((v)->save.cr0 & CR0_PG))
static bool bad_svme(const struct vmcb *v) { return !(v->save.efer & EFER_SVME); }
static bool bad_cd_nw(const struct vmcb *v)
{
    return !(v->save.cr0 & (1ull << 30)) && (v->save.cr0 & (1ull << 29));
}
static bool bad_cr0_hi(const struct vmcb *v) { return v->save.cr0 >> 32; }
static bool bad_dr_hi(const struct vmcb *v) { return (v->save.dr6 | v->save.dr7) >> 32; }
static bool bad_efer_rsvd(const struct vmcb *v) { return v->save.efer >> 22; }
static bool bad_pae(const struct vmcb *v) { return LONG_PAGING(v) && !(v->save.cr4 & 0x20); }
static bool bad_pe(const struct vmcb *v) { return LONG_PAGING(v) && !(v->save.cr0 & CR0_PE); }
static bool bad_cs_ld(const struct vmcb *v)
{
    return LONG_PAGING(v) && (v->save.cs.attrib & 0x600) == 0x600;
}
static bool bad_vmrun_icpt(const struct vmcb *v) { return !(v->ctl.icpt4 & ICPT_VMRUN); }
static bool bad_asid(const struct vmcb *v) { return v->ctl.asid == 0; }
static bool bad_evt(const struct vmcb *v)
{
    unsigned t = (v->ctl.eventinj >> 8) & 7;

    return (v->ctl.eventinj & EVT_VALID) && (t == 1 || t > 4);
}

static const struct vmcb_check vmcb_checks[] = {
    {"efer.svme=0", bad_svme},
    {"cr0.cd=0-with-cr0.nw=1", bad_cd_nw},
    {"cr0[63:32]!=0", bad_cr0_hi},
    {"dr6/dr7[63:32]!=0", bad_dr_hi},
    {"efer-reserved-bits", bad_efer_rsvd},
    {"long-paging-without-cr4.pae", bad_pae},
    {"long-paging-without-cr0.pe", bad_pe},
    {"cs.l=1-and-cs.d=1", bad_cs_ld},
    {"vmrun-not-intercepted", bad_vmrun_icpt},
    {"asid=0", bad_asid},
    {"eventinj-bad-type", bad_evt},
};

static void explain_invalid(struct hv_cpu *c, struct vmcb *v)
{
    unsigned n = 0;

    for (size_t i = 0; i < sizeof(vmcb_checks) / sizeof(vmcb_checks[0]); i++)
        if (vmcb_checks[i].bad(v)) {
            hv_log("HV: vmcb-check cpu=%u failed %s\n", c->index, vmcb_checks[i].what);
            n++;
        }
    if (!n)
        hv_log("HV: vmcb-check cpu=%u none of the known checks failed\n", c->index);
    svm_dump_guest(c);
}

/* ---- NMIs and event windows ----------------------------------------------------- */
/* An NMI held pending while GIF = 0 (APM 15.13.2, 15.17) arrives in this
 * window, on the host's IDT, whose handler counts it (host_nmi); the core
 * tells a wake-up from a guest NMI by the request flags (smp.c). */
void svm_host_nmi_window(void)
{
    __asm__ volatile("stgi; nop; nop; clgi" ::: "memory");
}

static void exit_nmi(struct hv_cpu *c, struct vmcb *v)
{
    (void)c;
    (void)v;
    svm_host_nmi_window();
}

/* An SMI in the guest (the firmware's runtime services trigger them, e.g. an
 * OUT to the APM port for a variable write under Secure Boot): it stays
 * pending while GIF = 0 (APM 15.13.3), so the same window takes it in the
 * host's context; SMM's RSM returns here and the guest resumes after the
 * instruction that raised it (QEMU TCG mishandles SMM taken in guest mode). */
static void exit_smi(struct hv_cpu *c, struct vmcb *v)
{
    (void)c;
    (void)v;
    svm_host_nmi_window();
}

/* The virtual-interrupt window (V_IRQ with VINTR intercepted): the guest can
 * take an event now (used while another event is being injected or an
 * interrupt shadow holds the NMI back). */
static void want_window(struct vmcb *v)
{
    v->ctl.vintr |= V_IRQ | (1ull << 20) | (0xFull << 16);   /* V_IGN_TPR, priority 15 */
    v->ctl.icpt3 |= ICPT_VINTR;
}

static void exit_vintr(struct hv_cpu *c, struct vmcb *v)
{
    (void)c;
    v->ctl.vintr &= ~(V_IRQ | (1ull << 20) | (0xFull << 16));
    v->ctl.icpt3 &= ~ICPT_VINTR;
}

/* The guest's NMI blocking without vNMI.  Delivering an NMI blocks further
 * NMIs until the next IRET completes (APM Vol 2 8.2.2; SDM Vol 3A 6.7.1).
 * The VMCB does not show that state, so we keep it: nmi_masked from our
 * injection on; the IRET intercept (APM 15.9, checked before the IRET
 * executes) tells where the handler returns, and once the guest's RIP has
 * left that IRET it has completed.  An NMI owed while the guest still sits
 * on its IRET is held for one single step (TF, #DB intercepted: the trap
 * comes after the IRET, with TF as it was when the IRET began, SDM Vol 3A
 * 17.3.1.4), then injected: at the first boundary where NMIs are unblocked,
 * never nested inside the guest's handler (its IST frame would be reused). */
static void nmi_unmask(struct svm_cpu *s, struct vmcb *v)
{
    s->nmi_masked = s->iret_seen = false;
    v->ctl.icpt3 &= ~ICPT_IRET;
}

static void exit_iret(struct hv_cpu *c, struct vmcb *v)
{
    struct svm_cpu *s = svm_of(c);

    v->ctl.icpt3 &= ~ICPT_IRET;
    s->iret_seen = s->nmi_masked;
    s->iret_rip = v->save.rip;
}

static void step_over_iret(struct svm_cpu *s, struct vmcb *v)
{
    if (s->nmi_step)
        return;
    s->nmi_step = true;
    s->step_tf = (v->save.rflags & RFLAGS_TF) != 0;
    s->step_dr6 = v->save.dr6;
    v->save.rflags |= RFLAGS_TF;
    v->ctl.icpt_exc |= 1u << 1;                    /* #DB */
}

/* The #DB after the stepped IRET.  DR6 goes back as it was; a guest that
 * single-stepped its own handler gets its #DB (DR6.BS) as it would have. */
static void exit_db(struct hv_cpu *c, struct vmcb *v)
{
    struct svm_cpu *s = svm_of(c);

    if (!s->nmi_step)                              /* not ours: the guest's #DB */
        return svm_inject_exception(c, 1, false, 0);
    s->nmi_step = false;
    v->ctl.icpt_exc &= ~(1u << 1);
    v->save.dr6 = s->step_dr6;
    if (v->save.rip != s->iret_rip)
        nmi_unmask(s, v);
    if (s->step_tf && !(v->ctl.eventinj & EVT_VALID)) {
        v->save.dr6 |= 1ull << 14;                 /* BS */
        svm_inject_exception(c, 1, false, 0);
    }
}

static void deliver_pending_nmi(struct hv_cpu *c, struct vmcb *v)
{
    struct svm_cpu *s = svm_of(c);

    if (s->nmi_step)
        return;                                    /* the #DB after the IRET comes first */
    if (s->nmi_masked && s->iret_seen && v->save.rip != s->iret_rip)
        nmi_unmask(s, v);                          /* its IRET has completed */
    if (s->nmi_masked) {
        if (s->iret_seen)
            step_over_iret(s, v);
        else
            v->ctl.icpt3 |= ICPT_IRET;
        return;
    }
    if ((v->ctl.eventinj & EVT_VALID) || (v->ctl.int_state & INT_SHADOW)) {
        want_window(v);
        return;
    }
    v->ctl.eventinj = VEC_NMI | EVT_TYPE_NMI | EVT_VALID;
    hv_nmi_injected(c);
    s->nmi_masked = true;
    s->iret_seen = false;
    v->ctl.icpt3 |= ICPT_IRET;
}

bool svm_can_leave_now(struct hv_cpu *c)
{
    struct vmcb *v = vmcb_of(c);

    if (!(v->ctl.eventinj & EVT_VALID) && !c->guest_nmi && !svm_of(c)->nmi_step)
        return true;
    want_window(v);
    return false;
}

/* ---- shutdown, INIT, SIPI ----------------------------------------------------------- */
/* Shutdown (a triple fault, APM 15.11): the guest's reset. */
static void exit_shutdown(struct hv_cpu *c, struct vmcb *v)
{
    (void)v;
    hv_guest_triple_fault(c);
}

static void set_seg(struct vmcb_seg *s, uint16_t sel, uint64_t base, uint32_t limit,
                    uint16_t attrib)
{
    *s = (struct vmcb_seg){sel, attrib, limit, base};
}

/* Emulated INIT (smp.c): the architectural INIT state (APM Vol 2 14.1.3,
 * Table 14-1), EFER.SVME kept (VMRUN needs it; the guest reads it as 0).
 * INIT leaves the MSRs alone, so the syscall and SYSENTER MSRs that live in
 * the VMCB's save area keep their values (an AP that OVMF's MP services
 * restart by INIT-SIPI kept its SFMASK natively: found by the fuzzer).
 * The wait for SIPI is the core's: a parked CPU waits in the host. */
void svm_park_init(struct hv_cpu *c)
{
    struct vmcb *v = vmcb_of(c);
    struct hv_regs *r = c->regs;

    HV_TRACE("HV: trace cpu=%u emulated init rip=%llx\n", c->index,
             (unsigned long long)v->save.rip);
    memset(r, 0, sizeof(*r));
    r->rdx = cpuid2(1, 0).eax;                     /* family/model/stepping */
    svm_init_state(v);
    svm_init_events(c, v);
    __asm__ volatile("stgi" ::: "memory");         /* the drain needs GIF = 1 */
    host_apic_init_reset();
    __asm__ volatile("clgi" ::: "memory");
    svm_flush(c);
}

/* What INIT clears besides the save area: an event being injected, the
 * interrupt shadow, the NMI blocking we track for the guest. */
void svm_init_events(struct hv_cpu *c, struct vmcb *v)
{
    v->ctl.eventinj = 0;
    v->ctl.int_state = 0;
    exit_vintr(c, v);
    nmi_unmask(svm_of(c), v);                      /* INIT clears NMI blocking */
    svm_of(c)->nmi_step = false;
    v->ctl.icpt_exc &= ~(1u << 1);
}

/* The architectural INIT state of the save area (APM Vol 2 14.1.3).  INIT
 * leaves MSRs alone: the syscall/SYSENTER MSRs and KernelGSbase the VMCB
 * holds for the guest are kept. */
void svm_init_state(struct vmcb *v)
{
    const uint64_t msrs[8] = {v->save.star, v->save.lstar, v->save.cstar, v->save.sfmask,
                              v->save.kernel_gs_base, v->save.sysenter_cs,
                              v->save.sysenter_esp, v->save.sysenter_eip};

    memset(&v->save, 0, sizeof(v->save));
    set_seg(&v->save.cs, 0xF000, 0xFFFF0000, 0xFFFF, 0x9B);
    set_seg(&v->save.es, 0, 0, 0xFFFF, 0x93);
    v->save.ss = v->save.ds = v->save.fs = v->save.gs = v->save.es;
    set_seg(&v->save.ldtr, 0, 0, 0xFFFF, 0x82);
    set_seg(&v->save.tr, 0, 0, 0xFFFF, 0x8B);
    v->save.gdtr.limit = v->save.idtr.limit = 0xFFFF;
    v->save.cr0 = 0x60000010;                      /* CD NW ET */
    v->save.efer = EFER_SVME;
    v->save.rflags = 2;
    v->save.rip = 0xFFF0;
    v->save.dr6 = 0xFFFF0FF0;
    v->save.dr7 = 0x400;
    v->save.g_pat = 0x0007040600070406ull;
    v->save.star = msrs[0];
    v->save.lstar = msrs[1];
    v->save.cstar = msrs[2];
    v->save.sfmask = msrs[3];
    v->save.kernel_gs_base = msrs[4];
    v->save.sysenter_cs = msrs[5];
    v->save.sysenter_esp = msrs[6];
    v->save.sysenter_eip = msrs[7];
}

/* SIPI: real-mode start at vector << 12 (APM Vol 2 15.29, Intel SDM 9.4.4.1). */
void svm_start_sipi(struct hv_cpu *c, uint8_t vec)
{
    struct vmcb *v = vmcb_of(c);

    HV_TRACE("HV: trace cpu=%u sipi vector=%x\n", c->index, vec);
    set_seg(&v->save.cs, (uint16_t)(vec << 8), (uint64_t)vec << 12, 0xFFFF, 0x9B);
    v->save.rip = 0;
    svm_flush(c);
}

/* A parked CPU leaves SVM and halts in the host with GIF = 1, so a real
 * INIT-SIPI from the OS starts it as on bare metal (its memory is never
 * reclaimed). */
void svm_leave_parked(struct hv_cpu *c)
{
    (void)c;
    __asm__ volatile("stgi" ::: "memory");
    wrmsr(MSR_VM_HSAVE_PA, 0);
    wrmsr(MSR_EFER, rdmsr(MSR_EFER) & ~EFER_SVME);
    halt_forever();
}

/* ---- I/O: only the ACPI PM1a control port is in the IOPM (APM 15.10.1) -----------
 * An access of any width that touches it exits (APM 15.10.2: the IOPM bits
 * of every byte are checked), in every form: IN/OUT and INS/OUTS with or
 * without REP.  Each is performed as written on the real port; the core
 * watches for SLP_EN (hv_io_out).  EXITINFO1 (APM Figure 15-2): bit 0 IN,
 * 2 string, 3 REP, 4-6 operand size; EXITINFO2 the next RIP, with or
 * without NRIPS. */
#define IOIO_IN   1u
#define IOIO_STR  4u
#define IOIO_REP  8u

/* The prefixes of the INS/OUTS at RIP: the segment OUTS reads through (DS,
 * or the last segment override; INS always writes ES:rDI) and the address
 * size (the code's, or the other one with 67).  From the guest's bytes:
 * EXITINFO1's segment field is a decode assist, and QEMU 7.2 TCG puts a
 * 64-bit address size in bit 10 instead of bit 9 (A64). */
struct io_prefixes {
    const struct vmcb_seg *seg;
    unsigned asz;                                  /* 0: 16-bit, 1: 32-bit, 2: 64-bit */
};

static struct io_prefixes io_prefixes(struct vmcb *v, const struct hv_guest_paging *p)
{
    bool code64 = (p->efer & EFER_LMA) && p->cs_long, a67 = false;
    struct io_prefixes r = {&v->save.ds, 0};
    uint8_t b = 0;

    for (unsigned i = 0; i < 15; i++) {
        if (hv_guest_read_linear(p, p->cs_base + p->rip + i, &b, 1))
            break;
        if (b == 0x26 || b == 0x2E || b == 0x36 || b == 0x3E || b == 0x64 || b == 0x65)
            r.seg = b == 0x26 ? &v->save.es : b == 0x2E ? &v->save.cs : b == 0x36 ? &v->save.ss
                  : b == 0x3E ? &v->save.ds : b == 0x64 ? &v->save.fs : &v->save.gs;
        else if (b == 0x67)
            a67 = true;
        else if (!(b == 0x66 || b == 0xF0 || b == 0xF2 || b == 0xF3 ||
                   (code64 && (b & 0xF0) == 0x40)))
            break;
    }
    r.asz = code64 ? (a67 ? 1 : 2) : (p->cs_32 != a67) ? 1 : 0;
    return r;
}

static void io_string(struct hv_cpu *c, struct vmcb *v, uint64_t info, uint16_t port,
                      unsigned size)
{
    struct hv_guest_paging p;
    struct hv_io_str s = {&p, 0, port, size, 0, info & IOIO_IN, info & IOIO_REP,
                          (v->save.rflags >> 10) & 1};
    struct io_prefixes pf;
    const struct vmcb_seg *seg;

    svm_guest_paging(c, &p);
    pf = io_prefixes(v, &p);
    seg = s.in ? &v->save.es : pf.seg;
    s.asz = pf.asz;
    s.la = hv_io_string_la(&p, seg->base, seg == &v->save.fs || seg == &v->save.gs,
                           s.in ? c->regs->rdi : c->regs->rsi, s.asz);
    if (hv_io_string(c, &s) == HV_IO_DONE) {
        v->save.rip = v->ctl.exitinfo2;
        v->ctl.int_state &= ~INT_SHADOW;
    }
}

static void exit_io(struct hv_cpu *c, struct vmcb *v)
{
    uint64_t info = v->ctl.exitinfo1;
    unsigned size = (info & 0x10) ? 1 : (info & 0x20) ? 2 : 4;
    uint16_t port = (uint16_t)(info >> 16);
    uint32_t mask = size == 4 ? 0xFFFFFFFFu : (1u << (8 * size)) - 1, val;

    if (info & IOIO_STR)
        return io_string(c, v, info, port, size);
    if (info & IOIO_IN) {
        val = port_in(port, size);
        c->regs->rax = size == 4 ? (val & mask) : (c->regs->rax & ~(uint64_t)mask) | (val & mask);
    } else {
        hv_io_out(c, port, size, (uint32_t)c->regs->rax & mask);
    }
    v->save.rip = v->ctl.exitinfo2;
    v->ctl.int_state &= ~INT_SHADOW;
}

/* ---- MSRs: EFER here (it is VMCB state), the rest in efi/core/exit.c ------------- */
static uint64_t efer_writable(void)
{
    struct cpuid_regs e = cpuid2(0x80000001, 0);
    uint64_t ok = EFER_LMA;

    ok |= (e.edx & (1u << 11)) ? 1ull : 0;             /* SCE */
    ok |= (e.edx & (1u << 29)) ? EFER_LME : 0;
    ok |= (e.edx & (1u << 20)) ? 1ull << 11 : 0;       /* NXE */
    ok |= (e.edx & (1u << 25)) ? 1ull << 14 : 0;       /* FFXSR */
    ok |= (e.ecx & (1u << 17)) ? 1ull << 15 : 0;       /* TCE */
    if (cpuid2(0x80000000, 0).eax >= 0x80000021 && (cpuid2(0x80000021, 0).eax & (1u << 8)))
        ok |= 1ull << 21;                              /* AutoIBRS */
    return ok;
}

/* EFER as a CPU whose VM_CR.SVMDIS is set: SVME reads 0 and cannot be set
 * (APM 15.4); the real bit stays on, as VMRUN requires.  LMA is the CPU's. */
static void efer_access(struct hv_cpu *c, struct vmcb *v, bool write)
{
    struct hv_regs *r = c->regs;
    uint64_t val = (r->rdx << 32) | (uint32_t)r->rax, cur = v->save.efer;

    if (!write) {
        r->rax = (uint32_t)(cur & ~EFER_SVME);
        r->rdx = (cur & ~EFER_SVME) >> 32;
        return svm_skip_insn(c);
    }
    if ((val & ~efer_writable()) || (((val ^ cur) & EFER_LME) && (v->save.cr0 & CR0_PG)))
        return svm_inject_exception(c, VEC_GP, true, 0);
    v->save.efer = (val & ~EFER_LMA) | (cur & EFER_LMA) | EFER_SVME;
    svm_skip_insn(c);
}

static void exit_msr(struct hv_cpu *c, struct vmcb *v)
{
    bool write = v->ctl.exitinfo1 & 1;

    if (write) {
        c->exits[HV_EXIT_RDMSR]--;
        c->exits[HV_EXIT_WRMSR]++;
    }
    if ((uint32_t)c->regs->rcx == MSR_EFER)
        return efer_access(c, v, write);
    hv_handle_exit(c, write ? HV_EXIT_WRMSR : HV_EXIT_RDMSR);
}

/* ---- nested page fault (APM 15.25.6) -------------------------------------------------- */
/* EXITINFO1 is a #PF error code (bit 0 present, bit 1 write), EXITINFO2 the
 * guest-physical address.  A guest access to hypervisor memory is logged and
 * answered with #GP(0), as on VT-x. */
static void exit_npf(struct hv_cpu *c, struct vmcb *v)
{
    uint64_t gpa = v->ctl.exitinfo2, err = v->ctl.exitinfo1;

    if (hv_apic_page && (gpa & ~0xFFFull) == hv_apic_page && (err & 3) == 3) {
        if (!hv_apic_protected)
            return svm_flush(c);                   /* a stale read-only translation */
        c->exits[HV_EXIT_NPF]--;
        hv_count_exit(c, HV_EXIT_APIC_WRITE);
        v->save.rip += hv_apic_mmio_write(c, gpa);
        v->ctl.int_state &= ~INT_SHADOW;
        return;
    }
    if (hv_gpa_blocked(c, gpa, (const char[]){err & 2 ? 'w' : 'r', err & 16 ? 'x' : '-', 0})) {
        v->ctl.eventinj = 0;                        /* #GP replaces a vectored event */
        return svm_inject_exception(c, VEC_GP, true, 0);
    }
    hv_panic(c, "npf gpa=%llx info1=%llx\n", (unsigned long long)gpa,
             (unsigned long long)err);
}

/* ---- the dispatcher ------------------------------------------------------------------- */
static void exit_invalid(struct hv_cpu *c, struct vmcb *v)
{
    struct svm_cpu *s = svm_of(c);

    hv_log("HV: vmexit-invalid cpu=%u exitcode=%llx: VMRUN refused the guest state\n",
           c->index, (unsigned long long)v->ctl.exitcode);
    explain_invalid(c, v);
    /* A refused first VMRUN fails open: back to svm_launch's failure return
     * (label 2) as prepared, RAX = 1; it restores the callee-saved GPRs. */
    if (s->launched)
        hv_panic(c, "vmexit-invalid\n");
    v->save = s->launch_state;
    v->save.rip = s->fail_rip;
    v->save.rsp = s->fail_rsp;
    v->save.rflags = s->fail_rflags;
    c->regs->rax = 1;
    c->guest = false;
    svm_devirtualize(c);
}

/* The fast path (svm_entry.S): CPUID with NRIPS, nothing pending.  Runs
 * with the guest's GS base still loaded, so it takes the CPU as an argument
 * and must not use this_cpu().  Returns 1 for the slow path, which then
 * handles the exit from the start. */
__attribute__((sysv_abi)) int svm_exit_fast(struct hv_regs *regs, struct hv_cpu *c)
{
    struct vmcb *v = vmcb_of(c);

    if (v->ctl.exitcode != VMEXIT_CPUID || !(svm.features & SVM_F_NRIPS) ||
        hv_smp_pending(c) || c->guest_nmi)
        return 1;
    c->regs = regs;
    regs->rax = v->save.rax;
    svm_of(c)->launched = true;
    v->ctl.tlb_control = TLB_NONE;
    v->ctl.eventinj = 0;                           /* an instruction exit: nothing lost */
    c->exits[HV_EXIT_CPUID]++;
    hv_cpuid_emulate(c);
    v->save.rip = v->ctl.next_rip;
    v->ctl.int_state &= ~INT_SHADOW;
    v->save.rax = regs->rax;
    return 0;
}

/* Called by svm_run (svm_entry.S) with every guest GPR saved but RAX and
 * RSP, which are in the VMCB. */
__attribute__((sysv_abi)) void svm_exit_handler(struct hv_regs *regs)
{
    struct hv_cpu *c = this_cpu();
    struct vmcb *v = vmcb_of(c);
    uint64_t code = v->ctl.exitcode;
    const struct exit_entry *e;

    c->regs = regs;
    regs->rax = v->save.rax;
    v->ctl.tlb_control = TLB_NONE;
    /* An exit during event delivery loses the event unless it is injected
     * again (APM 15.7.2); anything injected before has been delivered.
     * (Limit: a software INTn re-injected without NRIPS.) */
    v->ctl.eventinj = (v->ctl.exitintinfo & EVT_VALID) ? v->ctl.exitintinfo : 0;
    if ((uint32_t)code == VMEXIT_INVALID) {
        exit_invalid(c, v);                        /* does not return */
        return;
    }
    svm_of(c)->launched = true;
    if (code == VMEXIT_NPF) {
        c->exits[HV_EXIT_NPF]++;
        exit_npf(c, v);
    } else {
        if (code >= EXIT_TABLE_SIZE || !exit_table[code].name) {
            c->exits[HV_EXIT_OTHER]++;
            hv_panic(c, "unknown-exit code=%llx info1=%llx info2=%llx\n",
                     (unsigned long long)code, (unsigned long long)v->ctl.exitinfo1,
                     (unsigned long long)v->ctl.exitinfo2);
        }
        e = &exit_table[code];
        c->exits[e->kind]++;
        if (e->kind == HV_EXIT_CPUID) {            /* the hottest: no ops hop */
            hv_cpuid_emulate(c);
            svm_skip_insn(c);
        } else if (e->fn) {
            e->fn(c, v);
        } else if (e->kind != HV_EXIT_OTHER) {
            hv_handle_exit(c, e->kind);
        } else {
            hv_panic(c, "%s info1=%llx info2=%llx\n", e->name,
                     (unsigned long long)v->ctl.exitinfo1,
                     (unsigned long long)v->ctl.exitinfo2);
        }
    }
    if (hv_smp_pending(c))
        hv_smp_poll(c);                            /* other CPUs' requests, NMIs */
    if (c->guest_nmi)
        deliver_pending_nmi(c, v);
    v->save.rax = regs->rax;
}

/* ---- devirtualization --------------------------------------------------------------------- */
/* Leaves SVM on this CPU and resumes the guest natively at its RIP: VMLOAD
 * puts back FS/GS/TR/LDTR with their hidden parts and the syscall MSRs,
 * then the descriptor tables, control registers and EFER (SVME off), and
 * hv_resume_native restores CR3 and the GPRs with IRETQ.  GIF is set again
 * first, with RFLAGS.IF still 0. */
void svm_devirtualize(struct hv_cpu *c)
{
    struct svm_cpu *s = svm_of(c);
    struct vmcb *v = s->vmcb;
    struct desc_ptr gdt = {(uint16_t)v->save.gdtr.limit, v->save.gdtr.base};
    struct desc_ptr idt = {(uint16_t)v->save.idtr.limit, v->save.idtr.base};
    uint64_t frame[5] = {v->save.rip, v->save.cs.sel, v->save.rflags, v->save.rsp,
                         v->save.ss.sel};
    uint64_t efer = v->save.efer & ~EFER_SVME, cr3 = v->save.cr3;
    uint16_t ds = v->save.ds.sel, es = v->save.es.sel;
    struct hv_regs *regs = c->regs;

    svm_vmload(s->vmcb_pa);                         /* from here on no this_cpu() */
    __asm__ volatile("lgdt %0; lidt %1" : : "m"(gdt), "m"(idt) : "memory");
    __asm__ volatile("mov %0, %%ds; mov %1, %%es" : : "r"(ds), "r"(es) : "memory");
    write_cr0(v->save.cr0);
    write_cr4(v->save.cr4);
    __asm__ volatile("mov %0, %%cr2" : : "r"(v->save.cr2));
    wrmsr(MSR_PAT, v->save.g_pat);
    __asm__ volatile("mov %0, %%dr7" : : "r"(v->save.dr7));
    __asm__ volatile("stgi" ::: "memory");
    wrmsr(MSR_VM_HSAVE_PA, 0);
    wrmsr(MSR_EFER, efer);
    hv_resume_native(regs, frame, cr3);
}
