// Trap entry, the ring-3 round trip and the access probes. Kept in assembly
// because each of them depends on an exact stack layout or on the address of
// one faulting instruction.
#include "gprs.inc"

// ---------------------------------------------------------------------------
// Interrupt entry: every vector pushes the same trap_frame (see cpu.hpp) and
// calls trap_dispatch(trap_frame*). Vectors 8, 10-14, 17, 21, 29 and 30 push
// an error code themselves; for the others the stub pushes 0 to keep one
// layout. Stub n starts at isr_stubs + 16 * n.
    .text
isr_common:
    push_gprs
    movq %rsp, %rdi
    movq %rsp, %rbx
    andq $-16, %rsp
    cld
    call trap_dispatch
    movq %rbx, %rsp
    pop_gprs
    addq $16, %rsp
    iretq

    .align 16
    .globl isr_stubs
isr_stubs:
    .set vec, 0
    .rept 256
    .align 16
    .if (vec == 8) || ((vec >= 10) && (vec <= 14)) || (vec == 17) || (vec == 21) || (vec == 29) || (vec == 30)
    .else
    pushq $0
    .endif
    pushq $vec
    jmp isr_common
    .set vec, vec + 1
    .endr

// ---------------------------------------------------------------------------
// Supervisor probes. A fault inside them is answered by the #PF handler by
// resuming at probe_landing, which returns to the caller: at the faulting
// instruction the stack holds exactly one return address (for a fetch the
// one pushed by `call *%rdi`, which returns into probe_fetch).
    .globl probe_read, probe_read_insn, probe_write, probe_write_insn
    .globl probe_fetch, probe_landing
probe_read:                    // u64 probe_read(u64 va)
probe_read_insn:
    movq (%rdi), %rax
    ret
probe_write:                   // void probe_write(u64 va, u64 value)
probe_write_insn:
    movq %rsi, (%rdi)
    ret
probe_fetch:                   // u64 probe_fetch(u64 va): calls code at va
    call *%rdi
    ret
probe_landing:
    ret

// ---------------------------------------------------------------------------
// The ring-3 round trip. enter_user saves the kernel's callee-saved state,
// iretq's to CPL 3 and comes back only through return_to_kernel, which a
// trap handler calls (on the TSS.RSP0 stack, which it abandons).
//   u64 enter_user(u64 rip, u64 rsp, u64 arg0, u64 arg1, u64 arg2)
    .globl enter_user, return_to_kernel
enter_user:
    pushq %rbx
    pushq %rbp
    pushq %r12
    pushq %r13
    pushq %r14
    pushq %r15
    movq %rsp, kernel_resume_rsp(%rip)
    pushq $0x1b                // SS: user data, RPL 3
    pushq %rsi                 // RSP
    pushq $0x2                 // RFLAGS: IF = 0, the probes run with interrupts off
    pushq $0x23                // CS: user code, RPL 3
    pushq %rdi                 // RIP
    movq %rdx, %rdi
    movq %rcx, %rsi
    movq %r8, %rdx
    xorl %eax, %eax
    xorl %ebx, %ebx
    xorl %ecx, %ecx
    xorl %ebp, %ebp
    xorl %r8d, %r8d
    xorl %r9d, %r9d
    xorl %r10d, %r10d
    xorl %r11d, %r11d
    xorl %r12d, %r12d
    xorl %r13d, %r13d
    xorl %r14d, %r14d
    xorl %r15d, %r15d
    iretq

return_to_kernel:              // [[noreturn]] void return_to_kernel(u64 value)
    movq %rdi, %rax
    movq kernel_resume_rsp(%rip), %rsp
    movw $0x10, %dx
    movw %dx, %ss
    popq %r15
    popq %r14
    popq %r13
    popq %r12
    popq %rbp
    popq %rbx
    ret

    .bss
    .align 8
kernel_resume_rsp:
    .quad 0

// ---------------------------------------------------------------------------
// The user probe, copied to a user-executable page of the test space:
// rdi = address, rsi = 0 read / 1 write / 2 fetch, rdx = value to write.
// It reports through int 0x81 (a DPL 3 gate) with the result in rax.
    .section .user_probe, "ax"
    .globl user_probe_start, user_probe_end
user_probe_start:
    cmpl $1, %esi
    je 1f
    cmpl $2, %esi
    je 2f
    movq (%rdi), %rax
    int $0x81
1:  movq %rdx, (%rdi)
    xorl %eax, %eax
    int $0x81
2:  call *%rdi
    int $0x81
user_probe_end:

    .section .note.GNU-stack, "", @progbits
