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
    [HV_EXIT_OTHER] = "other",       [HV_EXIT_APIC_WRITE] = "apic",
    [HV_EXIT_IO] = "io",
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

/* ---- AMD: SVM hidden (issue 7; for the CPUID/MSR policy tables) ------------
 * The guest sees an AMD CPU whose firmware disabled SVM (APM Vol 2 15.4,
 * 15.30): CPUID 8000_0001 ECX[2] clear and leaf 8000_000A all zeros;
 * VM_CR reads LOCK and SVMDIS set and cannot be written; VM_HSAVE_PA raises
 * #GP.  (EFER.SVME reads 0 in efi/svm: EFER is VMCB state.)  The SVM
 * instructions come here as HV_EXIT_VIRT_INSN: #UD.  Only the SVM backend
 * intercepts these MSRs. */
#define CPUID_SVM_LEAF        0x8000000Au
#define MSR_VM_CR             0xC0010114u
#define   VM_CR_LOCK          (1ull << 3)
#define   VM_CR_SVMDIS        (1ull << 4)
#define MSR_VM_HSAVE_PA       0xC0010117u

/* 1: handled (*v set for a read), -1: #GP, 0: not an SVM MSR. */
static int amd_svm_msr(uint32_t msr, bool write, uint64_t *v)
{
    if (msr == MSR_VM_CR && !write) {
        if (hv_rdmsr_safe(msr, v))
            *v = 0;
        *v |= VM_CR_LOCK | VM_CR_SVMDIS;
        return 1;
    }
    if (msr == MSR_VM_CR || msr == MSR_VM_HSAVE_PA)
        return -1;
    return 0;
}
/* ---- end of the AMD block ---------------------------------------------------- */

/* ---- CPUID ------------------------------------------------------------- */
#define CPUID1_ECX_VMX        (1u << 5)
#define CPUID1_ECX_OSXSAVE    (1u << 27)
#define CPUID1_ECX_HV         (1u << 31)
#define CPUID81_ECX_SVM       (1u << 2)

/* The signature as the three registers read it (no memcpy on the exit path:
 * freestanding, it would be a real call). */
static const union {
    char text[12];
    uint32_t reg[3];                           /* EBX, ECX, EDX */
} hv_signature = {HV_CPUID_SIGNATURE};

static void hv_leaf(struct hv_regs *r, uint32_t leaf)
{
    r->rax = r->rbx = r->rcx = r->rdx = 0;
    if (leaf == HV_CPUID_BASE) {
        r->rax = HV_CPUID_MAX;
        r->rbx = hv_signature.reg[0];
        r->rcx = hv_signature.reg[1];
        r->rdx = hv_signature.reg[2];
    } else if (leaf == HV_CPUID_MAX) {
        r->rax = HV_INTERFACE_VERSION;
    }
}

/* Leaf 1 ECX: "hypervisor present", no VMX (no nested virtualization), and
 * OSXSAVE from the guest's CR4, not the host's (SDM Vol 2A CPUID).
 * noinline: it calls the backend, and inlined it would make do_cpuid keep
 * more in callee-saved registers on every CPUID exit. */
static __attribute__((noinline)) void cpuid1_ecx(struct hv_cpu *c)
{
    uint64_t ecx = (c->regs->rcx | CPUID1_ECX_HV) & ~(CPUID1_ECX_VMX | CPUID1_ECX_OSXSAVE);

    if (c->ops->guest_cr4(c) & CR4_OSXSAVE)
        ecx |= CPUID1_ECX_OSXSAVE;
    c->regs->rcx = ecx;
}

/* Every CPUID exits (SDM Vol 3C 26.1.2), so this is the hottest handler: the
 * results go straight into the saved registers.  The backend skips the
 * instruction itself on its CPUID fast path (hv_cpuid_emulate), or do_cpuid
 * does through the ops table. */
void hv_cpuid_emulate(struct hv_cpu *c)
{
    struct hv_regs *r = c->regs;
    uint32_t leaf = (uint32_t)r->rax;

    if ((leaf >> 28) == 4)                     /* 0x40000000-0x4FFFFFFF */
        hv_leaf(r, leaf);
    else                                       /* 32-bit results zero the upper halves */
        __asm__ volatile("cpuid" : "=a"(r->rax), "=b"(r->rbx), "=c"(r->rcx), "=d"(r->rdx)
                         : "a"(leaf), "c"((uint32_t)r->rcx));
    if (leaf == 1)
        cpuid1_ecx(c);
    else if (leaf == 0x80000001)
        r->rcx &= ~CPUID81_ECX_SVM;
    else if (leaf == CPUID_SVM_LEAF)           /* AMD hiding, see below */
        r->rax = r->rbx = r->rcx = r->rdx = 0;
}

static void do_cpuid(struct hv_cpu *c)
{
    hv_cpuid_emulate(c);
    c->ops->skip_insn(c);
}

/* ---- RDMSR / WRMSR ------------------------------------------------------- */
/* Only MSRs in the backend's intercept list, or outside the bitmap ranges,
 * get here.  Anything the real CPU refuses becomes #GP for the guest. */
#define MSR_VMX_FIRST 0x480
#define MSR_VMX_LAST  0x491
#define MSR_X2APIC_ICR 0x830

static void inject_gp(struct hv_cpu *c)
{
    c->ops->inject_exception(c, VEC_GP, true, 0);
}

static void do_rdmsr(struct hv_cpu *c)
{
    uint32_t msr = (uint32_t)c->regs->rcx;
    uint64_t v;
    int amd = amd_svm_msr(msr, false, &v);

    if (amd < 0 || (msr >= MSR_VMX_FIRST && msr <= MSR_VMX_LAST))
        return inject_gp(c);                   /* as on a CPU without VMX/SVM */
    if (!amd && hv_rdmsr_safe(msr, &v))
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

    if (msr == MSR_FEATURE_CONTROL || (msr >= MSR_VMX_FIRST && msr <= MSR_VMX_LAST) ||
        amd_svm_msr(msr, true, &v))
        return inject_gp(c);                   /* locked / not present */
    if (msr == MSR_X2APIC_ICR && (rdmsr(MSR_APIC_BASE) & (1ull << 10))) {
        hv_x2apic_icr_write(c, v);             /* INIT/SIPI emulated (smp.c) */
        return c->ops->skip_insn(c);
    }
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
