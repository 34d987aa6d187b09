.intel_syntax noprefix
.code64
# Absolute addresses are symbols with no value here: the VMM fills them in from its layout
# (stubs.rs, ADDRESSES), and its test assembles this file with `--defsym SYMBOL=VALUE` for each.
# Frame on entry to both commons: [rsp]=vector [rsp+8]=error code (0 if none) [rsp+16]=RIP ...
irq_common:
    push rax
    push rdx
    mov rax, [rsp+16]
    and eax, 0xff
    movabs rdx, offset MAILBOX_COUNTERS
    lock inc qword ptr [rdx+rax*8]
    movabs rdx, offset LAPIC_EOI
    xor eax, eax
    mov dword ptr [rdx], eax
    pop rdx
    pop rax
    add rsp, 16
    iretq
.balign 64
exc_common:
    movabs rdx, offset MAILBOX_CRASH
    mov rax, [rsp]
    mov [rdx], rax
    mov rax, [rsp+8]
    mov [rdx+8], rax
    mov rax, [rsp+16]
    mov [rdx+16], rax
    mov rax, [rsp+24]
    mov [rdx+24], rax
    mov rax, [rsp+32]
    mov [rdx+32], rax
    mov rax, [rsp+40]
    mov [rdx+40], rax
    mov rax, [rsp+48]
    mov [rdx+48], rax
    mov rax, cr2
    mov [rdx+56], rax
    mov rax, [rsp]
    movabs rdx, offset TESTDEV_CRASH
    mov [rdx], rax
1:  hlt
    jmp 1b
.balign 64
# #GP (vector 13): [rsp] = error code, [rsp+8] = RIP, [rsp+16] = CS. A `hlt` executed in ring 3
# is the "halt until interrupt" gate: if counter[rdi & 0xff] == rsi then sti; hlt (atomic thanks
# to the sti shadow); resume after the hlt. Any other #GP is a crash (exc_common).
gp_entry:
    push rax
    push rdx
    mov rax, [rsp+24]
    test byte ptr [rsp+32], 3
    jz 4f
    cmp byte ptr [rax], 0xf4
    jne 4f
    inc qword ptr [rsp+24]
    mov rax, rdi
    and eax, 0xff
    movabs rdx, offset MAILBOX_COUNTERS
    cmp [rdx+rax*8], rsi
    jne 5f
    sti
    hlt
5:  pop rdx
    pop rax
    add rsp, 8
    iretq
4:  pop rdx
    pop rax
    push 13
    jmp exc_common
