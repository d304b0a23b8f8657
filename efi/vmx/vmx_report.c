/*
 * vmx_report.c - the VT-x failure reports that name what was wrong: the
 * software VM-entry checker (vmx_check.c) run over the live VMCS before the
 * first VMLAUNCH on each CPU and after any entry failure, and the DEBUG
 * builds' forced failures (debug-fail=, hv_cfg.h), which corrupt one named
 * VMCS field just before the launch.  The reporting code is the same in
 * RELEASE; only the corruption needs debug-fail, which RELEASE refuses.
 */
#include "vmx.h"
#include "vmx_check.h"
#include "hv_cfg.h"
#include "hv_lib.h"

#define PROC_RDTSC_EXITING (1u << 12)  /* an exit we never ask for, so never expect */

static uint64_t rd(uint32_t enc)
{
    uint64_t v = 0;

    vmx_read(enc, &v);
    return v;
}

static void read_state(struct vmx_check_state *s, bool prelaunch)
{
    bool tc = rdmsr(MSR_VMX_BASIC) & VMX_BASIC_TRUE_CTLS;
    uint64_t *seg = &s->es_sel;

    memset(s, 0, sizeof(*s));
    s->cap_pin = rdmsr(tc ? MSR_VMX_TRUE_PIN : MSR_VMX_PINBASED);
    s->cap_proc = rdmsr(tc ? MSR_VMX_TRUE_PROC : MSR_VMX_PROCBASED);
    s->cap_proc2 = rdmsr(MSR_VMX_PROCBASED2);
    s->cap_exit = rdmsr(tc ? MSR_VMX_TRUE_EXIT : MSR_VMX_EXIT);
    s->cap_entry = rdmsr(tc ? MSR_VMX_TRUE_ENTRY : MSR_VMX_ENTRY);
    s->cap_misc = rdmsr(MSR_VMX_MISC);
    s->cap_cr0_fixed0 = vmx.cr0_fixed0;
    s->cap_cr0_fixed1 = vmx.cr0_fixed1;
    s->cap_cr4_fixed0 = vmx.cr4_fixed0;
    s->cap_cr4_fixed1 = vmx.cr4_fixed1;
    s->cap_ept_vpid = vmx.ept_vpid_cap;
    s->maxphyaddr = cpuid2(0x80000008, 0).eax & 0xFF;
    s->pin = rd(VMCS_PIN_CTLS.enc);
    s->proc = rd(VMCS_PROC_CTLS.enc);
    s->proc2 = rd(VMCS_PROC_CTLS2.enc);
    s->exit = rd(VMCS_EXIT_CTLS.enc);
    s->entry = rd(VMCS_ENTRY_CTLS.enc);
    s->eptp = rd(VMCS_EPT_POINTER.enc);
    s->vpid = rd(VMCS_VPID.enc);
    s->entry_intr_info = rd(VMCS_ENTRY_INTR_INFO.enc);
    s->cr3_target_count = rd(VMCS_CR3_TARGET_COUNT.enc);
    s->host_cr0 = rd(VMCS_HOST_CR0.enc);
    s->host_cr3 = rd(VMCS_HOST_CR3.enc);
    s->host_cr4 = rd(VMCS_HOST_CR4.enc);
    s->host_efer = rd(VMCS_HOST_EFER.enc);
    s->host_pat = rd(VMCS_HOST_PAT.enc);
    s->host_rip = rd(VMCS_HOST_RIP.enc);
    s->host_es_sel = rd(VMCS_HOST_ES_SEL.enc);
    s->host_cs_sel = rd(VMCS_HOST_CS_SEL.enc);
    s->host_ss_sel = rd(VMCS_HOST_SS_SEL.enc);
    s->host_ds_sel = rd(VMCS_HOST_DS_SEL.enc);
    s->host_fs_sel = rd(VMCS_HOST_FS_SEL.enc);
    s->host_gs_sel = rd(VMCS_HOST_GS_SEL.enc);
    s->host_tr_sel = rd(VMCS_HOST_TR_SEL.enc);
    s->host_fs_base = rd(VMCS_HOST_FS_BASE.enc);
    s->host_gs_base = rd(VMCS_HOST_GS_BASE.enc);
    s->host_tr_base = rd(VMCS_HOST_TR_BASE.enc);
    s->host_gdtr_base = rd(VMCS_HOST_GDTR_BASE.enc);
    s->host_idtr_base = rd(VMCS_HOST_IDTR_BASE.enc);
    s->host_sysenter_esp = rd(VMCS_HOST_SYSENTER_ESP.enc);
    s->host_sysenter_eip = rd(VMCS_HOST_SYSENTER_EIP.enc);
    s->cr0 = rd(VMCS_GUEST_CR0.enc);
    s->cr3 = rd(VMCS_GUEST_CR3.enc);
    s->cr4 = rd(VMCS_GUEST_CR4.enc);
    s->dr7 = rd(VMCS_GUEST_DR7.enc);
    s->efer = rd(VMCS_GUEST_EFER.enc);
    s->pat = rd(VMCS_GUEST_PAT.enc);
    s->rip = rd(VMCS_GUEST_RIP.enc);
    s->rflags = rd(VMCS_GUEST_RFLAGS.enc);
    s->sysenter_esp = rd(VMCS_GUEST_SYSENTER_ESP.enc);
    s->sysenter_eip = rd(VMCS_GUEST_SYSENTER_EIP.enc);
    s->gdtr_base = rd(VMCS_GUEST_GDTR_BASE.enc);
    s->gdtr_limit = rd(VMCS_GUEST_GDTR_LIMIT.enc);
    s->idtr_base = rd(VMCS_GUEST_IDTR_BASE.enc);
    s->idtr_limit = rd(VMCS_GUEST_IDTR_LIMIT.enc);
    s->activity = rd(VMCS_GUEST_ACTIVITY.enc);
    s->interruptibility = rd(VMCS_GUEST_INTERRUPTIBILITY.enc);
    s->link_pointer = rd(VMCS_LINK_POINTER.enc);
    for (int i = SEG_ES; i <= SEG_TR; i++) {
        seg[4 * i] = rd(VMCS_GUEST_SEL(i).enc);
        seg[4 * i + 1] = rd(VMCS_GUEST_BASE(i).enc);
        seg[4 * i + 2] = rd(VMCS_GUEST_LIMIT(i).enc);
        seg[4 * i + 3] = rd(VMCS_GUEST_AR(i).enc);
    }
    if (prelaunch) {                /* vmx_launch writes RIP, RSP, RFLAGS itself */
        __asm__ volatile("pushfq; pop %0" : "=r"(s->rflags));
        s->rip = (uint64_t)(uintptr_t)vmx_launch;
    }
}

/* Runs the checker over the current VMCS.  `always`: print a line even when
 * every check passes (after a failure: the software checks found nothing). */
int vmx_entry_check_report(struct hv_cpu *c, bool always)
{
    struct vmx_check_state s;
    char why[160];
    int rc;

    read_state(&s, !always);
    rc = vmx_entry_check(&s, why, sizeof(why));
    if (rc)
        hv_log("HV: entry-check cpu=%u %s\n", c->index, why);
    else if (always)
        hv_log("HV: entry-check cpu=%u passed: no software check names the failure\n",
               c->index);
    return rc;
}

/* debug-fail=<name>: one named VMCS field made invalid on the BSP just
 * before its VMLAUNCH (hv_cfg.h). */
void vmx_force_before_launch(struct hv_cpu *c)
{
    if (c->index != 0)
        return;
    if (hv_force(HV_FORCE_GUEST_CR0)) {        /* invalid guest state: exit reason 33 */
        hv_log("HV: debug-fail corrupts guest.cr0: PE cleared, PG kept\n");
        vmx_write(VMCS_GUEST_CR0.enc, rd(VMCS_GUEST_CR0.enc) & ~1ull);
    } else if (hv_force(HV_FORCE_PIN_CTLS)) {  /* invalid control field: VMfailValid 7 */
        bool tc = rdmsr(MSR_VMX_BASIC) & VMX_BASIC_TRUE_CTLS;
        uint32_t may1 = (uint32_t)(rdmsr(tc ? MSR_VMX_TRUE_PIN : MSR_VMX_PINBASED) >> 32);
        int b = 31;

        while (b > 0 && (may1 & (1u << b)))
            b--;
        hv_log("HV: debug-fail corrupts ctls.pin: sets bit %d, not allowed to be 1\n", b);
        vmx_write(VMCS_PIN_CTLS.enc, rd(VMCS_PIN_CTLS.enc) | (1ull << b));
    } else if (hv_force(HV_FORCE_UNEXPECTED_EXIT)) {
        hv_log("HV: debug-fail sets proc.rdtsc-exiting: the next RDTSC exits (reason 16)\n");
        vmx_write(VMCS_PROC_CTLS.enc, rd(VMCS_PROC_CTLS.enc) | PROC_RDTSC_EXITING);
    }
}
