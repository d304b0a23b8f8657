/*
 * hv_ring.h - the in-memory log ring: every `HV:` text chunk that goes to
 * serial also goes here, so a machine without a serial port can still show
 * what the hypervisor said (efi/linux/hvlog.c), and the next boot can show
 * what the last one said before it died (`HV: previous-boot ...`).
 *
 * Pure C and fixed layout (little-endian, no pointers): the firmware image,
 * the host unit tests and the Linux tool all build efi/lib/ring.c.
 *
 * Memory: HV_RING_PAGES pages (EfiRuntimeServicesData, outside the protected
 * pool), the tail of the HVLG block (below), mapped read-only in the guest's
 * EPT/NPT view.  A header, then a byte area of records.  Positions are logical and grow for
 * ever (physical offset = pos % area); a record never straddles the end of
 * the area: the writer leaves a WRAP word and continues at the next lap.
 * The oldest records are dropped to make room.
 */
#ifndef HV_RING_H
#define HV_RING_H

#include <stddef.h>
#include <stdint.h>

#define HV_RING_MAGIC    0x3130474E49525648ull   /* "HVRING01" */
#define HV_RING_VERSION  1
#define HV_RING_PAGES    16                      /* 64 KiB: ~1000 status lines */
#define HV_REC_MAGIC     0x524C5648u             /* "HVLR" */
#define HV_REC_WRAP      0x50525748u             /* "HWRP": continue at the next lap */
#define HV_REC_TEXT_MAX  1024

/* The EFI variable that publishes the ring: HvLog-<HV_RING_GUID>, attributes
 * NV+BS+RT, data = struct hv_ring_var.  Linux shows it as
 * /sys/firmware/efi/efivars/HvLog-4c8a7f2e-6b1d-4e3a-9f5c-2d7b8e1a0c63. */
#define HV_RING_VAR_NAME "HvLog"
#define HV_RING_GUID_STR "4c8a7f2e-6b1d-4e3a-9f5c-2d7b8e1a0c63"
#define HV_RING_GUID_INIT {0x4c8a7f2e, 0x6b1d, 0x4e3a, \
                           {0x9f, 0x5c, 0x2d, 0x7b, 0x8e, 0x1a, 0x0c, 0x63}}

struct hv_ring_var {
    uint64_t magic;         /* HV_RING_MAGIC */
    uint64_t phys;          /* physical address of struct hv_ring_hdr */
    uint64_t size;          /* bytes of ring memory, header included */
};

struct hv_ring_hdr {
    uint64_t magic;         /* 0x00 HV_RING_MAGIC */
    uint32_t version;       /* 0x08 HV_RING_VERSION */
    uint32_t hdr_size;      /* 0x0c records start here */
    uint64_t size;          /* 0x10 bytes of ring memory, header included */
    uint64_t boot_id;       /* 0x18 this boot's random ID, in every record */
    uint64_t prev_boot_id;  /* 0x20 the previous boot's, 0: none found */
    uint32_t hdr_csum;      /* 0x28 FNV-1a of 0x00..0x27 */
    volatile uint32_t lock; /* 0x2c writers' spinlock (host and firmware side) */
    volatile uint64_t head; /* 0x30 logical position of the next record */
    volatile uint64_t tail; /* 0x38 logical position of the oldest record */
    volatile uint64_t next_seq; /* 0x40 sequence number of the next record */
    uint64_t dropped;       /* 0x48 records dropped to make room */
    uint8_t sum_fix;        /* 0x50 the writer keeps the byte sum of the ring constant */
    uint8_t reserved[0x100 - 0x51];
};
_Static_assert(sizeof(struct hv_ring_hdr) == 0x100, "ring header layout");

struct hv_ring_rec {
    uint32_t magic;         /* 0x00 HV_REC_MAGIC */
    uint16_t len;           /* 0x04 text bytes (no NUL) */
    uint16_t reserved;      /* 0x06 */
    uint64_t seq;           /* 0x08 */
    uint64_t boot_id;       /* 0x10 */
    uint32_t csum;          /* 0x18 FNV-1a of 0x00..0x17 and the text */
    uint32_t reserved2;     /* 0x1c */
    char text[];            /* 0x20 len bytes, then zero padding to 8 */
};
_Static_assert(sizeof(struct hv_ring_rec) == 0x20, "ring record layout");

/*
 * The HVLG ACPI table: the ring's way to an OS whose /dev/mem is closed
 * (kernel lockdown).  Linux shows every table of the XSDT, read live from
 * its memory, as /sys/firmware/acpi/tables/<signature>.  The table is one
 * block of EfiRuntimeServicesData (Reserved to the OS, read-only in the
 * guest's EPT/NPT view): this header and the live exit statistics in the
 * first HV_HVLG_PAGES pages, then the ring (whose address the HvLog variable
 * holds).  Its ACPI checksum (ACPI 6.5 5.2.6) is set once; every writer
 * keeps the byte sum of what it changes constant (sum_fix bytes).
 *
 * Statistics: a CPUID of leaf HV_CPUID_STATS (ring 3 may ask) makes the
 * hypervisor copy every CPU's exit counters into stats[]: counts[cpu][kind],
 * kind_names[kind] naming them.  The counters stay where the exit path keeps
 * them; the copy costs the exit path nothing.
 */
#define HV_HVLG_SIG         "HVLG"
#define HV_HVLG_PAGES       4                   /* before the ring */
#define HV_HVLG_STATS_OFF   0x200
#define HV_STATS_KINDS      24                  /* counters per CPU (>= HV_EXIT_COUNT) */
#define HV_STATS_CPUS       ((HV_HVLG_PAGES * 4096 - HV_HVLG_STATS_OFF) / (HV_STATS_KINDS * 8))
#define HV_CPUID_BASE_LEAF  0x40000000u         /* EBX:ECX:EDX "MicroHvisor!", EAX max leaf */
#define HV_CPUID_STATS      0x40000002u         /* EAX = CPUs copied, EBX = snapshot number */

struct hv_hvlg {
    char sig[4];                    /* 0x00 "HVLG" (ACPI 6.5 5.2.6 header) */
    uint32_t length;                /* 0x04 the whole block, ring included */
    uint8_t revision;               /* 0x08 1 */
    uint8_t checksum;               /* 0x09 all `length` bytes sum to 0 */
    char oem_id[6];                 /* 0x0a */
    char oem_table_id[8];           /* 0x10 */
    uint32_t oem_revision;          /* 0x18 */
    uint32_t creator_id;            /* 0x1c */
    uint32_t creator_revision;      /* 0x20 */
    uint32_t ring_offset;           /* 0x24 struct hv_ring_hdr, from the table's start */
    uint32_t stats_offset;          /* 0x28 counts, HV_HVLG_STATS_OFF */
    uint16_t stats_cpus;            /* 0x2c room for this many CPUs */
    uint16_t stats_kinds;           /* 0x2e counters per CPU */
    volatile uint64_t stats_gen;    /* 0x30 snapshots taken, 0: none yet */
    volatile uint32_t stats_ncpus;  /* 0x38 CPUs in the latest snapshot */
    uint8_t sum_fix;                /* 0x3c keeps the byte sum of 0x30..end of stats */
    uint8_t reserved[3];            /* 0x3d */
    char kind_names[HV_STATS_KINDS][8]; /* 0x40 NUL-padded, "" unused */
};
_Static_assert(sizeof(struct hv_hvlg) == 0x100 && __builtin_offsetof(struct hv_hvlg, ring_offset)
               == 0x24 && __builtin_offsetof(struct hv_hvlg, stats_gen) == 0x30,
               "HVLG header layout");
_Static_assert(HV_HVLG_STATS_OFF >= sizeof(struct hv_hvlg), "HVLG stats offset");

/* Formats the table over `bytes` bytes at t, the ring at ring_offset already
 * initialized (hv_ring_init), and sets the ACPI checksum. */
void hv_hvlg_init(struct hv_hvlg *t, uint32_t bytes, uint32_t ring_offset);
/* Copies n CPUs' counters (counts(ctx, i) -> `kinds` values, NULL: none)
 * and the kinds' names into the table, keeping its byte sum; returns the
 * snapshot number.  The caller serializes writers. */
typedef const uint64_t *(*hv_hvlg_counts_fn)(void *ctx, unsigned cpu);
uint64_t hv_hvlg_snapshot(struct hv_hvlg *t, unsigned n, hv_hvlg_counts_fn counts, void *ctx,
                          const char *const *kind_names, unsigned kinds);
/* The table checked (signature, length, offsets; not the checksum, which
 * a reader racing a writer may see off): the ring inside it, NULL if
 * unusable (*why set). */
const struct hv_ring_hdr *hv_hvlg_ring(const struct hv_hvlg *t, uint64_t avail,
                                       const char **why);
/* The latest snapshot's counters of one CPU, NULL past stats_ncpus. */
const uint64_t *hv_hvlg_counts(const struct hv_hvlg *t, unsigned cpu);
uint8_t hv_sum8(const void *p, size_t n);

/* Why a ring could not be read; 0 is fine.  hv_ring_error_name() names it. */
enum hv_ring_error {
    HV_RING_OK = 0, HV_RING_E_SIZE, HV_RING_E_MAGIC, HV_RING_E_VERSION,
    HV_RING_E_HDR_CSUM, HV_RING_E_POSITIONS, HV_RING_E_EMPTY,
};
const char *hv_ring_error_name(int err);

uint32_t hv_ring_fnv1a(uint32_t h, const void *p, size_t n);
#define HV_FNV_INIT 0x811C9DC5u

/* Formats `size` bytes at r as an empty ring. */
void hv_ring_init(struct hv_ring_hdr *r, uint64_t size, uint64_t boot_id,
                  uint64_t prev_boot_id);
/* Appends one record (text truncated to HV_REC_TEXT_MAX).  No locking:
 * the caller serializes writers (hv_ring_lock). */
void hv_ring_append(struct hv_ring_hdr *r, const char *text, size_t len);
/* Bounded spin: a writer that died holding the lock (a host exception in
 * the middle of a log call) must not stop the panic report. */
void hv_ring_lock(struct hv_ring_hdr *r);
void hv_ring_unlock(struct hv_ring_hdr *r);

/* Reading a ring (a snapshot: `avail` bytes copied from its memory).
 * Records are checked (magic, length, checksum, boot ID, sequence) from the
 * oldest to the newest.  Text is handed to `line` one complete line at a
 * time (without '\n'); a final chunk without '\n' is handed as a line too. */
struct hv_ring_stat {
    uint64_t boot_id, prev_boot_id, first_seq, next_seq;
    uint64_t records, bad, lines, dropped;
};
typedef void (*hv_ring_line_fn)(void *ctx, const char *text, size_t len);
int hv_ring_read(const void *mem, uint64_t avail, hv_ring_line_fn line, void *ctx,
                 struct hv_ring_stat *st);

#endif
