/*
 * aml_sleep.c - the SLP_TYPa value of a sleep state (\_S3, \_S5) from the
 * DSDT's AML (ACPI 6.5 7.4.2: Name (_Sx, Package () {SLP_TYPa, SLP_TYPb,
 * ...})).  A pattern scan, not an interpreter: the packages are plain data
 * in every DSDT we know.  Pure C (host-tested by tests/test_ring.py).
 */
#include <stddef.h>
#include <stdint.h>

#include "hv_cfg.h"

/* -1 when the DSDT has no such package or it is not plain data. */
int hv_aml_sleep_type(const uint8_t *aml, size_t len, unsigned state)
{
    const uint8_t name[4] = {'_', 'S', (uint8_t)('0' + state), '_'};

    for (size_t i = 1; i + 8 <= len; i++) {
        const uint8_t *p = aml + i;
        size_t pkglen_bytes;

        if (p[0] != name[0] || p[1] != name[1] || p[2] != name[2] || p[3] != name[3])
            continue;
        if (aml[i - 1] != 0x08 && !(i >= 2 && aml[i - 1] == '\\' && aml[i - 2] == 0x08))
            continue;                               /* NameOp, optionally "\" */
        if (p[4] != 0x12)                           /* PackageOp */
            continue;
        pkglen_bytes = 1 + (p[5] >> 6);             /* PkgLength lead byte */
        p += 5 + pkglen_bytes + 1;                  /* past PkgLength and NumElements */
        if ((size_t)(p - aml) + 2 > len)
            return -1;
        if (p[0] == 0x00 || p[0] == 0x01)           /* ZeroOp, OneOp */
            return p[0];
        if (p[0] == 0x0A)                           /* BytePrefix */
            return p[1];
        return -1;
    }
    return -1;
}
