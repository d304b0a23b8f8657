/*
 * cpuid_policy.c - the guest's CPUID as one table (what, why), turned into
 * per-leaf masks once at start-up (cpuid_policy.h).  Pure C.
 *
 * A feature whose enabling control is absent reads as absent: the guest
 * would take #UD on its instructions (SDM Vol 3C 25.6.2, Table 25-7).
 */
#include "cpuid_policy.h"

_Static_assert(CPUID_STD_N <= 32 && CPUID_EXT_N <= 32, "the masks have one bit per leaf");

#define ALL 0xFFFFFFFFu
#define ANY CPUID_ANY_SUB

const struct cpuid_rule cpuid_rules[] = {
    {1, ANY, CPUID_ECX, 1u << 5, CP_HIDE, NEED_NEVER, 0, 0,
     "VMX: no nested virtualization"},
    {1, ANY, CPUID_ECX, 1u << 31, CP_SET, 0, 0, 0, "hypervisor present"},
    {1, ANY, CPUID_ECX, 1u << 27, CP_CR4, 0, 0, 18,
     "OSXSAVE is the guest's CR4.OSXSAVE, not the host's"},
    {7, 0, CPUID_EBX, 1u << 10, CP_HIDE, NEED_INVPCID, 1, 0,
     "INVPCID raises #UD without 'enable INVPCID'"},
    {7, 0, CPUID_EBX, 1u << 25, CP_HIDE, NEED_PT_GPA, 0, 0,
     "Intel PT writes to host-physical addresses unless 'PT uses guest-physical addresses'"},
    {7, 0, CPUID_ECX, 1u << 5, CP_HIDE, NEED_WAITPKG, 1, 0,
     "TPAUSE/UMONITOR/UMWAIT raise #UD without 'enable user wait and pause'"},
    {7, 0, CPUID_ECX, 1u << 4, CP_CR4, 0, 0, 22, "OSPKE is the guest's CR4.PKE"},
    {0xD, 1, CPUID_EAX, 1u << 3, CP_HIDE, NEED_XSAVES, 1, 0,
     "XSAVES/XRSTORS raise #UD without 'enable XSAVES/XRSTORS'"},
    {0xD, 1, CPUID_ECX, 1u << 8, CP_HIDE, NEED_PT_GPA, 0, 0,
     "XSS[8] (PT state) would let XRSTORS load the PT output base"},
    {0x14, ANY, CPUID_EAX, ALL, CP_HIDE, NEED_PT_GPA, 0, 0, "Intel PT leaf: PT is hidden"},
    {0x14, ANY, CPUID_EBX, ALL, CP_HIDE, NEED_PT_GPA, 0, 0, "Intel PT leaf: PT is hidden"},
    {0x14, ANY, CPUID_ECX, ALL, CP_HIDE, NEED_PT_GPA, 0, 0, "Intel PT leaf: PT is hidden"},
    {0x14, ANY, CPUID_EDX, ALL, CP_HIDE, NEED_PT_GPA, 0, 0, "Intel PT leaf: PT is hidden"},
    {0x80000001, ANY, CPUID_EDX, 1u << 27, CP_HIDE, NEED_RDTSCP, 1, 0,
     "RDTSCP raises #UD without 'enable RDTSCP'"},
    {0x80000001, ANY, CPUID_ECX, 1u << 2, CP_HIDE, NEED_NEVER, 2, 0,
     "SVM: no nested virtualization"},
    {0x8000000A, ANY, CPUID_EAX, ALL, CP_HIDE, NEED_NEVER, 2, 0, "SVM leaf: no SVM"},
    {0x8000000A, ANY, CPUID_EBX, ALL, CP_HIDE, NEED_NEVER, 2, 0, "SVM leaf: no SVM"},
    {0x8000000A, ANY, CPUID_ECX, ALL, CP_HIDE, NEED_NEVER, 2, 0, "SVM leaf: no SVM"},
    {0x8000000A, ANY, CPUID_EDX, ALL, CP_HIDE, NEED_NEVER, 2, 0, "SVM leaf: no SVM"},
};
const size_t cpuid_rule_count = sizeof(cpuid_rules) / sizeof(cpuid_rules[0]);

static uint8_t have(const struct cpuid_ctls *c)
{
    return (c->rdtscp ? NEED_RDTSCP : 0) | (c->invpcid ? NEED_INVPCID : 0) |
           (c->xsaves ? NEED_XSAVES : 0) | (c->waitpkg ? NEED_WAITPKG : 0) |
           (c->pt_gpa ? NEED_PT_GPA : 0);
}

/* The slot of (leaf, sub), created on first use; NULL when out of room. */
static struct cpuid_slot *slot_for(struct cpuid_policy *p, const struct cpuid_ctls *c,
                                   uint32_t leaf, uint32_t sub)
{
    uint8_t *idx;
    struct cpuid_slot *s;

    if (leaf < CPUID_STD_N && leaf <= c->max_std)
        idx = &p->std[leaf];
    else if (leaf - 0x80000000u < CPUID_EXT_N && leaf <= c->max_ext)
        idx = &p->ext[leaf - 0x80000000u];
    else
        return NULL;                 /* the CPU has no such leaf: nothing to adjust */
    if (*idx) {
        s = &p->slot[*idx - 1];
        return s->sub == sub ? s : NULL;
    }
    if (p->nslots == CPUID_SLOTS)
        return NULL;
    s = &p->slot[p->nslots++];
    *idx = (uint8_t)p->nslots;
    if (leaf < CPUID_STD_N)
        p->std_mask |= 1u << leaf;
    else
        p->ext_mask |= 1u << (leaf - 0x80000000u);
    s->sub = sub;
    for (int i = 0; i < 4; i++) {
        s->and_[i] = ALL;
        s->or_[i] = 0;
    }
    return s;
}

int cpuid_policy_compute(const struct cpuid_ctls *c, struct cpuid_policy *p)
{
    uint8_t got = have(c);

    *p = (struct cpuid_policy){0};
    for (size_t i = 0; i < cpuid_rule_count; i++) {
        const struct cpuid_rule *r = &cpuid_rules[i];
        struct cpuid_slot *s;
        bool applies = r->vendor == 0 || (r->vendor == 2) == c->amd;

        if (!applies)
            continue;
        if (r->act == CP_HIDE && (r->needs & got) == r->needs && !(r->needs & NEED_NEVER))
            continue;                /* the control is there: native value */
        s = slot_for(p, c, r->leaf, r->sub);
        if (!s) {
            bool exists = r->leaf < 0x80000000u ? r->leaf <= c->max_std : r->leaf <= c->max_ext;
            if (exists)
                return -1;           /* a shared leaf with two subleaves, or full */
            continue;
        }
        if (r->act == CP_SET) {
            s->or_[r->reg] |= r->bits;
        } else if (r->act == CP_CR4) {
            if (s->cr4_bit)
                return -1;           /* one mirrored CR4 bit per leaf */
            s->and_[r->reg] &= ~r->bits;
            s->cr4_bit = 1ull << r->cr4;
            s->cr4_reg = r->reg;
            s->cr4_reg_bit = r->bits;
        } else {
            s->and_[r->reg] &= ~r->bits;
        }
    }
    return 0;
}

void cpuid_slot_apply(const struct cpuid_slot *s, uint32_t v[4], uint64_t guest_cr4)
{
    for (int i = 0; i < 4; i++)
        v[i] = (v[i] & s->and_[i]) | s->or_[i];
    if (guest_cr4 & s->cr4_bit)
        v[s->cr4_reg] |= s->cr4_reg_bit;
}

void cpuid_policy_apply(const struct cpuid_policy *p, uint32_t leaf, uint32_t sub,
                        uint32_t v[4], uint64_t guest_cr4)
{
    const struct cpuid_slot *s = cpuid_policy_slot(p, leaf, sub);

    if (s)
        cpuid_slot_apply(s, v, guest_cr4);
}
