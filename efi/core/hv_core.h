/*
 * hv_core.h - the arch-neutral core's internal interface: per-CPU state,
 * the vendor backend ops table, the shared exit enum and the host
 * environment (GDT/TSS/IDT/page tables) that both backends use.
 */
#ifndef HV_CORE_H
#define HV_CORE_H

#include "hv.h"
#include "x86.h"
#include "cpuid_policy.h"

/* Per-CPU state is sized from MP Services; this only bounds the pool a
 * malformed CPU count could ask for (pytool reads it, efi/core/vmm.c). */
#define HV_MAX_CPUS 1024

/* Debug-build-only log lines (HV_DEBUG comes from edk2-config.yaml). */
#if defined(HV_DEBUG) && HV_DEBUG
#define HV_TRACE(...) hv_log(__VA_ARGS__)
#else
#define HV_TRACE(...) ((void)0)
#endif

/* Hypercall ABI (VMCALL on Intel, VMMCALL on AMD):
 * RAX = function, RCX = HC_MAGIC, RDX/R8/R9 = args.  Buffers are
 * guest-physical addresses outside the hypervisor's pool.
 * Status comes back in RAX (HC_OK or a negative HC_E*), results in RDX/R8.
 * A call with another magic or from CPL > 0 gets #UD, as on bare metal. */
#define HC_MAGIC        0x48564D43u   /* "HVMC" */
enum hc_function {
    HC_VERSION = 0,   /* -> RDX = HV_INTERFACE_VERSION, R8 = calling CPU index */
    HC_STATS = 1,     /* RDX = GPA of u64[HV_EXIT_COUNT], R8 = entries -> RDX = written */
    HC_LOG = 2,       /* RDX = GPA of text, R8 = length (<= 200) */
    HC_INFO = 3,      /* -> RDX = HPA of a protected hypervisor page, R8 = bytes held */
    HC_DEVIRT = 4,    /* leave VMX/SVM on every CPU (the others via an NMI), resume
                       * after the call natively -> RDX = mask of CPUs 0-63 that
                       * left, R8 = guest CPUs that refused (still virtualized) */
    HC_LOG_RING = 5,  /* -> RDX = physical address of the log ring, R8 = its bytes */
    HC_RING_APPEND = 6, /* internal: our platform code's ring text while it runs as
                         * a guest, until ExitBootServices (logring.c) */
};
enum { HC_OK = 0, HC_E_FUNCTION = -1, HC_E_ARG = -2, HC_E_STATE = -3 };

/* CPUID hypervisor leaves: 0x40000000 EAX = max leaf, EBX:ECX:EDX = the
 * signature; 0x40000001 EAX = HV_INTERFACE_VERSION; 0x40000002
 * (HV_CPUID_STATS, hv_ring.h) a snapshot of the exit counters into the HVLG
 * table (logring.c); the rest of the range reads as zeros. */
#define HV_CPUID_BASE        0x40000000u
#define HV_CPUID_MAX         0x40000002u
#define HV_CPUID_SIGNATURE   "MicroHvisor!"   /* EBX, ECX, EDX; 12 bytes */

/* Arch-neutral exit kinds; each backend translates its raw exit code. */
enum hv_exit {
    HV_EXIT_CPUID, HV_EXIT_RDMSR, HV_EXIT_WRMSR, HV_EXIT_XSETBV, HV_EXIT_HYPERCALL,
    HV_EXIT_INVD, HV_EXIT_VIRT_INSN, HV_EXIT_CR, HV_EXIT_INIT, HV_EXIT_SIPI,
    HV_EXIT_NMI, HV_EXIT_NMI_WINDOW, HV_EXIT_NPF, HV_EXIT_TRIPLE_FAULT, HV_EXIT_OTHER,
    HV_EXIT_APIC_WRITE, HV_EXIT_IO, HV_EXIT_SMI,
    HV_EXIT_COUNT
};
extern const char *const hv_exit_names[HV_EXIT_COUNT];

/* Guest GPRs as pushed by the backend's exit stub (RSP lives in the VMCS). */
struct hv_regs {
    uint64_t rax, rcx, rdx, rbx, rsp_unused, rbp, rsi, rdi;
    uint64_t r8, r9, r10, r11, r12, r13, r14, r15;
};

struct hv_cpu;

struct hv_guest_paging {
    uint64_t cr0, cr3, cr4, efer;
    uint64_t cs_base, rip, rsp;
    bool cs_long, cs_32;            /* CS.L, CS.D */
    uint64_t gdtr_base, gdtr_limit, idtr_base;   /* for hv_devirt_possible */
};

/* What the core asks of a vendor backend (efi/vmx, efi/svm). */
struct hv_backend_ops {
    const char *name;
    const char *gpa_map;            /* "ept" or "npt": the guest-physical map in log lines */
    /* Once, on the BSP, before any CPU: controls, EPT/NPT, bitmaps. */
    int (*global_init)(void);
    /* On each CPU: enable VMX/SVM and build the control block from the live
     * processor state.  Runs from the resident copy and returns. */
    int (*cpu_prepare)(struct hv_cpu *c);
    /* The asm launch stub: saves the caller's registers, enters the guest
     * at its own return path and returns 0 there, as a guest.  The core
     * calls it through its alias in the original image (see vmm.c).  A
     * nonzero return is a failure, handed to launch_failed (copy). */
    int (*launch)(void);
    void (*launch_failed)(struct hv_cpu *c, int rc);
    /* Exit-handling services used by the shared handlers. */
    void (*skip_insn)(struct hv_cpu *c);
    void (*inject_exception)(struct hv_cpu *c, uint8_t vec, bool has_err, uint32_t err);
    unsigned (*guest_cpl)(struct hv_cpu *c);
    uint64_t (*guest_rip)(struct hv_cpu *c);
    uint64_t (*guest_cr4)(struct hv_cpu *c);      /* as the guest sees it */
    void (*dump_guest)(struct hv_cpu *c);
    /* Leaves virtualization on this CPU, resuming the guest natively at the
     * instruction after the current one.  Does not return. */
    void (*devirtualize)(struct hv_cpu *c) __attribute__((noreturn));
    /* Emulated INIT: the architectural INIT state, then parked (wait for
     * SIPI) until start_sipi.  Emulated SIPI: real-mode start at vec << 12. */
    void (*park_init)(struct hv_cpu *c);
    void (*start_sipi)(struct hv_cpu *c, uint8_t vec);
    /* False when the guest has an event in flight that leaving VMX would
     * lose; the backend then arranges another exit as soon as it is done. */
    bool (*can_leave_now)(struct hv_cpu *c);
    /* Lets an NMI that the host holds pending arrive now (SVM: GIF = 0 holds
     * it, APM 15.17); NULL where the host takes NMIs at once (VMX). */
    void (*host_nmi_window)(void);
    /* Leaves VMX on a parked CPU: it halts in the host until a real INIT. */
    void (*leave_parked)(struct hv_cpu *c) __attribute__((noreturn));
    /* Stop intercepting writes to the xAPIC page (global), flush the local
     * guest-physical mappings, and fill the MSR map without the x2APIC ICR
     * intercept that each CPU then takes (icr_open). */
    void (*apic_unprotect)(void);
    /* Intercept them again (before S3: the OS restarts its APs on resume). */
    void (*apic_protect)(void);
    /* S3 resume (s3.c): on a CPU back from reset, on its host stack,
     * enable SVM/VMX again and enter the guest in real mode at cs:ip: the
     * firmware's hand-over at the waking vector (wake) or a start-up IPI's.
     * NULL: the hypervisor ends at S3. */
    void (*s3_resume)(struct hv_cpu *c, uint16_t cs, uint16_t ip, bool wake)
        __attribute__((noreturn));
    /* This CPU stops intercepting WRMSR to the x2APIC ICR (its own VMCS or
     * VMCB, from its own exit: SDM Vol 3C 25.11.4). */
    void (*icr_open)(struct hv_cpu *c);
    void (*flush_ept)(struct hv_cpu *c);
    /* Guest state the instruction decoder needs (efi/core/insn.c). */
    void (*guest_paging)(struct hv_cpu *c, struct hv_guest_paging *p);
    /* Guest RFLAGS: returns the old value and, when mask is nonzero, writes
     * (old & ~mask) | (val & mask) (emulated arithmetic sets its flags). */
    uint64_t (*guest_rflags)(struct hv_cpu *c, uint64_t mask, uint64_t val);
    /* Whether [gpa, gpa+len) is ordinary guest RAM in the EPT/NPT view:
     * mapped read-write, write-back (not MMIO, not the xAPIC page, not the
     * pool).  NULL: the core checks the pool and the APIC page only. */
    bool (*gpa_is_ram)(uint64_t gpa, uint64_t len);
};

/* Per-CPU host state.  Host GS base points at this struct (self first), so
 * asm stubs reach it with %gs:. */
struct hv_cpu {
    struct hv_cpu *self;            /* 0x00 */
    volatile uint32_t nmi_pending;  /* NMIs arrived since the last poll (host_nmi, NMI
                                     * exits): how many, not whose (smp.c) */
    uint32_t index;
    struct hv_regs *regs;           /* guest GPRs of the exit being handled */
    const struct hv_backend_ops *ops;
    uint64_t exits[HV_EXIT_COUNT];
    void *stack_top;                /* host RSP at exit */
    void *gdt;                      /* host GDT (one page with the TSS) */
    void *backend;                  /* vendor per-CPU state */
    uint32_t apic_id;               /* initial x2APIC/xAPIC ID (CPUID) */
    /* Cross-CPU requests (smp.c): another CPU sets req under lock, rings
     * nmi_doorbell and, if it was silent, sends one NMI; this CPU consumes
     * both at its next exit. */
    volatile int lock;
    volatile uint32_t req;
    volatile uint32_t nmi_doorbell;  /* 1: a wake-up NMI is on its way here, unmatched */
    uint8_t sipi_vector;            /* with REQ_SIPI */
    bool sipi_armed;                /* an INIT was sent; the next SIPI counts */
    volatile bool parked;                      /* in the emulated wait-for-SIPI state */
    uint8_t guest_nmi;              /* NMIs owed to the guest: 0-2 (one to deliver, one
                                     * latched behind it, as the CPU's NMI latch) */
    struct {                        /* `HV: nmi` at power-off (smp.c) */
        uint32_t received, wakeups, guest, injected, dropped;
    } nmi_stat;
    /* The backend's "exit at once after VM entry", called from the host
     * NMI handler (NMI context: no logging, no locks); NULL outside VMX. */
    void (*volatile nmi_kick)(void);
    bool devirt_deferred;           /* leave VMX once the event in flight is in */
    volatile bool os_started;       /* started by an emulated SIPI after EBS */
    volatile int left;              /* 1: left VMX, -1: refused (devirtualize) */
    volatile bool guest;            /* runs as our guest (set at prepare) */
    uint32_t icr_high;              /* the guest's xAPIC ICR[63:32] */
    uint32_t apic_ldr, apic_dfr;    /* the guest's xAPIC LDR/DFR (logical IPIs) */
    volatile bool s3_down;          /* off since S3, until the OS starts it (s3.c) */
    int16_t s3_sipi;                /* its start-up vector then, -1: none yet */
    uint64_t x2apic_icr_exits;      /* of the WRMSR exits: the x2APIC ICR ("icr=") */
};

static inline struct hv_cpu *this_cpu(void)
{
    struct hv_cpu *c;

    __asm__ volatile("mov %%gs:0, %0" : "=r"(c));
    return c;
}

/* ---- vmm.c -------------------------------------------------------------- */
extern const struct hv_caps *hv_caps_now;
extern size_t hv_cpu_total;
extern struct hv_cpu **hv_cpus;         /* hv_cpu_total entries, in the pool */
/* Zeroed pages from the hypervisor's one protected pool (never freed). */
void *hv_alloc(size_t pages);
/* The pool (and the resident image inside it): what EPT/NPT must hide. */
void hv_protected_range(uint64_t *base, uint64_t *size);
void hv_panic(struct hv_cpu *c, const char *fmt, ...)
    __attribute__((noreturn, format(printf, 2, 3)));
/* The guest GPRs of a dump (a backend's dump_guest). */
void hv_dump_regs(const struct hv_regs *r);

/* ---- host.c: the hypervisor's own GDT/TSS/IDT/page tables ---------------- */
#define HOST_CS 0x08
#define HOST_DS 0x10
#define HOST_TR 0x18
int host_env_init(void);                 /* shared: IDT, page tables */
int host_cpu_init(struct hv_cpu *c);     /* per CPU: GDT, TSS, stacks */
uint64_t host_cr3(void);
uint64_t host_idt_base(void);
uint64_t host_tss_base(struct hv_cpu *c);
/* Emulated INIT, the local APIC part: soft-disabled, IRR/ISR drained. */
void host_apic_init_reset(void);
/* The host NMI handler (host.S calls it): counts the NMI, kicks an exit. */
void host_nmi(void);
/* Fault-recovering MSR access (host.S): 0 on success, -1 if it raised #GP. */
int hv_rdmsr_safe(uint32_t msr, uint64_t *v);
int hv_wrmsr_safe(uint32_t msr, uint64_t v);
/* XSETBV that returns -1 instead of faulting when the CPU raises #GP. */
int hv_xsetbv_safe(uint32_t xcr, uint64_t v);

/* ---- exit.c: shared exit handling ---------------------------------------- */
void hv_handle_exit(struct hv_cpu *c, enum hv_exit kind);
/* CPUID's register results only (no instruction skip): for a backend's
 * fast path.  CPUID is the one exit a guest cannot avoid, and it runs in
 * loops (feature probes, serialization, timing). */
void hv_cpuid_emulate(struct hv_cpu *c);
/* Once, from the backend's global_init: the guest's CPUID for these
 * controls (cpuid_policy.c).  0, or -1 with a log line. */
int hv_cpuid_policy_init(const struct cpuid_ctls *ctls);
/* vmm.c, after global_init: the default policy if the backend set none. */
int hv_cpuid_policy_ensure(bool amd);
void hv_count_exit(struct hv_cpu *c, enum hv_exit kind);
void hv_print_stats(struct hv_cpu *c);
/* One iteration of INS/OUTS to an intercepted port (exit.c).  HV_IO_DONE:
 * the backend skips the instruction; HV_IO_AGAIN: REP iterations left, RIP
 * stays; HV_IO_FAULT: #GP(0) injected and logged (memory not guest RAM). */
struct hv_io_str {
    const struct hv_guest_paging *paging;
    uint64_t la;                    /* the memory operand's linear address */
    uint16_t port;
    unsigned size;                  /* 1, 2, 4 */
    unsigned asz;                   /* address size: 0 16-bit, 1 32-bit, 2 64-bit */
    bool in, rep, df;
};
enum { HV_IO_DONE, HV_IO_AGAIN, HV_IO_FAULT };
int hv_io_string(struct hv_cpu *c, const struct hv_io_str *s);
uint64_t hv_io_string_la(const struct hv_guest_paging *p, uint64_t seg_base, bool fs_gs,
                         uint64_t reg, unsigned asz);
/* Guest memory the host may touch on the guest's behalf (hypercall buffers). */
void *hv_guest_buffer(uint64_t gpa, uint64_t len);

/* ---- smp.c: APIC IDs, INIT/SIPI emulation, cross-CPU requests ------------- */
/* The guest-physical xAPIC page whose writes the backend intercepts (0: none). */
extern uint64_t hv_apic_page;
extern volatile bool hv_apic_protected;
extern uint16_t hv_pm1a_cnt_port;         /* 0: not trapped */
void hv_smp_global_init(void);              /* BSP, before any CPU */
void hv_smp_cpu_init(struct hv_cpu *c);     /* on each CPU, at prepare */
/* A guest write to the xAPIC page at gpa: performed or emulated.  The
 * backend decoded nothing; the core decodes the instruction and returns how
 * far RIP advances (0: not at all - a REP STOS with iterations left, or an
 * undecodable store, which gets #GP). */
unsigned hv_apic_mmio_write(struct hv_cpu *c, uint64_t gpa);
/* WRMSR to the x2APIC ICR (0x830), x2APIC mode: -1 when the value sets a
 * reserved bit (the caller injects #GP), else 0. */
int hv_x2apic_icr_write(struct hv_cpu *c, uint64_t val);
/* At the end of every exit: NMIs and requests from other CPUs. */
void hv_smp_poll(struct hv_cpu *c);
/* The backend has injected one of the NMIs owed to the guest. */
static inline void hv_nmi_injected(struct hv_cpu *c)
{
    c->guest_nmi--;
    c->nmi_stat.injected++;
}
void hv_print_nmi_stats(struct hv_cpu *c);
/* The cheap test done on every exit before calling hv_smp_poll. */
static inline bool hv_smp_pending(const struct hv_cpu *c)
{
    return c->nmi_pending | c->req | c->devirt_deferred;
}
/* HC_DEVIRT: leave VMX/SVM everywhere.  *mask gets the CPUs 0-63 that left
 * (this CPU included, which the caller then devirtualizes); returns how many
 * guest CPUs refused, or -1 while another CPU is devirtualizing. */
int hv_devirt_all(struct hv_cpu *c, uint64_t *mask);
/* Whether this CPU's guest can be resumed natively by devirtualize: 64-bit
 * code whose page tables map the hypervisor's pool, GDT and IDT at their
 * physical addresses (the switch runs host code under the guest's CR3). */
bool hv_devirt_possible(struct hv_cpu *c);
/* A guest OUT to the PM1a control port. */
void hv_pm1a_write(struct hv_cpu *c, uint32_t val, unsigned size);
/* A guest OUT of any width that touches the PM1a control register. */
void hv_io_out(struct hv_cpu *c, uint16_t port, unsigned size, uint32_t val);
/* The EFI system table (efi/platform/main.c), read-only: ACPI tables and
 * whether boot services are gone. */
extern void *plat_st;

/* ---- insn.c: guest memory by linear address, the MMIO store decoder ------ */
int hv_guest_read_linear(const struct hv_guest_paging *p, uint64_t la, void *buf, unsigned n);
int hv_guest_write_linear(const struct hv_guest_paging *p, uint64_t la, const void *buf,
                          unsigned n);
/* A decoded 32-bit store to MMIO (the xAPIC page). */
enum { STORE_MOV, STORE_ALU, STORE_STOS };
enum { ALU_NOT = 8, ALU_NEG, ALU_INC, ALU_DEC };   /* 0-6: ADD OR ADC SBB AND SUB XOR */
struct hv_store {
    unsigned len;           /* instruction length */
    unsigned kind;          /* STORE_* */
    unsigned alu;           /* STORE_ALU: the operation */
    uint32_t src;           /* the value or source operand */
    int xchg_reg;           /* XCHG: the register that gets the old value, else -1 */
    bool rep;               /* STORE_STOS with REP */
    unsigned asize;         /* STORE_STOS: address size in bytes (RDI, RCX) */
};
int hv_decode_store(struct hv_cpu *c, struct hv_store *st);
/* dst = a <alu> b with the flags it sets, merged into *guest_flags. */
uint32_t hv_store_alu(unsigned alu, uint32_t a, uint32_t b, uint64_t *guest_flags);

/* ---- insn_len.c: the exiting instruction's length from its bytes --------- */
/* For a CPU that does not report it (SVM without NRIPS).  0, with a log
 * line and the bytes, for anything that is not an instruction we intercept
 * (the caller then injects #UD). */
unsigned hv_insn_len(struct hv_cpu *c);
unsigned hv_insn_len_decode(const uint8_t *b, unsigned n, bool long_mode);

/* ---- resume.S: devirtualization's last step (IRETQ into the guest) ------ */
void hv_resume_native(const struct hv_regs *regs, const uint64_t frame[5], uint64_t cr3)
    __attribute__((noreturn));

/* ---- logring.c: the log ring as the guest sees it (hv_ring.h) ------------ */
/* True when [base, base + size) holds ring memory: EPT/NPT map it read-only. */
bool hv_guest_readonly(uint64_t base, uint64_t size);
/* CPUID leaf HV_CPUID_STATS: every CPU's exit counters copied into the HVLG
 * table; EAX = CPUs copied, EBX = the snapshot's number (0: no table). */
void hv_stats_snapshot(struct hv_regs *r);
/* panic.c: shared exit outcomes.  A guest triple fault resets the platform;
 * hv_gpa_blocked logs a guest access to the pool or a write to the ring
 * (the caller then injects #GP(0)). */
void hv_guest_triple_fault(struct hv_cpu *c) __attribute__((noreturn));
bool hv_gpa_blocked(struct hv_cpu *c, uint64_t gpa, const char *access);
int64_t hv_hc_log_ring(struct hv_cpu *c);
int64_t hv_hc_ring_append(struct hv_cpu *c);
void hv_ring_guest_mode(void);          /* original image, on the BSP as a guest */
/* vmm.c, guest side (original image): a hypercall with the vendor's
 * instruction; returns RAX, RDX and R8 in and out through the pointers. */
int64_t hv_guest_hypercall(uint64_t fn, uint64_t *rdx, uint64_t *r8);

/* ---- sleep.c: "S3", "S5" or "unknown" for a PM1a_CNT value with SLP_EN ---- */
const char *hv_sleep_state(uint32_t pm1_cnt);
/* ---- s3.c: the way back from S3 ------------------------------------------ */
/* Before the S3 write goes out: take over the waking vector; false (and
 * logged) when the hypervisor ends at S3 instead. */
bool hv_s3_prepare(struct hv_cpu *c, uint16_t port, uint32_t val);
/* The OS's INIT/SIPI to t: true when t is down since S3 (it is started
 * through the resume stub). */
bool hv_s3_start_ap(struct hv_cpu *c, struct hv_cpu *t, bool init, uint8_t vec);
void hv_s3_cpu_entry(struct hv_cpu *c) __attribute__((noreturn));
void hv_s3_done(void);
/* The resume stub's pages: read-only to the guest (gpmap.c). */
bool hv_s3_page(uint64_t base, uint64_t size);
/* smp.c: the ICR intercepts on again for the OS's AP restart after S3; a
 * real INIT and start-up IPI (vector) to apic_id. */
void hv_smp_s3_rearm(struct hv_cpu *c);
void hv_send_start(struct hv_cpu *c, uint32_t apic_id, uint8_t vector);

/* ---- hypercall.c ---------------------------------------------------------- */
void hv_hypercall(struct hv_cpu *c);

/* ---- backends --------------------------------------------------------------- */
extern const struct hv_backend_ops vmx_ops;
extern const struct hv_backend_ops svm_ops;

#endif
