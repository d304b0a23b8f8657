/*
 * hv_asm.h - assembler macros shared by the launch stubs (efi/vmx/vmx_entry.S,
 * efi/svm/svm_entry.S).  The launch returns to its C caller twice, once as a
 * guest and once on failure, so it keeps the Microsoft x64 callee-saved GPRs
 * on its own stack across the entry.
 */
#ifndef HV_ASM_H
#define HV_ASM_H

.macro PUSH_CALLEE_SAVED
    push %rbx
    push %rbp
    push %rdi
    push %rsi
    push %r12
    push %r13
    push %r14
    push %r15
.endm

.macro POP_CALLEE_SAVED
    pop %r15
    pop %r14
    pop %r13
    pop %r12
    pop %rsi
    pop %rdi
    pop %rbp
    pop %rbx
.endm

#endif
