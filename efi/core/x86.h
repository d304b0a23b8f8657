/*
 * x86.h - small inline wrappers for x86-64 instructions and architectural
 * constants shared by the core and both vendor backends.
 */
#ifndef HV_X86_H
#define HV_X86_H

#include <stdint.h>

#define CR0_PE  (1ull << 0)
#define CR0_NE  (1ull << 5)
#define CR0_PG  (1ull << 31)
#define CR4_VMXE (1ull << 13)
#define CR4_OSXSAVE (1ull << 18)
#define EFER_LME (1ull << 8)
#define EFER_LMA (1ull << 10)
#define RFLAGS_IF (1ull << 9)

#define MSR_FEATURE_CONTROL  0x3A
#define FC_LOCK              (1ull << 0)
#define FC_VMX_IN_SMX        (1ull << 1)
#define FC_VMX_OUTSIDE_SMX   (1ull << 2)
#define MSR_SYSENTER_CS      0x174
#define MSR_SYSENTER_ESP     0x175
#define MSR_SYSENTER_EIP     0x176
#define MSR_DEBUGCTL         0x1D9
#define MSR_PAT              0x277
#define MSR_EFER             0xC0000080
#define MSR_FS_BASE          0xC0000100
#define MSR_GS_BASE          0xC0000101
#define MSR_APIC_BASE        0x1B

/* Exception vectors (SDM Vol 3A 6.3.1). */
enum { VEC_DE = 0, VEC_NMI = 2, VEC_UD = 6, VEC_DF = 8, VEC_GP = 13, VEC_PF = 14,
       VEC_MC = 18 };

struct cpuid_regs { uint32_t eax, ebx, ecx, edx; };

static inline struct cpuid_regs cpuid2(uint32_t leaf, uint32_t sub)
{
    struct cpuid_regs r;

    __asm__ volatile("cpuid" : "=a"(r.eax), "=b"(r.ebx), "=c"(r.ecx), "=d"(r.edx)
                     : "a"(leaf), "c"(sub));
    return r;
}

static inline uint64_t rdmsr(uint32_t msr)
{
    uint32_t lo, hi;

    __asm__ volatile("rdmsr" : "=a"(lo), "=d"(hi) : "c"(msr));
    return ((uint64_t)hi << 32) | lo;
}

static inline void wrmsr(uint32_t msr, uint64_t v)
{
    __asm__ volatile("wrmsr" : : "c"(msr), "a"((uint32_t)v), "d"((uint32_t)(v >> 32))
                     : "memory");
}

#define DEFINE_CR(n)                                                           \
    static inline uint64_t read_cr##n(void)                                    \
    {                                                                          \
        uint64_t v;                                                            \
        __asm__ volatile("mov %%cr" #n ", %0" : "=r"(v));                      \
        return v;                                                              \
    }                                                                          \
    static inline void write_cr##n(uint64_t v)                                 \
    {                                                                          \
        __asm__ volatile("mov %0, %%cr" #n : : "r"(v) : "memory");             \
    }
DEFINE_CR(0)
DEFINE_CR(3)
DEFINE_CR(4)
#undef DEFINE_CR

static inline uint64_t read_dr7(void)
{
    uint64_t v;

    __asm__ volatile("mov %%dr7, %0" : "=r"(v));
    return v;
}

struct __attribute__((packed)) desc_ptr {
    uint16_t limit;
    uint64_t base;
};

static inline struct desc_ptr read_gdtr(void)
{
    struct desc_ptr d;

    __asm__ volatile("sgdt %0" : "=m"(d));
    return d;
}

static inline struct desc_ptr read_idtr(void)
{
    struct desc_ptr d;

    __asm__ volatile("sidt %0" : "=m"(d));
    return d;
}

static inline uint64_t rdtsc(void)
{
    uint32_t lo, hi;

    __asm__ volatile("rdtsc" : "=a"(lo), "=d"(hi));
    return ((uint64_t)hi << 32) | lo;
}

static inline void cpu_relax(void)
{
    __asm__ volatile("pause" ::: "memory");
}

static inline __attribute__((noreturn)) void halt_forever(void)
{
    for (;;)
        __asm__ volatile("cli; hlt");
}

#endif
