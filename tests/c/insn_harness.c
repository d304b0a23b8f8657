/*
 * insn_harness.c - host harness for efi/core/insn.c (tests/test_insn.py):
 * a fake guest memory with paging off, a fake CPU whose backend reports
 * the mode under test, and stubs for what insn.c calls in the hypervisor.
 */
#include "hv_core.h"
#include "hv_lib.h"

static uint8_t mem[0x2000];
static struct hv_guest_paging paging;
static struct hv_regs regs;

void *hv_guest_buffer(uint64_t gpa, uint64_t len)
{
    return gpa < sizeof(mem) && len <= sizeof(mem) - gpa ? mem + gpa : NULL;
}

void hv_protected_range(uint64_t *base, uint64_t *size)
{
    *base = 0x100000;
    *size = 0x1000;
}

void hv_log(const char *fmt, ...)
{
    (void)fmt;
}

static void guest_paging(struct hv_cpu *c, struct hv_guest_paging *p)
{
    (void)c;
    *p = paging;
}

static const struct hv_backend_ops ops = {.guest_paging = guest_paging};

/* mode: 64, 32 or 16.  The bytes end `gap` bytes before the end of the
 * fetchable memory, so nothing past them can be fetched when gap == 0. */
int t_decode(const uint8_t *bytes, unsigned n, unsigned gap, int mode, const uint64_t gpr[16],
             uint32_t out[7])
{
    struct hv_cpu c = {0};
    struct hv_store st = {0};
    unsigned at = sizeof(mem) - gap - n;
    int rc;

    memset(mem, 0x90, sizeof(mem));
    memcpy(mem + at, bytes, n);
    paging = (struct hv_guest_paging){.cr0 = CR0_PE, .rip = at, .rsp = gpr[4],
                                      .efer = mode == 64 ? EFER_LMA | EFER_LME : 0,
                                      .cs_long = mode == 64, .cs_32 = mode == 32};
    memcpy(&regs, gpr, sizeof(regs));
    c.regs = &regs;
    c.ops = &ops;
    rc = hv_decode_store(&c, &st);
    out[0] = st.len;
    out[1] = st.kind;
    out[2] = st.alu;
    out[3] = st.src;
    out[4] = (uint32_t)st.xchg_reg;
    out[5] = st.rep;
    out[6] = st.asize;
    return rc;
}
