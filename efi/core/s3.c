/*
 * s3.c - the way back from ACPI S3 under the hypervisor.
 *
 * S3 powers the CPUs off: on resume every CPU starts from reset without
 * virtualization.  So before the sleep write goes out, the hypervisor puts
 * its resume stub (s3_wake.S, in a page below 1 MiB the guest sees read-only)
 * into the FACS firmware waking vector (ACPI 6.5 5.2.10) and remembers the
 * OS's.  On resume the firmware jumps to the stub on the BSP; it re-enters
 * SVM/VMX (backend s3_resume) with the guest in real mode at the OS's
 * vector, as the firmware would have started it.  The APs stay down until
 * the OS starts them: the ICR intercepts are armed again, and the OS's
 * INIT-SIPI to a CPU that is down sends a real INIT and a start-up IPI to
 * the stub instead, which starts the AP as our guest at the OS's SIPI
 * vector (sleep_start_ap).  Every CPU is under the hypervisor again before
 * it runs a guest instruction: nothing is half-virtualized.
 *
 * Without a backend resume, a FACS, the low page, or with a 64-bit waking
 * vector (X_Firmware_Waking_Vector, which we do not take over) the
 * hypervisor ends at S3 and says so (HV: sleep ... ends here).
 */
#include "hv_core.h"
#include "hv_lib.h"

/* ---- S3 resume ------------------------------------------------------------------ */
/* FACS (ACPI 6.5 Table 5.14). */
struct facs {
    char sig[4];
    uint32_t length, hw_signature, waking_vector, global_lock, flags;
    uint64_t x_waking_vector;
    uint8_t version;
} __attribute__((packed));

/* The data half of the stub's page (offsets: s3_wake.S). */
struct s3_wake {
    uint64_t gdt[4];            /* 0x800: null, HOST_CS (64-bit), HOST_DS, 32-bit code */
    uint16_t gdtr_limit;        /* 0x820 */
    uint32_t gdtr_base;
    uint16_t pad0;
    uint32_t jmp32_off;         /* 0x828: m16:32 far pointers */
    uint16_t jmp32_sel, pad1;
    uint32_t jmp64_off;         /* 0x830 */
    uint16_t jmp64_sel, pad2;
    uint64_t cr0, cr4_32, cr4, efer;   /* 0x838 */
    uint64_t table, count;      /* 0x858 */
    uint64_t entry;             /* 0x868 */
} __attribute__((packed));
_Static_assert(__builtin_offsetof(struct s3_wake, jmp32_off) == 0x28, "s3_wake.S");
_Static_assert(__builtin_offsetof(struct s3_wake, entry) == 0x68, "s3_wake.S");

struct s3_cpu { uint32_t apic_id, pad; struct hv_cpu *cpu; uint64_t stack; };

extern const uint8_t hv_s3_wake_start[], hv_s3_wake_pm32[], hv_s3_wake_lm64[],
    hv_s3_wake_end[];

static struct facs *facs;
static uint8_t *wake_page;      /* 2 pages: the stub and its data, the PML4 copy */
static struct s3_cpu *cpu_table;
static uint32_t os_vector;
static volatile bool waker_taken;
static volatile bool resuming;  /* from the S3 write until every CPU is back */

void hv_set_s3_resume(void *facs_table, void *low_pages)
{
    facs = facs_table;
    wake_page = low_pages;
}

bool hv_s3_page(uint64_t base, uint64_t size)
{
    uint64_t p = (uint64_t)(uintptr_t)wake_page;

    return wake_page && base < p + 2 * 4096 && p < base + size;
}

/* Why the hypervisor cannot come back from this S3, or NULL. */
static const char *no_resume(const struct hv_cpu *c)
{
    if (!c->ops->s3_resume)
        return "no resume path in this backend";
    if (!facs || memcmp(facs->sig, "FACS", 4))
        return "no FACS";
    if (!wake_page)
        return "no page below 1 MiB";
    if (facs->length >= 32 && facs->x_waking_vector)
        return "the OS set a 64-bit waking vector";
    if (!facs->waking_vector || facs->waking_vector >= 0x100000)
        return "no real-mode waking vector";
    if (!cpu_table && !(cpu_table = hv_alloc((hv_cpu_total * sizeof(*cpu_table) + 4095) /
                                             4096)))
        return "no memory";
    return NULL;
}

static void write_stub(void)
{
    struct s3_wake *w = (struct s3_wake *)(wake_page + 0x800);
    uint32_t page = (uint32_t)(uintptr_t)wake_page;
    uint64_t efer = rdmsr(MSR_EFER);

    memcpy(wake_page, hv_s3_wake_start, (size_t)(hv_s3_wake_end - hv_s3_wake_start));
    memcpy(wake_page + 4096, (const void *)(uintptr_t)host_cr3(), 4096);
    w->gdt[0] = 0;
    w->gdt[1] = 0x00AF9A000000FFFFull;           /* HOST_CS: 64-bit code */
    w->gdt[2] = 0x00CF92000000FFFFull;           /* HOST_DS: flat data */
    w->gdt[3] = 0x00CF9A000000FFFFull;           /* 0x18: flat 32-bit code */
    w->gdtr_limit = sizeof(w->gdt) - 1;
    w->gdtr_base = page + 0x800;
    w->jmp32_off = page + (uint32_t)(hv_s3_wake_pm32 - hv_s3_wake_start);
    w->jmp32_sel = 0x18;
    w->jmp64_off = page + (uint32_t)(hv_s3_wake_lm64 - hv_s3_wake_start);
    w->jmp64_sel = HOST_CS;
    w->cr0 = read_cr0();
    w->cr4 = read_cr4() & ~(1ull << 12);         /* SVM/VMX state is the backend's */
    w->cr4_32 = w->cr4 & ((1ull << 5) | (1ull << 9) | (1ull << 10));   /* PAE OSFXSR OSXMMEXCPT */
    w->efer = efer & ((1ull << 8) | (1ull << 11) | 1ull);             /* LME NXE SCE */
    for (size_t i = 0; i < hv_cpu_total; i++)
        cpu_table[i] = (struct s3_cpu){hv_cpus[i]->apic_id, 0, hv_cpus[i],
                                       (uint64_t)(uintptr_t)hv_cpus[i]->stack_top};
    w->table = (uint64_t)(uintptr_t)cpu_table;
    w->count = hv_cpu_total;
    w->entry = (uint64_t)(uintptr_t)hv_s3_cpu_entry;
}

/* The guest writes SLP_TYP=S3 with SLP_EN (hv_io_out), host context: take
 * over the waking vector and arm the ICR intercepts for the APs' restart.
 * Returns false when the hypervisor ends here instead (logged). */
bool hv_s3_prepare(struct hv_cpu *c, uint16_t port, uint32_t val)
{
    const char *why = no_resume(c);

    if (why) {
        hv_log("HV: sleep state=S3 cpu=%u pm1a-cnt=%x value=%x: the hypervisor ends "
               "here (%s); the CPUs resume without it\n", c->index, port, val, why);
        return false;
    }
    write_stub();
    os_vector = facs->waking_vector;
    waker_taken = false;
    for (size_t i = 0; i < hv_cpu_total; i++) {
        hv_cpus[i]->s3_down = true;
        hv_cpus[i]->s3_sipi = -1;
    }
    resuming = true;
    hv_smp_s3_rearm(c);
    facs->waking_vector = (uint32_t)(uintptr_t)wake_page;
    hv_log("HV: sleep state=S3 cpu=%u pm1a-cnt=%x value=%x: resume at %x, then the OS's "
           "waking vector %x\n", c->index, port, val, facs->waking_vector, os_vector);
    return true;
}

/* The OS's INIT or SIPI to a CPU that is down since S3 (smp.c icr_write):
 * the first SIPI after an INIT starts it through the stub.  True when t was
 * down, whatever the IPI. */
bool hv_s3_start_ap(struct hv_cpu *c, struct hv_cpu *t, bool init, uint8_t vec)
{
    /* Only once the firmware has come back through the stub: a sleep write
     * the platform ignored left every CPU running as our guest. */
    if (!resuming || !waker_taken || !t->s3_down)
        return false;
    if (init) {
        t->sipi_armed = true;
    } else if (t->sipi_armed) {
        t->sipi_armed = false;
        t->s3_sipi = vec;
        __atomic_thread_fence(__ATOMIC_SEQ_CST);
        hv_send_start(c, t->apic_id, (uint8_t)((uintptr_t)wake_page >> 12));
    }
    return true;
}

/* The host's GDT, TSS (its IST stacks) and IDT (host.c), so that an NMI or
 * a fault from here on is the host's, reported as such. */
static void load_host_tables(struct hv_cpu *c)
{
    struct { uint16_t limit; uint64_t base; } __attribute__((packed))
        gdtr = {5 * 8 - 1, (uint64_t)(uintptr_t)c->gdt}, idtr = {0xFFF, host_idt_base()};

    ((uint64_t *)c->gdt)[3] &= ~(1ull << 41);     /* LTR wants an available TSS */
    __asm__ volatile("lgdt %0\n\tlidt %1\n\tltr %w2"
                     :: "m"(gdtr), "m"(idtr), "r"((uint16_t)HOST_TR) : "memory");
    wrmsr(MSR_GS_BASE, (uint64_t)(uintptr_t)c);   /* this_cpu() */
}

/* s3_wake.S, on the CPU's host stack and the host's page tables: the BSP
 * from the waking vector, an AP from hv_s3_start_ap.  Re-enters the guest
 * at the OS's vector. */
void hv_s3_cpu_entry(struct hv_cpu *c)
{
    uint16_t cs, ip;
    bool waker = false;

    load_host_tables(c);
    c->req = 0;                            /* requests died with the power, too */
    c->nmi_doorbell = 0;                   /* NMIs in flight died with the power */
    c->nmi_pending = 0;
    c->guest_nmi = 0;
    if (c->s3_sipi >= 0) {
        cs = (uint16_t)(c->s3_sipi << 8);
        ip = 0;
    } else if (!__atomic_exchange_n(&waker_taken, true, __ATOMIC_ACQ_REL)) {
        cs = (uint16_t)(os_vector >> 4);
        ip = os_vector & 0xF;
        waker = true;
    } else {
        hv_log("HV: s3 cpu=%u entered the resume stub unasked: halted\n", c->index);
        halt_forever();
    }
    c->s3_down = false;
    hv_log("HV: resume cpu=%u from S3 at %04x:%04x (%s)\n", c->index, cs, ip,
           waker ? "the OS's waking vector" : "the OS's start-up IPI");
    if (waker)
        facs->waking_vector = os_vector;   /* as the OS left it */
    else
        c->os_started = true;              /* the intercepts may end now (smp.c) */
    c->ops->s3_resume(c, cs, ip, waker);
}

/* Every CPU that was down is back (smp.c, when the intercepts end again). */
void hv_s3_done(void)
{
    resuming = false;
}
