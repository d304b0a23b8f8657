/*
 * nextboot.c - `next=auto`: find and start the machine's own OS.
 *
 * Order (UEFI 2.10 section 3.1): BootNext, then BootOrder.  An entry is
 * skipped when it is inactive or hidden, is BootCurrent (the entry that
 * started us), is a firmware application (a PIWG firmware-volume file:
 * setup, shell), or resolves to our own device.  Short-form device paths
 * (section 3.1.2: HD(...)/File, bare File) are expanded against the file
 * systems present; a device-only entry boots the removable-media path
 * \EFI\BOOT\BOOTX64.EFI on it.  After the entries come the well-known loader
 * paths on every other file system.  A candidate that LoadImage refuses
 * (EFI_SECURITY_VIOLATION under Secure Boot, a missing file) is logged and
 * the walk goes on; the first one that loads is started, and if it returns
 * an error the walk goes on too.
 *
 * A volatile variable guards against loops: when a second copy of this app
 * is reached through some entry, it sees the variable and returns at once.
 */
#include "hv.h"
#include "hv_efi.h"
#include "hv_lib.h"

#define LOAD_OPTION_ACTIVE  0x00000001
#define LOAD_OPTION_HIDDEN  0x00000008
#define ORDER_MAX 64
#define TEXT_MAX 160

static const char *const well_known[] = {
    "\\EFI\\debian\\shimx64.efi",
    "\\EFI\\ubuntu\\shimx64.efi",
    "\\EFI\\fedora\\shimx64.efi",
    "\\EFI\\redhat\\shimx64.efi",
    "\\EFI\\opensuse\\shim.efi",
    "\\EFI\\Microsoft\\Boot\\bootmgfw.efi",
    "\\EFI\\systemd\\systemd-bootx64.efi",
    "\\EFI\\debian\\grubx64.efi",
    "\\EFI\\ubuntu\\grubx64.efi",
    "\\EFI\\BOOT\\BOOTX64.EFI",
};

/* {8b8f0ca1-3c5c-4d4e-9f4b-6876686f6f6b}: our vendor GUID for the guard. */
static EFI_GUID hv_guid = { 0x8b8f0ca1, 0x3c5c, 0x4d4e,
                            { 0x9f, 0x4b, 0x68, 0x76, 0x68, 0x6f, 0x6f, 0x6b } };
static EFI_GUID global_guid = EFI_GLOBAL_VARIABLE;
static CHAR16 guard_name[] = L"HvNextAutoActive";

struct walk {
    EFI_LOADED_IMAGE *li;
    EFI_HANDLE *fs;             /* every simple-file-system handle */
    UINTN nfs;
    unsigned tried;
};

/* ---- small helpers ------------------------------------------------------ */

static EFI_STATUS get_var(CHAR16 *name, EFI_GUID *guid, void *buf, UINTN *size)
{
    return plat_st->RuntimeServices->GetVariable(name, guid, NULL, size, buf);
}

bool plat_var_u8(CHAR16 *name, uint8_t *out)
{
    UINTN size = sizeof(*out);

    return !EFI_ERROR(get_var(name, &global_guid, out, &size)) && size == 1;
}

static void dp_text(EFI_DEVICE_PATH *dp, char *out, size_t cap)
{
    EFI_GUID guid = EFI_DEVICE_PATH_TO_TEXT_PROTOCOL_GUID;
    EFI_DEVICE_PATH_TO_TEXT_PROTOCOL *tt = NULL;
    CHAR16 *w;
    size_t n = 0;

    out[0] = '\0';
    if (EFI_ERROR(plat_bs->LocateProtocol(&guid, NULL, (VOID **)&tt)) || !tt ||
        !(w = tt->ConvertDevicePathToText(dp, FALSE, FALSE))) {
        hv_snprintf(out, cap, "(device path)");
        return;
    }
    for (; w[n] && n + 1 < cap; n++)
        out[n] = w[n] < 0x80 ? (char)w[n] : '?';
    out[n] = '\0';
    plat_bs->FreePool(w);
}

static UINTN dp_size(EFI_DEVICE_PATH *dp)   /* without the End node */
{
    UINTN n = 0;

    for (unsigned guard = 0; !hv_dp_is_end(dp) && guard < 64; guard++) {
        n += hv_dp_len(dp);
        dp = hv_dp_next(dp);
    }
    return n;
}

/* a + b (b may be NULL), one End node; pool memory. */
static EFI_DEVICE_PATH *dp_join(EFI_DEVICE_PATH *a, EFI_DEVICE_PATH *b)
{
    UINTN na = dp_size(a), nb = b ? dp_size(b) : 0;
    UINT8 *p;

    if (EFI_ERROR(plat_bs->AllocatePool(EfiLoaderData, na + nb + 4, (VOID **)&p)))
        return NULL;
    memcpy(p, a, na);
    if (nb)
        memcpy(p + na, b, nb);
    p[na + nb] = HV_DP_END;
    p[na + nb + 1] = HV_DP_END_ENTIRE;
    p[na + nb + 2] = 4;
    p[na + nb + 3] = 0;
    return (EFI_DEVICE_PATH *)p;
}

static EFI_DEVICE_PATH *handle_dp(EFI_HANDLE h)
{
    EFI_GUID dp_guid = EFI_DEVICE_PATH_PROTOCOL_GUID;
    EFI_DEVICE_PATH *dp = NULL;

    if (EFI_ERROR(plat_bs->HandleProtocol(h, &dp_guid, (VOID **)&dp)))
        return NULL;
    return dp;
}

static EFI_DEVICE_PATH *find_node(EFI_DEVICE_PATH *dp, UINT8 type, UINT8 sub)
{
    for (unsigned guard = 0; !hv_dp_is_end(dp) && guard < 64; guard++) {
        if (dp->Type == type && dp->SubType == sub)
            return dp;
        dp = hv_dp_next(dp);
    }
    return NULL;
}

/* Same partition: number, signature and signature type (UEFI 2.10 10.3.5.1:
 * the node is 42 bytes; number at 4, signature at 24, type at 41). */
static bool hd_same(EFI_DEVICE_PATH *a, EFI_DEVICE_PATH *b)
{
    const UINT8 *x = (const UINT8 *)a, *y = (const UINT8 *)b;

    return hv_dp_len(a) >= 42 && hv_dp_len(b) >= 42 &&
           memcmp(x + 4, y + 4, 4) == 0 && memcmp(x + 24, y + 24, 16) == 0 &&
           x[41] == y[41];
}

/* Does the file system on handle h hold path? */
static bool fs_has(EFI_HANDLE h, const char *path)
{
    EFI_GUID fs_guid = EFI_SIMPLE_FILE_SYSTEM_PROTOCOL_GUID;
    EFI_FILE_IO_INTERFACE *fs = NULL;
    EFI_FILE_HANDLE root = NULL, f = NULL;
    CHAR16 w[HV_CFG_PATH_MAX];
    size_t i;

    for (i = 0; path[i] && i + 1 < HV_CFG_PATH_MAX; i++)
        w[i] = (unsigned char)path[i];
    w[i] = 0;
    if (EFI_ERROR(plat_bs->HandleProtocol(h, &fs_guid, (VOID **)&fs)) ||
        EFI_ERROR(fs->OpenVolume(fs, &root)))
        return false;
    bool ok = !EFI_ERROR(root->Open(root, &f, w, EFI_FILE_MODE_READ, 0));
    if (ok)
        f->Close(f);
    root->Close(root);
    return ok;
}

/* ---- loading one candidate --------------------------------------------- */

/* Loads and starts dp.  Returns EFI_SUCCESS-or-what-the-image-returned when
 * it ran, or the LoadImage error (the walk goes on). */
static EFI_STATUS try_boot(struct walk *w, EFI_DEVICE_PATH *dp, const char *what,
                           const char *why, void *opt, UINT32 optlen, bool *ran)
{
    static char text[TEXT_MAX];
    EFI_GUID li_guid = EFI_LOADED_IMAGE_PROTOCOL_GUID;
    EFI_LOADED_IMAGE *cli = NULL;
    EFI_HANDLE child = NULL;
    EFI_STATUS st;

    *ran = false;
    w->tried++;
    dp_text(dp, text, sizeof(text));
    plat_say("HV: next auto try %s reason=%s\n", what, why);
    plat_say("HV: chainload path=%s\n", text);
    st = plat_bs->LoadImage(FALSE, plat_image, dp, NULL, 0, &child);
    if (EFI_ERROR(st)) {
        if (st == EFI_SECURITY_VIOLATION && child)
            plat_bs->UnloadImage(child);
        plat_say("HV: chainload failed path=%s status=%s\n", text,
                 efi_status_name(st));
        return st;
    }
    if (optlen && !EFI_ERROR(plat_bs->HandleProtocol(child, &li_guid,
                                                      (VOID **)&cli))) {
        cli->LoadOptions = opt;
        cli->LoadOptionsSize = optlen;
    }
    plat_say("HV: next auto chose %s reason=%s\n", what, why);
    st = plat_bs->StartImage(child, NULL, NULL);
    /* Like the boot manager (UEFI 2.10 3.1.1): an option that returns makes
     * way for the next one; success means it ran, so the walk ends. */
    plat_say("HV: chainload returned status=%s%s\n", efi_status_name(st),
             EFI_ERROR(st) ? ", trying the next candidate" : "");
    *ran = !EFI_ERROR(st);
    return st;
}

/* The file-system handle a full device path lives on, and the rest. */
static EFI_HANDLE fs_of(EFI_DEVICE_PATH *dp, EFI_DEVICE_PATH **rest)
{
    EFI_GUID fs_guid = EFI_SIMPLE_FILE_SYSTEM_PROTOCOL_GUID;
    EFI_DEVICE_PATH *tmp = dp;
    EFI_HANDLE h = NULL;

    if (EFI_ERROR(plat_bs->LocateDevicePath(&fs_guid, &tmp, &h)))
        return NULL;
    *rest = tmp;
    return h;
}

/* A file-system handle whose device path begins with the whole of dp (a
 * device-only entry: the disk, the file system is on a partition below). */
static EFI_HANDLE fs_below(struct walk *w, EFI_DEVICE_PATH *dp)
{
    UINTN n = dp_size(dp);

    for (UINTN i = 0; i < w->nfs; i++) {
        EFI_DEVICE_PATH *f = handle_dp(w->fs[i]);

        if (f && dp_size(f) >= n && memcmp(f, dp, n) == 0)
            return w->fs[i];
    }
    return NULL;
}

/* Resolves a Boot#### device path to (file-system handle, full path). */
static EFI_DEVICE_PATH *resolve(struct walk *w, EFI_DEVICE_PATH *dp, EFI_HANDLE *dev,
                                bool *no_loader)
{
    EFI_DEVICE_PATH *rest = NULL, *hd;

    *dev = NULL;
    *no_loader = false;
    if (dp->Type == HV_DP_MEDIA && dp->SubType == MEDIA_HARDDRIVE_DP) {
        /* Short form HD(...)/File(...): find the partition by its GUID. */
        for (UINTN i = 0; i < w->nfs; i++) {
            EFI_DEVICE_PATH *f = handle_dp(w->fs[i]);

            hd = f ? find_node(f, HV_DP_MEDIA, MEDIA_HARDDRIVE_DP) : NULL;
            if (hd && hd_same(hd, dp)) {
                *dev = w->fs[i];
                return dp_join(f, hv_dp_next(dp));
            }
        }
        return NULL;
    }
    if (dp->Type == HV_DP_MEDIA && dp->SubType == HV_DP_MEDIA_FILEPATH) {
        /* Bare File(...): the first other file system that holds it. */
        char name[HV_CFG_PATH_MAX];
        const CHAR16 *wn = (const CHAR16 *)((UINT8 *)dp + 4);
        size_t k, chars = (hv_dp_len(dp) - 4) / 2;

        for (k = 0; k < chars && wn[k] && k + 1 < sizeof(name); k++)
            name[k] = wn[k] < 0x80 ? (char)wn[k] : '?';
        name[k] = '\0';
        for (UINTN i = 0; i < w->nfs; i++) {
            if (w->fs[i] != w->li->DeviceHandle && fs_has(w->fs[i], name)) {
                *dev = w->fs[i];
                return dp_join(handle_dp(w->fs[i]), dp);
            }
        }
        return NULL;
    }
    *dev = fs_of(dp, &rest);
    if (*dev && !hv_dp_is_end(rest))
        return dp_join(dp, NULL);       /* a full path to a file */
    if (!*dev)
        *dev = fs_below(w, dp);
    if (!*dev)
        return NULL;
    /* A device: its removable-media path (section 3.5.1.1), if it has one. */
    if (*dev != w->li->DeviceHandle && !fs_has(*dev, "\\EFI\\BOOT\\BOOTX64.EFI")) {
        *no_loader = true;
        return NULL;
    }
    return plat_file_dp(*dev, "\\EFI\\BOOT\\BOOTX64.EFI");
}

/* ---- the walk ------------------------------------------------------------ */

static EFI_STATUS boot_entry(struct walk *w, UINT16 idx, const char *why,
                             UINT16 current, bool have_current, bool *ran)
{
    static UINT8 buf[4096];
    static char what[96];
    CHAR16 name[] = L"Boot0000";
    static const char hex[] = "0123456789ABCDEF";
    UINTN size = sizeof(buf);
    char desc[64];
    size_t d = 0, off;
    EFI_DEVICE_PATH *dp, *full;
    EFI_HANDLE dev;
    EFI_STATUS st;
    bool no_loader;

    *ran = false;
    for (int i = 0; i < 4; i++)
        name[4 + i] = hex[(idx >> (12 - 4 * i)) & 0xF];
    if (EFI_ERROR(get_var(name, &global_guid, buf, &size)) || size < 8) {
        hv_log("HV: next auto skip Boot%04x reason=unreadable\n", idx);
        return EFI_NOT_FOUND;
    }
    /* EFI_LOAD_OPTION: Attributes, FilePathListLength, Description, paths, data */
    UINT32 attr = *(UINT32 *)buf;
    UINT16 fpl = *(UINT16 *)(buf + 4);
    for (off = 6; off + 1 < size && (buf[off] || buf[off + 1]); off += 2)
        if (d + 1 < sizeof(desc))
            desc[d++] = buf[off + 1] || buf[off] >= 0x80 ? '?' : (char)buf[off];
    desc[d] = '\0';
    off += 2;
    hv_snprintf(what, sizeof(what), "Boot%04x \"%s\"", idx, desc);
    if (off + fpl > size || fpl < 4) {
        plat_say("HV: next auto skip %s reason=malformed-load-option\n", what);
        return EFI_NOT_FOUND;
    }
    dp = (EFI_DEVICE_PATH *)(buf + off);
    if (!(attr & LOAD_OPTION_ACTIVE) || (attr & LOAD_OPTION_HIDDEN)) {
        plat_say("HV: next auto skip %s reason=%s\n", what,
                 attr & LOAD_OPTION_ACTIVE ? "hidden" : "inactive");
        return EFI_NOT_FOUND;
    }
    if (have_current && idx == current) {
        plat_say("HV: next auto skip %s reason=boot-current (it started us)\n", what);
        return EFI_NOT_FOUND;
    }
    if (find_node(dp, HV_DP_MEDIA, MEDIA_PIWG_FW_FILE_DP)) {
        plat_say("HV: next auto skip %s reason=firmware-application\n", what);
        return EFI_NOT_FOUND;
    }
    full = resolve(w, dp, &dev, &no_loader);
    if (!full) {
        plat_say("HV: next auto skip %s reason=%s\n", what,
                 no_loader ? "no-removable-media-loader" : "no-such-device");
        return EFI_NOT_FOUND;
    }
    if (dev == w->li->DeviceHandle) {
        plat_say("HV: next auto skip %s reason=our-own-device\n", what);
        plat_bs->FreePool(full);
        return EFI_NOT_FOUND;
    }
    st = try_boot(w, full, what, why, buf + off + fpl, (UINT32)(size - off - fpl), ran);
    plat_bs->FreePool(full);
    return st;
}

static EFI_STATUS walk_boot_order(struct walk *w, bool *ran)
{
    UINT16 order[ORDER_MAX], next = 0, current = 0;
    UINTN size = sizeof(order), nsz = sizeof(next), csz = sizeof(current);
    bool have_next, have_current;
    char why[32];
    EFI_STATUS st = EFI_NOT_FOUND;

    have_current = !EFI_ERROR(get_var(L"BootCurrent", &global_guid, &current, &csz));
    have_next = !EFI_ERROR(get_var(L"BootNext", &global_guid, &next, &nsz));
    if (EFI_ERROR(get_var(L"BootOrder", &global_guid, order, &size)))
        size = 0;
    hv_log("HV: next auto boot-current=%s%04x boot-next=%s%04x entries=%u\n",
           have_current ? "" : "none/", current, have_next ? "" : "none/", next,
           (unsigned)(size / 2));
    if (have_next) {
        st = boot_entry(w, next, "boot-next", current, have_current, ran);
        if (*ran)
            return st;
    }
    for (UINTN i = 0; i < size / 2; i++) {
        if (have_next && order[i] == next)
            continue;
        hv_snprintf(why, sizeof(why), "boot-order[%u]", (unsigned)i);
        st = boot_entry(w, order[i], why, current, have_current, ran);
        if (*ran)
            return st;
    }
    return st;
}

static EFI_STATUS walk_well_known(struct walk *w, bool *ran)
{
    static char what[HV_CFG_PATH_MAX + 16];
    EFI_STATUS st = EFI_NOT_FOUND;

    for (size_t p = 0; p < sizeof(well_known) / sizeof(well_known[0]); p++) {
        for (UINTN i = 0; i < w->nfs; i++) {
            EFI_DEVICE_PATH *full;

            if (w->fs[i] == w->li->DeviceHandle || !fs_has(w->fs[i], well_known[p]))
                continue;
            full = plat_file_dp(w->fs[i], well_known[p]);
            if (!full)
                continue;
            hv_snprintf(what, sizeof(what), "fs%u:%s", (unsigned)i, well_known[p]);
            st = try_boot(w, full, what, "well-known-loader-path", NULL, 0, ran);
            plat_bs->FreePool(full);
            if (*ran)
                return st;
        }
    }
    return st;
}

EFI_STATUS plat_boot_auto(EFI_LOADED_IMAGE *li)
{
    EFI_GUID fs_guid = EFI_SIMPLE_FILE_SYSTEM_PROTOCOL_GUID;
    struct walk w = { .li = li };
    UINT8 flag = 1;
    UINTN fsz = sizeof(flag);
    bool ran = false;
    EFI_STATUS st;

    if (!EFI_ERROR(get_var(guard_name, &hv_guid, &flag, &fsz))) {
        plat_say("HV: next auto skip reason=started-by-ourselves (a boot entry "
                 "loops back to this hypervisor)\n");
        return EFI_ALREADY_STARTED;
    }
    flag = 1;
    plat_st->RuntimeServices->SetVariable(guard_name, &hv_guid,
        EFI_VARIABLE_BOOTSERVICE_ACCESS, sizeof(flag), &flag);
    if (EFI_ERROR(plat_bs->LocateHandleBuffer(ByProtocol, &fs_guid, NULL, &w.nfs,
                                              &w.fs)))
        w.nfs = 0;
    st = walk_boot_order(&w, &ran);
    if (!ran) {
        plat_say("HV: next auto no boot entry loaded, trying well-known loader "
                 "paths on %u other file systems\n", (unsigned)(w.nfs ? w.nfs - 1 : 0));
        st = walk_well_known(&w, &ran);
    }
    if (!ran) {
        plat_say("HV: next auto found nothing to boot (tried %u), returning to the "
                 "firmware\n", w.tried);
        st = EFI_NOT_FOUND;
    }
    if (w.fs)
        plat_bs->FreePool(w.fs);
    plat_st->RuntimeServices->SetVariable(guard_name, &hv_guid,
        EFI_VARIABLE_BOOTSERVICE_ACCESS, 0, NULL);
    return st;
}
