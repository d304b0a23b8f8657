/*
 * hv_ring.h - the in-memory log ring: every `HV:` text chunk that goes to
 * serial also goes here, so a machine without a serial port can still show
 * what the hypervisor said (efi/linux/hvlog.c), and the next boot can show
 * what the last one said before it died (`HV: previous-boot ...`).
 *
 * Pure C and fixed layout (little-endian, no pointers): the firmware image,
 * the host unit tests and the Linux tool all build efi/lib/ring.c.
 *
 * Memory: one block of HV_RING_PAGES pages of its own (EfiRuntimeServicesData,
 * outside the protected pool), mapped read-only in the guest's EPT view.  A
 * header, then a byte area of records.  Positions are logical and grow for
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
    uint8_t reserved[0x100 - 0x50];
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
