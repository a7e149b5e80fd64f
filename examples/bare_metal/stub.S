// The stub's trap entry code. It is assembled here but runs only as a copy in
// the stub's code page, at whatever placement the stub has, so it is
// position-independent: it reaches the stub's data by a fixed offset from
// itself (stub.hpp must agree with the offsets below).
//
// Fast path: a vector the route table (asreloc::trap_router, in the stub's
// data) marks fast is answered here by its handler, in the guest space,
// without an address-space switch. Slow path: everything else switches CR3 to the
// monitor space (the stub is mapped at the same address there), moves to the
// monitor's stack and calls the monitor, which comes back through
// stub_resume to the stub's exit at the stub's placement *then* (it may have
// moved while the monitor ran).

#include "gprs.inc"

#define STUB_CODE          0x2000      // from the start of the stub (stub_code_offset)
#define STUB_DATA          0x3000      // stub_data_offset
#define DATA_MONITOR_CR3   0
#define DATA_GUEST_CR3     8
#define DATA_MONITOR_ENTRY 16
#define DATA_MONITOR_STACK 24
#define DATA_ROUTER        64          // asreloc::trap_router, its route table first
#define ROUTE_KIND         16          // in a trap_route_entry (32 bytes per vector)
#define ROUTE_FAST         1
// Frame offsets from %rsp once the registers are pushed (guest_frame).
#define F_RAX              (14*8)
#define F_VECTOR           (15*8)
#define F_CR2              (16*8)
#define F_CS               (19*8)

// Everything at a fixed distance from the code: rip-relative from the copy.
#define DATA(x)            (stub_code_start - STUB_CODE + STUB_DATA + (x))(%rip)

    // First in the stub's code (linker.ld): stub_code_start is here.
    .section .stub_text.entry, "ax"
    .globl stub_entries, stub_exit
// 16-byte entries, one per vector 0..47, then int 0x80 (entry 48) and the
// hypercall int 0x81 (entry 49). Each pushes a zero error code where the CPU
// pushes none, a slot for CR2, and the vector: asreloc::trap_frame's order.
stub_entries:
    .set vec, 0
    .rept 48
    .align 16
    .if (vec == 8) || ((vec >= 10) && (vec <= 14)) || (vec == 17) || (vec == 21) || (vec == 29) || (vec == 30)
    .else
    pushq $0
    .endif
    pushq $0
    pushq $vec
    jmp stub_common
    .set vec, vec + 1
    .endr
    .align 16
    pushq $0
    pushq $0
    pushq $0x80
    jmp stub_common
    .align 16
    pushq $0
    pushq $0
    pushq $0x81
    jmp stub_common

stub_common:
    push_gprs
    cld
    cmpq $14, F_VECTOR(%rsp)
    jne 1f
    movq %cr2, %rax
    movq %rax, F_CR2(%rsp)
1:  // A vector the route table marks fast is dispatched here, by the
    // router's own code (stub_dispatch.cpp, in this code page); the others
    // go to the monitor, whose copy of the router dispatches them.
    movq F_VECTOR(%rsp), %rax
    shlq $5, %rax
    leaq DATA(DATA_ROUTER), %rbx
    cmpb $ROUTE_FAST, ROUTE_KIND(%rbx,%rax)
    jne slow_path
    movq %rbx, %rdi                    // the router
    leaq F_VECTOR(%rsp), %rsi          // the asreloc::trap_frame
    movq %rsp, %rbp
    andq $-16, %rsp
    callq stub_route_fast
    movq %rbp, %rsp
    testb %al, %al                     // trap_outcome::resume_guest
    jnz slow_path                      // reflect: the monitor decides
    jmp stub_restore

slow_path:
    movq DATA(DATA_MONITOR_CR3), %rax
    movq %rax, %cr3
    movq %rsp, %rdi                   // the trap frame, on the stub stack
    testb $3, F_CS(%rsp)              // CS of the interrupted code
    jz 1f
    movq DATA(DATA_MONITOR_STACK), %rsp
1:  andq $-16, %rsp
    callq *DATA(DATA_MONITOR_ENTRY)
    ud2                               // the monitor never returns here

// rdi = the trap frame (at the stub's current placement); CR3 = monitor space.
stub_exit:
    movq %rdi, %rsp
    movq DATA(DATA_GUEST_CR3), %rax
    movq %rax, %cr3
stub_restore:
    pop_gprs
    addq $24, %rsp                    // vector, CR2, error code
    iretq


// In the kernel image (monitor space only): jump to the stub exit at its
// current placement with the frame there.
//   [[noreturn]] void stub_resume(guest_frame* frame, u64 stub_exit_address)
    .text
    .globl stub_resume
stub_resume:
    jmp *%rsi

    .section .note.GNU-stack, "", @progbits
