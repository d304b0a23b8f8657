/*
 * vmx_ctl.h - VMX controls as "wanted & allowed" (SDM Vol 3C App. A.3-A.5)
 * and the CPUID feature set they imply.  Pure C: also built for the host
 * by the tests, which run it over synthetic capability-MSR sets.
 */
#ifndef VMX_VMX_CTL_H
#define VMX_VMX_CTL_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include "../core/cpuid_policy.h"

/* Controls we use (SDM Vol 3C 25.6, 25.7, 25.8). */
#define PIN_NMI_EXITING      (1u << 3)
#define PIN_VIRTUAL_NMIS     (1u << 5)
#define PIN_PREEMPT_TIMER    (1u << 6)
#define PROC_NMI_WINDOW      (1u << 22)
#define PROC_IO_BITMAPS      (1u << 25)
#define PROC_MSR_BITMAP      (1u << 28)
#define PROC_SECONDARY       (1u << 31)
#define PROC2_EPT            (1u << 1)
#define PROC2_RDTSCP         (1u << 3)
#define PROC2_VPID           (1u << 5)
#define PROC2_UNRESTRICTED   (1u << 7)
#define PROC2_INVPCID        (1u << 12)
#define PROC2_XSAVES         (1u << 20)
#define PROC2_PT_GPA         (1u << 24)
#define PROC2_WAITPKG        (1u << 26)   /* enable user wait and pause */
#define EXIT_SAVE_DEBUG      (1u << 2)
#define EXIT_HOST_64         (1u << 9)
#define EXIT_SAVE_PAT        (1u << 18)
#define EXIT_LOAD_PAT        (1u << 19)
#define EXIT_SAVE_EFER       (1u << 20)
#define EXIT_LOAD_EFER       (1u << 21)
#define EXIT_CLEAR_RTIT      (1u << 25)
#define ENTRY_LOAD_DEBUG     (1u << 2)
#define ENTRY_IA32E_GUEST    (1u << 9)
#define ENTRY_LOAD_PAT       (1u << 14)
#define ENTRY_LOAD_EFER      (1u << 15)
#define ENTRY_LOAD_RTIT      (1u << 18)

struct ctl_want {
    uint32_t bit;
    bool required;
    const char *name;
    const char *why;
};
struct ctl_group {
    const char *name;
    const struct ctl_want *want;
    size_t n;
};
enum { CTL_PIN, CTL_PROC, CTL_PROC2, CTL_EXIT, CTL_ENTRY, CTL_GROUPS };
extern const struct ctl_group vmx_ctl_groups[CTL_GROUPS];

/* Bits 31:0 of a capability MSR are the allowed 0-settings (1 = must be 1),
 * bits 63:32 the allowed 1-settings.  Returns the control value; *missing
 * gets the wanted bits the CPU does not allow. */
uint32_t vmx_ctl_pick(uint64_t cap, const struct ctl_group *g, uint32_t *missing);
/* The features the guest's CPUID may advertise under these controls. */
void vmx_cpuid_ctls(uint32_t proc, uint32_t proc2, uint32_t exit, uint32_t entry,
                    struct cpuid_ctls *out);

#endif
