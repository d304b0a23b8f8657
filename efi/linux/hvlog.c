/*
 * hvlog.c - print the hypervisor's log ring from Linux (static, userspace).
 *
 * Finds the ring through the EFI variable the hypervisor publishes
 * (efivarfs: /sys/firmware/efi/efivars/HvLog-<HV_RING_GUID>), reads it
 * through /dev/mem (the ring is EfiRuntimeServicesData: "Reserved" in Linux's
 * map, which CONFIG_STRICT_DEVMEM and CONFIG_IO_STRICT_DEVMEM still allow),
 * checks every record (magic, boot ID, sequence, checksum: efi/lib/ring.c,
 * the same code the hypervisor runs) and prints the text, one `HV: ...`
 * line per line, then a summary on stderr:
 *
 *   hvlog: ring=<phys> boot-id=<id> records=<n> bad=<n> dropped=<n>
 *
 * Options: --stats prints only the `HV: stats ...` lines (exit counts by
 * reason: the hypervisor logs them at ACPI power-off, on devirtualize and on
 * HC_STATS); --var FILE and --mem FILE replace the efivarfs and /dev/mem
 * paths (host tests).  Exit status: 0 ok, 1 no usable ring, 2 usage.
 *
 * Limit: under kernel lockdown (Secure Boot) /dev/mem is closed and this
 * tool says so; the ring itself is still there for the next boot.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "hv_ring.h"

#define VAR_PATH "/sys/firmware/efi/efivars/" HV_RING_VAR_NAME "-" HV_RING_GUID_STR

static int only_stats;

static void print_line(void *ctx, const char *text, size_t len)
{
    (void)ctx;
    if (only_stats && (len < 10 || memcmp(text, "HV: stats ", 10)))
        return;
    fwrite(text, 1, len, stdout);
    fputc('\n', stdout);
}

static int read_var(const char *path, struct hv_ring_var *var)
{
    unsigned char buf[4 + sizeof(*var)];
    int fd = open(path, O_RDONLY);
    ssize_t n;

    if (fd < 0) {
        fprintf(stderr, "hvlog: no ring variable %s: %s (is efivarfs mounted? is the "
                "hypervisor running?)\n", path, strerror(errno));
        return -1;
    }
    n = read(fd, buf, sizeof(buf));             /* efivarfs: 4 attribute bytes, data */
    close(fd);
    if (n != (ssize_t)sizeof(buf)) {
        fprintf(stderr, "hvlog: %s: %zd bytes, want %zu\n", path, n, sizeof(buf));
        return -1;
    }
    memcpy(var, buf + 4, sizeof(*var));
    if (var->magic != HV_RING_MAGIC || !var->size || var->size > (1u << 24)) {
        fprintf(stderr, "hvlog: %s: not a ring variable\n", path);
        return -1;
    }
    return 0;
}

int main(int argc, char **argv)
{
    const char *var_path = VAR_PATH, *mem_path = "/dev/mem";
    struct hv_ring_var var;
    struct hv_ring_stat st;
    void *mem;
    ssize_t n;
    int fd, err;

    for (int i = 1; i < argc; i++) {
        if (!strcmp(argv[i], "--stats"))
            only_stats = 1;
        else if (!strcmp(argv[i], "--var") && i + 1 < argc)
            var_path = argv[++i];
        else if (!strcmp(argv[i], "--mem") && i + 1 < argc)
            mem_path = argv[++i];
        else {
            fprintf(stderr, "usage: hvlog [--stats] [--var FILE] [--mem FILE]\n");
            return 2;
        }
    }
    if (read_var(var_path, &var))
        return 1;
    fd = open(mem_path, O_RDONLY);
    if (fd < 0) {
        fprintf(stderr, "hvlog: cannot open %s: %s%s\n", mem_path, strerror(errno),
                errno == EPERM ? " (kernel lockdown closes /dev/mem)" : "");
        return 1;
    }
    mem = malloc(var.size);
    n = mem ? pread(fd, mem, var.size, (off_t)var.phys) : -1;
    close(fd);
    if (n != (ssize_t)var.size) {
        fprintf(stderr, "hvlog: cannot read %llu bytes at %llx from %s: %s\n",
                (unsigned long long)var.size, (unsigned long long)var.phys, mem_path,
                n < 0 ? strerror(errno) : "short read");
        return 1;
    }
    err = hv_ring_read(mem, var.size, print_line, NULL, &st);
    fflush(stdout);
    if (err) {
        fprintf(stderr, "hvlog: ring at %llx unusable: %s\n", (unsigned long long)var.phys,
                hv_ring_error_name(err));
        return 1;
    }
    fprintf(stderr, "hvlog: ring=%llx boot-id=%016llx records=%llu bad=%llu dropped=%llu\n",
            (unsigned long long)var.phys, (unsigned long long)st.boot_id,
            (unsigned long long)st.records, (unsigned long long)st.bad,
            (unsigned long long)st.dropped);
    return 0;
}
