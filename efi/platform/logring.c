/*
 * logring.c - the platform side of the log ring (efi/include/hv_ring.h):
 * find and print the previous boot's ring, then set up this boot's and
 * publish it in the EFI variable HvLog-<HV_RING_GUID> (NV+BS+RT) and, as the
 * tail of the HVLG table, in the XSDT (acpi.c).
 *
 * Order matters (plat_ring_setup runs before anything else logs): the
 * previous ring is read before this boot takes any memory of its own, and
 * it is read from pages we own (AllocateAddress) so nothing else scribbles
 * on them while we check them.  Those same pages then hold this boot's
 * ring, so the address and the variable rarely change (no flash wear).
 */
#include "hv.h"
#include "hv_efi.h"
#include "hv_lib.h"
#include "hv_ring.h"

#define VAR_ATTRS (EFI_VARIABLE_NON_VOLATILE | EFI_VARIABLE_BOOTSERVICE_ACCESS | \
                   EFI_VARIABLE_RUNTIME_ACCESS)

#define RING_MAX_ADDRESS 0x3FFFFFFull
/* One block: the HVLG table's header and statistics, then the ring. */
#define BLOCK_PAGES (HV_HVLG_PAGES + HV_RING_PAGES)
#define RING_OFFSET (HV_HVLG_PAGES * 4096ull)

static EFI_GUID ring_guid = HV_RING_GUID_INIT;
static CHAR16 var_name[] = L"" HV_RING_VAR_NAME;
static struct hv_ring_hdr *ring;
static struct hv_hvlg *table;
static bool in_xsdt;
static uint64_t prev_boot_id;

const struct hv_ring_hdr *plat_ring(void)
{
    return ring;
}

struct hv_hvlg *plat_hvlg(void)
{
    return table;
}

bool plat_ring_had_previous(void)
{
    return prev_boot_id != 0;
}

static uint64_t random64(void)
{
    uint64_t v = 0;
    unsigned ok = 0;
    uint32_t ecx;

    __asm__ volatile("cpuid" : "=c"(ecx) : "a"(1), "c"(0) : "ebx", "edx");
    for (int i = 0; (ecx & (1u << 30)) && !ok && i < 10; i++)     /* RDRAND */
        __asm__ volatile("rdrand %0; setc %b1" : "=r"(v), "=q"(ok) : : "cc");
    if (!ok) {
        uint32_t lo, hi;

        __asm__ volatile("rdtsc" : "=a"(lo), "=d"(hi));
        v = (((uint64_t)hi << 32) | lo) * 0x9E3779B97F4A7C15ull;
    }
    return v ? v : 1;
}

static void print_prev_line(void *ctx, const char *text, size_t len)
{
    char buf[HV_REC_TEXT_MAX + 1];

    (void)ctx;
    if (len >= 4 && !memcmp(text, "HV: ", 4)) {     /* "HV: previous-boot panic ..." */
        text += 4;
        len -= 4;
    }
    memcpy(buf, text, len);
    buf[len] = 0;
    hv_log("HV: previous-boot %s\n", buf);
}

/* Returns the previous ring's pages when we could take them (NULL if not). */
/* The ring pages the variable names, taken with AllocateAddress; NULL (and
 * *why set) when there is no usable variable or the pages are not free. */
static struct hv_ring_hdr *pages_from_variable(const char **why)
{
    EFI_RUNTIME_SERVICES *rt = plat_st->RuntimeServices;
    struct hv_ring_var var;
    UINTN size = sizeof(var);
    UINT32 attrs = 0;
    EFI_PHYSICAL_ADDRESS addr;
    EFI_STATUS s;

    s = rt->GetVariable(var_name, &ring_guid, &attrs, &size, &var);
    if (EFI_ERROR(s) || size != sizeof(var) || var.magic != HV_RING_MAGIC ||
        var.size != HV_RING_PAGES * 4096ull || (var.phys & 0xFFF) || !var.phys) {
        *why = s == EFI_NOT_FOUND ? "no-variable" : "bad-variable";
        return NULL;
    }
    addr = var.phys - RING_OFFSET;
    s = var.phys < RING_OFFSET ? EFI_NOT_FOUND :
        plat_bs->AllocatePages(AllocateAddress, EfiRuntimeServicesData, BLOCK_PAGES, &addr);
    if (EFI_ERROR(s)) {
        *why = "ring-memory-in-use";
        return NULL;
    }
    return (struct hv_ring_hdr *)(uintptr_t)var.phys;
}

static struct hv_ring_hdr *ring_alloc(void);

/* Finds, checks and prints the previous boot's ring.  Through the variable;
 * where that did not survive the reset (OVMF on Bochs keeps variables in
 * RAM it re-creates), in the pages the ring allocation policy gives again,
 * which a deterministic firmware hands out unchanged.  The magic, header
 * checksum and per-record checksums and boot ID make a chance match
 * impossible in practice.  Returns the pages for this boot's ring. */
static struct hv_ring_hdr *previous_boot(void)
{
    const char *why = NULL, *found = "variable";
    struct hv_ring_hdr *r = pages_from_variable(&why);
    struct hv_ring_stat st;
    int err;

    if (!r && strcmp(why, "ring-memory-in-use")) {
        r = ring_alloc();
        found = "memory";
    }
    if (!r) {
        hv_log("HV: previous-boot none reason=%s\n", why);
        return NULL;
    }
    err = hv_ring_read(r, HV_RING_PAGES * 4096ull, NULL, NULL, &st);
    if (err) {
        hv_log("HV: previous-boot none reason=%s ring=%llx\n",
               why ? why : hv_ring_error_name(err), (unsigned long long)(uintptr_t)r);
        return r;
    }
    prev_boot_id = st.boot_id;
    hv_log("HV: previous-boot ring=%llx boot-id=%016llx records=%llu bad=%llu dropped=%llu "
           "found=%s\n", (unsigned long long)(uintptr_t)r, (unsigned long long)st.boot_id,
           (unsigned long long)st.records, (unsigned long long)st.bad,
           (unsigned long long)st.dropped, found);
    hv_ring_read(r, HV_RING_PAGES * 4096ull, print_prev_line, NULL, &st);
    hv_log("HV: previous-boot end lines=%llu\n", (unsigned long long)st.lines);
    return r;
}

static void publish(struct hv_ring_hdr *r)
{
    EFI_RUNTIME_SERVICES *rt = plat_st->RuntimeServices;
    struct hv_ring_var want = {HV_RING_MAGIC, (uint64_t)(uintptr_t)r, r->size}, have;
    UINTN size = sizeof(have);
    UINT32 attrs = 0;
    EFI_STATUS s;

    s = rt->GetVariable(var_name, &ring_guid, &attrs, &size, &have);
    if (!EFI_ERROR(s) && size == sizeof(have) && attrs == VAR_ATTRS &&
        !memcmp(&have, &want, sizeof(want)))
        return;                             /* unchanged: no NV write */
    s = rt->SetVariable(var_name, &ring_guid, VAR_ATTRS, sizeof(want), &want);
    if (EFI_ERROR(s))
        hv_log("HV: log variable not set status=%s\n", efi_status_name(s));
}

/* New ring memory: below 64 MiB where the firmware has it, because firmware
 * allocates top-down and its transient allocations in the next boot (before
 * we run) would overwrite a ring near the top of memory.  The ring is the
 * block's tail (RING_OFFSET); the HVLG header comes first. */
static struct hv_ring_hdr *ring_alloc(void)
{
    EFI_PHYSICAL_ADDRESS addr = RING_MAX_ADDRESS;
    uint8_t *block;

    if (EFI_ERROR(plat_bs->AllocatePages(AllocateMaxAddress, EfiRuntimeServicesData,
                                         BLOCK_PAGES, &addr)))
        block = plat_alloc_pages(BLOCK_PAGES);
    else
        block = (uint8_t *)(uintptr_t)addr;
    return block ? (struct hv_ring_hdr *)(block + RING_OFFSET) : NULL;
}

void plat_ring_setup(void)
{
    struct hv_ring_hdr *r = previous_boot();

    if (!r)
        r = ring_alloc();
    if (!r) {
        hv_log("HV: log ring none reason=no-memory\n");
        return;
    }
    hv_ring_init(r, HV_RING_PAGES * 4096ull, random64(), prev_boot_id);
    table = (struct hv_hvlg *)((uint8_t *)r - RING_OFFSET);
    hv_hvlg_init(table, BLOCK_PAGES * 4096u, RING_OFFSET);
    ring = r;
    hv_log_set_ring(r);
    publish(r);
    in_xsdt = plat_acpi_add_table(table);
}

void plat_ring_report(void)
{
    if (ring)
        hv_log("HV: log ring=%llx size=%llu boot-id=%016llx prev-boot-id=%016llx "
               "var=" HV_RING_VAR_NAME "-" HV_RING_GUID_STR " acpi=%s@%llx\n",
               (unsigned long long)(uintptr_t)ring, (unsigned long long)ring->size,
               (unsigned long long)ring->boot_id, (unsigned long long)ring->prev_boot_id,
               in_xsdt ? HV_HVLG_SIG : "none", (unsigned long long)(uintptr_t)table);
}
