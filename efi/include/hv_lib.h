/*
 * hv_lib.h - freestanding helpers shared by every EFI image (efi/lib).
 *
 * Nothing here depends on UEFI, so fmt.c (and the config parser in
 * efi/platform/hvcfg.c) can also be compiled for the host and unit-tested.
 */
#ifndef HV_LIB_H
#define HV_LIB_H

#include <stdarg.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

/* ---- port I/O (one copy for every image) ------------------------------- */
static inline void outb(uint16_t port, uint8_t v)
{
    __asm__ volatile("outb %0, %1" : : "a"(v), "Nd"(port));
}

static inline uint8_t inb(uint16_t port)
{
    uint8_t v;

    __asm__ volatile("inb %1, %0" : "=a"(v) : "Nd"(port));
    return v;
}

static inline void outl(uint16_t port, uint32_t v)
{
    __asm__ volatile("outl %0, %1" : : "a"(v), "Nd"(port));
}

static inline uint32_t inl(uint16_t port)
{
    uint32_t v;

    __asm__ volatile("inl %1, %0" : "=a"(v) : "Nd"(port));
    return v;
}

/* An access of `size` bytes (1, 2 or 4), as an I/O instruction would make. */
static inline uint32_t port_in(uint16_t port, unsigned size)
{
    uint16_t w;

    if (size == 1)
        return inb(port);
    if (size == 2) {
        __asm__ volatile("inw %1, %0" : "=a"(w) : "Nd"(port));
        return w;
    }
    return inl(port);
}

static inline void port_out(uint16_t port, unsigned size, uint32_t v)
{
    if (size == 1)
        outb(port, (uint8_t)v);
    else if (size == 2)
        __asm__ volatile("outw %0, %1" : : "a"((uint16_t)v), "Nd"(port));
    else
        outl(port, v);
}

/* ---- mem.c: the C library subset the compiler may call ----------------- */
void *memset(void *dst, int c, size_t n);
void *memcpy(void *restrict dst, const void *restrict src, size_t n);
void *memmove(void *dst, const void *src, size_t n);
int memcmp(const void *a, const void *b, size_t n);
size_t strlen(const char *s);
int strcmp(const char *a, const char *b);
int strncmp(const char *a, const char *b, size_t n);

/* ---- fmt.c: printf subset ---------------------------------------------- */
/* Conversions: %s %c %d %i %u %x %X %p %%, length modifiers l, ll, z;
 * flags '0' and '-', a decimal width.  snprintf semantics: the return value
 * is the length the full output would have; the buffer is always
 * NUL-terminated when size > 0.  Unknown conversions print verbatim. */
int hv_vsnprintf(char *buf, size_t size, const char *fmt, va_list ap);
int hv_snprintf(char *buf, size_t size, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

/* ---- serial.c: polled 16550 on COM1 ------------------------------------ */
void serial_init(void);
/* Writes n bytes, turning "\n" into "\r\n".  Never blocks forever. */
void serial_write(const char *s, size_t n);

/* ---- efistatus.c ------------------------------------------------------- */
/* "EFI_NOT_FOUND" etc.; unknown codes give "EFI_STATUS_UNKNOWN". */
const char *efi_status_name(uint64_t status);

/* ---- log.c: hv_log (declared in hv.h) plumbing ------------------------- */
/* Optional second sink for log text (the platform's console mirror).  It is
 * called on the same CPU as hv_log, outside the serial lock. */
typedef void (*hv_log_mirror_fn)(const char *s, size_t n);
void hv_log_set_mirror(hv_log_mirror_fn fn);
/* After this, hv_log writes to the serial port only (ExitBootServices, or
 * once CPUs run as guests and log calls may come from exit handlers). */
void hv_log_serial_only(void);
void hv_vlog(const char *fmt, va_list ap);
/* The log ring (hv_ring.h): from now on every log text goes there too. */
struct hv_ring_hdr;
void hv_log_set_ring(struct hv_ring_hdr *r);
/* On a CPU that is our guest: ring text goes through fn (a hypercall)
 * instead; NULL: write the ring directly again. */
void hv_log_ring_forward(hv_log_mirror_fn fn);
/* Text for the ring only (already on serial): the host's side of the forward. */
void hv_log_ring_only(const char *s, size_t n);

#endif
