// The demo guest: deprivileged (CPL 3) code that believes it owns its address
// space. Copied to a user page of the guest space; position-independent.
// Entered with rdi = base of its data window, rsi = pages in the window.
// Hypercalls (int 0x81, slow path): rdi = 0 report (rsi = errors, rdx = sum),
// rdi = 1 ticks seen so far (answer in rax), rdi = 2 phase marker (rsi).
// The memory accesses use only the MOV forms mov_decoder.hpp decodes:
// mov %rax,(%rbx); movq $imm,8(%rbx); mov (%rbx),%rax; mov 8(%rbx),%rdx;
// mov %rbx,16(%rbx); mov 16(%rbx),%rax.

#define TICKS_WANTED 8
#define QWORDS_PER_PAGE 8          // one every 512 bytes

    .section .guest_text, "ax"
    .globl guest_code_start, guest_code_end
guest_code_start:
    movq %rdi, %r12                  // window base
    movq %rsi, %r13                  // pages

    // 1) The fast path: int 0x80 answers rax + 1 from inside the stub.
    movl $2, %edi
    movl $1, %esi
    int $0x81
    xorl %r14d, %r14d                // errors
    xorl %ebx, %ebx
1:  movq %rbx, %rax
    int $0x80
    leaq 1(%rbx), %rcx
    cmpq %rcx, %rax
    je 2f
    incq %r14
2:  incq %rbx
    cmpq $16, %rbx
    jb 1b

    // 2) Timer ticks arrive as slow-path traps while the guest computes.
    movl $2, %edi
    movl $2, %esi
    int $0x81
3:  movl $1, %edi
    int $0x81
    cmpq $TICKS_WANTED, %rax
    jb 3b

    // 3) Fill the window: every page, QWORDS_PER_PAGE qwords each, with a
    //    value derived from the address (mov %rax,(%rbx) and movq $imm,8(%rbx)).
    movl $2, %edi
    movl $3, %esi
    int $0x81
    xorl %r15d, %r15d                // running sum of what was written
    movq %r12, %rbx
    movq %r13, %rcx
    shlq $12, %rcx
    addq %r12, %rcx                  // end of the window
4:  movq %rbx, %rax
    imulq $0x1e3779b1, %rax, %rax
    movq %rax, (%rbx)
    addq %rax, %r15
    movq $0x1234567, 8(%rbx)
    addq $0x1234567, %r15
    addq $512, %rbx
    cmpq %rcx, %rbx
    jb 4b

    // 4) Read everything back and check it (mov (%rbx),%rax; mov 8(%rbx),%rdx),
    //    then write and read one more qword per slot.
    movl $2, %edi
    movl $4, %esi
    int $0x81
    xorl %r8d, %r8d                  // sum read back
    movq %r12, %rbx
5:  movq (%rbx), %rax
    movq %rbx, %rdx
    imulq $0x1e3779b1, %rdx, %rdx
    cmpq %rdx, %rax
    je 6f
    incq %r14
6:  addq %rax, %r8
    movq 8(%rbx), %rdx
    cmpq $0x1234567, %rdx
    je 7f
    incq %r14
7:  addq %rdx, %r8
    movq %rbx, 16(%rbx)              // a write and its read-back (mov %rbx,16(%rbx); mov 16(%rbx),%rax)
    movq 16(%rbx), %rax
    cmpq %rbx, %rax
    je 10f
    incq %r14
10: addq $512, %rbx
    cmpq %rcx, %rbx
    jb 5b
    cmpq %r15, %r8
    je 8f
    incq %r14

    // 5) Report and wait to be stopped.
8:  xorl %edi, %edi
    movq %r14, %rsi
    movq %r8, %rdx
    int $0x81
9:  jmp 9b
guest_code_end:

    .section .note.GNU-stack, "", @progbits
