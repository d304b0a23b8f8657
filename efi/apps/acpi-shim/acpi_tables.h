/*
 * acpi_tables.h - the ACPI tables the Bochs test platform lacks (MADT, FADT,
 * FACS, DSDT), built into caller buffers.
 *
 * Pure C with no UEFI in it: acpi-shim.c gathers the platform facts and
 * installs the results; tests/test_acpi_shim.py builds this file for the
 * host and checks the bytes.  Section numbers are ACPI 6.4.
 */
#ifndef ACPI_TABLES_H
#define ACPI_TABLES_H

#include <stddef.h>
#include <stdint.h>

#define ACPI_OEM_ID         "MICROH"    /* 6 bytes */
#define ACPI_OEM_TABLE_ID   "BOCHSHIM"  /* 8 bytes */
#define ACPI_MAX_CPUS       64

/* SLP_TYP that Bochs's PIIX4 PM (iodev/acpi.cc) treats as soft-off when
 * SLP_EN is written to PM1_CNT: sus_typ 0. */
#define ACPI_BOCHS_S5_SLP_TYP 0

/* PIIX4 power-management I/O block, offsets from PMBA (PIIX4 datasheet
 * 7.2): PM1 status/enable, PM1 control, the 24-bit PM timer. */
#define PIIX4_PM1_EVT   0x00
#define PIIX4_PM1_CNT   0x04
#define PIIX4_PM_TMR    0x08

struct acpi_cpu {
    uint32_t apic_id;
    uint32_t uid;              /* ACPI processor UID */
    int enabled;
};

struct acpi_platform {
    uint32_t lapic_addr;       /* IA32_APIC_BASE & ~0xFFF */
    size_t ncpus;
    struct acpi_cpu cpu[ACPI_MAX_CPUS];
    uint8_t ioapic_id;
    uint32_t ioapic_addr;
    uint16_t pm_base;          /* PIIX4 PMBA; 0: no PM block, no FADT */
    uint8_t sci_irq;           /* ISA IRQ of the SCI */
};

/* Each returns the table length written to buf (checksum set), or 0 when
 * cap is too small or the input is unusable. */
size_t acpi_build_madt(uint8_t *buf, size_t cap, const struct acpi_platform *p);
size_t acpi_build_fadt(uint8_t *buf, size_t cap, const struct acpi_platform *p);
size_t acpi_build_facs(uint8_t *buf, size_t cap);
size_t acpi_build_dsdt(uint8_t *buf, size_t cap);

/* Sum of n bytes mod 256 (0 for a table with a correct checksum). */
uint8_t acpi_sum(const uint8_t *buf, size_t n);

#endif
