/*
 * mtrr_msr.c - snapshot of the MTRR MSRs for mtrr.c (SDM Vol 3A 12.11.2).
 */
#include "mtrr.h"
#include "x86.h"

#define MSR_MTRRCAP      0xFE
#define MSR_MTRR_DEF     0x2FF
#define MSR_MTRR_BASE0   0x200

static const uint32_t fixed_msrs[11] = {
    0x250, 0x258, 0x259, 0x268, 0x269, 0x26A, 0x26B, 0x26C, 0x26D, 0x26E, 0x26F,
};

void mtrr_read(struct mtrr_state *s, unsigned maxphyaddr)
{
    uint64_t cap = 0, def = 0;

    *s = (struct mtrr_state){0};
    s->phys_mask = (1ull << maxphyaddr) - 1;
    if (!(cpuid2(1, 0).edx & (1u << 12))) {   /* no MTRRs: all WB */
        s->enabled = true;
        s->def_type = MT_WB;
        return;
    }
    cap = rdmsr(MSR_MTRRCAP);
    def = rdmsr(MSR_MTRR_DEF);
    s->enabled = def & (1u << 11);
    s->fixed_enabled = (def & (1u << 10)) && (cap & (1u << 8));
    s->def_type = def & 0xFF;
    if (s->fixed_enabled)
        for (int i = 0; i < 11; i++) {
            uint64_t v = rdmsr(fixed_msrs[i]);
            for (int b = 0; b < 8; b++)
                s->fixed[i * 8 + b] = (v >> (8 * b)) & 0xFF;
        }
    s->nvar = cap & 0xFF;
    if (s->nvar > MTRR_MAX_VAR)
        s->nvar = MTRR_MAX_VAR;
    for (unsigned i = 0; i < s->nvar; i++) {
        s->var[i].base = rdmsr(MSR_MTRR_BASE0 + 2 * i);
        s->var[i].mask = rdmsr(MSR_MTRR_BASE0 + 2 * i + 1);
    }
}
