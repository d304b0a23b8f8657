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

/* The stores a compiler emits for a 32-bit MMIO write (SDM Vol 2):
 *   89 /r      MOV r/m32, r32
 *   C7 /0 id   MOV r/m32, imm32
 *   87 /r      XCHG r/m32, r32 (Linux's X86_BUG_11AP variant)
 * with legacy prefixes (segment, LOCK, 67) and REX, any ModRM/SIB/disp
 * form including RIP-relative.  16-bit addressing, other operand sizes and
 * other opcodes are not APIC register writes we can emulate: panic with
 * the bytes.  Returns the length; *val the value stored, *xchg_reg the
 * register XCHG loads with the old value (-1 for a MOV). */
unsigned hv_decode_store32(struct hv_cpu *c, uint32_t *val, int *xchg_reg)
{
    struct hv_guest_paging p;
    uint8_t b[15];
    unsigned i = 0, mod, rm, reg, rex = 0, op;
    bool osz = false, asz = false, addr16;

    c->ops->guest_paging(c, &p);
    if (hv_guest_read_linear(&p, p.cs_base + p.rip, b, sizeof(b)))
        hv_panic(c, "apic-write: cannot read the instruction at rip=%llx\n",
                 (unsigned long long)p.rip);
    for (;; i++) {
        if (b[i] == 0x66)
            osz = true;
        else if (b[i] == 0x67)
            asz = true;
        else if (b[i] == 0xF0 || b[i] == 0x26 || b[i] == 0x2E || b[i] == 0x36 ||
                 b[i] == 0x3E || b[i] == 0x64 || b[i] == 0x65)
            ;
        else
            break;
        if (i >= 4)
            goto bad;
    }
    if (p.cs_long && (b[i] & 0xF0) == 0x40)
        rex = b[i++];
    op = b[i++];
    addr16 = !p.cs_long && (p.cs_32 ? asz : !asz);
    /* Operand size 32: the default in 64-bit and 32-bit code, 66 in 16-bit. */
    if (addr16 || (rex & 8) || (osz == (p.cs_long || p.cs_32)) ||
        (op != 0x89 && op != 0xC7 && op != 0x87))
        goto bad;
    mod = b[i] >> 6;
    reg = ((b[i] >> 3) & 7) | ((rex & 4) << 1);
    rm = b[i++] & 7;
    if (mod == 3 || (op == 0xC7 && (reg & 7) != 0))
        goto bad;
    if (rm == 4) {                                 /* SIB */
        if (mod == 0 && (b[i] & 7) == 5)
            i += 4;                                /* no base: disp32 */
        i++;
    } else if (mod == 0 && rm == 5) {
        i += 4;                                    /* RIP-relative / disp32 */
    }
    i += mod == 1 ? 1 : mod == 2 ? 4 : 0;
    if (op == 0xC7) {
        memcpy(val, &b[i], 4);
        i += 4;
    } else {
        *val = (uint32_t)(reg == 4 ? p.rsp : ((uint64_t *)c->regs)[reg]);
    }
    *xchg_reg = op == 0x87 ? (int)reg : -1;
    return i;
bad:
    hv_panic(c, "apic-write: cannot emulate rip=%llx bytes=%02x %02x %02x %02x %02x %02x "
             "%02x %02x %02x %02x %02x %02x\n", (unsigned long long)p.rip, b[0], b[1],
             b[2], b[3], b[4], b[5], b[6], b[7], b[8], b[9], b[10], b[11]);
}
