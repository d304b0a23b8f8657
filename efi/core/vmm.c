/*
 * vmm.c - vmm_start: make the hypervisor resident, pick the backend once,
 * and virtualize every processor.
 *
 * Residency.  The app image is EfiLoaderCode: the firmware unloads it when
 * the app returns and an OS reuses that memory after ExitBootServices.  So
 * the very first thing vmm_start does is allocate one pool of
 * EfiRuntimeServicesData pages (plat_alloc_pages), copy the loaded image to
 * its start, re-apply the image's own PE base relocations for the new
 * address (image_relocate) and continue in the copy.  Every host code path,
 * every global the host touches and every host page (stacks, VMXON/VMCS,
 * EPT, bitmaps, GDT/IDT/TSS, page tables) lives in that pool, and EPT hides
 * the whole pool from the guest.  The original image keeps running the
 * platform code (chain-loading) as a guest and may be unloaded freely.
 */
#include "hv_core.h"
#include "hv_lib.h"
#include "hv_cfg.h"

const struct hv_caps *hv_caps_now;
size_t hv_cpu_total;
struct hv_cpu **hv_cpus;

/* Hand-over from the host-side setup (copy) to the guest-side launcher
 * (original image).  Lives in the original image. */
enum { CPU_FAIL_PREPARE = -1, CPU_FAIL_LAUNCH = -2 };

struct vmm_boot {
    struct hv_cpu **cpu;                   /* hv_cpu_total entries, outside the pool */
    volatile int *status;                  /* 1: guest now, 0: never ran, CPU_FAIL_* */
    int (*prepare)(struct hv_cpu *c);      /* copy: enable VMX, build the VMCS */
    int (*launch)(void);                   /* original: returns 0 as a guest */
    void (*launch_failed)(struct hv_cpu *c, int rc);
    char name[8];                          /* a copy: the pool is hidden later */
};

static struct hv_caps caps_copy;
static uint8_t *pool;
static size_t pool_pages, pool_used;
static volatile int pool_lock;
static const struct hv_backend_ops *ops;

#define PERCPU_PAGES 16          /* host_cpu_init + vmx (VMXON, VMCS, state) or svm (4 pages) */
#define SHARED_PAGES 28          /* IDT, host page tables, MSR/I-O bitmaps, slack */

void *hv_alloc(size_t pages)
{
    void *p = NULL;

    while (__atomic_exchange_n(&pool_lock, 1, __ATOMIC_ACQUIRE))
        cpu_relax();
    if (pool_used + pages <= pool_pages) {
        p = pool + pool_used * 4096;
        pool_used += pages;
    }
    __atomic_store_n(&pool_lock, 0, __ATOMIC_RELEASE);
    if (!p)
        hv_log("HV: pool exhausted want=%zu used=%zu of %zu pages\n", pages, pool_used,
               pool_pages);
    else
        memset(p, 0, pages * 4096);
    return p;
}

void hv_protected_range(uint64_t *base, uint64_t *size)
{
    *base = (uint64_t)(uintptr_t)pool;
    *size = pool_pages * 4096;
}

void hv_dump_regs(const struct hv_regs *r)
{
    if (r)
        hv_log("HV: guest rax=%llx rbx=%llx rcx=%llx rdx=%llx rsi=%llx rdi=%llx rbp=%llx\n",
               (unsigned long long)r->rax, (unsigned long long)r->rbx,
               (unsigned long long)r->rcx, (unsigned long long)r->rdx,
               (unsigned long long)r->rsi, (unsigned long long)r->rdi,
               (unsigned long long)r->rbp);
}

void hv_panic(struct hv_cpu *c, const char *fmt, ...)
{
    va_list ap;

    hv_log("HV: panic ");
    va_start(ap, fmt);
    hv_vlog(fmt, ap);
    va_end(ap);
    if (c && c->ops && c->ops->dump_guest)
        c->ops->dump_guest(c);
    hv_fail_stop("panic");
}

void hv_panic_platform(const char *what)
{
    hv_panic(NULL, "%s\n", what);
}

/* ---- PE image copy (PE/COFF spec "The .reloc Section") ------------------ */
extern const uint8_t __ImageBase[];   /* provided by lld-link */

struct pe_layout { uint32_t size, reloc_rva, reloc_size; };

static int pe_layout(const uint8_t *img, struct pe_layout *l)
{
    uint32_t pe = *(const uint32_t *)(img + 0x3C);
    const uint8_t *opt = img + pe + 24;          /* after "PE\0\0" + COFF header */

    if (img[0] != 'M' || img[1] != 'Z' || *(const uint32_t *)(img + pe) != 0x4550 ||
        *(const uint16_t *)opt != 0x20B)         /* PE32+ */
        return -1;
    l->size = *(const uint32_t *)(opt + 56);     /* SizeOfImage */
    l->reloc_rva = *(const uint32_t *)(opt + 112 + 5 * 8);
    l->reloc_size = *(const uint32_t *)(opt + 112 + 5 * 8 + 4);
    return 0;
}

/* Adds (new - old) to every DIR64 fixup that still holds an address inside
 * the old image.  A slot that holds anything else was rewritten at run time
 * (e.g. a pointer variable set to firmware memory) and is left alone. */
static void image_relocate(uint8_t *copy, const struct pe_layout *l, uint64_t old)
{
    uint64_t delta = (uint64_t)(uintptr_t)copy - old;
    uint32_t off = 0;

    while (off + 8 <= l->reloc_size) {
        const uint8_t *blk = copy + l->reloc_rva + off;
        uint32_t page = *(const uint32_t *)blk, bsize = *(const uint32_t *)(blk + 4);
        const uint16_t *e = (const uint16_t *)(blk + 8);

        if (bsize < 8)
            break;
        for (uint32_t i = 0; i < (bsize - 8) / 2; i++) {
            uint64_t *slot = (uint64_t *)(copy + page + (e[i] & 0xFFF));

            if ((e[i] >> 12) == 10 && *slot >= old && *slot < old + l->size)
                *slot += delta;
        }
        off += bsize;
    }
}

/* ---- host side: runs in the resident copy ---------------------------------- */
static struct hv_cpu *cpu_alloc(uint32_t index)
{
    struct hv_cpu *c = hv_alloc(1);

    if (!c)
        return NULL;
    c->self = c;
    c->index = index;
    c->ops = ops;
    if (host_cpu_init(c))
        return NULL;
    return c;
}

static const struct hv_backend_ops *pick_backend(const struct hv_caps *caps)
{
    if (caps->virt == HV_VIRT_VMX)
        return &vmx_ops;
    if (caps->virt == HV_VIRT_SVM)
        return &svm_ops;
    return NULL;
}

/* Everything up to (not including) the launch: the pool, the host
 * environment, the backend's shared structures and one hv_cpu per CPU.
 * Fills *b, which lives in the original image, for the guest side. */
__attribute__((noinline)) static int vmm_prepare(const struct hv_caps *caps, uint8_t *p,
                                                 size_t pages, size_t image_pages,
                                                 struct vmm_boot *b, intptr_t delta)
{
    hv_log_serial_only();          /* APs and exit handlers must not touch ConOut */
    caps_copy = *caps;
    hv_caps_now = &caps_copy;
    pool = p;
    pool_pages = pages;
    pool_used = image_pages;       /* the image copy itself */
    ops = pick_backend(caps);
    if (!ops) {
        hv_log("HV: skip reason=%s\n", caps->skip_reason ? caps->skip_reason : "no-virt");
        return -1;
    }
    hv_cpus = hv_alloc((hv_cpu_total * sizeof(*hv_cpus) + 4095) / 4096);
    if (!hv_cpus)
        return -1;
    hv_smp_global_init();          /* before EPT: it protects the APIC page */
    if (host_env_init() || ops->global_init() ||
        hv_cpuid_policy_ensure(caps->virt == HV_VIRT_SVM))
        return -1;
    for (uint32_t i = 0; i < hv_cpu_total; i++) {
        hv_cpus[i] = cpu_alloc(i);
        if (!hv_cpus[i])
            return -1;
        b->cpu[i] = hv_cpus[i];
    }
    b->prepare = ops->cpu_prepare;
    b->launch_failed = ops->launch_failed;
    /* The launch stub must run from the original image: the CPU continues
     * there as a guest, and the guest may not execute the protected copy. */
    b->launch = (int (*)(void))((uintptr_t)ops->launch - delta);
    memcpy(b->name, ops->name, strlen(ops->name) < 7 ? strlen(ops->name) : 7);
    hv_log("HV: mem total=%zu percpu=%u used=%zu\n", pool_pages * 4096,
           PERCPU_PAGES * 4096, pool_used * 4096);
    return 0;
}

/* ---- guest side: runs in the original image ----------------------------------
 * These functions may run on a CPU that is already a guest, so they touch
 * only the original image and the firmware's memory, never the pool. */
static struct vmm_boot boot;

static void cpu_entry(void *ctx, size_t index)
{
    struct vmm_boot *b = ctx;
    struct hv_cpu *c = index < hv_cpu_total ? b->cpu[index] : NULL;
    int rc;

    if (!c)
        return;
    rc = b->prepare(c);
    if (rc == 0 && index == hv_cpu_total - 1 && index && hv_force(HV_FORCE_LAST_CPU)) {
        hv_log("HV: debug-fail cpu=%zu: its prepare fails (after entering %s)\n", index,
               b->name);
        b->launch_failed(c, -1);
        rc = -1;
    }
    if (rc) {
        b->status[index] = CPU_FAIL_PREPARE;
        return;
    }
    rc = b->launch();            /* returns 0 as a guest */
    if (rc)
        b->launch_failed(c, rc);
    else if (index == 0)
        hv_ring_guest_mode();    /* the ring is read-only to us now */
    b->status[index] = rc == 0 ? 1 : CPU_FAIL_LAUNCH;
}

/* ---- fail closed --------------------------------------------------------------
 * No half-protected machine: when a CPU could not be virtualized, the CPUs
 * that were leave VMX again (one devirtualize hypercall takes them all out)
 * and the boot goes on with none virtualized. */
static const char *cpu_fail_name(int st)
{
    return st == CPU_FAIL_PREPARE ? "prepare-failed (see above)" :
           st == CPU_FAIL_LAUNCH ? "vmlaunch-failed (see above)" : "not-started-by-mp-services";
}

/* A hypercall from the guest side (this image, on a CPU that runs as our
 * guest), with the vendor's instruction: VMMCALL on AMD, VMCALL on Intel.
 * Returns RAX (the status); RDX and R8 come back in *rdx and *r8. */
static bool guest_svm;

int64_t hv_guest_hypercall(uint64_t fn, uint64_t *rdx, uint64_t *r8)
{
    register uint64_t r8r __asm__("r8") = *r8;
    uint64_t rax = fn, d = *rdx;

    if (guest_svm)
        __asm__ volatile("vmmcall" : "+a"(rax), "+d"(d), "+r"(r8r)
                         : "c"((uint64_t)HC_MAGIC) : "r9", "memory", "cc");
    else
        __asm__ volatile("vmcall" : "+a"(rax), "+d"(d), "+r"(r8r)
                         : "c"((uint64_t)HC_MAGIC) : "r9", "memory", "cc");
    *rdx = d;
    *r8 = r8r;
    return (int64_t)rax;
}

/* HC_DEVIRT: how many guest CPUs are still virtualized (-1: the call failed). */
static int64_t devirt_call(void)
{
    uint64_t rdx = 0, r8 = 0;

    return hv_guest_hypercall(HC_DEVIRT, &rdx, &r8) == HC_OK ? (int64_t)r8 : -1;
}

struct devirt_ctx { size_t who; volatile int64_t still; };

static void devirt_entry(void *ctx, size_t index)
{
    struct devirt_ctx *d = ctx;

    if (index == d->who)
        d->still = devirt_call();
}

static int fail_closed(size_t ncpu)
{
    struct devirt_ctx d = {ncpu, 0};
    size_t bad = ncpu, on = 0;

    for (size_t i = 0; i < ncpu; i++) {
        if (boot.status[i] == 1) {
            on++;
            d.who = d.who == ncpu ? i : d.who;
        } else if (bad == ncpu) {
            bad = i;
        }
    }
    if (on && d.who == 0)
        d.still = devirt_call();
    else if (on)
        plat_run_on_all_cpus(devirt_entry, &d);
    if (d.still != 0) {
        hv_log("HV: panic fail-closed: %zu cpus virtualized, %lld still in after devirtualize\n",
               on, (long long)d.still);
        halt_forever();
    }
    hv_log("HV: skip reason=cpu %zu: %s\n", bad, cpu_fail_name(boot.status[bad]));
    return -1;
}

/* Whether EPT/NPT can map 1 GiB pages: EPT_VPID_CAP[17] on Intel (what
 * ept.c uses), the CPUID page-size bit for AMD's nested paging. */
static bool paging_1g(const struct hv_caps *caps)
{
    if (caps->virt == HV_VIRT_VMX)               /* the MSR exists with EPT */
        return caps->ept && (rdmsr(0x48C) & (1ull << 17));
    return cpuid2(0x80000001, 0).edx & (1u << 26);
}

static size_t pool_estimate(const struct hv_caps *caps, size_t image_pages, size_t ncpu)
{
    struct cpuid_regs r = cpuid2(0x80000008, 0);
    unsigned maxphy = r.eax & 0xFF;
    size_t pdpts = maxphy > 39 ? (size_t)1 << (maxphy - 39) : 1;

    /* EPT: PML4 + PDPTs (1 GiB leaves) + PD/PT pairs for the splits around
     * the pool; without 1 GiB pages EPT needs one PD per GiB instead. */
    if (!paging_1g(caps))
        pdpts *= 512;
    /* NPT has the same layout; hv_cpus takes one page per 512 CPUs. */
    return image_pages + SHARED_PAGES + PERCPU_PAGES * ncpu + ncpu / 512 + 1 + 1 + pdpts + 16;
}

static bool feature_control_allows_vmx(void)
{
    uint64_t fc = rdmsr(MSR_FEATURE_CONTROL);

    return !(fc & FC_LOCK) || (fc & FC_VMX_OUTSIDE_SMX);
}

int vmm_start(const struct hv_caps *caps)
{
    struct pe_layout l;
    uint8_t *copy;
    size_t pages, image_pages, ncpu;
    int (*prepare)(const struct hv_caps *, uint8_t *, size_t, size_t, struct vmm_boot *,
                   intptr_t);
    intptr_t delta;
    uint64_t t0 = rdtsc();
    uint32_t on = 0;

    if (caps->virt == HV_VIRT_NONE) {
        hv_log("HV: skip reason=%s\n", caps->skip_reason ? caps->skip_reason : "no-virt");
        return -1;
    }
    if (caps->virt == HV_VIRT_VMX && !feature_control_allows_vmx()) {
        hv_log("HV: skip reason=vmx-disabled-by-firmware\n");
        return -1;
    }
    guest_svm = caps->virt == HV_VIRT_SVM;
    ncpu = plat_cpu_count();
    if (!ncpu) {                 /* no MP Services: the APs could not be covered */
        hv_log("HV: skip reason=no-mp-services\n");
        return -1;
    }
    if (ncpu > HV_MAX_CPUS) {
        hv_log("HV: skip reason=too-many-cpus cpus=%zu max=%u\n", ncpu, HV_MAX_CPUS);
        return -1;
    }
    if (pe_layout(__ImageBase, &l)) {
        hv_log("HV: skip reason=image-header\n");
        return -1;
    }
    boot.cpu = plat_alloc_pages((ncpu * (sizeof(*boot.cpu) + sizeof(*boot.status)) + 4095) /
                                4096);
    if (!boot.cpu) {
        hv_log("HV: skip reason=no-memory cpus=%zu\n", ncpu);
        return -1;
    }
    boot.status = (volatile int *)(boot.cpu + ncpu);
    hv_log_serial_only();        /* CPU callbacks below run on APs too */
    hv_cpu_total = ncpu;         /* set before the copy, so the copy has it */
    image_pages = (l.size + 4095) / 4096;
    pages = pool_estimate(caps, image_pages, ncpu);
    copy = plat_alloc_pages(pages);
    if (!copy) {
        hv_log("HV: skip reason=no-memory pages=%zu\n", pages);
        return -1;
    }
    memcpy(copy, __ImageBase, l.size);
    image_relocate(copy, &l, (uint64_t)(uintptr_t)__ImageBase);
    delta = (intptr_t)(copy - __ImageBase);
    prepare = (void *)((uintptr_t)&vmm_prepare + delta);
    hv_log("HV: resident image=%p pool-pages=%zu\n", (void *)copy, pages);
    if (prepare(caps, copy, pages, image_pages, &boot, delta))
        return -1;
    plat_run_on_all_cpus(cpu_entry, &boot);
    for (size_t i = 0; i < ncpu; i++) {
        if (boot.status[i] == 1) {
            on++;
            hv_log("HV: cpu=%zu %s=on\n", i, boot.name);
        } else {
            hv_log("HV: cpu=%zu %s=off\n", i, boot.name);
        }
    }
    if (on != ncpu)
        return fail_closed(ncpu);
    hv_log("HV: init ticks=%llu\n", (unsigned long long)(rdtsc() - t0));
    hv_log("HV: ready cpus=%u\n", on);
    return 0;
}
