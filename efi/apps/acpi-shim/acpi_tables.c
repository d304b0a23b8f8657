/*
 * acpi_tables.c - MADT, FADT, FACS and DSDT for the Bochs test platform.
 *
 * Written field by field at the offsets the spec gives (ACPI 6.4), little
 * endian, so the same code builds for UEFI and for the host unit tests.
 * EFI_ACPI_TABLE_PROTOCOL links FACS and DSDT into the FADT and lists the
 * others in the RSDT/XSDT it publishes.
 */
#include "acpi_tables.h"

#define HDR_LEN 36

static void put8(uint8_t *b, size_t off, uint8_t v) { b[off] = v; }

static void put16(uint8_t *b, size_t off, uint16_t v)
{
    b[off] = (uint8_t)v;
    b[off + 1] = (uint8_t)(v >> 8);
}

static void put32(uint8_t *b, size_t off, uint32_t v)
{
    put16(b, off, (uint16_t)v);
    put16(b, off + 2, (uint16_t)(v >> 16));
}

static void put64(uint8_t *b, size_t off, uint64_t v)
{
    put32(b, off, (uint32_t)v);
    put32(b, off + 4, (uint32_t)(v >> 32));
}

static void putn(uint8_t *b, size_t off, const char *s, size_t n)
{
    for (size_t i = 0; i < n; i++)
        b[off + i] = (uint8_t)s[i];
}

static void zero(uint8_t *b, size_t n)
{
    for (size_t i = 0; i < n; i++)
        b[i] = 0;
}

uint8_t acpi_sum(const uint8_t *buf, size_t n)
{
    uint8_t s = 0;

    for (size_t i = 0; i < n; i++)
        s = (uint8_t)(s + buf[i]);
    return s;
}

/* 5.2.6 System Description Table Header; the checksum is set last. */
static void header(uint8_t *b, const char *sig, uint32_t len, uint8_t rev)
{
    putn(b, 0, sig, 4);
    put32(b, 4, len);
    put8(b, 8, rev);
    putn(b, 10, ACPI_OEM_ID, 6);
    putn(b, 16, ACPI_OEM_TABLE_ID, 8);
    put32(b, 24, 1);                    /* OEM revision */
    putn(b, 28, "MHVS", 4);             /* creator ID */
    put32(b, 32, 1);                    /* creator revision */
}

static void checksum(uint8_t *b, size_t len)
{
    b[9] = 0;
    b[9] = (uint8_t)(0x100 - acpi_sum(b, len));
}

/* 5.2.3.2 Generic Address Structure, system I/O space. */
static void gas_io(uint8_t *b, size_t off, uint16_t port, uint8_t bits,
                   uint8_t access)
{
    put8(b, off, 1);                    /* address space: system I/O */
    put8(b, off + 1, bits);             /* register bit width */
    put8(b, off + 2, 0);                /* bit offset */
    put8(b, off + 3, access);           /* 1 byte, 2 word, 3 dword */
    put64(b, off + 4, port);
}

/* ---- 5.2.12 Multiple APIC Description Table ---------------------------- */
#define MADT_LAPIC          0           /* 5.2.12.2 */
#define MADT_IOAPIC         1           /* 5.2.12.3 */
#define MADT_ISO            2           /* 5.2.12.5 */
#define MADT_LAPIC_NMI      4           /* 5.2.12.7 */
#define MADT_X2APIC         9           /* 5.2.12.12 */
#define MADT_PCAT_COMPAT    1           /* dual 8259s present (Table 5.44) */
#define MPS_INTI_LEVEL_HIGH 0x000D      /* polarity 01 high, trigger 11 level */

static size_t iso(uint8_t *b, size_t off, uint8_t irq, uint32_t gsi,
                  uint16_t flags)
{
    put8(b, off, MADT_ISO);
    put8(b, off + 1, 10);
    put8(b, off + 2, 0);                /* bus: ISA */
    put8(b, off + 3, irq);
    put32(b, off + 4, gsi);
    put16(b, off + 8, flags);
    return 10;
}

size_t acpi_build_madt(uint8_t *buf, size_t cap, const struct acpi_platform *p)
{
    size_t len = HDR_LEN + 8 + 12 + 2 * 10 + 6;

    if (!p->ncpus || p->ncpus > ACPI_MAX_CPUS)
        return 0;
    for (size_t i = 0; i < p->ncpus; i++)
        len += p->cpu[i].apic_id < 0xFF ? 8 : 16;
    if (cap < len)
        return 0;
    zero(buf, len);
    header(buf, "APIC", (uint32_t)len, 4);
    put32(buf, 36, p->lapic_addr);
    put32(buf, 40, MADT_PCAT_COMPAT);

    size_t off = HDR_LEN + 8;
    for (size_t i = 0; i < p->ncpus; i++) {
        const struct acpi_cpu *c = &p->cpu[i];

        if (c->apic_id < 0xFF) {        /* 0xFF is the broadcast ID */
            put8(buf, off, MADT_LAPIC);
            put8(buf, off + 1, 8);
            put8(buf, off + 2, (uint8_t)c->uid);
            put8(buf, off + 3, (uint8_t)c->apic_id);
            put32(buf, off + 4, c->enabled ? 1 : 0);
            off += 8;
        } else {
            put8(buf, off, MADT_X2APIC);
            put8(buf, off + 1, 16);
            put32(buf, off + 4, c->apic_id);
            put32(buf, off + 8, c->enabled ? 1 : 0);
            put32(buf, off + 12, c->uid);
            off += 16;
        }
    }
    put8(buf, off, MADT_IOAPIC);
    put8(buf, off + 1, 12);
    put8(buf, off + 2, p->ioapic_id);
    put32(buf, off + 4, p->ioapic_addr);
    put32(buf, off + 8, 0);             /* GSI base: pins are GSIs 0..23 */
    off += 12;
    /* Bochs's I/O APIC takes the PIT (ISA IRQ0) on pin 2 (ioapic.cc
     * set_irq_level); every other ISA IRQ n is pin n. */
    off += iso(buf, off, 0, 2, 0);
    /* The SCI is level triggered, active high as the emulated PIIX4 drives
     * it (5.2.9: SCI_INT; without an override Linux assumes active low). */
    off += iso(buf, off, p->sci_irq, p->sci_irq, MPS_INTI_LEVEL_HIGH);
    put8(buf, off, MADT_LAPIC_NMI);     /* LINT1 of every CPU is NMI */
    put8(buf, off + 1, 6);
    put8(buf, off + 2, 0xFF);           /* all processors */
    put16(buf, off + 3, 0);
    put8(buf, off + 5, 1);
    off += 6;
    checksum(buf, len);
    return len;
}

/* ---- 5.2.9 Fixed ACPI Description Table, revision 5 (ACPI 5.0 layout) -- */
#define FADT_LEN            268
#define FADT_WBINVD         (1u << 0)
#define FADT_PROC_C1        (1u << 2)
#define FADT_SLP_BUTTON     (1u << 5)   /* no fixed-feature sleep button */
#define BOOT_LEGACY_DEVICES (1u << 0)   /* IAPC_BOOT_ARCH (5.2.9.3) */
#define BOOT_8042           (1u << 1)
#define CMOS_CENTURY        0x32

size_t acpi_build_fadt(uint8_t *buf, size_t cap, const struct acpi_platform *p)
{
    uint16_t evt = (uint16_t)(p->pm_base + PIIX4_PM1_EVT);
    uint16_t cnt = (uint16_t)(p->pm_base + PIIX4_PM1_CNT);
    uint16_t tmr = (uint16_t)(p->pm_base + PIIX4_PM_TMR);

    if (cap < FADT_LEN || !p->pm_base)
        return 0;
    zero(buf, FADT_LEN);
    header(buf, "FACP", FADT_LEN, 5);
    /* FIRMWARE_CTRL (36), DSDT (40) and their X_ forms (132, 140) are
     * filled in by the ACPI table protocol when FACS and DSDT go in. */
    put8(buf, 45, 0);                   /* preferred PM profile: unspecified */
    put16(buf, 46, p->sci_irq);         /* SCI_INT */
    /* SMI_CMD (48) = 0: no SMM handshake; the platform is always in ACPI
     * mode (4.8.2.1: OSPM then must not try to switch). */
    put32(buf, 56, evt);                /* PM1a_EVT_BLK */
    put32(buf, 64, cnt);                /* PM1a_CNT_BLK */
    put32(buf, 76, tmr);                /* PM_TMR_BLK */
    put8(buf, 88, 4);                   /* PM1_EVT_LEN: status + enable */
    put8(buf, 89, 2);                   /* PM1_CNT_LEN */
    put8(buf, 91, 4);                   /* PM_TMR_LEN */
    put16(buf, 96, 101);                /* P_LVL2_LAT > 100: no C2 */
    put16(buf, 98, 1001);               /* P_LVL3_LAT > 1000: no C3 */
    put8(buf, 108, CMOS_CENTURY);
    put16(buf, 109, BOOT_LEGACY_DEVICES | BOOT_8042);
    put32(buf, 112, FADT_WBINVD | FADT_PROC_C1 | FADT_SLP_BUTTON);
    put8(buf, 131, 0);                  /* FADT minor version */
    /* The X_ blocks repeat the 32-bit ones with bit widths = 8 * LEN, as
     * OSPM cross-checks them (5.2.9). */
    gas_io(buf, 148, evt, 32, 2);       /* X_PM1a_EVT_BLK */
    gas_io(buf, 172, cnt, 16, 2);       /* X_PM1a_CNT_BLK */
    gas_io(buf, 208, tmr, 32, 3);       /* X_PM_TMR_BLK */
    checksum(buf, FADT_LEN);
    return FADT_LEN;
}

/* ---- 5.2.10 Firmware ACPI Control Structure (no checksum) -------------- */
size_t acpi_build_facs(uint8_t *buf, size_t cap)
{
    if (cap < 64)
        return 0;
    zero(buf, 64);
    putn(buf, 0, "FACS", 4);
    put32(buf, 4, 64);
    put8(buf, 32, 2);                   /* version */
    return 64;
}

/* ---- DSDT: one object, \_S5 (7.4.2.4 System \_S5 state) ---------------- */
/* AML (chapter 20):
 *   DefName   NameOp 0x08, NameString "\_S5_" (RootChar 0x5C + NameSeg)
 *   DefPackage PackageOp 0x12, PkgLength (1 byte: itself + the rest),
 *              NumElements 4, then SLP_TYPa, SLP_TYPb, reserved, reserved.
 * SLP_TYP 0 and 1 are ZeroOp (0x00) and OneOp (0x01) as they stand. */
_Static_assert(ACPI_BOCHS_S5_SLP_TYP <= 1, "larger SLP_TYP needs a BytePrefix");
static const uint8_t dsdt_aml[] = {
    0x08, 0x5C, '_', 'S', '5', '_',
    0x12, 0x06, 0x04,
    ACPI_BOCHS_S5_SLP_TYP, ACPI_BOCHS_S5_SLP_TYP, 0x00, 0x00,
};

size_t acpi_build_dsdt(uint8_t *buf, size_t cap)
{
    size_t len = HDR_LEN + sizeof(dsdt_aml);

    if (cap < len)
        return 0;
    zero(buf, len);
    header(buf, "DSDT", (uint32_t)len, 2); /* rev 2: 64-bit AML integers */
    for (size_t i = 0; i < sizeof(dsdt_aml); i++)
        buf[HDR_LEN + i] = dsdt_aml[i];
    checksum(buf, len);
    return len;
}
