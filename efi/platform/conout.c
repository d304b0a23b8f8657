/*
 * conout.c - mirror hv_log text to the consoles a person looks at.
 *
 * OVMF's ConOut is a splitter that also feeds the serial terminal, so
 * writing to ConOut would print every line twice on COM1.  Instead we talk
 * to each physical SimpleTextOutput handle directly and skip those whose
 * device path contains a UART node (the serial terminal).  The splitter's
 * own handle has no device path and is skipped too.
 */
#include "hv.h"
#include "hv_efi.h"
#include "hv_lib.h"

#define MAX_MIRRORS 8

static SIMPLE_TEXT_OUTPUT_INTERFACE *mirrors[MAX_MIRRORS];
static UINTN mirror_count;
static uint32_t bsp_apic_id;

static uint32_t apic_id(void)
{
    uint32_t a, b, c, d;

    __asm__ volatile("cpuid" : "=a"(a), "=b"(b), "=c"(c), "=d"(d)
                     : "a"(1), "c"(0));
    return b >> 24;
}

static bool has_uart_node(EFI_DEVICE_PATH *dp)
{
    for (unsigned guard = 0; !hv_dp_is_end(dp) && guard < 64; guard++) {
        if (dp->Type == HV_DP_MESSAGING && dp->SubType == HV_DP_MSG_UART)
            return true;
        dp = hv_dp_next(dp);
    }
    return false;
}

static void mirror(const char *s, size_t n)
{
    CHAR16 buf[130];
    size_t k = 0;

    /* Boot services belong to the BSP: an AP's log line (from
     * plat_run_on_all_cpus) goes to serial only. */
    if (plat_boot_services_gone || apic_id() != bsp_apic_id)
        return;
    for (size_t i = 0; i <= n; i++) {
        bool flush = i == n || k >= 126;

        if (flush && k) {
            buf[k] = 0;
            for (UINTN m = 0; m < mirror_count; m++)
                mirrors[m]->OutputString(mirrors[m], buf);
            k = 0;
        }
        if (i == n)
            break;
        if (s[i] == '\n')
            buf[k++] = '\r';
        buf[k++] = (unsigned char)s[i] < 0x80 ? (CHAR16)s[i] : '?';
    }
}

void plat_conout_init(void)
{
    EFI_GUID sto_guid = EFI_SIMPLE_TEXT_OUTPUT_PROTOCOL_GUID;
    EFI_GUID dp_guid = EFI_DEVICE_PATH_PROTOCOL_GUID;
    EFI_HANDLE *handles = NULL;
    UINTN count = 0;

    bsp_apic_id = apic_id();
    if (EFI_ERROR(plat_bs->LocateHandleBuffer(ByProtocol, &sto_guid, NULL,
                                              &count, &handles)))
        return;
    for (UINTN i = 0; i < count && mirror_count < MAX_MIRRORS; i++) {
        EFI_DEVICE_PATH *dp = NULL;
        SIMPLE_TEXT_OUTPUT_INTERFACE *out = NULL;

        if (EFI_ERROR(plat_bs->HandleProtocol(handles[i], &dp_guid,
                                              (VOID **)&dp)) || !dp)
            continue;
        if (has_uart_node(dp))
            continue;
        if (EFI_ERROR(plat_bs->HandleProtocol(handles[i], &sto_guid,
                                              (VOID **)&out)) || !out)
            continue;
        mirrors[mirror_count++] = out;
    }
    plat_bs->FreePool(handles);
    if (mirror_count)
        hv_log_set_mirror(mirror);
}

/* Once the CPUs run as guests, hv_log stops mirroring (exit handlers must
 * not re-enter the firmware).  Code running as the guest, such as the
 * next-stage choice, may still talk to ConOut: plat_say does that. */
static bool detached;

void plat_conout_detach(void)
{
    detached = true;
    hv_log_serial_only();
}

void plat_say(const char *fmt, ...)
{
    char line[256];
    va_list ap;
    int n;

    va_start(ap, fmt);
    n = hv_vsnprintf(line, sizeof(line), fmt, ap);
    va_end(ap);
    if (n >= (int)sizeof(line))
        n = sizeof(line) - 1;
    hv_log("%s", line);
    if (detached && mirror_count)
        mirror(line, (size_t)n);
}
