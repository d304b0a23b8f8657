/*
 * cpuid_policy.h - the CPUID the guest sees, computed once from what the
 * backend really enables (pure C: also built for the host by the tests).
 *
 * The rule table (cpuid_policy.c) says, per feature bit, what the guest
 * sees and why.  cpuid_policy_compute() turns it into one slot of AND/OR
 * masks per leaf for the controls at hand; the exit path only looks up the
 * slot of a leaf and applies it (cpuid_slot_apply).
 */
#ifndef HV_CPUID_POLICY_H
#define HV_CPUID_POLICY_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

enum { CPUID_EAX, CPUID_EBX, CPUID_ECX, CPUID_EDX };
#define CPUID_ANY_SUB 0xFFFFFFFFu
#define CPUID_STD_N   0x15u           /* leaves 0 .. 0x14 may have a slot */
#define CPUID_EXT_N   0x0Bu           /* leaves 0x80000000 .. 0x8000000A */
#define CPUID_SLOTS   8

/* What the virtual CPU really has: the backend fills it from its controls. */
struct cpuid_ctls {
    bool amd;                 /* AMD rules apply (SVM backend) */
    bool rdtscp;              /* VMX: "enable RDTSCP" */
    bool invpcid;             /* VMX: "enable INVPCID" */
    bool xsaves;              /* VMX: "enable XSAVES/XRSTORS" */
    bool waitpkg;             /* VMX: "enable user wait and pause" */
    bool pt_gpa;              /* "Intel PT uses guest-physical addresses" in use */
    uint32_t max_std, max_ext;  /* CPUID.0.EAX, CPUID.80000000.EAX of the host */
};

/* A requirement a rule can name (bit in cpuid_rule.needs). */
enum { NEED_RDTSCP = 1, NEED_INVPCID = 2, NEED_XSAVES = 4, NEED_WAITPKG = 8,
       NEED_PT_GPA = 16, NEED_NEVER = 32 };

enum cpuid_act {
    CP_HIDE,        /* reads as 0 when a need is missing (NEED_NEVER: always) */
    CP_SET,         /* reads as 1 */
    CP_CR4,         /* reads as the guest's CR4 bit `cr4` */
};

struct cpuid_rule {
    uint32_t leaf, sub;       /* sub: CPUID_ANY_SUB or one subleaf */
    uint8_t reg;              /* CPUID_EAX .. CPUID_EDX */
    uint32_t bits;
    uint8_t act;
    uint8_t needs;            /* CP_HIDE: the NEED_* bits that must all hold */
    uint8_t vendor;           /* 0: any, 1: Intel only, 2: AMD only */
    uint8_t cr4;              /* CP_CR4: the CR4 bit number */
    const char *why;
};
extern const struct cpuid_rule cpuid_rules[];
extern const size_t cpuid_rule_count;

struct cpuid_slot {
    uint32_t sub;
    uint32_t and_[4], or_[4];
    uint64_t cr4_bit;         /* 0: none; else guest CR4 bit mirrored into */
    uint8_t cr4_reg;          /*   register cr4_reg, bit cr4_reg_bit */
    uint32_t cr4_reg_bit;
};

struct cpuid_policy {
    uint8_t std[CPUID_STD_N], ext[CPUID_EXT_N];   /* slot index + 1, 0: none */
    uint32_t std_mask, ext_mask;   /* bit n: leaf n / 0x80000000 + n has a slot */
    struct cpuid_slot slot[CPUID_SLOTS];
    unsigned nslots;
};

/* 0, or -1 when the rules do not fit the slots (a bug in the table). */
int cpuid_policy_compute(const struct cpuid_ctls *ctls, struct cpuid_policy *p);
void cpuid_slot_apply(const struct cpuid_slot *s, uint32_t v[4], uint64_t guest_cr4);
/* Host tests: the whole lookup-and-apply of one leaf. */
void cpuid_policy_apply(const struct cpuid_policy *p, uint32_t leaf, uint32_t sub,
                        uint32_t v[4], uint64_t guest_cr4);

/* The exit path's lookup: a few instructions, no loop. */
static inline const struct cpuid_slot *cpuid_policy_slot(const struct cpuid_policy *p,
                                                         uint32_t leaf, uint32_t sub)
{
    unsigned i;
    const struct cpuid_slot *s;

    if (leaf < CPUID_STD_N)
        i = p->std[leaf];
    else if (leaf - 0x80000000u < CPUID_EXT_N)
        i = p->ext[leaf - 0x80000000u];
    else
        return NULL;
    if (!i)
        return NULL;
    s = &p->slot[i - 1];
    return (s->sub == CPUID_ANY_SUB || s->sub == sub) ? s : NULL;
}

#endif
