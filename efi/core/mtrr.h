/*
 * mtrr.h - memory types from the MTRRs (SDM Vol 3A 12.11).  Pure logic on a
 * snapshot of the MSRs, so it builds and is tested on the host too
 * (tests/test_mtrr.py).
 */
#ifndef HV_MTRR_H
#define HV_MTRR_H

#include <stdbool.h>
#include <stdint.h>

enum mtrr_type { MT_UC = 0, MT_WC = 1, MT_WT = 4, MT_WP = 5, MT_WB = 6 };

#define MTRR_MAX_VAR 32

struct mtrr_state {
    bool enabled;                 /* IA32_MTRR_DEF_TYPE.E */
    bool fixed_enabled;           /* IA32_MTRR_DEF_TYPE.FE (and MTRRCAP.FIX) */
    uint8_t def_type;
    uint8_t fixed[88];            /* 8 x 64K, 16 x 16K, 64 x 4K below 1 MiB */
    unsigned nvar;
    struct { uint64_t base, mask; } var[MTRR_MAX_VAR];   /* raw PHYSBASE/PHYSMASK */
    uint64_t phys_mask;           /* (1 << MAXPHYADDR) - 1 */
};

/* The one memory type of the naturally aligned range [base, base + size)
 * (size a power of two, >= 4 KiB), or -1 when types differ inside it. */
int mtrr_range_type(const struct mtrr_state *s, uint64_t base, uint64_t size);

/* Fills *s from the MSRs (efi/core/mtrr_msr.c; not built for host tests). */
void mtrr_read(struct mtrr_state *s, unsigned maxphyaddr);

#endif
