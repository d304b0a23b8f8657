/*
 * fuzz - the differential guest fuzzer.  Runs seeded random operations
 * that a ring-0 guest may legally try - CPUID, RDMSR/WRMSR (writes of
 * read-back values), MOV to CR0/CR3/CR4/CR8 and LMSW, XSETBV, I/O to safe
 * ports (the PM1a block and the UART scratch register, every width and the
 * string forms), stores to xAPIC registers in every encoding, the VMX
 * instructions and VMCALL (on AMD: the SVM instructions besides the VMX
 * ones, VMMCALL besides VMCALL, and AMD's MSRs) - on the BSP and then on
 * each AP, under its own IDT that catches every exception.
 *
 * Each operation's outcome (the vector raised, or the results) is folded
 * into a hash per class.  The same seed under --hv and --no-hv must give
 * the same hashes (tests/test_fuzz.py); the differences the README's guest
 * interface documents (the hypervisor CPUID bits and leaves, the VMX MSRs,
 * hypercalls, ...) are folded in as "documented" instead.
 *
 *   load options: seed=<n> ops=<n> [trace=<first>-<last>] [lax-cr=1]
 *   FUZZ: start seed=<s> ops=<n> hv=<0|1> cpus=<n> pm1a=<port>
 *   FUZZ: class=<c> cpu=<i> ops=<n> faults=<n> documented=<n> hash=<h>
 *   FUZZ: check cpu=<i> at=<k> hash=<h>          every 5000 operations
 *   FUZZ: done cpu=<i> ops=<n> hash=<h>
 *   FUZZ: hv-check <name> PASS|FAIL <detail>     (under the hypervisor only)
 *   FUZZ: summary cpus=<n>
 */
#include "hv.h"
#include "hv_efi.h"
#include "hv_lib.h"

#define HC_MAGIC   0x48564D43u
#define CHECK_EVERY 5000
#define AP_TIMEOUT_US (600ull * 1000 * 1000)

/* ops.S */
extern const uint8_t fz_stubs[32][16];
extern volatile int32_t fz_vec;
extern volatile uint64_t fz_rflags;
extern volatile uint32_t fz_err;
extern const uint32_t fz_store_kinds, fz_vmx_kinds, fz_svm_kinds;
int64_t fz_cpuid(uint32_t leaf, uint32_t sub, uint32_t out[4]);
int64_t fz_cpuid_pfx(unsigned kind, const uint32_t leaf_sub[2], uint32_t out[4]);
extern const uint32_t fz_cpuid_pfx_kinds;
int64_t fz_rdmsr(uint32_t msr, uint64_t *v);
int64_t fz_wrmsr(uint32_t msr, uint64_t v);
int64_t fz_wrcr0(uint64_t v);
int64_t fz_wrcr3(uint64_t v);
int64_t fz_wrcr4(uint64_t v);
int64_t fz_wrcr8(uint64_t v);
int64_t fz_lmsw(uint16_t v);
int64_t fz_xsetbv(uint32_t xcr, uint64_t v);
int64_t fz_xgetbv(uint32_t xcr, uint64_t *v);
int64_t fz_in(uint16_t port, unsigned size, uint32_t *v);
int64_t fz_out(uint16_t port, unsigned size, uint32_t v);
int64_t fz_insb(uint16_t port, void *buf, uint64_t count, uint64_t rep);
int64_t fz_outsb(uint16_t port, const void *buf, uint64_t count, uint64_t rep);
int64_t fz_store(unsigned kind, volatile uint32_t *reg, uint32_t val, uint64_t io[2]);
int64_t fz_vmx(unsigned kind, void *mem);
int64_t fz_svm(unsigned kind, void *mem);
int64_t fz_vmcall(uint64_t io[4]);
int64_t fz_vmmcall(uint64_t io[4]);

enum cls { C_CPUID, C_RDMSR, C_WRMSR, C_CR, C_XSETBV, C_IO, C_APIC, C_VMX, C_VMCALL, C_N };
static const char *cls_name[C_N] = {
    "cpuid", "rdmsr", "wrmsr", "cr", "xsetbv", "io", "apic", "vmx", "vmcall",
};

struct stats { uint64_t ops, faults, documented, hash; };

/* Per run (one CPU at a time: the BSP, then each AP in turn). */
static struct run {
    uint64_t rng, seed, ops, trace_lo, trace_hi, all;
    size_t cpu;
    struct stats s[C_N];
} R;

static EFI_SYSTEM_TABLE *st;
static EFI_MP_SERVICES_PROTOCOL *mp;
static bool under_hv;
static uint16_t pm1a;                          /* PM1a_CNT_BLK, 0: none found */
static bool apic_ok;                           /* xAPIC at 0xFEE00000 */
static uint64_t xcr0_supported;
static bool has_xsave;
static bool amd;                               /* AuthenticAMD: the SVM backend's interface */
static bool qemu;                              /* QEMU's brand string */
static bool lax_cr;                            /* skip the long-mode-leaving CR flips */
static int64_t (*hcall)(uint64_t io[4]);       /* VMCALL, or VMMCALL on AMD */

#pragma pack(push, 1)
struct idtr { uint16_t limit; uint64_t base; };
#pragma pack(pop)
static _Alignas(4096) uint64_t idt[512];       /* 256 gates of 16 bytes */

/* ---- helpers ------------------------------------------------------------------- */
static uint64_t rnd(void)                      /* xorshift64* */
{
    R.rng ^= R.rng >> 12;
    R.rng ^= R.rng << 25;
    R.rng ^= R.rng >> 27;
    return R.rng * 0x2545F4914F6CDD1Dull;
}

static uint64_t pick(uint64_t n) { return rnd() % n; }

static void mix(enum cls c, uint64_t v)        /* FNV-1a over 8 bytes */
{
    for (int i = 0; i < 8; i++) {
        R.s[c].hash ^= (v >> (8 * i)) & 0xFF;
        R.s[c].hash *= 0x100000001B3ull;
    }
}

static uint64_t rflags(void)
{
    uint64_t f;

    __asm__ volatile("pushfq; pop %0" : "=r"(f));
    return f;
}

static uint64_t rdcr(int n)
{
    uint64_t v = 0;

    if (n == 0) __asm__ volatile("mov %%cr0, %0" : "=r"(v));
    if (n == 3) __asm__ volatile("mov %%cr3, %0" : "=r"(v));
    if (n == 4) __asm__ volatile("mov %%cr4, %0" : "=r"(v));
    if (n == 8) __asm__ volatile("mov %%cr8, %0" : "=r"(v));
    return v;
}

static void outcome(enum cls c, int64_t vec, uint64_t a, uint64_t b, bool documented)
{
    R.s[c].ops++;
    if (documented) {
        R.s[c].documented++;
        mix(c, 0xD0C);
    } else {
        R.s[c].faults += vec >= 0;
        /* A fault pushes RFLAGS with RF set (SDM Vol 3A 18.3.1.1), an
         * injected one must too (QEMU TCG never sets it: not compared
         * there); the error code is the CPU's as well. */
        mix(c, vec >= 0 ? (uint64_t)vec | ((fz_rflags >> 16) & !qemu) << 8 |
                          (uint64_t)(uint32_t)fz_err << 32 : (uint64_t)vec);
        mix(c, a);
        mix(c, b);
    }
    if (R.all >= R.trace_lo && R.all <= R.trace_hi)
        hv_log("FUZZ: op cpu=%zu n=%llu %s vec=%lld a=%llx b=%llx%s\n", R.cpu,
               (unsigned long long)R.all, cls_name[c], (long long)vec, (unsigned long long)a,
               (unsigned long long)b, documented ? " documented" : "");
}

/* ---- CPUID ------------------------------------------------------------------------ */
/* The bits the README documents as the hypervisor's (guest interface: CPUID). */
static void cpuid_canon(uint32_t leaf, uint32_t sub, uint32_t r[4], bool *doc)
{
    if ((leaf >> 28) == 4 || leaf == 0x14) {
        *doc = true;                           /* hypervisor leaves; PT is hidden */
        return;
    }
    if (leaf == 1)
        r[2] &= ~((1u << 5) | (1u << 31));     /* VMX, hypervisor present */
    if (leaf == 7 && sub == 0) {
        r[1] &= ~((1u << 25) | (1u << 10));    /* PT; INVPCID (control-gated) */
        r[2] &= ~(1u << 5);                    /* WAITPKG (control-gated) */
    }
    if (leaf == 0xD && sub == 1) {
        r[0] &= ~(1u << 3);                    /* XSAVES (control-gated) */
        r[2] &= ~(1u << 8);                    /* XSS PT state */
    }
    if (leaf == 0x80000001) {
        r[3] &= ~(1u << 27);                   /* RDTSCP (control-gated) */
        r[2] &= ~(1u << 2);                    /* SVM */
    }
    if (amd && leaf == 0x8000000A)
        *doc = true;                           /* SVM features: zeros (no nested SVM) */
}

static void op_cpuid(void)
{
    static const uint32_t bases[] = {0, 0x80000000u, 0x40000000u};
    uint32_t leaf, sub = (uint32_t)pick(4), r[4];
    bool doc = false;
    int64_t v;

    switch (pick(8)) {
    case 0: leaf = (uint32_t)rnd(); break;
    case 1: leaf = bases[pick(3)] + (uint32_t)pick(0x30); sub = (uint32_t)rnd(); break;
    default: leaf = bases[pick(2)] + (uint32_t)pick(0x24); break;
    }
    if (pick(4) == 0)                          /* with redundant prefixes */
        v = fz_cpuid_pfx((unsigned)pick(fz_cpuid_pfx_kinds), (uint32_t[2]){leaf, sub}, r);
    else
        v = fz_cpuid(leaf, sub, r);
    cpuid_canon(leaf, sub, r, &doc);
    outcome(C_CPUID, v, ((uint64_t)r[0] << 32) | r[1], ((uint64_t)r[2] << 32) | r[3], doc);
}

/* ---- MSRs ------------------------------------------------------------------------- */
static const uint32_t msrs[] = {
    0x10, 0x17, 0x1B, 0x3A, 0x8B, 0x9B, 0xC1, 0xC2, 0xE7, 0xE8, 0xFE, 0x174, 0x175, 0x176,
    0x179, 0x17A, 0x186, 0x187, 0x198, 0x199, 0x1A0, 0x1D9, 0x200, 0x201, 0x202, 0x203,
    0x20E, 0x20F, 0x250, 0x258, 0x259, 0x268, 0x26F, 0x277, 0x2FF, 0x345, 0x38D, 0x38F,
    0x480, 0x481, 0x482, 0x485, 0x48B, 0x48C, 0x491, 0x492, 0x560, 0x561, 0x570, 0x571,
    0x572, 0x580, 0x581, 0x600, 0x6E0, 0x802, 0x808, 0x80F, 0x830, 0x838, 0xDA0,
    0xC0000080, 0xC0000081, 0xC0000082, 0xC0000083, 0xC0000084, 0xC0000103,
    0xC0010010, 0xC0010114, 0xC0010117, 0x40000000, 0x4B564D00,
};
/* AMD's: HWCR, SYSCFG, the IORRs, TOP_MEM/TOP_MEM2, SMM_BASE/ADDR/MASK,
 * VM_CR, IGNNE, VM_HSAVE_PA, SVM_KEY, OSVW, the SYSCALL and FS/GS MSRs,
 * performance counters (APM Vol 2 Appendix A). */
static const uint32_t amd_msrs[] = {
    0xC0010015, 0xC0010010, 0xC0010016, 0xC0010017, 0xC0010018, 0xC0010019, 0xC001001A,
    0xC001001D, 0xC0010111, 0xC0010112, 0xC0010113, 0xC0010114, 0xC0010115, 0xC0010117,
    0xC0010118, 0xC0010140, 0xC0010141, 0xC0010000, 0xC0010004, 0xC0000080, 0xC0000081,
    0xC0000082, 0xC0000083, 0xC0000084, 0xC0000100, 0xC0000102, 0xC0000103, 0xC001100C,
    0x1B, 0x3A, 0x480, 0x277, 0x2FF, 0x830,
};

/* Whose value is the same run after run (others tick or hold addresses). */
static bool msr_stable(uint32_t m)
{
    return m == 0x17 || m == 0x1B || m == 0xFE || m == 0x174 || m == 0x1A0 || m == 0x1D9 ||
           (m >= 0x200 && m <= 0x20F) || m == 0x250 || m == 0x258 || m == 0x259 ||
           (m >= 0x268 && m <= 0x26F) || m == 0x277 || m == 0x2FF || m == 0xC0000080 ||
           m == 0xC0000081 || m == 0xC0000084 || m == 0x345;
}

/* README guest interface (the MSR policy table): IA32_FEATURE_CONTROL and
 * the VMX capability MSRs are the hypervisor's, Intel PT's MSRs are #GP (PT
 * is hidden), BIOS_UPDT_TRIG writes are ignored, SMM_MONITOR_CTL writes
 * refused. */
static bool msr_documented(uint32_t m, bool write)
{
    /* AMD rows: VM_CR reads locked with SVM disabled and VM_HSAVE_PA is #GP
     * (no nested SVM); writes to IORRs, TOP_MEM, TOP_MEM2, SMM_ADDR/MASK
     * are #GP (physical address decoding); the VMX MSRs are #GP, as on a
     * CPU without VMX - QEMU TCG reads MSRs it lacks as 0 and ignores their
     * writes; it and Bochs ryzen take x2APIC ICR writes with x2APIC off,
     * where hardware (and the hypervisor's policy) raises #GP. */
    if (amd)
        return m == 0xC0010114 || m == 0xC0010117 || (m >= 0x480 && m <= 0x493) ||
               (write && ((m >= 0xC0010016 && m <= 0xC001001A) || m == 0xC001001D ||
                          m == 0xC0010112 || m == 0xC0010113 || m == 0x830));
    return m == 0x3A || (m >= 0x480 && m <= 0x493) || m == 0x560 || m == 0x561 ||
           (m >= 0x570 && m <= 0x572) || (m >= 0x580 && m <= 0x58F) ||
           (write && (m == 0x79 || m == 0x9B));
}

static uint32_t msr_pick(void)
{
    switch (pick(6)) {
    case 0: return (uint32_t)pick(0x2000);
    case 1: return (amd && pick(2) ? 0xC0010000u : 0xC0000000u) | (uint32_t)pick(0x2000);
    case 2: return (uint32_t)rnd();
    case 3: if (amd) return amd_msrs[pick(sizeof(amd_msrs) / sizeof(amd_msrs[0]))];
    /* fall through */
    default: return msrs[pick(sizeof(msrs) / sizeof(msrs[0]))];
    }
}

static void op_msr(bool write)
{
    uint32_t m = msr_pick();
    uint64_t v = 0;
    int64_t r = fz_rdmsr(m, &v);

    if (!write)
        return outcome(C_RDMSR, r, m, msr_stable(m) ? v : 0, msr_documented(m, false));
    if (r >= 0)                                /* nothing read: nothing to write back */
        return outcome(C_WRMSR, -2, m, 0, msr_documented(m, true));
    r = fz_wrmsr(m, v);
    outcome(C_WRMSR, r, m, 0, msr_documented(m, true));
}

/* ---- control registers --------------------------------------------------------------- */
/* QEMU 7.2 TCG lacks the #GP(0) checks for leaving long mode by MOV CR0
 * (PE or PG cleared) or MOV CR4 (PAE cleared) and leaves it, and hangs on
 * some reserved CR4 bits (SMXE on AMD); Bochs 2.7 has them, but not in an
 * SVM guest, where clearing PE panics it ("change_cpu_mode: EFER.LMA is set
 * when CR0.PE=0").  The fuzzer would die there (the hypervisor intercepts
 * no CR write on AMD), so with lax_cr those flips are skipped: on QEMU
 * (found by its brand string) and with the load option lax-cr=1 (fuzzdiff
 * passes it for AMD runs, native and virtualized alike). */
#define LAX_CR0_BAD (1ull | 1ull << 31 | 1ull << 32)
#define LAX_CR4_BAD (1ull << 5 | 1ull << 12 | 1ull << 13 | 1ull << 14 | 1ull << 26 | \
                      1ull << 31 | 1ull << 40)
static void op_cr(void)
{
    /* Flips: legal ones (NE, WP, AM, MP, CD, CD|NW) and illegal ones (PE in
     * long mode, PG, NW alone, bit 32, NE together with PE - the issue's
     * example of a write the hypervisor used to accept). */
    static const uint64_t cr0_flip[] = {1u << 5, 1u << 16, 1u << 18, 1u << 1, 1u << 30,
                                        (1u << 30) | (1u << 29), 1u << 0, 1ull << 31,
                                        1u << 29, 1ull << 32, (1u << 5) | 1u,
                                        (1u << 5) | (1ull << 31), 1u << 3};
    /* CR4: legal (PGE, DE, TSD, PCE, OSXSAVE, UMIP, FSGSBASE, PCIDE,
     * OSXMMEXCPT) and illegal (PAE, LA57 in long mode, VMXE - documented,
     * reserved bits). */
    static const uint64_t cr4_flip[] = {1u << 7, 1u << 3, 1u << 2, 1u << 8, 1u << 18,
                                        1u << 11, 1u << 16, 1u << 17, 1u << 10, 1u << 5,
                                        1u << 12, 1u << 13, 1u << 14, 1u << 26, 1u << 31,
                                        1ull << 40, (1u << 13) | (1u << 7)};
    unsigned which = (unsigned)pick(6);
    uint64_t old, now, flip = 0;
    int64_t v;
    bool doc = false;
    bool traced = R.all >= R.trace_lo && R.all <= R.trace_hi;

    switch (which) {
    case 0: case 1:
        old = rdcr(0);
        flip = cr0_flip[pick(sizeof(cr0_flip) / 8)];
        if (traced)
            hv_log("FUZZ: begin cr0 flip=%llx\n", (unsigned long long)flip);
        if (lax_cr && (flip & LAX_CR0_BAD)) {
            v = -4;                            /* lax_cr (above) */
            now = old;
            break;
        }
        v = fz_wrcr0(old ^ flip);
        now = rdcr(0);
        fz_wrcr0(old);
        break;
    case 2: case 3:
        old = rdcr(4);
        flip = cr4_flip[pick(sizeof(cr4_flip) / 8)];
        if (traced)
            hv_log("FUZZ: begin cr4 flip=%llx\n", (unsigned long long)flip);
        doc = !amd && (flip & (1u << 13)) && !(old & (1u << 13));  /* VMXE: no nested VMX */
        if (lax_cr && (flip & LAX_CR4_BAD)) {
            v = -4;                            /* lax_cr (above) */
            now = old;
            break;
        }
        v = fz_wrcr4(old ^ flip);
        now = rdcr(4);
        fz_wrcr4(old);
        break;
    case 4:
        old = rdcr(8);
        flip = pick(16);
        v = fz_wrcr8(flip);
        now = rdcr(8);
        fz_wrcr8(old);
        if (pick(2)) {
            uint64_t cr3 = rdcr(3);
            v |= fz_wrcr3(cr3) << 8;
        }
        break;
    default:                                   /* LMSW: bits 3:0, PE sticky */
        old = rdcr(0);
        flip = pick(16);
        v = fz_lmsw((uint16_t)((old & ~0xFull) | flip));
        now = rdcr(0);
        fz_wrcr0(old);
        break;
    }
    outcome(C_CR, v, ((uint64_t)which << 56) ^ flip, now ^ old, doc);
}

/* ---- XSETBV -------------------------------------------------------------------------- */
static void op_xsetbv(void)
{
    uint64_t old = 0, now = 0, val;
    uint32_t xcr = pick(8) ? 0 : (uint32_t)pick(3);
    int64_t v;

    uint64_t cr4 = rdcr(4);

    if (!has_xsave || (!(cr4 & (1u << 18)) && pick(4) == 0)) {
        v = fz_xsetbv(0, 3);                   /* #UD with CR4.OSXSAVE clear */
        return outcome(C_XSETBV, v, 0, 0, false);
    }
    if (!(cr4 & (1u << 18)))
        fz_wrcr4(cr4 | (1u << 18));            /* OSXSAVE on for the operation */
    fz_xgetbv(0, &old);
    switch (pick(4)) {
    case 0: val = old; break;
    case 1: val = (old & ~0x7ull) | pick(8); break;                 /* x87/SSE/AVX combos */
    case 2: val = (xcr0_supported & rnd()) | (pick(2) ? 1 : 0); break;
    default: val = old ^ (1ull << pick(64)); break;
    }
    v = fz_xsetbv(xcr, val);
    fz_xgetbv(0, &now);
    fz_xsetbv(0, old);
    fz_wrcr4(cr4);
    outcome(C_XSETBV, v, ((uint64_t)xcr << 60) ^ val, now, false);
}

/* ---- I/O ---------------------------------------------------------------------------------
 * Safe ports: the UART scratch register (0x3FF), POST (0x80), and the
 * PM1 block around PM1a_CNT (PIIX4: PM1 enable below it, reserved above):
 * reads there are stable and writes put back the value just read, SLP_EN
 * cleared.  Any width, overlapping the trapped port, string forms. */
/* SLP_EN (PM1a_CNT bit 13) within an access of size bytes at port: never
 * written back, it would end the run.  PIIX4 (Bochs) reads it as 0, but
 * QEMU's ICH9 PM block can read it set. */
static uint32_t slp_en(uint16_t port, unsigned size)
{
    unsigned hi = pm1a + 1u;

    return hi >= port && hi < port + size ? 0x20u << (8 * (hi - port)) : 0;
}

static void op_io(void)
{
    static const unsigned sizes[] = {1, 2, 4};
    unsigned size = sizes[pick(3)], kind = (unsigned)pick(6);
    uint32_t v = 0, back = 0;
    uint8_t buf[4] = {0};
    int64_t r, r2 = -1;
    uint16_t port;

    if (!pm1a || kind == 0) {                  /* scratch register: write, read back */
        v = (uint32_t)pick(256);
        r = fz_out(0x3FF, 1, v);
        r2 = fz_in(0x3FF, 1, &back);
        return outcome(C_IO, r | (r2 << 8), v, back, false);
    }
    if (kind == 1) {
        r = fz_out(0x80, 1, (uint32_t)pick(256));
        return outcome(C_IO, r, 0x80, 0, false);
    }
    /* pm1a-2 .. pm1a+3, every byte of the access inside it. */
    port = (uint16_t)(pm1a - 2 + pick(7 - size));
    if (kind <= 3) {
        r = fz_in(port, size, &v);
        if (kind == 3 && r < 0)
            r2 = fz_out(port, size, v & ~slp_en(port, size));
        return outcome(C_IO, r | (r2 << 8), ((uint64_t)port << 8) | size, v, false);
    }
    /* String forms: INSB/REP INSB into a buffer, then OUTSB/REP OUTSB of
     * what was read back to the same port. */
    port = (uint16_t)(pm1a + pick(2));
    {
        uint64_t n = 1 + pick(4), rep = kind == 5 || n > 1;

        r = fz_insb(port, buf, rep ? n : 1, rep);
        buf[0] &= (uint8_t)~slp_en(port, 1);
        if (pick(2))
            r2 = fz_outsb(port, buf, 1, pick(2));
        return outcome(C_IO, r | (r2 << 8), ((uint64_t)port << 8) | n,
                       buf[0] | (uint32_t)buf[1] << 8 | (uint32_t)buf[2] << 16 |
                       (uint32_t)buf[3] << 24, false);
    }
}

/* ---- xAPIC stores ----------------------------------------------------------------------- */
#define APIC 0xFEE00000ull
static void op_apic(void)
{
    static const uint32_t regs[] = {0x80, 0xD0, 0x310};    /* TPR, LDR, ICR high */
    unsigned kind = (unsigned)pick(fz_store_kinds);
    uint32_t off = regs[pick(3)], val = (uint32_t)rnd(), old, now;
    volatile uint32_t *reg;
    uint64_t io[2];
    int64_t v;

    if (!apic_ok)
        return outcome(C_APIC, -3, 0, 0, false);
    if (kind == 3)                              /* moffs: TPR by absolute address */
        off = 0x80;
    if (kind == 15 || kind == 16)               /* STOS: TPR only */
        off = 0x80;
    if (off == 0x80)
        val &= 0xFF;
    reg = (volatile uint32_t *)(uintptr_t)(APIC + off);
    old = *reg;
    io[0] = (rflags() & ~0x8D5ull) | (rnd() & 0x8D5ull);
    io[1] = 0;
    v = fz_store(kind, reg, val, io);
    now = *reg;
    *reg = old;
    outcome(C_APIC, v, ((uint64_t)kind << 32) | off,
            ((uint64_t)now << 32) ^ (io[0] & 0x8D5) ^ (io[1] << 12), false);
}

/* ---- VMX (SVM) instructions and VMCALL ---------------------------------------------------- */
static void op_vmx(void)
{
    static _Alignas(4096) uint8_t region[4096];
    unsigned kind;
    uint64_t efer = 0;
    int64_t v;

    /* AMD: the SVM instructions half the time (natively EFER.SVME is 0, so
     * #UD; a CPU whose SVME someone set would really run them: not tried),
     * else the VMX ones, #UD on AMD. */
    if (amd && pick(2)) {
        kind = (unsigned)pick(fz_svm_kinds);
        if (fz_rdmsr(0xC0000080, &efer) >= 0 || (efer & (1u << 12)))
            return outcome(C_VMX, -3, 0x100 | kind, 0, false);
        v = fz_svm(kind, region);
        return outcome(C_VMX, v, 0x100 | kind, 0, false);
    }
    kind = (unsigned)pick(fz_vmx_kinds);
    v = fz_vmx(kind, region);
    outcome(C_VMX, v, kind, 0, false);
}

static void op_vmcall(void)
{
    uint64_t io[4] = {pick(8), rnd(), 0, 0};
    int64_t v;
    bool doc;

    if (pick(4) == 0)
        io[1] = (rnd() << 32) | HC_MAGIC;      /* ECX right, RCX wrong: #UD */
    if (pick(16) == 0)
        io[1] = HC_MAGIC;                      /* a real hypercall: documented */
    doc = io[1] == HC_MAGIC;
    if (doc && (io[0] == 1 || io[0] == 2 || io[0] == 4))
        io[0] = 3;          /* no stats/log lines, never devirtualize mid-run */
    if (amd && pick(4) == 0) {                 /* VMCALL on AMD: #UD, hypervisor or not */
        v = fz_vmcall(io);
        return outcome(C_VMCALL, v, io[0] | 1ull << 32, 0, false);
    }
    v = hcall(io);
    outcome(C_VMCALL, v, io[0], 0, doc);
}

/* ---- one CPU's run ------------------------------------------------------------------------ */
static void run_ops(size_t cpu)
{
    struct idtr mine = {sizeof(idt) - 1, (uint64_t)(uintptr_t)idt}, theirs;
    uint64_t total = 0, fl = rflags();

    __asm__ volatile("sidt %0" : "=m"(theirs));
    memset(R.s, 0, sizeof(R.s));
    for (int c = 0; c < C_N; c++)
        R.s[c].hash = 0xCBF29CE484222325ull;
    R.rng = R.seed * 0x9E3779B97F4A7C15ull + cpu + 1;
    R.cpu = cpu;
    __asm__ volatile("cli; lidt %0" : : "m"(mine) : "memory");
    for (R.all = 0; R.all < R.ops; R.all++) {
        unsigned op = (unsigned)pick(10);

        if (R.all >= R.trace_lo && R.all <= R.trace_hi)   /* names one that never ends */
            hv_log("FUZZ: begin cpu=%zu n=%llu op=%u\n", cpu, (unsigned long long)R.all, op);
        switch (op) {
        case 0: op_cpuid(); break;
        case 1: op_msr(false); break;
        case 2: op_msr(true); break;
        case 3: op_cr(); break;
        case 4: op_xsetbv(); break;
        case 5: op_io(); break;
        case 6: case 7: op_apic(); break;
        case 8: op_vmx(); break;
        default: op_vmcall(); break;
        }
        if ((R.all + 1) % CHECK_EVERY == 0) {
            uint64_t h = 0;

            for (int c = 0; c < C_N; c++)
                h ^= R.s[c].hash * (uint64_t)(c + 1);
            hv_log("FUZZ: check cpu=%zu at=%llu hash=%016llx\n", cpu,
                   (unsigned long long)(R.all + 1), (unsigned long long)h);
        }
    }
    __asm__ volatile("lidt %0" : : "m"(theirs) : "memory");
    if (fl & (1u << 9))
        __asm__ volatile("sti");
    for (int c = 0; c < C_N; c++) {
        hv_log("FUZZ: class=%s cpu=%zu ops=%llu faults=%llu documented=%llu hash=%016llx\n",
               cls_name[c], cpu, (unsigned long long)R.s[c].ops,
               (unsigned long long)R.s[c].faults, (unsigned long long)R.s[c].documented,
               (unsigned long long)R.s[c].hash);
        total += R.s[c].ops;
    }
    hv_log("FUZZ: done cpu=%zu ops=%llu\n", cpu, (unsigned long long)total);
}

/* ---- set-up -------------------------------------------------------------------------------- */
static void idt_build(void)
{
    struct idtr cur;
    uint16_t cs;

    __asm__ volatile("sidt %0; mov %%cs, %1" : "=m"(cur), "=r"(cs));
    memcpy(idt, (const void *)(uintptr_t)cur.base,
           cur.limit + 1u < sizeof(idt) ? cur.limit + 1u : sizeof(idt));
    for (unsigned v = 0; v < 32; v++) {
        uint64_t a = (uint64_t)(uintptr_t)fz_stubs[v];

        if (v == 2)
            continue;                          /* NMIs stay the firmware's */
        idt[2 * v] = (a & 0xFFFF) | ((uint64_t)cs << 16) | (0x8Eull << 40) |
                     (((a >> 16) & 0xFFFF) << 48);
        idt[2 * v + 1] = a >> 32;
    }
}

/* PM1a_CNT_BLK from the FADT (ACPI 6.5 5.2.9) via the EFI configuration table. */
static uint16_t find_pm1a(void)
{
    static const EFI_GUID acpi20 = {0x8868e871, 0xe4f1, 0x11d3,
                                    {0xbc, 0x22, 0x00, 0x80, 0xc7, 0x3c, 0x88, 0x81}};
    const uint8_t *rsdp = NULL, *xsdt;

    for (UINTN i = 0; i < st->NumberOfTableEntries; i++)
        if (!memcmp(&st->ConfigurationTable[i].VendorGuid, &acpi20, sizeof(acpi20)))
            rsdp = st->ConfigurationTable[i].VendorTable;
    if (!rsdp || memcmp(rsdp, "RSD PTR ", 8) || rsdp[15] < 2)
        return 0;
    xsdt = (const uint8_t *)(uintptr_t)*(const uint64_t *)(rsdp + 24);
    for (uint32_t off = 36; xsdt && off + 8 <= *(const uint32_t *)(xsdt + 4); off += 8) {
        const uint8_t *t = (const uint8_t *)(uintptr_t)*(const uint64_t *)(xsdt + off);

        if (t && !memcmp(t, "FACP", 4))
            return (uint16_t)*(const uint32_t *)(t + 64);
    }
    return 0;
}

static uint64_t opt_num(EFI_HANDLE image, const char *key, uint64_t def, uint64_t *second)
{
    EFI_GUID li_guid = EFI_LOADED_IMAGE_PROTOCOL_GUID;
    EFI_LOADED_IMAGE *li = NULL;
    const CHAR16 *o;
    size_t n, k = strlen(key);

    if (EFI_ERROR(st->BootServices->HandleProtocol(image, &li_guid, (VOID **)&li)) || !li ||
        !li->LoadOptions)
        return def;
    o = li->LoadOptions;
    n = li->LoadOptionsSize / 2;
    for (size_t i = 0; i + k < n; i++) {
        size_t j = 0;
        uint64_t v = 0;

        while (j < k && o[i + j] == (CHAR16)key[j])
            j++;
        if (j < k || (i && o[i - 1] != ' ') || o[i + k] != '=')
            continue;
        for (i += k + 1; i < n && o[i] >= '0' && o[i] <= '9'; i++)
            v = v * 10 + (o[i] - '0');
        if (second && i < n && o[i] == '-') {
            *second = 0;
            for (i++; i < n && o[i] >= '0' && o[i] <= '9'; i++)
                *second = *second * 10 + (o[i] - '0');
        }
        return v;
    }
    return def;
}

/* AMD MSRs whose writes the policy refuses (README guest interface). */
static const struct { const char *name; uint32_t msr; } amd_gp[] = {
    {"msr-top-mem-write-gp", 0xC001001A}, {"msr-iorr-write-gp", 0xC0010016},
    {"msr-smm-addr-write-gp", 0xC0010112}, {"msr-vm-cr-write-gp", 0xC0010114},
};

/* Under the hypervisor: hypercall buffers must be ordinary guest RAM. */
static void hv_checks(void)
{
    static char text[] = "fuzz";
    uint64_t io[4] = {3, HC_MAGIC, 0, 0}, pool;
    const struct { const char *name; uint64_t gpa; } bad[] = {
        {"hc-log-apic-page", APIC}, {"hc-log-ioapic-mmio", 0xFEC00000ull},
        {"hc-log-flash", 0xFFE00000ull}, {"hc-log-pool", 0},
    };

    hcall(io);                                 /* HC_INFO: a pool page */
    pool = io[2];
    for (unsigned i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
        uint64_t c[4] = {2, HC_MAGIC, bad[i].gpa ? bad[i].gpa : pool, 4};
        int64_t v = hcall(c);

        hv_log("FUZZ: hv-check %s %s vec=%lld status=%lld\n", bad[i].name,
               v < 0 && (int64_t)c[0] == -2 ? "PASS" : "FAIL", (long long)v, (long long)c[0]);
    }
    {
        uint64_t c[4] = {2, HC_MAGIC, (uint64_t)(uintptr_t)text, 4};
        int64_t v = hcall(c);

        hv_log("FUZZ: hv-check hc-log-ram %s status=%lld\n",
               v < 0 && c[0] == 0 ? "PASS" : "FAIL", (long long)c[0]);
    }
    /* AMD: the MSR policy's rows exit (svm.c builds the MSRPM from the
     * table), so a write of the value read back is #GP where the policy
     * says so, even where the CPU would take it. */
    for (unsigned i = 0; amd && i < sizeof(amd_gp) / sizeof(amd_gp[0]); i++) {
        struct idtr mine = {sizeof(idt) - 1, (uint64_t)(uintptr_t)idt}, theirs;
        uint64_t v = 0, fl = rflags();
        int64_t w;

        __asm__ volatile("sidt %0; cli; lidt %1" : "=m"(theirs) : "m"(mine) : "memory");
        w = fz_rdmsr(amd_gp[i].msr, &v) < 0 ? fz_wrmsr(amd_gp[i].msr, v) : -2;
        __asm__ volatile("lidt %0" : : "m"(theirs) : "memory");
        if (fl & (1u << 9))
            __asm__ volatile("sti");
        hv_log("FUZZ: hv-check %s %s vec=%lld\n", amd_gp[i].name,
               w == 13 ? "PASS" : w == -2 ? "SKIP unreadable" : "FAIL", (long long)w);
    }
}

static VOID EFIAPI ap_entry(VOID *arg)
{
    run_ops((size_t)(uintptr_t)arg);
}

EFI_STATUS EFIAPI efi_main(EFI_HANDLE image, EFI_SYSTEM_TABLE *systab)
{
    EFI_GUID mp_guid = HV_EFI_MP_SERVICES_PROTOCOL_GUID;
    UINTN total = 1, enabled = 1, self = 0;
    uint32_t r[4];
    uint64_t base = 0;

    st = systab;
    serial_init();
    st->BootServices->SetWatchdogTimer(0, 0, 0, NULL);
    R.seed = opt_num(image, "seed", 1, NULL);
    R.ops = opt_num(image, "ops", 20000, NULL);
    R.trace_lo = opt_num(image, "trace", ~0ull, &R.trace_hi);
    fz_cpuid(0, 0, r);
    amd = r[1] == 0x68747541 && r[3] == 0x69746E65 && r[2] == 0x444D4163;  /* AuthenticAMD */
    hcall = amd ? fz_vmmcall : fz_vmcall;
    if (amd)
        cls_name[C_VMX] = "svm";
    {
        char brand[49] = {0};

        for (uint32_t i = 0; i < 3; i++)
            fz_cpuid(0x80000002 + i, 0, (uint32_t *)(brand + 16 * i));
        for (int i = 0; i + 4 <= 48; i++)
            qemu |= !memcmp(brand + i, "QEMU", 4);
    }
    lax_cr = qemu || opt_num(image, "lax-cr", 0, NULL);
    fz_cpuid(1, 0, r);
    under_hv = (r[2] >> 31) & 1;
    has_xsave = (r[2] >> 26) & 1;
    if (has_xsave) {
        fz_cpuid(0xD, 0, r);
        xcr0_supported = ((uint64_t)r[3] << 32) | r[0];
    }
    pm1a = find_pm1a();
    apic_ok = fz_rdmsr(0x1B, &base) < 0 && (base & 0xFFFFFF000ull) == APIC &&
              !(base & (1u << 10)) && (base & (1u << 11));
    if (EFI_ERROR(st->BootServices->LocateProtocol(&mp_guid, NULL, (VOID **)&mp)) ||
        EFI_ERROR(mp->GetNumberOfProcessors(mp, &total, &enabled)) ||
        EFI_ERROR(mp->WhoAmI(mp, &self)))
        mp = NULL;
    idt_build();
    hv_log("FUZZ: start seed=%llu ops=%llu hv=%d cpus=%llu pm1a=%x apic=%d vendor=%s qemu=%d lax-cr=%d\n",
           (unsigned long long)R.seed, (unsigned long long)R.ops, under_hv,
           (unsigned long long)enabled, pm1a, apic_ok, amd ? "amd" : "intel", qemu, lax_cr);
    if (under_hv)
        hv_checks();
    run_ops(0);
    for (UINTN i = 0, n = 1; mp && i < total; i++) {
        EFI_STATUS s;

        if (i == self)
            continue;
        s = mp->StartupThisAP(mp, ap_entry, i, NULL, AP_TIMEOUT_US, (VOID *)(uintptr_t)n++,
                              NULL);
        if (EFI_ERROR(s))
            hv_log("FUZZ: ap-failed proc=%llu status=%s\n", (unsigned long long)i,
                   efi_status_name(s));
    }
    hv_log("FUZZ: summary cpus=%llu\n", (unsigned long long)enabled);
    for (const char *p = "Shutdown"; *p; p++)  /* Bochs: ends the simulation */
        outb(0x8900, (uint8_t)*p);
    outb(0xF4, 0);                             /* QEMU isa-debug-exit */
    return EFI_SUCCESS;
}
