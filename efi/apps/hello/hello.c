/*
 * hello.c - the smallest payload: report the LoadOptions we were given on
 * COM1, so tests can check what the hypervisor's chain-loader passed.
 */
#include "hv.h"
#include "hv_efi.h"
#include "hv_lib.h"

EFI_STATUS EFIAPI efi_main(EFI_HANDLE image, EFI_SYSTEM_TABLE *st)
{
    EFI_GUID li_guid = EFI_LOADED_IMAGE_PROTOCOL_GUID;
    EFI_LOADED_IMAGE *li = NULL;
    char args[512];
    size_t n = 0;

    serial_init();
    if (!EFI_ERROR(st->BootServices->HandleProtocol(image, &li_guid,
                                                    (VOID **)&li)) &&
        li && li->LoadOptions) {
        const CHAR16 *w = li->LoadOptions;
        size_t chars = li->LoadOptionsSize / sizeof(CHAR16);

        for (size_t i = 0; i < chars && w[i] && n + 1 < sizeof(args); i++)
            args[n++] = w[i] >= 0x20 && w[i] < 0x7F ? (char)w[i] : '?';
    }
    args[n] = '\0';
    hv_log("PAYLOAD: hello args=%s\n", args);
    return EFI_SUCCESS;
}
