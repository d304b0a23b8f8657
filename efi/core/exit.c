/*
 * exit.c - exit handling shared by both vendors: CPUID, RDMSR/WRMSR, XSETBV,
 * INVD, virtualization instructions, hypercalls; exit statistics.
 *
 * A backend translates its raw exit code into enum hv_exit, counts it and
 * either handles it itself (CR access, INIT/SIPI, nested paging faults: the
 * vendor-specific ones) or calls hv_handle_exit() for the shared ones.
 */
#include "hv_core.h"
#include "hv_lib.h"

const char *const hv_exit_names[HV_EXIT_COUNT] = {
    [HV_EXIT_CPUID] = "cpuid",       [HV_EXIT_RDMSR] = "rdmsr",
    [HV_EXIT_WRMSR] = "wrmsr",       [HV_EXIT_XSETBV] = "xsetbv",
    [HV_EXIT_HYPERCALL] = "vmcall",  [HV_EXIT_INVD] = "invd",
    [HV_EXIT_VIRT_INSN] = "vmxinsn", [HV_EXIT_CR] = "cr",
    [HV_EXIT_INIT] = "init",         [HV_EXIT_SIPI] = "sipi",
    [HV_EXIT_NMI] = "nmi",           [HV_EXIT_NMI_WINDOW] = "nmiwin",
    [HV_EXIT_NPF] = "ept",           [HV_EXIT_TRIPLE_FAULT] = "triple",
    [HV_EXIT_OTHER] = "other",
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
    hv_log("%s\n", line);
}

static void set_rax_rdx(struct hv_regs *r, uint64_t v)
{
    r->rax = (uint32_t)v;
    r->rdx = v >> 32;
}

/* ---- CPUID ------------------------------------------------------------- */
#define CPUID1_ECX_VMX        (1u << 5)
#define CPUID1_ECX_OSXSAVE    (1u << 27)
#define CPUID1_ECX_HV         (1u << 31)
#define CPUID81_ECX_SVM       (1u << 2)

static struct cpuid_regs hv_leaf(uint32_t leaf)
{
    struct cpuid_regs o = {0, 0, 0, 0};

    if (leaf == HV_CPUID_BASE) {
        static const char sig[12] = HV_CPUID_SIGNATURE;

        o.eax = HV_CPUID_MAX;
        memcpy(&o.ebx, &sig[0], 4);
        memcpy(&o.ecx, &sig[4], 4);
        memcpy(&o.edx, &sig[8], 4);
    } else if (leaf == HV_CPUID_MAX) {
        o.eax = HV_INTERFACE_VERSION;
    }
    return o;
}

static void do_cpuid(struct hv_cpu *c)
{
    struct hv_regs *r = c->regs;
    uint32_t leaf = (uint32_t)r->rax;
    struct cpuid_regs o;

    if (leaf >= 0x40000000 && leaf <= 0x4FFFFFFF) {
        o = hv_leaf(leaf);
    } else {
        o = cpuid2(leaf, (uint32_t)r->rcx);
        if (leaf == 1) {
            o.ecx |= CPUID1_ECX_HV;
            o.ecx &= ~CPUID1_ECX_VMX;           /* no nested virtualization */
            /* OSXSAVE mirrors the guest's CR4, not the host's (SDM Vol 2A). */
            o.ecx &= ~CPUID1_ECX_OSXSAVE;
            if (c->ops->guest_cr4(c) & CR4_OSXSAVE)
                o.ecx |= CPUID1_ECX_OSXSAVE;
        } else if (leaf == 0x80000001) {
            o.ecx &= ~CPUID81_ECX_SVM;
        }
    }
    r->rax = o.eax;
    r->rbx = o.ebx;
    r->rcx = o.ecx;
    r->rdx = o.edx;
    c->ops->skip_insn(c);
}

/* ---- RDMSR / WRMSR ------------------------------------------------------- */
/* Only MSRs in the backend's intercept list, or outside the bitmap ranges,
 * get here.  Anything the real CPU refuses becomes #GP for the guest. */
#define MSR_VMX_FIRST 0x480
#define MSR_VMX_LAST  0x491

static void inject_gp(struct hv_cpu *c)
{
    c->ops->inject_exception(c, VEC_GP, true, 0);
}

static void do_rdmsr(struct hv_cpu *c)
{
    uint32_t msr = (uint32_t)c->regs->rcx;
    uint64_t v;

    if (msr >= MSR_VMX_FIRST && msr <= MSR_VMX_LAST)
        return inject_gp(c);                   /* as on a CPU without VMX */
    if (hv_rdmsr_safe(msr, &v))
        return inject_gp(c);
    if (msr == MSR_FEATURE_CONTROL)            /* locked, VMX off */
        v = (v | FC_LOCK) & ~(FC_VMX_IN_SMX | FC_VMX_OUTSIDE_SMX);
    set_rax_rdx(c->regs, v);
    c->ops->skip_insn(c);
}

static void do_wrmsr(struct hv_cpu *c)
{
    uint32_t msr = (uint32_t)c->regs->rcx;
    uint64_t v = (c->regs->rdx << 32) | (uint32_t)c->regs->rax;

    if (msr == MSR_FEATURE_CONTROL || (msr >= MSR_VMX_FIRST && msr <= MSR_VMX_LAST))
        return inject_gp(c);                   /* locked / not present */
    if (hv_wrmsr_safe(msr, v))
        return inject_gp(c);
    c->ops->skip_insn(c);
}

/* ---- XSETBV (SDM Vol 2C XSETBV, Vol 1 13.3) -------------------------------- */
static bool xcr0_valid(uint64_t v)
{
    struct cpuid_regs d = cpuid2(0xD, 0);
    uint64_t supported = ((uint64_t)d.edx << 32) | d.eax;
    uint64_t avx512 = 0xE0, amx = 0x60000;

    if (!(v & 1) || (v & ~supported))
        return false;
    if ((v & 4) && !(v & 2))                   /* AVX needs SSE */
        return false;
    if ((v & avx512) && ((v & avx512) != avx512 || !(v & 4)))
        return false;
    if ((v & amx) && (v & amx) != amx)
        return false;
    return true;
}

static void do_xsetbv(struct hv_cpu *c)
{
    struct hv_regs *r = c->regs;
    uint64_t v = (r->rdx << 32) | (uint32_t)r->rax;

    if (c->ops->guest_cpl(c) != 0 || (uint32_t)r->rcx != 0 || !xcr0_valid(v))
        return inject_gp(c);
    __asm__ volatile("xsetbv" : : "c"(0), "a"((uint32_t)v), "d"((uint32_t)(v >> 32)));
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
