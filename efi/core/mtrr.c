/*
 * mtrr.c - uniform-memory-type queries over an MTRR snapshot.
 *
 * Precedence (SDM Vol 3A 12.11.4.1): MTRRs disabled -> UC; below 1 MiB with
 * fixed ranges enabled -> the fixed range; otherwise the variable ranges
 * that match: none -> default type, one -> its type, several -> UC if any
 * is UC, WT if they are WT and WB, else the common type.  Overlaps the SDM
 * calls undefined are treated as UC.
 */
#include "mtrr.h"

#define MTRR_VALID (1ull << 11)
#define ONE_MIB    0x100000ull

static uint8_t fixed_type(const struct mtrr_state *s, uint64_t a)
{
    if (a < 0x80000)
        return s->fixed[a >> 16];
    if (a < 0xC0000)
        return s->fixed[8 + ((a - 0x80000) >> 14)];
    return s->fixed[24 + ((a - 0xC0000) >> 12)];
}

static int combine(int a, int b)
{
    if (a < 0 || a == b)
        return b;
    if (a == MT_UC || b == MT_UC)
        return MT_UC;
    if ((a == MT_WT && b == MT_WB) || (a == MT_WB && b == MT_WT))
        return MT_WT;
    return MT_UC;
}

static int fixed_range_type(const struct mtrr_state *s, uint64_t base, uint64_t size)
{
    int t;

    if (base + size > ONE_MIB)
        return -1;
    t = fixed_type(s, base);
    for (uint64_t a = base + 4096; a < base + size; a += 4096)
        if (fixed_type(s, a) != t)
            return -1;
    return t;
}

int mtrr_range_type(const struct mtrr_state *s, uint64_t base, uint64_t size)
{
    int t = -1;

    if (!s->enabled)
        return MT_UC;
    if (s->fixed_enabled && base < ONE_MIB)
        return fixed_range_type(s, base, size);
    for (unsigned i = 0; i < s->nvar; i++) {
        uint64_t m = s->var[i].mask & s->phys_mask & ~0xFFFull;
        uint64_t vb = s->var[i].base & m;
        uint64_t outer = m & ~(size - 1);

        if (!(s->var[i].mask & MTRR_VALID))
            continue;
        if ((base & outer) != (vb & outer))
            continue;                       /* matches nothing in the range */
        if (m & (size - 1))
            return -1;                      /* matches part of the range */
        t = combine(t, (int)(s->var[i].base & 0xFF));
    }
    return t < 0 ? s->def_type : t;
}
