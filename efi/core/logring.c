/*
 * logring.c - the core's side of the log ring (efi/include/hv_ring.h):
 * what the guest may see of it (read-only, HC_LOG_RING), the live exit
 * statistics in its HVLG table (CPUID HV_CPUID_STATS) and the forward
 * path for log text from a CPU that runs as our guest.  Vendor-neutral:
 * the SVM backend gets all of this by mapping hv_guest_readonly ranges
 * read-only in its NPT, as EPT does.
 */
#include "hv_core.h"
#include "hv_cfg.h"
#include "hv_lib.h"
#include "hv_ring.h"

static void ring_range(uint64_t *base, uint64_t *size)
{
    const struct hv_ring_hdr *r = plat_ring();

    *base = (uint64_t)(uintptr_t)r;
    *size = r ? r->size : 0;
}

/* The whole HVLG block (its header, the statistics, the ring), or the ring
 * alone where there is no table. */
bool hv_guest_readonly(uint64_t base, uint64_t size)
{
    const struct hv_hvlg *t = plat_hvlg();
    uint64_t rb, rs;

    ring_range(&rb, &rs);
    if (t) {
        rb = (uint64_t)(uintptr_t)t;
        rs = t->length;
    }
    return (rs && base < rb + rs && rb < base + size) || hv_s3_page(base, size);
}

static const uint64_t *cpu_counts(void *ctx, unsigned i)
{
    (void)ctx;
    return i < hv_cpu_total && hv_cpus[i] ? hv_cpus[i]->exits : NULL;
}

/* Off the exit path: only this leaf pays for the copy.  Other CPUs' counters
 * are read as they run (aligned 64-bit loads: each value is one it had). */
void hv_stats_snapshot(struct hv_regs *r)
{
    struct hv_hvlg *t = plat_hvlg();
    struct hv_ring_hdr *ring = (struct hv_ring_hdr *)plat_ring();

    _Static_assert(HV_EXIT_COUNT <= HV_STATS_KINDS, "HVLG stats hold every exit kind");
    if (!t || !ring || !hv_cpus)
        return;
    hv_ring_lock(ring);                         /* one writer of the table at a time */
    r->rbx = (uint32_t)hv_hvlg_snapshot(t, (unsigned)hv_cpu_total, cpu_counts, NULL,
                                        hv_exit_names, HV_EXIT_COUNT);
    hv_ring_unlock(ring);
    r->rax = t->stats_ncpus;
}

/* HC_LOG_RING: RDX = physical address of the ring, R8 = its size. */
int64_t hv_hc_log_ring(struct hv_cpu *c)
{
    ring_range(&c->regs->rdx, &c->regs->r8);
    return c->regs->r8 ? HC_OK : HC_E_ARG;
}

static bool boot_services_gone(void)
{
    const uint8_t *st = plat_st;

    return !st || *(void *const *)(st + 96) == NULL;   /* EFI_SYSTEM_TABLE.BootServices */
}

/* HC_RING_APPEND (RDX = text GPA, R8 = length): ring text that our own
 * platform code, running as a guest, already wrote to serial.  Refused once
 * boot services are gone: from then on only the host writes the ring. */
int64_t hv_hc_ring_append(struct hv_cpu *c)
{
    struct hv_regs *r = c->regs;
    const char *src;

    if (boot_services_gone())
        return HC_E_FUNCTION;
    if (hv_force(HV_FORCE_HOST_EXCEPTION))
        __asm__ volatile("ud2");            /* a bug of ours, on purpose (hv_cfg.h) */
    if (r->r8 > HV_REC_TEXT_MAX || !(src = hv_guest_buffer(r->rdx, r->r8)))
        return HC_E_ARG;
    hv_log_ring_only(src, r->r8);
    return HC_OK;
}

/* ---- guest side (original image) ------------------------------------------ */
static bool hv_present(void)
{
    static const char sig[] = HV_CPUID_SIGNATURE;
    struct cpuid_regs r = cpuid2(HV_CPUID_BASE, 0);

    return !memcmp(&r.ebx, sig, 4) && !memcmp(&r.ecx, &sig[4], 4) && !memcmp(&r.edx, &sig[8], 4);
}

static void forward(const char *s, size_t n)
{
    uint64_t rdx = (uint64_t)(uintptr_t)s, r8 = n;

    if (!hv_present()) {                /* devirtualized: the ring is ours again */
        hv_log_ring_only(s, n);
        return;
    }
    hv_guest_hypercall(HC_RING_APPEND, &rdx, &r8);
}

void hv_ring_guest_mode(void)
{
    hv_log_ring_forward(forward);
}
