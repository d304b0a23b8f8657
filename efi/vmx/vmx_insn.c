/*
 * vmx_insn.c - VM-instruction error names and the typed VMCS accessors.
 */
#include "hv.h"
#include "vmcs.h"
#include "vmx_insn.h"

/* SDM Vol 3C 31.4, Table 31-1 "VM-Instruction Error Numbers". */
static const char *const vmx_errors[] = {
    [1] = "VMCALL executed in VMX root operation",
    [2] = "VMCLEAR with invalid physical address",
    [3] = "VMCLEAR with VMXON pointer",
    [4] = "VMLAUNCH with non-clear VMCS",
    [5] = "VMRESUME with non-launched VMCS",
    [6] = "VMRESUME after VMXOFF",
    [7] = "VM entry with invalid control field(s)",
    [8] = "VM entry with invalid host-state field(s)",
    [9] = "VMPTRLD with invalid physical address",
    [10] = "VMPTRLD with VMXON pointer",
    [11] = "VMPTRLD with incorrect VMCS revision identifier",
    [12] = "VMREAD/VMWRITE from/to unsupported VMCS component",
    [13] = "VMWRITE to read-only VMCS component",
    [15] = "VMXON executed in VMX root operation",
    [16] = "VM entry with invalid executive-VMCS pointer",
    [17] = "VM entry with non-launched executive VMCS",
    [18] = "VM entry with executive-VMCS pointer not VMXON pointer",
    [19] = "VMCALL with non-clear VMCS",
    [20] = "VMCALL with invalid VM-exit control fields",
    [22] = "VMCALL with incorrect MSEG revision identifier",
    [23] = "VMXOFF under dual-monitor treatment of SMIs and SMM",
    [24] = "VMCALL with invalid SMM-monitor features",
    [25] = "VM entry with invalid VM-execution control fields in executive VMCS",
    [26] = "VM entry with events blocked by MOV SS",
    [28] = "Invalid operand to INVEPT/INVVPID",
};

const char *vmx_error_name(uint32_t n)
{
    if (n < sizeof(vmx_errors) / sizeof(vmx_errors[0]) && vmx_errors[n])
        return vmx_errors[n];
    return "unknown";
}

static uint32_t insn_error(void)
{
    uint64_t v = 0;

    vmx_read(VMCS_INSN_ERROR.enc, &v);
    return (uint32_t)v;
}

enum vmx_result vmx_check(enum vmx_result r, const char *what)
{
    if (r == VMX_FAIL_INVALID) {
        hv_log("HV: %s failed: VMfailInvalid\n", what);
    } else if (r == VMX_FAIL_VALID) {
        uint32_t n = insn_error();
        hv_log("HV: %s failed: VMfailValid error=%u (%s)\n", what, n, vmx_error_name(n));
    }
    return r;
}

/* The out-of-line halves of the vmcs.h accessors.  After a failed VMWRITE,
 * a VMREAD of the error field fails too exactly when there is no current
 * VMCS: that tells VMfailInvalid from VMfailValid. */
__attribute__((preserve_most, cold)) void vmcs_write_failed(uint32_t enc, uint64_t v)
{
    uint64_t n;

    if (vmx_read(VMCS_INSN_ERROR.enc, &n) != VMX_OK)
        hv_log("HV: vmwrite failed field=%04x value=%llx VMfailInvalid\n", enc,
               (unsigned long long)v);
    else
        hv_log("HV: vmwrite failed field=%04x value=%llx error=%u (%s)\n", enc,
               (unsigned long long)v, (uint32_t)n, vmx_error_name((uint32_t)n));
}

__attribute__((preserve_most, cold)) void vmcs_read_failed(uint32_t enc)
{
    hv_log("HV: vmread failed field=%04x\n", enc);
}
