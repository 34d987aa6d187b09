#!/usr/bin/env python3
"""Writes the seed corpora (fuzz/corpus/TARGET/NAME) in each target's input format (see the doc
comment at the top of fuzz/fuzz_targets/TARGET.rs). Re-run after changing a format."""
import os
import struct

ROOT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "corpus")


def seed(target, name, data):
    os.makedirs(os.path.join(ROOT, target), exist_ok=True)
    with open(os.path.join(ROOT, target, name), "wb") as f:
        f.write(data if isinstance(data, bytes) else data.encode())


u8 = lambda v: struct.pack("<B", v & 0xFF)
i8 = lambda v: struct.pack("<b", v)
u16 = lambda v: struct.pack("<H", v)
u32 = lambda v: struct.pack("<I", v)
u64 = lambda v: struct.pack("<Q", v & (2**64 - 1))

# protocol_client: limit byte, then (flags, i64) records.
msg = lambda value, fd=False: u8(1 if fd else 0) + struct.pack("<q", value)
seed("protocol_client", "handshake-2-vectors", u8(3) + b"".join([
    msg(0), msg(2), msg(-1, True),
    msg(0, True), msg(0, True), msg(1, True), msg(1, True), msg(2, True), msg(2, True),
    msg(7, True), msg(1), msg(7), msg(0, True)]))
seed("protocol_client", "peers-before-shm", u8(0) + msg(0) + msg(5) + msg(1, True) + msg(1) + msg(-1, True))
seed("protocol_client", "bad-version", u8(0) + msg(1) + msg(0) + msg(-1, True))
seed("protocol_client", "surplus-and-invalid", u8(2) + msg(0) + msg(3) + msg(-1, True)
     + msg(4, True) + msg(4, True) + msg(-1, True) + msg(65536, True) + msg(3) + msg(9))

# server_peers: vectors, queue limit, then ops (0 connect, 1 turn, 2 read, 3 send, 4 close, 5 shutdown).
seed("server_peers", "three-peers-one-leaves", u8(2) + u8(7) + bytes([
    0, 1, 0, 1, 2, 0, 2, 1, 0, 1, 2, 2, 4, 1, 1, 2, 0, 2, 2]))
seed("server_peers", "talker-and-half-close", u8(1) + u8(0) + bytes([
    0, 0, 0, 1, 3, 1, 3]) + b"abc" + bytes([1, 5, 2, 1, 2, 0]))
seed("server_peers", "reader-overflows", u8(4) + u8(0) + bytes([0, 1] + [0, 1] * 6 + [2, 3]))

# pci_config: ops (0 ecam read, 1 ecam write, 2 conf1 address, 3 conf1 read, 4 conf1 write, 5 io write).
SIZE = {1: 0, 2: 1, 4: 3}
ecam = lambda slot, reg: u32((slot << 15) + reg)
def ecam_w(slot, reg, size, value):
    return u8(1) + ecam(slot, reg) + u8(SIZE[size]) + u64(value)
def ecam_r(slot, reg, size):
    return u8(0) + ecam(slot, reg) + u8(SIZE[size])
bar_sizing = b"".join(
    ecam_w(1, 0x10 + 4 * i, 4, 0xFFFFFFFF) + ecam_r(1, 0x10 + 4 * i, 4) + ecam_w(1, 0x10 + 4 * i, 4, 0)
    for i in range(6))
seed("pci_config", "bar-sizing-ecam", ecam_r(0, 0, 4) + ecam_r(1, 0, 4) + bar_sizing)
seed("pci_config", "enumerate-and-map-conf1", b"".join(
    u8(2) + u32(0x80000000 | slot << 11) + u8(3) + u8(0) + u8(SIZE[4]) for slot in range(4))
    + u8(2) + u32(0x80000810) + u8(4) + u8(0) + u8(SIZE[4]) + u64(0xC0000000)
    + u8(2) + u32(0x80000818) + u8(4) + u8(0) + u8(SIZE[4]) + u64(0)
    + u8(2) + u32(0x8000081C) + u8(4) + u8(0) + u8(SIZE[4]) + u64(0x10)
    + u8(2) + u32(0x80000804) + u8(4) + u8(0) + u8(SIZE[2]) + u64(0x6)
    + ecam_w(1, 0x40 + 2, 2, 0x8000) + ecam_r(1, 0x40, 4))
seed("pci_config", "move-bar-over-ecam", ecam_w(1, 0x10, 4, 0xB0000000) + ecam_r(1, 0, 4)
     + u8(2) + u32(0x80000810) + u8(4) + u8(0) + u8(SIZE[4]) + u64(0xC0000000))

# ivshmem_mmio: vectors byte, then ops (see the target).
def table_w(offset, value):
    return u8(3) + u16(offset) + u8(SIZE[4]) + u64(value)
seed("ivshmem_mmio", "msix-enable-unmask-ring", u8(3)
     + u8(4) + u16(0x8000)                                    # MSI-X on
     + table_w(0, 0xFEE00000) + table_w(8, 0x41) + table_w(12, 0)  # vector 0 unmasked
     + u8(5) + u8(0) + u8(5) + u8(1)                          # signal vectors 0 and 1
     + u8(2) + u16(0x800) + u8(7)                             # PBA read (8 bytes)
     + table_w(16 + 12, 0)                                    # unmask vector 1: delivered
     + u8(4) + u16(0xC000) + u8(5) + u8(0) + u8(4) + u16(0x8000)  # function mask round trip
     + u8(8) + u8(0) + u8(1) + u8(8) + u8(1) + u8(0) + u8(8) + u8(3) + u8(0))
seed("ivshmem_mmio", "registers", u8(0)
     + u8(1) + u8(0) + u8(SIZE[4]) + u64(0xFFFF) + u8(0) + u8(0) + u8(SIZE[2])
     + u8(1) + u8(4) + u8(SIZE[4]) + u64(5) + u8(0) + u8(4) + u8(SIZE[4]) + u8(0) + u8(8) + u8(7)
     + u8(1) + u8(0x0D) + u8(SIZE[1]) + u64(1) + u8(0) + u8(0xFF) + u8(SIZE[4]))
seed("ivshmem_mmio", "move-bars", u8(1) + u8(7) + u8(0x10) + u8(SIZE[4]) + u32(0xC0001000)
     + u8(7) + u8(0x04) + u8(SIZE[2]) + u32(0) + u8(7) + u8(0x04) + u8(SIZE[2]) + u32(2)
     + u8(0) + u8(8) + u8(SIZE[4]))

# memory_dispatch: ops (see the target); numbers are a selector byte + u16*16 or u64.
small = lambda v: u8(0) + u16(v // 16)
big = lambda v: u8(1) + u64(v)
mem = (u8(0) + small(0x1000)                                   # r0 RAM (0x1001 bytes)
       + u8(1) + small(0x100) + u8(0x08) + u8(0x0A)           # r1 I/O, valid 1..4, impl 4
       + u8(2) + small(0x10000)                                # r2 container
       + u8(5) + u8(2) + u8(0) + small(0) + i8(0)             # r0 in r2 at 0
       + u8(5) + u8(2) + u8(1) + small(0x800) + i8(1)         # r1 in r2 at 0x800, prio 1
       + u8(4) + u8(0) + small(0x100) + small(0x200)          # r3 alias of r0 at 0x100
       + u8(3) + small(0x40)                                   # r4 reservation
       + u8(5) + u8(255) + u8(2) + small(0x10000) + i8(0)     # r2 in root at 0x10000
       + u8(5) + u8(255) + u8(3) + small(0) + i8(0)           # r3 in root at 0
       + u8(5) + u8(255) + u8(4) + small(0x10800) + i8(2)     # r4 over r1
       + u8(11)
       + u8(13) + small(0x10000) + u8(7) + u64(0x1122334455667788)
       + u8(12) + small(0x0) + u8(15)
       + u8(12) + small(0x107F0) + u8(15)
       + u8(13) + small(0x10810) + u8(3) + u64(0xAABBCCDD)
       + u8(7) + u8(3) + big(0xFFFFFFFFFFFFFF00) + u8(11) + u8(12) + big(0xFFFFFFFFFFFFFFF8) + u8(15)
       + u8(8) + u8(2) + u8(0) + u8(12) + small(0x10000) + u8(3))
seed("memory_dispatch", "tree-with-alias-and-io", mem)

# Option parsers: text.
seed("server_options", "qemu-style", "-F\0-S\0/tmp/ivshmem_socket\0-l\x0016M\0-n\0002")
seed("server_options", "long-options", "-F\0--memfd\0--mode=0660\0--queue-limit\0100\0-l\x001.5G\0-v")
seed("server_options", "clustered", "-vFn4\0-M\0/name\0--unlink-shm\0-l\x000x100000")
seed("ivshmem_options", "doorbell", "doorbell,socket=/tmp/ivshmem_socket,vectors=2,ioeventfd=off")
seed("ivshmem_options", "plain-memfd", "plain,memfd,size=4M,mapping=trap")
seed("ivshmem_options", "legacy", "shm=hello,size=1")
seed("client_commands", "script", "peers; write 0 hello\\0\\;x\\x41; int all\nint 1 0\rread 0x10 16\nwait any 100; wait-peer 2 50; sleep 1; dump; help; quit")

# state_table_reader: 64 header bytes, then (id u16, 16 row bytes) records.
table_header = lambda peers, gen, seq=4: (b"IVST" + u32(1) + u64(seq) + u32(65536) + u32(16)
                                          + u32(peers) + u32(2) + u64(gen) + bytes(23)
                                          + u8(seq & 1))  # odd sequence kept if byte 63 is odd
row = lambda id, state, vectors, gen: u16(id) + u32(state) + u32(vectors) + u64(gen)
seed("state_table_reader", "empty", table_header(0, 1))
seed("state_table_reader", "three-peers", table_header(3, 9) + row(0, 1, 2, 3) + row(7, 1, 2, 9)
     + row(65535, 1, 1, 5) + row(8, 0, 0, 9))
seed("state_table_reader", "count-mismatch", table_header(2, 4) + row(1, 1, 2, 4))
seed("state_table_reader", "bad-state", table_header(1, 4) + row(1, 7, 2, 4))
seed("state_table_reader", "writing", table_header(1, 4, seq=5) + row(1, 1, 2, 4))

# server_handover_state: a whole blob (ivshmem-server/src/handover.rs, encode_blob/encode_body).
NO_FD = 0xFFFFFFFF
text = lambda s: u32(len(s)) + s
peer = (u16(4) + u64(1) + u8(1) + u32(1234) + u8(1) + u32(1000) + u64(5) + u32(2)
        + u32(2) + u32(3) + u32(4)                       # socket 2, vectors at fds 3, 4
        + u32(1) + u64(7) + u8(3) + u32(NO_FD) + u8(1))  # one queued message, 3 bytes sent
body = (u32(0) + u32(NO_FD) + u32(1) + u64(4 << 20) + text(b"memfd") + u32(2) + u8(1) + u16(5)
        + u64(1) + b"".join(u64(v) for v in [1, 5, 4, 0, 2, 0]) + u32(1) + peer + u32(1) + u16(3))
seed("server_handover_state", "one-peer",
     b"IVSHMSRV" + u32(1) + u32(NO_FD) + u32(5) + b"".join(u32(f) for f in [3, 4, 5, 6, 7]) + body)
seed("server_handover_state", "empty-body",
     b"IVSHMSRV" + u32(1) + u32(9) + u32(2) + u32(3) + u32(4)
     + u32(0) + u32(NO_FD) + u32(1) + u64(1 << 20) + text(b"") + u32(1) + u8(0) + u16(0) + u64(0)
     + bytes(48) + u32(0) + u32(0))

# server_control_requests: the bytes a control client sends.
for name, req in [("status", b"status\n"), ("status-text", b"status text\n"), ("empty", b""),
                  ("upgrade", b"upgrade\n"), ("unknown", b"reboot now\n"),
                  ("oversized", b"status" + b" " * 200 + b"\n"), ("not-utf8", b"st\xffatus\n")]:
    seed("server_control_requests", name, req)
