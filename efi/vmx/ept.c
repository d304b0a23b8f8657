/*
 * ept.c - the EPT identity map (SDM Vol 3C 29.3).
 *
 * Guest-physical = host-physical over the whole physical address space
 * (up to MAXPHYADDR), with the largest page (1 GiB, 2 MiB) whose range has
 * one MTRR memory type (efi/core/mtrr.c); ranges with mixed types are split
 * down to 4 KiB.  The hypervisor's pool is split out and left not-present,
 * so any guest access to it is an EPT violation (vmx_exit.c); the log ring
 * (core/logring.c) is mapped read-only the same way.
 */
#include "vmx.h"
#include "../core/mtrr.h"

#define EPT_RWX      7ull
#define EPT_LEAF     (1ull << 7)
#define EPT_MT(t)    ((uint64_t)(t) << 3)

#define CAP_WALK4    (1ull << 6)
#define CAP_WB       (1ull << 14)
#define CAP_2M       (1ull << 16)
#define CAP_1G       (1ull << 17)

static struct mtrr_state mtrr;
static uint64_t prot_base, prot_size;
static bool leaf_ok[5];            /* by level: 1 = 4 KiB, 2 = 2 MiB, 3 = 1 GiB */
size_t ept_bytes;

static uint64_t *apic_pte;
static uint64_t *ept_root;          /* the xAPIC page's leaf, read+execute only */

static bool protected(uint64_t base, uint64_t size)
{
    return base < prot_base + prot_size && prot_base < base + size;
}

/* The xAPIC page gets a 4 KiB leaf of its own while hv_apic_protected. */
static bool holds_apic(uint64_t base, uint64_t size)
{
    return hv_apic_protected && hv_apic_page >= base && hv_apic_page < base + size;
}

/* Fills one entry at `level` mapping [pa, pa + size). */
static int map_entry(uint64_t *e, int level, uint64_t pa)
{
    uint64_t size = 1ull << (12 + 9 * (level - 1));
    bool prot = protected(pa, size);
    bool ro = hv_guest_readonly(pa, size);          /* the log ring (core/logring.c) */
    int t = mtrr_range_type(&mtrr, pa, size);
    uint64_t *next;

    if (level == 1) {
        *e = prot ? 0 : pa | EPT_RWX | EPT_MT(t < 0 ? MT_UC : t);
        if (ro)
            *e &= ~2ull;
        if (holds_apic(pa, size)) {
            *e &= ~2ull;                           /* writes exit (smp.c) */
            apic_pte = e;
        }
        return 0;
    }
    if (!prot && !ro && t >= 0 && leaf_ok[level] && !holds_apic(pa, size)) {
        *e = pa | EPT_RWX | EPT_MT(t) | EPT_LEAF;
        return 0;
    }
    next = hv_alloc(1);
    if (!next)
        return -1;
    ept_bytes += 4096;
    for (uint64_t i = 0; i < 512; i++)
        if (map_entry(&next[i], level - 1, pa + i * (size / 512)))
            return -1;
    *e = (uint64_t)(uintptr_t)next | EPT_RWX;
    return 0;
}

int ept_build(uint64_t *eptp)
{
    unsigned maxphy = cpuid2(0x80000008, 0).eax & 0xFF;
    uint64_t cap = vmx.ept_vpid_cap, top = 1ull << maxphy;
    uint64_t *pml4 = hv_alloc(1);

    if (!(cap & CAP_WALK4) || !pml4) {
        hv_log("HV: skip reason=missing-vmx-feature name=ept-4-level-walk\n");
        return -1;
    }
    ept_bytes = 4096;
    ept_root = pml4;
    leaf_ok[1] = true;
    leaf_ok[2] = cap & CAP_2M;
    leaf_ok[3] = cap & CAP_1G;
    mtrr_read(&mtrr, maxphy);
    hv_protected_range(&prot_base, &prot_size);
    for (uint64_t i = 0; i < 512 && (i << 39) < top; i++)
        if (map_entry(&pml4[i], 4, i << 39))
            return -1;
    /* Memory type of the paging structures; walk length 4 (SDM 25.6.11). */
    *eptp = (uint64_t)(uintptr_t)pml4 | (3u << 3) | (cap & CAP_WB ? MT_WB : MT_UC);
    hv_log("HV: ept maxphyaddr=%u pages=%s ept-bytes=%zu\n", maxphy,
           leaf_ok[3] ? "1g" : leaf_ok[2] ? "2m" : "4k", ept_bytes);
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
 * string I/O): every page mapped read-write-execute and write-back.  The
 * pool is not present, the xAPIC page read-only, MMIO uncacheable. */
bool ept_gpa_is_ram(uint64_t gpa, uint64_t len)
{
    for (uint64_t a = gpa & ~0xFFFull; a < gpa + len; a += 4096) {
        const uint64_t *t = ept_root;
        uint64_t e = 0;

        for (int level = 4; t && level >= 1; level--) {
            e = t[(a >> (12 + 9 * (level - 1))) & 511];
            if ((e & EPT_RWX) != EPT_RWX)
                return false;
            if (level == 1 || (e & EPT_LEAF))
                break;
            t = (const uint64_t *)(uintptr_t)(e & 0x000FFFFFFFFFF000ull);
        }
        if (!t || ((e >> 3) & 7) != MT_WB)
            return false;
    }
    return true;
}
