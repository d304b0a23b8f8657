/*
 * log.c - hv_log: the one logging path for platform, core and backends.
 *
 * Text always goes to COM1.  While the platform has installed a mirror (its
 * ConOut mirror, see efi/platform/conout.c) it goes there too.  Any CPU may
 * call hv_log at any time; a spinlock keeps one call's text contiguous on
 * the serial line.
 */
#include "hv.h"
#include "hv_lib.h"

#define LOG_LINE_MAX 512

static volatile int serial_lock;
static hv_log_mirror_fn volatile mirror;

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
    lock();
    serial_write(line, len);
    unlock();
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
