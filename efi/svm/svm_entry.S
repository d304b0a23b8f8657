/*
 * svm_entry.S - the only SVM asm: the launch stub, the switch to the host
 * environment, the VMRUN loop and VMSAVE/VMLOAD.  Microsoft x64 calling
 * convention, except svm_exit_handler (SysV, as vmx_exit_handler).
 */
#include "hv_asm.h"
    .text

    .set MSR_VM_HSAVE_PA, 0xC0010117
    .set SC_VMCB_PA, 0x00           /* struct svm_cpu (svm.h) */
    .set SC_HOST_VMCB_PA, 0x08
    .set SC_HOST_RSP, 0x10
    .set SC_HOST_CR3, 0x18
    .set SC_HOST_ENTRY, 0x20
    .set SC_CPU, 0x28
    .set SC_FAIL_RIP, 0x30
    .set SC_GDT, 0x3E
    .set SC_IDT, 0x4E
    .set SC_FAIL_RSP, 0x58
    .set SC_FAIL_RFLAGS, 0x60
    .set SVM_CPU_PAGE, 3 * 4096     /* SVM_PAGE_CPU after the host save area */
    .set VMCB_RFLAGS, 0x400 + 0x170
    .set VMCB_RIP, 0x400 + 0x178
    .set VMCB_RSP, 0x400 + 0x1D8

/* int svm_launch(void)   (runs in the original image)
 * Saves the callee-saved registers, points this CPU's VMCB guest RSP, RIP
 * and RFLAGS at this very frame and label 1, and jumps to svm_host_start
 * in the resident copy, which VMRUNs.  The CPU comes back at 1 as a guest
 * and returns 0.  If the first VMRUN is refused the host resumes the CPU
 * natively at 2 with RAX = 1.  The per-CPU block is found from
 * VM_HSAVE_PA, which svm_cpu_prepare set. */
    .globl svm_launch
svm_launch:
    PUSH_CALLEE_SAVED
    mov $MSR_VM_HSAVE_PA, %ecx
    rdmsr
    shl $32, %rdx
    or %rdx, %rax
    lea SVM_CPU_PAGE(%rax), %r11
    mov SC_VMCB_PA(%r11), %r10
    mov %rsp, VMCB_RSP(%r10)
    mov %rsp, SC_FAIL_RSP(%r11)
    lea 1f(%rip), %rdx
    mov %rdx, VMCB_RIP(%r10)
    lea 2f(%rip), %rdx
    mov %rdx, SC_FAIL_RIP(%r11)
    pushfq
    pop %rdx
    mov %rdx, VMCB_RFLAGS(%r10)
    mov %rdx, SC_FAIL_RFLAGS(%r11)
    jmp *SC_HOST_ENTRY(%r11)
1:  xor %eax, %eax                  /* now a guest */
2:  POP_CALLEE_SAVED
    ret

/* svm_host_start: R11 = struct svm_cpu.  Loads the hypervisor's own GDT,
 * IDT, page tables, TR, stack and GS base (this_cpu), records them with
 * VMSAVE for the exits, and falls into the VMRUN loop.  Every exit starts
 * again at the same host RSP (VMRUN saved it in the host save area). */
    .set REGS, 32                   /* the home area, then struct hv_regs */
    .set GUEST_PA, REGS + 16 * 8
    .set HOST_PA, GUEST_PA + 8
    .set CPU, HOST_PA + 8
    .set FRAME, CPU + 8 + 8         /* 192: keeps RSP 16-byte aligned at the calls */
/* svm_s3_enter(struct svm_cpu *s): back from S3 (svm.c), the same. */
    .globl svm_s3_enter
svm_s3_enter:
    mov %rcx, %r11
    .globl svm_host_start
svm_host_start:
    cli
    mov SC_HOST_RSP(%r11), %rsp
    sub $FRAME, %rsp
    lgdt SC_GDT(%r11)
    lidt SC_IDT(%r11)
    mov SC_HOST_CR3(%r11), %rax
    mov %rax, %cr3
    lea 3f(%rip), %rax
    pushq $0x08                     /* HOST_CS */
    push %rax
    lretq
3:  mov $0x10, %eax                 /* HOST_DS */
    mov %eax, %ds
    mov %eax, %es
    mov %eax, %ss
    xor %eax, %eax
    mov %eax, %fs
    mov %eax, %gs
    lldt %ax
    mov $0x18, %eax                 /* HOST_TR */
    ltr %ax
    mov SC_CPU(%r11), %rax
    mov %rax, CPU(%rsp)
    mov %rax, %rdx
    shr $32, %rdx
    mov $0xC0000101, %ecx           /* GS base: this_cpu() */
    wrmsr
    mov SC_HOST_VMCB_PA(%r11), %rax
    mov %rax, HOST_PA(%rsp)
    vmsave %rax
    mov SC_VMCB_PA(%r11), %rax
    mov %rax, GUEST_PA(%rsp)
    xor %eax, %eax                  /* the guest's GPRs start as zeros */
    .irp off, 0x00,0x08,0x10,0x18,0x20,0x28,0x30,0x38,0x40,0x48,0x50,0x58,0x60,0x68,0x70,0x78
    mov %rax, REGS+\off(%rsp)
    .endr

/* The loop.  RAX and RSP travel in the VMCB (the C side copies RAX).
 * Slow path: VMLOAD the guest's FS/GS/TR/LDTR/syscall MSRs, VMRUN, VMSAVE
 * them, VMLOAD the host's (GS base: this_cpu), svm_exit_handler.
 * Fast path: svm_exit_fast handles the exit without touching GS (CPUID
 * with NRIPS) and the guest's segment state, still in the CPU, is resumed
 * as it is: no VMSAVE/VMLOAD at all. */
.macro GUEST_GPRS_IN
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
    mov GUEST_PA(%rsp), %rax
.endm

svm_run:
    GUEST_GPRS_IN
    vmload %rax
svm_enter:
    vmrun %rax
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
    lea REGS(%rsp), %rdi
    mov CPU(%rsp), %rsi
    call svm_exit_fast
    test %eax, %eax
    jnz 4f
    GUEST_GPRS_IN
    jmp svm_enter
4:  mov GUEST_PA(%rsp), %rax
    vmsave %rax
    mov HOST_PA(%rsp), %rax
    vmload %rax
    lea REGS(%rsp), %rdi
    call svm_exit_handler
    jmp svm_run

/* void svm_vmsave(uint64_t pa), void svm_vmload(uint64_t pa) */
    .globl svm_vmsave, svm_vmload
svm_vmsave:
    mov %rcx, %rax
    vmsave %rax
    ret
svm_vmload:
    mov %rcx, %rax
    vmload %rax
    ret
