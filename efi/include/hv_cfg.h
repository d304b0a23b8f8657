/*
 * hv_cfg.h - the hv.cfg parser (efi/platform/hvcfg.c).  Pure C: bytes in,
 * struct out, errors through a callback.  No UEFI, so it is also built for
 * the host by tests/test_efi_hostlib.py.  Format: docs/DESIGN.md.
 */
#ifndef HV_CFG_H
#define HV_CFG_H

#include <stdbool.h>
#include <stddef.h>

#define HV_CFG_PATH_MAX 256     /* bytes, including the NUL */
#define HV_CFG_ARGS_MAX 1024

enum hv_cfg_log { HV_CFG_LOG_ERROR = 0, HV_CFG_LOG_INFO, HV_CFG_LOG_DEBUG };

/* debug-fail=<name> (DEBUG builds only): a failure forced on purpose so a
 * test can see its report.  It fires only on a boot that found no previous
 * log ring, so the boot after the reset shows it and then runs normally.
 * The code that reports each failure is the one RELEASE runs. */
enum hv_force {
    HV_FORCE_NONE = 0,
    HV_FORCE_PANIC,             /* hv_panic from the platform, before any VMX */
    HV_FORCE_HOST_EXCEPTION,    /* a #UD in the host's first exit handler */
    HV_FORCE_GUEST_CR0,         /* VMX: guest CR0.PE cleared: invalid guest state */
    HV_FORCE_PIN_CTLS,          /* VMX: pin controls' must-be-1 bits cleared: VMfailValid */
    HV_FORCE_UNEXPECTED_EXIT,   /* VMX: RDTSC exiting set: exit reason 16 */
    HV_FORCE_LAST_CPU,          /* the last CPU's prepare fails: fail closed */
    HV_FORCE_VMCB_EFER,         /* SVM: guest EFER.SVME cleared: VMEXIT_INVALID */
    HV_FORCE_COUNT
};
extern const char *const hv_force_names[HV_FORCE_COUNT];

struct hv_cfg {
    bool hypervisor;                    /* default true */
    int log;                            /* enum hv_cfg_log, default INFO */
    char next[HV_CFG_PATH_MAX];         /* "" when unset */
    char args[HV_CFG_ARGS_MAX];
    char kernel[HV_CFG_PATH_MAX];
    char initrd[HV_CFG_PATH_MAX];
    char append[HV_CFG_ARGS_MAX];
    bool next_auto;                     /* next=auto: BootOrder, then known paths */
    bool panic_halt;                    /* panic=halt; default panic=reset */
    int debug_fail;                     /* enum hv_force, default NONE */
};

/* efi/platform/aml_sleep.c: SLP_TYPa of \_S<state> in DSDT AML, -1: none. */
int hv_aml_sleep_type(const unsigned char *aml, size_t len, unsigned state);

/* line is 1-based; reason is a short token such as "unknown-key". */
typedef void (*hv_cfg_error_fn)(void *ctx, unsigned line, const char *reason);

void hv_cfg_defaults(struct hv_cfg *cfg);
/* Parses len bytes (need not be NUL-terminated) over the current contents
 * of cfg (call hv_cfg_defaults first).  Returns the number of errors
 * reported; err may be NULL. */
int hv_cfg_parse(const char *buf, size_t len, struct hv_cfg *cfg,
                 hv_cfg_error_fn err, void *ctx);

#endif
