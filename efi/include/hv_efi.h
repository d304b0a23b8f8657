/*
 * hv_efi.h - UEFI definitions for the platform layer (efi/platform) and the
 * payload apps.  Types come from the gnu-efi headers (headers only: none of
 * its libraries are linked); what gnu-efi lacks is defined here.
 */
#ifndef HV_EFI_H
#define HV_EFI_H

#include <efi.h>
#include "hv_cfg.h"

/* ---- PI spec Vol. 2, EFI_MP_SERVICES_PROTOCOL -------------------------- */
#define HV_EFI_MP_SERVICES_PROTOCOL_GUID \
    { 0x3fdda605, 0xa76e, 0x4f46, { 0xad, 0x29, 0x12, 0xf4, 0x53, 0x1b, 0x3d, 0x08 } }

#define PROCESSOR_AS_BSP_BIT        0x00000001
#define PROCESSOR_ENABLED_BIT       0x00000002
#define PROCESSOR_HEALTH_STATUS_BIT 0x00000004

typedef struct {
    UINT32 Package;
    UINT32 Core;
    UINT32 Thread;
} EFI_CPU_PHYSICAL_LOCATION;

/* PI 1.7 appends an ExtendedInformation union; firmware fills it only when
 * the caller sets CPU_V2_EXTENDED_TOPOLOGY in ProcessorNumber, which we
 * never do, so the original layout is the one we pass. */
typedef struct {
    UINT64 ProcessorId;
    UINT32 StatusFlag;
    EFI_CPU_PHYSICAL_LOCATION Location;
} EFI_PROCESSOR_INFORMATION;

typedef struct _EFI_MP_SERVICES_PROTOCOL EFI_MP_SERVICES_PROTOCOL;
typedef VOID (EFIAPI *EFI_AP_PROCEDURE)(VOID *ProcedureArgument);

struct _EFI_MP_SERVICES_PROTOCOL {
    EFI_STATUS (EFIAPI *GetNumberOfProcessors)(EFI_MP_SERVICES_PROTOCOL *This,
        UINTN *NumberOfProcessors, UINTN *NumberOfEnabledProcessors);
    EFI_STATUS (EFIAPI *GetProcessorInfo)(EFI_MP_SERVICES_PROTOCOL *This,
        UINTN ProcessorNumber, EFI_PROCESSOR_INFORMATION *ProcessorInfoBuffer);
    EFI_STATUS (EFIAPI *StartupAllAPs)(EFI_MP_SERVICES_PROTOCOL *This,
        EFI_AP_PROCEDURE Procedure, BOOLEAN SingleThread, EFI_EVENT WaitEvent,
        UINTN TimeoutInMicroSeconds, VOID *ProcedureArgument,
        UINTN **FailedCpuList);
    EFI_STATUS (EFIAPI *StartupThisAP)(EFI_MP_SERVICES_PROTOCOL *This,
        EFI_AP_PROCEDURE Procedure, UINTN ProcessorNumber, EFI_EVENT WaitEvent,
        UINTN TimeoutInMicroseconds, VOID *ProcedureArgument,
        BOOLEAN *Finished);
    EFI_STATUS (EFIAPI *SwitchBSP)(EFI_MP_SERVICES_PROTOCOL *This,
        UINTN ProcessorNumber, BOOLEAN EnableOldBSP);
    EFI_STATUS (EFIAPI *EnableDisableAP)(EFI_MP_SERVICES_PROTOCOL *This,
        UINTN ProcessorNumber, BOOLEAN EnableAP, UINT32 *HealthFlag);
    EFI_STATUS (EFIAPI *WhoAmI)(EFI_MP_SERVICES_PROTOCOL *This,
        UINTN *ProcessorNumber);
};

/* ---- device path nodes used here (UEFI spec 10.3) ---------------------- */
#define HV_DP_MESSAGING         0x03
#define HV_DP_MSG_UART          0x0E
#define HV_DP_MEDIA             0x04
#define HV_DP_MEDIA_FILEPATH    0x04
#define HV_DP_END               0x7F
#define HV_DP_END_ENTIRE        0xFF

static inline UINTN hv_dp_len(const EFI_DEVICE_PATH *n)
{
    return (UINTN)n->Length[0] | ((UINTN)n->Length[1] << 8);
}

static inline EFI_DEVICE_PATH *hv_dp_next(const EFI_DEVICE_PATH *n)
{
    return (EFI_DEVICE_PATH *)((const UINT8 *)n + hv_dp_len(n));
}

static inline bool hv_dp_is_end(const EFI_DEVICE_PATH *n)
{
    /* A node shorter than its header is malformed: treat it as the end. */
    return n->Type == HV_DP_END || hv_dp_len(n) < 4;
}

/* efi/lib/devpath.c: vol's device path + a FILEPATH node for path + End
 * into buf; the bytes written, or 0 when cap is too small. */
size_t hv_file_dp(const EFI_DEVICE_PATH *vol, const char *path, void *buf, size_t cap);
/* The same in pool memory, on `device`'s volume (efi/platform/chainload.c). */
EFI_DEVICE_PATH *plat_file_dp(EFI_HANDLE device, const char *path);

/* ---- platform internals (efi/platform) --------------------------------- */
extern EFI_HANDLE plat_image;
extern EFI_SYSTEM_TABLE *plat_st;
extern EFI_BOOT_SERVICES *plat_bs;
extern volatile bool plat_boot_services_gone;

void plat_mp_init(void);
/* efi/platform/logring.c: print the previous boot's ring, set up this
 * boot's and publish it (before anything else logs); then one status line. */
void plat_ring_setup(void);
void plat_ring_report(void);
bool plat_ring_had_previous(void);
/* efi/platform/acpi.c: the FADT's reset register; false (space 0xFF) if none. */
bool plat_acpi_reset_reg(struct hv_reset_reg *out);
void plat_acpi_sleep_types(void);
void plat_acpi_s3_resume(void);
/* Adds `table` (an ACPI table in memory the OS never reclaims) to a new
 * XSDT that the ACPI 2.0 configuration table then leads to; false (and one
 * `HV: log acpi none reason=...` line) if it could not. */
bool plat_acpi_add_table(const void *table);
void plat_conout_init(void);
/* Reads hv.cfg beside the app into cfg (defaults on any problem). */
void plat_load_config(EFI_LOADED_IMAGE *li, struct hv_cfg *cfg);
/* Directory of the running app's file path, ASCII, with a trailing '\'. */
void plat_app_dir(EFI_LOADED_IMAGE *li, char *out, size_t cap);
/* Loads and starts the configured next stage; returns the status to hand
 * back to the firmware. */
EFI_STATUS plat_chainload(EFI_LOADED_IMAGE *li, const struct hv_cfg *cfg);
/* Reads a whole file from the app's volume into pool memory. */
EFI_STATUS plat_read_file(EFI_HANDLE device, const CHAR16 *path, char **buf,
                          UINTN *len);
/* next=auto (nextboot.c): BootNext, BootOrder, then well-known loader paths. */
EFI_STATUS plat_boot_auto(EFI_LOADED_IMAGE *li);
/* A one-byte global variable (SecureBoot, SetupMode); false if absent. */
bool plat_var_u8(CHAR16 *name, uint8_t *out);
/* hv_log plus ConOut even after plat_conout_detach (guest context only). */
void plat_say(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
/* Stop mirroring hv_log to ConOut (the CPUs are guests now). */
void plat_conout_detach(void);

#endif
