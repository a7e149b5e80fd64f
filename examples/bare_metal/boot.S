// Multiboot 1 entry: QEMU's -kernel loader enters here in 32-bit protected
// mode with paging off. We build just enough page tables to reach the higher
// half (identity, direct map and kernel image over the first 1 GiB, 2 MiB
// pages), enable long mode (and LA57 in the five-level build) and call kmain.
// Everything else, including the tables the tests use, is built by asreloc.

#define KERNEL_VMA 0xffffffff80000000
#define PHYS(sym) ((sym) - KERNEL_VMA)

    .set MB_MAGIC, 0x1BADB002
    .set MB_FLAGS, 0x00010002          // bit 1: memory map, bit 16: a.out kludge
    .set MB_CHECKSUM, -(MB_MAGIC + MB_FLAGS)

    .section .multiboot, "a"
    .align 4
mb_header:
    .long MB_MAGIC, MB_FLAGS, MB_CHECKSUM
    .long mb_header                    // header_addr (the .boot section is linked at its physical address)
    .long load_start_phys
    .long load_end_phys
    .long bss_end_phys
    .long start32

    .section .boot.data, "aw"
    .align 8
boot_gdt:
    .quad 0
    .quad 0x00af9a000000ffff           // 0x08: 64-bit code, DPL 0
    .quad 0x00cf92000000ffff           // 0x10: data
boot_gdt_end:
boot_gdt_ptr:
    .word boot_gdt_end - boot_gdt - 1
    .long boot_gdt
    .globl boot_multiboot_info
boot_multiboot_info:
    .long 0
boot_magic:
    .long 0

    .section .boot.text, "ax"
    .code32
    .globl start32
start32:
    cli
    movl %eax, boot_magic
    movl %ebx, boot_multiboot_info
    movl $PHYS(boot_stack_top), %esp

    // Zero the boot tables (the loader zeroes .bss too; do not rely on it).
    movl $PHYS(boot_tables), %edi
    movl $(6 * 4096 / 4), %ecx
    xorl %eax, %eax
    rep stosl

    // pd: 512 x 2 MiB, P | R/W | PS, covering physical [0, 1 GiB).
    movl $PHYS(boot_pd), %edi
    movl $0x83, %eax
    movl $512, %ecx
1:  movl %eax, (%edi)
    addl $0x200000, %eax
    addl $8, %edi
    loop 1b

    movl $(PHYS(boot_pd) + 3), %eax
    movl %eax, PHYS(boot_pdpt_low)                // identity and direct map: PDPT[0]
    movl %eax, PHYS(boot_pdpt_high) + 510 * 8     // 0xffffffff80000000: PDPT[510]
    movl $(PHYS(boot_pdpt_low) + 3), %eax
    movl %eax, PHYS(boot_pml4)                    // 0
    movl %eax, PHYS(boot_pml4) + 256 * 8          // 0xffff800000000000 direct map
    movl $(PHYS(boot_pdpt_high) + 3), %eax
    movl %eax, PHYS(boot_pml4) + 511 * 8

    movl %cr4, %eax
    orl $(1 << 5), %eax                           // CR4.PAE
#ifdef ASRELOC_BOOT_LA57
    // CPUID.(EAX=7,ECX=0):ECX[16] = LA57. Without it we stay in 4-level
    // paging and the kernel reports five-level paging as unavailable.
    pushl %eax
    movl $7, %eax
    xorl %ecx, %ecx
    cpuid
    popl %eax
    testl $(1 << 16), %ecx
    jz 2f
    orl $(1 << 12), %eax                          // CR4.LA57
    movl $(PHYS(boot_pml4) + 3), %edx
    movl %edx, PHYS(boot_pml5)                    // 0 and below 2^56
    movl %edx, PHYS(boot_pml5) + 511 * 8          // the upper half
    movl %eax, %cr4
    movl $PHYS(boot_pml5), %eax
    jmp 3f
2:
#endif
    movl %eax, %cr4
    movl $PHYS(boot_pml4), %eax
3:  movl %eax, %cr3

    movl $0xC0000080, %ecx                        // IA32_EFER
    rdmsr
    orl $((1 << 8) | (1 << 11)), %eax             // LME, NXE
    wrmsr

    movl %cr0, %eax
    orl $((1 << 31) | (1 << 16) | 1), %eax        // PG, WP, PE
    movl %eax, %cr0

    lgdt boot_gdt_ptr
    ljmp $0x08, $start64_low

    .code64
start64_low:
    movabsq $start64, %rax
    jmp *%rax

    .text
start64:
    movw $0x10, %ax
    movw %ax, %ds
    movw %ax, %es
    movw %ax, %ss
    xorw %ax, %ax
    movw %ax, %fs
    movw %ax, %gs
    movabsq $boot_stack_top, %rsp
    xorl %ebp, %ebp
    movl boot_multiboot_info, %edi
    movl boot_magic, %esi
    call kmain
4:  hlt
    jmp 4b

    .bss
    .align 4096
boot_tables:
boot_pml5:      .skip 4096
boot_pml4:      .skip 4096
boot_pdpt_low:  .skip 4096
boot_pdpt_high: .skip 4096
boot_pd:        .skip 4096
                .skip 4096
    .globl boot_stack_top
boot_stack:     .skip 65536
boot_stack_top:

    .section .note.GNU-stack, "", @progbits
