//! Instructions this project's KVM cannot emulate, completed by the VMM.
//!
//! Guest ring 0 is emulated on this project's nested KVM (docs/environment.md), and the emulator gives
//! up on a few instructions a Linux kernel executes while booting (`KVM_EXIT_INTERNAL_ERROR`).
//! For those listed in [`complete`] the VMM does what the CPU would and the guest goes on; on
//! hardware KVM this code never runs.
use kvm_ioctls::VcpuFd;

use crate::memory::AddressSpace;

/// This project's KVM emulates guest ring 0, and its emulator gives up on a few instructions
/// Linux executes while booting. For two of them the VMM does what the CPU would:
/// - `int3` (0xCC): deliver #BP, a trap (the saved RIP is the next instruction);
/// - `fwait` (0x9B): nothing to wait for unless CR0.TS and CR0.MP are set (#NM) — we never
///   leave x87 exceptions pending (FPU state is only set by the VMM), so skip it;
/// - `ldmxcsr m32` / `stmxcsr m32` (0F AE /2, /3): move MXCSR through KVM_GET/SET_FPU.
///
/// Returns whether the guest can go on.
pub fn complete(fd: &VcpuFd, memory: &AddressSpace) -> bool {
    const CR0_MP: u64 = 1 << 1;
    const CR0_TS: u64 = 1 << 3;
    let (Ok(mut regs), Ok(sregs), Ok(mut events)) =
        (fd.get_regs(), fd.get_sregs(), fd.get_vcpu_events())
    else {
        return false;
    };
    let Some(pa) = translate(memory, PageTables::of(&sregs), regs.rip) else {
        return false;
    };
    let mut opcode = [0u8; 1];
    memory.read(pa, &mut opcode);
    match opcode[0] {
        0xCC if events.exception.injected == 0 => {
            regs.rip += 1;
            events.exception.injected = 1;
            events.exception.nr = 3;
            events.exception.has_error_code = 0;
            events.exception.error_code = 0;
            log::debug!("injecting #BP for int3 at {:#x}", regs.rip - 1);
            fd.set_regs(&regs).is_ok() && fd.set_vcpu_events(&events).is_ok()
        }
        0x9B if sregs.cr0 & (CR0_MP | CR0_TS) != (CR0_MP | CR0_TS) => {
            regs.rip += 1;
            fd.set_regs(&regs).is_ok()
        }
        _ => {
            let mut code = [0u8; 15];
            memory.read(pa, &mut code);
            complete_mxcsr(fd, memory, &mut regs, PageTables::of(&sregs), &code)
        }
    }
}

/// `[REX] 0F AE /2` (ldmxcsr m32) and `/3` (stmxcsr m32) with a memory operand; no other
/// prefixes. Returns false for anything else.
fn complete_mxcsr(
    fd: &VcpuFd,
    memory: &AddressSpace,
    regs: &mut kvm_bindings::kvm_regs,
    tables: PageTables,
    code: &[u8; 15],
) -> bool {
    let (rex, rest) = match code[0] {
        rex @ 0x40..=0x4F => (rex, &code[1..]),
        _ => (0, &code[..]),
    };
    if rest[0] != 0x0F || rest[1] != 0xAE {
        return false;
    }
    let modrm = rest[2];
    let (mode, reg, rm) = (modrm >> 6, (modrm >> 3) & 7, modrm & 7);
    if mode == 3 || !(reg == 2 || reg == 3) {
        return false;
    }
    let gpr = |n: u8| -> u64 {
        [
            regs.rax, regs.rcx, regs.rdx, regs.rbx, regs.rsp, regs.rbp, regs.rsi, regs.rdi,
            regs.r8, regs.r9, regs.r10, regs.r11, regs.r12, regs.r13, regs.r14, regs.r15,
        ][n as usize & 15]
    };
    let (rex_b, rex_x) = ((rex & 1) << 3, ((rex >> 1) & 1) << 3);
    let mut len = (code.len() - rest.len()) + 3; // [rex] 0F AE modrm
    let mut rip_relative = false;
    let mut addr = if rm == 4 {
        let sib = rest[3];
        len += 1;
        let (scale, index, base) = (sib >> 6, ((sib >> 3) & 7) | rex_x, (sib & 7) | rex_b);
        let index_value = if index == 4 { 0 } else { gpr(index) << scale };
        if base & 7 == 5 && mode == 0 {
            let disp = i32::from_le_bytes(rest[4..8].try_into().unwrap());
            len += 4;
            index_value.wrapping_add(disp as i64 as u64)
        } else {
            index_value.wrapping_add(gpr(base))
        }
    } else if rm == 5 && mode == 0 {
        rip_relative = true;
        0
    } else {
        gpr(rm | rex_b)
    };
    let disp_at = len - (code.len() - rest.len());
    match mode {
        0 if rip_relative => {
            let disp = i32::from_le_bytes(rest[disp_at..disp_at + 4].try_into().unwrap());
            len += 4;
            addr = (regs.rip + len as u64).wrapping_add(disp as i64 as u64);
        }
        1 => {
            addr = addr.wrapping_add(rest[disp_at] as i8 as i64 as u64);
            len += 1;
        }
        2 => {
            let disp = i32::from_le_bytes(rest[disp_at..disp_at + 4].try_into().unwrap());
            addr = addr.wrapping_add(disp as i64 as u64);
            len += 4;
        }
        _ => {}
    }
    let Some(pa) = translate(memory, tables, addr) else {
        return false;
    };
    let Ok(mut fpu) = fd.get_fpu() else {
        return false;
    };
    if reg == 2 {
        let mut value = [0u8; 4];
        memory.read(pa, &mut value);
        fpu.mxcsr = u32::from_le_bytes(value);
        if fd.set_fpu(&fpu).is_err() {
            return false;
        }
    } else {
        memory.write(pa, &fpu.mxcsr.to_le_bytes());
    }
    regs.rip += len as u64;
    fd.set_regs(regs).is_ok()
}

/// A vCPU's page-table root and depth: 5 levels when the guest turned on LA57 (Linux does
/// wherever the CPU offers it, as L1 KVM on the nested bed does).
#[derive(Clone, Copy, Debug)]
pub struct PageTables {
    root: u64,
    levels: u32,
}

impl PageTables {
    /// 4-level tables at `cr3` (our guest programs' paging).
    pub fn four_level(cr3: u64) -> PageTables {
        PageTables {
            root: cr3,
            levels: 4,
        }
    }

    /// The tables a vCPU is using.
    pub fn of(sregs: &kvm_bindings::kvm_sregs) -> PageTables {
        const CR4_LA57: u64 = 1 << 12;
        PageTables {
            root: sregs.cr3,
            levels: if sregs.cr4 & CR4_LA57 != 0 { 5 } else { 4 },
        }
    }
}

/// Guest-virtual to guest-physical through the guest's page tables (for diagnostics and the
/// instructions above).
pub fn translate(memory: &AddressSpace, tables: PageTables, va: u64) -> Option<u64> {
    const ADDR: u64 = 0x000F_FFFF_FFFF_F000;
    let mut table = tables.root & ADDR;
    for level in (1..=tables.levels).rev() {
        let shift = 12 + 9 * (level - 1);
        let mut entry = [0u8; 8];
        memory.read(table + ((va >> shift) & 511) * 8, &mut entry);
        let entry = u64::from_le_bytes(entry);
        if entry & 1 == 0 {
            return None;
        }
        let page_size = 1u64 << shift;
        if level == 1 || ((level == 2 || level == 3) && entry & 0x80 != 0) {
            return Some((entry & ADDR & !(page_size - 1)) | (va & (page_size - 1)));
        }
        table = entry & ADDR;
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::arch::x86_64::{layout, paging};
    use crate::memory::{MemoryRegion, SpaceKind};

    #[test]
    fn translate_walks_the_guest_program_page_tables() {
        let ram_size = 16 << 20;
        let root = MemoryRegion::container("system", u64::MAX);
        let ram = MemoryRegion::ram("ram", ram_size).unwrap();
        root.add_subregion(0, &ram, 0);
        let space = AddressSpace::new("memory", root, SpaceKind::Memory);
        space.commit();
        for (addr, table) in paging::tables(ram_size) {
            let bytes: Vec<u8> = table.iter().flat_map(|w| w.to_le_bytes()).collect();
            space.write(addr, &bytes);
        }
        let cr3 = PageTables::four_level(paging::PML4_ADDR);
        assert_eq!(translate(&space, cr3, 0x1234), Some(0x1234)); // 4 KiB page
        assert_eq!(translate(&space, cr3, 0x40_0123), Some(0x40_0123)); // 2 MiB page
        assert_eq!(
            translate(&space, cr3, layout::LAPIC_ADDR + 0xB0),
            Some(0xFEE0_00B0)
        );
        assert_eq!(translate(&space, cr3, 0), None); // page 0 not present
        assert_eq!(translate(&space, cr3, ram_size + 0x1000), None);

        // The same tables under a 5-level root (LA57): its entry 0 holds the PML4.
        let pml5 = ram_size - 0x1000;
        space.write(pml5, &(paging::PML4_ADDR | 3).to_le_bytes());
        let sregs = kvm_bindings::kvm_sregs {
            cr3: pml5,
            cr4: 1 << 12,
            ..Default::default()
        };
        let five = PageTables::of(&sregs);
        assert_eq!(translate(&space, five, 0x40_0123), Some(0x40_0123));
        assert_eq!(translate(&space, five, 1 << 48), None); // PML5 entry 1 not present
    }
}
