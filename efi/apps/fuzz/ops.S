/*
 * ops.S - the fuzzer's instructions, each run under the fuzzer's own IDT
 * (fuzz.c): any exception lands in fz_trap, which records the vector and
 * error code and resumes at the operation's recovery label.  Every fz_*
 * returns the vector raised, or -1.  Microsoft x64 calling convention
 * (RCX, RDX, R8, R9; RAX, RCX, RDX, R8-R11 scratch).
 */
    .text

    .data
    .globl fz_vec, fz_err, fz_rflags
fz_vec:     .long -1
fz_err:     .long 0
    .p2align 3
fz_rflags:  .quad 0                     /* RFLAGS as the exception pushed it */
    .p2align 3
fz_resume:  .quad 0
    .text

/* One 16-byte stub per vector 0-31 (SDM Vol 3A 6.13: which push an error code). */
    .p2align 4
    .globl fz_stubs
fz_stubs:
    .irp v, 0,1,2,3,4,5,6,7,8,9,10,11,12,13,14,15,16,17,18,19,20,21,22,23,24,25,26,27,28,29,30,31
    .p2align 4
    .if (\v == 8) || (\v >= 10 && \v <= 14) || (\v == 17) || (\v == 21) || (\v == 29) || (\v == 30)
    .else
    pushq $0
    .endif
    pushq $\v
    jmp fz_trap
    .endr

fz_trap:
    push %rax
    mov 8(%rsp), %eax
    mov %eax, fz_vec(%rip)
    mov 16(%rsp), %eax
    mov %eax, fz_err(%rip)
    mov 40(%rsp), %rax
    mov %rax, fz_rflags(%rip)
    mov fz_resume(%rip), %rax
    mov %rax, 24(%rsp)              /* the interrupted RIP */
    pop %rax
    add $16, %rsp                   /* vector, error code */
    iretq

.macro TRY                          /* clobbers RAX */
    lea 9f(%rip), %rax
    mov %rax, fz_resume(%rip)
    movl $-1, fz_vec(%rip)
.endm
.macro DONE
9:  movslq fz_vec(%rip), %rax
    ret
.endm

/* int fz_cpuid(uint32_t leaf, uint32_t sub, uint32_t out[4]) */
    .globl fz_cpuid
fz_cpuid:
    push %rbx
    mov %r8, %r10
    mov %ecx, %eax
    mov %edx, %ecx
    cpuid
cpuid_out:                          /* the results to out[4] (R10) */
    mov %eax, 0(%r10)
    mov %ebx, 4(%r10)
    mov %ecx, 8(%r10)
    mov %edx, 12(%r10)
    pop %rbx
    mov $-1, %rax
    ret

/* int fz_cpuid_pfx(unsigned kind, uint32_t leaf_sub[2], uint32_t out[4]):
 * CPUID with redundant prefixes (the instruction length without NRIPS comes
 * from the guest's bytes, efi/core/insn_len.c). */
    .globl fz_cpuid_pfx, fz_cpuid_pfx_kinds
fz_cpuid_pfx:
    push %rbx
    mov %r8, %r10
    mov %ecx, %r11d
    mov 0(%rdx), %eax
    mov 4(%rdx), %ecx
    lea cpuid_pfx_table(%rip), %rbx
    jmp *(%rbx,%r11,8)
c_66:       .byte 0x66, 0x0f, 0xa2;             jmp 1f
c_seg:      .byte 0x2e, 0x3e, 0x26, 0x0f, 0xa2; jmp 1f
c_rexw:     .byte 0x48, 0x0f, 0xa2;             jmp 1f
c_rexleg:   .byte 0x40, 0x66, 0x0f, 0xa2;       jmp 1f     /* REX, then a legacy prefix */
c_rexrex:   .byte 0x41, 0x48, 0x0f, 0xa2;       jmp 1f
c_f3:       .byte 0xf3, 0x0f, 0xa2;             jmp 1f
c_fsgs:     .byte 0x64, 0x65, 0x67, 0x0f, 0xa2; jmp 1f
c_long:     .byte 0x66, 0x66, 0x66, 0x66, 0x2e, 0x2e, 0x2e, 0x3e, 0x3e, 0x3e, 0x26, 0x26, 0x48, 0x0f, 0xa2  /* 15 bytes */
1:  jmp cpuid_out
    .section .rodata
    .p2align 3
cpuid_pfx_table:
    .quad c_66, c_seg, c_rexw, c_rexleg, c_rexrex, c_f3, c_fsgs, c_long
fz_cpuid_pfx_kinds: .long (fz_cpuid_pfx_kinds - cpuid_pfx_table) / 8
    .text

/* int fz_rdmsr(uint32_t msr, uint64_t *v) */
    .globl fz_rdmsr
fz_rdmsr:
    mov %rdx, %r9
    TRY
    rdmsr
    shl $32, %rdx
    or %rdx, %rax
    mov %rax, (%r9)
    DONE

/* int fz_wrmsr(uint32_t msr, uint64_t v) */
    .globl fz_wrmsr
fz_wrmsr:
    TRY
    mov %rdx, %rax
    shr $32, %rdx
    wrmsr
    DONE

/* int fz_wrcr0(uint64_t v), fz_wrcr3, fz_wrcr4, fz_wrcr8 */
    .globl fz_wrcr0, fz_wrcr3, fz_wrcr4, fz_wrcr8
fz_wrcr0:
    TRY
    mov %rcx, %cr0
    DONE
fz_wrcr3:
    TRY
    mov %rcx, %cr3
    DONE
fz_wrcr4:
    TRY
    mov %rcx, %cr4
    DONE
fz_wrcr8:
    TRY
    mov %rcx, %cr8
    DONE

/* int fz_lmsw(uint16_t v) */
    .globl fz_lmsw
fz_lmsw:
    TRY
    lmsw %cx
    DONE

/* int fz_xsetbv(uint32_t xcr, uint64_t v) */
    .globl fz_xsetbv
fz_xsetbv:
    TRY
    mov %rdx, %rax
    shr $32, %rdx
    xsetbv
    DONE

/* int fz_xgetbv(uint32_t xcr, uint64_t *v) */
    .globl fz_xgetbv
fz_xgetbv:
    mov %rdx, %r9
    TRY
    xgetbv
    shl $32, %rdx
    or %rdx, %rax
    mov %rax, (%r9)
    DONE

/* int fz_in(uint16_t port, unsigned size, uint32_t *v) */
    .globl fz_in
fz_in:
    mov %r8, %r9
    mov %edx, %r10d
    mov %ecx, %edx
    TRY
    xor %eax, %eax
    cmp $1, %r10d
    je 1f
    cmp $2, %r10d
    je 2f
    in %dx, %eax
    jmp 3f
1:  in %dx, %al
    jmp 3f
2:  in %dx, %ax
3:  mov %eax, (%r9)
    DONE

/* int fz_out(uint16_t port, unsigned size, uint32_t v) */
    .globl fz_out
fz_out:
    mov %edx, %r10d
    mov %ecx, %edx
    TRY                             /* uses RAX: the value after it */
    mov %r8d, %eax
    cmp $1, %r10d
    je 1f
    cmp $2, %r10d
    je 2f
    out %eax, %dx
    jmp 9f
1:  out %al, %dx
    jmp 9f
2:  out %ax, %dx
    DONE

/* int fz_insb(uint16_t port, void *buf, uint64_t count, uint64_t rep) */
    .globl fz_insb, fz_outsb
fz_insb:
    push %rdi
    mov %rdx, %rdi
    mov %ecx, %edx
    mov %r8, %rcx
    TRY
    test %r9, %r9
    jz 1f
    rep insb
    jmp 9f
1:  insb
9:  movslq fz_vec(%rip), %rax
    pop %rdi
    ret

/* int fz_outsb(uint16_t port, const void *buf, uint64_t count, uint64_t rep) */
fz_outsb:
    push %rsi
    mov %rdx, %rsi
    mov %ecx, %edx
    mov %r8, %rcx
    TRY
    test %r9, %r9
    jz 1f
    rep outsb
    jmp 9f
1:  outsb
9:  movslq fz_vec(%rip), %rax
    pop %rsi
    ret

/* ---- stores to an xAPIC register ---------------------------------------------
 * int fz_store(unsigned kind, volatile uint32_t *reg, uint32_t val, uint64_t io[2])
 * io[0]: RFLAGS in (arithmetic flags) / out; io[1]: XCHG's old value.  Each
 * kind is one encoding (see fuzz.c's store_names). */
    .globl fz_store
fz_store:
    push %rdi
    push %rbx
    mov %r9, %r11
    mov %rdx, %rdi                  /* the register's address */
    mov %r8d, %edx                  /* the value */
    mov %ecx, %ebx
    TRY
    pushq 0(%r11)
    popfq
    lea store_table(%rip), %rax
    jmp *(%rax,%rbx,8)
s_mov:      mov %edx, (%rdi);               jmp 8f
s_movimm:   movl $0x20, (%rdi);             jmp 8f
s_xchg:     xchg %edx, (%rdi);              jmp 8f
s_moffs:    movl %edx, %eax; movabs %eax, 0xFEE00080; jmp 8f   /* TPR by absolute address */
s_or:       or %edx, (%rdi);                jmp 8f
s_and:      and %edx, (%rdi);               jmp 8f
s_add:      add %edx, (%rdi);               jmp 8f
s_sub:      sub %edx, (%rdi);               jmp 8f
s_xor:      xor %edx, (%rdi);               jmp 8f
s_adc:      adc %edx, (%rdi);               jmp 8f
s_sbb:      sbb %edx, (%rdi);               jmp 8f
s_orimm8:   orl $0x10, (%rdi);              jmp 8f
s_andimm32: andl $0xFFFFFF30, (%rdi);       jmp 8f
s_lockor:   lock or %edx, (%rdi);           jmp 8f
s_movnti:   movnti %edx, (%rdi);            jmp 8f
s_stos:     mov %edx, %eax; stosl;          jmp 8f
s_repstos:  mov %edx, %eax; mov $1, %ecx; rep stosl; jmp 8f
s_pfx3e:    .byte 0x3e, 0x3e, 0x2e, 0x89, 0x17; jmp 8f     /* ds ds cs mov %edx,(%rdi) */
s_pfxrex:   .byte 0x40, 0x89, 0x17;         jmp 8f         /* rex mov */
s_pfxf3:    .byte 0xf3, 0x89, 0x17;         jmp 8f         /* rep (ignored) mov */
s_pfxseg:   .byte 0x26, 0x36, 0x89, 0x57, 0x00; jmp 8f     /* es ss mov %edx,0(%rdi) disp8 */
s_disp32:   .byte 0x89, 0x97, 0, 0, 0, 0;   jmp 8f         /* mov %edx,0x0(%rdi) disp32 */
s_sib:      .byte 0x89, 0x14, 0x27;         jmp 8f         /* mov %edx,(%rdi,%riz) SIB */
s_not:      notl (%rdi);                    jmp 8f
s_neg:      negl (%rdi);                    jmp 8f
s_inc:      incl (%rdi);                    jmp 8f
s_dec:      decl (%rdi);                    jmp 8f
s_addr32:   .byte 0x67, 0x89, 0x17;         jmp 8f         /* addr32 mov %edx,(%edi) */
8:  pushfq
    popq 0(%r11)
    mov %edx, 8(%r11)
9:  movslq fz_vec(%rip), %rax
    pop %rbx
    pop %rdi
    ret

    .section .rodata
    .p2align 3
    .globl fz_store_kinds
store_table:
    .quad s_mov, s_movimm, s_xchg, s_moffs, s_or, s_and, s_add, s_sub, s_xor, s_adc
    .quad s_sbb, s_orimm8, s_andimm32, s_lockor, s_movnti, s_stos, s_repstos, s_pfx3e
    .quad s_pfxrex, s_pfxf3, s_pfxseg, s_disp32, s_sib, s_not, s_neg, s_inc, s_dec
    .quad s_addr32
fz_store_kinds: .long (fz_store_kinds - store_table) / 8
    .text

/* ---- VMX instructions: int fz_vmx(unsigned kind, void *mem) ------------------ */
    .globl fz_vmx
fz_vmx:
    mov %rdx, %r9
    mov %ecx, %r10d
    TRY
    lea vmx_table(%rip), %rax
    jmp *(%rax,%r10,8)
v_vmxon:    vmxon (%r9);        jmp 9f
v_vmxoff:   vmxoff;             jmp 9f
v_vmclear:  vmclear (%r9);      jmp 9f
v_vmptrld:  vmptrld (%r9);      jmp 9f
v_vmptrst:  vmptrst (%r9);      jmp 9f
v_vmread:   xor %eax, %eax; vmread %rax, %rdx; jmp 9f
v_vmwrite:  xor %eax, %eax; vmwrite %rax, %rax; jmp 9f
v_vmlaunch: vmlaunch;           jmp 9f
v_vmresume: vmresume;           jmp 9f
v_invept:   mov $1, %eax; invept (%r9), %rax; jmp 9f
v_invvpid:  mov $1, %eax; invvpid (%r9), %rax; jmp 9f
v_vmfunc:   xor %eax, %eax; vmfunc; jmp 9f
v_invd:     invd;               jmp 9f
v_wbinvd:   wbinvd;             jmp 9f
    DONE
    .section .rodata
    .p2align 3
    .globl fz_vmx_kinds
vmx_table:
    .quad v_vmxon, v_vmxoff, v_vmclear, v_vmptrld, v_vmptrst, v_vmread, v_vmwrite
    .quad v_vmlaunch, v_vmresume, v_invept, v_invvpid, v_vmfunc, v_invd, v_wbinvd
fz_vmx_kinds: .long (fz_vmx_kinds - vmx_table) / 8
    .text

/* int fz_vmcall(uint64_t io[4]), fz_vmmcall (AMD's): RAX, RCX, RDX, R8 in
 * and out. */
.macro HYPERCALL insn
    mov %rcx, %r11
    TRY
    mov 0(%r11), %rax
    mov 8(%r11), %rcx
    mov 16(%r11), %rdx
    mov 24(%r11), %r8
    \insn
    mov %rax, 0(%r11)
    mov %rdx, 16(%r11)
    mov %r8, 24(%r11)
    DONE
.endm
    .globl fz_vmcall, fz_vmmcall
fz_vmcall:
    HYPERCALL vmcall
fz_vmmcall:
    HYPERCALL vmmcall

/* ---- SVM instructions: int fz_svm(unsigned kind, void *mem) ------------------
 * rAX is the 4 KiB-aligned page mem (identity-mapped: its physical address),
 * so no operand check (APM Vol 3: #GP for a misaligned rAX, which Bochs
 * makes before the intercept) can come before the #UD. */
    .globl fz_svm
fz_svm:
    mov %rdx, %r9
    mov %ecx, %r10d
    TRY
    lea svm_table(%rip), %rax
    mov (%rax,%r10,8), %r10
    mov %r9, %rax
    xor %ecx, %ecx
    jmp *%r10
s_vmrun:    vmrun %rax;         jmp 9f
s_vmload:   vmload %rax;        jmp 9f
s_vmsave:   vmsave %rax;        jmp 9f
s_stgi:     stgi;               jmp 9f
s_clgi:     clgi;               jmp 9f
s_skinit:   skinit %eax;        jmp 9f
s_invlpga:  invlpga %rax, %ecx; jmp 9f
    DONE
    .section .rodata
    .p2align 3
    .globl fz_svm_kinds
svm_table:
    .quad s_vmrun, s_vmload, s_vmsave, s_stgi, s_clgi, s_skinit, s_invlpga
fz_svm_kinds: .long (fz_svm_kinds - svm_table) / 8
    .text
