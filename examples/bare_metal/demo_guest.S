// The manager demo's guest: deprivileged (CPL 3) code that by design runs
// into every path of the method, and checks its memory as it goes. Copied to
// a user page of the guest space; position-independent.
// Entered with rdi = base of its data window, rsi = pages in the window,
// rdx = the stub's size in bytes.
// Hypercalls (int 0x81, slow path): rdi = 0 report (rsi = errors, rdx = the
// checksum of its memory), 1 ticks so far (-> rax), 2 phase marker (rsi),
// 3 where the stub is now (-> rax). A real guest would not know; this one is
// written to hit the stub on purpose.
// Memory accesses use only MOV forms mov_decoder.hpp decodes:
// mov %rax,(%rbx); movq $imm,8(%rbx); mov (%rbx),%rax; mov 8(%rbx),%rdx;
// mov %rbx,16(%rbx); mov 16(%rbx),%rax.
// Every 512-byte slot of the window holds: +0 the slot's address times
// PATTERN, +8 the constant TAG, +16 the slot's address; the rest stays zero.

#define PATTERN 0x1e3779b1
#define TAG 0x1234567
#define TICKS_FIRST 8              // phase 2 waits this long
#define HOP_WAIT_TICKS 4000        // phase 6 gives up after this long in any case
#define HOP_SETTLE_TICKS 64        // and ends this long after the stub's last hop (the
                                   // monitor settles after two cold 16-tick periods)

.macro HYPERCALL n
    movl $\n, %edi
    int $0x81
.endm
.macro PHASE n
    movl $\n, %esi
    movl $2, %edi
    int $0x81
.endm
.macro IN_WINDOW reg, bad           // jumps to \bad unless r12 <= \reg < r13
    cmpq %r12, \reg
    jb \bad
    cmpq %r13, \reg
    jae \bad
.endm

    .section .guest_text, "ax"
    .globl demo_guest_start, demo_guest_end
demo_guest_start:
    movq %rdi, %r12                  // window base
    shlq $12, %rsi
    leaq (%rdi,%rsi), %r13           // window end
    movq %rdx, %r15                  // stub bytes
    xorl %r14d, %r14d                // errors

    // 1) Fast path: int 0x80 answers rax + 1 from inside the stub.
    PHASE 1
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

    // 2) Timer ticks arrive (slow path) while the guest computes.
    PHASE 2
3:  HYPERCALL 1
    cmpq $TICKS_FIRST, %rax
    jb 3b

    // 3) Conflict: write where the stub sits. The stub must move out of the
    //    way (to a free range: the window is still mostly empty) and the
    //    retried write must land in the guest's own memory.
    PHASE 3
    HYPERCALL 3
    movq %rax, %rbx
    IN_WINDOW %rbx, 90f
    movq %rbx, %rax
    imulq $PATTERN, %rax, %rax
    movq %rax, (%rbx)
    HYPERCALL 3
    cmpq %rax, %rbx
    jne 4f
    incq %r14                        // the stub is still there
4:  movq (%rbx), %rax
    movq %rbx, %rdx
    imulq $PATTERN, %rdx, %rdx
    cmpq %rdx, %rax
    je 5f
    incq %r14

    // 4) Fill the whole window. The stub keeps sitting somewhere in it, so
    //    the fill runs into it again; once no free range of its size is
    //    left, it displaces a victim range of the guest's.
5:  PHASE 4
    movq %r12, %rbx
6:  movq %rbx, %rax
    imulq $PATTERN, %rax, %rax
    movq %rax, (%rbx)
    movq $TAG, 8(%rbx)
    addq $512, %rbx
    cmpq %r13, %rbx
    jb 6b

    // 5) Read everything back, write and read one more qword per slot: where
    //    the stub displaced the guest's pages, each access traps and is
    //    served from the shadow store.
    PHASE 5
    movq %r12, %rbx
7:  movq (%rbx), %rax
    movq %rbx, %rdx
    imulq $PATTERN, %rdx, %rdx
    cmpq %rdx, %rax
    je 8f
    incq %r14
8:  movq 8(%rbx), %rdx
    cmpq $TAG, %rdx
    je 9f
    incq %r14
9:  movq %rbx, 16(%rbx)
    movq 16(%rbx), %rax
    cmpq %rbx, %rax
    je 10f
    incq %r14
10: addq $512, %rbx
    cmpq %r13, %rbx
    jb 7b

    // 6) Hops: the guest works hard on the range the stub displaced (every
    //    access traps), so that range is hot; the timer's ticks make the
    //    stub hop until it sits somewhere the guest rarely touches. The
    //    guest keeps working meanwhile and watches the stub leave; it stops
    //    HOP_SETTLE_TICKS after the last hop, so that a hop that lands on
    //    the hot range again (the victim is random) still leaves the stub
    //    the time to settle.
    PHASE 6
    HYPERCALL 3
    movq %rax, %rbp                  // the hot range [rbp, rbp + r15)
    movq %rax, %r11                  // where the stub was last seen
    IN_WINDOW %rbp, 90f
    HYPERCALL 1
    movq %rax, %r8                   // ticks at the start
    xorl %r9d, %r9d                  // the tick to stop at, once a hop was seen (0: none yet)
11: movq %rbp, %rbx
    leaq (%rbp,%r15), %r10
12: movq (%rbx), %rax
    movq %rax, (%rbx)
    addq $512, %rbx
    cmpq %r10, %rbx
    jb 12b
    HYPERCALL 3
    cmpq %rax, %r11
    je 13f
    movq %rax, %r11                  // a hop: work on until HOP_SETTLE_TICKS after it
    HYPERCALL 1
    leaq HOP_SETTLE_TICKS(%rax), %r9
    jmp 11b
13: HYPERCALL 1
    movq %rax, %rcx
    subq %r8, %rcx
    cmpq $HOP_WAIT_TICKS, %rcx
    jae 14f                          // out of time
    testq %r9, %r9
    jz 11b                           // no hop yet
    cmpq %r9, %rax
    jb 11b                           // the last hop is recent
    jmp 15f
14: testq %r9, %r9
    jnz 15f
    incq %r14                        // the stub never left the hot range

    // 7) Checksum all of its memory, every qword of the window, against
    //    what it wrote (zero where it wrote nothing).
15: PHASE 7
    xorl %r8d, %r8d                  // sum read
    xorl %r9d, %r9d                  // sum expected
    movq %r12, %rbx
16: movq (%rbx), %rax
    addq %rax, %r8
    movq %rbx, %rcx
    andl $511, %ecx
    xorl %edx, %edx
    cmpl $0, %ecx
    jne 17f
    movq %rbx, %rdx
    imulq $PATTERN, %rdx, %rdx
    jmp 19f
17: cmpl $8, %ecx
    jne 18f
    movl $TAG, %edx
    jmp 19f
18: cmpl $16, %ecx
    jne 19f
    leaq -16(%rbx), %rdx
19: addq %rdx, %r9
    cmpq %rdx, %rax
    je 20f
    incq %r14
20: addq $8, %rbx
    cmpq %r13, %rbx
    jb 16b
    cmpq %r9, %r8
    je 91f
    incq %r14
    jmp 91f

90: incq %r14                        // the stub was not inside the window
    xorl %r8d, %r8d

    // Report and wait to be stopped.
91: xorl %edi, %edi
    movq %r14, %rsi
    movq %r8, %rdx
    int $0x81
92: pause
    jmp 92b
demo_guest_end:

    .section .note.GNU-stack, "", @progbits
