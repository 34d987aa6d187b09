.intel_syntax noprefix
.code64
# Frame on entry to both commons: [rsp]=vector [rsp+8]=error code (0 if none) [rsp+16]=RIP ...
irq_common:
    push rax
    push rdx
    mov rax, [rsp+16]
    and eax, 0xff
    movabs rdx, 0x3000
    lock inc qword ptr [rdx+rax*8]
    movabs rdx, 0xfee000b0
    xor eax, eax
    mov dword ptr [rdx], eax
    pop rdx
    pop rax
    add rsp, 16
    iretq
.balign 64
exc_common:
    movabs rdx, 0x3800
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
    movabs rdx, 0xfeb00040
    mov [rdx], rax
1:  hlt
    jmp 1b
.balign 64
halt_gate:
    push rax
    push rdx
    mov rax, rdi
    and eax, 0xff
    movabs rdx, 0x3000
    cmp [rdx+rax*8], rsi
    jne 2f
    sti
    hlt
2:  pop rdx
    pop rax
    iretq
