/*
 * ept.c - the EPT identity map (SDM Vol 3C 29.3): the entry encoding for
 * the core's identity-map builder (efi/core/gpmap.c), which NPT shares.
 *
 * Guest-physical = host-physical over the whole physical address space
 * (up to MAXPHYADDR), with the largest page (1 GiB, 2 MiB) whose range has
 * one MTRR memory type; the hypervisor's pool is left not-present, so any
 * guest access to it is an EPT violation (vmx_exit.c); the log ring and the
 * protected xAPIC page are read-only.
 */
#include "vmx.h"
#include "../core/gpmap.h"
#include "../core/mtrr.h"

#define EPT_RWX      7ull
#define EPT_LEAF     (1ull << 7)     /* a 2 MiB or 1 GiB leaf (SDM Table 29-2, 29-4) */
#define EPT_MT(t)    ((uint64_t)(t) << 3)

#define CAP_WALK4    (1ull << 6)
#define CAP_WB       (1ull << 14)
#define CAP_2M       (1ull << 16)
#define CAP_1G       (1ull << 17)

static uint64_t *apic_pte;          /* the xAPIC page's leaf, read+execute only */
static uint64_t *ept_root;

/* A leaf: RWX with the MTRR type in bits 5:3 (SDM 29.3.7). */
static uint64_t ept_leaf(uint64_t pa, int level, int mt)
{
    return pa | EPT_RWX | EPT_MT(mt) | (level > 1 ? EPT_LEAF : 0);
}

static int ept_leaf_type(uint64_t e, int level)
{
    (void)level;
    return (e >> 3) & 7;
}

static struct gpmap_fmt ept_fmt = {
    .table = EPT_RWX,
    .write = 2,
    .ram = EPT_RWX,
    .leaf = ept_leaf,
    .leaf_type = ept_leaf_type,
};

int ept_build(uint64_t *eptp)
{
    unsigned maxphy = cpuid2(0x80000008, 0).eax & 0xFF;
    uint64_t cap = vmx.ept_vpid_cap;
    struct gpmap_result r;

    if (!(cap & CAP_WALK4)) {
        hv_log("HV: skip reason=missing-vmx-feature name=ept-4-level-walk\n");
        return -1;
    }
    ept_fmt.leaf_ok[1] = true;
    ept_fmt.leaf_ok[2] = cap & CAP_2M;
    ept_fmt.leaf_ok[3] = cap & CAP_1G;
    if (gpmap_build(&ept_fmt, maxphy, &r))
        return -1;
    ept_root = r.root;
    apic_pte = r.apic_pte;
    /* Memory type of the paging structures; walk length 4 (SDM 25.6.11). */
    *eptp = (uint64_t)(uintptr_t)ept_root | (3u << 3) | (cap & CAP_WB ? MT_WB : MT_UC);
    hv_log("HV: ept maxphyaddr=%u pages=%s ept-bytes=%zu\n", maxphy,
           ept_fmt.leaf_ok[3] ? "1g" : ept_fmt.leaf_ok[2] ? "2m" : "4k", r.bytes);
    return 0;
}

/* INVEPT for this CPU (SDM Vol 3C 29.4.3.1): all-context where the CPU has
 * it, else single-context for our one EPTP. */
void ept_flush(struct hv_cpu *c)
{
    (void)c;
    if (vmx.ept_vpid_cap & (1ull << 26))
        vmx_invept(2, 0);
    else
        vmx_invept(1, vmx.eptp);
}

/* Makes the xAPIC page writable again.  Only this CPU is flushed: another
 * CPU with the read-only translation cached takes one more EPT violation,
 * which flushes it (vmx_exit.c). */
void ept_apic_unprotect(void)
{
    if (apic_pte)
        __atomic_or_fetch(apic_pte, 2ull, __ATOMIC_SEQ_CST);
    ept_flush(NULL);
}

/* Ordinary guest RAM in the EPT view (hypercall buffers, guest page tables,
 * string I/O). */
bool ept_gpa_is_ram(uint64_t gpa, uint64_t len)
{
    return gpmap_is_ram(&ept_fmt, ept_root, gpa, len);
}
