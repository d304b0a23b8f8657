/*
 * exit.c - exit handling shared by both vendors: CPUID, RDMSR/WRMSR, XSETBV,
 * INVD, virtualization instructions, hypercalls, INS/OUTS to a trapped
 * port; exit statistics.
 *
 * A backend translates its raw exit code into enum hv_exit, counts it and
 * either handles it itself (CR access, INIT/SIPI, nested paging faults: the
 * vendor-specific ones) or calls hv_handle_exit() for the shared ones.
 */
#include "hv_core.h"
#include "hv_lib.h"
#include "msr_policy.h"

const char *const hv_exit_names[HV_EXIT_COUNT] = {
    [HV_EXIT_CPUID] = "cpuid",       [HV_EXIT_RDMSR] = "rdmsr",
    [HV_EXIT_WRMSR] = "wrmsr",       [HV_EXIT_XSETBV] = "xsetbv",
    [HV_EXIT_HYPERCALL] = "vmcall",  [HV_EXIT_INVD] = "invd",
    [HV_EXIT_VIRT_INSN] = "vmxinsn", [HV_EXIT_CR] = "cr",
    [HV_EXIT_INIT] = "init",         [HV_EXIT_SIPI] = "sipi",
    [HV_EXIT_NMI] = "nmi",           [HV_EXIT_NMI_WINDOW] = "nmiwin",
    [HV_EXIT_NPF] = "ept",           [HV_EXIT_TRIPLE_FAULT] = "triple",
    [HV_EXIT_OTHER] = "other",       [HV_EXIT_APIC_WRITE] = "apic",
    [HV_EXIT_IO] = "io",             [HV_EXIT_SMI] = "smi",
};

void hv_count_exit(struct hv_cpu *c, enum hv_exit kind)
{
    if ((unsigned)kind < HV_EXIT_COUNT)
        c->exits[kind]++;
}

void hv_print_stats(struct hv_cpu *c)
{
    char line[256];
    int n = hv_snprintf(line, sizeof(line), "HV: stats cpu=%u", c->index);

    for (unsigned k = 0; k < HV_EXIT_COUNT && n < (int)sizeof(line); k++)
        if (c->exits[k])
            n += hv_snprintf(line + n, sizeof(line) - n, " %s=%llu", hv_exit_names[k],
                             (unsigned long long)c->exits[k]);
    if (c->x2apic_icr_exits && n < (int)sizeof(line))
        hv_snprintf(line + n, sizeof(line) - n, " icr=%llu",
                    (unsigned long long)c->x2apic_icr_exits);
    hv_log("%s\n", line);
}

static void set_rax_rdx(struct hv_regs *r, uint64_t v)
{
    r->rax = (uint32_t)v;
    r->rdx = v >> 32;
}

/* ---- CPUID ------------------------------------------------------------- */
/* The signature as the three registers read it (no memcpy on the exit path:
 * freestanding, it would be a real call). */
static const union {
    char text[12];
    uint32_t reg[3];                           /* EBX, ECX, EDX */
} hv_signature = {HV_CPUID_SIGNATURE};

/* Computed once (hv_cpuid_policy_init); the exit path only reads it. */
static struct cpuid_policy cpuid_pol;

static bool cpuid_pol_ready;

int hv_cpuid_policy_init(const struct cpuid_ctls *ctls)
{
    struct cpuid_ctls c = *ctls;

    c.max_std = cpuid2(0, 0).eax;
    c.max_ext = cpuid2(0x80000000, 0).eax;
    if (cpuid_policy_compute(&c, &cpuid_pol)) {
        hv_log("HV: panic cpuid-policy: the rule table does not fit its slots\n");
        return -1;
    }
    hv_log("HV: cpuid rdtscp=%u invpcid=%u xsaves=%u waitpkg=%u pt=%u\n", c.rdtscp,
           c.invpcid, c.xsaves, c.waitpkg, c.pt_gpa);
    cpuid_pol_ready = true;
    return 0;
}

/* A backend that computed no policy: its instructions run natively (AMD
 * intercepts none of them by default), and the always-rules still hold -
 * hypervisor bit set, VMX/SVM and Intel PT hidden. */
int hv_cpuid_policy_ensure(bool amd)
{
    struct cpuid_ctls c = {.amd = amd, .rdtscp = true, .invpcid = true, .xsaves = true,
                           .waitpkg = !amd};

    return cpuid_pol_ready ? 0 : hv_cpuid_policy_init(&c);
}

static void hv_leaf(struct hv_regs *r, uint32_t leaf)
{
    r->rax = r->rbx = r->rcx = r->rdx = 0;
    if (leaf == HV_CPUID_BASE) {
        r->rax = HV_CPUID_MAX;
        r->rbx = hv_signature.reg[0];
        r->rcx = hv_signature.reg[1];
        r->rdx = hv_signature.reg[2];
    } else if (leaf == HV_CPUID_BASE + 1) {
        r->rax = HV_INTERFACE_VERSION;
    } else if (leaf == HV_CPUID_BASE + 2) {
        hv_stats_snapshot(r);                  /* logring.c */
    }
}

/* A leaf the policy adjusts: CPUID, then the slot's masks.  noinline: it
 * may call the backend (guest CR4), and inlined it would make every CPUID
 * exit save more registers. */
static __attribute__((noinline)) void cpuid_adjusted(struct hv_cpu *c, uint32_t leaf)
{
    struct hv_regs *r = c->regs;
    uint32_t sub = (uint32_t)r->rcx, v[4];
    const struct cpuid_slot *s = cpuid_policy_slot(&cpuid_pol, leaf, sub);

    __asm__ volatile("cpuid" : "=a"(v[0]), "=b"(v[1]), "=c"(v[2]), "=d"(v[3])
                     : "a"(leaf), "c"(sub));
    if (s)
        cpuid_slot_apply(s, v, s->cr4_bit ? c->ops->guest_cr4(c) : 0);
    r->rax = v[0];
    r->rbx = v[1];
    r->rcx = v[2];
    r->rdx = v[3];
}

/* Leaves outside 0-0x1F and 0x80000000-0x8000001F: the hypervisor range,
 * or plain CPUID (the policy has no slot there). */
static __attribute__((noinline)) void cpuid_other(struct hv_cpu *c, uint32_t leaf)
{
    struct hv_regs *r = c->regs;

    if ((leaf >> 28) == 4)                     /* 0x40000000-0x4FFFFFFF */
        return hv_leaf(r, leaf);
    __asm__ volatile("cpuid" : "=a"(r->rax), "=b"(r->rbx), "=c"(r->rcx), "=d"(r->rdx)
                     : "a"(leaf), "c"((uint32_t)r->rcx));
}

/* Every CPUID exits (SDM Vol 3C 26.1.2), so this is the hottest handler: the
 * results go straight into the saved registers, and a leaf the policy does
 * not touch costs one range test and one bit test.  The backend skips the
 * instruction itself on its CPUID fast path (hv_cpuid_emulate), or do_cpuid
 * does through the ops table. */
void hv_cpuid_emulate(struct hv_cpu *c)
{
    struct hv_regs *r = c->regs;
    uint32_t leaf = (uint32_t)r->rax;

    if (leaf & 0x7FFFFFE0u)
        return cpuid_other(c, leaf);
    if (((leaf >> 31 ? cpuid_pol.ext_mask : cpuid_pol.std_mask) >> (leaf & 31)) & 1)
        return cpuid_adjusted(c, leaf);
    /* 32-bit results zero the upper halves. */
    __asm__ volatile("cpuid" : "=a"(r->rax), "=b"(r->rbx), "=c"(r->rcx), "=d"(r->rdx)
                     : "a"(leaf), "c"((uint32_t)r->rcx));
}

static void do_cpuid(struct hv_cpu *c)
{
    hv_cpuid_emulate(c);
    c->ops->skip_insn(c);
}

/* ---- RDMSR / WRMSR: the MSR policy table (msr_policy.c) ------------------ */
/* Only rows of the table (intercepted in the backend's bitmap) and MSRs
 * outside the bitmap ranges get here. */
static void inject_gp(struct hv_cpu *c)
{
    c->ops->inject_exception(c, VEC_GP, true, 0);
}

static bool vendor_amd(void)
{
    return hv_caps_now && hv_caps_now->virt == HV_VIRT_SVM;
}

static void do_rdmsr(struct hv_cpu *c)
{
    uint32_t msr = (uint32_t)c->regs->rcx;
    const struct msr_rule *rule = msr_policy_find(msr, vendor_amd());
    uint64_t v = 0, out;
    bool ok = true;

    if (!rule || rule->rd != RD_GP)
        ok = hv_rdmsr_safe(msr, &v) == 0;
    if (msr_policy_read(rule, ok, v, &out))
        return inject_gp(c);
    set_rax_rdx(c->regs, out);
    c->ops->skip_insn(c);
}

static void do_wrmsr(struct hv_cpu *c)
{
    uint32_t msr = (uint32_t)c->regs->rcx;
    uint64_t v = (c->regs->rdx << 32) | (uint32_t)c->regs->rax, cur = 0;
    const struct msr_rule *rule = msr_policy_find(msr, vendor_amd());
    bool cur_ok = true;

    if (rule && rule->wr_fixed)
        cur_ok = hv_rdmsr_safe(msr, &cur) == 0;
    switch (msr_policy_write(rule, v, cur_ok, cur)) {
    case MSR_DO_GP:
        hv_log("HV: msr-deny cpu=%u wrmsr=%x value=%llx: %s\n", c->index, msr,
               (unsigned long long)v, rule ? rule->why : "");
        return inject_gp(c);
    case MSR_DO_DROP:
        break;
    case MSR_DO_ICR:
        if ((rdmsr(MSR_APIC_BASE) & (1ull << 10)) && !hv_x2apic_icr_write(c, v))
            break;                             /* INIT/SIPI emulated (smp.c) */
        return inject_gp(c);                   /* x2APIC off, or a reserved bit */
    case MSR_DO_WRITE:
        if (hv_wrmsr_safe(msr, v))
            return inject_gp(c);
        break;
    }
    c->ops->skip_insn(c);
}

/* ---- XSETBV (SDM Vol 2C XSETBV, Vol 1 13.3) -------------------------------- */
#define XCR0_X87     1ull
#define XCR0_SSE     2ull
#define XCR0_AVX     4ull
#define XCR0_MPX     0x18ull               /* BNDREGS, BNDCSR */
#define XCR0_AVX512  0xE0ull               /* opmask, ZMM_Hi256, Hi16_ZMM */
#define XCR0_AMX     0x60000ull            /* XTILECFG, XTILEDATA */

/* The architectural checks, in the SDM's order; the host's own XSETBV
 * (hv_xsetbv_safe) then catches whatever else the CPU refuses. */
static bool xcr0_valid(uint64_t v)
{
    struct cpuid_regs d = cpuid2(0xD, 0);
    uint64_t supported = ((uint64_t)d.edx << 32) | d.eax;

    if (!(v & XCR0_X87) || (v & ~supported))
        return false;
    if ((v & XCR0_AVX) && !(v & XCR0_SSE))
        return false;
    if ((v & XCR0_MPX) && (v & XCR0_MPX) != XCR0_MPX)
        return false;
    if ((v & XCR0_AVX512) && ((v & XCR0_AVX512) != XCR0_AVX512 || !(v & XCR0_AVX)))
        return false;
    if ((v & XCR0_AMX) && (v & XCR0_AMX) != XCR0_AMX)
        return false;
    return true;
}

static void do_xsetbv(struct hv_cpu *c)
{
    struct hv_regs *r = c->regs;
    uint64_t v = (r->rdx << 32) | (uint32_t)r->rax;

    if (c->ops->guest_cpl(c) != 0 || (uint32_t)r->rcx != 0 || !xcr0_valid(v))
        return inject_gp(c);
    if (hv_xsetbv_safe(0, v)) {
        hv_log("HV: xsetbv cpu=%u xcr0=%llx refused by the cpu: #GP\n", c->index,
               (unsigned long long)v);
        return inject_gp(c);
    }
    c->ops->skip_insn(c);
}

/* INVD would drop the hypervisor's own dirty lines too: write back instead. */
static void do_invd(struct hv_cpu *c)
{
    __asm__ volatile("wbinvd" ::: "memory");
    c->ops->skip_insn(c);
}

/* VMX/SVM instructions: the guest sees a CPU without virtualization. */
static void do_virt_insn(struct hv_cpu *c)
{
    c->ops->inject_exception(c, VEC_UD, false, 0);
}

/* ---- INS/OUTS to an intercepted port: one iteration per exit --------------
 * Each iteration boundary is an instruction boundary to the guest (SDM Vol
 * 2B INS/OUTS, APM Vol 3), so with REP the RIP stays until RCX runs out.
 * The backend gives the memory operand's linear address; the core performs
 * the port access as written (hv_io_out watches for SLP_EN). */
static uint64_t addr_mask(unsigned asz)
{
    return asz == 0 ? 0xFFFFull : asz == 1 ? 0xFFFFFFFFull : ~0ull;
}

/* reg += delta in the address size (a 32-bit write zero-extends, 16 keeps). */
static void step_reg(uint64_t *reg, unsigned asz, int64_t delta)
{
    uint64_t m = addr_mask(asz), v = ((*reg & m) + (uint64_t)delta) & m;

    *reg = asz == 0 ? (*reg & ~m) | v : v;
}

int hv_io_string(struct hv_cpu *c, const struct hv_io_str *s)
{
    struct hv_regs *r = c->regs;
    uint64_t m = addr_mask(s->asz);
    int64_t delta = s->df ? -(int64_t)s->size : (int64_t)s->size;
    uint32_t v = 0;

    if (s->rep && !(r->rcx & m))
        return HV_IO_DONE;                         /* count 0: nothing to do */
    if (s->in) {
        v = port_in(s->port, s->size);
        if (hv_guest_write_linear(s->paging, s->la, &v, s->size))
            goto fault;
        step_reg(&r->rdi, s->asz, delta);
    } else {
        if (hv_guest_read_linear(s->paging, s->la, &v, s->size))
            goto fault;
        hv_io_out(c, s->port, s->size, v);
        step_reg(&r->rsi, s->asz, delta);
    }
    if (s->rep) {
        step_reg(&r->rcx, s->asz, -1);
        if (r->rcx & m)
            return HV_IO_AGAIN;
    }
    return HV_IO_DONE;
fault:
    hv_log("HV: io cpu=%u string %s port=%x la=%llx: not guest RAM, #GP\n", c->index,
           s->in ? "in" : "out", s->port, (unsigned long long)s->la);
    inject_gp(c);
    return HV_IO_FAULT;
}

/* The linear address of a string operand: segment base (none in 64-bit
 * code, but FS and GS, SDM Vol 1 3.4.2.1) plus the register in the
 * address size. */
uint64_t hv_io_string_la(const struct hv_guest_paging *p, uint64_t seg_base, bool fs_gs,
                         uint64_t reg, unsigned asz)
{
    bool code64 = (p->efer & EFER_LMA) && p->cs_long;

    return (code64 && !fs_gs ? 0 : seg_base) + (reg & addr_mask(asz));
}

static void (*const core_handlers[HV_EXIT_COUNT])(struct hv_cpu *) = {
    [HV_EXIT_CPUID] = do_cpuid,
    [HV_EXIT_RDMSR] = do_rdmsr,
    [HV_EXIT_WRMSR] = do_wrmsr,
    [HV_EXIT_XSETBV] = do_xsetbv,
    [HV_EXIT_HYPERCALL] = hv_hypercall,
    [HV_EXIT_INVD] = do_invd,
    [HV_EXIT_VIRT_INSN] = do_virt_insn,
};

void hv_handle_exit(struct hv_cpu *c, enum hv_exit kind)
{
    if ((unsigned)kind >= HV_EXIT_COUNT || !core_handlers[kind])
        hv_panic(c, "no-core-handler kind=%u\n", (unsigned)kind);
    core_handlers[kind](c);
}
