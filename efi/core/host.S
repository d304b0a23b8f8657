/*
 * host.S - host exception entry stubs and fault-recovering MSR and XSETBV
 * access.
 * Microsoft x64 calling convention (arguments in RCX, RDX).
 */
    .text

/* One 16-byte stub per vector 0-31: push a zero error code where the CPU
 * does not (SDM Vol 3A 6.13), push the vector, go to the common path. */
    .p2align 4
    .globl host_exc_stubs
host_exc_stubs:
    .irp v, 0,1,2,3,4,5,6,7,8,9,10,11,12,13,14,15,16,17,18,19,20,21,22,23,24,25,26,27,28,29,30,31
    .p2align 4
    .if \v == 2
    jmp host_nmi_entry      /* NMI: counted for the guest (host.c) */
    .else
    .if (\v == 8) || (\v >= 10 && \v <= 14) || (\v == 17) || (\v == 21) || (\v == 29) || (\v == 30)
    .else
    pushq $0
    .endif
    pushq $\v
    jmp host_exc_common
    .endif
    .endr

/* NMI: the scratch registers of the MS ABI around host_nmi().  The CPU
 * aligned RSP before its 5-word frame; 7 pushes and the shadow space keep
 * the call aligned. */
host_nmi_entry:
    push %rax
    push %rcx
    push %rdx
    push %r8
    push %r9
    push %r10
    push %r11
    sub $32, %rsp
    call host_nmi
    add $32, %rsp
    pop %r11
    pop %r10
    pop %r9
    pop %r8
    pop %rdx
    pop %rcx
    pop %rax
    iretq

host_exc_common:
    push %rax
    push %rcx
    push %rdx
    push %rbx
    push %rbp
    push %rsi
    push %rdi
    push %r8
    push %r9
    push %r10
    push %r11
    push %r12
    push %r13
    push %r14
    push %r15
    mov %rsp, %rcx
    sub $32, %rsp
    call host_exception
    add $32, %rsp
    pop %r15
    pop %r14
    pop %r13
    pop %r12
    pop %r11
    pop %r10
    pop %r9
    pop %r8
    pop %rdi
    pop %rsi
    pop %rbp
    pop %rbx
    pop %rdx
    pop %rcx
    pop %rax
    add $16, %rsp           /* vector, error code */
    iretq

/* Vectors 32-255: an external interrupt taken in the host (only while
 * host_drain_interrupts opens a window).  EOI and return: what an INIT's
 * APIC reset does to it, the interrupt is dropped. */
    .p2align 4
    .globl host_irq_stubs
host_irq_stubs:
    .rept 224
    .p2align 3
    jmp host_irq_common
    .endr

host_irq_common:
    push %rax
    push %rcx
    push %rdx
    mov $0x1B, %ecx                 /* IA32_APIC_BASE */
    rdmsr
    test $0x400, %eax               /* x2APIC */
    jz 1f
    mov $0x80B, %ecx
    xor %eax, %eax
    xor %edx, %edx
    wrmsr
    jmp 2f
1:  shl $32, %rdx
    or %rdx, %rax
    and $~0xFFF, %rax
    movl $0, 0xB0(%rax)             /* xAPIC EOI */
2:  pop %rdx
    pop %rcx
    pop %rax
    iretq

/* int hv_rdmsr_safe(uint32_t msr, uint64_t *v) */
    .globl hv_rdmsr_safe, hv_rdmsr_insn, hv_wrmsr_safe, hv_wrmsr_insn, hv_msr_fault
hv_rdmsr_safe:
    mov %rdx, %r8
hv_rdmsr_insn:
    rdmsr
    shl $32, %rdx
    or %rdx, %rax
    mov %rax, (%r8)
    xor %eax, %eax
    ret

/* int hv_wrmsr_safe(uint32_t msr, uint64_t v) */
hv_wrmsr_safe:
    mov %rdx, %rax
    shr $32, %rdx
hv_wrmsr_insn:
    wrmsr
    xor %eax, %eax
    ret

/* int hv_xsetbv_safe(uint32_t xcr, uint64_t v) */
    .globl hv_xsetbv_safe, hv_xsetbv_insn
hv_xsetbv_safe:
    mov %rdx, %rax
    shr $32, %rdx
hv_xsetbv_insn:
    xsetbv
    xor %eax, %eax
    ret

hv_msr_fault:
    mov $-1, %eax
    ret
