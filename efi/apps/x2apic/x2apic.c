/*
 * x2apic.c - the next stage of the x2APIC boot test (scenario
 * bochs-linux-hv-2).  It does what firmware does on machines whose APIC IDs
 * need it: every CPU's local APIC to x2APIC mode (SDM Vol 3A 11.12.1:
 * IA32_APIC_BASE.EXTD with EN set), the BSP directly and each AP through MP
 * Services, before ExitBootServices; then it starts a Linux EFI-stub kernel,
 * which finds "x2apic: enabled by BIOS".
 *
 * It runs under the hypervisor, where the APs are guests already: their
 * INITs are emulated and keep the APIC's mode, as a real INIT does (11.12.5.1).
 * Firmware that ran before the hypervisor could not do this in Bochs 2.7,
 * whose real INIT puts IA32_APIC_BASE back to xAPIC mode (cpu/init.cc).
 *
 * LoadOptions: "<self> <kernel path> <kernel command line ...>".
 *   X2APIC: cpus=<in x2APIC mode> of=<n> status=<EFI status of StartupAllAPs>
 *   X2APIC: skip reason=no-x2apic-cpuid
 *   X2APIC: start kernel=<path>
 *   X2APIC: start failed path=<p> status=<EFI status>
 */
#include "hv.h"
#include "hv_efi.h"
#include "hv_lib.h"

#define IA32_APIC_BASE 0x1B
#define APIC_BASE_EXTD (1ull << 10)
#define APIC_BASE_EN   (1ull << 11)
#define OPTS_MAX       1024

static EFI_BOOT_SERVICES *bs;
static volatile uint32_t in_x2apic;

static uint64_t rdmsr64(uint32_t msr)
{
    uint32_t lo, hi;

    __asm__ volatile("rdmsr" : "=a"(lo), "=d"(hi) : "c"(msr));
    return ((uint64_t)hi << 32) | lo;
}

static void wrmsr64(uint32_t msr, uint64_t v)
{
    __asm__ volatile("wrmsr" :: "a"((uint32_t)v), "d"((uint32_t)(v >> 32)), "c"(msr));
}

/* On each CPU.  xAPIC -> x2APIC is a legal transition (11.12.5, Figure
 * 11-27); the same value goes in once more, a no-op on hardware, because
 * Bochs 2.7 derives the x2APIC logical ID (11.12.10.2) only in a write made
 * while already in x2APIC mode (apic.cc set_base): without it no
 * logical-destination IPI, Linux's default, reaches that CPU. */
static VOID EFIAPI x2apic_enable(VOID *arg)
{
    uint64_t base = rdmsr64(IA32_APIC_BASE);

    (void)arg;
    if (!(base & APIC_BASE_EN))
        return;                                    /* globally disabled: leave it */
    base |= APIC_BASE_EXTD;
    wrmsr64(IA32_APIC_BASE, base);
    wrmsr64(IA32_APIC_BASE, base);
    if (rdmsr64(IA32_APIC_BASE) & APIC_BASE_EXTD)
        __atomic_add_fetch(&in_x2apic, 1, __ATOMIC_SEQ_CST);
}

static void every_cpu_to_x2apic(void)
{
    EFI_GUID guid = HV_EFI_MP_SERVICES_PROTOCOL_GUID;
    EFI_MP_SERVICES_PROTOCOL *mp = NULL;
    UINTN total = 1, enabled = 1;
    uint32_t a = 1, b, c, d;
    EFI_STATUS s = EFI_SUCCESS;

    __asm__ volatile("cpuid" : "+a"(a), "=b"(b), "=c"(c), "=d"(d) : "c"(0));
    if (!(c & (1u << 21))) {                       /* CPUID.1:ECX.x2APIC */
        hv_log("X2APIC: skip reason=no-x2apic-cpuid\n");
        return;
    }
    if (!EFI_ERROR(bs->LocateProtocol(&guid, NULL, (VOID **)&mp)) && mp &&
        !EFI_ERROR(mp->GetNumberOfProcessors(mp, &total, &enabled)) && enabled > 1)
        s = mp->StartupAllAPs(mp, x2apic_enable, FALSE, NULL, 0, NULL, NULL);
    x2apic_enable(NULL);
    hv_log("X2APIC: cpus=%u of=%zu status=%s\n", in_x2apic, (size_t)enabled,
           efi_status_name(s));
}

/* Word 1 of our LoadOptions into path (ASCII); the rest, from word 2 on,
 * into opts (UCS-2), the kernel's command line. */
static bool parse_options(const EFI_LOADED_IMAGE *li, char *path, size_t cap,
                          CHAR16 *opts, size_t ocap)
{
    const CHAR16 *w = li->LoadOptions;
    size_t n = w ? li->LoadOptionsSize / sizeof(CHAR16) : 0, i = 0, k = 0, o = 0;

    for (int word = 0; word < 2; word++) {
        while (i < n && w[i] == ' ')
            i++;
        for (; i < n && w[i] && w[i] != ' '; i++)
            if (word == 1 && k + 1 < cap)
                path[k++] = w[i] < 0x80 ? (char)w[i] : '?';
    }
    path[k] = '\0';
    while (i < n && w[i] == ' ')
        i++;
    for (; i < n && w[i] && o + 1 < ocap; i++)
        opts[o++] = w[i];
    opts[o] = 0;
    return k > 0;
}

static EFI_STATUS start_kernel(EFI_HANDLE image)
{
    EFI_GUID li_guid = EFI_LOADED_IMAGE_PROTOCOL_GUID;
    EFI_GUID dp_guid = EFI_DEVICE_PATH_PROTOCOL_GUID;
    static CHAR16 opts[OPTS_MAX];
    static uint8_t dp[1024];
    EFI_LOADED_IMAGE *li = NULL, *kli = NULL;
    EFI_DEVICE_PATH *vol = NULL;
    EFI_HANDLE child = NULL;
    char path[256] = "";
    EFI_STATUS st;
    size_t n;

    st = bs->HandleProtocol(image, &li_guid, (VOID **)&li);
    if (EFI_ERROR(st))
        goto fail;
    if (!parse_options(li, path, sizeof(path), opts, OPTS_MAX)) {
        st = EFI_INVALID_PARAMETER;                /* no kernel path given */
        goto fail;
    }
    st = bs->HandleProtocol(li->DeviceHandle, &dp_guid, (VOID **)&vol);
    if (EFI_ERROR(st))
        goto fail;
    if (!hv_file_dp(vol, path, dp, sizeof(dp))) {
        st = EFI_BUFFER_TOO_SMALL;
        goto fail;
    }
    st = bs->LoadImage(FALSE, image, (EFI_DEVICE_PATH *)dp, NULL, 0, &child);
    if (EFI_ERROR(st))
        goto fail;
    st = bs->HandleProtocol(child, &li_guid, (VOID **)&kli);
    if (EFI_ERROR(st))
        goto fail;
    kli->LoadOptions = opts;
    for (n = 0; opts[n]; n++)
        ;
    kli->LoadOptionsSize = (UINT32)((n + 1) * sizeof(CHAR16));
    hv_log("X2APIC: start kernel=%s\n", path);
    st = bs->StartImage(child, NULL, NULL);
fail:
    hv_log("X2APIC: start failed path=%s status=%s\n", path, efi_status_name(st));
    return st;
}

EFI_STATUS EFIAPI efi_main(EFI_HANDLE image, EFI_SYSTEM_TABLE *st)
{
    bs = st->BootServices;
    serial_init();
    every_cpu_to_x2apic();
    return start_kernel(image);
}
