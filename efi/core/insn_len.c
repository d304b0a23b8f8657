/*
 * insn_len.c - the length of the instruction that caused an exit, decoded
 * from the guest's bytes, for a backend whose CPU does not report it (SVM
 * without NRIPS, APM Vol 2 15.7.1: QEMU TCG).
 *
 * Only instructions that exit unconditionally reach here, and all of them
 * are fixed-form: legacy prefixes (SDM Vol 2A 2.1.1: 66 67 F0 F2 F3 and the
 * segment overrides) and, in 64-bit code, REX bytes, in any order and
 * number (a REX that a legacy prefix follows is ignored, but still a byte
 * of the instruction, SDM 2.2.1), then
 *   0F xx         CPUID, RDMSR, WRMSR, INVD, WBINVD, RDTSC, RDPMC
 *   0F 01 /mod=3  VMMCALL, VMCALL, VMRUN, VMLOAD, VMSAVE, STGI, CLGI,
 *                 SKINIT, INVLPGA, XSETBV, RDTSCP, MONITOR(X), MWAIT(X)
 *   F4            HLT
 * Anything else is not an exit we requested: 0.  That needs a guest that
 * rewrote the bytes (from another CPU, or by DMA) between the exit and the
 * decode, or unreadable bytes: the guest gets a logged #UD, never a panic.
 * The whole instruction is at most 15 bytes (SDM 2.3.11).
 */
#include "hv_core.h"
#include "hv_lib.h"

static bool legacy_prefix(uint8_t b)
{
    switch (b) {
    case 0x66: case 0x67: case 0xF0: case 0xF2: case 0xF3:
    case 0x26: case 0x2E: case 0x36: case 0x3E: case 0x64: case 0x65:
        return true;
    default:
        return false;
    }
}

/* Two-byte opcodes 0F xx without a ModRM byte that may exit. */
static bool plain_0f(uint8_t op)
{
    return op == 0xA2 || op == 0x32 || op == 0x30 || op == 0x08 || op == 0x09 ||
           op == 0x31 || op == 0x33;
}

unsigned hv_insn_len_decode(const uint8_t *b, unsigned n, bool long_mode)
{
    unsigned i = 0;

    while (i < n && (legacy_prefix(b[i]) || (long_mode && (b[i] & 0xF0) == 0x40)))
        i++;
    if (i + 1 > n)
        return 0;
    if (b[i] == 0xF4)
        return i + 1 <= 15 ? i + 1 : 0;
    if (b[i] != 0x0F || i + 2 > n)
        return 0;
    if (plain_0f(b[i + 1]))
        i += 2;
    else if (b[i + 1] == 0x01 && i + 3 <= n && (b[i + 2] >> 6) == 3)
        i += 3;
    else
        return 0;
    return i <= 15 ? i : 0;
}

unsigned hv_insn_len(struct hv_cpu *c)
{
    struct hv_guest_paging p;
    uint8_t b[15] = {0};
    unsigned len, n = 0;

    c->ops->guest_paging(c, &p);
    /* Byte by byte: the instruction may end just before an unmapped page. */
    while (n < sizeof(b) && !hv_guest_read_linear(&p, p.cs_base + p.rip + n, &b[n], 1))
        n++;
    len = hv_insn_len_decode(b, n, p.cs_long);
    if (!len)
        hv_log("HV: insn-len cpu=%u cannot decode rip=%llx bytes=%02x %02x %02x %02x %02x "
               "%02x %02x %02x (readable=%u): #UD\n", c->index, (unsigned long long)p.rip,
               b[0], b[1], b[2], b[3], b[4], b[5], b[6], b[7], n);
    return len;
}
