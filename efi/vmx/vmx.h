/*
 * vmx.h - internals shared by the files of the VT-x backend.
 */
#ifndef VMX_VMX_H
#define VMX_VMX_H

#include "../core/hv_core.h"
#include "vmcs.h"
#include "vmx_insn.h"

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

/* Controls we use (SDM Vol 3C 25.6, 25.7, 25.8). */
#define PIN_NMI_EXITING      (1u << 3)
#define PIN_VIRTUAL_NMIS     (1u << 5)
#define PROC_NMI_WINDOW      (1u << 22)
#define PROC_IO_BITMAPS      (1u << 25)
#define PROC_MSR_BITMAP      (1u << 28)
#define PROC_SECONDARY       (1u << 31)
#define PROC2_EPT            (1u << 1)
#define PROC2_RDTSCP         (1u << 3)
#define PROC2_VPID           (1u << 5)
#define PROC2_UNRESTRICTED   (1u << 7)
#define PROC2_INVPCID        (1u << 12)
#define PROC2_XSAVES         (1u << 20)
#define EXIT_SAVE_DEBUG      (1u << 2)
#define EXIT_HOST_64         (1u << 9)
#define EXIT_SAVE_PAT        (1u << 18)
#define EXIT_LOAD_PAT        (1u << 19)
#define EXIT_SAVE_EFER       (1u << 20)
#define EXIT_LOAD_EFER       (1u << 21)
#define ENTRY_LOAD_DEBUG     (1u << 2)
#define ENTRY_IA32E_GUEST    (1u << 9)
#define ENTRY_LOAD_PAT       (1u << 14)
#define ENTRY_LOAD_EFER      (1u << 15)

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
    uint64_t cr0_fixed0, cr0_fixed1, cr4_fixed0, cr4_fixed1;
    uint64_t cr0_mask, cr4_mask;
    uint64_t misc, ept_vpid_cap, eptp;
    uint8_t *msr_bitmap;
    uint8_t *io_bitmap;             /* A and B, 8 KiB */
};
extern struct vmx_global vmx;

struct vmx_cpu {
    void *vmxon, *vmcs;
    uint64_t orig_cr0, orig_cr4;
};
extern struct vmx_cpu vmx_cpus[HV_MAX_CPUS];

/* ept.c */
int ept_build(uint64_t *eptp);
void ept_apic_unprotect(void);
void ept_flush(struct hv_cpu *c);

/* vmx_exit.c */
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

/* vmx_report.c: the software VM-entry checker over the live VMCS, and the
 * debug-fail= corruptions (hv_cfg.h).  Nonzero when a check failed. */
int vmx_entry_check_report(struct hv_cpu *c, bool always);
void vmx_force_before_launch(struct hv_cpu *c);

/* vmx_entry.S */
int vmx_launch(void);
void vmx_exit_entry(void);
void vmx_devirt_jump(const struct hv_regs *r, const uint64_t frame[5], uint64_t cr3)
    __attribute__((noreturn));

#endif
