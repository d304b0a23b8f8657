/*
 * smp.c - the CPUs as a group: INIT/SIPI emulation, cross-CPU requests
 * over NMIs, devirtualization of every CPU, the power-off statistics.
 *
 * INIT/SIPI.  A virtualized AP must never receive a real INIT: on hardware
 * the INIT VM exit (SDM Vol 3C 27.2) is handled correctly in vmx_exit.c, but
 * Bochs 2.7 leaves the INIT pending after that exit and the AP never runs
 * again.  So the hypervisor intercepts the guest's ICR writes - xAPIC: EPT
 * makes the APIC page read-only, insn.c decodes the store; x2APIC: the MSR
 * bitmap traps WRMSR 0x830 - and emulates INIT and start-up IPIs (SDM Vol 3A
 * 11.6.1): the sender records the request on the target under the target's
 * lock and wakes it with an NMI sent by the host; the target applies it at
 * the end of its next exit (hv_smp_poll).  Every other IPI is sent as is.
 *
 * Ordering.  INIT clears any unapplied SIPI and arms the target; the first
 * SIPI after it is recorded and disarms it; later SIPIs are dropped, as a
 * started CPU ignores them.  The target applies INIT before SIPI whatever
 * order the NMIs arrive in, so INIT-SIPI-SIPI sent back to back works.
 *
 * NMIs: request flags, not counts.  A wake-up is a request bit in the
 * target's req, set under its lock, plus its doorbell: the sender sends an
 * NMI only when it turns nmi_doorbell from 0 to 1, so at most one wake-up
 * NMI is ever on its way to a CPU, and a later request rides on it.  The
 * target counts arrivals only (nmi_pending: the host NMI handler and the
 * NMI exits add one each).  At its poll, one arrival clears a rung
 * doorbell - that NMI was (or stands for) the wake-up - and every other
 * arrival is the guest's.  Why this is exact (SDM Vol 3A 6.7.1, 11.6.1;
 * APM 15.13.2, 15.17):
 *  - Two wake-ups never merge into one NMI (the second sends none), so a
 *    wake-up leaves no debt behind.  Counting sent against seen did: two
 *    wake-ups that arrive while the target holds NMIs pending (GIF = 0 on
 *    SVM for a whole exit, NMI blocking on VMX) are one NMI in hardware,
 *    the count stays one behind for good, and the guest's next NMI (a sysrq
 *    backtrace) paid it off and was swallowed.
 *  - A guest NMI that arrives before the wake-up NMI is matched to the
 *    doorbell; the wake-up NMI then counts as the guest's: the guest gets
 *    exactly its one NMI, a few instructions late.  Never a spurious one,
 *    which Linux would report as "NMI received for unknown reason" ("Dazed
 *    and confused") since no source of its own claims it.
 *  - The one loss left is a guest NMI merged in hardware with a wake-up NMI
 *    (both pending at once).  Wake-ups exist only for INIT, SIPI and
 *    devirtualization.  INIT puts the CPU into wait-for-SIPI, where NMIs
 *    are blocked and dropped (as KVM's INIT does); devirtualization is a
 *    one-off hypercall.  An OS that runs normally gets no wake-ups at all,
 *    so every NMI it receives is its own.
 * A guest NMI is owed (guest_nmi, at most 2: one to deliver, one latched,
 * as the CPU's NMI latch holds one while NMIs are blocked; more merge) and
 * the backend injects it at the next boundary where the guest's NMIs are
 * unblocked: on this entry when possible, else at the NMI window (VMX
 * virtual NMIs: NMI-window exiting; SVM: the IRET intercept, svm_exit.c).
 * An NMI that reaches the VMX host after the last poll kicks an exit at
 * once (nmi_kick); on SVM the host holds it (GIF = 0) and it exits right
 * after VMRUN.  Both reach the guest before its next instruction.
 *
 * When the interception ends.  EOI and TPR writes land on the same page,
 * so keeping it read-only costs an exit per interrupt.  It is dropped once
 * boot services are gone (EFI system table BootServices == NULL, UEFI 2.10
 * 7.4) and every AP has been started by an emulated SIPI after that, i.e.
 * by the OS.  Until then (firmware phase, an OS that never starts its APs)
 * it stays on.  After it, an INIT the OS sends (CPU hotplug, kexec) reaches
 * the AP for real: correct on hardware, a hung AP in Bochs 2.7.
 */
#include "hv_core.h"
#include "hv_lib.h"

#define REQ_INIT   1u
#define REQ_SIPI   2u
#define REQ_DEVIRT 4u
#define REQ_ICR_OPEN 8u                    /* stop intercepting the x2APIC ICR */

#define APIC_BASE_EXTD  (1ull << 10)
#define APIC_BASE_EN    (1ull << 11)
#define APIC_BASE_ADDR  0x000FFFFFFFFFF000ull
#define XAPIC_ICR_LO    0x300
#define XAPIC_ICR_HI    0x310
#define XAPIC_LDR       0x0D0
#define XAPIC_DFR       0x0E0
#define MSR_X2APIC_ICR  0x830

/* ICR (SDM Vol 3A 11.6.1, Figure 11-12). */
#define ICR_DM(v)        (((v) >> 8) & 7)
#define DM_NMI           4
#define DM_INIT          5
#define DM_SIPI          6
#define ICR_LOGICAL      (1u << 11)
#define ICR_BUSY         (1u << 12)
#define ICR_ASSERT       (1u << 14)
#define ICR_LEVEL        (1u << 15)
#define ICR_SHORTHAND(v) (((v) >> 18) & 3)
#define ICR_NMI          ((DM_NMI << 8) | ICR_ASSERT)
/* x2APIC ICR (SDM Vol 3A 11.12.9, Figure 11-28): bits 13, 16-17 and 20-31
 * are reserved, and a WRMSR that sets one raises #GP (11.12.1.3); bit 12
 * (delivery status) is gone, and WRMSR ignores it. */
#define X2ICR_RSVD       0xFFF32000u

uint64_t hv_apic_page;
volatile bool hv_apic_protected;
uint16_t hv_pm1a_cnt_port;

static void lock(volatile int *l)
{
    while (__atomic_exchange_n(l, 1, __ATOMIC_ACQUIRE))
        cpu_relax();
}

static void unlock(volatile int *l)
{
    __atomic_store_n(l, 0, __ATOMIC_RELEASE);
}

/* ---- the real local APIC --------------------------------------------------- */
static volatile uint32_t *xapic(unsigned off)
{
    return (volatile uint32_t *)(uintptr_t)((rdmsr(MSR_APIC_BASE) & APIC_BASE_ADDR) + off);
}

static bool x2apic_on(void)
{
    return rdmsr(MSR_APIC_BASE) & APIC_BASE_EXTD;
}

/* The xAPIC registers answer at the page only in xAPIC mode: globally
 * disabled or in x2APIC mode, a store there is an ordinary memory access
 * (SDM Vol 3A 11.4.3, 11.12.1.2).  The guest's mode is the real APIC's:
 * IA32_APIC_BASE EN and EXTD pass through. */
static bool xapic_mode(void)
{
    return (rdmsr(MSR_APIC_BASE) & (APIC_BASE_EN | APIC_BASE_EXTD)) == APIC_BASE_EN;
}

static void xapic_wait_idle(void)
{
    for (unsigned i = 0; i < 1000000 && (*xapic(XAPIC_ICR_LO) & ICR_BUSY); i++)
        cpu_relax();
}

/* Sends an IPI on this CPU's APIC.  xAPIC: ICR high is the guest's
 * register too, so the guest's value goes back afterwards. */
static void send_ipi(struct hv_cpu *c, uint32_t lo, uint32_t dest)
{
    if (x2apic_on()) {
        wrmsr(MSR_X2APIC_ICR, ((uint64_t)dest << 32) | lo);
        return;
    }
    xapic_wait_idle();
    *xapic(XAPIC_ICR_HI) = dest << 24;
    *xapic(XAPIC_ICR_LO) = lo;
    xapic_wait_idle();
    *xapic(XAPIC_ICR_HI) = c->icr_high;
}

/* Rings t's doorbell after its request is recorded; the NMI goes only if
 * none is on its way (smp.c's head comment). */
static void wake(struct hv_cpu *c, struct hv_cpu *t)
{
    if (t == c)
        return;                                   /* applied at the end of this exit */
    if (__atomic_exchange_n(&t->nmi_doorbell, 1, __ATOMIC_SEQ_CST))
        return;                                   /* the NMI in flight will do */
    send_ipi(c, ICR_NMI, t->apic_id);
}

/* ---- set-up ------------------------------------------------------------------ */
static bool boot_services_gone(void)
{
    const uint8_t *st = plat_st;

    return st && *(void *const *)(st + 96) == NULL;   /* EFI_SYSTEM_TABLE.BootServices */
}

/* PM1a_CNT_BLK from the FADT the guest sees (ACPI 6.5 5.2.9), found through
 * the EFI configuration table (ACPI 2.0 GUID, then 1.0). */
static const uint8_t *acpi_rsdp(void)
{
    static const uint8_t g20[16] = {0x71, 0xe8, 0x68, 0x88, 0xf1, 0xe4, 0xd3, 0x11,
                                    0xbc, 0x22, 0x00, 0x80, 0xc7, 0x3c, 0x88, 0x81};
    static const uint8_t g10[16] = {0x30, 0x2d, 0x9d, 0xeb, 0x88, 0x2d, 0xd3, 0x11,
                                    0x9a, 0x16, 0x00, 0x90, 0x27, 0x3f, 0xc1, 0x4d};
    const uint8_t *st = plat_st, *ct, *found = NULL;
    uint64_t n;

    if (!st)
        return NULL;
    n = *(const uint64_t *)(st + 104);
    ct = *(const uint8_t *const *)(st + 112);
    for (uint64_t i = 0; ct && i < n && i < 256; i++) {
        const uint8_t *e = ct + 24 * i;

        if (!memcmp(e, g20, 16))
            return *(const uint8_t *const *)(e + 16);
        if (!memcmp(e, g10, 16))
            found = *(const uint8_t *const *)(e + 16);
    }
    return found;
}

static void acpi_find_pm1a(void)
{
    const uint8_t *rsdp = acpi_rsdp(), *sdt;
    uint32_t len, esz;

    if (!rsdp || memcmp(rsdp, "RSD PTR ", 8))
        return;
    if (rsdp[15] >= 2 && *(const uint64_t *)(rsdp + 24)) {
        sdt = (const uint8_t *)(uintptr_t)*(const uint64_t *)(rsdp + 24);
        esz = 8;
    } else {
        sdt = (const uint8_t *)(uintptr_t)*(const uint32_t *)(rsdp + 16);
        esz = 4;
    }
    len = *(const uint32_t *)(sdt + 4);
    for (uint32_t off = 36; off + esz <= len; off += esz) {
        const uint8_t *t = (const uint8_t *)(uintptr_t)(esz == 8 ?
                               *(const uint64_t *)(sdt + off) : *(const uint32_t *)(sdt + off));
        uint32_t port;

        if (!t || memcmp(t, "FACP", 4))
            continue;
        port = *(const uint32_t *)(t + 64);
        if (!port && *(const uint32_t *)(t + 4) >= 184 && t[172] == 1)   /* X_PM1a_CNT, I/O */
            port = (uint32_t)*(const uint64_t *)(t + 176);
        hv_pm1a_cnt_port = (uint16_t)port;
        return;
    }
}

void hv_smp_global_init(void)
{
    uint64_t base = rdmsr(MSR_APIC_BASE);

    /* One CPU: nobody to start, no interception.  In x2APIC mode too: the
     * base field still names the page (SDM Vol 3A 11.12.1), and a guest
     * that goes back to xAPIC mode (Linux without interrupt remapping)
     * sends its INITs there. */
    if (hv_cpu_total > 1 && (base & APIC_BASE_EN)) {
        hv_apic_page = base & APIC_BASE_ADDR;
        hv_apic_protected = true;
    }
    acpi_find_pm1a();
    hv_log("HV: smp apic-page=%llx pm1a-cnt=%x\n", (unsigned long long)hv_apic_page,
           hv_pm1a_cnt_port);
}

void hv_smp_cpu_init(struct hv_cpu *c)
{
    /* Initial x2APIC ID (leaf 0xB) where there is one, else the xAPIC ID. */
    if (cpuid2(0, 0).eax >= 0xB && cpuid2(0xB, 0).ebx)
        c->apic_id = cpuid2(0xB, 0).edx;
    else
        c->apic_id = cpuid2(1, 0).ebx >> 24;
    if (xapic_mode() && hv_apic_page) {
        c->icr_high = *xapic(XAPIC_ICR_HI);
        c->apic_ldr = *xapic(XAPIC_LDR);
        c->apic_dfr = *xapic(XAPIC_DFR);
    } else {
        c->apic_dfr = 0xFFFFFFFFu;                 /* the xAPIC reset values */
    }
}

/* ---- ICR emulation ------------------------------------------------------------- */
static void record(struct hv_cpu *c, struct hv_cpu *t, unsigned dm, uint8_t vec)
{
    bool send = true;

    lock(&t->lock);
    if (dm == DM_INIT) {
        t->req = (t->req | REQ_INIT) & ~REQ_SIPI;
        t->sipi_armed = true;
    } else if (t->sipi_armed) {
        t->req |= REQ_SIPI;
        t->sipi_vector = vec;
        t->sipi_armed = false;
    } else {
        send = false;                              /* a started CPU ignores SIPI */
    }
    /* A parked CPU polls its requests in the host: no NMI, so no wake-up
     * NMI can coalesce with (and later be mistaken for) one of the guest's. */
    send = send && !t->parked;
    unlock(&t->lock);
    HV_TRACE("HV: trace cpu=%u sends %s vec=%x to cpu=%u\n", c->index,
             dm == DM_INIT ? "init" : "sipi", vec, t->index);
    if (send)
        wake(c, t);
}

/* Logical destination (SDM Vol 3A 11.6.2.2, 11.12.10): xAPIC flat or
 * cluster model from the target's LDR/DFR as the guest wrote them; x2APIC
 * cluster ID and bit from the x2APIC ID. */
static bool logical_match(const struct hv_cpu *t, uint32_t dest, bool x2)
{
    uint32_t mda = dest & 0xFF, id = t->apic_ldr >> 24;

    if (x2)
        return dest == 0xFFFFFFFFu || ((dest >> 16) == (t->apic_id >> 4) &&
                                       (dest & 0xFFFF & (1u << (t->apic_id & 0xF))));
    if (mda == 0xFF)
        return true;
    if ((t->apic_dfr >> 28) == 0xF)                /* flat */
        return (id & mda) != 0;
    return (id >> 4) == (mda >> 4) && (id & mda & 0xF);   /* cluster */
}

static void icr_write(struct hv_cpu *c, uint32_t lo, uint32_t dest, bool x2)
{
    unsigned dm = ICR_DM(lo), sh = ICR_SHORTHAND(lo);
    uint32_t bcast = x2 ? 0xFFFFFFFFu : 0xFFu;
    bool hit_any = false, logical = lo & ICR_LOGICAL;

    if (dm != DM_INIT && dm != DM_SIPI)
        return send_ipi(c, lo, dest);
    if (dm == DM_INIT && !(lo & ICR_ASSERT) && (lo & ICR_LEVEL))
        return;                                    /* INIT level de-assert: no-op */
    for (size_t i = 0; i < hv_cpu_total; i++) {
        struct hv_cpu *t = hv_cpus[i];
        uint32_t id = x2 ? t->apic_id : (t->apic_id & 0xFF);
        bool hit = sh == 0 ? (logical ? logical_match(t, dest, x2) : dest == bcast || dest == id)
                           : sh == 1 ? t == c : sh == 2 ? true : t != c;

        /* A CPU learns its APIC ID when it is prepared: until then (the
         * bring-up in vmm_start) it is no guest and gets the real IPI. */
        if (!t->guest) {
            if (sh == 0 && (logical || dest != bcast))
                continue;
            hv_panic(c, "icr: broadcast %s before cpu=%zu is virtualized\n",
                     dm == DM_INIT ? "init" : "sipi", i);
        }
        if (!hit)
            continue;
        if (hv_s3_start_ap(c, t, dm == DM_INIT, lo & 0xFF)) {
            hit_any = true;                        /* down since S3 (s3.c) */
        } else if (t->left != 1) {
            record(c, t, dm, lo & 0xFF);
            hit_any = true;
        } else {   /* no longer virtualized: the real IPI, to it alone */
            send_ipi(c, lo & ~((3u << 18) | ICR_LOGICAL), t->apic_id);
        }
    }
    if (sh == 0 && !logical && dest != bcast && !hit_any)
        send_ipi(c, lo, dest);                     /* a CPU that is not our guest */
}

/* Both ICR intercepts (the xAPIC page, the x2APIC ICR MSR) end together,
 * once: IPIs are a hot path, and after this point no INIT needs emulating.
 * The page is shared (EPT/NPT, flushed as it changes); the MSR intercept
 * each CPU drops for itself at its next exit (REQ_ICR_OPEN), because the
 * MSR bitmap may not change under a CPU in VMX non-root operation (SDM
 * Vol 3C 25.11.4).  Until then, its next ICR write exits once more. */
static volatile bool icr_intercepted = true;

static void icr_open_all(void)
{
    for (size_t i = 0; i < hv_cpu_total; i++) {
        struct hv_cpu *t = hv_cpus[i];

        lock(&t->lock);
        t->req |= REQ_ICR_OPEN;                    /* no NMI: at its next exit */
        unlock(&t->lock);
    }
}

static void maybe_unprotect(struct hv_cpu *c)
{
    if (!icr_intercepted || !boot_services_gone())
        return;
    for (size_t i = 1; i < hv_cpu_total; i++)
        if (!hv_cpus[i]->os_started)
            return;
    if (!__atomic_exchange_n(&icr_intercepted, false, __ATOMIC_ACQ_REL))
        return;                                    /* another CPU did it */
    hv_apic_protected = false;
    c->ops->apic_unprotect();
    hv_s3_done();
    icr_open_all();
    hv_log("HV: apic-intercept off cpu=%u: every AP started by the OS\n", c->index);
}

/* Before S3 (s3.c): on resume the OS starts its APs again, and those
 * start-ups must be ours. */
void hv_smp_s3_rearm(struct hv_cpu *c)
{
    for (size_t i = 0; i < hv_cpu_total; i++)
        hv_cpus[i]->os_started = false;
    if (hv_cpu_total < 2 || !hv_apic_page)
        return;
    hv_apic_protected = true;
    __atomic_store_n(&icr_intercepted, true, __ATOMIC_RELEASE);
    c->ops->apic_protect();
}

/* INIT, then a start-up IPI (SDM Vol 3A 9.4.4.1), to a CPU that is not our
 * guest: one that is down since S3. */
void hv_send_start(struct hv_cpu *c, uint32_t apic_id, uint8_t vector)
{
    send_ipi(c, (DM_INIT << 8) | ICR_ASSERT | ICR_LEVEL, apic_id);
    send_ipi(c, (DM_SIPI << 8) | vector, apic_id);
}

/* One 32-bit store of val to the APIC register at gpa, as the guest made it. */
static void apic_store(struct hv_cpu *c, uint64_t gpa, uint32_t val)
{
    unsigned off = gpa & 0xFFF;

    if (!xapic_mode()) {
        *(volatile uint32_t *)(uintptr_t)gpa = val;   /* not the APIC: memory */
        return;
    }
    if (off == XAPIC_ICR_LO) {
        icr_write(c, val, c->icr_high >> 24, false);
    } else {
        if (off == XAPIC_ICR_HI)
            c->icr_high = val;
        else if (off == XAPIC_LDR)
            c->apic_ldr = val;
        else if (off == XAPIC_DFR)
            c->apic_dfr = val;
        *(volatile uint32_t *)(uintptr_t)gpa = val;
    }
}

/* REP STOS: one iteration per exit (an iteration boundary is an
 * instruction boundary for the guest, SDM Vol 2B REP); RDI/RCX in the
 * address size; RIP stays until the count runs out. */
static unsigned stos_step(struct hv_cpu *c, const struct hv_store *st)
{
    struct hv_regs *r = c->regs;
    uint64_t mask = st->asize == 8 ? ~0ull : st->asize == 4 ? 0xFFFFFFFFull : 0xFFFFull;
    bool down = c->ops->guest_rflags && (c->ops->guest_rflags(c, 0, 0) & (1ull << 10));
    uint64_t rdi = ((r->rdi & mask) + (down ? -4ull : 4ull)) & mask, rcx;

    r->rdi = st->asize == 2 ? (r->rdi & ~mask) | rdi : rdi;
    if (!st->rep)
        return st->len;
    rcx = ((r->rcx & mask) - 1) & mask;
    r->rcx = st->asize == 2 ? (r->rcx & ~mask) | rcx : rcx;
    return rcx ? 0 : st->len;
}

unsigned hv_apic_mmio_write(struct hv_cpu *c, uint64_t gpa)
{
    volatile uint32_t *reg = (volatile uint32_t *)(uintptr_t)(gpa & ~3ull);
    struct hv_store st;
    unsigned len;
    uint32_t val;

    if ((gpa & 3) || hv_decode_store(c, &st)) {    /* misaligned: not a register write */
        c->ops->inject_exception(c, VEC_GP, true, 0);
        return 0;
    }
    val = st.src;
    if (st.xchg_reg >= 0)                          /* XCHG: the old value back */
        ((uint64_t *)c->regs)[st.xchg_reg] = *reg;
    if (st.kind == STORE_ALU) {
        uint64_t fl = c->ops->guest_rflags ? c->ops->guest_rflags(c, 0, 0) : 0;

        val = hv_store_alu(st.alu, *reg, st.src, &fl);
        if (c->ops->guest_rflags)
            c->ops->guest_rflags(c, 0x8D5, fl);
    }
    apic_store(c, gpa, val);
    len = st.kind == STORE_STOS ? stos_step(c, &st) : st.len;
    maybe_unprotect(c);
    return len;
}

int hv_x2apic_icr_write(struct hv_cpu *c, uint64_t val)
{
    if ((uint32_t)val & X2ICR_RSVD)
        return -1;
    c->x2apic_icr_exits++;
    icr_write(c, (uint32_t)val & ~ICR_BUSY, (uint32_t)(val >> 32), true);
    maybe_unprotect(c);
    return 0;
}

/* ---- requests, at the end of every exit ------------------------------------------ */
/* The NMIs that arrived: one answers a rung doorbell, the rest are owed to
 * the guest - unless it is in wait-for-SIPI, which blocks them. */
static void take_nmis(struct hv_cpu *c)
{
    uint32_t got = __atomic_exchange_n(&c->nmi_pending, 0, __ATOMIC_ACQ_REL);

    c->nmi_stat.received += got;
    if (got && __atomic_exchange_n(&c->nmi_doorbell, 0, __ATOMIC_SEQ_CST)) {
        got--;
        c->nmi_stat.wakeups++;
    }
    c->nmi_stat.guest += got;
    if (c->parked) {
        c->nmi_stat.dropped += got + c->guest_nmi;
        c->guest_nmi = 0;
        return;
    }
    while (got--) {
        if (c->guest_nmi < 2)
            c->guest_nmi++;
        else
            c->nmi_stat.dropped++;                 /* merged, as in the CPU's latch */
    }
}

/* Lets an NMI that the host holds pending arrive now (SVM: a GIF window;
 * the VMX host takes NMIs at once). */
static void host_nmi_window(struct hv_cpu *c)
{
    if (c->ops->host_nmi_window)
        c->ops->host_nmi_window();
}

static void leave(struct hv_cpu *c)
{
    struct hv_guest_paging p;

    /* The wake-up NMI must land here, not in the native guest (where it
     * would be an unknown NMI). */
    for (uint64_t n = 0; c->nmi_doorbell && n < 100000000ull; n++) {
        host_nmi_window(c);
        if (c->nmi_pending)
            take_nmis(c);
        cpu_relax();
    }
    if (c->parked) {
        __atomic_store_n(&c->left, 1, __ATOMIC_RELEASE);
        c->ops->leave_parked(c);
    }
    c->ops->guest_paging(c, &p);
    if (!(p.efer & EFER_LMA) || !p.cs_long || !hv_devirt_possible(c)) {
        __atomic_store_n(&c->left, -1, __ATOMIC_RELEASE);
        return;
    }
    if (!c->ops->can_leave_now(c)) {
        c->devirt_deferred = true;                 /* again at the next exit */
        return;
    }
    __atomic_store_n(&c->left, 1, __ATOMIC_RELEASE);
    c->ops->devirtualize(c);
}

void hv_smp_poll(struct hv_cpu *c)
{
    uint32_t req;
    uint8_t vec;

    if (!c->nmi_pending && !c->req && !c->devirt_deferred)
        return;                                    /* the common case: plain loads */
again:
    if (c->nmi_pending)                            /* before req: a matched wake-up's */
        take_nmis(c);                              /* request is visible below */
    if (c->req) {
        bool was_parked = c->parked, start;

        lock(&c->lock);
        req = c->req;
        vec = c->sipi_vector;
        c->req = 0;
        /* The wait-for-SIPI state changes under the lock: a sender that sees
         * this CPU parked sends no NMI (record), the wait below polls req. */
        start = (req & REQ_SIPI) && (was_parked || (req & REQ_INIT));
        c->parked = (was_parked || (req & REQ_INIT)) && !start;
        unlock(&c->lock);
        if (req & REQ_INIT) {
            c->nmi_stat.dropped += c->guest_nmi;   /* INIT: wait-for-SIPI drops them */
            c->guest_nmi = 0;
            c->ops->park_init(c);
        }
        if (start) {
            c->ops->start_sipi(c, vec);
            if (boot_services_gone())
                c->os_started = true;
        }
        if (req & REQ_DEVIRT)
            c->devirt_deferred = true;
        if (req & REQ_ICR_OPEN)
            c->ops->icr_open(c);
    }
    if (c->devirt_deferred) {
        c->devirt_deferred = false;
        leave(c);
    }
    /* Parked: wait here, in the host, for the SIPI (or INIT, devirtualize).
     * Polling the request word needs no NMI to arrive, so no wake-up can be
     * lost to an NMI that lands in the host after the check above; a
     * wake-up NMI still on its way arrives here and is matched, so none
     * reaches the started CPU. */
    if (c->parked) {
        while (!c->req && !c->nmi_pending) {
            host_nmi_window(c);
            cpu_relax();
        }
        goto again;
    }
    /* An NMI that reached the host after the checks above: take it now.
     * (Between here and VM entry the backend's kick, or GIF = 0, covers.) */
    if (c->nmi_pending || c->req)
        goto again;
}

void hv_print_nmi_stats(struct hv_cpu *c)
{
    hv_log("HV: nmi cpu=%u received=%u wakeups=%u guest=%u injected=%u dropped=%u\n",
           c->index, c->nmi_stat.received, c->nmi_stat.wakeups, c->nmi_stat.guest,
           c->nmi_stat.injected, c->nmi_stat.dropped);
}

/* ---- devirtualization of every CPU ------------------------------------------------ */
int hv_devirt_all(struct hv_cpu *c, uint64_t *mask)
{
    static volatile int busy;
    int refused = 0;

    if (__atomic_exchange_n(&busy, 1, __ATOMIC_ACQUIRE))
        return -1;                                 /* another CPU is doing it */
    *mask = c->index < 64 ? 1ull << c->index : 0;
    for (size_t i = 0; i < hv_cpu_total; i++) {
        struct hv_cpu *t = hv_cpus[i];

        if (t == c || t->left == 1 || !t->guest)
            continue;                              /* never NMI a CPU that is no guest */
        __atomic_store_n(&t->left, 0, __ATOMIC_RELEASE);   /* refused before: ask again */
        lock(&t->lock);
        t->req |= REQ_DEVIRT;
        unlock(&t->lock);
        wake(c, t);
    }
    for (size_t i = 0; i < hv_cpu_total; i++) {
        struct hv_cpu *t = hv_cpus[i];

        for (uint64_t n = 0; t != c && t->guest && n < 100000000ull &&
                             !__atomic_load_n(&t->left, __ATOMIC_ACQUIRE); n++)
            cpu_relax();
        if (t != c && t->left == 1 && i < 64)
            *mask |= 1ull << i;
        else if (t != c && t->guest && t->left != 1)
            refused++;
    }
    for (size_t i = 0; i < hv_cpu_total; i++)
        hv_print_stats(hv_cpus[i]);
    for (size_t i = 0; i < hv_cpu_total; i++)
        if (hv_cpus[i] != c)
            hv_log("HV: devirtualize cpu=%zu %s\n", i, hv_cpus[i]->left == 1 ? "done" :
                   hv_cpus[i]->guest ? "refused" : "not-a-guest");
    __atomic_store_n(&busy, 0, __ATOMIC_RELEASE);  /* a refused CPU may be asked again */
    return refused;
}

/* ---- power-off ------------------------------------------------------------------------ */
/* A guest OUT of `size` bytes at `port` that touches the PM1a control
 * register: performed as written.  When its byte PM1a+1 carries SLP_EN
 * (bit 13 of the register, ACPI 6.5 4.8.3.2.1) the machine is about to
 * sleep or power off: the statistics go out first. */
void hv_io_out(struct hv_cpu *c, uint16_t port, unsigned size, uint32_t val)
{
    uint32_t hi = (uint32_t)hv_pm1a_cnt_port + 1;

    if (hv_pm1a_cnt_port && hi >= port && hi < (uint32_t)port + size &&
        ((val >> (8 * (hi - port))) & 0x20)) {
        for (size_t i = 0; i < hv_cpu_total; i++) {
            hv_print_stats(hv_cpus[i]);
            hv_print_nmi_stats(hv_cpus[i]);
        }
        if (hv_sleep_state(val)[1] == '3')
            hv_s3_prepare(c, port, val);
        else
            hv_log("HV: poweroff cpu=%u pm1a-cnt=%x value=%x state=%s\n", c->index,
                   port, val, hv_sleep_state(val));
    }
    port_out(port, size, val);
}

void hv_pm1a_write(struct hv_cpu *c, uint32_t val, unsigned size)
{
    hv_io_out(c, hv_pm1a_cnt_port, size, val);
}
