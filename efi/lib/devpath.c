/*
 * devpath.c - the device path of a file on a volume: the volume's own path,
 * one FILEPATH node (UEFI 2.10 10.3.5.4) holding an ASCII path as UCS-2,
 * then End.  Pure: no UEFI call, the caller owns the buffer.
 */
#include "hv.h"
#include "hv_efi.h"
#include "hv_lib.h"

size_t hv_file_dp(const EFI_DEVICE_PATH *vol, const char *path, void *buf, size_t cap)
{
    size_t vol_len = 0, node = 4 + (strlen(path) + 1) * 2, i;
    uint8_t *p = buf;

    for (const EFI_DEVICE_PATH *n = vol; n && !hv_dp_is_end(n); n = hv_dp_next(n))
        vol_len += hv_dp_len(n);
    if (node > 0xFFFF || vol_len + node + 4 > cap)
        return 0;
    memcpy(p, vol, vol_len);
    p += vol_len;
    p[0] = HV_DP_MEDIA;
    p[1] = HV_DP_MEDIA_FILEPATH;
    p[2] = (uint8_t)node;
    p[3] = (uint8_t)(node >> 8);
    for (i = 0; i <= strlen(path); i++) {
        p[4 + 2 * i] = (uint8_t)path[i];
        p[5 + 2 * i] = 0;
    }
    p += node;
    p[0] = HV_DP_END;
    p[1] = HV_DP_END_ENTIRE;
    p[2] = 4;
    p[3] = 0;
    return vol_len + node + 4;
}
