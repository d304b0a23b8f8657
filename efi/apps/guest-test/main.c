/*
 * guest-test - runs after the hypervisor, as its guest, and checks from the
 * inside what the guest is supposed to see.  Each check prints
 * `GUEST: <check> PASS|FAIL [detail]` on COM1; the run ends with
 * `GUEST: summary pass=<n> fail=<m>` and the Bochs/QEMU exit ports.
 *
 * Per-CPU checks run on the BSP and then on each AP (MP Services,
 * StartupThisAP one at a time: the temporary IDT handlers are shared).
 * Waking a parked AP is an INIT-SIPI-SIPI, which the hypervisor emulates.
 */
#include "hv.h"
#include "hv_efi.h"
#include "hv_lib.h"
#include "hv_ring.h"

#define HC_MAGIC    0x48564D43u
#define HC_VERSION  0
#define HC_STATS    1
#define HC_LOG      2
#define HC_INFO     3
#define HC_LOG_RING 5
#define HC_DEVIRT   4
#define N_EXIT_KINDS 15
#define AP_TIMEOUT_US (5 * 1000 * 1000)

uint64_t gt_hypercall_intel(uint64_t fn, uint64_t a1, uint64_t a2, uint64_t out[2]);
uint64_t gt_hypercall_amd(uint64_t fn, uint64_t a1, uint64_t a2, uint64_t out[2]);
int gt_try_vmxon(const uint64_t *pa);
int gt_try_vmrun(const uint64_t *pa);
int gt_try_stgi(void);
int gt_try_hypercall_magic(uint32_t magic, int amd);
int gt_try_read(const volatile uint32_t *p, uint32_t *out);
int gt_try_write(volatile uint32_t *p, uint32_t v);
int gt_try_xsetbv(uint64_t xcr0);
int gt_try_rdmsr(uint32_t msr, uint64_t *v);
int gt_try_wrmsr(uint32_t msr, uint64_t v);
extern char gt_ud_stub[], gt_gp_stub[], gt_nmi_stub[];
extern volatile uint32_t gt_nmi_count, gt_nmi_nested, gt_nmi_resend;
extern volatile uint32_t *gt_nmi_icr;

static EFI_SYSTEM_TABLE *st;
static EFI_MP_SERVICES_PROTOCOL *mp;
static volatile int n_pass, n_fail;
static bool amd;                 /* AuthenticAMD: SVM checks, VMMCALL */

static void result(const char *check, bool ok, size_t cpu, const char *detail)
{
    __atomic_add_fetch(ok ? &n_pass : &n_fail, 1, __ATOMIC_SEQ_CST);
    hv_log("GUEST: %s %s cpu=%zu%s%s\n", check, ok ? "PASS" : "FAIL", cpu,
           detail ? " " : "", detail ? detail : "");
}

struct cpuid_out { uint32_t a, b, c, d; };

static struct cpuid_out cpuid(uint32_t leaf)
{
    struct cpuid_out o;

    __asm__ volatile("cpuid" : "=a"(o.a), "=b"(o.b), "=c"(o.c), "=d"(o.d) : "a"(leaf), "c"(0));
    return o;
}

static uint64_t rdtsc(void)
{
    uint32_t lo, hi;

    __asm__ volatile("rdtsc" : "=a"(lo), "=d"(hi));
    return ((uint64_t)hi << 32) | lo;
}

/* The hypercall instruction of this vendor: VMCALL (Intel) or VMMCALL (AMD). */
static uint64_t gt_hypercall(uint64_t fn, uint64_t a1, uint64_t a2, uint64_t out[2])
{
    return amd ? gt_hypercall_amd(fn, a1, a2, out) : gt_hypercall_intel(fn, a1, a2, out);
}

static bool vendor_is_amd(void)
{
    struct cpuid_out v = cpuid(0);

    return v.b == 0x68747541 && v.d == 0x69746E65 && v.c == 0x444D4163;  /* AuthenticAMD */
}

/* ---- temporary #UD/#GP handlers ------------------------------------------ */
/* gnu-efi's eficompiler.h defines __attribute__(x) away for this target,
 * so packing goes through the pragma. */
#pragma pack(push, 1)
struct idtr { uint16_t limit; uint64_t base; };
#pragma pack(pop)
_Static_assert(sizeof(struct idtr) == 10, "SIDT stores 10 bytes");

struct saved_gates { uint64_t ud[2], gp[2]; };

static void set_gate(uint64_t *g, const void *fn)
{
    uint64_t a = (uint64_t)(uintptr_t)fn;
    uint16_t cs;

    __asm__ volatile("mov %%cs, %0" : "=r"(cs));
    g[0] = (a & 0xFFFF) | ((uint64_t)cs << 16) | (0x8Eull << 40) | (((a >> 16) & 0xFFFF) << 48);
    g[1] = a >> 32;
}

static uint64_t *idt_gate(unsigned vec)
{
    struct idtr r;

    __asm__ volatile("sidt %0" : "=m"(r));
    return (uint64_t *)(uintptr_t)(r.base + 16 * vec);
}

static void traps_install(struct saved_gates *s)
{
    memcpy(s->ud, idt_gate(6), 16);
    memcpy(s->gp, idt_gate(13), 16);
    set_gate(idt_gate(6), gt_ud_stub);
    set_gate(idt_gate(13), gt_gp_stub);
}

static void traps_remove(const struct saved_gates *s)
{
    memcpy(idt_gate(6), s->ud, 16);
    memcpy(idt_gate(13), s->gp, 16);
}

/* ---- per-CPU checks ---------------------------------------------------------- */
static void check_hv_present(size_t cpu)
{
    struct cpuid_out l1 = cpuid(1), base = cpuid(0x40000000);
    char sig[13];
    char detail[48];

    memcpy(sig, &base.b, 4);
    memcpy(sig + 4, &base.c, 4);
    memcpy(sig + 8, &base.d, 4);
    sig[12] = 0;
    hv_snprintf(detail, sizeof(detail), "sig=%s max=%x", sig, base.a);
    result("hv-present", (l1.c >> 31) & 1 && !strcmp(sig, "MicroHvisor!") &&
                         base.a >= 0x40000001 && cpuid(0x40000001).a == 1, cpu, detail);
    if (!amd) {
        result("vmx-hidden", !((l1.c >> 5) & 1), cpu, NULL);
    } else {
        struct cpuid_out e1 = cpuid(0x80000001), ea = cpuid(0x8000000A);

        hv_snprintf(detail, sizeof(detail), "ecx81=%x leaf8000000a=%x/%x/%x/%x", e1.c, ea.a,
                    ea.b, ea.c, ea.d);
        result("svm-hidden", !((e1.c >> 2) & 1) && !(ea.a | ea.b | ea.c | ea.d), cpu, detail);
    }
}

/* AMD: a CPU whose firmware disabled SVM (APM Vol 2 15.4). */
static void check_traps_amd(size_t cpu)
{
    static _Alignas(4096) uint8_t region[4096];
    uint64_t pa = (uint64_t)(uintptr_t)region, efer = 0, vmcr = 0, hs = 0;
    struct saved_gates s;
    int vec_run, vec_stgi, vec_efer, vec_cr, vec_crw, vec_hs, vec_xs = -2;
    char d[64];

    traps_install(&s);
    vec_run = gt_try_vmrun(&pa);
    vec_stgi = gt_try_stgi();
    vec_efer = gt_try_rdmsr(0xC0000080, &efer);
    vec_cr = gt_try_rdmsr(0xC0010114, &vmcr);
    vec_crw = gt_try_wrmsr(0xC0010114, vmcr & ~0x18ull);
    vec_hs = gt_try_rdmsr(0xC0010117, &hs);
    if (cpuid(1).c & (1u << 27))
        vec_xs = gt_try_xsetbv(2);
    traps_remove(&s);
    hv_snprintf(d, sizeof(d), "vec=%d", vec_run);
    result("vmrun-ud", vec_run == 6, cpu, d);
    hv_snprintf(d, sizeof(d), "vec=%d", vec_stgi);
    result("stgi-ud", vec_stgi == 6, cpu, d);
    hv_snprintf(d, sizeof(d), "vec=%d efer=%llx", vec_efer, (unsigned long long)efer);
    result("efer-svme-hidden", vec_efer == -1 && !(efer & (1u << 12)), cpu, d);
    hv_snprintf(d, sizeof(d), "vec=%d value=%llx", vec_cr, (unsigned long long)vmcr);
    result("vm-cr-locked", vec_cr == -1 && (vmcr & 0x18) == 0x18, cpu, d);
    hv_snprintf(d, sizeof(d), "vec=%d", vec_crw);
    result("vm-cr-write-gp", vec_crw == 13, cpu, d);
    hv_snprintf(d, sizeof(d), "vec=%d", vec_hs);
    result("vm-hsave-gp", vec_hs == 13, cpu, d);
    if (vec_xs != -2) {
        hv_snprintf(d, sizeof(d), "vec=%d", vec_xs);
        result("xsetbv-invalid-gp", vec_xs == 13, cpu, d);
    }
}

static void check_traps(size_t cpu)
{
    static _Alignas(4096) uint8_t region[4096];
    uint64_t pa = (uint64_t)(uintptr_t)region, fc = 0, cap = 0;
    struct saved_gates s;
    int vec_vmxon, vec_fc, vec_fcw, vec_cap, vec_xs = -2;
    char d[64];

    traps_install(&s);
    vec_vmxon = gt_try_vmxon(&pa);
    vec_fc = gt_try_rdmsr(0x3A, &fc);
    vec_fcw = gt_try_wrmsr(0x3A, fc);
    vec_cap = gt_try_rdmsr(0x480, &cap);
    if (cpuid(1).c & (1u << 27))                 /* OSXSAVE: XSETBV usable */
        vec_xs = gt_try_xsetbv(2);               /* x87 bit clear: invalid */
    traps_remove(&s);
    hv_snprintf(d, sizeof(d), "vec=%d", vec_vmxon);
    result("vmxon-ud", vec_vmxon == 6, cpu, d);
    hv_snprintf(d, sizeof(d), "value=%llx", (unsigned long long)fc);
    result("feature-control-locked", vec_fc == -1 && (fc & 1) && !(fc & 6), cpu, d);
    hv_snprintf(d, sizeof(d), "vec=%d", vec_fcw);
    result("feature-control-write-gp", vec_fcw == 13, cpu, d);
    hv_snprintf(d, sizeof(d), "vec=%d", vec_cap);
    result("vmx-basic-msr-gp", vec_cap == 13, cpu, d);
    if (vec_xs != -2) {
        hv_snprintf(d, sizeof(d), "vec=%d", vec_xs);
        result("xsetbv-invalid-gp", vec_xs == 13, cpu, d);
    }
}

static void check_version(size_t cpu)
{
    uint64_t out[2] = {0, 0};
    uint64_t st_ = gt_hypercall(HC_VERSION, 0, 0, out);
    char d[64];

    hv_snprintf(d, sizeof(d), "status=%lld version=%llu hv-cpu=%llu", (long long)st_,
                (unsigned long long)out[0], (unsigned long long)out[1]);
    result("vmcall-version", st_ == 0 && out[0] == 1, cpu, d);
}

/* CPUID behind legal prefixes (CS, DS override, operand size, REX.W): the
 * hypervisor must skip the whole instruction, whatever its length (on SVM
 * without NRIPS it decodes the bytes).  A wrong length lands inside the
 * instruction or skips the marker. */
static void check_prefixed_cpuid(size_t cpu)
{
    uint32_t a = 0x40000000, b, c = 0, d, marker = 0;

    __asm__ volatile(".byte 0x2e, 0x3e, 0x66, 0x48, 0x0f, 0xa2\n\tmovl $0x600d, %4"
                     : "+a"(a), "=b"(b), "+c"(c), "=d"(d), "+r"(marker));
    result("cpuid-prefixed", marker == 0x600d && b == 0x7263694D, cpu,
           marker == 0x600d ? NULL : "marker skipped");
}

static void per_cpu_checks(size_t cpu)
{
    check_hv_present(cpu);
    check_prefixed_cpuid(cpu);
    if (amd)
        check_traps_amd(cpu);
    else
        check_traps(cpu);
    check_version(cpu);
}

/* ---- NMIs (issue 8): prompt, and held while the guest's handler runs ------------- */
/* Spins until gt_nmi_count reaches n: how many PAUSEs it took (no exits in
 * the loop), or ~0u after the limit. */
static uint32_t nmi_wait(uint32_t n)
{
    for (uint32_t i = 0; i < 1000000; i++) {
        if (gt_nmi_count >= n)
            return i;
        __asm__ volatile("pause");
    }
    return ~0u;
}

/* NMIs to itself through the xAPIC ICR.  With several CPUs the hypervisor
 * intercepts ICR writes, so the NMI is sent, and arrives, while this CPU is
 * in the hypervisor: it must reach the guest within a few instructions, not
 * at some later exit.  The second is sent from inside the NMI handler: it
 * must wait for the handler's IRET (never nest), then arrive promptly. */
static void check_nmi(void)
{
    uint64_t apic, save[2];
    uint32_t id = cpuid(1).b >> 24, first, second, lo, hi;
    volatile uint32_t *reg;
    char d[64];

    __asm__ volatile("rdmsr" : "=a"(lo), "=d"(hi) : "c"(0x1B));   /* IA32_APIC_BASE */
    apic = ((uint64_t)hi << 32) | lo;
    if ((apic & (1u << 10)) || !(apic & (1u << 11)))
        return (void)hv_log("GUEST: nmi-prompt SKIP cpu=0 not in xAPIC mode\n");
    reg = (volatile uint32_t *)(uintptr_t)(apic & ~0xFFFull);
    gt_nmi_icr = reg + 0x300 / 4;
    memcpy(save, idt_gate(2), 16);
    set_gate(idt_gate(2), gt_nmi_stub);
    gt_nmi_count = gt_nmi_nested = 0;
    reg[0x310 / 4] = id << 24;
    *gt_nmi_icr = 0x4400;                        /* NMI, assert, physical */
    first = nmi_wait(1);
    gt_nmi_resend = 1;
    *gt_nmi_icr = 0x4400;
    second = nmi_wait(3);
    memcpy(idt_gate(2), save, 16);
    hv_snprintf(d, sizeof(d), "spins=%u", first);
    result("nmi-prompt", first < 1000, 0, d);
    hv_snprintf(d, sizeof(d), "nested=%u count=%u spins=%u", gt_nmi_nested, gt_nmi_count,
                second);
    result("nmi-held-to-iret", !gt_nmi_nested && gt_nmi_count == 3 && second < 1000, 0, d);
}

/* ---- BSP-only checks ------------------------------------------------------------ */
static void check_stats_and_log(void)
{
    static uint64_t counts[N_EXIT_KINDS];
    static const char msg[] = "hello from guest-test";
    uint64_t out[2] = {0, 0};
    uint64_t s = gt_hypercall(HC_STATS, (uint64_t)(uintptr_t)counts, N_EXIT_KINDS, out);
    char d[64];

    hv_snprintf(d, sizeof(d), "entries=%llu cpuid=%llu vmcall=%llu",
                (unsigned long long)out[0], (unsigned long long)counts[0],
                (unsigned long long)counts[4]);
    result("vmcall-stats", s == 0 && out[0] == N_EXIT_KINDS && counts[0] > 0 && counts[4] > 0,
           0, d);
    s = gt_hypercall(HC_LOG, (uint64_t)(uintptr_t)msg, sizeof(msg) - 1, out);
    result("vmcall-log", s == 0, 0, NULL);
    s = gt_hypercall(0x77, 0, 0, out);
    result("vmcall-bad-function", (int64_t)s == -1, 0, NULL);
}

/* Another magic: the hypercall instruction behaves as without a hypervisor. */
static void check_bad_magic(void)
{
    struct saved_gates g;
    int vec;
    char d[32];

    traps_install(&g);
    vec = gt_try_hypercall_magic(0x12345678, amd);
    traps_remove(&g);
    hv_snprintf(d, sizeof(d), "vec=%d", vec);
    result("vmcall-bad-magic-ud", vec == 6, 0, d);
}

static void check_protection(void)
{
    uint64_t out[2] = {0, 0};
    uint64_t s = gt_hypercall(HC_INFO, 0, 0, out);
    uint32_t v = 0x12345678;
    struct saved_gates g;
    int vec = -1;
    char d[80];

    if (s == 0 && out[0]) {
        traps_install(&g);
        vec = gt_try_read((const volatile uint32_t *)(uintptr_t)out[0], &v);
        traps_remove(&g);
    }
    hv_snprintf(d, sizeof(d), "hpa=%llx bytes=%llu vec=%d value=%x",
                (unsigned long long)out[0], (unsigned long long)out[1], vec, v);
    result("hv-memory-blocked", s == 0 && vec == 13 && v == 0x12345678, 0, d);
}

/* HC_LOG_RING: the hypervisor's log ring is readable (its header starts with
 * the magic "HVRING01") and read-only: a write gets #GP (EPT, ept-block).
 * So is the HVLG ACPI table's header just below it (hv_ring.h). */
static void check_log_ring(void)
{
    uint64_t out[2] = {0, 0};
    uint64_t s = gt_hypercall(HC_LOG_RING, 0, 0, out);
    volatile uint32_t *ring = (volatile uint32_t *)(uintptr_t)out[0];
    volatile uint32_t *table = (volatile uint32_t *)(uintptr_t)(out[0] - HV_HVLG_PAGES * 4096);
    uint32_t magic = 0, sig = 0;
    struct saved_gates g;
    int vec_r = -1, vec_w = -1, tvec_r = -1, tvec_w = -1;
    char d[160];

    if (s == 0 && out[0] >= HV_HVLG_PAGES * 4096) {
        traps_install(&g);
        vec_r = gt_try_read(ring, &magic);
        vec_w = gt_try_write(ring, 0);
        tvec_r = gt_try_read(table, &sig);
        tvec_w = gt_try_write(table, 0);
        traps_remove(&g);
    }
    hv_snprintf(d, sizeof(d), "hpa=%llx bytes=%llu read-vec=%d magic=%x write-vec=%d "
                "hvlg-read-vec=%d sig=%x hvlg-write-vec=%d",
                (unsigned long long)out[0], (unsigned long long)out[1], vec_r, magic, vec_w,
                tvec_r, sig, tvec_w);
    result("log-ring-read-only", s == 0 && vec_r == -1 && magic == 0x49525648 && vec_w == 13 &&
           ring[0] == 0x49525648 && tvec_r == -1 && sig == 0x474C5648 && tvec_w == 13 &&
           table[0] == 0x474C5648, 0, d);
}

/* In Bochs RDTSC counts instructions, so these are instruction counts.
 * cpuid-ticks is the whole round trip per iteration: the loop's own
 * instructions, CPUID, the VM exit, the hypervisor and VMRESUME.
 * loop-ticks is the same loop around LFENCE (no exit, same registers, so
 * it compiles alike): the loop's share, which cpuid-ticks includes. */
#define BENCH_ITERATIONS 200
#define BENCH_LOOP(insn)                                                        \
    do {                                                                        \
        for (int i = 0; i < BENCH_ITERATIONS; i++) {                            \
            uint32_t a = 0, b, c = 0, d;                                        \
            __asm__ volatile(insn : "+a"(a), "=b"(b), "+c"(c), "=d"(d));        \
        }                                                                       \
    } while (0)

static void bench_cpuid(void)
{
    uint64_t t0, t1, t2;

    t0 = rdtsc();
    BENCH_LOOP("cpuid");
    t1 = rdtsc();
    BENCH_LOOP("lfence");
    t2 = rdtsc();
    hv_log("GUEST: bench cpuid-ticks=%llu\n", (unsigned long long)((t1 - t0) / BENCH_ITERATIONS));
    hv_log("GUEST: bench loop-ticks=%llu\n", (unsigned long long)((t2 - t1) / BENCH_ITERATIONS));
}

/* ---- devirtualization ------------------------------------------------------------ */
/* One HC_DEVIRT on the BSP takes every CPU out of VMX (the hypervisor
 * signals the others); RDX is the mask of CPUs that left.  Each CPU then
 * checks that it runs natively. */
static uint64_t devirt_mask;
/* x2APIC ICR (SDM Vol 3A 11.12.9), on the BSP where CPUID offers x2APIC: a
 * WRMSR to it is #GP outside x2APIC mode; in x2APIC mode one that sets a
 * reserved bit is #GP (11.12.1.3), and a legal one is sent (vector 0 to
 * self: an illegal vector, so the APIC only notes a send error).  The BSP
 * stays in x2APIC mode after (leaving it would reset its APIC). */
static void check_x2apic_icr(void)
{
    uint64_t base = 0;
    struct saved_gates s;
    int vec_off, vec_on = -2, vec_rsvd = -2, vec_send = -2;
    char d[64];

    if (!(cpuid(1).c & (1u << 21)))
        return;                                    /* no x2APIC (ryzen, QEMU TCG) */
    traps_install(&s);
    vec_off = gt_try_wrmsr(0x830, 0);
    if (gt_try_rdmsr(0x1B, &base) == -1 && (base & (1u << 11)))
        vec_on = gt_try_wrmsr(0x1B, base | (1u << 10));
    if (vec_on == -1) {
        vec_rsvd = gt_try_wrmsr(0x830, (1u << 18) | (1u << 13));
        vec_send = gt_try_wrmsr(0x830, 1u << 18);
    }
    traps_remove(&s);
    hv_snprintf(d, sizeof(d), "vec=%d", vec_off);
    result("x2apic-icr-gp-in-xapic-mode", vec_off == 13, 0, d);
    hv_snprintf(d, sizeof(d), "enable=%d vec=%d", vec_on, vec_rsvd);
    result("x2apic-icr-reserved-gp", vec_on == -1 && vec_rsvd == 13, 0, d);
    hv_snprintf(d, sizeof(d), "vec=%d", vec_send);
    result("x2apic-icr-send", vec_send == -1, 0, d);
}

static void on_each_ap(void (*fn)(size_t cpu));

static void post_devirt_check(size_t cpu)
{
    struct cpuid_out l1 = cpuid(1);

    result("devirtualize", (devirt_mask >> cpu) & 1, cpu, NULL);
    result("post-devirt-no-hv-bit", !((l1.c >> 31) & 1), cpu, NULL);
}

static void devirt_all(void)
{
    uint64_t out[2] = {0, 0};
    uint64_t s = gt_hypercall(HC_DEVIRT, 0, 0, out);
    char d[48];

    devirt_mask = s == 0 ? out[0] : 0;
    hv_snprintf(d, sizeof(d), "status=%lld mask=%llx", (long long)s,
                (unsigned long long)out[0]);
    result("devirtualize-call", s == 0, 0, d);
    post_devirt_check(0);
    on_each_ap(post_devirt_check);
}

/* ---- driving every CPU ------------------------------------------------------------ */
struct ap_job { void (*fn)(size_t cpu); size_t cpu; };

static VOID EFIAPI ap_entry(VOID *arg)
{
    struct ap_job *j = arg;

    j->fn(j->cpu);
}

static void on_each_ap(void (*fn)(size_t cpu))
{
    UINTN total = 0, enabled = 0, self = 0;

    if (!mp || EFI_ERROR(mp->GetNumberOfProcessors(mp, &total, &enabled)) ||
        EFI_ERROR(mp->WhoAmI(mp, &self)))
        return;
    for (UINTN i = 0; i < total; i++) {
        struct ap_job job = {fn, i};
        EFI_STATUS s;

        if (i == self)
            continue;
        s = mp->StartupThisAP(mp, ap_entry, i, NULL, AP_TIMEOUT_US, &job, NULL);
        if (EFI_ERROR(s)) {
            char d[48];
            hv_snprintf(d, sizeof(d), "status=%s", efi_status_name(s));
            result("ap-run", false, i, d);
        }
    }
}

static void firmware_checks(void)
{
    EFI_GUID gv = EFI_GLOBAL_VARIABLE;
    UINT8 buf[64];
    UINTN size = sizeof(buf);
    UINT32 attr = 0;
    EFI_STATUS s;

    s = st->BootServices->Stall(1000);
    result("post-devirt-stall", !EFI_ERROR(s), 0, NULL);
    s = st->ConOut->OutputString(st->ConOut, (CHAR16 *)L"guest-test: console still works\r\n");
    result("post-devirt-conout", !EFI_ERROR(s), 0, NULL);
    s = st->RuntimeServices->GetVariable((CHAR16 *)L"BootCurrent", &gv, &attr, &size, buf);
    result("post-devirt-variable", !EFI_ERROR(s), 0, efi_status_name(s));
}

static void end_run(void)
{
    static const char shutdown[] = "Shutdown";

    hv_log("GUEST: summary pass=%d fail=%d\n", n_pass, n_fail);
    for (const char *p = shutdown; *p; p++)      /* Bochs: ends the simulation */
        outb(0x8900, (uint8_t)*p);
    outb(0xF4, 0);                               /* QEMU isa-debug-exit: status 0 */
}

/* Load option "bsp-only": skip the AP phases. */
static bool option_bsp_only(EFI_HANDLE image)
{
    EFI_GUID li_guid = LOADED_IMAGE_PROTOCOL;
    EFI_LOADED_IMAGE *li = NULL;
    const CHAR16 *o, *key = L"bsp-only";

    if (EFI_ERROR(st->BootServices->HandleProtocol(image, &li_guid, (VOID **)&li)) || !li ||
        !li->LoadOptions)
        return false;
    o = li->LoadOptions;
    for (UINT32 i = 0; i + 8 <= li->LoadOptionsSize / 2; i++) {
        UINT32 k = 0;
        while (key[k] && o[i + k] == key[k])
            k++;
        if (!key[k])
            return true;
    }
    return false;
}

EFI_STATUS EFIAPI efi_main(EFI_HANDLE image, EFI_SYSTEM_TABLE *systab)
{
    EFI_GUID mp_guid = HV_EFI_MP_SERVICES_PROTOCOL_GUID;

    st = systab;
    serial_init();
    amd = vendor_is_amd();
    if (option_bsp_only(image) ||
        EFI_ERROR(st->BootServices->LocateProtocol(&mp_guid, NULL, (VOID **)&mp)))
        mp = NULL;
    hv_log("GUEST: start aps=%s vendor=%s\n", mp ? "on" : "off", amd ? "amd" : "intel");
    per_cpu_checks(0);
    on_each_ap(per_cpu_checks);
    check_stats_and_log();
    check_nmi();
    check_bad_magic();
    check_protection();
    check_log_ring();
    bench_cpuid();
    check_x2apic_icr();
    devirt_all();
    result("post-devirt-no-signature", cpuid(0x40000000).b != 0x7263694D, 0, NULL); /* "Micr" */
    firmware_checks();
    end_run();
    return EFI_SUCCESS;
}
