/*
 * resume.S - the last step of devirtualization, shared by both backends:
 * the processor is already back in the guest's descriptor tables, control
 * registers and MSRs; load the guest's CR3, build an IRETQ frame (RIP, CS,
 * RFLAGS, RSP, SS) and restore every GPR.  This code must be mapped at the
 * same address by the guest's page tables (true for UEFI's identity map).
 * Microsoft x64 calling convention.
 *
 * void hv_resume_native(const struct hv_regs *regs, const uint64_t frame[5],
 *                       uint64_t cr3)
 */
    .text
    .globl hv_resume_native
hv_resume_native:
    mov %r8, %cr3
    pushq 32(%rdx)                  /* SS */
    pushq 24(%rdx)                  /* RSP */
    pushq 16(%rdx)                  /* RFLAGS */
    pushq 8(%rdx)                   /* CS */
    pushq 0(%rdx)                   /* RIP */
    mov %rcx, %rax
    mov 0x08(%rax), %rcx
    mov 0x10(%rax), %rdx
    mov 0x18(%rax), %rbx
    mov 0x28(%rax), %rbp
    mov 0x30(%rax), %rsi
    mov 0x38(%rax), %rdi
    mov 0x40(%rax), %r8
    mov 0x48(%rax), %r9
    mov 0x50(%rax), %r10
    mov 0x58(%rax), %r11
    mov 0x60(%rax), %r12
    mov 0x68(%rax), %r13
    mov 0x70(%rax), %r14
    mov 0x78(%rax), %r15
    mov 0x00(%rax), %rax
    iretq
