/*
 * svm.h - the AMD-V backend's internal interface (efi/svm).
 */
#ifndef SVM_H
#define SVM_H

#include "../core/hv_core.h"
#include "vmcb.h"

#define MSR_VM_CR        0xC0010114
#define MSR_VM_HSAVE_PA  0xC0010117
#define EFER_SVME        (1ull << 12)

/* CPUID Fn8000_000A EDX (APM Vol 3, E.4.9). */
#define SVM_F_NPT        (1u << 0)
#define SVM_F_NRIPS      (1u << 3)
#define SVM_F_CLEAN      (1u << 5)
#define SVM_F_FLUSH_ASID (1u << 6)
#define SVM_F_DECODE     (1u << 7)

#define SVM_ASID 1               /* one guest per CPU; ASID 0 is the host's */

struct svm_global {
    uint32_t features;           /* Fn8000_000A EDX */
    uint32_t nasid;              /* Fn8000_000A EBX */
    uint8_t *msrpm;              /* 8 KiB, APM 15.11 */
    uint8_t *msrpm_open;         /* the same without the x2APIC ICR (svm.c) */
    uint8_t *iopm;               /* 12 KiB, APM 15.10.1 */
    uint64_t n_cr3;              /* nested PML4 */
    uint64_t *apic_pte;          /* the xAPIC page's nested leaf */
};
extern struct svm_global svm;

/* Per CPU: four contiguous pages.  The launch stub (svm_entry.S) finds the
 * last one from VM_HSAVE_PA, so the offsets below are its ABI. */
struct svm_cpu {
    uint64_t vmcb_pa;            /* 0x00 the guest's VMCB */
    uint64_t host_vmcb_pa;       /* 0x08 VMSAVE area of the host's FS/GS/TR/... */
    uint64_t host_rsp;           /* 0x10 host stack, below the exit frame */
    uint64_t host_cr3;           /* 0x18 */
    void *host_entry;            /* 0x20 svm_host_start in the resident copy */
    struct hv_cpu *cpu;          /* 0x28 host GS base */
    uint64_t fail_rip;           /* 0x30 where a refused first VMRUN resumes */
    uint8_t pad0[6];
    uint16_t gdt_limit;          /* 0x3E: LGDT operand */
    uint64_t gdt_base;           /* 0x40 */
    uint8_t pad1[6];
    uint16_t idt_limit;          /* 0x4E: LIDT operand */
    uint64_t idt_base;           /* 0x50 */
    uint64_t fail_rsp;           /* 0x58 the launch stub's RSP and RFLAGS */
    uint64_t fail_rflags;        /* 0x60 */
    struct vmcb *vmcb;
    uint64_t orig_efer;
    /* A refused first VMRUN resumes the launch stub from this copy of the
     * guest state as prepared: after VMEXIT_INVALID the VMCB's save area
     * need not hold it (QEMU writes back a half-loaded state). */
    bool launched;               /* a VMRUN has entered the guest */
    /* The guest's NMI blocking, which the VMCB does not show without vNMI
     * (svm_exit.c): set by our NMI injection, cleared once its IRET has
     * completed. */
    bool nmi_masked;
    bool iret_seen;              /* the IRET intercept fired at iret_rip */
    bool nmi_step;               /* single-stepping that IRET (TF, #DB intercepted) */
    bool step_tf;                /* the guest's own TF before the step */
    uint64_t iret_rip;
    uint64_t step_dr6;           /* DR6 before the step: the #DB's BS is ours */
    struct vmcb_save launch_state;
};
_Static_assert(__builtin_offsetof(struct svm_cpu, fail_rip) == 0x30, "svm_entry.S");
_Static_assert(__builtin_offsetof(struct svm_cpu, gdt_limit) == 0x3E, "svm_entry.S");
_Static_assert(__builtin_offsetof(struct svm_cpu, idt_limit) == 0x4E, "svm_entry.S");
_Static_assert(__builtin_offsetof(struct svm_cpu, fail_rsp) == 0x58, "svm_entry.S");
_Static_assert(__builtin_offsetof(struct svm_cpu, fail_rflags) == 0x60, "svm_entry.S");
_Static_assert(sizeof(struct svm_cpu) <= 4096, "one page (SVM_PAGE_CPU)");

enum { SVM_PAGE_HSAVE, SVM_PAGE_VMCB, SVM_PAGE_HOST, SVM_PAGE_CPU, SVM_PAGES };

static inline struct svm_cpu *svm_of(struct hv_cpu *c) { return c->backend; }
static inline struct vmcb *vmcb_of(struct hv_cpu *c) { return svm_of(c)->vmcb; }

/* svm_entry.S */
int svm_launch(void);
void svm_host_start(void);
void svm_vmsave(uint64_t pa);
void svm_vmload(uint64_t pa);

/* svm.c */
int svm_npt_build(void);
bool svm_gpa_is_ram(uint64_t gpa, uint64_t len);
uint64_t svm_guest_rflags(struct hv_cpu *c, uint64_t mask, uint64_t val);
void svm_flush(struct hv_cpu *c);
void svm_apic_unprotect(void);
void svm_apic_protect(void);
void svm_icr_open(struct hv_cpu *c);

/* svm_exit.c: services for the core */
void svm_skip_insn(struct hv_cpu *c);
void svm_inject_exception(struct hv_cpu *c, uint8_t vec, bool has_err, uint32_t err);
unsigned svm_guest_cpl(struct hv_cpu *c);
uint64_t svm_guest_rip(struct hv_cpu *c);
uint64_t svm_guest_cr4(struct hv_cpu *c);
void svm_dump_guest(struct hv_cpu *c);
void svm_devirtualize(struct hv_cpu *c) __attribute__((noreturn));
void svm_park_init(struct hv_cpu *c);
void svm_init_state(struct vmcb *v);
void svm_init_events(struct hv_cpu *c, struct vmcb *v);
/* svm_entry.S: the host environment and the VMRUN loop for s (R11). */
void svm_s3_enter(struct svm_cpu *s) __attribute__((noreturn));
void svm_start_sipi(struct hv_cpu *c, uint8_t vec);
bool svm_can_leave_now(struct hv_cpu *c);
void svm_leave_parked(struct hv_cpu *c) __attribute__((noreturn));
void svm_guest_paging(struct hv_cpu *c, struct hv_guest_paging *p);
void svm_host_nmi_window(void);

#endif
