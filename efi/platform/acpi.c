/*
 * acpi.c - the ACPI facts the platform hands to the core: the FADT's reset
 * register for the failure policy (ACPI 6.5 5.2.9: RESET_REG at offset
 * 116, RESET_VALUE at 128, usable when Flags bit 10 RESET_REG_SUP is set),
 * the DSDT's sleep types, and the FACS for the S3 resume (X_FIRMWARE_CTRL
 * at 132, else FIRMWARE_CTRL at 36); and one table of our own added to the
 * XSDT (the log ring's HVLG table, plat_acpi_add_table).
 */
#include "hv.h"
#include "hv_efi.h"
#include "hv_lib.h"
#include "hv_ring.h"

struct sdt_header {
    char sig[4];
    uint32_t length;
    uint8_t revision, checksum;
    char oem[6], oem_table[8];
    uint32_t oem_rev, creator, creator_rev;
} __attribute__((packed));

/* The XSDT the ACPI 2.0 configuration table leads to (5.2.5.3 RSDP: revision
 * at 15, XsdtAddress at 24), NULL if none. */
static const struct sdt_header *find_xsdt(void)
{
    EFI_GUID acpi20 = ACPI_20_TABLE_GUID;
    const uint8_t *rsdp = NULL;
    const struct sdt_header *xsdt;

    for (UINTN i = 0; i < plat_st->NumberOfTableEntries; i++) {
        EFI_CONFIGURATION_TABLE *t = &plat_st->ConfigurationTable[i];

        if (!memcmp(&t->VendorGuid, &acpi20, sizeof(acpi20)))
            rsdp = t->VendorTable;
    }
    if (!rsdp || memcmp(rsdp, "RSD PTR ", 8) || rsdp[15] < 2)
        return NULL;                        /* XSDT only: every firmware we run has one */
    xsdt = (const void *)(uintptr_t)*(const uint64_t *)(rsdp + 24);
    if (!xsdt || memcmp(xsdt->sig, "XSDT", 4) || xsdt->length < sizeof(*xsdt))
        return NULL;
    return xsdt;
}

static const struct sdt_header *find_fadt(void)
{
    const struct sdt_header *xsdt = find_xsdt();
    const uint64_t *entries;

    if (!xsdt)
        return NULL;
    entries = (const uint64_t *)(xsdt + 1);
    for (uint32_t i = 0; i < (xsdt->length - sizeof(*xsdt)) / 8; i++) {
        const struct sdt_header *t = (const void *)(uintptr_t)entries[i];

        if (t && !memcmp(t->sig, "FACP", 4))
            return t;
    }
    return NULL;
}

/* SLP_TYPa of \_S3 and \_S5 for the core's sleep-state report (sleep.c). */
void plat_acpi_sleep_types(void)
{
    const struct sdt_header *f = find_fadt(), *dsdt = NULL;
    const uint8_t *b = (const uint8_t *)f;
    int s3 = -1, s5 = -1;

    if (f && f->length >= 148 && *(const uint64_t *)(b + 140))
        dsdt = (const void *)(uintptr_t)*(const uint64_t *)(b + 140);     /* X_DSDT */
    else if (f && f->length >= 44)
        dsdt = (const void *)(uintptr_t)*(const uint32_t *)(b + 40);      /* DSDT */
    if (dsdt && !memcmp(dsdt->sig, "DSDT", 4) && dsdt->length > sizeof(*dsdt)) {
        s3 = hv_aml_sleep_type((const uint8_t *)(dsdt + 1), dsdt->length - sizeof(*dsdt), 3);
        s5 = hv_aml_sleep_type((const uint8_t *)(dsdt + 1), dsdt->length - sizeof(*dsdt), 5);
    }
    hv_set_sleep_types(s3, s5);
}

/* The FACS and two pages below 1 MiB for the core's S3 resume stub. */
void plat_acpi_s3_resume(void)
{
    const struct sdt_header *f = find_fadt();
    const uint8_t *b = (const uint8_t *)f;
    void *facs = NULL;

    if (f && f->length >= 140 && *(const uint64_t *)(b + 132))
        facs = (void *)(uintptr_t)*(const uint64_t *)(b + 132);
    else if (f && f->length >= 40)
        facs = (void *)(uintptr_t)*(const uint32_t *)(b + 36);
    hv_set_s3_resume(facs, facs ? plat_alloc_low_pages(2) : NULL);
}

bool plat_acpi_reset_reg(struct hv_reset_reg *out)
{
    const struct sdt_header *f = find_fadt();
    const uint8_t *b = (const uint8_t *)f;

    memset(out, 0xFF, sizeof(*out));        /* space 0xFF: none */
    if (!f || f->length < 129 || !(*(const uint32_t *)(b + 112) & (1u << 10)))
        return false;
    if (b[116] > 1 || !*(const uint64_t *)(b + 120))
        return false;                       /* only memory and I/O space */
    out->space = b[116];
    out->addr = *(const uint64_t *)(b + 120);
    out->value = b[128];
    return true;
}

/* ---- one table of our own in the XSDT ------------------------------------ */
#define RSDP_LEN 36                         /* ACPI 6.5 5.2.5.3, revision 2 */
#define MAX_XSDT_ENTRIES 256

/* The firmware's XSDT at `xsdt`, without an older copy of `table`'s
 * signature (ours from an earlier start), then `table` (5.2.8: the header,
 * then 64-bit table addresses), its checksum set. */
static void xsdt_with(struct sdt_header *xsdt, const struct sdt_header *old,
                      const struct sdt_header *table)
{
    const uint64_t *from = (const uint64_t *)(old + 1);
    uint64_t *to = (uint64_t *)(xsdt + 1);
    uint32_t n = 0;

    memcpy(xsdt, old, sizeof(*old));
    for (uint32_t i = 0; i < (old->length - sizeof(*old)) / 8; i++) {
        const struct sdt_header *e = (const void *)(uintptr_t)from[i];

        if (!e || memcmp(e->sig, table->sig, 4))
            to[n++] = from[i];
    }
    to[n++] = (uint64_t)(uintptr_t)table;
    xsdt->length = sizeof(*xsdt) + n * 8;
    xsdt->checksum = 0;
    xsdt->checksum = (uint8_t)-hv_sum8(xsdt, xsdt->length);
}

/* A copy of the firmware's RSDP (5.2.5.3) that leads to `xsdt`: Checksum
 * (offset 8) covers bytes 0-19, Extended Checksum (32) all 36. */
static void rsdp_for(uint8_t *rsdp, const uint8_t *old, const struct sdt_header *xsdt)
{
    memcpy(rsdp, old, RSDP_LEN);
    *(uint32_t *)(rsdp + 20) = RSDP_LEN;
    *(uint64_t *)(rsdp + 24) = (uint64_t)(uintptr_t)xsdt;
    rsdp[8] = 0;
    rsdp[8] = (uint8_t)-hv_sum8(rsdp, 20);
    rsdp[32] = 0;
    rsdp[32] = (uint8_t)-hv_sum8(rsdp, RSDP_LEN);
}

/* A new RSDP and XSDT in one page of ACPI reclaim memory, and the ACPI 2.0
 * configuration table pointed at them: the firmware's own tables are left
 * as they are.  The OS finds the RSDP through that configuration table
 * (Linux: efi.acpi20, and the EFI stub's acpi_rsdp_addr).  `table` itself
 * must be memory the OS never reclaims; the new RSDP and XSDT are never
 * written again, so an OS may reclaim their page once it has read them. */
bool plat_acpi_add_table(const void *table)
{
    EFI_GUID acpi20 = ACPI_20_TABLE_GUID;
    const struct sdt_header *old = find_xsdt();
    EFI_PHYSICAL_ADDRESS addr = 0xFFFFFFFFull;
    const uint8_t *old_rsdp = NULL;
    uint8_t *page;
    EFI_STATUS s;

    for (UINTN i = 0; i < plat_st->NumberOfTableEntries; i++)
        if (!memcmp(&plat_st->ConfigurationTable[i].VendorGuid, &acpi20, sizeof(acpi20)))
            old_rsdp = plat_st->ConfigurationTable[i].VendorTable;
    if (!old || !old_rsdp) {
        hv_log("HV: log acpi none reason=no-xsdt\n");
        return false;
    }
    if ((old->length - sizeof(*old)) / 8 >= MAX_XSDT_ENTRIES) {
        hv_log("HV: log acpi none reason=xsdt-full entries=%u\n",
               (unsigned)((old->length - sizeof(*old)) / 8));
        return false;
    }
    s = plat_bs->AllocatePages(AllocateMaxAddress, EfiACPIReclaimMemory, 1, &addr);
    if (EFI_ERROR(s)) {
        hv_log("HV: log acpi none reason=no-memory status=%s\n", efi_status_name(s));
        return false;
    }
    page = (uint8_t *)(uintptr_t)addr;
    memset(page, 0, 4096);
    xsdt_with((struct sdt_header *)(page + 64), old, table);
    rsdp_for(page, old_rsdp, (const struct sdt_header *)(page + 64));
    s = plat_bs->InstallConfigurationTable(&acpi20, page);
    if (EFI_ERROR(s)) {
        hv_log("HV: log acpi none reason=config-table status=%s\n", efi_status_name(s));
        plat_bs->FreePages(addr, 1);
        return false;
    }
    return true;
}
