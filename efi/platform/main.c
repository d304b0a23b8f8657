/*
 * main.c - the hypervisor image's entry point: serial, config, capability
 * report, core start, then the next boot stage.
 */
#include "hv.h"
#include "hv_efi.h"
#include "hv_lib.h"

EFI_HANDLE plat_image;
EFI_SYSTEM_TABLE *plat_st;
EFI_BOOT_SERVICES *plat_bs;
volatile bool plat_boot_services_gone;

static EFI_EVENT exit_bs_event;

/* Runs at ExitBootServices (TPL_NOTIFY, possibly after the CPUs became
 * guests): from now on hv_log must not touch firmware consoles, and the
 * platform must not call boot services. */
static VOID EFIAPI on_exit_boot_services(EFI_EVENT ev, VOID *ctx)
{
    (void)ev;
    (void)ctx;
    plat_boot_services_gone = true;
    hv_log_serial_only();
}

static const char *vendor_name(enum hv_vendor v)
{
    return v == HV_VENDOR_INTEL ? "intel" : v == HV_VENDOR_AMD ? "amd" : "other";
}

static const char *virt_name(enum hv_virt v)
{
    return v == HV_VIRT_VMX ? "vmx" : v == HV_VIRT_SVM ? "svm" : "none";
}

/* UEFI 2.10 section 32.3: SecureBoot is 1 when images are verified; SetupMode
 * is 1 while no platform key is enrolled (then nothing is verified). */
static void report_secure_boot(void)
{
    uint8_t sb = 0, setup = 0;
    bool have_sb = plat_var_u8(L"SecureBoot", &sb);
    bool have_setup = plat_var_u8(L"SetupMode", &setup);

    hv_log("HV: secureboot=%s setup-mode=%s\n",
           !have_sb ? "unsupported" : sb ? "on" : "off",
           !have_setup ? "unknown" : setup ? "1" : "0");
}

/* panic=, debug-fail= and the ACPI reset register, before anything can fail. */
static void fail_policy(const struct hv_cfg *cfg)
{
    struct hv_reset_reg rr;
    bool have_rr = plat_acpi_reset_reg(&rr);
    int force = cfg->debug_fail;

    if (force && plat_ring_had_previous()) {
        hv_log("HV: debug-fail name=%s not armed: this boot follows a logged one\n",
               hv_force_names[force]);
        force = HV_FORCE_NONE;
    } else if (force) {
        hv_log("HV: debug-fail name=%s armed\n", hv_force_names[force]);
    }
    hv_set_fail_policy(cfg->panic_halt, force, have_rr ? &rr : NULL);
    plat_acpi_sleep_types();
    plat_acpi_s3_resume();
    if (hv_force(HV_FORCE_PANIC))
        hv_panic_platform("forced debug-fail=panic");
}

EFI_STATUS EFIAPI efi_main(EFI_HANDLE image, EFI_SYSTEM_TABLE *st)
{
    EFI_GUID li_guid = EFI_LOADED_IMAGE_PROTOCOL_GUID;
    EFI_LOADED_IMAGE *li = NULL;
    static struct hv_cfg cfg;   /* ~3.5 KiB: keep it off the firmware stack */
    struct hv_caps caps;
    EFI_STATUS status;

    plat_image = image;
    plat_st = st;
    plat_bs = st->BootServices;
    serial_init();
    plat_conout_init();
    plat_ring_setup();          /* the previous boot's ring first, then ours */
    plat_mp_init();
    if (EFI_ERROR(plat_bs->CreateEvent(EVT_SIGNAL_EXIT_BOOT_SERVICES,
                                       TPL_NOTIFY, on_exit_boot_services,
                                       NULL, &exit_bs_event)))
        exit_bs_event = NULL;

    hv_log("HV: start version=%s cpus=%zu\n", HV_VERSION_STRING,
           plat_cpu_count());
    plat_ring_report();

    hv_cfg_defaults(&cfg);
    status = plat_bs->HandleProtocol(image, &li_guid, (VOID **)&li);
    if (EFI_ERROR(status) || !li) {
        hv_log("HV: no loaded image protocol status=%s\n",
               efi_status_name(status));
        li = NULL;
    } else {
        plat_load_config(li, &cfg);
    }

    fail_policy(&cfg);
    report_secure_boot();
    hv_detect_caps(&caps);
    hv_log("HV: caps vendor=%s virt=%s ept=%d vpid=%d ug=%d npt=%d\n",
           vendor_name(caps.vendor), virt_name(caps.virt), caps.ept,
           caps.vpid, caps.ug, caps.npt);
    if (caps.virt == HV_VIRT_NONE) {
        hv_log("HV: skip reason=%s\n",
               caps.skip_reason ? caps.skip_reason : "unknown");
    } else if (!cfg.hypervisor) {
        hv_log("HV: skip reason=disabled-by-config\n");
    } else if (vmm_start(&caps) == 0) {
        /* Every CPU is now a guest; exit handlers may log at any moment,
         * including while the firmware is inside ConOut, so the console
         * mirror would re-enter it.  Serial only from here on. */
        plat_conout_detach();
    }

    status = li ? plat_chainload(li, &cfg) : EFI_LOAD_ERROR;

    /* Returning unloads this image: the notify function must go first. */
    if (exit_bs_event)
        plat_bs->CloseEvent(exit_bs_event);
    return status;
}
