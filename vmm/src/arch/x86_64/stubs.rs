//! Ring-0 code for guest programs, written by the VMM into guest memory at `STUBS_ADDR`.
//!
//! Ring 0 is emulated on this project's KVM (docs/environment.md), so this code uses only plain
//! moves, stack operations, a locked increment, `hlt`, `sti` and `iretq` — no SSE, no xsave, no
//! int3. It is hand-assembled: the source is `stubs.S` next to this file (GNU as, Intel syntax),
//! and `COMMON` below is its `objdump -d` output byte for byte, except the absolute addresses:
//! the source names them (`MAILBOX_COUNTERS`, `LAPIC_EOI`, `MAILBOX_CRASH`, `TESTDEV_CRASH`) and
//! [`ADDRESSES`] fills them in from `layout`, so no address is written twice. The
//! `assembles_to_the_same_bytes` test re-assembles the source with those symbols defined from
//! the layout and compares when `as` is installed.
//!
//! Per-vector entry stubs (16 bytes each, generated here) make every frame look alike —
//! `[rsp]` = vector, `[rsp+8]` = error code (0 pushed for vectors without one), then the CPU's
//! interrupt frame — and jump to:
//! - `irq_common` (vectors 32..255): `lock inc` the vector's mailbox counter, LAPIC EOI, iretq;
//! - `exc_common` (vectors 0..31): write the crash record to the mailbox, write the vector to the
//!   testdev CRASH register (the VMM ends the VM and reports), halt;
//!
//! and vector 13 (#GP) goes to `gp_entry`, which is also the "halt until interrupt" gate: a `hlt`
//! executed in ring 3 faults with #GP; if the faulting instruction is `hlt` and came from ring 3,
//! then — interrupts still off — if the counter of vector `rdi` equals `rsi` it does `sti; hlt`
//! (atomic: the sti shadow), and resumes ring 3 after the `hlt`; any other #GP is a crash.
//! Measured on this project's KVM: `int n` from ring 3 raises #UD and `syscall` reaches LSTAR
//! without leaving ring 3, so neither can be the gate; exceptions do reach ring 0.
use super::layout::*;

const IRQ_COMMON_OFFSET: u64 = 0x00;
const EXC_COMMON_OFFSET: u64 = 0x40;
const GP_ENTRY_OFFSET: u64 = 0xC0;
const ENTRIES_OFFSET: u64 = 0x400;
const ENTRY_SIZE: u64 = 16;

/// Address of the #GP handler (and ring-3 `hlt` gate).
pub const GP_ENTRY_ADDR: u64 = STUBS_ADDR + GP_ENTRY_OFFSET;

/// `stubs.S`, assembled, with the absolute addresses left zero: [`common`] fills them in from
/// [`ADDRESSES`], so the layout constants are their only source.
#[rustfmt::skip]
const COMMON: &[u8] = &[
    // irq_common:
    0x50, // 0x00: push rax
    0x52, // 0x01: push rdx
    0x48, 0x8b, 0x44, 0x24, 0x10, // 0x02: mov rax,QWORD PTR [rsp+0x10]
    0x25, 0xff, 0x00, 0x00, 0x00, // 0x07: and eax,0xff
    0x48, 0xba, 0, 0, 0, 0, 0, 0, 0, 0, // 0x0c: movabs rdx,MAILBOX_COUNTERS
    0xf0, 0x48, 0xff, 0x04, 0xc2, // 0x16: lock inc QWORD PTR [rdx+rax*8]
    0x48, 0xba, 0, 0, 0, 0, 0, 0, 0, 0, // 0x1b: movabs rdx,LAPIC_EOI
    0x31, 0xc0, // 0x25: xor eax,eax
    0x89, 0x02, // 0x27: mov DWORD PTR [rdx],eax
    0x5a, // 0x29: pop rdx
    0x58, // 0x2a: pop rax
    0x48, 0x83, 0xc4, 0x10, // 0x2b: add rsp,0x10
    0x48, 0xcf, // 0x2f: iretq
    0x66, 0x66, 0x2e, 0x0f, 0x1f, 0x84, 0x00, 0x00, 0x00, 0x00, 0x00, // 0x31: (padding)
    0x0f, 0x1f, 0x40, 0x00, // 0x3c: (padding)
    // exc_common:
    0x48, 0xba, 0, 0, 0, 0, 0, 0, 0, 0, // 0x40: movabs rdx,MAILBOX_CRASH
    0x48, 0x8b, 0x04, 0x24, // 0x4a: mov rax,QWORD PTR [rsp]
    0x48, 0x89, 0x02, // 0x4e: mov QWORD PTR [rdx],rax
    0x48, 0x8b, 0x44, 0x24, 0x08, // 0x51: mov rax,QWORD PTR [rsp+0x8]
    0x48, 0x89, 0x42, 0x08, // 0x56: mov QWORD PTR [rdx+0x8],rax
    0x48, 0x8b, 0x44, 0x24, 0x10, // 0x5a: mov rax,QWORD PTR [rsp+0x10]
    0x48, 0x89, 0x42, 0x10, // 0x5f: mov QWORD PTR [rdx+0x10],rax
    0x48, 0x8b, 0x44, 0x24, 0x18, // 0x63: mov rax,QWORD PTR [rsp+0x18]
    0x48, 0x89, 0x42, 0x18, // 0x68: mov QWORD PTR [rdx+0x18],rax
    0x48, 0x8b, 0x44, 0x24, 0x20, // 0x6c: mov rax,QWORD PTR [rsp+0x20]
    0x48, 0x89, 0x42, 0x20, // 0x71: mov QWORD PTR [rdx+0x20],rax
    0x48, 0x8b, 0x44, 0x24, 0x28, // 0x75: mov rax,QWORD PTR [rsp+0x28]
    0x48, 0x89, 0x42, 0x28, // 0x7a: mov QWORD PTR [rdx+0x28],rax
    0x48, 0x8b, 0x44, 0x24, 0x30, // 0x7e: mov rax,QWORD PTR [rsp+0x30]
    0x48, 0x89, 0x42, 0x30, // 0x83: mov QWORD PTR [rdx+0x30],rax
    0x0f, 0x20, 0xd0, // 0x87: mov rax,cr2
    0x48, 0x89, 0x42, 0x38, // 0x8a: mov QWORD PTR [rdx+0x38],rax
    0x48, 0x8b, 0x04, 0x24, // 0x8e: mov rax,QWORD PTR [rsp]
    0x48, 0xba, 0, 0, 0, 0, 0, 0, 0, 0, // 0x92: movabs rdx,TESTDEV_CRASH
    0x48, 0x89, 0x02, // 0x9c: mov QWORD PTR [rdx],rax
    0xf4, // 0x9f: hlt
    0xeb, 0xfd, // 0xa0: jmp 9f <exc_common+0x5f>
    0x66, 0x66, 0x2e, 0x0f, 0x1f, 0x84, 0x00, 0x00, 0x00, 0x00, 0x00, // 0xa2: (padding)
    0x66, 0x66, 0x2e, 0x0f, 0x1f, 0x84, 0x00, 0x00, 0x00, 0x00, 0x00, // 0xad: (padding)
    0x0f, 0x1f, 0x84, 0x00, 0x00, 0x00, 0x00, 0x00, // 0xb8: (padding)
    // gp_entry:
    0x50, // 0xc0: push rax
    0x52, // 0xc1: push rdx
    0x48, 0x8b, 0x44, 0x24, 0x18, // 0xc2: mov rax,QWORD PTR [rsp+0x18]
    0xf6, 0x44, 0x24, 0x20, 0x03, // 0xc7: test BYTE PTR [rsp+0x20],0x3
    0x74, 0x2c, // 0xcc: je fa <gp_entry+0x3a>
    0x80, 0x38, 0xf4, // 0xce: cmp BYTE PTR [rax],0xf4
    0x75, 0x27, // 0xd1: jne fa <gp_entry+0x3a>
    0x48, 0xff, 0x44, 0x24, 0x18, // 0xd3: inc QWORD PTR [rsp+0x18]
    0x48, 0x89, 0xf8, // 0xd8: mov rax,rdi
    0x25, 0xff, 0x00, 0x00, 0x00, // 0xdb: and eax,0xff
    0x48, 0xba, 0, 0, 0, 0, 0, 0, 0, 0, // 0xe0: movabs rdx,MAILBOX_COUNTERS
    0x48, 0x39, 0x34, 0xc2, // 0xea: cmp QWORD PTR [rdx+rax*8],rsi
    0x75, 0x02, // 0xee: jne f2 <gp_entry+0x32>
    0xfb, // 0xf0: sti
    0xf4, // 0xf1: hlt
    0x5a, // 0xf2: pop rdx
    0x58, // 0xf3: pop rax
    0x48, 0x83, 0xc4, 0x08, // 0xf4: add rsp,0x8
    0x48, 0xcf, // 0xf8: iretq
    0x5a, // 0xfa: pop rdx
    0x58, // 0xfb: pop rax
    0x6a, 0x0d, // 0xfc: push 0xd
    0xe9, 0x3d, 0xff, 0xff, 0xff, // 0xfe: jmp 40 <exc_common>
];

/// The LAPIC's end-of-interrupt register.
const LAPIC_EOI: u64 = LAPIC_ADDR + 0xB0;

/// The addresses the stubs use, as (symbol in stubs.S, offset in COMMON of the 8-byte immediate
/// of the `movabs` that loads it, value from the layout). The test assembles stubs.S with each
/// symbol defined to its value and compares with [`common`].
const ADDRESSES: [(&str, usize, u64); 5] = [
    ("MAILBOX_COUNTERS", 0x0e, MAILBOX_COUNTERS),
    ("LAPIC_EOI", 0x1d, LAPIC_EOI),
    ("MAILBOX_CRASH", 0x42, MAILBOX_CRASH),
    ("TESTDEV_CRASH", 0x94, TESTDEV_ADDR + testdev::CRASH),
    ("MAILBOX_COUNTERS", 0xe2, MAILBOX_COUNTERS),
];

/// COMMON with the layout's addresses in place.
fn common() -> Vec<u8> {
    let mut code = COMMON.to_vec();
    for (_, at, value) in ADDRESSES {
        code[at..at + 8].copy_from_slice(&value.to_le_bytes());
    }
    code
}

/// Exceptions for which the CPU pushes an error code.
fn has_error_code(vector: u8) -> bool {
    matches!(vector, 8 | 10..=14 | 17 | 21 | 29 | 30)
}

/// Address of `vector`'s IDT handler.
pub fn handler_addr(vector: u8) -> u64 {
    if vector == 13 {
        GP_ENTRY_ADDR
    } else {
        entry_addr(vector)
    }
}

/// Address of `vector`'s generic entry stub.
pub fn entry_addr(vector: u8) -> u64 {
    STUBS_ADDR + ENTRIES_OFFSET + vector as u64 * ENTRY_SIZE
}

/// The whole stub area (`STUBS_SIZE` bytes) as it goes into guest memory at `STUBS_ADDR`.
pub fn image() -> Vec<u8> {
    let mut image = vec![0xF4u8; STUBS_SIZE as usize]; // hlt everywhere else
    image[..COMMON.len()].copy_from_slice(&common());
    for vector in 0..=255u8 {
        let at = entry_addr(vector);
        let mut code = Vec::with_capacity(ENTRY_SIZE as usize);
        if !has_error_code(vector) {
            code.extend_from_slice(&[0x6A, 0x00]); // push 0
        }
        code.push(0x68); // push imm32
        code.extend_from_slice(&(vector as u32).to_le_bytes());
        let target = STUBS_ADDR
            + if vector < VECTOR_FIRST_IRQ {
                EXC_COMMON_OFFSET
            } else {
                IRQ_COMMON_OFFSET
            };
        let next = at + code.len() as u64 + 5;
        code.push(0xE9); // jmp rel32
        code.extend_from_slice(&((target as i64 - next as i64) as i32).to_le_bytes());
        let off = (at - STUBS_ADDR) as usize;
        image[off..off + code.len()].copy_from_slice(&code);
    }
    image
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn entries_jump_to_their_common_code() {
        let image = image();
        for vector in [0u8, 14, 32, 0x40, 255] {
            let off = (entry_addr(vector) - STUBS_ADDR) as usize;
            let skip = if has_error_code(vector) { 0 } else { 2 };
            assert_eq!(image[off + skip], 0x68);
            assert_eq!(image[off + skip + 1], vector);
            let jmp = off + skip + 5;
            assert_eq!(image[jmp], 0xE9);
            let rel = i32::from_le_bytes(image[jmp + 1..jmp + 5].try_into().unwrap());
            let target = (STUBS_ADDR as i64 + jmp as i64 + 5 + rel as i64) as u64;
            let want = if vector < 32 {
                EXC_COMMON_OFFSET
            } else {
                IRQ_COMMON_OFFSET
            };
            assert_eq!(target, STUBS_ADDR + want, "vector {vector}");
        }
        assert_eq!(image[GP_ENTRY_OFFSET as usize], 0x50);
        assert_eq!(image[EXC_COMMON_OFFSET as usize], 0x48);
    }

    /// Every patched immediate belongs to a `movabs rdx, imm64` (48 BA) and receives the layout's
    /// value; checked without an assembler.
    #[test]
    fn addresses_land_in_movabs_immediates() {
        let image = image();
        for (symbol, at, value) in ADDRESSES {
            assert_eq!(&COMMON[at - 2..at], &[0x48, 0xBA], "{symbol} at {at:#x}");
            assert_eq!(
                &COMMON[at..at + 8],
                &[0; 8],
                "{symbol}: COMMON leaves it zero"
            );
            let placed = u64::from_le_bytes(image[at..at + 8].try_into().unwrap());
            assert_eq!(placed, value, "{symbol}");
        }
        let crash_store = ADDRESSES.iter().find(|a| a.0 == "TESTDEV_CRASH").unwrap();
        assert_eq!(crash_store.2, TESTDEV_ADDR + testdev::CRASH);
    }

    /// Re-assembles stubs.S with its address symbols defined from the layout and compares it
    /// with [`common`] (skipped without GNU as/objcopy).
    #[test]
    fn assembles_to_the_same_bytes() {
        let dir = std::env::temp_dir().join(format!("vmm-stubs-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let obj = dir.join("stubs.o");
        let bin = dir.join("stubs.bin");
        let src = concat!(env!("CARGO_MANIFEST_DIR"), "/src/arch/x86_64/stubs.S");
        let mut assemble = std::process::Command::new("as");
        assemble.arg("--64");
        for (symbol, _, value) in ADDRESSES {
            assemble.arg("--defsym").arg(format!("{symbol}={value:#x}"));
        }
        let assembled = assemble
            .args([src, "-o"])
            .arg(&obj)
            .status()
            .map(|s| s.success())
            .unwrap_or(false)
            && std::process::Command::new("objcopy")
                .args(["-O", "binary", "-j", ".text"])
                .arg(&obj)
                .arg(&bin)
                .status()
                .map(|s| s.success())
                .unwrap_or(false);
        if !assembled {
            eprintln!("SKIP: GNU as/objcopy not available");
            return;
        }
        let bytes = std::fs::read(&bin).unwrap();
        let _ = std::fs::remove_dir_all(&dir);
        assert_eq!(bytes, common());
    }
}
