/*
 * msr_policy.h - what the guest sees for each MSR, as one table (pure C:
 * also built for the host by the tests).  The backend intercepts every MSR
 * whose row is not plain pass-through; the exit handler (exit.c) looks the
 * row up and applies it to the real CPU's answer.
 */
#ifndef HV_MSR_POLICY_H
#define HV_MSR_POLICY_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

enum msr_rd {
    RD_PASS,          /* the real value (a real #GP is reflected), rd_clear/rd_set applied */
    RD_GP,            /* #GP(0): as on a CPU without the MSR */
};
enum msr_wr {
    WR_PASS,          /* written, unless it changes a wr_fixed bit or sets a wr_zero bit: #GP */
    WR_GP,            /* #GP(0) */
    WR_DROP,          /* ignored, as a rejected write that hardware does not fault */
    WR_ICR,           /* x2APIC ICR: INIT/SIPI emulation (smp.c) */
};
enum { MSR_ANY = 0, MSR_INTEL = 1, MSR_AMD = 2 };

struct msr_rule {
    uint32_t first, last;
    uint8_t vendor;           /* MSR_ANY, MSR_INTEL, MSR_AMD */
    uint8_t rd, wr;
    uint64_t rd_clear, rd_set;
    uint64_t wr_fixed;        /* bits a write may not change */
    uint64_t wr_zero;         /* bits a write may not set */
    const char *why;
};
extern const struct msr_rule msr_rules[];
extern const size_t msr_rule_count;

/* The row for msr under this vendor's rules, or NULL (plain pass-through). */
const struct msr_rule *msr_policy_find(uint32_t msr, bool amd);
/* RDMSR: 0 with *out the guest's value, or -1 for #GP.  native_ok: the real
 * RDMSR did not fault. */
int msr_policy_read(const struct msr_rule *r, bool native_ok, uint64_t native, uint64_t *out);

enum msr_do { MSR_DO_WRITE, MSR_DO_GP, MSR_DO_DROP, MSR_DO_ICR };
/* WRMSR of val; cur is the real current value (read only when the row has
 * wr_fixed bits; cur_ok false means that read faulted). */
enum msr_do msr_policy_write(const struct msr_rule *r, uint64_t val, bool cur_ok,
                             uint64_t cur);
/* Whether the row's reads / writes must exit. */
bool msr_rule_traps_read(const struct msr_rule *r);
bool msr_rule_traps_write(const struct msr_rule *r);

#endif
