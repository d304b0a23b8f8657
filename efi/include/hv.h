/*
 * hv.h - the interface between the UEFI platform layer, the arch-neutral core
 * and the vendor backends.  Nothing below efi/core, efi/vmx or efi/svm calls
 * UEFI directly: they use only what is declared here.
 */
#ifndef HV_H
#define HV_H

#include <stdint.h>
#include <stddef.h>
#include <stdbool.h>

#define HV_VERSION_STRING "0.1.0"
#define HV_INTERFACE_VERSION 1

/* ---- logging (efi/lib/log.c, efi/lib/fmt.c) ---------------------------- */
/* printf subset: %s %c %d %u %x %lx %llx %lu %p %016llx, width and '0' pad. */
void hv_log(const char *fmt, ...) __attribute__((format(printf, 1, 2)));

/* ---- capabilities (efi/core/caps.c) ------------------------------------ */
enum hv_vendor { HV_VENDOR_OTHER = 0, HV_VENDOR_INTEL, HV_VENDOR_AMD };
enum hv_virt { HV_VIRT_NONE = 0, HV_VIRT_VMX, HV_VIRT_SVM };

struct hv_caps {
    enum hv_vendor vendor;
    enum hv_virt virt;          /* NONE when virtualization cannot be used */
    bool ept, vpid, ug;         /* Intel: EPT, VPID, unrestricted guest */
    bool npt, nrips;            /* AMD: nested paging, next-RIP save */
    bool fc_locked;             /* Intel: IA32_FEATURE_CONTROL lock bit */
    const char *skip_reason;    /* set when virt == NONE: e.g. "no-vmx-cpuid" */
};

void hv_detect_caps(struct hv_caps *caps);

/* ---- platform services (efi/platform) ---------------------------------- */
/* Zeroed, 4 KiB aligned, identity-mapped pages of a type the OS never
 * reclaims (EfiRuntimeServicesData).  NULL on failure. */
void *plat_alloc_pages(size_t pages);
/* The same below 1 MiB (a start-up IPI's reach), NULL if there is none. */
void *plat_alloc_low_pages(size_t pages);
size_t plat_cpu_count(void);
/* Runs fn(ctx, cpu_index) on the BSP (index 0) and then on every enabled AP.
 * Returns 0 on success, -1 if MP Services are missing or an AP failed. */
int plat_run_on_all_cpus(void (*fn)(void *ctx, size_t cpu), void *ctx);
/* This boot's log ring (efi/platform/logring.c), NULL if none. */
struct hv_ring_hdr;
const struct hv_ring_hdr *plat_ring(void);
/* The HVLG ACPI table around it (hv_ring.h): the block the guest may read,
 * and the exit statistics' snapshot area.  NULL if none. */
struct hv_hvlg;
struct hv_hvlg *plat_hvlg(void);

/* ---- failure policy (efi/core/panic.c) --------------------------------- */
/* The FADT's RESET_REG (generic address: space 0 memory, 1 I/O) and value. */
struct hv_reset_reg { uint8_t space; uint8_t value; uint64_t addr; };
/* Before vmm_start: halt instead of reset after a panic (panic=halt), the
 * forced failure to arm (enum hv_force, hv_cfg.h), the ACPI reset register
 * (NULL: none). */
void hv_set_fail_policy(bool halt, int force, const struct hv_reset_reg *acpi);
/* True when `where` (enum hv_force) is the armed forced failure. */
bool hv_force(int where);
/* After a failure's report: the policy's platform reset, or a halt. */
void hv_fail_stop(const char *why) __attribute__((noreturn));
void hv_platform_reset(const char *why) __attribute__((noreturn));
void hv_panic_platform(const char *what) __attribute__((noreturn));

/* ---- ACPI sleep (efi/core/sleep.c) -------------------------------------- */
/* SLP_TYPa of \_S3 and \_S5 from the DSDT (-1: none), before vmm_start. */
void hv_set_sleep_types(int s3, int s5);
/* For the S3 resume stub: the FACS (its firmware waking vector) and two
 * pages below 1 MiB from plat_alloc_low_pages; either may be NULL. */
void hv_set_s3_resume(void *facs, void *low_pages);

/* ---- core entry (efi/core/vmm.c) --------------------------------------- */
/* Virtualizes every processor.  Returns 0 when all CPUs run as guests, or
 * a negative value after printing `HV: skip reason=...` (fail open) or
 * `HV: panic ...`.  Called once by the platform layer, before chain-loading. */
int vmm_start(const struct hv_caps *caps);

#endif
