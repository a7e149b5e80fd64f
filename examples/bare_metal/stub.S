// The stub's trap entry code. It is assembled here but runs only as a copy in
// the stub's first page, at whatever placement the stub has, so it is
// position-independent: it reaches the stub's data by a fixed offset from
// itself (stub_layout in stub.hpp must agree with the offsets below).
//
// Fast path: int 0x80 is answered here, in the guest space, without an
// address-space switch. Slow path: everything else switches CR3 to the
// monitor space (the stub is mapped at the same address there), moves to the
// monitor's stack and calls the monitor, which comes back through
// stub_resume to the stub's exit at the stub's placement *then* (it may have
// moved while the monitor ran).

#define STUB_DATA          0x2200      // from the start of the stub
#define DATA_MONITOR_CR3   0
#define DATA_GUEST_CR3     8
#define DATA_MONITOR_ENTRY 16
#define DATA_MONITOR_STACK 24
#define DATA_FAST_TRAPS    32

    .section .stub_text, "ax"
    .globl stub_code_start, stub_code_end, stub_entries, stub_exit
    .align 16
stub_code_start:
// 16-byte entries, one per vector 0..47, then int 0x80 (entry 48) and the
// hypercall int 0x81 (entry 49).
stub_entries:
    .set vec, 0
    .rept 48
    .align 16
    .if (vec == 8) || ((vec >= 10) && (vec <= 14)) || (vec == 17) || (vec == 21) || (vec == 29) || (vec == 30)
    .else
    pushq $0
    .endif
    pushq $vec
    jmp stub_common
    .set vec, vec + 1
    .endr
    .align 16
    pushq $0
    pushq $0x80
    jmp stub_common
    .align 16
    pushq $0
    pushq $0x81
    jmp stub_common

stub_common:
    pushq %rax
    pushq %rbx
    pushq %rcx
    pushq %rdx
    pushq %rsi
    pushq %rdi
    pushq %rbp
    pushq %r8
    pushq %r9
    pushq %r10
    pushq %r11
    pushq %r12
    pushq %r13
    pushq %r14
    pushq %r15
    cld
    cmpq $0x80, 15*8(%rsp)
    jne slow_path
    // Fast path: the guest's "service" answers rax + 1, counted in the stub.
    incq (stub_code_start + STUB_DATA + DATA_FAST_TRAPS)(%rip)
    addq $1, 14*8(%rsp)
    jmp stub_restore

slow_path:
    movq (stub_code_start + STUB_DATA + DATA_MONITOR_CR3)(%rip), %rax
    movq %rax, %cr3
    movq %rsp, %rdi                   // the trap frame, on the stub stack
    testb $3, 18*8(%rsp)              // CS of the interrupted code
    jz 1f
    movq (stub_code_start + STUB_DATA + DATA_MONITOR_STACK)(%rip), %rsp
1:  andq $-16, %rsp
    callq *(stub_code_start + STUB_DATA + DATA_MONITOR_ENTRY)(%rip)
    ud2                               // the monitor never returns here

// rdi = the trap frame (at the stub's current placement); CR3 = monitor space.
stub_exit:
    movq %rdi, %rsp
    movq (stub_code_start + STUB_DATA + DATA_GUEST_CR3)(%rip), %rax
    movq %rax, %cr3
stub_restore:
    popq %r15
    popq %r14
    popq %r13
    popq %r12
    popq %r11
    popq %r10
    popq %r9
    popq %r8
    popq %rbp
    popq %rdi
    popq %rsi
    popq %rdx
    popq %rcx
    popq %rbx
    popq %rax
    addq $16, %rsp
    iretq
stub_code_end:

// In the kernel image (monitor space only): jump to the stub exit at its
// current placement with the frame there.
//   [[noreturn]] void stub_resume(trap_frame* frame, u64 stub_exit_address)
    .text
    .globl stub_resume
stub_resume:
    jmp *%rsi

    .section .note.GNU-stack, "", @progbits
