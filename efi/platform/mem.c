/*
 * mem.c - page allocation for the core.  EfiRuntimeServicesData survives
 * ExitBootServices and the unloading of this image, and UEFI maps all
 * memory 1:1 on x86_64, so the returned pointer is also the physical
 * address.  BSP only, and only while boot services exist.
 */
#include "hv.h"
#include "hv_efi.h"
#include "hv_lib.h"

static void *alloc(EFI_ALLOCATE_TYPE how, EFI_PHYSICAL_ADDRESS addr, size_t pages)
{
    if (pages == 0 || plat_boot_services_gone)
        return NULL;
    if (EFI_ERROR(plat_bs->AllocatePages(how, EfiRuntimeServicesData, pages, &addr)))
        return NULL;
    memset((void *)(uintptr_t)addr, 0, pages * 4096);
    return (void *)(uintptr_t)addr;
}

void *plat_alloc_pages(size_t pages)
{
    return alloc(AllocateAnyPages, 0, pages);
}

/* Below 1 MiB: what a start-up IPI or a real-mode waking vector reaches. */
void *plat_alloc_low_pages(size_t pages)
{
    return alloc(AllocateMaxAddress, 0xFFFFF, pages);
}
