/*
 * s3_wake.S - the S3 resume stub (s3.c): the code every CPU runs when it
 * comes back from S3 without virtualization, copied to a page below 1 MiB.
 * The BSP enters it from the FACS firmware waking vector (ACPI 6.5 5.2.10:
 * real mode, CS:IP = vector >> 4 : vector & 0xF), an AP from a start-up IPI
 * (SDM Vol 3A 9.4.4: CS = vector << 8, IP = 0); the vector is the page, so
 * both start at offset 0 with CS base = the page.
 *
 * Real mode -> 32-bit protected mode -> IA-32e mode (SDM Vol 3A 10.8.5:
 * PAE, CR3, EFER.LME, CR0.PG, then a far jump to a 64-bit code segment) on
 * a copy of the host PML4 in the next page, then the CPU looks itself up by
 * its initial APIC ID in the table the mailbox points at, takes its host
 * stack and calls hv_s3_cpu_entry(cpu) in the resident copy.  The GDT's code
 * and data selectors are the host's (HOST_CS, HOST_DS), so the host IDT
 * works as soon as it is loaded.  No data is written: concurrent CPUs share
 * the page.
 */
    .set W_GDT, 0x800           /* the data half of the page (struct s3_wake, s3.c) */
    .set W_GDTR, 0x820
    .set W_JMP32, 0x828
    .set W_JMP64, 0x830
    .set W_CR0, 0x838
    .set W_CR4_32, 0x840
    .set W_CR4, 0x848
    .set W_EFER, 0x850
    .set W_TABLE, 0x858
    .set W_COUNT, 0x860
    .set W_ENTRY, 0x868

    .text
    .globl hv_s3_wake_start, hv_s3_wake_pm32, hv_s3_wake_lm64, hv_s3_wake_end
    .code16
hv_s3_wake_start:
    cli
    cld
    mov %cs, %bx
    mov %bx, %ds
    movzwl %bx, %ebx
    shl $4, %ebx                /* EBX = the page, through every mode below */
    lgdtl W_GDTR                /* GDT base and jump targets: written by s3.c */
    mov %cr0, %eax
    or $1, %eax                 /* PE */
    mov %eax, %cr0
    ljmpl *W_JMP32              /* to 0x18: 32-bit code */

    .code32
hv_s3_wake_pm32:
    mov $0x10, %ax              /* HOST_DS */
    mov %ax, %ds
    mov %ax, %es
    mov %ax, %ss
    mov W_CR4_32(%ebx), %eax    /* PAE, and what 32-bit mode may already set */
    mov %eax, %cr4
    lea 0x1000(%ebx), %eax      /* the PML4 copy */
    mov %eax, %cr3
    mov $0xC0000080, %ecx       /* EFER: LME and NXE as the host has them */
    mov W_EFER(%ebx), %eax
    mov W_EFER+4(%ebx), %edx
    wrmsr
    mov W_CR0(%ebx), %eax       /* the host's CR0, with PG: IA-32e mode */
    mov %eax, %cr0
    ljmpl *W_JMP64(%ebx)        /* to 0x08 (HOST_CS): 64-bit code */

    .code64
hv_s3_wake_lm64:
    mov %ebx, %r15d             /* CPUID clobbers RBX */
    mov W_CR4(%r15), %rax       /* the host's whole CR4 */
    mov %rax, %cr4
    xor %eax, %eax              /* the initial APIC ID, read as hv_smp_cpu_init does */
    cpuid
    cmp $0xB, %eax
    jb 2f
    mov $0xB, %eax
    xor %ecx, %ecx
    cpuid
    test %ebx, %ebx
    jz 2f
    mov %edx, %r8d
    jmp 3f
2:  mov $1, %eax
    cpuid
    shr $24, %ebx
    mov %ebx, %r8d
3:  mov W_TABLE(%r15), %rsi     /* {u32 apic_id, u32 pad, u64 cpu, u64 stack} */
    mov W_COUNT(%r15), %rcx
5:  test %rcx, %rcx
    jz 7f
    cmp %r8d, (%rsi)
    je 6f
    add $24, %rsi
    dec %rcx
    jmp 5b
6:  mov 16(%rsi), %rsp
    mov 8(%rsi), %rcx
    sub $32, %rsp               /* shadow space; 16-byte aligned at the call */
    call *W_ENTRY(%r15)
7:  cli                         /* not one of ours, or the entry returned */
    hlt
    jmp 7b
hv_s3_wake_end:
