/*
 * sleep.c - which ACPI sleep state a PM1a_CNT write with SLP_EN enters
 * (ACPI 6.5 4.8.3.2.1: SLP_TYP in bits 12:10), from the SLP_TYPa values the
 * platform read from the DSDT's \_S3 and \_S5 packages.  Pure: host-tested.
 * The way back from S3 under the hypervisor is s3.c.
 */
#include "hv_core.h"
#include "hv_lib.h"

static int slp_typ_s3 = -1, slp_typ_s5 = -1;

void hv_set_sleep_types(int s3, int s5)
{
    slp_typ_s3 = s3;
    slp_typ_s5 = s5;
}

const char *hv_sleep_state(uint32_t pm1_cnt)
{
    int typ = (pm1_cnt >> 10) & 7;

    if (typ == slp_typ_s5)
        return "S5";
    if (typ == slp_typ_s3)
        return "S3";
    return "unknown";
}
