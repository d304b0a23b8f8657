/*
 * vmx_check.c - the software VM-entry checker (vmx_check.h).  Each check
 * cites its SDM Vol 3C section and returns NULL (pass) or why it failed;
 * the table keeps them in the order the processor performs them: controls
 * (27.2.1), host state (27.2.2, 27.2.3), guest state (27.3.1).  Only what
 * this hypervisor can get wrong is checked; it is not a full model.
 */
#include "vmx_check.h"
#include "hv_lib.h"

typedef struct vmx_check_state S;
typedef const char *(*check_fn)(const S *s, char *d, size_t n);

#define BIT(n) (1ull << (n))
#define PIN_NMI_EXITING   BIT(3)
#define PIN_VIRTUAL_NMIS  BIT(5)
#define PROC_SECONDARY    BIT(31)
#define PROC2_EPT         BIT(1)
#define PROC2_VPID        BIT(5)
#define PROC2_UG          BIT(7)
#define EXIT_HOST_64      BIT(9)
#define EXIT_LOAD_PAT     BIT(19)
#define EXIT_LOAD_EFER    BIT(21)
#define ENTRY_LOAD_DEBUG  BIT(2)
#define ENTRY_IA32E       BIT(9)
#define ENTRY_LOAD_PAT    BIT(14)
#define ENTRY_LOAD_EFER   BIT(15)
#define CR0_PE BIT(0)
#define CR0_PG BIT(31)
#define CR4_PAE BIT(5)
#define CR4_PCIDE BIT(17)
#define EFER_LME BIT(8)
#define EFER_LMA BIT(10)
#define AR_UNUSABLE BIT(16)

static bool canonical(uint64_t a)
{
    return (uint64_t)(((int64_t)a << 16) >> 16) == a;
}

static bool ia32e(const S *s)
{
    return s->entry & ENTRY_IA32E;
}

static bool ug(const S *s)
{
    return (s->proc & PROC_SECONDARY) && (s->proc2 & PROC2_UG);
}

/* A control word against its capability MSR (SDM App. A.3.1). */
static const char *allowed(uint64_t v, uint64_t cap, char *d, size_t n)
{
    uint32_t must1 = (uint32_t)cap, may1 = (uint32_t)(cap >> 32);

    for (int b = 0; b < 32; b++) {
        if ((must1 & BIT(b)) && !(v & BIT(b)))
            return hv_snprintf(d, n, "bit %d must be 1 (allowed-0 setting)", b), d;
        if (!(may1 & BIT(b)) && (v & BIT(b)))
            return hv_snprintf(d, n, "bit %d must be 0 (allowed-1 setting)", b), d;
    }
    return NULL;
}

/* CR0/CR4 against IA32_VMX_CRx_FIXED0/1 (SDM App. A.7, A.8). */
static const char *fixed(uint64_t v, uint64_t f0, uint64_t f1, const char *msr, char *d,
                         size_t n)
{
    for (int b = 0; b < 64; b++) {
        if ((f0 & BIT(b)) && !(v & BIT(b)))
            return hv_snprintf(d, n, "bit %d must be 1 (%s_FIXED0)", b, msr), d;
        if (!(f1 & BIT(b)) && (v & BIT(b)))
            return hv_snprintf(d, n, "bit %d must be 0 (%s_FIXED1)", b, msr), d;
    }
    return NULL;
}

/* ---- 27.2.1 VM-execution, exit and entry control fields ------------------ */
static const char *c_pin(const S *s, char *d, size_t n) { return allowed(s->pin, s->cap_pin, d, n); }
static const char *c_proc(const S *s, char *d, size_t n) { return allowed(s->proc, s->cap_proc, d, n); }
static const char *c_exit(const S *s, char *d, size_t n) { return allowed(s->exit, s->cap_exit, d, n); }
static const char *c_entry(const S *s, char *d, size_t n) { return allowed(s->entry, s->cap_entry, d, n); }

static const char *c_proc2(const S *s, char *d, size_t n)
{
    return (s->proc & PROC_SECONDARY) ? allowed(s->proc2, s->cap_proc2, d, n) : NULL;
}

static const char *c_cr3_targets(const S *s, char *d, size_t n)
{
    return s->cr3_target_count > ((s->cap_misc >> 16) & 0x1FF) ? "more than IA32_VMX_MISC allows"
                                                               : NULL;
}

static const char *c_virtual_nmis(const S *s, char *d, size_t n)
{
    return (s->pin & PIN_VIRTUAL_NMIS) && !(s->pin & PIN_NMI_EXITING)
               ? "virtual NMIs without NMI exiting" : NULL;
}

static const char *c_eptp(const S *s, char *d, size_t n)
{
    uint64_t mt = s->eptp & 7;

    if (!(s->proc & PROC_SECONDARY) || !(s->proc2 & PROC2_EPT))
        return NULL;
    if (mt != 0 && mt != 6)
        return "memory type must be UC (0) or WB (6)";
    if (((s->eptp >> 3) & 7) != 3)
        return "page-walk length must be 4 (bits 5:3 = 3)";
    if ((s->eptp & 0xF80) || (s->eptp >> s->maxphyaddr))
        return "reserved bits set";
    return NULL;
}

static const char *c_vpid(const S *s, char *d, size_t n)
{
    return (s->proc & PROC_SECONDARY) && (s->proc2 & PROC2_VPID) && !s->vpid
               ? "VPID 0 with enable-VPID" : NULL;
}

static const char *c_ug(const S *s, char *d, size_t n)
{
    return ug(s) && !(s->proc2 & PROC2_EPT) ? "unrestricted guest without EPT" : NULL;
}

static const char *c_entry_intr(const S *s, char *d, size_t n)
{
    return (s->entry_intr_info & BIT(31)) && (s->entry_intr_info & 0x7FFFF000)
               ? "reserved bits 30:12 set" : NULL;
}

/* ---- 27.2.2 host control registers and MSRs ------------------------------ */
static const char *h_cr0(const S *s, char *d, size_t n)
{
    return fixed(s->host_cr0, s->cap_cr0_fixed0, s->cap_cr0_fixed1, "IA32_VMX_CR0", d, n);
}

static const char *h_cr4(const S *s, char *d, size_t n)
{
    const char *r = fixed(s->host_cr4, s->cap_cr4_fixed0, s->cap_cr4_fixed1, "IA32_VMX_CR4",
                          d, n);

    if (!r && (s->exit & EXIT_HOST_64) && !(s->host_cr4 & CR4_PAE))
        r = "PAE clear with host address-space size";
    return r;
}

static const char *h_cr3(const S *s, char *d, size_t n)
{
    return s->host_cr3 >> s->maxphyaddr ? "bits beyond MAXPHYADDR set" : NULL;
}

static const char *h_sysenter(const S *s, char *d, size_t n)
{
    return canonical(s->host_sysenter_esp) && canonical(s->host_sysenter_eip)
               ? NULL : "SYSENTER_ESP/EIP not canonical";
}

static const char *h_efer(const S *s, char *d, size_t n)
{
    bool h64 = s->exit & EXIT_HOST_64;

    if (!(s->exit & EXIT_LOAD_EFER))
        return NULL;
    if (s->host_efer & ~(BIT(0) | BIT(8) | BIT(10) | BIT(11)))
        return "reserved bits set";
    if (!!(s->host_efer & EFER_LMA) != h64 || !!(s->host_efer & EFER_LME) != h64)
        return "LMA/LME differ from the host address-space size control";
    return NULL;
}

/* ---- 27.2.3 host segment and descriptor-table registers --------------------- */
static const char *h_selectors(const S *s, char *d, size_t n)
{
    const uint64_t sel[7] = {s->host_es_sel, s->host_cs_sel, s->host_ss_sel, s->host_ds_sel,
                             s->host_fs_sel, s->host_gs_sel, s->host_tr_sel};
    static const char *const names[7] = {"es", "cs", "ss", "ds", "fs", "gs", "tr"};

    for (int i = 0; i < 7; i++)
        if (sel[i] & 7)
            return hv_snprintf(d, n, "%s selector RPL/TI must be 0", names[i]), d;
    if (!s->host_cs_sel)
        return "cs selector is 0";
    if (!s->host_tr_sel)
        return "tr selector is 0";
    if (!s->host_ss_sel && !(s->exit & EXIT_HOST_64))
        return "ss selector is 0 outside 64-bit mode";
    return NULL;
}

static const char *h_bases(const S *s, char *d, size_t n)
{
    if (!canonical(s->host_fs_base) || !canonical(s->host_gs_base) ||
        !canonical(s->host_tr_base) || !canonical(s->host_gdtr_base) ||
        !canonical(s->host_idtr_base))
        return "FS/GS/TR/GDTR/IDTR base not canonical";
    return NULL;
}

static const char *h_rip(const S *s, char *d, size_t n)
{
    if (!(s->exit & EXIT_HOST_64))
        return s->host_rip >> 32 ? "bits 63:32 set without host address-space size" : NULL;
    return canonical(s->host_rip) ? NULL : "not canonical";
}

/* ---- 27.3.1.1 guest control registers, debug registers and MSRs --------------- */
static const char *g_cr0(const S *s, char *d, size_t n)
{
    uint64_t f0 = s->cap_cr0_fixed0;

    if (ug(s))
        f0 &= ~(CR0_PE | CR0_PG);           /* unrestricted guest: PE, PG free */
    if ((s->cr0 & CR0_PG) && !(s->cr0 & CR0_PE))
        return "PG set without PE";
    return fixed(s->cr0, f0, s->cap_cr0_fixed1, "IA32_VMX_CR0", d, n);
}

static const char *g_cr4(const S *s, char *d, size_t n)
{
    const char *r = fixed(s->cr4, s->cap_cr4_fixed0, s->cap_cr4_fixed1, "IA32_VMX_CR4", d, n);

    if (r)
        return r;
    if (ia32e(s) && !(s->cr4 & CR4_PAE))
        return "PAE clear with IA-32e mode guest";
    if (!ia32e(s) && (s->cr4 & CR4_PCIDE))
        return "PCIDE set outside IA-32e mode";
    return NULL;
}

static const char *g_ia32e_pg(const S *s, char *d, size_t n)
{
    return ia32e(s) && !(s->cr0 & CR0_PG) ? "cr0.PG clear with IA-32e mode guest" : NULL;
}

static const char *g_cr3(const S *s, char *d, size_t n)
{
    return s->cr3 >> s->maxphyaddr ? "bits beyond MAXPHYADDR set" : NULL;
}

static const char *g_dr7(const S *s, char *d, size_t n)
{
    return (s->entry & ENTRY_LOAD_DEBUG) && (s->dr7 >> 32) ? "bits 63:32 set" : NULL;
}

static const char *g_sysenter(const S *s, char *d, size_t n)
{
    return canonical(s->sysenter_esp) && canonical(s->sysenter_eip)
               ? NULL : "SYSENTER_ESP/EIP not canonical";
}

static const char *g_pat(const S *s, char *d, size_t n)
{
    if (!(s->entry & ENTRY_LOAD_PAT))
        return NULL;
    for (int i = 0; i < 8; i++) {
        unsigned t = (s->pat >> (8 * i)) & 0xFF;

        if (t == 2 || t == 3 || t > 7)
            return hv_snprintf(d, n, "entry %d has invalid type %u", i, t), d;
    }
    return NULL;
}

static const char *g_efer(const S *s, char *d, size_t n)
{
    if (!(s->entry & ENTRY_LOAD_EFER))
        return NULL;
    if (s->efer & ~(BIT(0) | BIT(8) | BIT(10) | BIT(11)))
        return "reserved bits set";
    if (!!(s->efer & EFER_LMA) != ia32e(s))
        return "LMA differs from the IA-32e mode guest control";
    if ((s->cr0 & CR0_PG) && !!(s->efer & EFER_LMA) != !!(s->efer & EFER_LME))
        return "LME differs from LMA with paging on";
    return NULL;
}

/* ---- 27.3.1.2 guest segment registers ------------------------------------------ */
struct segv { const char *name; uint64_t sel, base, limit, ar; };

static struct segv seg(const S *s, int i)
{
    const uint64_t *f = &s->es_sel + 4 * i;
    static const char *const names[8] = {"es", "cs", "ss", "ds", "fs", "gs", "ldtr", "tr"};

    return (struct segv){names[i], f[0], f[1], f[2], f[3]};
}

static const char *seg_common(const struct segv *g, char *d, size_t n)
{
    bool gran = g->ar & BIT(15);

    if (g->ar & 0xFFFE0F00)
        return hv_snprintf(d, n, "%s access rights: reserved bits set", g->name), d;
    if (!(g->ar & BIT(7)))
        return hv_snprintf(d, n, "%s not present", g->name), d;
    if ((g->limit & 0xFFF) != 0xFFF && gran)
        return hv_snprintf(d, n, "%s limit 11:0 not all 1 with G set", g->name), d;
    if ((g->limit >> 20) && !gran)
        return hv_snprintf(d, n, "%s limit 31:20 set with G clear", g->name), d;
    return NULL;
}

static const char *g_tr(const S *s, char *d, size_t n)
{
    struct segv t = seg(s, 7);
    unsigned type = t.ar & 0xF;

    if (t.ar & AR_UNUSABLE)
        return "unusable";
    if (t.sel & 4)
        return "TI flag set";
    if (type != 11 && (ia32e(s) || type != 3))
        return "type must be a busy TSS (11)";
    if (t.ar & BIT(4))
        return "S flag set";
    if (!canonical(t.base))
        return "base not canonical";
    return seg_common(&t, d, n);
}

static const char *g_ldtr(const S *s, char *d, size_t n)
{
    struct segv l = seg(s, 6);

    if (l.ar & AR_UNUSABLE)
        return NULL;
    if ((l.sel & 4) || (l.ar & 0xF) != 2 || (l.ar & BIT(4)))
        return "usable LDTR must be TI=0, type 2, S=0";
    if (!canonical(l.base))
        return "base not canonical";
    return seg_common(&l, d, n);
}

static const char *g_cs(const S *s, char *d, size_t n)
{
    struct segv c = seg(s, 1);
    unsigned type = c.ar & 0xF;

    if (c.ar & AR_UNUSABLE)
        return "unusable";
    if (!(type == 9 || type == 11 || type == 13 || type == 15 || (ug(s) && type == 3)))
        return "type must be an accessed code segment";
    if (!(c.ar & BIT(4)))
        return "S flag clear";
    if (ia32e(s) && (c.ar & BIT(13)) && (c.ar & BIT(14)))
        return "L and D both set in IA-32e mode";
    if (c.base >> 32)
        return "base bits 63:32 set";
    return seg_common(&c, d, n);
}

static const char *g_ss(const S *s, char *d, size_t n)
{
    struct segv ss = seg(s, 2), cs = seg(s, 1);

    if (!ug(s) && (ss.sel & 3) != (cs.sel & 3))
        return "RPL differs from CS.RPL";
    if (ss.ar & AR_UNUSABLE)
        return NULL;
    if ((ss.ar & 0xF) != 3 && (ss.ar & 0xF) != 7)
        return "type must be read/write data (3 or 7)";
    if (!(ss.ar & BIT(4)))
        return "S flag clear";
    if ((cs.ar & 0xF) == 3 && ((ss.ar >> 5) & 3))
        return "DPL must be 0 when CS type is 3";
    if (ss.base >> 32)
        return "base bits 63:32 set";
    return seg_common(&ss, d, n);
}

static const char *g_data_segs(const S *s, char *d, size_t n)
{
    static const int idx[4] = {0, 3, 4, 5};          /* es ds fs gs */

    for (int k = 0; k < 4; k++) {
        struct segv g = seg(s, idx[k]);
        const char *r;

        if (g.ar & AR_UNUSABLE)
            continue;
        if (!(g.ar & 1))
            return hv_snprintf(d, n, "%s type not accessed", g.name), d;
        if ((g.ar & 8) && !(g.ar & 2))
            return hv_snprintf(d, n, "%s code segment not readable", g.name), d;
        if (!(g.ar & BIT(4)))
            return hv_snprintf(d, n, "%s S flag clear", g.name), d;
        if ((idx[k] >= 4 && !canonical(g.base)) || (idx[k] < 4 && (g.base >> 32)))
            return hv_snprintf(d, n, "%s base out of range", g.name), d;
        if ((r = seg_common(&g, d, n)))
            return r;
    }
    return NULL;
}

/* ---- 27.3.1.3 descriptor tables, 27.3.1.4 RIP/RFLAGS, 27.3.1.5 non-register -- */
static const char *g_dtr(const S *s, char *d, size_t n)
{
    if (!canonical(s->gdtr_base) || !canonical(s->idtr_base))
        return "GDTR/IDTR base not canonical";
    if ((s->gdtr_limit >> 16) || (s->idtr_limit >> 16))
        return "GDTR/IDTR limit bits 31:16 set";
    return NULL;
}

static const char *g_rip(const S *s, char *d, size_t n)
{
    if (ia32e(s) && (s->cs_ar & BIT(13)))
        return canonical(s->rip) ? NULL : "not canonical in 64-bit mode";
    return s->rip >> 32 ? "bits 63:32 set outside 64-bit mode" : NULL;
}

static const char *g_rflags(const S *s, char *d, size_t n)
{
    if ((s->rflags & ~0x3F7FD7ull) || !(s->rflags & 2))
        return "reserved bits wrong (bit 1 must be 1; 3, 5, 15, 63:22 must be 0)";
    if ((ia32e(s) || !(s->cr0 & CR0_PE)) && (s->rflags & BIT(17)))
        return "VM set in IA-32e mode or with CR0.PE clear";
    return NULL;
}

static const char *g_activity(const S *s, char *d, size_t n)
{
    if (s->activity > 3 || (s->activity && !(s->cap_misc & BIT(5 + s->activity))))
        return "state not supported (IA32_VMX_MISC)";
    if (s->activity == 1 && ((s->ss_ar >> 5) & 3))
        return "HLT with SS.DPL not 0";
    return NULL;
}

static const char *g_interruptibility(const S *s, char *d, size_t n)
{
    if (s->interruptibility & ~0x1Full)
        return "reserved bits set";
    if ((s->interruptibility & 3) == 3)
        return "blocking by STI and by MOV SS both set";
    if ((s->interruptibility & 1) && !(s->rflags & BIT(9)))
        return "blocking by STI with RFLAGS.IF clear";
    return NULL;
}

static const char *g_link(const S *s, char *d, size_t n)
{
    return s->link_pointer != ~0ull ? "must be FFFFFFFF_FFFFFFFF (no VMCS shadowing)" : NULL;
}

static const struct { const char *name; check_fn fn; } checks[] = {
    {"ctls.pin", c_pin},                 /* 27.2.1.1 */
    {"ctls.proc", c_proc},
    {"ctls.proc2", c_proc2},
    {"ctls.cr3-targets", c_cr3_targets},
    {"ctls.pin", c_virtual_nmis},
    {"ctls.eptp", c_eptp},
    {"ctls.vpid", c_vpid},
    {"ctls.proc2", c_ug},
    {"ctls.exit", c_exit},               /* 27.2.1.2 */
    {"ctls.entry", c_entry},             /* 27.2.1.3 */
    {"ctls.entry-intr-info", c_entry_intr},
    {"host.cr0", h_cr0},                 /* 27.2.2 */
    {"host.cr4", h_cr4},
    {"host.cr3", h_cr3},
    {"host.sysenter", h_sysenter},
    {"host.efer", h_efer},
    {"host.selectors", h_selectors},     /* 27.2.3 */
    {"host.bases", h_bases},
    {"host.rip", h_rip},
    {"guest.cr0", g_cr0},                /* 27.3.1.1 */
    {"guest.cr4", g_cr4},
    {"guest.cr0", g_ia32e_pg},
    {"guest.cr3", g_cr3},
    {"guest.dr7", g_dr7},
    {"guest.sysenter", g_sysenter},
    {"guest.pat", g_pat},
    {"guest.efer", g_efer},
    {"guest.tr", g_tr},                  /* 27.3.1.2 */
    {"guest.ldtr", g_ldtr},
    {"guest.cs", g_cs},
    {"guest.ss", g_ss},
    {"guest.segments", g_data_segs},
    {"guest.dtr", g_dtr},                /* 27.3.1.3 */
    {"guest.rip", g_rip},                /* 27.3.1.4 */
    {"guest.rflags", g_rflags},
    {"guest.activity", g_activity},      /* 27.3.1.5 */
    {"guest.interruptibility", g_interruptibility},
    {"guest.link-pointer", g_link},
};

int vmx_entry_check(const struct vmx_check_state *s, char *out, size_t size)
{
    char detail[96];

    for (size_t i = 0; i < sizeof(checks) / sizeof(checks[0]); i++) {
        const char *why = checks[i].fn(s, detail, sizeof(detail));

        if (why) {
            hv_snprintf(out, size, "%s: %s", checks[i].name, why);
            return -1;
        }
    }
    if (size)
        out[0] = 0;
    return 0;
}
