/*
 * gpmap.c - the guest-physical identity map (see gpmap.h), SDM Vol 3C 29.3
 * (EPT) and APM Vol 2 15.25 (nested paging) alike: four levels of 512
 * entries, leaves at 1 GiB, 2 MiB or 4 KiB.  Memory types come from the
 * MTRRs (efi/core/mtrr.c); a range with mixed types is split.  The pool
 * is not present; the log ring (core/logring.c) and, while protected, the
 * xAPIC page are read-only in 4 KiB leaves of their own.
 */
#include "gpmap.h"
#include "mtrr.h"

struct gpmap_ctx {
    const struct gpmap_fmt *f;
    struct mtrr_state mtrr;
    uint64_t prot_base, prot_size;
    struct gpmap_result *r;
};

static bool overlaps_pool(const struct gpmap_ctx *x, uint64_t base, uint64_t size)
{
    return base < x->prot_base + x->prot_size && x->prot_base < base + size;
}

/* The xAPIC page gets a 4 KiB leaf of its own while hv_apic_protected. */
static bool holds_apic(uint64_t base, uint64_t size)
{
    return hv_apic_protected && hv_apic_page >= base && hv_apic_page < base + size;
}

static int map_entry(struct gpmap_ctx *x, uint64_t *e, int level, uint64_t pa)
{
    uint64_t size = 1ull << (12 + 9 * (level - 1));
    bool prot = overlaps_pool(x, pa, size);
    bool ro = hv_guest_readonly(pa, size);
    int t = mtrr_range_type(&x->mtrr, pa, size);
    uint64_t *next;

    if (level == 1) {
        *e = prot ? 0 : x->f->leaf(pa, 1, t < 0 ? MT_UC : t);
        if (ro)
            *e &= ~x->f->write;                    /* the log ring (core/logring.c) */
        if (holds_apic(pa, size)) {
            *e &= ~x->f->write;                    /* writes exit (smp.c) */
            x->r->apic_pte = e;
        }
        return 0;
    }
    if (!prot && !ro && t >= 0 && level < 4 && x->f->leaf_ok[level] && !holds_apic(pa, size)) {
        *e = x->f->leaf(pa, level, t);
        return 0;
    }
    next = hv_alloc(1);
    if (!next)
        return -1;
    x->r->bytes += 4096;
    for (uint64_t i = 0; i < 512; i++)
        if (map_entry(x, &next[i], level - 1, pa + i * (size / 512)))
            return -1;
    *e = (uint64_t)(uintptr_t)next | x->f->table;
    return 0;
}

int gpmap_build(const struct gpmap_fmt *f, unsigned maxphyaddr, struct gpmap_result *r)
{
    struct gpmap_ctx x = {.f = f, .r = r};
    uint64_t top = 1ull << maxphyaddr;

    r->root = hv_alloc(1);
    r->apic_pte = NULL;
    r->bytes = 4096;
    if (!r->root)
        return -1;
    mtrr_read(&x.mtrr, maxphyaddr);
    hv_protected_range(&x.prot_base, &x.prot_size);
    for (uint64_t i = 0; i < 512 && (i << 39) < top; i++)
        if (map_entry(&x, &r->root[i], 4, i << 39))
            return -1;
    return 0;
}

bool gpmap_is_ram(const struct gpmap_fmt *f, const uint64_t *root, uint64_t gpa, uint64_t len)
{
    for (uint64_t a = gpa & ~0xFFFull; a < gpa + len; a += 4096) {
        const uint64_t *t = root;
        uint64_t e = 0;
        int level;

        for (level = 4; level >= 1; level--) {
            e = t[(a >> (12 + 9 * (level - 1))) & 511];
            if ((e & f->ram) != f->ram)
                return false;
            if (level == 1 || (e & (1ull << 7)))
                break;
            t = (const uint64_t *)(uintptr_t)(e & 0x000FFFFFFFFFF000ull);
        }
        if (f->leaf_type(e, level) != MT_WB)
            return false;
    }
    return true;
}
