/*
 * vmx_ctl.c - the wanted VMX controls, each with its reason, and the
 * CPUID features they allow (vmx_ctl.h).  Pure C.
 */
#include "vmx_ctl.h"

#define N(a) (sizeof(a) / sizeof((a)[0]))

static const struct ctl_want pin_want[] = {
    {PIN_NMI_EXITING, false, "nmi-exiting", "NMIs that arrive in the host are re-injected"},
    {PIN_VIRTUAL_NMIS, false, "virtual-nmis", "NMI-window exits to re-inject at the right time"},
};

static const struct ctl_want proc_want[] = {
    {PROC_IO_BITMAPS, false, "io-bitmaps", "exit only on the ACPI PM1a control port"},
    {PROC_MSR_BITMAP, true, "msr-bitmap", "exit only on the MSRs we emulate"},
    {PROC_SECONDARY, true, "secondary-controls", "EPT and unrestricted guest live there"},
};

/* Each optional one gates CPUID bits (cpuid_policy.c): without it the
 * feature reads as absent. */
static const struct ctl_want proc2_want[] = {
    {PROC2_EPT, true, "ept", "hide hypervisor memory; guest paging stays native"},
    {PROC2_RDTSCP, false, "rdtscp", "RDTSCP raises #UD in the guest without it"},
    {PROC2_VPID, false, "vpid", "guest TLB entries survive exits"},
    {PROC2_UNRESTRICTED, true, "unrestricted-guest", "real-mode guests: INIT/SIPI AP start"},
    {PROC2_INVPCID, false, "invpcid", "INVPCID raises #UD in the guest without it"},
    {PROC2_XSAVES, false, "xsaves", "XSAVES/XRSTORS raise #UD in the guest without it"},
    {PROC2_WAITPKG, false, "user-wait-pause", "TPAUSE/UMWAIT raise #UD in the guest without it"},
};

static const struct ctl_want exit_want[] = {
    {EXIT_SAVE_DEBUG, false, "save-debug", "guest DR7/DEBUGCTL survive exits"},
    {EXIT_HOST_64, true, "host-address-space", "the host runs in 64-bit mode"},
    {EXIT_SAVE_PAT, false, "save-pat", "guest PAT is the guest's own"},
    {EXIT_LOAD_PAT, false, "load-pat", "host PAT is fixed"},
    {EXIT_SAVE_EFER, true, "save-efer", "guest EFER (LMA) is tracked across INIT/CR0"},
    {EXIT_LOAD_EFER, true, "load-efer", "host EFER is fixed"},
};

static const struct ctl_want entry_want[] = {
    {ENTRY_LOAD_DEBUG, false, "load-debug", "guest DR7/DEBUGCTL survive exits"},
    {ENTRY_IA32E_GUEST, true, "ia32e-guest", "the firmware runs in long mode"},
    {ENTRY_LOAD_PAT, false, "load-pat", "guest PAT is the guest's own"},
    {ENTRY_LOAD_EFER, true, "load-efer", "guest EFER is the guest's own"},
};

const struct ctl_group vmx_ctl_groups[CTL_GROUPS] = {
    [CTL_PIN] = {"pin", pin_want, N(pin_want)},
    [CTL_PROC] = {"proc", proc_want, N(proc_want)},
    [CTL_PROC2] = {"proc2", proc2_want, N(proc2_want)},
    [CTL_EXIT] = {"exit", exit_want, N(exit_want)},
    [CTL_ENTRY] = {"entry", entry_want, N(entry_want)},
};

uint32_t vmx_ctl_pick(uint64_t cap, const struct ctl_group *g, uint32_t *missing)
{
    uint32_t must = (uint32_t)cap, may = (uint32_t)(cap >> 32), want = 0;

    *missing = 0;
    for (size_t i = 0; i < g->n; i++) {
        if (g->want[i].bit & may)
            want |= g->want[i].bit;
        else
            *missing |= g->want[i].bit;
    }
    return (want | must) & may;
}

/* Intel PT stays hidden: we never set "PT uses guest-physical addresses"
 * (it would also need the RTIT_CTL entry/exit controls), so pt_gpa is 0. */
void vmx_cpuid_ctls(uint32_t proc, uint32_t proc2, uint32_t exit, uint32_t entry,
                    struct cpuid_ctls *out)
{
    if (!(proc & PROC_SECONDARY))
        proc2 = 0;
    out->amd = false;
    out->rdtscp = proc2 & PROC2_RDTSCP;
    out->invpcid = proc2 & PROC2_INVPCID;
    out->xsaves = proc2 & PROC2_XSAVES;
    out->waitpkg = proc2 & PROC2_WAITPKG;
    out->pt_gpa = (proc2 & PROC2_PT_GPA) && (exit & EXIT_CLEAR_RTIT) && (entry & ENTRY_LOAD_RTIT);
}
