/*
 * vmx_entry.S - the only VT-x asm: the launch stub, the VM-exit entry and
 * the final jump of devirtualization.  Microsoft x64 calling convention.
 */
#include "hv_asm.h"
    .text

/* int vmx_launch(void)
 * Saves the callee-saved registers, points the current VMCS's guest RSP,
 * RIP and RFLAGS at this very frame and label 1, and VMLAUNCHes.  The CPU
 * comes back at 1 as a guest and returns 0 to the caller.  On failure it
 * returns 1 (VMfailInvalid) or 2 (VMfailValid) in VMX root operation. */
    .globl vmx_launch
vmx_launch:
    PUSH_CALLEE_SAVED
    mov $0x681C, %rax               /* GUEST_RSP */
    vmwrite %rsp, %rax
    lea 1f(%rip), %rdx
    mov $0x681E, %rax               /* GUEST_RIP */
    vmwrite %rdx, %rax
    pushfq
    pop %rdx
    mov $0x6820, %rax               /* GUEST_RFLAGS */
    vmwrite %rdx, %rax
    vmlaunch
    mov $1, %eax
    jc 2f
    mov $2, %eax
    jmp 2f
1:  xor %eax, %eax                  /* now a guest */
2:  POP_CALLEE_SAVED
    ret

/* VM-exit entry (HOST_RIP).  HOST_RSP is the 16-byte aligned top of this
 * CPU's host stack.  The guest GPRs go into a struct hv_regs just below it
 * (the RSP slot stays unused: RSP is in the VMCS), under that the 32-byte
 * home area the callee may use, and vmx_exit_handler(regs) runs; then the
 * GPRs come back and VMRESUME.  Stores rather than pushes: nothing needs
 * popping, as every exit starts again at HOST_RSP.  Every GPR is saved
 * because handlers read and write any of them through regs (CPUID's RBX,
 * CR moves, INIT's reset, devirtualization).  A failed VMRESUME goes to C. */
    .set REGS, 32                   /* the home area, then struct hv_regs */
    .set FRAME, REGS + 16 * 8
    .globl vmx_exit_entry
vmx_exit_entry:
    sub $FRAME, %rsp
    mov %rax, REGS+0x00(%rsp)
    mov %rcx, REGS+0x08(%rsp)
    mov %rdx, REGS+0x10(%rsp)
    mov %rbx, REGS+0x18(%rsp)
    mov %rbp, REGS+0x28(%rsp)
    mov %rsi, REGS+0x30(%rsp)
    mov %rdi, REGS+0x38(%rsp)
    mov %r8, REGS+0x40(%rsp)
    mov %r9, REGS+0x48(%rsp)
    mov %r10, REGS+0x50(%rsp)
    mov %r11, REGS+0x58(%rsp)
    mov %r12, REGS+0x60(%rsp)
    mov %r13, REGS+0x68(%rsp)
    mov %r14, REGS+0x70(%rsp)
    mov %r15, REGS+0x78(%rsp)
    lea REGS(%rsp), %rdi            /* SysV ABI: see vmx_exit_handler */
    call vmx_exit_handler
    mov REGS+0x00(%rsp), %rax
    mov REGS+0x08(%rsp), %rcx
    mov REGS+0x10(%rsp), %rdx
    mov REGS+0x18(%rsp), %rbx
    mov REGS+0x28(%rsp), %rbp
    mov REGS+0x30(%rsp), %rsi
    mov REGS+0x38(%rsp), %rdi
    mov REGS+0x40(%rsp), %r8
    mov REGS+0x48(%rsp), %r9
    mov REGS+0x50(%rsp), %r10
    mov REGS+0x58(%rsp), %r11
    mov REGS+0x60(%rsp), %r12
    mov REGS+0x68(%rsp), %r13
    mov REGS+0x70(%rsp), %r14
    mov REGS+0x78(%rsp), %r15
    vmresume
    call vmx_resume_failed          /* does not return */
    ud2

