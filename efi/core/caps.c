/*
 * caps.c - what virtualization this CPU offers, and whether we may use it.
 *
 * The vendor string picks the path; after that every MSR read is guarded by
 * the CPUID bit that guarantees the MSR exists (an unguarded RDMSR raises
 * #GP, which in UEFI means a hang), and the capability MSRs are cross-checked
 * against each other rather than trusted one bit at a time.
 *
 * References: Intel SDM Vol. 3C Appendix A (VMX capability reporting),
 * SDM Vol. 3C 24.7 / 23.7 (enabling VMX, IA32_FEATURE_CONTROL);
 * AMD APM Vol. 2 15.4 (enabling SVM) and CPUID Fn8000_000A.
 */
#include "hv.h"
#include "hv_lib.h"

#define MSR_IA32_FEATURE_CONTROL        0x03A
#define   FC_LOCK                       (1ULL << 0)
#define   FC_VMX_OUTSIDE_SMX            (1ULL << 2)
#define MSR_IA32_VMX_BASIC              0x480
#define   BASIC_TRUE_CTLS               (1ULL << 55)
#define MSR_IA32_VMX_PROCBASED_CTLS     0x482
#define MSR_IA32_VMX_PROCBASED_CTLS2    0x48B
#define MSR_IA32_VMX_EPT_VPID_CAP       0x48C
#define MSR_IA32_VMX_TRUE_PROCBASED_CTLS 0x48E
#define   PROC_ACTIVATE_SECONDARY       (1U << 31)
#define   PROC2_EPT                     (1U << 1)
#define   PROC2_VPID                    (1U << 5)
#define   PROC2_UG                      (1U << 7)
#define   EPT_PWL4                      (1ULL << 6)
#define   EPT_WB                        (1ULL << 14)
#define   EPT_INVEPT                    (1ULL << 20)
#define   EPT_INVEPT_SINGLE_OR_ALL      ((1ULL << 25) | (1ULL << 26))
#define   VPID_INVVPID                  (1ULL << 32)
#define MSR_VM_CR                       0xC0010114
#define   VM_CR_SVMDIS                  (1ULL << 4)

struct cpuid { uint32_t a, b, c, d; };

static struct cpuid cpuid(uint32_t leaf, uint32_t sub)
{
    struct cpuid r;

    __asm__ volatile("cpuid"
                     : "=a"(r.a), "=b"(r.b), "=c"(r.c), "=d"(r.d)
                     : "a"(leaf), "c"(sub));
    return r;
}

static uint64_t rdmsr(uint32_t msr)
{
    uint32_t lo, hi;

    __asm__ volatile("rdmsr" : "=a"(lo), "=d"(hi) : "c"(msr));
    return ((uint64_t)hi << 32) | lo;
}

static enum hv_vendor vendor_of(void)
{
    struct cpuid r = cpuid(0, 0);
    char v[12];

    /* The vendor string is EBX, EDX, ECX in that order. */
    memcpy(v, &r.b, 4);
    memcpy(v + 4, &r.d, 4);
    memcpy(v + 8, &r.c, 4);
    if (memcmp(v, "GenuineIntel", 12) == 0)
        return HV_VENDOR_INTEL;
    if (memcmp(v, "AuthenticAMD", 12) == 0)
        return HV_VENDOR_AMD;
    return HV_VENDOR_OTHER;
}

static void detect_vmx(struct hv_caps *caps)
{
    uint64_t fc, basic, proc, proc2 = 0, ept_vpid = 0;
    uint32_t allowed2;

    if (!(cpuid(1, 0).c & (1U << 5))) {
        caps->skip_reason = "no-vmx-cpuid";
        return;
    }
    /* CPUID.1:ECX.VMX guarantees IA32_FEATURE_CONTROL and IA32_VMX_BASIC
     * (SDM Vol. 4, table 2-2). */
    fc = rdmsr(MSR_IA32_FEATURE_CONTROL);
    caps->fc_locked = (fc & FC_LOCK) != 0;
    if ((fc & FC_LOCK) && !(fc & FC_VMX_OUTSIDE_SMX)) {
        caps->skip_reason = "vmx-disabled-by-firmware";
        return;
    }
    basic = rdmsr(MSR_IA32_VMX_BASIC);
    /* Bits 30:0 are the VMCS revision id, bits 44:32 the VMXON/VMCS region
     * size (SDM A.1).  Either being zero means the MSR is not real. */
    if ((basic & 0x7fffffffULL) == 0 || ((basic >> 32) & 0x1fff) == 0) {
        caps->skip_reason = "vmx-basic-invalid";
        return;
    }
    /* Allowed-1 settings live in the high dword (SDM A.3.2).  The TRUE MSR
     * exists only when VMX_BASIC bit 55 says so; for bit 31 both agree. */
    proc = rdmsr((basic & BASIC_TRUE_CTLS) ? MSR_IA32_VMX_TRUE_PROCBASED_CTLS
                                           : MSR_IA32_VMX_PROCBASED_CTLS);
    if ((uint32_t)(proc >> 32) & PROC_ACTIVATE_SECONDARY) {
        proc2 = rdmsr(MSR_IA32_VMX_PROCBASED_CTLS2);
        allowed2 = (uint32_t)(proc2 >> 32);
        /* IA32_VMX_EPT_VPID_CAP exists only if EPT or VPID may be 1
         * (SDM A.10). */
        if (allowed2 & (PROC2_EPT | PROC2_VPID))
            ept_vpid = rdmsr(MSR_IA32_VMX_EPT_VPID_CAP);
        caps->ept = (allowed2 & PROC2_EPT) &&
                    (ept_vpid & EPT_PWL4) && (ept_vpid & EPT_WB) &&
                    (ept_vpid & EPT_INVEPT) &&
                    (ept_vpid & EPT_INVEPT_SINGLE_OR_ALL);
        caps->vpid = (allowed2 & PROC2_VPID) && (ept_vpid & VPID_INVVPID);
        /* Unrestricted guest requires EPT (SDM 26.2.1.1). */
        caps->ug = (allowed2 & PROC2_UG) && caps->ept;
    }
    caps->virt = HV_VIRT_VMX;
}

static void detect_svm(struct hv_caps *caps)
{
    struct cpuid r;

    if (cpuid(0x80000000, 0).a < 0x80000001 ||
        !(cpuid(0x80000001, 0).c & (1U << 2))) {
        caps->skip_reason = "no-svm-cpuid";
        return;
    }
    /* CPUID SVM guarantees VM_CR (APM Vol. 2 15.30.1). */
    if (rdmsr(MSR_VM_CR) & VM_CR_SVMDIS) {
        caps->skip_reason = "svm-disabled-by-firmware";
        return;
    }
    if (cpuid(0x80000000, 0).a >= 0x8000000A) {
        r = cpuid(0x8000000A, 0);
        caps->npt = (r.d & (1U << 0)) != 0;
        caps->nrips = (r.d & (1U << 3)) != 0;
    }
    caps->virt = HV_VIRT_SVM;
}

void hv_detect_caps(struct hv_caps *caps)
{
    memset(caps, 0, sizeof(*caps));
    caps->vendor = vendor_of();
    switch (caps->vendor) {
    case HV_VENDOR_INTEL:
        detect_vmx(caps);
        break;
    case HV_VENDOR_AMD:
        detect_svm(caps);
        break;
    default:
        caps->skip_reason = "unknown-vendor";
        break;
    }
    if (caps->virt == HV_VIRT_NONE) {
        caps->ept = caps->vpid = caps->ug = false;
        caps->npt = caps->nrips = false;
    }
}
