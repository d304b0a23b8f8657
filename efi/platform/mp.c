/*
 * mp.c - processor count and "run on every CPU" over the PI MP Services
 * protocol.  The BSP runs the function itself; each enabled AP is then
 * started one at a time with StartupThisAP in blocking mode, so CPU indices
 * are deterministic (BSP 0, APs 1..n-1 in firmware order) and a hung AP is
 * caught by the timeout.
 */
#include "hv.h"
#include "hv_efi.h"
#include "hv_lib.h"

#define AP_TIMEOUT_US (5 * 1000 * 1000)

static EFI_MP_SERVICES_PROTOCOL *mp;
static size_t enabled_cpus = 1;

struct ap_call {
    void (*fn)(void *ctx, size_t cpu);
    void *ctx;
    size_t cpu;
};

void plat_mp_init(void)
{
    EFI_GUID guid = HV_EFI_MP_SERVICES_PROTOCOL_GUID;
    UINTN total = 0, enabled = 0;

    if (EFI_ERROR(plat_bs->LocateProtocol(&guid, NULL, (VOID **)&mp)) || !mp) {
        mp = NULL;
        return;
    }
    if (EFI_ERROR(mp->GetNumberOfProcessors(mp, &total, &enabled)) ||
        enabled == 0) {
        mp = NULL;
        return;
    }
    enabled_cpus = enabled;
}

size_t plat_cpu_count(void)
{
    return enabled_cpus;
}

static VOID EFIAPI ap_entry(VOID *arg)
{
    struct ap_call *call = arg;

    call->fn(call->ctx, call->cpu);
}

int plat_run_on_all_cpus(void (*fn)(void *ctx, size_t cpu), void *ctx)
{
    UINTN total = 0, enabled = 0, self = 0;
    struct ap_call call = { fn, ctx, 1 };
    int rc = 0;

    if (!mp || plat_boot_services_gone)
        return -1;
    if (EFI_ERROR(mp->GetNumberOfProcessors(mp, &total, &enabled)) ||
        EFI_ERROR(mp->WhoAmI(mp, &self)))
        return -1;

    fn(ctx, 0);
    for (UINTN i = 0; i < total; i++) {
        EFI_PROCESSOR_INFORMATION info;
        EFI_STATUS st;

        if (i == self)
            continue;
        if (EFI_ERROR(mp->GetProcessorInfo(mp, i, &info)) ||
            !(info.StatusFlag & PROCESSOR_ENABLED_BIT))
            continue;
        st = mp->StartupThisAP(mp, ap_entry, i, NULL, AP_TIMEOUT_US, &call,
                               NULL);
        if (EFI_ERROR(st)) {
            hv_log("HV: ap failed cpu=%zu proc=%llu status=%s\n", call.cpu,
                   (unsigned long long)i, efi_status_name(st));
            rc = -1;
        }
        call.cpu++;
    }
    return rc;
}
