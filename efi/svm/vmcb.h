/*
 * vmcb.h - the Virtual Machine Control Block (AMD APM Vol 2 Appendix B,
 * Tables B-1 and B-2): one 4 KiB page, the control area at 0x000 and the
 * state save area at 0x400.  Offsets are checked at compile time.
 */
#ifndef SVM_VMCB_H
#define SVM_VMCB_H

#include <stdint.h>

/* Intercept vector 3 (VMCB 0x00C, APM Table B-1). */
#define ICPT_INTR      (1u << 0)
#define ICPT_NMI       (1u << 1)
#define ICPT_SMI       (1u << 2)
#define ICPT_INIT      (1u << 3)
#define ICPT_VINTR     (1u << 4)
#define ICPT_CPUID     (1u << 18)
#define ICPT_IRET      (1u << 20)
#define ICPT_INVD      (1u << 22)
#define ICPT_INVLPGA   (1u << 26)
#define ICPT_IOIO      (1u << 27)
#define ICPT_MSR       (1u << 28)
#define ICPT_SHUTDOWN  (1u << 31)
/* Intercept vector 4 (VMCB 0x010). */
#define ICPT_VMRUN     (1u << 0)
#define ICPT_VMMCALL   (1u << 1)
#define ICPT_VMLOAD    (1u << 2)
#define ICPT_VMSAVE    (1u << 3)
#define ICPT_STGI      (1u << 4)
#define ICPT_CLGI      (1u << 5)
#define ICPT_SKINIT    (1u << 6)

/* TLB_CONTROL (VMCB 0x05C, APM 15.16.1). */
#define TLB_NONE       0
#define TLB_FLUSH_ALL  1
#define TLB_FLUSH_ASID 3

/* EVENTINJ / EXITINTINFO (APM 15.20). */
#define EVT_VALID      (1u << 31)
#define EVT_ERR_VALID  (1u << 11)
#define EVT_TYPE_INTR  (0u << 8)
#define EVT_TYPE_NMI   (2u << 8)
#define EVT_TYPE_EXC   (3u << 8)
#define EVT_TYPE_SOFT  (4u << 8)

#define V_IRQ          (1ull << 8)           /* VMCB 0x060 V_IRQ */
#define INT_SHADOW     (1ull << 0)           /* VMCB 0x068 */

struct vmcb_seg {
    uint16_t sel;
    uint16_t attrib;          /* descriptor bits 47:40 -> 7:0, 55:52 -> 11:8 */
    uint32_t limit;
    uint64_t base;
};
_Static_assert(sizeof(struct vmcb_seg) == 16, "APM Table B-2 segment");

struct vmcb_control {
    uint32_t icpt_cr;         /* 0x000 CR reads 15:0, writes 31:16 */
    uint32_t icpt_dr;         /* 0x004 */
    uint32_t icpt_exc;        /* 0x008 exception bitmap */
    uint32_t icpt3;           /* 0x00C */
    uint32_t icpt4;           /* 0x010 */
    uint32_t icpt5;           /* 0x014 */
    uint8_t rsvd0[0x3C - 0x18];
    uint16_t pause_thresh;    /* 0x03C */
    uint16_t pause_count;     /* 0x03E */
    uint64_t iopm_pa;         /* 0x040 */
    uint64_t msrpm_pa;        /* 0x048 */
    uint64_t tsc_offset;      /* 0x050 */
    uint32_t asid;            /* 0x058 */
    uint8_t tlb_control;      /* 0x05C */
    uint8_t rsvd1[3];
    uint64_t vintr;           /* 0x060 V_TPR, V_IRQ, ... */
    uint64_t int_state;       /* 0x068 interrupt shadow */
    uint64_t exitcode;        /* 0x070 */
    uint64_t exitinfo1;       /* 0x078 */
    uint64_t exitinfo2;       /* 0x080 */
    uint64_t exitintinfo;     /* 0x088 */
    uint64_t np_enable;       /* 0x090 bit 0: nested paging */
    uint64_t avic_apic_bar;   /* 0x098 */
    uint64_t ghcb_pa;         /* 0x0A0 */
    uint64_t eventinj;        /* 0x0A8 */
    uint64_t n_cr3;           /* 0x0B0 */
    uint64_t lbr_virt;        /* 0x0B8 */
    uint32_t clean;           /* 0x0C0 VMCB clean bits */
    uint32_t rsvd2;
    uint64_t next_rip;        /* 0x0C8 nRIP (NRIPS) */
    uint8_t insn_len;         /* 0x0D0 decode assists */
    uint8_t insn_bytes[15];   /* 0x0D1 */
    uint8_t rsvd3[0x400 - 0xE0];
};
_Static_assert(sizeof(struct vmcb_control) == 0x400, "APM Table B-1");
_Static_assert(__builtin_offsetof(struct vmcb_control, iopm_pa) == 0x40, "iopm");
_Static_assert(__builtin_offsetof(struct vmcb_control, asid) == 0x58, "asid");
_Static_assert(__builtin_offsetof(struct vmcb_control, exitcode) == 0x70, "exitcode");
_Static_assert(__builtin_offsetof(struct vmcb_control, np_enable) == 0x90, "np");
_Static_assert(__builtin_offsetof(struct vmcb_control, eventinj) == 0xA8, "eventinj");
_Static_assert(__builtin_offsetof(struct vmcb_control, next_rip) == 0xC8, "nrip");

struct vmcb_save {
    struct vmcb_seg es, cs, ss, ds, fs, gs;   /* 0x000 - 0x05F */
    struct vmcb_seg gdtr, ldtr, idtr, tr;     /* 0x060 - 0x09F */
    uint8_t rsvd0[0xCB - 0xA0];
    uint8_t cpl;              /* 0x0CB */
    uint32_t rsvd1;
    uint64_t efer;            /* 0x0D0 */
    uint8_t rsvd2[0x148 - 0xD8];
    uint64_t cr4;             /* 0x148 */
    uint64_t cr3;             /* 0x150 */
    uint64_t cr0;             /* 0x158 */
    uint64_t dr7;             /* 0x160 */
    uint64_t dr6;             /* 0x168 */
    uint64_t rflags;          /* 0x170 */
    uint64_t rip;             /* 0x178 */
    uint8_t rsvd3[0x1D8 - 0x180];
    uint64_t rsp;             /* 0x1D8 */
    uint64_t s_cet, ssp, isst_addr;           /* 0x1E0 */
    uint64_t rax;             /* 0x1F8 */
    uint64_t star;            /* 0x200 */
    uint64_t lstar;           /* 0x208 */
    uint64_t cstar;           /* 0x210 */
    uint64_t sfmask;          /* 0x218 */
    uint64_t kernel_gs_base;  /* 0x220 */
    uint64_t sysenter_cs;     /* 0x228 */
    uint64_t sysenter_esp;    /* 0x230 */
    uint64_t sysenter_eip;    /* 0x238 */
    uint64_t cr2;             /* 0x240 */
    uint8_t rsvd4[0x268 - 0x248];
    uint64_t g_pat;           /* 0x268 */
    uint64_t dbgctl;          /* 0x270 */
    uint64_t br_from, br_to, lastexcpfrom, lastexcpto;   /* 0x278 */
    uint8_t rsvd5[0xC00 - 0x298];
};
_Static_assert(__builtin_offsetof(struct vmcb_save, cpl) == 0xCB, "cpl");
_Static_assert(__builtin_offsetof(struct vmcb_save, efer) == 0xD0, "efer");
_Static_assert(__builtin_offsetof(struct vmcb_save, cr4) == 0x148, "cr4");
_Static_assert(__builtin_offsetof(struct vmcb_save, rip) == 0x178, "rip");
_Static_assert(__builtin_offsetof(struct vmcb_save, rsp) == 0x1D8, "rsp");
_Static_assert(__builtin_offsetof(struct vmcb_save, rax) == 0x1F8, "rax");
_Static_assert(__builtin_offsetof(struct vmcb_save, kernel_gs_base) == 0x220, "kgs");
_Static_assert(__builtin_offsetof(struct vmcb_save, g_pat) == 0x268, "g_pat");

struct vmcb {
    struct vmcb_control ctl;  /* 0x000 */
    struct vmcb_save save;    /* 0x400 */
};
_Static_assert(sizeof(struct vmcb) == 4096, "one page");

/* Exit codes (APM Appendix C). */
enum {
    VMEXIT_EXC0 = 0x40, VMEXIT_DB = 0x41, VMEXIT_INTR = 0x60, VMEXIT_NMI = 0x61, VMEXIT_SMI = 0x62,
    VMEXIT_INIT = 0x63, VMEXIT_VINTR = 0x64, VMEXIT_CPUID = 0x72, VMEXIT_IRET = 0x74, VMEXIT_INVD = 0x76,
    VMEXIT_HLT = 0x78, VMEXIT_INVLPGA = 0x7A, VMEXIT_IOIO = 0x7B, VMEXIT_MSR = 0x7C,
    VMEXIT_SHUTDOWN = 0x7F, VMEXIT_VMRUN = 0x80, VMEXIT_VMMCALL = 0x81,
    VMEXIT_VMLOAD = 0x82, VMEXIT_VMSAVE = 0x83, VMEXIT_STGI = 0x84, VMEXIT_CLGI = 0x85,
    VMEXIT_SKINIT = 0x86, VMEXIT_XSETBV = 0x8D, VMEXIT_NPF = 0x400,
};
#define VMEXIT_INVALID 0xFFFFFFFFu   /* -1; QEMU 7.x writes it as a 32-bit value */

#endif
