/*
 * vmx_insn.h - VMX instruction wrappers (SDM Vol 3C ch. 31).
 *
 * Every VMX instruction reports its outcome in RFLAGS (SDM 31.2):
 *   VMsucceed      CF=0 ZF=0
 *   VMfailInvalid  CF=1        (no current VMCS: no error number)
 *   VMfailValid    ZF=1        (VM-instruction error field holds the number)
 * The wrappers return one of enum vmx_result; callers that consider a failure
 * a bug use vmx_check() which logs the error with its SDM 31.4 name.
 */
#ifndef VMX_INSN_H
#define VMX_INSN_H

#include <stdint.h>

enum vmx_result { VMX_OK = 0, VMX_FAIL_INVALID = 1, VMX_FAIL_VALID = 2 };

#define VMX_RESULT(cf, zf) ((cf) ? VMX_FAIL_INVALID : (zf) ? VMX_FAIL_VALID : VMX_OK)

static inline enum vmx_result vmx_on(uint64_t pa)
{
    uint8_t cf, zf;

    __asm__ volatile("vmxon %2; setc %0; setz %1"
                     : "=r"(cf), "=r"(zf) : "m"(pa) : "cc", "memory");
    return VMX_RESULT(cf, zf);
}

static inline enum vmx_result vmx_clear(uint64_t pa)
{
    uint8_t cf, zf;

    __asm__ volatile("vmclear %2; setc %0; setz %1"
                     : "=r"(cf), "=r"(zf) : "m"(pa) : "cc", "memory");
    return VMX_RESULT(cf, zf);
}

static inline enum vmx_result vmx_ptrld(uint64_t pa)
{
    uint8_t cf, zf;

    __asm__ volatile("vmptrld %2; setc %0; setz %1"
                     : "=r"(cf), "=r"(zf) : "m"(pa) : "cc", "memory");
    return VMX_RESULT(cf, zf);
}

static inline enum vmx_result vmx_write(uint64_t enc, uint64_t v)
{
    uint8_t cf, zf;

    __asm__ volatile("vmwrite %3, %2; setc %0; setz %1"
                     : "=r"(cf), "=r"(zf) : "r"(enc), "rm"(v) : "cc", "memory");
    return VMX_RESULT(cf, zf);
}

static inline enum vmx_result vmx_read(uint64_t enc, uint64_t *v)
{
    uint8_t cf, zf;
    uint64_t out = 0;

    __asm__ volatile("vmread %3, %2; setc %0; setz %1"
                     : "=r"(cf), "=r"(zf), "=rm"(out) : "r"(enc) : "cc", "memory");
    *v = out;
    return VMX_RESULT(cf, zf);
}

static inline enum vmx_result vmx_off(void)
{
    uint8_t cf, zf;

    __asm__ volatile("vmxoff; setc %0; setz %1" : "=r"(cf), "=r"(zf) : : "cc", "memory");
    return VMX_RESULT(cf, zf);
}

/* INVEPT / INVVPID (SDM 31.3): type 1 = single context, 2 = all contexts. */
static inline enum vmx_result vmx_invept(uint64_t type, uint64_t eptp)
{
    struct { uint64_t eptp, zero; } d = {eptp, 0};
    uint8_t cf, zf;

    __asm__ volatile("invept %2, %3; setc %0; setz %1"
                     : "=r"(cf), "=r"(zf) : "m"(d), "r"(type) : "cc", "memory");
    return VMX_RESULT(cf, zf);
}

static inline enum vmx_result vmx_invvpid(uint64_t type, uint16_t vpid)
{
    struct { uint64_t vpid, addr; } d = {vpid, 0};
    uint8_t cf, zf;

    __asm__ volatile("invvpid %2, %3; setc %0; setz %1"
                     : "=r"(cf), "=r"(zf) : "m"(d), "r"(type) : "cc", "memory");
    return VMX_RESULT(cf, zf);
}

/* SDM 31.4 name of VM-instruction error n ("unknown" outside the table). */
const char *vmx_error_name(uint32_t n);
/* Logs `HV: <what> failed: VMfailInvalid` or `... VMfailValid error=<n> (<name>)`
 * and returns r unchanged. */
enum vmx_result vmx_check(enum vmx_result r, const char *what);

#endif
