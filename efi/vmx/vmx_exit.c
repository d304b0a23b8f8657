/*
 * vmx_exit.c - VM-exit decoding and the VMX-specific handlers.
 *
 * Every exit goes through one table indexed by the basic exit reason
 * (SDM Vol 3C App. C), bounds-checked.  An entry names the reason, gives
 * its arch-neutral kind (counted, and handled by efi/core/exit.c when the
 * entry has no VMX handler) and optionally a VMX handler.  A reason with no
 * kind and no handler is unexpected: panic with its decoded name.
 */
#include "vmx.h"
#include "hv_lib.h"

typedef void (*vmx_handler)(struct hv_cpu *c, uint64_t qual);

struct exit_entry {
    const char *name;
    enum hv_exit kind;
    vmx_handler fn;        /* NULL: core handler for kind, or panic if OTHER */
    bool insn;             /* caused by an instruction, so never during event
                              delivery: no IDT-vectoring info (SDM 27.2.4) */
};

static void exit_nmi(struct hv_cpu *c, uint64_t qual);
static void exit_triple_fault(struct hv_cpu *c, uint64_t qual);
static void exit_init(struct hv_cpu *c, uint64_t qual);
static void exit_sipi(struct hv_cpu *c, uint64_t qual);
static void exit_nmi_window(struct hv_cpu *c, uint64_t qual);
static void exit_cr(struct hv_cpu *c, uint64_t qual);
static void exit_ept_violation(struct hv_cpu *c, uint64_t qual);
static void exit_io(struct hv_cpu *c, uint64_t qual);
static void exit_preempt(struct hv_cpu *c, uint64_t qual);
static void exit_task_switch(struct hv_cpu *c, uint64_t qual);

#define UNEXPECTED(n) {n, HV_EXIT_OTHER, NULL, false}
#define VIRT_INSN(n) {n, HV_EXIT_VIRT_INSN, NULL, true}
static const struct exit_entry exit_table[] = {
    [0] = {"exception-or-nmi", HV_EXIT_NMI, exit_nmi, false},
    [1] = UNEXPECTED("external-interrupt"),
    [2] = {"triple-fault", HV_EXIT_TRIPLE_FAULT, exit_triple_fault, false},
    [3] = {"init", HV_EXIT_INIT, exit_init, false},
    [4] = {"sipi", HV_EXIT_SIPI, exit_sipi, false},
    [5] = UNEXPECTED("io-smi"),
    [6] = UNEXPECTED("other-smi"),
    [7] = UNEXPECTED("interrupt-window"),
    [8] = {"nmi-window", HV_EXIT_NMI_WINDOW, exit_nmi_window, false},
    [9] = {"task-switch", HV_EXIT_OTHER, exit_task_switch, false},
    [10] = {"cpuid", HV_EXIT_CPUID, NULL, true},
    [11] = VIRT_INSN("getsec"),
    [12] = UNEXPECTED("hlt"),
    [13] = {"invd", HV_EXIT_INVD, NULL, true},
    [14] = UNEXPECTED("invlpg"),
    [15] = UNEXPECTED("rdpmc"),
    [16] = UNEXPECTED("rdtsc"),
    [17] = UNEXPECTED("rsm"),
    [18] = {"vmcall", HV_EXIT_HYPERCALL, NULL, true},
    [19] = VIRT_INSN("vmclear"),
    [20] = VIRT_INSN("vmlaunch"),
    [21] = VIRT_INSN("vmptrld"),
    [22] = VIRT_INSN("vmptrst"),
    [23] = VIRT_INSN("vmread"),
    [24] = VIRT_INSN("vmresume"),
    [25] = VIRT_INSN("vmwrite"),
    [26] = VIRT_INSN("vmxoff"),
    [27] = VIRT_INSN("vmxon"),
    [28] = {"cr-access", HV_EXIT_CR, exit_cr, true},
    [29] = UNEXPECTED("mov-dr"),
    [30] = {"io-instruction", HV_EXIT_IO, exit_io, true},
    [31] = {"rdmsr", HV_EXIT_RDMSR, NULL, true},
    [32] = {"wrmsr", HV_EXIT_WRMSR, NULL, true},
    [33] = UNEXPECTED("entry-fail-guest-state"),
    [34] = UNEXPECTED("entry-fail-msr-loading"),
    [36] = UNEXPECTED("mwait"),
    [37] = UNEXPECTED("monitor-trap-flag"),
    [39] = UNEXPECTED("monitor"),
    [40] = UNEXPECTED("pause"),
    [41] = UNEXPECTED("entry-fail-machine-check"),
    [43] = UNEXPECTED("tpr-below-threshold"),
    [44] = UNEXPECTED("apic-access"),
    [45] = UNEXPECTED("virtualized-eoi"),
    [46] = UNEXPECTED("gdtr-idtr-access"),
    [47] = UNEXPECTED("ldtr-tr-access"),
    [48] = {"ept-violation", HV_EXIT_NPF, exit_ept_violation, false},
    [49] = UNEXPECTED("ept-misconfiguration"),
    [50] = VIRT_INSN("invept"),
    [51] = UNEXPECTED("rdtscp"),
    [52] = {"preemption-timer", HV_EXIT_NMI, exit_preempt, false},
    [53] = VIRT_INSN("invvpid"),
    [54] = UNEXPECTED("wbinvd"),
    [55] = {"xsetbv", HV_EXIT_XSETBV, NULL, true},
    [56] = UNEXPECTED("apic-write"),
    [57] = UNEXPECTED("rdrand"),
    [58] = UNEXPECTED("invpcid"),
    [59] = VIRT_INSN("vmfunc"),
    [60] = UNEXPECTED("encls"),
    [61] = UNEXPECTED("rdseed"),
    [62] = UNEXPECTED("pml-full"),
    [63] = UNEXPECTED("xsaves"),
    [64] = UNEXPECTED("xrstors"),
};
#define EXIT_TABLE_SIZE (sizeof(exit_table) / sizeof(exit_table[0]))

static const char *reason_name(uint32_t basic)
{
    if (basic < EXIT_TABLE_SIZE && exit_table[basic].name)
        return exit_table[basic].name;
    return "unknown-exit";
}

/* ---- services for the core --------------------------------------------------- */
static inline __attribute__((always_inline)) void skip_insn(void)
{
    uint32_t intr = vmcs_read32(VMCS_GUEST_INTERRUPTIBILITY);

    vmcs_writenat(VMCS_GUEST_RIP,
                  vmcs_readnat(VMCS_GUEST_RIP) + vmcs_read32(VMCS_EXIT_INSN_LEN));
    /* STI / MOV SS blocking ends with the instruction we just completed. */
    if (intr & (INTR_BLOCK_STI | INTR_BLOCK_MOVSS))
        vmcs_write32(VMCS_GUEST_INTERRUPTIBILITY, intr & ~(INTR_BLOCK_STI | INTR_BLOCK_MOVSS));
}

void vmx_skip_insn(struct hv_cpu *c)
{
    (void)c;
    skip_insn();
}

/* Event injection (SDM 25.8.3).  In real mode no error code is pushed
 * (SDM 26.2.1.3), so it is only delivered with CR0.PE = 1.  A fault pushes
 * RFLAGS with RF set, so the handler's IRET does not re-trigger an
 * instruction breakpoint (SDM Vol 3A 18.3.1.1); hardware sets it, an
 * injected event takes RFLAGS as it is, so we set it (not for the traps
 * #DB, #BP, #OF). */
#define RFLAGS_RF (1ull << 16)

void vmx_inject_exception(struct hv_cpu *c, uint8_t vec, bool has_err, uint32_t err)
{
    uint32_t info = vec | INTR_TYPE_HW_EXC | INTR_INFO_VALID;

    (void)c;
    if (has_err && (vmcs_readnat(VMCS_GUEST_CR0) & CR0_PE)) {
        info |= INTR_ERR_VALID;
        vmcs_write32(VMCS_ENTRY_EXC_ERROR, err);
    }
    if (vec != 1 && vec != 3 && vec != 4)
        vmcs_writenat(VMCS_GUEST_RFLAGS, vmcs_readnat(VMCS_GUEST_RFLAGS) | RFLAGS_RF);
    vmcs_write32(VMCS_ENTRY_INTR_INFO, info);
}

/* CPL is SS.DPL (SDM Vol 3C 25.4.1). */
unsigned vmx_guest_cpl(struct hv_cpu *c)
{
    (void)c;
    return (vmcs_read32(VMCS_GUEST_AR(SEG_SS)) >> 5) & 3;
}

uint64_t vmx_guest_rip(struct hv_cpu *c)
{
    (void)c;
    return vmcs_readnat(VMCS_GUEST_RIP);
}

uint64_t vmx_guest_cr4(struct hv_cpu *c)
{
    (void)c;
    return (vmcs_readnat(VMCS_GUEST_CR4) & ~vmx.cr4_mask) |
           (vmcs_readnat(VMCS_CR4_SHADOW) & vmx.cr4_mask);
}

void vmx_dump_guest(struct hv_cpu *c)
{
    struct hv_regs *r = c->regs;

    hv_log("HV: guest cpu=%u rip=%llx rsp=%llx rflags=%llx cr0=%llx cr3=%llx cr4=%llx "
           "efer=%llx\n", c->index,
           (unsigned long long)vmcs_readnat(VMCS_GUEST_RIP),
           (unsigned long long)vmcs_readnat(VMCS_GUEST_RSP),
           (unsigned long long)vmcs_readnat(VMCS_GUEST_RFLAGS),
           (unsigned long long)vmcs_readnat(VMCS_GUEST_CR0),
           (unsigned long long)vmcs_readnat(VMCS_GUEST_CR3),
           (unsigned long long)vmcs_readnat(VMCS_GUEST_CR4),
           (unsigned long long)vmcs_read64(VMCS_GUEST_EFER));
    for (int s = SEG_ES; s < SEG_COUNT; s++)
        hv_log("HV: guest seg%d sel=%x base=%llx limit=%x ar=%x\n", s,
               vmcs_read16(VMCS_GUEST_SEL(s)),
               (unsigned long long)vmcs_readnat(VMCS_GUEST_BASE(s)),
               vmcs_read32(VMCS_GUEST_LIMIT(s)), vmcs_read32(VMCS_GUEST_AR(s)));
    hv_log("HV: guest gdtr=%llx/%x idtr=%llx/%x activity=%u intr=%x entry-ctls=%x\n",
           (unsigned long long)vmcs_readnat(VMCS_GUEST_GDTR_BASE),
           vmcs_read32(VMCS_GUEST_GDTR_LIMIT),
           (unsigned long long)vmcs_readnat(VMCS_GUEST_IDTR_BASE),
           vmcs_read32(VMCS_GUEST_IDTR_LIMIT), vmcs_read32(VMCS_GUEST_ACTIVITY),
           vmcs_read32(VMCS_GUEST_INTERRUPTIBILITY), vmcs_read32(VMCS_ENTRY_CTLS));
    hv_dump_regs(r);
}

/* ---- NMIs (SDM Vol 3C 25.3, 26.6.1.2) ------------------------------------------ */
static void exit_nmi(struct hv_cpu *c, uint64_t qual)
{
    uint32_t info = vmcs_read32(VMCS_EXIT_INTR_INFO);

    if ((info & 0x700) != INTR_TYPE_NMI)
        hv_panic(c, "exception vec=%u info=%x qual=%llx\n", info & 0xFF, info,
                 (unsigned long long)qual);
    __atomic_add_fetch(&c->nmi_pending, 1, __ATOMIC_SEQ_CST);
    /* NMIs stay blocked after an NMI-induced exit until the host executes an
     * IRET (Bochs keeps them blocked across VM entry): IRET to ourselves, so
     * the next NMI (another CPU's request) is not held back. */
    __asm__ volatile("mov %%ss, %%rax; push %%rax; push %%rsp; addq $8, (%%rsp); pushfq;"
                     "mov %%cs, %%rax; push %%rax; lea 1f(%%rip), %%rax; push %%rax;"
                     "iretq; 1:" : : : "rax", "memory", "cc");
}

/* The host NMI handler's kick (NMI context: raw VMWRITEs, nothing logged):
 * the VMX-preemption timer at 0 makes the next VM entry exit before any
 * guest instruction (SDM Vol 3C 26.5.1), and that exit's poll delivers the
 * NMI.  Only the kick and exit_preempt write the pin controls after set-up. */
void vmx_nmi_kick(void)
{
    uint64_t pin = vmx.pin | PIN_PREEMPT_TIMER;

    __asm__ volatile("vmwrite %1, %0" : : "r"((uint64_t)0x482E), "r"(0ull) : "cc");
    __asm__ volatile("vmwrite %1, %0" : : "r"((uint64_t)0x4000), "r"(pin) : "cc");
}

static void exit_preempt(struct hv_cpu *c, uint64_t qual)
{
    (void)c;
    (void)qual;
    vmcs_write32(VMCS_PIN_CTLS, vmx.pin);          /* then the poll below */
}

static void exit_nmi_window(struct hv_cpu *c, uint64_t qual)
{
    (void)c;
    (void)qual;
    vmcs_write32(VMCS_PROC_CTLS, vmcs_read32(VMCS_PROC_CTLS) & ~PROC_NMI_WINDOW);
}

/* Injects a pending NMI now, or asks for an exit once the guest can take it. */
static void deliver_pending_nmi(struct hv_cpu *c)
{
    uint32_t intr, busy = INTR_BLOCK_STI | INTR_BLOCK_MOVSS | INTR_BLOCK_NMI;

    intr = vmcs_read32(VMCS_GUEST_INTERRUPTIBILITY);
    if ((intr & busy) || (vmcs_read32(VMCS_ENTRY_INTR_INFO) & INTR_INFO_VALID) ||
        vmcs_read32(VMCS_GUEST_ACTIVITY) == ACTIVITY_WAIT_SIPI) {
        if (vmx.pin & PIN_VIRTUAL_NMIS)
            vmcs_write32(VMCS_PROC_CTLS, vmcs_read32(VMCS_PROC_CTLS) | PROC_NMI_WINDOW);
        return;
    }
    vmcs_write32(VMCS_ENTRY_INTR_INFO, VEC_NMI | INTR_TYPE_NMI | INTR_INFO_VALID);
    hv_nmi_injected(c);
    /* The injection sets virtual-NMI blocking; the window opens after the
     * guest's IRET (SDM Vol 3C 25.3, 26.7.1): the latched one then. */
    if (c->guest_nmi && (vmx.pin & PIN_VIRTUAL_NMIS))
        vmcs_write32(VMCS_PROC_CTLS, vmcs_read32(VMCS_PROC_CTLS) | PROC_NMI_WINDOW);
}

/* An exit during event delivery (IDT-vectoring info v valid) loses the
 * event unless it is injected again (SDM Vol 3C 28.2.4). */
static void requeue_vectored_event(uint32_t v)
{
    uint32_t type = (v >> 8) & 7;

    vmcs_write32(VMCS_ENTRY_INTR_INFO, v & 0x80000FFFu);
    if (v & INTR_ERR_VALID)
        vmcs_write32(VMCS_ENTRY_EXC_ERROR, vmcs_read32(VMCS_IDT_VECTORING_ERROR));
    if (type == 4 || type == 5 || type == 6)       /* software int / exception */
        vmcs_write32(VMCS_ENTRY_INSN_LEN, vmcs_read32(VMCS_EXIT_INSN_LEN));
}

/* A hardware task switch (32-bit protected mode only: CALL/JMP to a TSS or
 * task gate, IRET with NT, a task gate in the IDT) always exits (SDM Vol 3C
 * 26.1.2).  We do not emulate it: the guest gets a logged #GP(0) rather
 * than a hypervisor that stops (README: guest interface). */
static void exit_task_switch(struct hv_cpu *c, uint64_t qual)
{
    hv_log("HV: task-switch cpu=%u selector=%llx source=%llu rip=%llx: not emulated, #GP\n",
           c->index, (unsigned long long)(qual & 0xFFFF), (unsigned long long)((qual >> 30) & 3),
           (unsigned long long)vmcs_readnat(VMCS_GUEST_RIP));
    vmcs_write32(VMCS_ENTRY_INTR_INFO, 0);         /* #GP replaces a vectored event */
    vmx_inject_exception(c, VEC_GP, true, 0);
}

/* ---- triple fault, INIT, SIPI ------------------------------------------------- */
/* A triple fault is how a guest resets the machine (SDM Vol 3A 6.15: the
 * processor enters shutdown; the chipset resets on the shutdown cycle).
 * Many OSes reboot this way (Linux reboot=t): record it, then do what the
 * hardware would, the platform reset (core/panic.c); not a panic. */
static void exit_triple_fault(struct hv_cpu *c, uint64_t qual)
{
    (void)qual;
    hv_guest_triple_fault(c);
}

static void set_seg(enum vmx_seg s, uint16_t sel, uint64_t base, uint32_t limit, uint32_t ar)
{
    vmcs_write16(VMCS_GUEST_SEL(s), sel);
    vmcs_writenat(VMCS_GUEST_BASE(s), base);
    vmcs_write32(VMCS_GUEST_LIMIT(s), limit);
    vmcs_write32(VMCS_GUEST_AR(s), ar);
}

/* INVVPID for our one VPID (SDM Vol 3C 29.4.3.3): single-context where
 * EPT_VPID_CAP[41] allows it, else all-context (bit 42; vpid_check made
 * sure one of them exists). */
void vmx_flush_vpid(void)
{
    if (!(vmx.proc2 & PROC2_VPID))
        return;
    if (vmx.ept_vpid_cap & (1ull << 41))
        vmx_invvpid(1, 1);
    else
        vmx_invvpid(2, 0);
}

static void flush_guest_tlb(void)
{
    vmx_flush_vpid();
}

/* INIT: the architectural INIT state (SDM Vol 3A 10.1.1, Table 10-1) and
 * then wait-for-SIPI (SDM Vol 3C 27.2 "INIT signals"). */
static void init_state(struct hv_cpu *c)
{
    struct hv_regs *r = c->regs;
    const uint64_t cr0 = 0x60000010;               /* CD NW ET */

    memset(r, 0, sizeof(*r));
    r->rdx = cpuid2(1, 0).eax;                     /* family/model/stepping */
    vmcs_writenat(VMCS_CR0_SHADOW, cr0);
    vmcs_writenat(VMCS_GUEST_CR0, (cr0 | (vmx.cr0_fixed0 & ~(CR0_PE | CR0_PG))) &
                                  vmx.cr0_fixed1);
    vmcs_writenat(VMCS_CR4_SHADOW, 0);
    vmcs_writenat(VMCS_GUEST_CR4, vmx.cr4_fixed0);
    vmcs_writenat(VMCS_GUEST_CR3, 0);
    vmcs_write64(VMCS_GUEST_EFER, 0);
    vmcs_write32(VMCS_ENTRY_CTLS, vmcs_read32(VMCS_ENTRY_CTLS) & ~ENTRY_IA32E_GUEST);
    set_seg(SEG_CS, 0xF000, 0xFFFF0000, 0xFFFF, 0x9B);
    for (enum vmx_seg s = SEG_ES; s <= SEG_GS; s++)
        if (s != SEG_CS)
            set_seg(s, 0, 0, 0xFFFF, 0x93);
    set_seg(SEG_LDTR, 0, 0, 0xFFFF, 0x82);
    set_seg(SEG_TR, 0, 0, 0xFFFF, 0x8B);
    vmcs_writenat(VMCS_GUEST_GDTR_BASE, 0);
    vmcs_write32(VMCS_GUEST_GDTR_LIMIT, 0xFFFF);
    vmcs_writenat(VMCS_GUEST_IDTR_BASE, 0);
    vmcs_write32(VMCS_GUEST_IDTR_LIMIT, 0xFFFF);
    vmcs_writenat(VMCS_GUEST_RIP, 0xFFF0);
    vmcs_writenat(VMCS_GUEST_RSP, 0);
    vmcs_writenat(VMCS_GUEST_RFLAGS, 2);
    vmcs_writenat(VMCS_GUEST_DR7, 0x400);
    vmcs_write64(VMCS_GUEST_DEBUGCTL, 0);
    vmcs_write32(VMCS_GUEST_INTERRUPTIBILITY, 0);
    vmcs_writenat(VMCS_GUEST_PENDING_DBG, 0);
    vmcs_write32(VMCS_ENTRY_INTR_INFO, 0);
    vmcs_write32(VMCS_PROC_CTLS, vmcs_read32(VMCS_PROC_CTLS) & ~PROC_NMI_WINDOW);
    c->guest_nmi = 0;
    flush_guest_tlb();
}

static void exit_init(struct hv_cpu *c, uint64_t qual)
{
    (void)qual;
    HV_TRACE("HV: trace cpu=%u init rip=%llx\n", c->index,
             (unsigned long long)vmcs_readnat(VMCS_GUEST_RIP));
    init_state(c);
    if (!(vmx.misc & (1u << 8)))
        hv_panic(c, "init: wait-for-SIPI activity state unsupported\n");
    vmcs_write32(VMCS_GUEST_ACTIVITY, ACTIVITY_WAIT_SIPI);
}

/* SIPI: real-mode start at vector << 12 (SDM Vol 3A 9.4.4.1). */
static void exit_sipi(struct hv_cpu *c, uint64_t qual)
{
    vmx_start_sipi(c, qual & 0xFF);
}

/* Emulated INIT (smp.c): the same INIT state, but the wait for SIPI is the
 * HLT activity state with RFLAGS.IF = 0, which only NMIs (the emulated
 * SIPI's wake-up, with NMI exiting), SMI and INIT end.  The real
 * wait-for-SIPI state would block those NMIs (SDM Vol 3C 26.4.2). */
void vmx_park_init(struct hv_cpu *c)
{
    HV_TRACE("HV: trace cpu=%u emulated init rip=%llx\n", c->index,
             (unsigned long long)vmcs_readnat(VMCS_GUEST_RIP));
    init_state(c);
    vmcs_write32(VMCS_GUEST_ACTIVITY, ACTIVITY_HLT);
}

void vmx_start_sipi(struct hv_cpu *c, uint8_t vec)
{
    uint32_t vector = vec;

    HV_TRACE("HV: trace cpu=%u sipi vector=%x\n", c->index, vector);
    set_seg(SEG_CS, (uint16_t)(vector << 8), (uint64_t)vector << 12, 0xFFFF, 0x9B);
    vmcs_writenat(VMCS_GUEST_RIP, 0);
    /* The exit saved the wait-for-SIPI state's blocking bits (SMI blocked):
     * a fresh start has none. */
    vmcs_write32(VMCS_GUEST_INTERRUPTIBILITY, 0);
    vmcs_write32(VMCS_GUEST_ACTIVITY, ACTIVITY_ACTIVE);
    flush_guest_tlb();
}

/* Leaving VMX would drop an event being injected or an NMI still owed to
 * the guest: let it be delivered first, then exit at the NMI window. */
bool vmx_can_leave_now(struct hv_cpu *c)
{
    if (!(vmcs_read32(VMCS_ENTRY_INTR_INFO) & INTR_INFO_VALID) && !c->guest_nmi)
        return true;
    vmcs_write32(VMCS_PROC_CTLS, vmcs_read32(VMCS_PROC_CTLS) | PROC_NMI_WINDOW);
    return false;
}

/* A CPU parked in the emulated wait-for-SIPI state leaves VMX and halts in
 * the host (its memory is never reclaimed): a real INIT-SIPI from the OS
 * starts it as before. */
void vmx_leave_parked(struct hv_cpu *c)
{
    c->nmi_kick = NULL;
    vmx_clear((uint64_t)(uintptr_t)vmx_of(c)->vmcs);
    vmx_off();
    write_cr4(read_cr4() & ~CR4_VMXE);
    halt_forever();
}

uint64_t vmx_guest_rflags(struct hv_cpu *c, uint64_t mask, uint64_t val)
{
    uint64_t f = vmcs_readnat(VMCS_GUEST_RFLAGS);

    (void)c;
    if (mask)
        vmcs_writenat(VMCS_GUEST_RFLAGS, (f & ~mask) | (val & mask));
    return f;
}

void vmx_guest_paging(struct hv_cpu *c, struct hv_guest_paging *p)
{
    uint32_t ar = vmcs_read32(VMCS_GUEST_AR(SEG_CS));

    (void)c;
    p->cr0 = vmcs_readnat(VMCS_GUEST_CR0);
    p->cr3 = vmcs_readnat(VMCS_GUEST_CR3);
    p->cr4 = vmcs_readnat(VMCS_GUEST_CR4);
    p->efer = vmcs_read64(VMCS_GUEST_EFER);
    p->cs_base = vmcs_readnat(VMCS_GUEST_BASE(SEG_CS));
    p->rip = vmcs_readnat(VMCS_GUEST_RIP);
    p->rsp = vmcs_readnat(VMCS_GUEST_RSP);
    p->cs_long = (ar >> 13) & 1;
    p->cs_32 = (ar >> 14) & 1;
    p->gdtr_base = vmcs_readnat(VMCS_GUEST_GDTR_BASE);
    p->gdtr_limit = vmcs_read32(VMCS_GUEST_GDTR_LIMIT);
    p->idtr_base = vmcs_readnat(VMCS_GUEST_IDTR_BASE);
}

/* ---- control-register access (SDM Vol 3C 28.1.3, Table 28-3) ------------------- */
static uint64_t *gpr(struct hv_cpu *c, unsigned n, uint64_t *rsp)
{
    /* struct hv_regs is in the SDM's register-number order. */
    return n == 4 ? rsp : &((uint64_t *)c->regs)[n];
}

#define CR0_WP    (1ull << 16)
#define CR0_NW    (1ull << 29)
#define CR0_CD    (1ull << 30)
#define CR4_PAE   (1ull << 5)
#define CR4_LA57  (1ull << 12)
#define CR4_PCIDE (1ull << 17)
#define CR4_CET   (1ull << 23)

static bool guest_cs_l(void)
{
    return (vmcs_read32(VMCS_GUEST_AR(SEG_CS)) >> 13) & 1;
}

/* MOV to CR0's #GP(0) conditions (SDM Vol 2B "MOV - Move to/from Control
 * Registers", Vol 3A 2.5, 10.8.5), in the SDM's order.  The CPU checked
 * CPL before the exit.  old: CR0 as the guest sees it. */
static bool cr0_write_faults(uint64_t val, uint64_t old)
{
    uint64_t efer = vmcs_read64(VMCS_GUEST_EFER), cr4 = vmx_guest_cr4(NULL);

    if (val >> 32)                                 /* reserved CR0[63:32] */
        return true;
    if ((val & CR0_PG) && !(val & CR0_PE))         /* invalid combinations */
        return true;
    if ((val & CR0_NW) && !(val & CR0_CD))
        return true;
    if (!(val & CR0_PG) && (old & CR0_PG) &&       /* paging off in 64-bit mode */
        (((efer & EFER_LMA) && guest_cs_l()) || (cr4 & CR4_PCIDE)))
        return true;
    if ((val & CR0_PG) && !(old & CR0_PG) && (efer & EFER_LME) &&
        (!(cr4 & CR4_PAE) || guest_cs_l()))        /* IA-32e entry: PAE, CS.L = 0 */
        return true;
    if (!(val & CR0_WP) && (cr4 & CR4_CET))
        return true;
    return false;
}

static void emulate_cr0(struct hv_cpu *c, uint64_t val)
{
    uint64_t old = vmcs_readnat(VMCS_GUEST_CR0), efer = vmcs_read64(VMCS_GUEST_EFER);
    uint64_t seen = (old & ~vmx.cr0_mask) | (vmcs_readnat(VMCS_CR0_SHADOW) & vmx.cr0_mask);
    uint64_t real = (val | (vmx.cr0_fixed0 & ~(CR0_PE | CR0_PG))) & vmx.cr0_fixed1;
    uint32_t entry = vmcs_read32(VMCS_ENTRY_CTLS);

    if (cr0_write_faults(val, seen))
        return vmx_inject_exception(c, VEC_GP, true, 0);
    /* Paging on/off with EFER.LME set enters/leaves IA-32e mode (SDM 10.8.5). */
    if ((val ^ old) & CR0_PG && (efer & EFER_LME)) {
        efer = (val & CR0_PG) ? efer | EFER_LMA : efer & ~EFER_LMA;
        entry = (val & CR0_PG) ? entry | ENTRY_IA32E_GUEST : entry & ~ENTRY_IA32E_GUEST;
        vmcs_write64(VMCS_GUEST_EFER, efer);
        vmcs_write32(VMCS_ENTRY_CTLS, entry);
    }
    vmcs_writenat(VMCS_CR0_SHADOW, val);
    vmcs_writenat(VMCS_GUEST_CR0, real);
    flush_guest_tlb();
    vmx_skip_insn(c);
}

/* MOV to CR4's #GP(0) conditions (same SDM page), in order.  The guest sees
 * no VMX, so VMXE is reserved for it, like every bit the CPU lacks. */
static bool cr4_write_faults(uint64_t val, uint64_t old)
{
    bool lma = vmcs_read64(VMCS_GUEST_EFER) & EFER_LMA;

    if ((val & CR4_VMXE) || (val & ~vmx.cr4_fixed1) || (val >> 32))
        return true;
    if (lma && !(val & CR4_PAE))                   /* PAE off in IA-32e mode */
        return true;
    if (lma && ((val ^ old) & CR4_LA57))           /* LA57 change in IA-32e mode */
        return true;
    if ((val & CR4_PCIDE) && !(old & CR4_PCIDE) &&
        (!lma || (vmcs_readnat(VMCS_GUEST_CR3) & 0xFFF)))
        return true;
    if ((val & CR4_CET) && !(vmcs_readnat(VMCS_GUEST_CR0) & CR0_WP))
        return true;
    return false;
}

static void emulate_cr4(struct hv_cpu *c, uint64_t val)
{
    if (cr4_write_faults(val, vmx_guest_cr4(c)))
        return vmx_inject_exception(c, VEC_GP, true, 0);
    vmcs_writenat(VMCS_CR4_SHADOW, val);
    vmcs_writenat(VMCS_GUEST_CR4, val | vmx.cr4_fixed0);
    flush_guest_tlb();
    vmx_skip_insn(c);
}

static void exit_cr(struct hv_cpu *c, uint64_t qual)
{
    unsigned cr = qual & 0xF, type = (qual >> 4) & 3, reg = (qual >> 8) & 0xF;
    uint64_t rsp = vmcs_readnat(VMCS_GUEST_RSP);
    uint64_t val = *gpr(c, reg, &rsp);

    HV_TRACE("HV: trace cpu=%u cr%u type=%u val=%llx\n", c->index, cr, type,
             (unsigned long long)val);

    if (type == 3) {                               /* LMSW: bits 3:0 only, PE sticky */
        uint64_t old = vmcs_readnat(VMCS_CR0_SHADOW);
        val = (old & ~0xEull) | ((qual >> 16) & 0xF) | (old & CR0_PE);
        return emulate_cr0(c, val);
    }
    if (type == 0 && cr == 0)
        return emulate_cr0(c, val);
    if (type == 0 && cr == 4)
        return emulate_cr4(c, val);
    hv_panic(c, "cr-access cr=%u type=%u qual=%llx\n", cr, type, (unsigned long long)qual);
}

/* ---- EPT violation (SDM Vol 3C 28.2.1, Table 28-7) ------------------------------ */
/* A guest access to hypervisor memory is logged and answered with #GP(0):
 * deterministic, and what a guest touching a hole would most likely see. */
static void exit_ept_violation(struct hv_cpu *c, uint64_t qual)
{
    uint64_t gpa = vmcs_read64(VMCS_GUEST_PHYS_ADDR);

    /* A write to the read-only xAPIC page (smp.c), or a stale read-only
     * translation after the interception ended. */
    if (hv_apic_page && (gpa & ~0xFFFull) == hv_apic_page && (qual & 2)) {
        uint32_t intr = vmcs_read32(VMCS_GUEST_INTERRUPTIBILITY);

        if (!hv_apic_protected)
            return ept_flush(c);
        c->exits[HV_EXIT_NPF]--;
        hv_count_exit(c, HV_EXIT_APIC_WRITE);
        vmcs_writenat(VMCS_GUEST_RIP, vmcs_readnat(VMCS_GUEST_RIP) + hv_apic_mmio_write(c, gpa));
        if (intr & (INTR_BLOCK_STI | INTR_BLOCK_MOVSS))
            vmcs_write32(VMCS_GUEST_INTERRUPTIBILITY,
                         intr & ~(INTR_BLOCK_STI | INTR_BLOCK_MOVSS));
        return;
    }
    if (hv_gpa_blocked(c, gpa, (const char[]){qual & 1 ? 'r' : '-', qual & 2 ? 'w' : '-',
                                                qual & 4 ? 'x' : '-', 0})) {
        vmcs_write32(VMCS_ENTRY_INTR_INFO, 0);     /* #GP replaces a vectored event */
        return vmx_inject_exception(c, VEC_GP, true, 0);
    }
    hv_panic(c, "ept-violation gpa=%llx qual=%llx\n", (unsigned long long)gpa,
             (unsigned long long)qual);
}

/* ---- I/O: only the ACPI PM1a control register's two ports are in the
 * bitmap, but an access of any width that touches one of them exits (SDM
 * Vol 3C 26.1.3), as does every form: IN/OUT with an immediate or DX, and
 * INS/OUTS with or without REP (qualification: SDM 28.1.3, Table 28-5).
 * Each is performed as written, on the real port; the core only watches
 * for SLP_EN (hv_io_out). ---------------------------------------------------- */
#define IO_IN     (1u << 3)
#define IO_STRING (1u << 4)
#define IO_REP    (1u << 5)

/* One iteration of INS/OUTS per exit (hv_io_string): the CPU gives the
 * operand's linear address. */
static void io_string(struct hv_cpu *c, uint64_t qual, uint16_t port, unsigned size)
{
    unsigned asz = (vmcs_read32(VMCS_EXIT_INSN_INFO) >> 7) & 7;
    struct hv_guest_paging p;
    struct hv_io_str s = {&p, vmcs_readnat(VMCS_GUEST_LINEAR_ADDR), port, size, 0,
                          qual & IO_IN, qual & IO_REP,
                          (vmcs_readnat(VMCS_GUEST_RFLAGS) >> 10) & 1};

    vmx_guest_paging(c, &p);
    if (!vmx.ins_outs_info)                        /* the code's default size (no 67) */
        asz = (p.efer & EFER_LMA) && p.cs_long ? 2 : p.cs_32 ? 1 : 0;
    s.asz = asz;
    if (hv_io_string(c, &s) == HV_IO_DONE)
        vmx_skip_insn(c);
}

static void exit_io(struct hv_cpu *c, uint64_t qual)
{
    unsigned size = (qual & 7) + 1;
    uint16_t port = (uint16_t)(qual >> 16);
    uint32_t mask = size == 4 ? 0xFFFFFFFFu : (1u << (8 * size)) - 1, v;

    if (size == 3 || size > 4)
        hv_panic(c, "io qual=%llx: size field reserved\n", (unsigned long long)qual);
    if (qual & IO_STRING)
        return io_string(c, qual, port, size);
    if (qual & IO_IN) {
        v = port_in(port, size);
        c->regs->rax = size == 4 ? (v & mask) : (c->regs->rax & ~(uint64_t)mask) | (v & mask);
    } else {
        hv_io_out(c, port, size, (uint32_t)c->regs->rax & mask);
    }
    vmx_skip_insn(c);
}

/* SDM 27.8: the basic reason (33 invalid guest state, 34 MSR loading, 41
 * machine-check), the qualification (which MSR-load entry, else 0), then the
 * software checker's name for what is wrong (vmx_report.c). */
static __attribute__((noreturn, cold, noinline)) void vm_entry_failure(struct hv_cpu *c)
{
    uint32_t basic = vmcs_read32(VMCS_EXIT_REASON) & 0xFFFF;
    uint64_t qual = vmcs_readnat(VMCS_EXIT_QUALIFICATION);

    vmx_entry_check_report(c, true);
    hv_panic(c, "vm-entry-failure reason=%u (%s) qual=%llx\n", basic, reason_name(basic),
             (unsigned long long)qual);
}

/* An exit reason the table knows but we never enable: decoded, then a panic.
 * Out of line and re-reading the reason, so the dispatcher keeps no more
 * registers live on its hot path. */
static __attribute__((noreturn, cold, noinline)) void unexpected_exit(struct hv_cpu *c)
{
    uint32_t basic = vmcs_read32(VMCS_EXIT_REASON) & 0xFFFF;

    hv_panic(c, "unexpected-exit reason=%u (%s) qual=%llx\n", basic, reason_name(basic),
             (unsigned long long)vmcs_readnat(VMCS_EXIT_QUALIFICATION));
}

/* ---- the dispatcher ----------------------------------------------------------------- */
/* Called by the entry stub, which has saved every guest GPR: with the SysV
 * ABI RSI and RDI are scratch, so the hottest function saves two registers
 * fewer than the MS ABI's callee-saved set would make it. */
__attribute__((sysv_abi)) void vmx_exit_handler(struct hv_regs *regs)
{
    struct hv_cpu *c = this_cpu();
    uint32_t reason = vmcs_read32(VMCS_EXIT_REASON), basic = reason & 0xFFFF, idt;
    const struct exit_entry *e;

    c->regs = regs;
    if (reason & (1u << 31))                       /* VM-entry failure: first */
        vm_entry_failure(c);
    if (basic >= EXIT_TABLE_SIZE || !exit_table[basic].name) {
        c->exits[HV_EXIT_OTHER]++;
        hv_panic(c, "unknown-exit reason=%u qual=%llx\n", basic,
                 (unsigned long long)vmcs_readnat(VMCS_EXIT_QUALIFICATION));
    }
    e = &exit_table[basic];
    if (!e->insn) {
        idt = vmcs_read32(VMCS_IDT_VECTORING_INFO);
        if (idt & INTR_INFO_VALID)
            requeue_vectored_event(idt);
    }
    c->exits[e->kind]++;                           /* table kinds are < HV_EXIT_COUNT */
    /* The qualification is read only where it is used: not by the core's
     * handlers (CPUID, MSRs, ...), the common exits. */
    if (e->kind == HV_EXIT_CPUID) {                /* the hottest: no ops hop */
        hv_cpuid_emulate(c);
        skip_insn();
    } else if (e->fn)
        e->fn(c, vmcs_readnat(VMCS_EXIT_QUALIFICATION));
    else if (e->kind != HV_EXIT_OTHER)
        hv_handle_exit(c, e->kind);
    else
        unexpected_exit(c);
    if (hv_smp_pending(c))
        hv_smp_poll(c);                            /* other CPUs' requests, NMIs */
    if (c->guest_nmi)
        deliver_pending_nmi(c);
}

void vmx_resume_failed(void)
{
    struct hv_cpu *c = this_cpu();

    vmx_check(VMX_FAIL_VALID, "vmresume");
    vmx_entry_check_report(c, true);
    hv_panic(c, "vmresume-failed\n");
}

/* ---- devirtualization ------------------------------------------------------------------ */
static void load_selector_regs(uint16_t ds, uint16_t es, uint16_t fs, uint16_t gs)
{
    __asm__ volatile("mov %0, %%ds; mov %1, %%es; mov %2, %%fs; mov %3, %%gs"
                     : : "r"(ds), "r"(es), "r"(fs), "r"(gs) : "memory");
}

/* The guest's TSS descriptor is marked busy; LTR needs it available. */
static void load_tr(uint64_t gdt_base, uint16_t sel)
{
    uint64_t *d = (uint64_t *)(uintptr_t)(gdt_base + (sel & ~7u));

    if (!(sel & ~7u))
        return;                                    /* guest ran with TR = 0: keep ours */
    *d &= ~(1ull << 41);
    __asm__ volatile("ltr %0" : : "r"(sel) : "memory");
}

/* Leaves VMX on this CPU and resumes the guest natively after the VMCALL:
 * guest control registers, descriptor tables, segments and MSRs go back into
 * the processor, then hv_resume_native restores CR3 and the GPRs with IRETQ. */
void vmx_devirtualize(struct hv_cpu *c)
{
    struct vmx_cpu *v = vmx_of(c);
    struct desc_ptr gdt = {(uint16_t)vmcs_read32(VMCS_GUEST_GDTR_LIMIT),
                           vmcs_readnat(VMCS_GUEST_GDTR_BASE)};
    struct desc_ptr idt = {(uint16_t)vmcs_read32(VMCS_GUEST_IDTR_LIMIT),
                           vmcs_readnat(VMCS_GUEST_IDTR_BASE)};
    uint64_t frame[5] = {vmcs_readnat(VMCS_GUEST_RIP), vmcs_read16(VMCS_GUEST_SEL(SEG_CS)),
                         vmcs_readnat(VMCS_GUEST_RFLAGS), vmcs_readnat(VMCS_GUEST_RSP),
                         vmcs_read16(VMCS_GUEST_SEL(SEG_SS))};
    uint64_t cr0 = vmcs_readnat(VMCS_GUEST_CR0), cr3 = vmcs_readnat(VMCS_GUEST_CR3);
    uint64_t cr4 = vmx_guest_cr4(c) & ~CR4_VMXE;
    uint64_t fs = vmcs_readnat(VMCS_GUEST_BASE(SEG_FS)), gs = vmcs_readnat(VMCS_GUEST_BASE(SEG_GS));
    uint64_t efer = vmcs_read64(VMCS_GUEST_EFER), pat = vmcs_read64(VMCS_GUEST_PAT);
    uint64_t dbg = vmcs_read64(VMCS_GUEST_DEBUGCTL), dr7 = vmcs_readnat(VMCS_GUEST_DR7);
    uint64_t se_cs = vmcs_read32(VMCS_GUEST_SYSENTER_CS);
    uint64_t se_esp = vmcs_readnat(VMCS_GUEST_SYSENTER_ESP);
    uint64_t se_eip = vmcs_readnat(VMCS_GUEST_SYSENTER_EIP);
    uint16_t ds = vmcs_read16(VMCS_GUEST_SEL(SEG_DS)), es = vmcs_read16(VMCS_GUEST_SEL(SEG_ES));
    uint16_t fss = vmcs_read16(VMCS_GUEST_SEL(SEG_FS)), gss = vmcs_read16(VMCS_GUEST_SEL(SEG_GS));
    uint16_t ldtr = vmcs_read16(VMCS_GUEST_SEL(SEG_LDTR)), tr = vmcs_read16(VMCS_GUEST_SEL(SEG_TR));

    c->nmi_kick = NULL;
    vmx_clear((uint64_t)(uintptr_t)v->vmcs);
    vmx_off();
    write_cr4(read_cr4() & ~CR4_VMXE);
    write_cr0(cr0);
    write_cr4(cr4);
    __asm__ volatile("lgdt %0; lidt %1" : : "m"(gdt), "m"(idt) : "memory");
    load_selector_regs(ds, es, fss, gss);          /* from here on no this_cpu() */
    wrmsr(MSR_FS_BASE, fs);
    wrmsr(MSR_GS_BASE, gs);
    __asm__ volatile("lldt %0" : : "r"(ldtr));
    load_tr(gdt.base, tr);
    wrmsr(MSR_EFER, efer);
    wrmsr(MSR_PAT, pat);
    wrmsr(MSR_DEBUGCTL, dbg);
    wrmsr(MSR_SYSENTER_CS, se_cs);
    wrmsr(MSR_SYSENTER_ESP, se_esp);
    wrmsr(MSR_SYSENTER_EIP, se_eip);
    __asm__ volatile("mov %0, %%dr7" : : "r"(dr7));
    hv_resume_native(c->regs, frame, cr3);
}
