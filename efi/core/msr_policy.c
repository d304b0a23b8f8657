/*
 * msr_policy.c - the guest's MSRs (msr_policy.h).  Pure C.
 *
 * The rule that shapes the table: no MSR may make the CPU or the host
 * touch memory outside the guest's EPT/NPT view, or change how physical
 * addresses decode.  Linear addresses (FS/GS base, SYSENTER, DS area) are
 * translated through the guest's paging and EPT, so they pass; physical
 * ones are refused.  Anything not listed passes through (and a real #GP
 * is reflected to the guest).  DMA (VT-d / IOMMU) is out of scope.
 */
#include "msr_policy.h"

#define FC_LOCK          (1ull << 0)
#define FC_VMX           (3ull << 1)     /* VMX inside / outside SMX */
#define APIC_BASE_ADDR   0x000FFFFFFFFFF000ull
#define XSS_PT           (1ull << 8)
#define EFER_SVME        (1ull << 12)
#define VMCR_LOCK_SVMDIS (3ull << 3)     /* VM_CR.LOCK, VM_CR.SVMDIS */

const struct msr_rule msr_rules[] = {
    {0x3A, 0x3A, MSR_INTEL, RD_PASS, WR_GP, FC_VMX, FC_LOCK, 0, 0,
     "IA32_FEATURE_CONTROL: locked with VMX off (no nested VMX)"},
    {0x480, 0x493, MSR_ANY, RD_GP, WR_GP, 0, 0, 0, 0,
     "VMX capability MSRs: as on a CPU without VMX"},
    {0x1B, 0x1B, MSR_ANY, RD_PASS, WR_PASS, 0, 0, APIC_BASE_ADDR, 0,
     "IA32_APIC_BASE: relocating the xAPIC page (onto any host page) is #GP; EN/EXTD pass"},
    {0x79, 0x79, MSR_INTEL, RD_PASS, WR_DROP, 0, 0, 0, 0,
     "IA32_BIOS_UPDT_TRIG: a microcode update changes the host CPU: ignored"},
    {0x9B, 0x9B, MSR_INTEL, RD_PASS, WR_GP, 0, 0, 0, 0,
     "IA32_SMM_MONITOR_CTL: takes the MSEG physical address"},
    {0x560, 0x561, MSR_INTEL, RD_GP, WR_GP, 0, 0, 0, 0,
     "IA32_RTIT_OUTPUT_BASE/MASK_PTRS: Intel PT output is host-physical; PT is hidden"},
    {0x570, 0x572, MSR_INTEL, RD_GP, WR_GP, 0, 0, 0, 0,
     "IA32_RTIT_CTL/STATUS/CR3_MATCH: Intel PT is hidden"},
    {0x580, 0x58F, MSR_INTEL, RD_GP, WR_GP, 0, 0, 0, 0,
     "IA32_RTIT_ADDRn_A/B: Intel PT is hidden"},
    {0x830, 0x830, MSR_ANY, RD_PASS, WR_ICR, 0, 0, 0, 0,
     "x2APIC ICR: INIT and SIPI are emulated (smp.c)"},
    {0xDA0, 0xDA0, MSR_INTEL, RD_PASS, WR_PASS, 0, 0, 0, XSS_PT,
     "IA32_XSS: bit 8 (PT state) would let XRSTORS load the PT output base"},
    {0xC0000080, 0xC0000080, MSR_AMD, RD_PASS, WR_PASS, EFER_SVME, 0, 0, EFER_SVME,
     "EFER: SVME reads 0 and cannot be set (no nested SVM)"},
    {0xC0010010, 0xC0010010, MSR_AMD, RD_PASS, WR_PASS, 0, 0, ~(3ull << 18), 0,
     "SYSCFG: memory map and encryption enables; only MtrrFixDram{En,ModEn} change"},
    {0xC0010016, 0xC0010019, MSR_AMD, RD_PASS, WR_GP, 0, 0, 0, 0,
     "IORR base/mask: I/O range decoding"},
    {0xC001001A, 0xC001001A, MSR_AMD, RD_PASS, WR_GP, 0, 0, 0, 0,
     "TOP_MEM: DRAM/MMIO boundary"},
    {0xC001001D, 0xC001001D, MSR_AMD, RD_PASS, WR_GP, 0, 0, 0, 0,
     "TOP_MEM2: DRAM/MMIO boundary above 4 GiB"},
    {0xC0010112, 0xC0010113, MSR_AMD, RD_PASS, WR_GP, 0, 0, 0, 0,
     "SMM_ADDR/SMM_MASK: SMRAM decoding"},
    {0xC0010114, 0xC0010114, MSR_AMD, RD_PASS, WR_GP, 0, VMCR_LOCK_SVMDIS, 0, 0,
     "VM_CR: reads locked with SVM disabled"},
    {0xC0010117, 0xC0010117, MSR_AMD, RD_GP, WR_GP, 0, 0, 0, 0,
     "VM_HSAVE_PA: a host-save physical address; no nested SVM"},
};
const size_t msr_rule_count = sizeof(msr_rules) / sizeof(msr_rules[0]);

const struct msr_rule *msr_policy_find(uint32_t msr, bool amd)
{
    for (size_t i = 0; i < msr_rule_count; i++) {
        const struct msr_rule *r = &msr_rules[i];

        if (msr >= r->first && msr <= r->last &&
            (r->vendor == MSR_ANY || (r->vendor == MSR_AMD) == amd))
            return r;
    }
    return NULL;
}

int msr_policy_read(const struct msr_rule *r, bool native_ok, uint64_t native, uint64_t *out)
{
    if (r && r->rd == RD_GP)
        return -1;
    if (!r) {
        *out = native;
        return native_ok ? 0 : -1;
    }
    /* A row that sets bits answers even where the CPU lacks the MSR
     * (VM_CR under an SVM guest reads as locked). */
    if (!native_ok && !r->rd_set)
        return -1;
    *out = ((native_ok ? native : 0) & ~r->rd_clear) | r->rd_set;
    return 0;
}

enum msr_do msr_policy_write(const struct msr_rule *r, uint64_t val, bool cur_ok,
                             uint64_t cur)
{
    if (!r)
        return MSR_DO_WRITE;
    switch (r->wr) {
    case WR_GP:
        return MSR_DO_GP;
    case WR_DROP:
        return MSR_DO_DROP;
    case WR_ICR:
        return MSR_DO_ICR;
    default:
        break;
    }
    if (val & r->wr_zero)
        return MSR_DO_GP;
    if (r->wr_fixed && (!cur_ok || ((val ^ cur) & r->wr_fixed)))
        return MSR_DO_GP;
    return MSR_DO_WRITE;
}

bool msr_rule_traps_read(const struct msr_rule *r)
{
    return r->rd != RD_PASS || r->rd_clear || r->rd_set;
}

bool msr_rule_traps_write(const struct msr_rule *r)
{
    return r->wr != WR_PASS || r->wr_fixed || r->wr_zero;
}
