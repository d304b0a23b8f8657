/*
 * hvcfg.c - parser for hv.cfg (key=value lines, '#' comments).
 *
 * Pure C over a byte buffer so the firmware path and the host unit tests
 * run the same code.  Every problem is reported with its line number and
 * the key concerned keeps (or returns to) its default; parsing never stops
 * early, and the input is never trusted to be text.
 */
#include "hv_cfg.h"
#include "hv_lib.h"

#ifndef HV_DEBUG
#define HV_DEBUG 0
#endif

struct ctx {
    struct hv_cfg *cfg;
    hv_cfg_error_fn err;
    void *err_ctx;
    int errors;
};

static void error(struct ctx *c, unsigned line, const char *reason)
{
    c->errors++;
    if (c->err)
        c->err(c->err_ctx, line, reason);
}

static bool is_space(char ch)
{
    return ch == ' ' || ch == '\t';
}

static bool span_eq(const char *s, size_t n, const char *word)
{
    return strlen(word) == n && memcmp(s, word, n) == 0;
}

/* Copies value into dst (cap bytes with NUL).  Paths also get '/' -> '\'
 * because UEFI file paths use backslashes. */
static bool set_str(char *dst, size_t cap, const char *v, size_t n, bool path)
{
    if (n >= cap)
        return false;
    for (size_t i = 0; i < n; i++)
        dst[i] = (path && v[i] == '/') ? '\\' : v[i];
    dst[n] = '\0';
    return true;
}

struct key {
    const char *name;
    size_t off;                 /* offsetof the field in struct hv_cfg */
    size_t cap;                 /* string capacity, 0 for enums */
    bool path;
};

#define STR_KEY(f, p) { #f, offsetof(struct hv_cfg, f), sizeof(((struct hv_cfg *)0)->f), p }
const char *const hv_force_names[HV_FORCE_COUNT] = {
    [HV_FORCE_NONE] = "none",
    [HV_FORCE_PANIC] = "panic",
    [HV_FORCE_HOST_EXCEPTION] = "host-exception",
    [HV_FORCE_GUEST_CR0] = "guest-cr0",
    [HV_FORCE_PIN_CTLS] = "pin-controls",
    [HV_FORCE_UNEXPECTED_EXIT] = "unexpected-exit",
    [HV_FORCE_LAST_CPU] = "last-cpu",
    [HV_FORCE_VMCB_EFER] = "vmcb-efer",
};

/* Indices into keys[] of the keys with a parser of their own. */
enum { K_HYPERVISOR, K_LOG, K_PANIC, K_DEBUG_FAIL, K_NEXT };

static const struct key keys[] = {
    { "hypervisor", 0, 0, false },
    { "log", 0, 0, false },
    { "panic", 0, 0, false },
    { "debug-fail", 0, 0, false },
    STR_KEY(next, true),
    STR_KEY(args, false),
    STR_KEY(kernel, true),
    STR_KEY(initrd, true),
    STR_KEY(append, false),
};

static void parse_line(struct ctx *c, unsigned lineno, const char *s, size_t n)
{
    const char *eq, *k, *v;
    size_t kn, vn;
    const struct key *key = NULL;

    while (n && is_space(*s)) {
        s++;
        n--;
    }
    while (n && is_space(s[n - 1]))
        n--;
    if (n == 0 || s[0] == '#')
        return;
    /* Control bytes (NUL included) mean this is not a text line. */
    for (size_t i = 0; i < n; i++) {
        unsigned char ch = (unsigned char)s[i];
        if ((ch < 0x20 && ch != '\t') || ch == 0x7f) {
            error(c, lineno, "control-character");
            return;
        }
    }

    eq = NULL;
    for (size_t i = 0; i < n; i++) {
        if (s[i] == '=') {
            eq = s + i;
            break;
        }
    }
    if (!eq) {
        error(c, lineno, "missing-equals");
        return;
    }
    k = s;
    kn = (size_t)(eq - s);
    while (kn && is_space(k[kn - 1]))
        kn--;
    v = eq + 1;
    vn = n - (size_t)(v - s);
    while (vn && is_space(*v)) {
        v++;
        vn--;
    }
    if (kn == 0) {
        error(c, lineno, "empty-key");
        return;
    }
    for (size_t i = 0; i < sizeof(keys) / sizeof(keys[0]); i++) {
        if (span_eq(k, kn, keys[i].name)) {
            key = &keys[i];
            break;
        }
    }
    if (!key) {
        error(c, lineno, "unknown-key");
        return;
    }

    if (key == &keys[K_HYPERVISOR]) {
        if (span_eq(v, vn, "on"))
            c->cfg->hypervisor = true;
        else if (span_eq(v, vn, "off"))
            c->cfg->hypervisor = false;
        else {
            c->cfg->hypervisor = true;
            error(c, lineno, "bad-value");
        }
        return;
    }
    if (key == &keys[K_LOG]) {
        if (span_eq(v, vn, "error"))
            c->cfg->log = HV_CFG_LOG_ERROR;
        else if (span_eq(v, vn, "info"))
            c->cfg->log = HV_CFG_LOG_INFO;
        else if (span_eq(v, vn, "debug"))
            c->cfg->log = HV_CFG_LOG_DEBUG;
        else {
            c->cfg->log = HV_CFG_LOG_INFO;
            error(c, lineno, "bad-value");
        }
        return;
    }

    if (key == &keys[K_PANIC]) {
        c->cfg->panic_halt = false;
        if (span_eq(v, vn, "halt"))
            c->cfg->panic_halt = true;
        else if (!span_eq(v, vn, "reset"))
            error(c, lineno, "bad-value");
        return;
    }
    if (key == &keys[K_DEBUG_FAIL]) {
        c->cfg->debug_fail = HV_FORCE_NONE;
        if (!HV_DEBUG) {
            error(c, lineno, "debug-build-only");
            return;
        }
        for (int i = 0; i < HV_FORCE_COUNT; i++)
            if (span_eq(v, vn, hv_force_names[i]))
                c->cfg->debug_fail = i;
        if (c->cfg->debug_fail == HV_FORCE_NONE && !span_eq(v, vn, "none"))
            error(c, lineno, "bad-value");
        return;
    }

    char *dst = (char *)c->cfg + key->off;
    if (key == &keys[K_NEXT]) {
        /* next=auto: find the machine's own OS (efi/platform/nextboot.c). */
        c->cfg->next_auto = span_eq(v, vn, "auto");
        if (c->cfg->next_auto) {
            dst[0] = '\0';
            return;
        }
    }
    if (key->path) {
        /* Paths are ASCII: firmware file names are UCS-2 and we convert
         * byte by byte. */
        for (size_t i = 0; i < vn; i++) {
            if ((unsigned char)v[i] >= 0x80) {
                dst[0] = '\0';
                error(c, lineno, "non-ascii-path");
                return;
            }
        }
    }
    if (!set_str(dst, key->cap, v, vn, key->path)) {
        dst[0] = '\0';
        error(c, lineno, "value-too-long");
    }
}

void hv_cfg_defaults(struct hv_cfg *cfg)
{
    memset(cfg, 0, sizeof(*cfg));
    cfg->hypervisor = true;
    cfg->log = HV_CFG_LOG_INFO;
}

int hv_cfg_parse(const char *buf, size_t len, struct hv_cfg *cfg,
                 hv_cfg_error_fn err, void *err_ctx)
{
    struct ctx c = { cfg, err, err_ctx, 0 };
    size_t pos = 0;
    unsigned lineno = 0;

    if (!buf)
        len = 0;
    /* Optional UTF-8 byte order mark. */
    if (len >= 3 && (unsigned char)buf[0] == 0xEF &&
        (unsigned char)buf[1] == 0xBB && (unsigned char)buf[2] == 0xBF)
        pos = 3;
    while (pos < len) {
        size_t end = pos, n;

        while (end < len && buf[end] != '\n')
            end++;
        n = end - pos;
        if (n && buf[pos + n - 1] == '\r')
            n--;                        /* CRLF */
        lineno++;
        parse_line(&c, lineno, buf + pos, n);
        pos = end + 1;
    }
    return c.errors;
}
