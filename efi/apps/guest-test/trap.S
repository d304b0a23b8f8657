/*
 * trap.S - guest-test helpers: the hypercall, and instructions executed
 * under a temporary #UD/#GP handler that records the vector and resumes at
 * a known label.  Microsoft x64 calling convention.
 */
    .text

/* uint64_t gt_hypercall_intel(uint64_t fn, uint64_t a1, uint64_t a2, uint64_t out[2])
 * RAX = fn, RCX = magic, RDX = a1, R8 = a2; returns RAX, out = {RDX, R8}. */
    .globl gt_hypercall_intel
gt_hypercall_intel:
    push %rbx
    mov %r9, %r11
    mov %rcx, %rax
    mov $0x48564D43, %ecx
    mov %r8, %r8
    vmcall
    mov %rdx, 0(%r11)
    mov %r8, 8(%r11)
    pop %rbx
    ret

/* The same with VMMCALL (AMD). */
    .globl gt_hypercall_amd
gt_hypercall_amd:
    push %rbx
    mov %r9, %r11
    mov %rcx, %rax
    mov $0x48564D43, %ecx
    vmmcall
    mov %rdx, 0(%r11)
    mov %r8, 8(%r11)
    pop %rbx
    ret

    .data
    .globl gt_trap_vec
gt_trap_vec:    .long -1
    .p2align 3
gt_trap_resume: .quad 0
    .text

/* Handlers installed in the IDT while a gt_try_* runs. */
    .globl gt_ud_stub, gt_gp_stub
gt_ud_stub:
    movl $6, gt_trap_vec(%rip)
    jmp 1f
gt_gp_stub:
    add $8, %rsp                    /* error code */
    movl $13, gt_trap_vec(%rip)
1:  push %rax
    mov gt_trap_resume(%rip), %rax
    mov %rax, 8(%rsp)               /* the interrupted RIP */
    pop %rax
    iretq

.macro TRY_BEGIN
    lea 9f(%rip), %rax
    mov %rax, gt_trap_resume(%rip)
    movl $-1, gt_trap_vec(%rip)
.endm
.macro TRY_END
9:  movl gt_trap_vec(%rip), %eax
    ret
.endm

/* int gt_try_vmxon(const uint64_t *pa): the vector raised, or -1. */
    .globl gt_try_vmxon
gt_try_vmxon:
    TRY_BEGIN
    vmxon (%rcx)
    TRY_END

/* int gt_try_read(const volatile uint32_t *p, uint32_t *out) */
    .globl gt_try_read
gt_try_read:
    TRY_BEGIN
    mov (%rcx), %r8d
    mov %r8d, (%rdx)
    TRY_END

/* int gt_try_write(volatile uint32_t *p, uint32_t v) */
    .globl gt_try_write
gt_try_write:
    TRY_BEGIN
    mov %edx, (%rcx)
    TRY_END

/* int gt_try_xsetbv(uint64_t xcr0) */
    .globl gt_try_xsetbv
gt_try_xsetbv:
    TRY_BEGIN
    mov %rcx, %rax
    mov %rcx, %rdx
    shr $32, %rdx
    xor %ecx, %ecx
    xsetbv
    TRY_END

/* int gt_try_wrmsr(uint32_t msr, uint64_t v) */
    .globl gt_try_wrmsr
gt_try_wrmsr:
    TRY_BEGIN
    mov %rdx, %rax
    shr $32, %rdx
    wrmsr
    TRY_END

/* int gt_try_rdmsr(uint32_t msr, uint64_t *v) */
    .globl gt_try_rdmsr
gt_try_rdmsr:
    mov %rdx, %r9
    TRY_BEGIN
    rdmsr
    shl $32, %rdx
    or %rdx, %rax
    mov %rax, (%r9)
    TRY_END

/* int gt_try_vmrun(const uint64_t *pa) */
    .globl gt_try_vmrun
gt_try_vmrun:
    TRY_BEGIN
    mov (%rcx), %rax
    vmrun %rax
    TRY_END

/* int gt_try_stgi(void) */
    .globl gt_try_stgi
gt_try_stgi:
    TRY_BEGIN
    stgi
    TRY_END

/* int gt_try_hypercall_magic(uint32_t magic, int amd): HC_VERSION with the
 * given magic in RCX; the vector raised, or -1. */
    .globl gt_try_hypercall_magic
gt_try_hypercall_magic:
    push %rbx
    TRY_BEGIN
    xor %eax, %eax
    test %edx, %edx
    jnz 1f
    vmcall
    jmp 9f
1:  vmmcall
9:  movl gt_trap_vec(%rip), %eax
    pop %rbx
    ret

/* NMI handler for check_nmi (main.c): counts NMIs and records whether one
 * arrived while another was still being handled (the CPU blocks NMIs from
 * an NMI's delivery to its IRET).  With gt_nmi_resend set, the first one
 * sends the next NMI from inside the handler: it must wait for the IRET. */
    .data
    .globl gt_nmi_count, gt_nmi_nested, gt_nmi_resend, gt_nmi_icr
gt_nmi_count:   .long 0
gt_nmi_nested:  .long 0
gt_nmi_resend:  .long 0
gt_nmi_depth:   .long 0
    .p2align 3
gt_nmi_icr:     .quad 0             /* the xAPIC ICR low register's address */
    .text
    .globl gt_nmi_stub
gt_nmi_stub:
    push %rax
    push %rcx
    incl gt_nmi_depth(%rip)
    cmpl $1, gt_nmi_depth(%rip)
    je 1f
    movl $1, gt_nmi_nested(%rip)
1:  incl gt_nmi_count(%rip)
    cmpl $0, gt_nmi_resend(%rip)
    je 2f
    movl $0, gt_nmi_resend(%rip)
    mov gt_nmi_icr(%rip), %rcx
    movl $0x4400, %eax              /* NMI, assert, physical: ICR high as set */
    movl %eax, (%rcx)
    mov $20000, %ecx                /* time for it to arrive, if it wrongly could */
3:  pause
    dec %ecx
    jnz 3b
2:  decl gt_nmi_depth(%rip)
    pop %rcx
    pop %rax
    iretq
