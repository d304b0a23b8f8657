/*
 * acpi-shim.c - test-platform shim for Bochs: OVMF there publishes no ACPI
 * tables, so Linux sees one CPU and cannot power off.  This app gathers the
 * platform facts at run time, installs a MADT, FADT, FACS and DSDT through
 * EFI_ACPI_TABLE_PROTOCOL (which builds the RSDP/XSDT), then loads and
 * starts the hypervisor, hv.efi, from its own directory with no options.
 *
 * It is part of the test platform, not of the hypervisor: pytool puts it on
 * the ESP as BOOTX64.EFI for Bochs runs only (engines.bochs.platform_shim).
 *
 *   PLATFORM: acpi madt cpus=<n> ioapic=<id> pm1a=<port>
 *   PLATFORM: acpi skipped reason=<why>       (tables present / no protocol)
 *   PLATFORM: chainload failed path=<p> status=<EFI status>
 */
#include "hv.h"
#include "hv_efi.h"
#include "hv_lib.h"
#include "acpi_tables.h"

/* UEFI 2.10 section 20.2: EFI_ACPI_TABLE_PROTOCOL. */
#define ACPI_TABLE_PROTOCOL_GUID \
    { 0xffe06bdd, 0x6107, 0x46a6, { 0x7b, 0xb2, 0x5a, 0x9c, 0x7e, 0xc5, 0x27, 0x5c } }

typedef struct _ACPI_TABLE_PROTOCOL ACPI_TABLE_PROTOCOL;
struct _ACPI_TABLE_PROTOCOL {
    EFI_STATUS (EFIAPI *InstallAcpiTable)(ACPI_TABLE_PROTOCOL *This,
        VOID *AcpiTableBuffer, UINTN AcpiTableBufferSize, UINTN *TableKey);
    EFI_STATUS (EFIAPI *UninstallAcpiTable)(ACPI_TABLE_PROTOCOL *This,
        UINTN TableKey);
};

#define HV_FILE         "hv.efi"
#define IOAPIC_BASE     0xFEC00000u   /* Bochs ioapic.cc BX_IOAPIC_BASE_ADDR */
#define IA32_APIC_BASE  0x1B
#define SCI_IRQ_DEFAULT 9             /* QEMU's PIIX4 wires the SCI to IRQ 9 */

static EFI_BOOT_SERVICES *bs;

/* ---- platform probes --------------------------------------------------- */
/* PCI configuration mechanism #1 (ports 0xCF8/0xCFC), bus 0. */
static uint32_t pci_read32(unsigned dev, unsigned fn, unsigned reg)
{
    outl(0xCF8, 0x80000000u | (dev << 11) | (fn << 8) | (reg & 0xFC));
    return inl(0xCFC);
}

/* PMBA of the PIIX4 PM function 00:01.3 (PIIX4 datasheet 3.4.2: config
 * 0x40, bits 15:6; PMREGMISC 0x80 bit 0 enables the block).  OVMF's
 * PlatformPei programs both on i440fx; 0 when absent or disabled. */
static uint16_t piix4_pm_base(void)
{
    if (pci_read32(1, 3, 0x00) != 0x71138086)
        return 0;
    if (!(pci_read32(1, 3, 0x80) & 1))
        return 0;
    return (uint16_t)(pci_read32(1, 3, 0x40) & 0xFFC0);
}

/* The SCI's ISA IRQ.  Bochs's PIIX4 PM raises it through its PCI INTA pin
 * and the PIIX PIRQ router (pci2isa.cc), so it arrives on whatever IRQ the
 * firmware routed that link to and wrote into the interrupt line register
 * (config 0x3C; OVMF: 10).  QEMU hard-wires IRQ 9, the fallback. */
static uint8_t piix4_sci_irq(void)
{
    uint8_t line = (uint8_t)pci_read32(1, 3, 0x3C);

    return line && line < 16 && line != 2 ? line : SCI_IRQ_DEFAULT;
}

/* I/O APIC ID register (index 0, bits 27:24), through IOREGSEL/IOWIN. */
static uint8_t ioapic_id(void)
{
    volatile uint32_t *sel = (volatile uint32_t *)(uintptr_t)IOAPIC_BASE;
    volatile uint32_t *win = (volatile uint32_t *)(uintptr_t)(IOAPIC_BASE + 0x10);

    *sel = 0;
    return (uint8_t)((*win >> 24) & 0x0F);
}

static uint32_t lapic_base(void)
{
    uint32_t lo, hi;

    __asm__ volatile("rdmsr" : "=a"(lo), "=d"(hi) : "c"(IA32_APIC_BASE));
    return lo & 0xFFFFF000u;
}

static EFI_STATUS gather_cpus(struct acpi_platform *p)
{
    EFI_GUID guid = HV_EFI_MP_SERVICES_PROTOCOL_GUID;
    EFI_MP_SERVICES_PROTOCOL *mp = NULL;
    UINTN total = 0, enabled = 0;
    EFI_STATUS st;

    st = bs->LocateProtocol(&guid, NULL, (VOID **)&mp);
    if (EFI_ERROR(st))
        return st;
    st = mp->GetNumberOfProcessors(mp, &total, &enabled);
    if (EFI_ERROR(st))
        return st;
    if (total > ACPI_MAX_CPUS)
        total = ACPI_MAX_CPUS;
    for (UINTN i = 0; i < total; i++) {
        EFI_PROCESSOR_INFORMATION info;

        st = mp->GetProcessorInfo(mp, i, &info);
        if (EFI_ERROR(st))
            return st;
        p->cpu[i].apic_id = (uint32_t)info.ProcessorId;
        p->cpu[i].uid = (uint32_t)i;
        p->cpu[i].enabled = !!(info.StatusFlag & PROCESSOR_ENABLED_BIT);
    }
    p->ncpus = total;
    return EFI_SUCCESS;
}

/* True when the firmware already lists a MADT in its XSDT (5.2.5.3 RSDP,
 * 5.2.8 XSDT): then there is nothing to add. */
static bool madt_present(EFI_SYSTEM_TABLE *st)
{
    EFI_GUID acpi20 = ACPI_20_TABLE_GUID;

    for (UINTN i = 0; i < st->NumberOfTableEntries; i++) {
        EFI_CONFIGURATION_TABLE *t = &st->ConfigurationTable[i];
        const uint8_t *rsdp = t->VendorTable, *xsdt;
        uint64_t x;
        uint32_t len;

        if (memcmp(&t->VendorGuid, &acpi20, sizeof(acpi20)) || !rsdp ||
            rsdp[15] < 2)
            continue;
        memcpy(&x, rsdp + 24, 8);
        xsdt = (const uint8_t *)(uintptr_t)x;
        if (!xsdt)
            continue;
        memcpy(&len, xsdt + 4, 4);
        for (uint32_t off = 36; off + 8 <= len; off += 8) {
            memcpy(&x, xsdt + off, 8);
            if (x && !memcmp((const void *)(uintptr_t)x, "APIC", 4))
                return true;
        }
    }
    return false;
}

/* ---- installing -------------------------------------------------------- */
static EFI_STATUS install(ACPI_TABLE_PROTOCOL *acpi, const char *what,
                          uint8_t *buf, size_t len)
{
    UINTN key = 0;
    EFI_STATUS st;

    if (!len) {
        hv_log("PLATFORM: acpi %s build failed\n", what);
        return EFI_BUFFER_TOO_SMALL;
    }
    st = acpi->InstallAcpiTable(acpi, buf, len, &key);
    if (EFI_ERROR(st))
        hv_log("PLATFORM: acpi %s install failed status=%s\n", what,
               efi_status_name(st));
    return st;
}

static void install_tables(EFI_SYSTEM_TABLE *st)
{
    EFI_GUID guid = ACPI_TABLE_PROTOCOL_GUID;
    ACPI_TABLE_PROTOCOL *acpi = NULL;
    static struct acpi_platform p;
    static uint8_t buf[4096];
    EFI_STATUS s;

    if (madt_present(st)) {
        hv_log("PLATFORM: acpi skipped reason=madt-present\n");
        return;
    }
    s = bs->LocateProtocol(&guid, NULL, (VOID **)&acpi);
    if (EFI_ERROR(s) || !acpi) {
        hv_log("PLATFORM: acpi skipped reason=no-acpi-table-protocol status=%s\n",
               efi_status_name(s));
        return;
    }
    s = gather_cpus(&p);
    if (EFI_ERROR(s)) {
        hv_log("PLATFORM: acpi skipped reason=mp-services status=%s\n",
               efi_status_name(s));
        return;
    }
    p.lapic_addr = lapic_base();
    p.ioapic_addr = IOAPIC_BASE;
    p.ioapic_id = ioapic_id();
    p.pm_base = piix4_pm_base();
    p.sci_irq = p.pm_base ? piix4_sci_irq() : SCI_IRQ_DEFAULT;

    /* The protocol copies each table; FACS and DSDT first so it can link
     * them into the FADT as that goes in. */
    if (p.pm_base) {
        if (EFI_ERROR(install(acpi, "facs", buf, acpi_build_facs(buf, sizeof(buf)))) ||
            EFI_ERROR(install(acpi, "dsdt", buf, acpi_build_dsdt(buf, sizeof(buf)))) ||
            EFI_ERROR(install(acpi, "fadt", buf, acpi_build_fadt(buf, sizeof(buf), &p))))
            return;
    }
    if (EFI_ERROR(install(acpi, "madt", buf, acpi_build_madt(buf, sizeof(buf), &p))))
        return;
    if (p.pm_base) {
        hv_log("PLATFORM: acpi madt cpus=%zu ioapic=%u pm1a=0x%x\n", p.ncpus,
               p.ioapic_id, p.pm_base + PIIX4_PM1_EVT);
        hv_log("PLATFORM: acpi fadt sci=%u pm_tmr=0x%x s5=%u\n", p.sci_irq,
               p.pm_base + PIIX4_PM_TMR, ACPI_BOCHS_S5_SLP_TYP);
    } else
        hv_log("PLATFORM: acpi madt cpus=%zu ioapic=%u pm1a=none\n", p.ncpus,
               p.ioapic_id);
}

/* ---- starting the hypervisor ------------------------------------------- */
/* The directory of our own file path (its FILEPATH nodes), with a trailing
 * '\', ASCII; "\EFI\BOOT\" when the path cannot be read. */
static void own_dir(EFI_LOADED_IMAGE *li, char *out, size_t cap)
{
    size_t n = 0, slash = 0;

    for (EFI_DEVICE_PATH *d = li->FilePath; d && !hv_dp_is_end(d);
         d = hv_dp_next(d)) {
        if (d->Type != HV_DP_MEDIA || d->SubType != HV_DP_MEDIA_FILEPATH)
            continue;
        const uint8_t *name = (const uint8_t *)d + 4;
        size_t chars = (hv_dp_len(d) - 4) / 2;

        for (size_t i = 0; i < chars && n + 1 < cap; i++) {
            uint16_t c = (uint16_t)(name[2 * i] | (name[2 * i + 1] << 8));

            if (!c)
                break;
            if (c == '\\' && n && out[n - 1] == '\\')
                continue;
            out[n++] = c < 0x80 ? (char)c : '?';
        }
        if (n && out[n - 1] != '\\' && n + 1 < cap)
            out[n++] = '\\';            /* nodes are directory levels */
    }
    /* Drop the last component (our own file name). */
    if (n && out[n - 1] == '\\')
        n--;
    for (size_t i = 0; i < n; i++)
        if (out[i] == '\\')
            slash = i + 1;
    if (!slash) {
        hv_snprintf(out, cap, "\\EFI\\BOOT\\");
        return;
    }
    out[slash] = '\0';
}

/* The volume's device path + one FILEPATH node + End (efi/lib/devpath.c). */
static EFI_DEVICE_PATH *file_dp(EFI_HANDLE dev, const char *path)
{
    EFI_GUID dp_guid = EFI_DEVICE_PATH_PROTOCOL_GUID;
    EFI_DEVICE_PATH *vol = NULL, *d;
    size_t len = 4 + (strlen(path) + 1) * 2 + 4;
    uint8_t *out;

    if (EFI_ERROR(bs->HandleProtocol(dev, &dp_guid, (VOID **)&vol)) || !vol)
        return NULL;
    for (d = vol; !hv_dp_is_end(d); d = hv_dp_next(d))
        len += hv_dp_len(d);
    if (EFI_ERROR(bs->AllocatePool(EfiLoaderData, len, (VOID **)&out)))
        return NULL;
    if (!hv_file_dp(vol, path, out, len)) {
        bs->FreePool(out);
        return NULL;
    }
    return (EFI_DEVICE_PATH *)out;
}

static EFI_STATUS start_hv(EFI_HANDLE image)
{
    EFI_GUID li_guid = EFI_LOADED_IMAGE_PROTOCOL_GUID;
    EFI_LOADED_IMAGE *li = NULL;
    EFI_DEVICE_PATH *dp;
    EFI_HANDLE child = NULL;
    char path[256];
    EFI_STATUS st;

    hv_snprintf(path, sizeof(path), "\\EFI\\BOOT\\" HV_FILE);
    st = bs->HandleProtocol(image, &li_guid, (VOID **)&li);
    if (EFI_ERROR(st))
        goto fail;
    own_dir(li, path, sizeof(path) - sizeof(HV_FILE));
    hv_snprintf(path + strlen(path), sizeof(HV_FILE), HV_FILE);
    dp = file_dp(li->DeviceHandle, path);
    if (!dp) {
        st = EFI_OUT_OF_RESOURCES;
        goto fail;
    }
    st = bs->LoadImage(FALSE, image, dp, NULL, 0, &child);
    bs->FreePool(dp);
    if (EFI_ERROR(st)) {
        if (child)                      /* a security violation loads it */
            bs->UnloadImage(child);
        goto fail;
    }
    st = bs->StartImage(child, NULL, NULL);
    if (EFI_ERROR(st))
        goto fail;
    return st;
fail:
    hv_log("PLATFORM: chainload failed path=%s status=%s\n", path,
           efi_status_name(st));
    return st;
}

EFI_STATUS EFIAPI efi_main(EFI_HANDLE image, EFI_SYSTEM_TABLE *st)
{
    bs = st->BootServices;
    serial_init();
    install_tables(st);
    return start_hv(image);
}
