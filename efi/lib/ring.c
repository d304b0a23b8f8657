/*
 * ring.c - the log ring's format: writer and checking reader (hv_ring.h).
 *
 * Pure C with no library calls, so the firmware image, the host unit tests
 * (tests/test_efi_hostlib.py) and the Linux tool (efi/linux/hvlog.c) all
 * run this same code.
 */
#include "hv_ring.h"

#define RING_LOCK_SPINS 20000000u

static const char *const error_names[] = {
    [HV_RING_OK] = "ok",
    [HV_RING_E_SIZE] = "bad-size",
    [HV_RING_E_MAGIC] = "bad-magic",
    [HV_RING_E_VERSION] = "bad-version",
    [HV_RING_E_HDR_CSUM] = "bad-header-checksum",
    [HV_RING_E_POSITIONS] = "bad-positions",
    [HV_RING_E_EMPTY] = "empty",
};

const char *hv_ring_error_name(int err)
{
    if (err < 0 || err >= (int)(sizeof(error_names) / sizeof(error_names[0])))
        return "unknown";
    return error_names[err];
}

uint32_t hv_ring_fnv1a(uint32_t h, const void *p, size_t n)
{
    const uint8_t *b = p;

    for (size_t i = 0; i < n; i++)
        h = (h ^ b[i]) * 0x01000193u;
    return h;
}

static uint32_t hdr_csum(const struct hv_ring_hdr *r)
{
    return hv_ring_fnv1a(HV_FNV_INIT, r, __builtin_offsetof(struct hv_ring_hdr, hdr_csum));
}

static uint32_t rec_csum(const struct hv_ring_rec *rec)
{
    uint32_t h = hv_ring_fnv1a(HV_FNV_INIT, rec, __builtin_offsetof(struct hv_ring_rec, csum));

    return hv_ring_fnv1a(h, rec->text, rec->len);
}

static uint64_t area(const struct hv_ring_hdr *r)
{
    return r->size - r->hdr_size;
}

static uint64_t rec_bytes(size_t len)
{
    return (sizeof(struct hv_ring_rec) + len + 7) & ~7ull;
}

static uint8_t *at(struct hv_ring_hdr *r, uint64_t pos)
{
    return (uint8_t *)r + r->hdr_size + pos % area(r);
}

void hv_ring_init(struct hv_ring_hdr *r, uint64_t size, uint64_t boot_id,
                  uint64_t prev_boot_id)
{
    __builtin_memset(r, 0, sizeof(*r));
    r->magic = HV_RING_MAGIC;
    r->version = HV_RING_VERSION;
    r->hdr_size = sizeof(*r);
    r->size = size & ~7ull;
    r->boot_id = boot_id;
    r->prev_boot_id = prev_boot_id;
    r->hdr_csum = hdr_csum(r);
}

/* Drops the oldest record (the tail), following a WRAP word to the next lap. */
static void drop_oldest(struct hv_ring_hdr *r)
{
    uint64_t a = area(r), off = r->tail % a;
    const struct hv_ring_rec *rec = (const void *)at(r, r->tail);

    if (a - off < sizeof(*rec) || rec->magic != HV_REC_MAGIC)
        r->tail += a - off;                 /* WRAP (or the end of a lap) */
    else {
        r->tail += rec_bytes(rec->len);
        r->dropped++;
    }
}

uint8_t hv_sum8(const void *p, size_t n)
{
    const uint8_t *b = p;
    uint8_t s = 0;

    for (size_t i = 0; i < n; i++)
        s += b[i];
    return s;
}

/* The positions and counters an append changes: head, tail, next_seq, dropped. */
#define HDR_LIVE(r) ((const uint8_t *)(r) + __builtin_offsetof(struct hv_ring_hdr, head))
#define HDR_LIVE_LEN (__builtin_offsetof(struct hv_ring_hdr, sum_fix) - \
                      __builtin_offsetof(struct hv_ring_hdr, head))

/* Every byte an append changes is summed before and after, and sum_fix takes
 * the difference, so the ring's byte sum never changes: the HVLG table that
 * holds it keeps a valid ACPI checksum without recomputing 64 KiB. */
void hv_ring_append(struct hv_ring_hdr *r, const char *text, size_t len)
{
    uint64_t a = area(r), sz, pos;
    struct hv_ring_rec *rec;
    uint8_t hdr_before, before, fix = 0;

    if (len > HV_REC_TEXT_MAX)
        len = HV_REC_TEXT_MAX;
    sz = rec_bytes(len);
    if (sz > a)
        return;
    hdr_before = hv_sum8(HDR_LIVE(r), HDR_LIVE_LEN);
    pos = r->head;
    if (a - pos % a < sz)                   /* no straddling: next lap */
        pos += a - pos % a;
    while (r->tail < r->head && pos + sz - r->tail > a)
        drop_oldest(r);
    if (r->tail >= r->head)                 /* empty (or everything dropped) */
        r->tail = pos;
    if (pos != r->head) {
        uint8_t *w = at(r, r->head);

        before = hv_sum8(w, 4);
        *(volatile uint32_t *)w = HV_REC_WRAP;
        fix += (uint8_t)(hv_sum8(w, 4) - before);
    }
    rec = (struct hv_ring_rec *)at(r, pos);
    before = hv_sum8(rec, sz);
    rec->magic = 0;                         /* a reader sees it torn until done */
    rec->len = (uint16_t)len;
    rec->reserved = 0;
    rec->seq = r->next_seq;
    rec->boot_id = r->boot_id;
    rec->reserved2 = 0;
    __builtin_memcpy(rec->text, text, len);
    __builtin_memset(rec->text + len, 0, sz - sizeof(*rec) - len);
    rec->magic = HV_REC_MAGIC;
    rec->csum = rec_csum(rec);
    fix += (uint8_t)(hv_sum8(rec, sz) - before);
    __atomic_store_n(&r->head, pos + sz, __ATOMIC_RELEASE);
    r->next_seq++;
    fix += (uint8_t)(hv_sum8(HDR_LIVE(r), HDR_LIVE_LEN) - hdr_before);
    r->sum_fix -= fix;
}

void hv_ring_lock(struct hv_ring_hdr *r)
{
    for (uint32_t i = 0; i < RING_LOCK_SPINS; i++) {
        if (!__atomic_exchange_n(&r->lock, 1, __ATOMIC_ACQUIRE))
            return;
        __asm__ volatile("pause");
    }
    /* Stolen: its owner is stuck (see hv_ring.h); carry on. */
}

void hv_ring_unlock(struct hv_ring_hdr *r)
{
    __atomic_store_n(&r->lock, 0, __ATOMIC_RELEASE);
}

/* ---- reader -------------------------------------------------------------- */
struct lines {
    hv_ring_line_fn fn;
    void *ctx;
    struct hv_ring_stat *st;
    size_t n;
    char buf[HV_REC_TEXT_MAX];
};

static void emit(struct lines *l)
{
    if (l->fn)
        l->fn(l->ctx, l->buf, l->n);
    l->st->lines++;
    l->n = 0;
}

static void feed(struct lines *l, const char *s, size_t n)
{
    for (size_t i = 0; i < n; i++) {
        if (s[i] == '\n') {
            emit(l);
        } else {
            if (l->n == sizeof(l->buf))
                emit(l);
            l->buf[l->n++] = s[i];
        }
    }
}

static int check_header(const struct hv_ring_hdr *r, uint64_t avail)
{
    uint64_t a;

    if (avail < sizeof(*r))
        return HV_RING_E_SIZE;
    if (r->magic != HV_RING_MAGIC)
        return HV_RING_E_MAGIC;
    if (r->version != HV_RING_VERSION)
        return HV_RING_E_VERSION;
    if (r->hdr_csum != hdr_csum(r))
        return HV_RING_E_HDR_CSUM;
    if (r->hdr_size != sizeof(*r) || r->size > avail || r->size <= r->hdr_size ||
        (r->size & 7))
        return HV_RING_E_SIZE;
    a = area(r);
    if (r->head < r->tail || r->head - r->tail > a || (r->tail & 7) || (r->head & 7))
        return HV_RING_E_POSITIONS;
    return HV_RING_OK;
}

int hv_ring_read(const void *mem, uint64_t avail, hv_ring_line_fn line, void *ctx,
                 struct hv_ring_stat *st)
{
    const struct hv_ring_hdr *r = mem;
    struct hv_ring_stat dummy;
    struct lines l;
    uint64_t a, pos, want_seq = 0;
    int err;

    st = st ? st : &dummy;
    __builtin_memset(st, 0, sizeof(*st));
    err = check_header(r, avail);
    if (err)
        return err;
    st->boot_id = r->boot_id;
    st->prev_boot_id = r->prev_boot_id;
    st->next_seq = r->next_seq;
    st->dropped = r->dropped;
    l.fn = line;
    l.ctx = ctx;
    l.st = st;
    l.n = 0;
    a = area(r);
    for (pos = r->tail; pos < r->head;) {
        uint64_t off = pos % a;
        const struct hv_ring_rec *rec =
            (const void *)((const uint8_t *)r + r->hdr_size + off);

        if (a - off < sizeof(*rec) || rec->magic == HV_REC_WRAP) {
            pos += a - off;
            continue;
        }
        if (rec->magic != HV_REC_MAGIC || rec->len > HV_REC_TEXT_MAX ||
            rec_bytes(rec->len) > a - off) {
            st->bad++;                      /* cannot even step over it */
            break;
        }
        if (rec->csum != rec_csum(rec) || rec->boot_id != r->boot_id ||
            (st->records && rec->seq != want_seq)) {
            st->bad++;                      /* torn or overwritten: skip it */
        } else {
            if (!st->records)
                st->first_seq = rec->seq;
            st->records++;
            feed(&l, rec->text, rec->len);
        }
        want_seq = rec->seq + 1;
        pos += rec_bytes(rec->len);
    }
    if (l.n)
        emit(&l);
    return st->records ? HV_RING_OK : HV_RING_E_EMPTY;
}

/* ---- the HVLG ACPI table around the ring ---------------------------------- */
static void copy_name(char *dst, size_t n, const char *src)
{
    size_t i = 0;

    for (; src && src[i] && i < n; i++)
        dst[i] = src[i];
    for (; i < n; i++)
        dst[i] = 0;
}

void hv_hvlg_init(struct hv_hvlg *t, uint32_t bytes, uint32_t ring_offset)
{
    __builtin_memset(t, 0, ring_offset);
    __builtin_memcpy(t->sig, HV_HVLG_SIG, 4);
    t->length = bytes;
    t->revision = 1;
    __builtin_memcpy(t->oem_id, "MICROH", 6);
    __builtin_memcpy(t->oem_table_id, "HVLOGRNG", 8);
    t->oem_revision = HV_RING_VERSION;
    __builtin_memcpy(&t->creator_id, "MHV ", 4);
    t->creator_revision = 1;
    t->ring_offset = ring_offset;
    t->stats_offset = HV_HVLG_STATS_OFF;
    t->stats_cpus = HV_STATS_CPUS;
    t->checksum = (uint8_t)-hv_sum8(t, bytes);      /* the byte at 0x09 was 0 */
}

static uint64_t *stats_of(struct hv_hvlg *t, unsigned cpu)
{
    return (uint64_t *)((uint8_t *)t + t->stats_offset) + (size_t)cpu * HV_STATS_KINDS;
}

/* The header bytes a snapshot changes: stats_kinds, stats_gen, stats_ncpus
 * and the names (sum_fix and its padding are not among them). */
static uint8_t snapshot_hdr_sum(const struct hv_hvlg *t)
{
    return (uint8_t)(hv_sum8(&t->stats_kinds, 2) + hv_sum8((const void *)&t->stats_gen, 12) +
                     hv_sum8(t->kind_names, sizeof(t->kind_names)));
}

uint64_t hv_hvlg_snapshot(struct hv_hvlg *t, unsigned n, hv_hvlg_counts_fn counts, void *ctx,
                          const char *const *kind_names, unsigned kinds)
{
    uint8_t fix = 0, before, hdr_before = snapshot_hdr_sum(t);

    t->stats_kinds = kinds < HV_STATS_KINDS ? kinds : HV_STATS_KINDS;
    for (unsigned k = 0; k < t->stats_kinds; k++)
        copy_name(t->kind_names[k], sizeof(t->kind_names[k]), kind_names[k]);
    if (n > t->stats_cpus)
        n = t->stats_cpus;
    for (unsigned i = 0; i < n; i++) {
        uint64_t *dst = stats_of(t, i);
        const uint64_t *src = counts(ctx, i);

        before = hv_sum8(dst, HV_STATS_KINDS * 8);
        for (unsigned k = 0; k < t->stats_kinds; k++)
            dst[k] = src ? __atomic_load_n(&src[k], __ATOMIC_RELAXED) : 0;
        fix += (uint8_t)(hv_sum8(dst, HV_STATS_KINDS * 8) - before);
    }
    t->stats_ncpus = n;
    __atomic_store_n(&t->stats_gen, t->stats_gen + 1, __ATOMIC_RELEASE);
    fix += (uint8_t)(snapshot_hdr_sum(t) - hdr_before);
    t->sum_fix -= fix;
    return t->stats_gen;
}

const struct hv_ring_hdr *hv_hvlg_ring(const struct hv_hvlg *t, uint64_t avail,
                                       const char **why)
{
    const struct hv_ring_hdr *r;

    *why = NULL;
    if (avail < sizeof(*t) || __builtin_memcmp(t->sig, HV_HVLG_SIG, 4))
        *why = "not-an-HVLG-table";
    else if (t->length > avail || t->length < sizeof(*t) + sizeof(*r) ||
             t->ring_offset < sizeof(*t) ||
             t->ring_offset > t->length - sizeof(*r) ||
             t->stats_offset < sizeof(*t) || t->stats_kinds > HV_STATS_KINDS ||
             t->stats_offset + (uint64_t)t->stats_cpus * HV_STATS_KINDS * 8 > t->ring_offset)
        *why = "bad-HVLG-layout";
    if (*why)
        return NULL;
    r = (const void *)((const uint8_t *)t + t->ring_offset);
    if (r->magic != HV_RING_MAGIC || r->size > t->length - t->ring_offset) {
        *why = "bad-ring-in-HVLG";
        return NULL;
    }
    return r;
}

const uint64_t *hv_hvlg_counts(const struct hv_hvlg *t, unsigned cpu)
{
    return cpu < t->stats_ncpus && cpu < t->stats_cpus ?
           stats_of((struct hv_hvlg *)t, cpu) : NULL;
}
