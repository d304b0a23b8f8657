/*
 * chainload.c - load and start the next boot stage from the app's volume.
 *
 * The child's LoadOptions carry its command line as UTF-16: for an EFI app
 * "<image name> <args>" as the UEFI shell passes it (word 0 is the image),
 * for a Linux EFI-stub kernel "initrd=<path> <append>" (the stub reads its
 * whole command line, initrd= included, from LoadOptions).
 */
#include "hv.h"
#include "hv_efi.h"
#include "hv_lib.h"

#define OPTS_MAX (HV_CFG_PATH_MAX + HV_CFG_ARGS_MAX + 16)

/* Resolves a config path: absolute ('\...') stays, relative is taken from
 * the app's directory. */
static void resolve(EFI_LOADED_IMAGE *li, const char *p, char *out, size_t cap)
{
    if (p[0] == '\\') {
        hv_snprintf(out, cap, "%s", p);
    } else {
        plat_app_dir(li, out, cap);
        size_t n = strlen(out);
        hv_snprintf(out + n, cap - n, "%s", p);
    }
}

/* UTF-8 to UTF-16 (BMP only; anything else becomes '?').  Returns the
 * number of CHAR16 written, excluding the NUL. */
static size_t utf8_to_utf16(const char *s, CHAR16 *out, size_t cap)
{
    const unsigned char *p = (const unsigned char *)s;
    size_t n = 0;

    while (*p && n + 1 < cap) {
        uint32_t c = *p++;
        int more = c >= 0xF0 ? 3 : c >= 0xE0 ? 2 : c >= 0xC0 ? 1 : 0;

        if (c >= 0x80 && more == 0) {
            c = '?';                    /* stray continuation byte */
        } else if (more) {
            c &= 0x3F >> more;
            for (int i = 0; i < more; i++) {
                if ((*p & 0xC0) != 0x80) {
                    c = '?';
                    more = 0;
                    break;
                }
                c = (c << 6) | (*p++ & 0x3F);
            }
            if (c > 0xFFFF || (c >= 0xD800 && c <= 0xDFFF))
                c = '?';
        }
        out[n++] = (CHAR16)c;
    }
    out[n] = 0;
    return n;
}

/* The device path of `path` on `device`'s volume (efi/lib/devpath.c), in
 * pool memory; NULL if the device has none. */
EFI_DEVICE_PATH *plat_file_dp(EFI_HANDLE device, const char *path)
{
    EFI_GUID dp_guid = EFI_DEVICE_PATH_PROTOCOL_GUID;
    EFI_DEVICE_PATH *vol = NULL, *dp;
    UINTN cap = 4 + (strlen(path) + 1) * sizeof(CHAR16) + 4;

    if (EFI_ERROR(plat_bs->HandleProtocol(device, &dp_guid, (VOID **)&vol)) || !vol)
        return NULL;
    for (EFI_DEVICE_PATH *n = vol; !hv_dp_is_end(n); n = hv_dp_next(n))
        cap += hv_dp_len(n);
    if (EFI_ERROR(plat_bs->AllocatePool(EfiLoaderData, cap, (VOID **)&dp)))
        return NULL;
    if (!hv_file_dp(vol, path, dp, cap)) {
        plat_bs->FreePool(dp);
        return NULL;
    }
    return dp;
}

static void append(char *buf, size_t cap, const char *s)
{
    size_t n = strlen(buf);

    if (n && s[0] && n + 1 < cap)
        buf[n++] = ' ';
    hv_snprintf(buf + n, cap - n, "%s", s);
}

EFI_STATUS plat_chainload(EFI_LOADED_IMAGE *li, const struct hv_cfg *cfg)
{
    EFI_GUID li_guid = EFI_LOADED_IMAGE_PROTOCOL_GUID;
    static char path[HV_CFG_PATH_MAX + HV_CFG_PATH_MAX];
    static char opts[OPTS_MAX];
    static CHAR16 wopts[OPTS_MAX];
    EFI_LOADED_IMAGE *child_li = NULL;
    EFI_DEVICE_PATH *dp;
    EFI_HANDLE child = NULL;
    EFI_STATUS st;
    bool linux_kernel = !cfg->next[0] && cfg->kernel[0];

    if (cfg->next_auto)
        return plat_boot_auto(li);
    if (!cfg->next[0] && !cfg->kernel[0]) {
        hv_log("HV: chainload none reason=no-next-stage\n");
        return EFI_NOT_FOUND;
    }
    if (cfg->next[0] && cfg->kernel[0])
        hv_log("HV: config both next and kernel set, using next\n");
    resolve(li, linux_kernel ? cfg->kernel : cfg->next, path, sizeof(path));
    opts[0] = '\0';
    if (linux_kernel) {
        if (cfg->initrd[0]) {
            char initrd[HV_CFG_PATH_MAX + 8];

            hv_snprintf(initrd, sizeof(initrd), "initrd=%s", cfg->initrd);
            append(opts, sizeof(opts), initrd);
        }
        append(opts, sizeof(opts), cfg->append);
    } else {
        append(opts, sizeof(opts), path);
        append(opts, sizeof(opts), cfg->args);
    }
    hv_log("HV: chainload path=%s\n", path);

    dp = plat_file_dp(li->DeviceHandle, path);
    if (!dp) {
        st = EFI_OUT_OF_RESOURCES;
        goto fail;
    }
    st = plat_bs->LoadImage(FALSE, plat_image, dp, NULL, 0, &child);
    plat_bs->FreePool(dp);
    if (EFI_ERROR(st)) {
        /* A security violation still creates the image: unload it. */
        if (st == EFI_SECURITY_VIOLATION && child)
            plat_bs->UnloadImage(child);
        goto fail;
    }
    st = plat_bs->HandleProtocol(child, &li_guid, (VOID **)&child_li);
    if (EFI_ERROR(st)) {
        plat_bs->UnloadImage(child);
        goto fail;
    }
    size_t wn = utf8_to_utf16(opts, wopts, OPTS_MAX);
    child_li->LoadOptions = wopts;
    child_li->LoadOptionsSize = (UINT32)((wn + 1) * sizeof(CHAR16));

    st = plat_bs->StartImage(child, NULL, NULL);
    hv_log("HV: chainload returned status=%s\n", efi_status_name(st));
    return st;

fail:
    hv_log("HV: chainload failed path=%s status=%s\n", path,
           efi_status_name(st));
    return st;
}
