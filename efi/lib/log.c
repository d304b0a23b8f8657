/*
 * log.c - hv_log: the one logging path for platform, core and backends.
 *
 * Text always goes to COM1.  While the platform has installed a mirror (its
 * ConOut mirror, see efi/platform/conout.c) it goes there too.  Any CPU may
 * call hv_log at any time; a spinlock keeps one call's text contiguous on
 * the serial line.
 *
 * Once the platform has set up the log ring (hv_log_set_ring, efi/lib/ring.c)
 * the same text goes there too, under the ring's own lock, which lives in the
 * ring memory and so is shared by the original image and its resident copy
 * (efi/core/vmm.c): serial and ring then see the text in the same order.  A
 * CPU that runs as our guest cannot write the ring (EPT maps it read-only);
 * on it, hv_log_ring_forward hands ring text to the host instead.
 */
#include "hv.h"
#include "hv_lib.h"
#include "hv_ring.h"

#define LOG_LINE_MAX 512

static volatile int serial_lock;
static hv_log_mirror_fn volatile mirror;
static struct hv_ring_hdr *ring;
static hv_log_mirror_fn volatile ring_forward;

void hv_log_set_ring(struct hv_ring_hdr *r)
{
    ring = r;
}

void hv_log_ring_forward(hv_log_mirror_fn fn)
{
    ring_forward = fn;
}

void hv_log_ring_only(const char *s, size_t n)
{
    if (!ring)
        return;
    hv_ring_lock(ring);
    hv_ring_append(ring, s, n);
    hv_ring_unlock(ring);
}

void hv_log_set_mirror(hv_log_mirror_fn fn)
{
    mirror = fn;
}

void hv_log_serial_only(void)
{
    mirror = NULL;
}

static void lock(void)
{
    while (__atomic_exchange_n(&serial_lock, 1, __ATOMIC_ACQUIRE)) {
        while (__atomic_load_n(&serial_lock, __ATOMIC_RELAXED))
            __asm__ volatile("pause");
    }
}

static void unlock(void)
{
    __atomic_store_n(&serial_lock, 0, __ATOMIC_RELEASE);
}

void hv_vlog(const char *fmt, va_list ap)
{
    char line[LOG_LINE_MAX];
    int n = hv_vsnprintf(line, sizeof(line), fmt, ap);
    size_t len = n < (int)sizeof(line) ? (size_t)n : sizeof(line) - 1;
    hv_log_mirror_fn m;

    /* A truncated line still ends the line, so the next one starts clean. */
    if (n >= (int)sizeof(line) && fmt[0] && fmt[strlen(fmt) - 1] == '\n')
        line[len - 1] = '\n';
    m = ring_forward;
    if (ring && !m) {
        hv_ring_lock(ring);
        serial_write(line, len);
        hv_ring_append(ring, line, len);
        hv_ring_unlock(ring);
    } else {
        lock();
        serial_write(line, len);
        unlock();
        if (ring && m)
            m(line, len);
    }
    m = mirror;
    if (m)
        m(line, len);
}

void hv_log(const char *fmt, ...)
{
    va_list ap;

    va_start(ap, fmt);
    hv_vlog(fmt, ap);
    va_end(ap);
}
