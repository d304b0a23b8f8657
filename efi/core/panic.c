/*
 * panic.c - what happens after `HV: panic`: the failure policy
 * (panic=reset|halt in hv.cfg), the platform reset, and the forced-failure
 * points a DEBUG build's `debug-fail=<name>` can arm (hv_cfg.h).
 *
 * Reset order: the FADT's reset register (ACPI 6.5 5.2.9 RESET_REG, when
 * RESET_REG_SUP), then the PIIX/ICH reset control register 0xCF9 (full
 * reset), then the 8042 keyboard controller's reset pulse (command 0xFE).
 * Each attempt is logged first, so the next boot shows which one was tried
 * last.  Vendor-neutral: SVM gets the same policy.
 */
#include "hv_core.h"
#include "hv_cfg.h"
#include "hv_lib.h"

static bool halt_on_panic;
static struct hv_reset_reg acpi_reset;
int hv_forced_failure;              /* enum hv_force */

void hv_set_fail_policy(bool halt, int force, const struct hv_reset_reg *acpi)
{
    halt_on_panic = halt;
    hv_forced_failure = force;
    if (acpi)
        acpi_reset = *acpi;
}

static void io_delay(void)
{
    for (int i = 0; i < 1000; i++)
        inb(0x80);
}

/* PCI configuration mechanism #1 (PCI Local Bus 3.0 3.2.2.3.2). */
static uint32_t pci_read32(unsigned dev, unsigned fn, unsigned off)
{
    outl(0xCF8, 0x80000000u | (dev << 11) | (fn << 8) | (off & 0xFC));
    return inl(0xCFC);
}

static void pci_write32(unsigned dev, unsigned fn, unsigned off, uint32_t v)
{
    outl(0xCF8, 0x80000000u | (dev << 11) | (fn << 8) | (off & 0xFC));
    outl(0xCFC, v);
}

/* Quirk: a PIIX4 power-management function (8086:7113, 00:01.3) whose I/O
 * space enable (PMREGMISC bit 0) survives a reset that clears its base
 * (Bochs 2.7) leaves the firmware timing against port 8 for ever; clearing
 * the enable makes the firmware program both again.  A real reset clears
 * both, so this changes nothing on hardware. */
static void piix4_pm_quirk(void)
{
    if (pci_read32(1, 3, 0) == 0x71138086u)
        pci_write32(1, 3, 0x80, pci_read32(1, 3, 0x80) & ~1u);
}

__attribute__((noreturn)) void hv_platform_reset(const char *why)
{
    piix4_pm_quirk();
    if (acpi_reset.space == 1 || (acpi_reset.space == 0 && acpi_reset.addr)) {
        hv_log("HV: reset reason=%s via=acpi %s=%llx value=%x\n", why,
               acpi_reset.space == 1 ? "port" : "mmio",
               (unsigned long long)acpi_reset.addr, acpi_reset.value);
        if (acpi_reset.space == 1)
            outb((uint16_t)acpi_reset.addr, acpi_reset.value);
        else
            *(volatile uint8_t *)(uintptr_t)acpi_reset.addr = acpi_reset.value;
        io_delay();
    }
    hv_log("HV: reset reason=%s via=cf9\n", why);
    outb(0xCF9, 0x02);                      /* reset CPU 0 -> 1 with full reset */
    io_delay();
    outb(0xCF9, 0x06);
    io_delay();
    hv_log("HV: reset reason=%s via=kbc\n", why);
    for (int i = 0; i < 100000 && (inb(0x64) & 2); i++)
        ;
    outb(0x64, 0xFE);
    io_delay();
    hv_log("HV: reset failed: halting\n");
    halt_forever();
}

/* After the decoded report of a failure: reset (default) or halt. */
__attribute__((noreturn)) void hv_fail_stop(const char *why)
{
    if (!halt_on_panic)
        hv_platform_reset(why);
    hv_log("HV: halted (panic=halt)\n");
    halt_forever();
}

bool hv_force(int where)
{
    return hv_forced_failure == where;
}

/* A guest triple fault (VT-x exit 2, SVM shutdown intercept) is the guest's
 * reset, as on bare metal where the chipset resets on a shutdown cycle
 * (SDM Vol 3A 6.15 #DF, APM Vol 2 15.11): log it, dump, reset. */
__attribute__((noreturn)) void hv_guest_triple_fault(struct hv_cpu *c)
{
    hv_log("HV: triple-fault cpu=%u rip=%llx: the guest resets the machine\n", c->index,
           (unsigned long long)c->ops->guest_rip(c));
    c->ops->dump_guest(c);
    hv_platform_reset("triple-fault");
}

/* A nested-paging fault on the pool (not present) or a write to the log ring
 * (read-only): the guest gets #GP(0), logged as `HV: <ept|npt>-block`.
 * False for any other address (the backend's own cases, or a bug). */
bool hv_gpa_blocked(struct hv_cpu *c, uint64_t gpa, const char *access)
{
    uint64_t pb, ps;

    hv_protected_range(&pb, &ps);
    if (!(gpa >= pb && gpa < pb + ps) && !hv_guest_readonly(gpa, 1))
        return false;
    hv_log("HV: %s-block cpu=%u gpa=%llx access=%s rip=%llx\n",
           c->ops->gpa_map, c->index, (unsigned long long)gpa, access,
           (unsigned long long)c->ops->guest_rip(c));
    return true;
}
