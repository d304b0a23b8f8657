/*
 * gpmap.h - the guest-physical identity map shared by EPT and NPT: which
 * ranges get the largest page with one MTRR type, which are split down to
 * 4 KiB, the pool left not-present and the xAPIC page read-only.  A vendor
 * supplies only the entry encoding (struct gpmap_fmt).
 */
#ifndef HV_GPMAP_H
#define HV_GPMAP_H

#include "hv_core.h"

struct gpmap_fmt {
    uint64_t table;                  /* bits of a non-leaf entry (besides the address) */
    uint64_t write;                  /* the write-permission bit (xAPIC page, log ring:
                                      * cleared) */
    uint64_t ram;                    /* bits every level has for ordinary RAM */
    bool leaf_ok[4];                 /* by level: 1 = 4 KiB, 2 = 2 MiB, 3 = 1 GiB */
    /* A leaf at `level` (1-3) mapping pa with MTRR memory type mt. */
    uint64_t (*leaf)(uint64_t pa, int level, int mt);
    /* The memory type a leaf at `level` gives its page. */
    int (*leaf_type)(uint64_t e, int level);
};

struct gpmap_result {
    uint64_t *root;                  /* the PML4 */
    uint64_t *apic_pte;              /* the xAPIC page's leaf, or NULL */
    size_t bytes;                    /* paging-structure bytes */
};

/* Identity map of [0, 2^maxphyaddr); -1 when the pool runs out. */
int gpmap_build(const struct gpmap_fmt *f, unsigned maxphyaddr, struct gpmap_result *r);
/* Whether [gpa, gpa+len) is ordinary guest RAM in the map at root: f->ram
 * at every level and a write-back leaf (not MMIO, not the xAPIC page or the
 * log ring, not the pool).  Both formats put the large-leaf bit at 7. */
bool gpmap_is_ram(const struct gpmap_fmt *f, const uint64_t *root, uint64_t gpa, uint64_t len);

#endif
