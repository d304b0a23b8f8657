/*
 * host.c - the hypervisor's own execution environment (x86-64, shared by
 * both backends): GDT and TSS with IST stacks per CPU, one IDT, one set of
 * identity-mapping page tables.  All of it comes from the protected pool,
 * so nothing the host runs on belongs to the firmware or the OS.
 */
#include "hv_core.h"
#include "hv_lib.h"

#define STACK_PAGES 4
#define IST_PAGES   2
#define TSS_OFFSET  256          /* TSS follows the GDT in the same page */

static uint64_t *idt;
static uint64_t *pml4;

/* host.S */
extern const uint8_t host_exc_stubs[32][16];
extern const uint8_t host_irq_stubs[224][8];
extern const uint8_t hv_rdmsr_insn[], hv_wrmsr_insn[], hv_xsetbv_insn[], hv_msr_fault[];

struct host_frame {
    uint64_t r15, r14, r13, r12, r11, r10, r9, r8, rdi, rsi, rbp, rbx, rdx, rcx, rax;
    uint64_t vec, err, rip, cs, rflags, rsp, ss;
};

/* Called from host.S for every host exception except NMI. */
void host_exception(struct host_frame *f)
{
    uint64_t cr2;

    /* The fault-recovering accessors: resume at their error return. */
    if (f->vec == VEC_GP && (f->rip == (uint64_t)(uintptr_t)hv_rdmsr_insn ||
                             f->rip == (uint64_t)(uintptr_t)hv_wrmsr_insn ||
                             f->rip == (uint64_t)(uintptr_t)hv_xsetbv_insn)) {
        f->rip = (uint64_t)(uintptr_t)hv_msr_fault;
        return;
    }
    __asm__ volatile("mov %%cr2, %0" : "=r"(cr2));
    hv_log("HV: panic host-exception vec=%llu err=%llx rip=%llx rsp=%llx cr2=%llx\n",
           (unsigned long long)f->vec, (unsigned long long)f->err,
           (unsigned long long)f->rip, (unsigned long long)f->rsp,
           (unsigned long long)cr2);
    hv_fail_stop("host-exception");
}

/* An NMI in the host: another CPU's wake-up or the guest's (smp.c tells
 * them apart).  If it came after the last check before VM entry, the
 * backend's kick makes the entry exit at once, so the guest's NMI is not
 * held back until some unrelated exit. */
void host_nmi(void)
{
    struct hv_cpu *c = this_cpu();
    void (*kick)(void) = c->nmi_kick;

    __atomic_add_fetch(&c->nmi_pending, 1, __ATOMIC_SEQ_CST);
    if (kick)
        kick();
}

/* 64-bit interrupt gate, DPL 0 (SDM Vol 3A 6.14.1). */
static void set_gate(unsigned vec, const void *handler, unsigned ist)
{
    uint64_t a = (uint64_t)(uintptr_t)handler;

    idt[vec * 2] = (a & 0xFFFF) | ((uint64_t)HOST_CS << 16) | ((uint64_t)ist << 32) |
                   (0x8Eull << 40) | (((a >> 16) & 0xFFFF) << 48);
    idt[vec * 2 + 1] = a >> 32;
}

static int build_idt(void)
{
    idt = hv_alloc(1);
    if (!idt)
        return -1;
    for (unsigned v = 0; v < 32; v++)
        set_gate(v, host_exc_stubs[v], 0);
    set_gate(VEC_NMI, host_exc_stubs[VEC_NMI], 1);
    set_gate(VEC_DF, host_exc_stubs[VEC_DF], 2);
    set_gate(VEC_MC, host_exc_stubs[VEC_MC], 3);
    for (unsigned v = 32; v < 256; v++)
        set_gate(v, host_irq_stubs[v - 32], 0);
    return 0;
}

/* The local APIC part of an emulated INIT (SDM Vol 3A 11.4.7.3, 10.4.7.1):
 * software disabled, TPR 0, and the interrupts already pending in IRR/ISR
 * taken and dropped on the host's IDT, so the OS finds the APIC as after a
 * real INIT and no stale IRR.  Runs in the host on the CPU being INITed;
 * with SVM, GIF must be set for the window (the caller's job). */
void host_apic_init_reset(void)
{
    uint64_t base = rdmsr(MSR_APIC_BASE);
    volatile uint32_t *x = (volatile uint32_t *)(uintptr_t)(base & ~0xFFFull);
    bool x2 = base & (1ull << 10);

    if (!(base & (1ull << 11)))
        return;                                    /* globally disabled */
    for (int i = 0; i < 8; i++) {                  /* in-service vectors: EOI */
        if (x2)
            wrmsr(0x80B, 0);
        else
            x[0xB0 / 4] = 0;
    }
    if (x2) {
        wrmsr(0x808, 0);                           /* TPR */
    } else {
        x[0x80 / 4] = 0;
    }
    for (int i = 0; i < 16; i++)                   /* pending vectors: taken, EOI'd */
        __asm__ volatile("sti; nop; nop; cli" ::: "memory");
    if (x2)
        wrmsr(0x80F, rdmsr(0x80F) & ~0x100ull);   /* SVR: software disabled */
    else
        x[0xF0 / 4] &= ~0x100u;
}

/* Identity map: 1 GiB pages over 512 GiB where the CPU has them, otherwise
 * 2 MiB pages over the low 16 GiB.  The host only touches its own pool,
 * guest hypercall buffers (hv_guest_buffer checks the limit) and the local
 * APIC, so this is enough.  Cacheability comes from the MTRRs (PAT entry 0). */
#define PTE_P  1ull
#define PTE_RW 2ull
#define PTE_PS 0x80ull
static uint64_t host_map_limit;

static int build_page_tables(void)
{
    bool gb = cpuid2(0x80000001, 0).edx & (1u << 26);
    uint64_t *pdpt;

    pml4 = hv_alloc(1);
    pdpt = hv_alloc(1);
    if (!pml4 || !pdpt)
        return -1;
    pml4[0] = (uint64_t)(uintptr_t)pdpt | PTE_P | PTE_RW;
    if (gb) {
        for (uint64_t i = 0; i < 512; i++)
            pdpt[i] = (i << 30) | PTE_P | PTE_RW | PTE_PS;
        host_map_limit = 512ull << 30;
        return 0;
    }
    for (uint64_t g = 0; g < 16; g++) {
        uint64_t *pd = hv_alloc(1);

        if (!pd)
            return -1;
        pdpt[g] = (uint64_t)(uintptr_t)pd | PTE_P | PTE_RW;
        for (uint64_t i = 0; i < 512; i++)
            pd[i] = (g << 30) | (i << 21) | PTE_P | PTE_RW | PTE_PS;
    }
    host_map_limit = 16ull << 30;
    return 0;
}

int host_env_init(void)
{
    return build_idt() || build_page_tables() ? -1 : 0;
}

uint64_t host_cr3(void) { return (uint64_t)(uintptr_t)pml4; }
uint64_t host_idt_base(void) { return (uint64_t)(uintptr_t)idt; }
uint64_t host_tss_base(struct hv_cpu *c) { return (uint64_t)(uintptr_t)c->gdt + TSS_OFFSET; }

void *hv_guest_buffer(uint64_t gpa, uint64_t len)
{
    const struct hv_backend_ops *o;
    uint64_t pb, ps;

    hv_protected_range(&pb, &ps);
    if (len == 0 || gpa + len < gpa || gpa + len > host_map_limit)
        return NULL;
    if (gpa < pb + ps && gpa + len > pb)
        return NULL;             /* never let a guest point us at ourselves */
    if (hv_apic_page && gpa < hv_apic_page + 4096 && gpa + len > hv_apic_page)
        return NULL;             /* MMIO: a read or write there has effects */
    o = this_cpu()->ops;
    if (o && o->gpa_is_ram && !o->gpa_is_ram(gpa, len))
        return NULL;             /* not ordinary RAM in the EPT/NPT view */
    return (void *)(uintptr_t)gpa;
}

static void *stack_top(size_t pages)
{
    uint8_t *s = hv_alloc(pages);

    return s ? s + pages * 4096 : NULL;
}

/* GDT: null, 64-bit code 0x08, data 0x10, TSS 0x18 (16 bytes). */
int host_cpu_init(struct hv_cpu *c)
{
    uint64_t *gdt = hv_alloc(1);
    uint8_t *tss;
    uint64_t tb;
    void *ist[3];

    if (!gdt)
        return -1;
    c->gdt = gdt;
    c->stack_top = stack_top(STACK_PAGES);
    for (int i = 0; i < 3; i++)
        ist[i] = stack_top(IST_PAGES);
    if (!c->stack_top || !ist[0] || !ist[1] || !ist[2])
        return -1;
    tss = (uint8_t *)gdt + TSS_OFFSET;
    tb = (uint64_t)(uintptr_t)tss;
    gdt[1] = 0x00AF9B000000FFFFull;            /* code: P, DPL0, L, G */
    gdt[2] = 0x00CF93000000FFFFull;            /* data: P, DPL0, D, G */
    gdt[3] = 0x67 | ((tb & 0xFFFFFF) << 16) | (0x8Bull << 40) | (((tb >> 24) & 0xFF) << 56);
    gdt[4] = tb >> 32;                          /* busy 64-bit TSS */
    for (int i = 0; i < 3; i++)                 /* IST1..3 at TSS+0x24 */
        memcpy(tss + 0x24 + 8 * i, &ist[i], 8);
    *(uint16_t *)(tss + 0x66) = 0x68;           /* no I/O permission bitmap */
    return 0;
}
