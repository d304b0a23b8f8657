/*
 * insn.c - guest memory by linear address (a walk of the guest's own page
 * tables) and the minimal decoder for the stores the guest makes to the
 * xAPIC page.  An MMIO write that faults in EPT leaves no instruction
 * length or value in the VMCS (SDM Vol 3C 28.2.5 lists the exits that save
 * the length; EPT violations are not among them), so both come from the
 * instruction bytes.
 */
#include "hv_core.h"
#include "hv_lib.h"

#define PTE_ADDR   0x000FFFFFFFFFF000ull
#define PTE_P      1ull
#define PTE_PS     0x80ull
#define CR4_PSE    (1ull << 4)
#define CR4_PAE    (1ull << 5)
#define CR4_LA57   (1ull << 12)

static int read_pte(uint64_t pa, unsigned size, uint64_t *e)
{
    const void *p = hv_guest_buffer(pa, size);

    if (!p)
        return -1;
    *e = size == 8 ? *(const uint64_t *)p : *(const uint32_t *)p;
    return (*e & PTE_P) ? 0 : -1;
}

/* Linear to guest-physical under the guest's paging mode (SDM Vol 3A 4.3,
 * 4.4, 4.5).  Permission bits are not checked: the CPU already executed
 * the instruction that faulted, so its fetch was allowed. */
static int walk(const struct hv_guest_paging *p, uint64_t la, uint64_t *pa)
{
    uint64_t t, e;
    int levels;

    if (!(p->cr0 & CR0_PG)) {
        *pa = la & 0xFFFFFFFFull;
        return 0;
    }
    if (!(p->cr4 & CR4_PAE)) {                     /* 32-bit paging */
        if (read_pte((p->cr3 & 0xFFFFF000u) + ((la >> 22) & 0x3FF) * 4, 4, &e))
            return -1;
        if ((e & PTE_PS) && (p->cr4 & CR4_PSE)) {
            *pa = (e & 0xFFC00000u) | (la & 0x3FFFFF);
            return 0;
        }
        if (read_pte((e & 0xFFFFF000u) + ((la >> 12) & 0x3FF) * 4, 4, &e))
            return -1;
        *pa = (e & 0xFFFFF000u) | (la & 0xFFF);
        return 0;
    }
    if (p->efer & EFER_LMA) {
        levels = (p->cr4 & CR4_LA57) ? 5 : 4;
        t = p->cr3 & PTE_ADDR;
    } else {                                       /* PAE: 4 PDPTEs at CR3[31:5] */
        if (read_pte((p->cr3 & 0xFFFFFFE0u) + ((la >> 30) & 3) * 8, 8, &e))
            return -1;
        levels = 2;
        t = e & PTE_ADDR;
    }
    for (int l = levels; l >= 1; l--) {
        unsigned shift = 12 + 9 * (l - 1);
        uint64_t off = (1ull << shift) - 1;

        if (read_pte(t + ((la >> shift) & 511) * 8, 8, &e))
            return -1;
        if (l == 1 || (l <= 3 && (e & PTE_PS))) {
            *pa = (e & PTE_ADDR & ~off) | (la & off);
            return 0;
        }
        t = e & PTE_ADDR;
    }
    return -1;
}

/* Reads n bytes at a guest linear address, a byte at a time (an
 * instruction may straddle a page). */
int hv_guest_read_linear(const struct hv_guest_paging *p, uint64_t la, void *buf, unsigned n)
{
    uint8_t *out = buf;

    for (unsigned i = 0; i < n; i++) {
        uint64_t pa;
        const uint8_t *b;

        if (walk(p, la + i, &pa) || !(b = hv_guest_buffer(pa, 1)))
            return -1;
        out[i] = *b;
    }
    return 0;
}

static bool identity_mapped(const struct hv_guest_paging *p, uint64_t la)
{
    uint64_t pa;

    return !walk(p, la, &pa) && pa == la;
}

bool hv_devirt_possible(struct hv_cpu *c)
{
    struct hv_guest_paging p = {0};
    uint64_t pb, ps;

    c->ops->guest_paging(c, &p);
    if (!(p.efer & EFER_LMA) || !p.cs_long)
        return false;
    hv_protected_range(&pb, &ps);
    for (uint64_t a = pb; a < pb + ps; a += 4096)
        if (!identity_mapped(&p, a))
            return false;
    return identity_mapped(&p, p.gdtr_base) &&
           identity_mapped(&p, p.gdtr_base + p.gdtr_limit) && identity_mapped(&p, p.idtr_base);
}

int hv_guest_write_linear(const struct hv_guest_paging *p, uint64_t la, const void *buf,
                          unsigned n)
{
    const uint8_t *in = buf;

    for (unsigned i = 0; i < n; i++) {
        uint64_t pa;
        uint8_t *b;

        if (walk(p, la + i, &pa) || !(b = hv_guest_buffer(pa, 1)))
            return -1;
        *b = in[i];
    }
    return 0;
}

/* ---- the xAPIC store decoder ------------------------------------------------
 * Every instruction that can store 32 bits to the page (SDM Vol 2):
 *   89 /r MOV r/m32,r32     C7 /0 MOV r/m32,imm32     A3 MOV moffs32,EAX
 *   87 /r XCHG r/m32,r32    0F C3 /r MOVNTI m32,r32   AB STOS m32 (REP too)
 *   01 09 11 19 21 29 31 /r ADD OR ADC SBB AND SUB XOR r/m32,r32
 *   81 /0-6 id, 83 /0-6 ib  the same with an immediate
 *   F7 /2 /3 NOT NEG, FF /0 /1 INC DEC
 * with any number of legacy prefixes (segment, LOCK, REP, 66, 67, in any
 * order and repeated) and REX.  Other operand sizes are not APIC register
 * writes (SDM Vol 3A 11.4.1: 32-bit accesses only).  The store goes to the
 * faulting guest-physical address, so the effective address is only
 * skipped over, never computed.  Reads never go past the bytes that could
 * be fetched: an instruction at the end of a mapped page is fine. */
#define MAX_INSN 15

struct dec {
    const uint8_t *b;
    unsigned n, i;                                 /* bytes fetched, cursor */
};

static bool need(const struct dec *d, unsigned k)
{
    return d->i + k <= d->n;
}

/* ModRM (+ SIB + displacement) of a memory operand; false if out of bytes
 * or a register operand.  *reg gets ModRM.reg (with REX.R). */
static bool modrm_mem(struct dec *d, unsigned rex, bool addr16, unsigned *reg)
{
    unsigned mod, rm;

    if (!need(d, 1))
        return false;
    mod = d->b[d->i] >> 6;
    rm = d->b[d->i] & 7;
    *reg = ((d->b[d->i] >> 3) & 7) | ((rex & 4) << 1);
    d->i++;
    if (mod == 3)
        return false;
    if (addr16) {                                  /* SDM Vol 2A Table 2-1 */
        d->i += mod == 1 ? 1 : mod == 2 ? 2 : rm == 6 ? 2 : 0;
        return need(d, 0);
    }
    if (rm == 4) {                                 /* SIB */
        if (!need(d, 1))
            return false;
        if (mod == 0 && (d->b[d->i] & 7) == 5)
            d->i += 4;                             /* no base: disp32 */
        d->i++;
    } else if (mod == 0 && rm == 5) {
        d->i += 4;                                 /* RIP-relative / disp32 */
    }
    d->i += mod == 1 ? 1 : mod == 2 ? 4 : 0;
    return need(d, 0);
}

static uint64_t reg_value(struct hv_cpu *c, const struct hv_guest_paging *p, unsigned reg)
{
    return reg == 4 ? p->rsp : ((uint64_t *)c->regs)[reg];
}

static bool decode(struct hv_cpu *c, const struct hv_guest_paging *p, struct dec *d,
                   struct hv_store *st)
{
    unsigned rex = 0, op, reg, asz_bytes;
    bool osz = false, asz = false, rep = false, addr16, lng = p->cs_long;

    for (;;) {                                     /* prefixes (SDM Vol 2A 2.1.1) */
        uint8_t x;

        if (!need(d, 1))
            return false;
        x = d->b[d->i];
        if (x == 0x66 || x == 0x67 || x == 0xF0 || x == 0xF2 || x == 0xF3 || x == 0x26 ||
            x == 0x2E || x == 0x36 || x == 0x3E || x == 0x64 || x == 0x65) {
            osz |= x == 0x66;
            asz |= x == 0x67;
            rep |= x == 0xF3 || x == 0xF2;
            rex = 0;                               /* a REX before a prefix is ignored */
        } else if (lng && (x & 0xF0) == 0x40) {
            rex = x;
        } else {
            break;
        }
        d->i++;
    }
    op = d->b[d->i++];
    addr16 = !lng && (p->cs_32 ? asz : !asz);
    asz_bytes = lng ? (asz ? 4 : 8) : addr16 ? 2 : 4;
    /* 32-bit operands only: the default in 64- and 32-bit code, 66 in 16-bit. */
    if ((rex & 8) || (osz == (lng || p->cs_32)))
        return false;
    st->kind = STORE_MOV;
    st->xchg_reg = -1;
    st->rep = false;
    switch (op) {
    case 0x89: case 0x87:
    case 0x01: case 0x09: case 0x11: case 0x19: case 0x21: case 0x29: case 0x31:
        if (!modrm_mem(d, rex, addr16, &reg))
            return false;
        st->src = (uint32_t)reg_value(c, p, reg);
        if (op == 0x87) {
            if (reg == 4)
                return false;                      /* XCHG with RSP: not an APIC idiom */
            st->xchg_reg = (int)reg;
        } else if (op != 0x89) {
            st->kind = STORE_ALU;
            st->alu = op >> 3;                     /* 0 ADD 1 OR 2 ADC 3 SBB 4 AND 5 SUB 6 XOR */
        }
        return true;
    case 0xC7: case 0x81: case 0x83:
        if (!modrm_mem(d, rex, addr16, &reg) || !need(d, op == 0x83 ? 1 : 4))
            return false;
        if (op == 0x83)
            st->src = (uint32_t)(int32_t)(int8_t)d->b[d->i++];
        else {
            memcpy(&st->src, &d->b[d->i], 4);
            d->i += 4;
        }
        if (op == 0xC7)
            return (reg & 7) == 0;
        st->kind = STORE_ALU;
        st->alu = reg & 7;
        return st->alu != 7;                       /* CMP does not store */
    case 0xF7: case 0xFF:
        if (!modrm_mem(d, rex, addr16, &reg))
            return false;
        st->kind = STORE_ALU;
        reg &= 7;
        if (op == 0xF7 && (reg == 2 || reg == 3))
            st->alu = reg == 2 ? ALU_NOT : ALU_NEG;
        else if (op == 0xFF && reg <= 1)
            st->alu = reg == 0 ? ALU_INC : ALU_DEC;
        else
            return false;
        return true;
    case 0xA3:                                     /* moffs: an address-size offset */
        d->i += lng ? (asz ? 4 : 8) : (addr16 ? 2 : 4);
        st->src = (uint32_t)c->regs->rax;
        return need(d, 0);
    case 0xAB:
        st->kind = STORE_STOS;
        st->src = (uint32_t)c->regs->rax;
        st->rep = rep;
        st->asize = asz_bytes;
        return true;
    case 0x0F:
        if (!need(d, 1) || d->b[d->i++] != 0xC3 || !modrm_mem(d, rex, addr16, &reg))
            return false;                          /* MOVNTI */
        st->src = (uint32_t)reg_value(c, p, reg);
        return true;
    default:
        return false;
    }
}

/* 0 with *st filled, or -1: the instruction is none of the above.  The
 * instruction bytes are logged then; the caller raises #GP. */
int hv_decode_store(struct hv_cpu *c, struct hv_store *st)
{
    struct hv_guest_paging p;
    uint8_t b[MAX_INSN] = {0};
    struct dec d = {b, 0, 0};

    c->ops->guest_paging(c, &p);
    while (d.n < MAX_INSN && !hv_guest_read_linear(&p, p.cs_base + p.rip + d.n, &b[d.n], 1))
        d.n++;
    if (d.n && decode(c, &p, &d, st) && d.i <= MAX_INSN) {
        st->len = d.i;
        return 0;
    }
    hv_log("HV: apic-write cpu=%u cannot emulate rip=%llx fetched=%u bytes=%02x %02x %02x "
           "%02x %02x %02x %02x %02x %02x %02x %02x %02x: #GP\n", c->index,
           (unsigned long long)p.rip, d.n, b[0], b[1], b[2], b[3], b[4], b[5], b[6], b[7],
           b[8], b[9], b[10], b[11]);
    return -1;
}

/* The arithmetic of an emulated read-modify-write, on the host's ALU so the
 * flags come out exactly as the guest's instruction would set them.  Only
 * the arithmetic flags travel between guest and host RFLAGS. */
#define ARITH_FLAGS 0x8D5ull                       /* OF SF ZF AF PF CF */
#define ALU_ASM(insn) __asm__ volatile("push %[f]; popfq; " insn "; pushfq; pop %[f]"     \
                                       : [a] "+r"(a), [f] "+r"(f) : [b] "r"(b) : "cc", "memory")
#define ALU_ASM1(insn) __asm__ volatile("push %[f]; popfq; " insn "; pushfq; pop %[f]"    \
                                        : [a] "+r"(a), [f] "+r"(f) : : "cc", "memory")

uint32_t hv_store_alu(unsigned alu, uint32_t a, uint32_t b, uint64_t *guest_flags)
{
    uint64_t f;

    __asm__ volatile("pushfq; pop %0" : "=r"(f));
    f = (f & ~ARITH_FLAGS) | (*guest_flags & ARITH_FLAGS);
    switch (alu) {
    case 0: ALU_ASM("addl %[b], %[a]"); break;
    case 1: ALU_ASM("orl %[b], %[a]"); break;
    case 2: ALU_ASM("adcl %[b], %[a]"); break;
    case 3: ALU_ASM("sbbl %[b], %[a]"); break;
    case 4: ALU_ASM("andl %[b], %[a]"); break;
    case 5: ALU_ASM("subl %[b], %[a]"); break;
    case 6: ALU_ASM("xorl %[b], %[a]"); break;
    case ALU_NOT: ALU_ASM1("notl %[a]"); break;
    case ALU_NEG: ALU_ASM1("negl %[a]"); break;
    case ALU_INC: ALU_ASM1("incl %[a]"); break;
    case ALU_DEC: ALU_ASM1("decl %[a]"); break;
    default: break;
    }
    *guest_flags = (*guest_flags & ~ARITH_FLAGS) | (f & ARITH_FLAGS);
    return a;
}
