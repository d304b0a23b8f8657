/*
 * hvcheck.c - in-guest checks for the Linux test guest (static, userspace).
 *
 * Run by the initramfs /init (pytool/linux.py).  On every online CPU, pinned
 * there with sched_setaffinity, it checks what a guest of our hypervisor
 * should see, one line per check and CPU:
 *
 *   GUEST-LINUX: <check> cpu=<i> PASS|FAIL <detail>
 *   GUEST-LINUX: summary pass=<n> fail=<m>
 *
 * and exits with the number of failures (capped at 100).
 *
 *   hv-present           CPUID.1:ECX[31], the hypervisor-present bit
 *   hv-signature         CPUID 0x40000000 EBX,ECX,EDX == HV_SIGNATURE
 *   vmx-hidden           CPUID.1:ECX[5] (VMX) is clear: no nested VMX offered
 *   vmcall-ring3-sigill  VMCALL at CPL 3 raises #UD, i.e. SIGILL (SDM Vol. 3C
 *                        25.1.3/31.3: VMCALL in VMX non-root always exits, and
 *                        the hypervisor must reflect #UD to ring 3)
 *   msr-gp-reflected     RDMSR of IA32_VMX_BASIC through the kernel's msr
 *                        driver: with VMX hidden it must #GP as on a CPU
 *                        without VMX.  The hypervisor intercepts it and
 *                        reflects #GP; Linux's rdmsr_safe turns that into EIO
 *                        and the kernel carries on.  (An unknown MSR would not
 *                        do: Bochs reads those as 0 with ignore_bad_msrs.)
 *   feature-control      IA32_FEATURE_CONTROL reads locked with VMX off
 *   (both MSR checks are informational in baseline mode: a bare CPU or an
 *   emulator decides what they read)
 *
 * On AMD (CPUID vendor AuthenticAMD) the VMX checks become their SVM twins:
 *
 *   svm-hidden           CPUID 8000_0001 ECX[2] clear and leaf 8000_000A zeros
 *   vmmcall-ring3-sigill VMMCALL at CPL 3 raises #UD (the hypervisor reflects it)
 *   msr-gp-reflected     RDMSR of VM_HSAVE_PA (0xC0010117): #GP, as on a CPU
 *                        whose firmware disabled SVM -> EIO
 *   efer-svme-hidden     EFER (0xC0000080) reads with SVME (bit 12) clear
 *
 * Modes: "hv" (default) expects our hypervisor underneath.  With
 * `hvcheck=baseline` on the kernel command line (the --no-hv run), it expects
 * no hypervisor: hv-present clear and no signature; vmx-hidden is then
 * informational only (a bare CPU may well offer VMX).
 *
 * For host tests: HVCHECK_CMDLINE names a file read instead of /proc/cmdline;
 * HVCHECK_FAKE_ECX1 (a number), HVCHECK_FAKE_SIG (up to 12 characters),
 * HVCHECK_FAKE_VENDOR ("amd" or "intel") and HVCHECK_FAKE_ECX81 (a number:
 * CPUID 8000_0001 ECX, leaf 8000_000A then reads as zeros) replace what
 * CPUID returns.
 */
#define _GNU_SOURCE
#include <cpuid.h>
#include <errno.h>
#include <fcntl.h>
#include <sched.h>
#include <setjmp.h>
#include <signal.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#ifndef HV_SIGNATURE
#error "build with -DHV_SIGNATURE='\"...\"' (pytool reads it from efi/core/hv_core.h)"
#endif

#define ECX1_VMX        (1u << 5)
#define ECX1_HV         (1u << 31)
#define HV_LEAF_BASE    0x40000000u
#define MAX_FAIL_RC     100
#define MSR_FEATURE_CONTROL 0x3Au
#define FC_LOCK         (1u << 0)
#define FC_VMX_OUTSIDE_SMX (1u << 2)
#define MSR_VMX_BASIC   0x480u
#define ECX81_SVM       (1u << 2)
#define MSR_EFER        0xC0000080u
#define EFER_SVME       (1u << 12)
#define MSR_VM_HSAVE_PA 0xC0010117u

static int baseline, amd;
static unsigned pass, fail;

static void report(const char *check, int cpu, int ok, const char *fmt, ...)
    __attribute__((format(printf, 4, 5)));

static void report(const char *check, int cpu, int ok, const char *fmt, ...)
{
    va_list ap;

    printf("GUEST-LINUX: %s cpu=%d %s ", check, cpu, ok ? "PASS" : "FAIL");
    va_start(ap, fmt);
    vprintf(fmt, ap);
    va_end(ap);
    putchar('\n');
    fflush(stdout);
    if (ok)
        pass++;
    else
        fail++;
}

/* ---- CPUID, or the test override --------------------------------------- */
static uint32_t cpuid_ecx1(void)
{
    const char *fake = getenv("HVCHECK_FAKE_ECX1");
    unsigned a, b, c, d;

    if (fake)
        return (uint32_t)strtoul(fake, NULL, 0);
    __cpuid(1, a, b, c, d);
    return c;
}

/* The 12 signature bytes and the leaf's EAX (highest hypervisor leaf). */
static uint32_t cpuid_hv_sig(char sig[12])
{
    const char *fake = getenv("HVCHECK_FAKE_SIG");
    unsigned a, b, c, d;

    if (fake) {
        memset(sig, 0, 12);
        memcpy(sig, fake, strnlen(fake, 12));
        return HV_LEAF_BASE + 1;
    }
    __cpuid(HV_LEAF_BASE, a, b, c, d);
    memcpy(sig, &b, 4);
    memcpy(sig + 4, &c, 4);
    memcpy(sig + 8, &d, 4);
    return a;
}

static int vendor_amd(void)
{
    const char *fake = getenv("HVCHECK_FAKE_VENDOR");
    unsigned a, b, c, d;

    if (fake)
        return !strcmp(fake, "amd");
    __cpuid(0, a, b, c, d);
    return b == 0x68747541 && d == 0x69746E65 && c == 0x444D4163;   /* AuthenticAMD */
}

/* SVM as the guest sees it: CPUID 8000_0001 ECX[2], or leaf 8000_000A
 * non-zero.  Returns the ECX it read; *leaf_a is leaf 8000_000A's OR. */
static uint32_t cpuid_svm(uint32_t *leaf_a)
{
    const char *fake = getenv("HVCHECK_FAKE_ECX81");
    unsigned a, b, c, d, max;

    *leaf_a = 0;
    if (fake)
        return (uint32_t)strtoul(fake, NULL, 0);
    __cpuid(0x80000000, max, b, c, d);
    if (max < 0x80000001)
        return 0;
    __cpuid(0x80000001, a, b, c, d);
    if (max >= 0x8000000A) {
        unsigned a2, b2, c2, d2;

        __cpuid(0x8000000A, a2, b2, c2, d2);
        *leaf_a = a2 | b2 | c2 | d2;
    }
    return c;
}

/* Printable form of a signature: NULs dropped, others as '.'. */
static void sig_text(const char sig[12], char out[13])
{
    int n = 0;

    for (int i = 0; i < 12; i++)
        if (sig[i])
            out[n++] = sig[i] >= 0x20 && sig[i] < 0x7F ? sig[i] : '.';
    out[n] = '\0';
}

/* ---- VMCALL at CPL 3 --------------------------------------------------- */
static sigjmp_buf jb;
static volatile sig_atomic_t got_sig;

static void on_signal(int sig)
{
    got_sig = sig;
    siglongjmp(jb, 1);
}

static int vmcall_ring3(int use_vmmcall)
{
    struct sigaction sa, old_ill, old_segv;

    memset(&sa, 0, sizeof(sa));
    sa.sa_handler = on_signal;
    sigemptyset(&sa.sa_mask);
    sigaction(SIGILL, &sa, &old_ill);
    sigaction(SIGSEGV, &sa, &old_segv);
    got_sig = 0;
    if (!sigsetjmp(jb, 1)) {
        /* RAX = 0: whatever the hypercall ABI, ring 3 must not reach it. */
        if (use_vmmcall)
            __asm__ volatile("vmmcall" : : "a"(0UL) : "memory");
        else
            __asm__ volatile("vmcall" : : "a"(0UL) : "memory");
    }
    sigaction(SIGILL, &old_ill, NULL);
    sigaction(SIGSEGV, &old_segv, NULL);
    return got_sig;
}

/* ---- MSRs through /dev/cpu/N/msr (msr.ko, loaded by /init) ------------- */
/* msr-gp-reflected: an MSR the hidden feature owns must #GP, i.e. EIO.
 * Baseline: whatever the bare CPU does (Bochs's haswell has VMX: it reads). */
static void check_gp_msr(int fd, int cpu, uint32_t msr)
{
    uint64_t v = 0;
    ssize_t n = pread(fd, &v, sizeof(v), msr);
    int err = errno;

    if (n < 0)
        report("msr-gp-reflected", cpu, baseline || err == EIO, "rdmsr 0x%x -> errno=%d%s",
               msr, err, baseline ? " (baseline: no expectation)" : " expect=EIO");
    else
        report("msr-gp-reflected", cpu, baseline, "rdmsr 0x%x -> 0x%llx%s", msr,
               (unsigned long long)v, baseline ? " (baseline: no expectation)" : " expect=EIO");
}

/* feature-control (Intel: locked, VMX off) or efer-svme-hidden (AMD). */
static void check_value_msr(int fd, int cpu)
{
    const char *name = amd ? "efer-svme-hidden" : "feature-control";
    const char *want = amd ? "svme-clear" : "locked,vmx-off";
    uint32_t msr = amd ? MSR_EFER : MSR_FEATURE_CONTROL;
    uint64_t v = 0;
    int ok;

    if (pread(fd, &v, sizeof(v), msr) != (ssize_t)sizeof(v)) {
        report(name, cpu, baseline, "rdmsr 0x%x -> errno=%d%s%s", msr, errno,
               baseline ? " (baseline: no expectation)" : " expect=", baseline ? "" : want);
        return;
    }
    ok = amd ? !(v & EFER_SVME) : (v & FC_LOCK) && !(v & FC_VMX_OUTSIDE_SMX);
    report(name, cpu, baseline || ok, "value=0x%llx%s%s", (unsigned long long)v,
           baseline ? " (baseline: no expectation)" : " expect=", baseline ? "" : want);
}

static void check_msrs(int cpu)
{
    char path[64];
    int fd, err;

    snprintf(path, sizeof(path), "/dev/cpu/%d/msr", cpu);
    fd = open(path, O_RDONLY);
    if (fd < 0) {
        err = errno;
        report("msr-gp-reflected", cpu, 0, "cannot open %s errno=%d", path, err);
        report(amd ? "efer-svme-hidden" : "feature-control", cpu, 0, "cannot open %s errno=%d",
               path, err);
        return;
    }
    check_gp_msr(fd, cpu, amd ? MSR_VM_HSAVE_PA : MSR_VMX_BASIC);
    check_value_msr(fd, cpu);
    close(fd);
}

/* ---- the checks for one CPU -------------------------------------------- */
static void check_cpu(int cpu)
{
    static const char want[12] = HV_SIGNATURE;
    uint32_t ecx = cpuid_ecx1();
    int hv = !!(ecx & ECX1_HV), vmx = !!(ecx & ECX1_VMX);
    char sig[12], text[13];
    int s;

    if (baseline)
        report("hv-present", cpu, !hv, "hv=%d expect=0 (baseline)", hv);
    else
        report("hv-present", cpu, hv, "hv=%d expect=1", hv);

    if (!hv) {
        /* Without the bit, leaf 0x40000000 holds no hypervisor data. */
        report("hv-signature", cpu, baseline, "sig=none expect=%s",
               baseline ? "none" : "\"" HV_SIGNATURE "\"");
    } else {
        uint32_t max = cpuid_hv_sig(sig);
        int ours = !memcmp(sig, want, sizeof(want));

        sig_text(sig, text);
        report("hv-signature", cpu, baseline ? 0 : ours,
               "sig=\"%s\" max=0x%x expect=%s", text, max,
               baseline ? "none" : "\"" HV_SIGNATURE "\"");
    }

    if (amd) {
        uint32_t leaf_a, ecx81 = cpuid_svm(&leaf_a);
        int svm = (ecx81 & ECX81_SVM) || leaf_a;

        report("svm-hidden", cpu, baseline || !svm, "svm=%d leaf8000000a=%s%s",
               !!(ecx81 & ECX81_SVM), leaf_a ? "present" : "zero",
               baseline ? " (baseline: no expectation)" : " expect=0,zero");
    } else if (baseline) {
        report("vmx-hidden", cpu, 1, "vmx=%d (baseline: no expectation)", vmx);
    } else {
        report("vmx-hidden", cpu, !vmx, "vmx=%d expect=0", vmx);
    }

    s = vmcall_ring3(amd);
    report(amd ? "vmmcall-ring3-sigill" : "vmcall-ring3-sigill", cpu, s == SIGILL,
           "signal=%s", s == SIGILL ? "SIGILL" : s == SIGSEGV ? "SIGSEGV" :
           s ? "other" : "none (returned)");
    check_msrs(cpu);
}

/* ---- mode and CPUs ----------------------------------------------------- */
static int read_baseline(void)
{
    const char *path = getenv("HVCHECK_CMDLINE");
    char buf[4096];
    size_t n;
    FILE *f = fopen(path ? path : "/proc/cmdline", "r");

    if (!f)
        return 0;
    n = fread(buf, 1, sizeof(buf) - 1, f);
    fclose(f);
    buf[n] = '\0';
    for (char *t = strtok(buf, " \t\n"); t; t = strtok(NULL, " \t\n"))
        if (!strcmp(t, "hvcheck=baseline"))
            return 1;
    return 0;
}

int main(void)
{
    cpu_set_t all, one;
    int cpus = 0;

    baseline = read_baseline();
    amd = vendor_amd();
    printf("GUEST-LINUX: hvcheck mode=%s signature=\"%s\" vendor=%s\n",
           baseline ? "baseline" : "hv", HV_SIGNATURE, amd ? "amd" : "intel");
    if (sched_getaffinity(0, sizeof(all), &all)) {
        printf("GUEST-LINUX: hvcheck sched_getaffinity failed errno=%d\n", errno);
        return 1;
    }
    for (int cpu = 0; cpu < CPU_SETSIZE; cpu++) {
        if (!CPU_ISSET(cpu, &all))
            continue;
        CPU_ZERO(&one);
        CPU_SET(cpu, &one);
        if (sched_setaffinity(0, sizeof(one), &one) || sched_getcpu() != cpu) {
            report("pin", cpu, 0, "sched_setaffinity failed errno=%d", errno);
            continue;
        }
        check_cpu(cpu);
        cpus++;
    }
    sched_setaffinity(0, sizeof(all), &all);
    printf("GUEST-LINUX: hvcheck cpus=%d\n", cpus);
    printf("GUEST-LINUX: summary pass=%u fail=%u\n", pass, fail);
    return fail > MAX_FAIL_RC ? MAX_FAIL_RC : (int)fail;
}
