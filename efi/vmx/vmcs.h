/*
 * vmcs.h - typed VMCS field encodings and accessors (SDM Vol 3C App. B).
 *
 * A field's width is encoded in bits 14:13 of its encoding (SDM 25.11.2):
 * 0 = 16-bit, 1 = 64-bit, 2 = 32-bit, 3 = natural width.  Each width gets its
 * own one-member struct type, so passing a 64-bit field to vmcs_write16() is
 * a compile error, and each field constant carries a compile-time check that
 * its encoding really has that width.
 */
#ifndef VMX_VMCS_H
#define VMX_VMCS_H

#include <stdint.h>

typedef struct { uint32_t enc; } vmcs_f16;
typedef struct { uint32_t enc; } vmcs_f32;
typedef struct { uint32_t enc; } vmcs_f64;
typedef struct { uint32_t enc; } vmcs_fnat;

/* (enc) if its width bits equal w, else a negative array size: no build. */
#define VMCS_ENC_CHECKED(enc, w) \
    ((enc) + 0 * sizeof(char[(((enc) >> 13) & 3) == (w) ? 1 : -1]))
#define F16(enc)  ((vmcs_f16){VMCS_ENC_CHECKED(enc, 0)})
#define F64(enc)  ((vmcs_f64){VMCS_ENC_CHECKED(enc, 1)})
#define F32(enc)  ((vmcs_f32){VMCS_ENC_CHECKED(enc, 2)})
#define FNAT(enc) ((vmcs_fnat){VMCS_ENC_CHECKED(enc, 3)})

/* ---- 16-bit fields ------------------------------------------------------ */
#define VMCS_VPID                   F16(0x0000)
#define VMCS_GUEST_ES_SEL           F16(0x0800)   /* + 2*seg for CS..TR */
#define VMCS_HOST_ES_SEL            F16(0x0C00)
#define VMCS_HOST_CS_SEL            F16(0x0C02)
#define VMCS_HOST_SS_SEL            F16(0x0C04)
#define VMCS_HOST_DS_SEL            F16(0x0C06)
#define VMCS_HOST_FS_SEL            F16(0x0C08)
#define VMCS_HOST_GS_SEL            F16(0x0C0A)
#define VMCS_HOST_TR_SEL            F16(0x0C0C)

/* ---- 64-bit fields ------------------------------------------------------ */
#define VMCS_IO_BITMAP_A            F64(0x2000)
#define VMCS_IO_BITMAP_B            F64(0x2002)
#define VMCS_MSR_BITMAP             F64(0x2004)
#define VMCS_EPT_POINTER            F64(0x201A)
#define VMCS_XSS_EXIT_BITMAP        F64(0x202C)
#define VMCS_GUEST_PHYS_ADDR        F64(0x2400)   /* read-only */
#define VMCS_LINK_POINTER           F64(0x2800)
#define VMCS_GUEST_DEBUGCTL         F64(0x2802)
#define VMCS_GUEST_PAT              F64(0x2804)
#define VMCS_GUEST_EFER             F64(0x2806)
#define VMCS_HOST_PAT               F64(0x2C00)
#define VMCS_HOST_EFER              F64(0x2C02)

/* ---- 32-bit fields ------------------------------------------------------ */
#define VMCS_PIN_CTLS               F32(0x4000)
#define VMCS_PROC_CTLS              F32(0x4002)
#define VMCS_EXCEPTION_BITMAP       F32(0x4004)
#define VMCS_CR3_TARGET_COUNT       F32(0x400A)
#define VMCS_EXIT_CTLS              F32(0x400C)
#define VMCS_EXIT_MSR_STORE_COUNT   F32(0x400E)
#define VMCS_EXIT_MSR_LOAD_COUNT    F32(0x4010)
#define VMCS_ENTRY_CTLS             F32(0x4012)
#define VMCS_ENTRY_MSR_LOAD_COUNT   F32(0x4014)
#define VMCS_ENTRY_INTR_INFO        F32(0x4016)
#define VMCS_ENTRY_EXC_ERROR        F32(0x4018)
#define VMCS_ENTRY_INSN_LEN         F32(0x401A)
#define VMCS_PROC_CTLS2             F32(0x401E)
#define VMCS_INSN_ERROR             F32(0x4400)   /* read-only */
#define VMCS_EXIT_REASON            F32(0x4402)
#define VMCS_EXIT_INTR_INFO         F32(0x4404)
#define VMCS_EXIT_INTR_ERROR        F32(0x4406)
#define VMCS_IDT_VECTORING_INFO     F32(0x4408)
#define VMCS_IDT_VECTORING_ERROR    F32(0x440A)
#define VMCS_EXIT_INSN_LEN          F32(0x440C)
#define VMCS_EXIT_INSN_INFO         F32(0x440E)
#define VMCS_GUEST_ES_LIMIT         F32(0x4800)   /* + 2*seg */
#define VMCS_GUEST_GDTR_LIMIT       F32(0x4810)
#define VMCS_GUEST_IDTR_LIMIT       F32(0x4812)
#define VMCS_GUEST_ES_AR            F32(0x4814)   /* + 2*seg */
#define VMCS_GUEST_INTERRUPTIBILITY F32(0x4824)
#define VMCS_GUEST_ACTIVITY         F32(0x4826)
#define VMCS_GUEST_SYSENTER_CS      F32(0x482A)
#define VMCS_HOST_SYSENTER_CS       F32(0x4C00)

/* ---- natural-width fields ----------------------------------------------- */
#define VMCS_CR0_MASK               FNAT(0x6000)
#define VMCS_CR4_MASK               FNAT(0x6002)
#define VMCS_CR0_SHADOW             FNAT(0x6004)
#define VMCS_CR4_SHADOW             FNAT(0x6006)
#define VMCS_EXIT_QUALIFICATION     FNAT(0x6400)
#define VMCS_GUEST_LINEAR_ADDR      FNAT(0x640A)
#define VMCS_GUEST_CR0              FNAT(0x6800)
#define VMCS_GUEST_CR3              FNAT(0x6802)
#define VMCS_GUEST_CR4              FNAT(0x6804)
#define VMCS_GUEST_ES_BASE          FNAT(0x6806)  /* + 2*seg */
#define VMCS_GUEST_GDTR_BASE        FNAT(0x6816)
#define VMCS_GUEST_IDTR_BASE        FNAT(0x6818)
#define VMCS_GUEST_DR7              FNAT(0x681A)
#define VMCS_GUEST_RSP              FNAT(0x681C)
#define VMCS_GUEST_RIP              FNAT(0x681E)
#define VMCS_GUEST_RFLAGS           FNAT(0x6820)
#define VMCS_GUEST_PENDING_DBG      FNAT(0x6822)
#define VMCS_GUEST_SYSENTER_ESP     FNAT(0x6824)
#define VMCS_GUEST_SYSENTER_EIP     FNAT(0x6826)
#define VMCS_HOST_CR0               FNAT(0x6C00)
#define VMCS_HOST_CR3               FNAT(0x6C02)
#define VMCS_HOST_CR4               FNAT(0x6C04)
#define VMCS_HOST_FS_BASE           FNAT(0x6C06)
#define VMCS_HOST_GS_BASE           FNAT(0x6C08)
#define VMCS_HOST_TR_BASE           FNAT(0x6C0A)
#define VMCS_HOST_GDTR_BASE         FNAT(0x6C0C)
#define VMCS_HOST_IDTR_BASE         FNAT(0x6C0E)
#define VMCS_HOST_SYSENTER_ESP      FNAT(0x6C10)
#define VMCS_HOST_SYSENTER_EIP      FNAT(0x6C12)
#define VMCS_HOST_RSP               FNAT(0x6C14)
#define VMCS_HOST_RIP               FNAT(0x6C16)

/* Guest segment registers in VMCS order; the per-segment fields are
 * consecutive encodings 2 apart (SDM App. B.1.2, B.3.3, B.4.3). */
enum vmx_seg { SEG_ES, SEG_CS, SEG_SS, SEG_DS, SEG_FS, SEG_GS, SEG_LDTR, SEG_TR, SEG_COUNT };
#define VMCS_GUEST_SEL(s)   F16(0x0800 + 2 * (s))
#define VMCS_GUEST_LIMIT(s) F32(0x4800 + 2 * (s))
#define VMCS_GUEST_AR(s)    F32(0x4814 + 2 * (s))
#define VMCS_GUEST_BASE(s)  FNAT(0x6806 + 2 * (s))

/* ---- accessors ----------------------------------------------------------- */
/* Inline, because every exit runs a few: one VMREAD/VMWRITE and one branch
 * on failure (CF or ZF set, SDM 31.2).  The failure halves are out of line
 * in vmx_insn.c: a read logs `HV: vmread failed field=<enc>` and gives 0; a
 * write logs `HV: vmwrite failed field=<enc> value=<v> error=<n> (<name>)`
 * (or VMfailInvalid) and gives nonzero.
 * They are preserve_most so that a call that never happens does not make the
 * compiler keep the caller's values in callee-saved registers (pushed and
 * popped on every exit); and they return nothing, as clang 14 restores RAX
 * over a preserve_most function's return value on this target.  Likewise
 * always_inline: clang would otherwise call an out-of-line copy from cold
 * call sites, an ordinary call. */
__attribute__((preserve_most, cold)) void vmcs_read_failed(uint32_t enc);
__attribute__((preserve_most, cold)) void vmcs_write_failed(uint32_t enc, uint64_t v);

#define VMCS_ACCESSOR static inline __attribute__((always_inline))

VMCS_ACCESSOR uint64_t vmcs_read_enc(uint32_t enc)
{
    uint64_t v;

    __asm__ goto("vmread %1, %0; jbe %l[fail]" : "=r"(v) : "r"((uint64_t)enc) : "cc" : fail);
    return v;
fail:
    vmcs_read_failed(enc);
    return 0;
}

VMCS_ACCESSOR int vmcs_write_enc(uint32_t enc, uint64_t v)
{
    __asm__ goto("vmwrite %1, %0; jbe %l[fail]" : : "r"((uint64_t)enc), "r"(v) : "cc" : fail);
    return 0;
fail:
    vmcs_write_failed(enc, v);
    return -1;
}

VMCS_ACCESSOR int vmcs_write16(vmcs_f16 f, uint16_t v) { return vmcs_write_enc(f.enc, v); }
VMCS_ACCESSOR int vmcs_write32(vmcs_f32 f, uint32_t v) { return vmcs_write_enc(f.enc, v); }
VMCS_ACCESSOR int vmcs_write64(vmcs_f64 f, uint64_t v) { return vmcs_write_enc(f.enc, v); }
VMCS_ACCESSOR int vmcs_writenat(vmcs_fnat f, uint64_t v) { return vmcs_write_enc(f.enc, v); }
VMCS_ACCESSOR uint16_t vmcs_read16(vmcs_f16 f) { return (uint16_t)vmcs_read_enc(f.enc); }
VMCS_ACCESSOR uint32_t vmcs_read32(vmcs_f32 f) { return (uint32_t)vmcs_read_enc(f.enc); }
VMCS_ACCESSOR uint64_t vmcs_read64(vmcs_f64 f) { return vmcs_read_enc(f.enc); }
VMCS_ACCESSOR uint64_t vmcs_readnat(vmcs_fnat f) { return vmcs_read_enc(f.enc); }

#endif
