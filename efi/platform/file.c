/*
 * file.c - files on the app's own volume: the app's directory, whole-file
 * reads, and loading hv.cfg.
 */
#include "hv.h"
#include "hv_efi.h"
#include "hv_lib.h"

#define CFG_NAME "hv.cfg"
#define CFG_MAX_BYTES (64 * 1024)

void plat_app_dir(EFI_LOADED_IMAGE *li, char *out, size_t cap)
{
    EFI_DEVICE_PATH *dp = li->FilePath;
    size_t n = 0, last_sep = 0;

    /* The file path may be split over several FILEPATH nodes; a node's
     * name may or may not carry its own NUL. */
    for (unsigned guard = 0; dp && !hv_dp_is_end(dp) && guard < 64; guard++) {
        if (dp->Type == HV_DP_MEDIA && dp->SubType == HV_DP_MEDIA_FILEPATH) {
            const CHAR16 *name = (const CHAR16 *)((const UINT8 *)dp + 4);
            size_t chars = (hv_dp_len(dp) - 4) / sizeof(CHAR16);

            if (n && out[n - 1] != '\\' && chars && name[0] != '\\' &&
                n + 1 < cap)
                out[n++] = '\\';
            for (size_t i = 0; i < chars && name[i] && n + 1 < cap; i++) {
                CHAR16 c = name[i] == '/' ? '\\' : name[i];
                out[n++] = c < 0x80 ? (char)c : '?';
            }
        }
        dp = hv_dp_next(dp);
    }
    for (size_t i = 0; i < n; i++) {
        if (out[i] == '\\')
            last_sep = i + 1;
    }
    if (last_sep == 0) {
        /* No usable path (e.g. loaded from memory): use the root. */
        out[0] = '\\';
        last_sep = 1;
    }
    out[last_sep < cap ? last_sep : cap - 1] = '\0';
}

EFI_STATUS plat_read_file(EFI_HANDLE device, const CHAR16 *path, char **buf,
                          UINTN *len)
{
    EFI_GUID fs_guid = EFI_SIMPLE_FILE_SYSTEM_PROTOCOL_GUID;
    EFI_GUID info_guid = EFI_FILE_INFO_ID;
    EFI_FILE_IO_INTERFACE *fs = NULL;
    EFI_FILE_HANDLE root = NULL, file = NULL;
    union {
        EFI_FILE_INFO info;
        UINT8 raw[sizeof(EFI_FILE_INFO) + 512];
    } info;
    UINTN info_size = sizeof(info), size, got = 0;
    char *data = NULL;
    EFI_STATUS st;

    *buf = NULL;
    *len = 0;
    st = plat_bs->HandleProtocol(device, &fs_guid, (VOID **)&fs);
    if (EFI_ERROR(st))
        return st;
    st = fs->OpenVolume(fs, &root);
    if (EFI_ERROR(st))
        return st;
    st = root->Open(root, &file, (CHAR16 *)path, EFI_FILE_MODE_READ, 0);
    if (EFI_ERROR(st))
        goto out;
    st = file->GetInfo(file, &info_guid, &info_size, &info);
    if (EFI_ERROR(st))
        goto out;
    if (info.info.Attribute & EFI_FILE_DIRECTORY) {
        st = EFI_NOT_FOUND;
        goto out;
    }
    if (info.info.FileSize > CFG_MAX_BYTES) {
        st = EFI_BAD_BUFFER_SIZE;
        goto out;
    }
    size = (UINTN)info.info.FileSize;
    st = plat_bs->AllocatePool(EfiLoaderData, size + 1, (VOID **)&data);
    if (EFI_ERROR(st))
        goto out;
    while (got < size) {
        UINTN chunk = size - got;

        st = file->Read(file, &chunk, data + got);
        if (EFI_ERROR(st) || chunk == 0)
            break;
        got += chunk;
    }
    if (EFI_ERROR(st)) {
        plat_bs->FreePool(data);
        goto out;
    }
    data[got] = '\0';
    *buf = data;
    *len = got;
    st = EFI_SUCCESS;
out:
    if (file)
        file->Close(file);
    root->Close(root);
    return st;
}

static void cfg_error(void *ctx, unsigned line, const char *reason)
{
    (void)ctx;
    hv_log("HV: config error line=%u reason=%s\n", line, reason);
}

void plat_load_config(EFI_LOADED_IMAGE *li, struct hv_cfg *cfg)
{
    char path[HV_CFG_PATH_MAX + 16];
    CHAR16 wpath[sizeof(path)];
    char *data;
    UINTN len;
    EFI_STATUS st;
    size_t n;

    hv_cfg_defaults(cfg);
    plat_app_dir(li, path, HV_CFG_PATH_MAX);
    n = strlen(path);
    memcpy(path + n, CFG_NAME, sizeof(CFG_NAME));
    for (size_t i = 0; i <= n + sizeof(CFG_NAME) - 1; i++)
        wpath[i] = (unsigned char)path[i];

    st = plat_read_file(li->DeviceHandle, wpath, &data, &len);
    if (st == EFI_NOT_FOUND) {
        hv_log("HV: config missing path=%s, using defaults\n", path);
        return;
    }
    if (EFI_ERROR(st)) {
        hv_log("HV: config unreadable path=%s status=%s, using defaults\n",
               path, efi_status_name(st));
        return;
    }
    hv_log("HV: config path=%s bytes=%llu\n", path, (unsigned long long)len);
    hv_cfg_parse(data, len, cfg, cfg_error, NULL);
    plat_bs->FreePool(data);
}
