/*
 * hvlog.c - print the hypervisor's log ring and its live exit statistics
 * from Linux (static, userspace).
 *
 * Finds the ring in one of two ways, the first that works:
 *  1. /sys/firmware/acpi/tables/HVLG: the HVLG ACPI table the hypervisor
 *     adds to the XSDT (hv_ring.h).  Linux reads a table from its memory at
 *     each read, so this is live; it works under kernel lockdown (Secure
 *     Boot), which closes /dev/mem but not the ACPI tables.  Root only (0400).
 *  2. The EFI variable (efivarfs: /sys/firmware/efi/efivars/HvLog-<GUID>)
 *     and /dev/mem (the block is EfiRuntimeServicesData: "Reserved" in
 *     Linux's map, which CONFIG_STRICT_DEVMEM and CONFIG_IO_STRICT_DEVMEM
 *     still allow).
 * It checks every record (magic, boot ID, sequence, checksum: efi/lib/ring.c,
 * the same code the hypervisor runs) and prints the text, one `HV: ...` line
 * per line, then a summary on stderr:
 *
 *   hvlog: ring=<phys>|HVLG boot-id=<id> records=<n> bad=<n> dropped=<n> via=acpi|devmem
 *          acpi-checksum=ok|bad|none
 *
 * --stats asks the hypervisor for a snapshot of every CPU's exit counters
 * (CPUID leaf HV_CPUID_STATS, allowed in ring 3) and prints them, one line
 * per CPU, nonzero counters only:
 *
 *   cpu=<i> <kind>=<count> ...
 *   hvlog: stats snapshot=<n> cpus=<n> via=acpi|devmem        (stderr)
 *
 * --no-snapshot prints the latest snapshot without asking for a new one.
 * --acpi, --var and --mem FILE replace the three paths ("" skips that way;
 * host tests).  Exit status: 0 ok, 1 no usable ring, 2 usage.
 */
#define _GNU_SOURCE
#include <cpuid.h>
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "hv_ring.h"

#define ACPI_PATH "/sys/firmware/acpi/tables/" HV_HVLG_SIG
#define VAR_PATH "/sys/firmware/efi/efivars/" HV_RING_VAR_NAME "-" HV_RING_GUID_STR
#define BLOCK_MAX (1u << 24)
#define PREFIX (HV_HVLG_PAGES * 4096ull)

struct found {
    unsigned char *mem;             /* the HVLG table, or (old hypervisor) the ring alone */
    size_t len;
    const struct hv_hvlg *table;    /* NULL: no table */
    const struct hv_ring_hdr *ring;
    const char *via;
    unsigned long long phys;        /* the ring's, 0: unknown */
};

static void print_line(void *ctx, const char *text, size_t len)
{
    (void)ctx;
    fwrite(text, 1, len, stdout);
    fputc('\n', stdout);
}

/* Reads a whole file (sysfs gives a table in page-sized pieces). */
static int read_file(const char *path, struct found *f, char *why, size_t wn)
{
    int fd = open(path, O_RDONLY);
    size_t cap = 1 << 16;
    ssize_t n;

    if (fd < 0) {
        snprintf(why, wn, "%s: %s", path, strerror(errno));
        return -1;
    }
    f->mem = malloc(cap);
    f->len = 0;
    while (f->mem && (n = read(fd, f->mem + f->len, cap - f->len)) > 0) {
        f->len += (size_t)n;
        if (f->len == cap && cap < BLOCK_MAX)
            f->mem = realloc(f->mem, cap *= 2);
    }
    close(fd);
    if (!f->mem || n < 0) {
        snprintf(why, wn, "%s: %s", path, f->mem ? strerror(errno) : "out of memory");
        return -1;
    }
    return 0;
}

static int from_acpi(const char *path, struct found *f, char *why, size_t wn)
{
    const char *bad;

    if (!*path) {
        snprintf(why, wn, "acpi: skipped");
        return -1;
    }
    if (read_file(path, f, why, wn))
        return -1;
    f->table = (const void *)f->mem;
    f->ring = hv_hvlg_ring(f->table, f->len, &bad);
    if (!f->ring) {
        snprintf(why, wn, "%s: %s", path, bad);
        return -1;
    }
    f->via = "acpi";
    return 0;
}

static int read_var(const char *path, struct hv_ring_var *var, char *why, size_t wn)
{
    unsigned char buf[4 + sizeof(*var)];
    int fd = open(path, O_RDONLY);
    ssize_t n;

    if (fd < 0) {
        snprintf(why, wn, "no ring variable %s: %s (is efivarfs mounted? is the "
                 "hypervisor running?)", path, strerror(errno));
        return -1;
    }
    n = read(fd, buf, sizeof(buf));             /* efivarfs: 4 attribute bytes, data */
    close(fd);
    if (n != (ssize_t)sizeof(buf)) {
        snprintf(why, wn, "%s: %zd bytes, want %zu", path, n, sizeof(buf));
        return -1;
    }
    memcpy(var, buf + 4, sizeof(*var));
    if (var->magic != HV_RING_MAGIC || !var->size || var->size > BLOCK_MAX) {
        snprintf(why, wn, "%s: not a ring variable", path);
        return -1;
    }
    return 0;
}

static int read_at(int fd, unsigned char *dst, size_t n, unsigned long long at)
{
    return pread(fd, dst, n, (off_t)at) == (ssize_t)n ? 0 : -1;
}

/* The block through /dev/mem: the table just below the ring the variable
 * names; a hypervisor without the table had the ring alone there. */
static int from_devmem(const char *var_path, const char *mem_path, struct found *f,
                       char *why, size_t wn)
{
    struct hv_ring_var var;
    const char *bad;
    int fd;

    if (!*var_path) {
        snprintf(why, wn, "efivarfs: skipped");
        return -1;
    }
    if (read_var(var_path, &var, why, wn))
        return -1;
    fd = open(mem_path, O_RDONLY);
    if (fd < 0) {
        snprintf(why, wn, "cannot open %s: %s%s", mem_path, strerror(errno),
                 errno == EPERM ? " (kernel lockdown closes /dev/mem)" : "");
        return -1;
    }
    f->len = PREFIX + var.size;
    f->mem = malloc(f->len);
    f->phys = var.phys;
    f->via = "devmem";
    if (f->mem && var.phys >= PREFIX && !read_at(fd, f->mem, f->len, var.phys - PREFIX) &&
        (f->ring = hv_hvlg_ring((const void *)f->mem, f->len, &bad)) &&
        (unsigned char *)f->ring == f->mem + PREFIX) {
        f->table = (const void *)f->mem;
    } else if (f->mem && !read_at(fd, f->mem, var.size, var.phys)) {
        f->len = var.size;
        f->table = NULL;
        f->ring = (const void *)f->mem;
    } else {
        snprintf(why, wn, "cannot read %llu bytes at %llx from %s: %s",
                 (unsigned long long)var.size, (unsigned long long)var.phys, mem_path,
                 f->mem ? strerror(errno) : "out of memory");
        close(fd);
        return -1;
    }
    close(fd);
    return 0;
}

/* The table's ACPI checksum as read (a writer racing the read may make it
 * look off for that one read). */
static const char *checksum(const struct found *f)
{
    if (!f->table)
        return "none";
    return f->table->length <= f->len && !hv_sum8(f->mem, f->table->length) ? "ok" : "bad";
}

static int print_log(const struct found *f)
{
    uint64_t avail = f->len - (size_t)((const unsigned char *)f->ring - f->mem);
    struct hv_ring_stat st;
    char where[32];
    int err = hv_ring_read(f->ring, avail, print_line, NULL, &st);

    fflush(stdout);
    if (f->phys)
        snprintf(where, sizeof(where), "%llx", f->phys);
    else
        snprintf(where, sizeof(where), "%s", HV_HVLG_SIG);
    if (err) {
        fprintf(stderr, "hvlog: ring at %s unusable: %s\n", where, hv_ring_error_name(err));
        return 1;
    }
    fprintf(stderr, "hvlog: ring=%s boot-id=%016llx records=%llu bad=%llu dropped=%llu "
            "via=%s acpi-checksum=%s\n", where, (unsigned long long)st.boot_id,
            (unsigned long long)st.records, (unsigned long long)st.bad,
            (unsigned long long)st.dropped, f->via, checksum(f));
    return 0;
}

/* CPUID HV_CPUID_STATS: the hypervisor copies every CPU's counters into the
 * table before the instruction completes.  Returns the snapshot's number. */
static int request_snapshot(unsigned *gen)
{
    unsigned a, b, c, d;
    char sig[13];

    __cpuid(HV_CPUID_BASE_LEAF, a, b, c, d);
    memcpy(sig, &b, 4);
    memcpy(sig + 4, &c, 4);
    memcpy(sig + 8, &d, 4);
    sig[12] = 0;
    if (strcmp(sig, "MicroHvisor!") || a < HV_CPUID_STATS)
        return -1;
    __cpuid(HV_CPUID_STATS, a, b, c, d);
    *gen = b;
    return b ? 0 : -1;
}

static int print_stats(const struct found *f)
{
    const struct hv_hvlg *t = f->table;

    if (!t) {
        fprintf(stderr, "hvlog: no live statistics: the ring has no HVLG table (older "
                "hypervisor)\n");
        return 1;
    }
    if (!t->stats_gen) {
        fprintf(stderr, "hvlog: no statistics snapshot taken yet\n");
        return 1;
    }
    for (unsigned i = 0; i < t->stats_ncpus; i++) {
        const uint64_t *n = hv_hvlg_counts(t, i);

        printf("cpu=%u", i);
        for (unsigned k = 0; n && k < t->stats_kinds; k++)
            if (n[k])
                printf(" %.8s=%llu", t->kind_names[k], (unsigned long long)n[k]);
        printf("\n");
    }
    fflush(stdout);
    fprintf(stderr, "hvlog: stats snapshot=%llu cpus=%u via=%s\n",
            (unsigned long long)t->stats_gen, t->stats_ncpus, f->via);
    return 0;
}

int main(int argc, char **argv)
{
    const char *acpi_path = ACPI_PATH, *var_path = VAR_PATH, *mem_path = "/dev/mem";
    char why_acpi[256], why_mem[384];
    struct found f = {0};
    unsigned gen = 0;
    int stats = 0, ask = 1;

    for (int i = 1; i < argc; i++) {
        if (!strcmp(argv[i], "--stats"))
            stats = 1;
        else if (!strcmp(argv[i], "--no-snapshot"))
            ask = 0;
        else if (!strcmp(argv[i], "--acpi") && i + 1 < argc)
            acpi_path = argv[++i];
        else if (!strcmp(argv[i], "--var") && i + 1 < argc)
            var_path = argv[++i];
        else if (!strcmp(argv[i], "--mem") && i + 1 < argc)
            mem_path = argv[++i];
        else {
            fprintf(stderr, "usage: hvlog [--stats [--no-snapshot]] [--acpi FILE] [--var FILE] [--mem FILE]\n");
            return 2;
        }
    }
    if (stats && ask && request_snapshot(&gen)) {
        fprintf(stderr, "hvlog: no live statistics: this CPU runs under no hypervisor of "
                "ours with CPUID leaf %#x\n", HV_CPUID_STATS);
        return 1;
    }
    if (from_acpi(acpi_path, &f, why_acpi, sizeof(why_acpi))) {
        free(f.mem);
        memset(&f, 0, sizeof(f));
        if (from_devmem(var_path, mem_path, &f, why_mem, sizeof(why_mem))) {
            fprintf(stderr, "hvlog: no ring: %s; %s\n", why_acpi, why_mem);
            return 1;
        }
    }
    return stats ? print_stats(&f) : print_log(&f);
}
