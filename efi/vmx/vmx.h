/*
 * vmx.h - internals shared by the files of the VT-x backend.
 */
#ifndef VMX_VMX_H
#define VMX_VMX_H

#include "../core/hv_core.h"
#include "vmcs.h"
#include "vmx_insn.h"
#include "vmx_ctl.h"

/* Capability MSRs (SDM Vol 3C App. A). */
#define MSR_VMX_BASIC        0x480
#define MSR_VMX_PINBASED     0x481
#define MSR_VMX_PROCBASED    0x482
#define MSR_VMX_EXIT         0x483
#define MSR_VMX_ENTRY        0x484
#define MSR_VMX_MISC         0x485
#define MSR_VMX_CR0_FIXED0   0x486
#define MSR_VMX_CR0_FIXED1   0x487
#define MSR_VMX_CR4_FIXED0   0x488
#define MSR_VMX_CR4_FIXED1   0x489
#define MSR_VMX_PROCBASED2   0x48B
#define MSR_VMX_EPT_VPID_CAP 0x48C
#define MSR_VMX_TRUE_PIN     0x48D
#define MSR_VMX_TRUE_PROC    0x48E
#define MSR_VMX_TRUE_EXIT    0x48F
#define MSR_VMX_TRUE_ENTRY   0x490
#define VMX_BASIC_TRUE_CTLS  (1ull << 55)

#define ACTIVITY_ACTIVE      0
#define ACTIVITY_HLT         1
#define ACTIVITY_WAIT_SIPI   3
#define INTR_BLOCK_STI       (1u << 0)
#define INTR_BLOCK_MOVSS     (1u << 1)
#define INTR_BLOCK_NMI       (1u << 3)
#define INTR_INFO_VALID      (1u << 31)
#define INTR_TYPE_NMI        (2u << 8)
#define INTR_TYPE_HW_EXC     (3u << 8)
#define INTR_ERR_VALID       (1u << 11)

struct vmx_global {
    uint32_t revision;
    uint32_t pin, proc, proc2, exit, entry;
    bool preempt_timer;             /* the pin control may be 1: NMI kicks */
    bool ins_outs_info;             /* VMX_BASIC[54]: INS/OUTS exits say the address size */
    uint64_t cr0_fixed0, cr0_fixed1, cr4_fixed0, cr4_fixed1;
    uint64_t cr0_mask, cr4_mask;
    uint64_t misc, ept_vpid_cap, eptp;
    uint8_t *msr_bitmap;
    uint8_t *msr_bitmap_open;       /* the same without the x2APIC ICR (vmx.c) */
    uint8_t *io_bitmap;             /* A and B, 8 KiB */
};
extern struct vmx_global vmx;

struct vmx_cpu {
    void *vmxon, *vmcs;
    uint64_t orig_cr0, orig_cr4;
};
/* In the pool, one page per CPU (hv_cpu.backend), made at the first prepare. */
static inline struct vmx_cpu *vmx_of(struct hv_cpu *c) { return c->backend; }

/* ept.c */
int ept_build(uint64_t *eptp);
void ept_apic_unprotect(void);
void ept_flush(struct hv_cpu *c);
bool ept_gpa_is_ram(uint64_t gpa, uint64_t len);

/* vmx_exit.c */
void vmx_flush_vpid(void);
void vmx_nmi_kick(void);
void vmx_skip_insn(struct hv_cpu *c);
void vmx_inject_exception(struct hv_cpu *c, uint8_t vec, bool has_err, uint32_t err);
unsigned vmx_guest_cpl(struct hv_cpu *c);
uint64_t vmx_guest_rip(struct hv_cpu *c);
uint64_t vmx_guest_cr4(struct hv_cpu *c);
void vmx_dump_guest(struct hv_cpu *c);
void vmx_devirtualize(struct hv_cpu *c) __attribute__((noreturn));
void vmx_park_init(struct hv_cpu *c);
void vmx_start_sipi(struct hv_cpu *c, uint8_t vec);
bool vmx_can_leave_now(struct hv_cpu *c);
void vmx_leave_parked(struct hv_cpu *c) __attribute__((noreturn));
void vmx_guest_paging(struct hv_cpu *c, struct hv_guest_paging *p);
uint64_t vmx_guest_rflags(struct hv_cpu *c, uint64_t mask, uint64_t val);

/* vmx_report.c: the software VM-entry checker over the live VMCS, and the
 * debug-fail= corruptions (hv_cfg.h).  Nonzero when a check failed. */
int vmx_entry_check_report(struct hv_cpu *c, bool always);
void vmx_force_before_launch(struct hv_cpu *c);

/* vmx_entry.S */
int vmx_launch(void);
void vmx_exit_entry(void);

#endif
