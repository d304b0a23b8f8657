/*
 * mem.c - page allocation for the core.  EfiRuntimeServicesData survives
 * ExitBootServices and the unloading of this image, and UEFI maps all
 * memory 1:1 on x86_64, so the returned pointer is also the physical
 * address.  BSP only, and only while boot services exist.
 */
#include "hv.h"
#include "hv_efi.h"
#include "hv_lib.h"

void *plat_alloc_pages(size_t pages)
{
    EFI_PHYSICAL_ADDRESS addr = 0;

    if (pages == 0 || plat_boot_services_gone)
        return NULL;
    if (EFI_ERROR(plat_bs->AllocatePages(AllocateAnyPages,
                                         EfiRuntimeServicesData, pages, &addr)))
        return NULL;
    memset((void *)(uintptr_t)addr, 0, pages * 4096);
    return (void *)(uintptr_t)addr;
}

void *plat_alloc_low_pages(size_t pages)
{
    EFI_PHYSICAL_ADDRESS addr = 0xFFFFF;

    if (pages == 0 || plat_boot_services_gone)
        return NULL;
    if (EFI_ERROR(plat_bs->AllocatePages(AllocateMaxAddress,
                                         EfiRuntimeServicesData, pages, &addr)))
        return NULL;
    memset((void *)(uintptr_t)addr, 0, pages * 4096);
    return (void *)(uintptr_t)addr;
}
