/*
 * fmt.c - a small printf-style formatter.  Pure logic: no UEFI, no I/O, so
 * tests/test_efi_hostlib.py builds it for the host and checks it via ctypes.
 */
#include "hv_lib.h"

struct out {
    char *buf;
    size_t size;  /* capacity including the NUL */
    size_t len;   /* length of the full output, even past size */
};

static void put(struct out *o, char c)
{
    if (o->size && o->len < o->size - 1)
        o->buf[o->len] = c;
    o->len++;
}

static void pad(struct out *o, char c, int n)
{
    while (n-- > 0)
        put(o, c);
}

/* Emits s (n bytes) right- or left-justified in width. */
static void field(struct out *o, const char *s, int n, int width, bool left,
                  char padc)
{
    if (!left) {
        /* Zero padding goes after a sign, as C printf does. */
        if (padc == '0' && n > 0 && s[0] == '-') {
            put(o, '-');
            s++;
            n--;
            width--;
        }
        pad(o, padc, width - n);
    }
    for (int i = 0; i < n; i++)
        put(o, s[i]);
    if (left)
        pad(o, ' ', width - n);
}

static int utoa(char *tmp, unsigned long long v, unsigned base, bool upper)
{
    const char *digits = upper ? "0123456789ABCDEF" : "0123456789abcdef";
    char rev[24];
    int n = 0, i = 0;

    do {
        rev[n++] = digits[v % base];
        v /= base;
    } while (v);
    while (n)
        tmp[i++] = rev[--n];
    return i;
}

int hv_vsnprintf(char *buf, size_t size, const char *fmt, va_list ap)
{
    struct out o = { buf, size, 0 };

    while (*fmt) {
        const char *start = fmt;
        bool left = false;
        char padc = ' ';
        int width = 0, lng = 0;
        char tmp[32];
        int n;

        if (*fmt != '%') {
            put(&o, *fmt++);
            continue;
        }
        fmt++;
        for (;; fmt++) {
            if (*fmt == '-')
                left = true;
            else if (*fmt == '0')
                padc = '0';
            else
                break;
        }
        if (left)
            padc = ' ';
        while (*fmt >= '0' && *fmt <= '9' && width < 1000)
            width = width * 10 + (*fmt++ - '0');
        while (*fmt >= '0' && *fmt <= '9')
            fmt++;                      /* absurd widths are clamped */
        if (*fmt == 'z') {
            lng = 2;                    /* size_t is 64-bit on x86_64 */
            fmt++;
        } else {
            while (*fmt == 'l' && lng < 2) {
                lng++;
                fmt++;
            }
        }

        switch (*fmt) {
        case 'd':
        case 'i': {
            long long v = lng == 2 ? va_arg(ap, long long)
                        : lng == 1 ? va_arg(ap, long) : va_arg(ap, int);
            unsigned long long m = v < 0 ? 0ULL - (unsigned long long)v
                                         : (unsigned long long)v;
            n = 0;
            if (v < 0)
                tmp[n++] = '-';
            n += utoa(tmp + n, m, 10, false);
            field(&o, tmp, n, width, left, padc);
            break;
        }
        case 'u':
        case 'x':
        case 'X': {
            unsigned long long v = lng == 2 ? va_arg(ap, unsigned long long)
                                 : lng == 1 ? va_arg(ap, unsigned long)
                                 : va_arg(ap, unsigned int);
            n = utoa(tmp, v, *fmt == 'u' ? 10 : 16, *fmt == 'X');
            field(&o, tmp, n, width, left, padc);
            break;
        }
        case 'p': {
            uintptr_t v = (uintptr_t)va_arg(ap, void *);
            tmp[0] = '0';
            tmp[1] = 'x';
            n = 2 + utoa(tmp + 2, v, 16, false);
            field(&o, tmp, n, width, left, ' ');
            break;
        }
        case 'c':
            tmp[0] = (char)va_arg(ap, int);
            field(&o, tmp, 1, width, left, ' ');
            break;
        case 's': {
            const char *s = va_arg(ap, const char *);
            if (!s)
                s = "(null)";
            field(&o, s, (int)strlen(s), width, left, ' ');
            break;
        }
        case '%':
            put(&o, '%');
            break;
        default:
            /* Unknown or truncated conversion: print it as written. */
            while (start < fmt)
                put(&o, *start++);
            if (*fmt)
                put(&o, *fmt);
            break;
        }
        if (*fmt)
            fmt++;
    }
    if (size)
        buf[o.len < size ? o.len : size - 1] = '\0';
    return o.len > 0x7fffffff ? 0x7fffffff : (int)o.len;
}

int hv_snprintf(char *buf, size_t size, const char *fmt, ...)
{
    va_list ap;
    int n;

    va_start(ap, fmt);
    n = hv_vsnprintf(buf, size, fmt, ap);
    va_end(ap);
    return n;
}
