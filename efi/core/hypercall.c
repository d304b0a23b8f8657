/*
 * hypercall.c - the VMCALL/VMMCALL interface (ABI in hv_core.h).
 */
#include "hv_core.h"
#include "hv_lib.h"

#define HC_LOG_MAX 200

static int64_t hc_stats(struct hv_cpu *c, struct hv_regs *r)
{
    uint64_t n = r->r8 < HV_EXIT_COUNT ? r->r8 : HV_EXIT_COUNT;
    uint64_t *out = hv_guest_buffer(r->rdx, n * 8);

    hv_print_stats(c);
    if (!out)
        return HC_E_ARG;
    memcpy(out, c->exits, n * 8);
    r->rdx = n;
    return HC_OK;
}

static int64_t hc_log(struct hv_cpu *c, struct hv_regs *r)
{
    char text[HC_LOG_MAX + 1];
    const char *src = hv_guest_buffer(r->rdx, r->r8);

    if (!src || r->r8 > HC_LOG_MAX)
        return HC_E_ARG;
    memcpy(text, src, r->r8);
    for (uint64_t i = 0; i < r->r8; i++)      /* one line, printable only */
        if (text[i] < 0x20 || text[i] > 0x7E)
            text[i] = '.';
    text[r->r8] = 0;
    hv_log("HV: guest-log cpu=%u %s\n", c->index, text);
    return HC_OK;
}

/* A protected page the guest may probe: the first page of the pool, which
 * holds the resident image's headers. */
static int64_t hc_info(struct hv_cpu *c, struct hv_regs *r)
{
    uint64_t base, size;

    (void)c;
    hv_protected_range(&base, &size);
    r->rdx = base;
    r->r8 = size;
    return HC_OK;
}

/* The magic is all of RCX in 64-bit code; outside it only ECX exists for
 * the guest (the upper half is whatever 64-bit code left there). */
static bool magic_ok(struct hv_cpu *c, uint64_t rcx)
{
    struct hv_guest_paging p;

    c->ops->guest_paging(c, &p);
    if ((p.efer & EFER_LMA) && p.cs_long)
        return rcx == HC_MAGIC;
    return (uint32_t)rcx == HC_MAGIC;
}

void hv_hypercall(struct hv_cpu *c)
{
    struct hv_regs *r = c->regs;
    int64_t st;
    int refused;

    if (c->ops->guest_cpl(c) != 0 || !magic_ok(c, r->rcx))
        return c->ops->inject_exception(c, VEC_UD, false, 0);
    switch (r->rax) {
    case HC_VERSION:
        r->rdx = HV_INTERFACE_VERSION;
        r->r8 = c->index;
        st = HC_OK;
        break;
    case HC_STATS:
        st = hc_stats(c, r);
        break;
    case HC_LOG:
        st = hc_log(c, r);
        break;
    case HC_INFO:
        st = hc_info(c, r);
        break;
    case HC_LOG_RING:
        st = hv_hc_log_ring(c);
        break;
    case HC_RING_APPEND:
        st = hv_hc_ring_append(c);
        break;
    case HC_DEVIRT:
        if (!hv_devirt_possible(c)) {
            hv_log("HV: devirtualize cpu=%u refused reason=not-identity-mapped\n", c->index);
            st = HC_E_STATE;
            break;
        }
        refused = hv_devirt_all(c, &r->rdx);    /* prints every CPU's stats */
        if (refused < 0) {
            st = HC_E_STATE;                    /* another CPU is devirtualizing */
            break;
        }
        r->r8 = (uint64_t)refused;              /* guest CPUs still virtualized */
        hv_log("HV: devirtualize cpu=%u\n", c->index);
        r->rax = HC_OK;
        c->ops->skip_insn(c);
        c->ops->devirtualize(c);
    default:
        st = HC_E_FUNCTION;
        break;
    }
    r->rax = (uint64_t)st;
    c->ops->skip_insn(c);
}
