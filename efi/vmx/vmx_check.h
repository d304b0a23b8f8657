/*
 * vmx_check.h - a software VM-entry checker (SDM Vol 3C 27.2 and 27.3:
 * controls, host state, guest state).  Real hardware says only "invalid
 * guest state" or "invalid control field"; this names the first check that
 * fails, e.g. `guest.cr0: PG set without PE`.
 *
 * Pure C: the state is a flat struct of u64 fields (one X-macro list, which
 * tests/test_vmx_check.py reads too), filled by vmx_check_read.c from the
 * VMCS and the capability MSRs, or by host unit tests.
 */
#ifndef VMX_CHECK_H
#define VMX_CHECK_H

#include <stddef.h>
#include <stdint.h>

/* Segments in VMCS order: es cs ss ds fs gs ldtr tr. */
#define VMX_CHECK_SEG(X, s) X(s##_sel) X(s##_base) X(s##_limit) X(s##_ar)
#define VMX_CHECK_FIELDS(X)                                                        \
    /* capabilities (SDM App. A): allowed-0 in 31:0, allowed-1 in 63:32 */        \
    X(cap_pin) X(cap_proc) X(cap_proc2) X(cap_exit) X(cap_entry) X(cap_misc)       \
    X(cap_cr0_fixed0) X(cap_cr0_fixed1) X(cap_cr4_fixed0) X(cap_cr4_fixed1)        \
    X(cap_ept_vpid) X(maxphyaddr)                                                  \
    /* controls */                                                                 \
    X(pin) X(proc) X(proc2) X(exit) X(entry) X(eptp) X(vpid) X(entry_intr_info)    \
    X(cr3_target_count)                                                            \
    /* host state */                                                               \
    X(host_cr0) X(host_cr3) X(host_cr4) X(host_efer) X(host_pat) X(host_rip)       \
    X(host_es_sel) X(host_cs_sel) X(host_ss_sel) X(host_ds_sel) X(host_fs_sel)     \
    X(host_gs_sel) X(host_tr_sel) X(host_fs_base) X(host_gs_base) X(host_tr_base)  \
    X(host_gdtr_base) X(host_idtr_base) X(host_sysenter_esp) X(host_sysenter_eip)  \
    /* guest state */                                                              \
    X(cr0) X(cr3) X(cr4) X(dr7) X(efer) X(pat) X(rip) X(rflags) X(sysenter_esp)    \
    X(sysenter_eip) X(gdtr_base) X(gdtr_limit) X(idtr_base) X(idtr_limit)          \
    X(activity) X(interruptibility) X(link_pointer)                                \
    VMX_CHECK_SEG(X, es) VMX_CHECK_SEG(X, cs) VMX_CHECK_SEG(X, ss)                 \
    VMX_CHECK_SEG(X, ds) VMX_CHECK_SEG(X, fs) VMX_CHECK_SEG(X, gs)                 \
    VMX_CHECK_SEG(X, ldtr) VMX_CHECK_SEG(X, tr)

struct vmx_check_state {
#define VMX_CHECK_FIELD(n) uint64_t n;
    VMX_CHECK_FIELDS(VMX_CHECK_FIELD)
#undef VMX_CHECK_FIELD
};

/* Runs every check in SDM order.  Returns 0 when all pass, else -1 with
 * the first failure in out ("guest.cr0: PG set without PE"). */
int vmx_entry_check(const struct vmx_check_state *s, char *out, size_t size);

#endif
