/*
 * acpi.c - the ACPI facts the platform hands to the core: the FADT's reset
 * register for the failure policy (ACPI 6.5 5.2.9: RESET_REG at offset
 * 116, RESET_VALUE at 128, usable when Flags bit 10 RESET_REG_SUP is set),
 * the sleep types, and the FACS for the S3 resume (X_FIRMWARE_CTRL at 132,
 * else FIRMWARE_CTRL at 36).
 */
#include "hv.h"
#include "hv_efi.h"
#include "hv_lib.h"

struct sdt_header {
    char sig[4];
    uint32_t length;
    uint8_t revision, checksum;
    char oem[6], oem_table[8];
    uint32_t oem_rev, creator, creator_rev;
} __attribute__((packed));

static const struct sdt_header *find_fadt(void)
{
    EFI_GUID acpi20 = ACPI_20_TABLE_GUID;
    const uint8_t *rsdp = NULL;
    const struct sdt_header *xsdt;
    const uint64_t *entries;

    for (UINTN i = 0; i < plat_st->NumberOfTableEntries; i++) {
        EFI_CONFIGURATION_TABLE *t = &plat_st->ConfigurationTable[i];

        if (!memcmp(&t->VendorGuid, &acpi20, sizeof(acpi20)))
            rsdp = t->VendorTable;
    }
    if (!rsdp || memcmp(rsdp, "RSD PTR ", 8) || rsdp[15] < 2)
        return NULL;                        /* XSDT only: every firmware we run has one */
    xsdt = (const void *)(uintptr_t)*(const uint64_t *)(rsdp + 24);
    if (!xsdt || memcmp(xsdt->sig, "XSDT", 4))
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
