//! Guest programs: a static x86-64 ELF entered directly in ring 3 of 64-bit mode.
//!
//! `load` puts the VMM's part of the guest (GDT, IDT, TSSes, ring-0 stubs, page tables, an empty
//! interrupt mailbox) below `PROGRAM_MIN_ADDR` and the ELF's PT_LOAD segments at their physical
//! addresses (linux-loader's ELF loader); `setup_vcpu` puts each vCPU at the ELF entry in ring 3
//! with IF=1, IOPL=3 (dropped by this project's KVM; the TSS I/O bitmap allows port I/O anyway), its own stack and `rdi` = cpu id, `rsi` = cpu count, `rdx` = RAM size.
use std::io::Cursor;

use kvm_ioctls::{Kvm, VcpuFd};
use linux_loader::loader::{elf::Elf, KernelLoader};
use vm_memory::{Bytes, GuestAddress, GuestMemoryMmap};

use super::{kvm_err, BootError};
use crate::arch::x86_64::layout::*;
use crate::arch::x86_64::{cpu, descriptors, paging, stubs};
use crate::vm::Vm;

/// A loaded guest program.
#[derive(Clone, Copy, Debug)]
pub struct GuestProgram {
    /// Where the vCPUs start (the ELF entry point).
    pub entry: u64,
    /// One past the highest byte the program's segments occupy.
    pub image_end: u64,
}

/// Top of `cpu`'s ring-3 stack (the stacks sit at the top of RAM, vCPU 0 highest).
pub fn user_stack_top(ram_size: u64, cpu: u32) -> u64 {
    (ram_size - cpu as u64 * USER_STACK_SIZE) & !0xF
}

fn write(mem: &GuestMemoryMmap, addr: u64, bytes: &[u8]) -> Result<(), BootError> {
    mem.write_slice(bytes, GuestAddress(addr))
        .map_err(|_| BootError::OutOfRam {
            addr,
            len: bytes.len() as u64,
        })
}

fn words_to_bytes(words: &[u64]) -> Vec<u8> {
    words.iter().flat_map(|w| w.to_le_bytes()).collect()
}

/// PT_LOAD segments as (paddr, filesz, memsz), checked to fit between the VMM's area and the
/// stacks.
fn segments(image: &[u8], ram_size: u64, ncpus: u32) -> Result<Vec<(u64, u64, u64)>, BootError> {
    let bad = BootError::BadElf;
    let u16_at = |off: usize| -> Result<u16, BootError> {
        Ok(u16::from_le_bytes(
            image
                .get(off..off + 2)
                .ok_or_else(|| bad("truncated"))?
                .try_into()
                .unwrap(),
        ))
    };
    let u64_at = |off: usize| -> Result<u64, BootError> {
        Ok(u64::from_le_bytes(
            image
                .get(off..off + 8)
                .ok_or_else(|| bad("truncated"))?
                .try_into()
                .unwrap(),
        ))
    };
    if image.get(..4) != Some(b"\x7fELF") || image.get(4) != Some(&2) {
        return Err(bad("not a 64-bit ELF file"));
    }
    if u16_at(0x10)? != 2 {
        return Err(bad(
            "not a static executable (ET_EXEC); link with -static -no-pie",
        ));
    }
    let phoff = u64_at(0x20)? as usize;
    let phentsize = u16_at(0x36)? as usize;
    let phnum = u16_at(0x38)? as usize;
    let limit = user_stack_top(ram_size, ncpus.saturating_sub(1)) - USER_STACK_SIZE;
    let mut out = Vec::new();
    for i in 0..phnum {
        let ph = phoff
            .checked_add(i * phentsize)
            .ok_or_else(|| bad("program header offset"))?;
        let p_type = u32::from_le_bytes(
            image
                .get(ph..ph + 4)
                .ok_or_else(|| bad("truncated"))?
                .try_into()
                .unwrap(),
        );
        if p_type == 3 {
            return Err(bad("has an interpreter (PT_INTERP): link statically"));
        }
        if p_type != 1 {
            continue;
        }
        let (paddr, filesz, memsz) = (u64_at(ph + 24)?, u64_at(ph + 32)?, u64_at(ph + 40)?);
        let end = paddr
            .checked_add(memsz)
            .ok_or_else(|| bad("segment overflows"))?;
        if paddr < PROGRAM_MIN_ADDR || end > limit || filesz > memsz {
            return Err(BootError::SegmentOutsideProgramArea {
                start: paddr,
                end,
                area_end: limit,
            });
        }
        out.push((paddr, filesz, memsz));
    }
    if out.is_empty() {
        return Err(bad("no PT_LOAD segment"));
    }
    Ok(out)
}

/// Writes the VMM's tables and code, then the program. Guest RAM must start zeroed.
pub fn load(
    mem: &GuestMemoryMmap,
    image: &[u8],
    ram_size: u64,
    ncpus: u32,
) -> Result<GuestProgram, BootError> {
    let segments = segments(image, ram_size, ncpus)?;
    let loaded = Elf::load(
        mem,
        None,
        &mut Cursor::new(image),
        Some(GuestAddress(PROGRAM_MIN_ADDR)),
    )?;
    for &(paddr, filesz, memsz) in &segments {
        write(mem, paddr + filesz, &vec![0u8; (memsz - filesz) as usize])?;
    }

    write(mem, GDT_ADDR, &words_to_bytes(&descriptors::gdt(ncpus)))?;
    write(mem, IDT_ADDR, &descriptors::idt())?;
    for cpu in 0..ncpus {
        write(
            mem,
            TSS_ADDR + cpu as u64 * TSS_STRIDE,
            &descriptors::tss(cpu),
        )?;
    }
    write(mem, IO_BITMAP_ADDR, &descriptors::io_bitmap())?;
    write(mem, STUBS_ADDR, &stubs::image())?;
    write(mem, MAILBOX_ADDR, &[0u8; 4096])?;
    for (addr, table) in paging::tables(ram_size) {
        write(mem, addr, &words_to_bytes(&table))?;
    }
    let image_end = segments.iter().map(|s| s.0 + s.2).max().unwrap_or(0);
    Ok(GuestProgram {
        entry: loaded.kernel_load.0,
        image_end,
    })
}

/// Loads a guest program into `vm` and puts every vCPU at its entry in ring 3.
pub fn setup(vm: &Vm, image: &[u8]) -> Result<(), BootError> {
    let ram_size = vm.config().ram_size;
    let ncpus = vm.config().cpus;
    let loaded = load(vm.guest_memory(), image, ram_size, ncpus)?;
    for (cpu, fd) in vm.vcpus().iter().enumerate() {
        setup_vcpu(vm.kvm(), fd, cpu as u32, ncpus, ram_size, &loaded)?;
    }
    Ok(())
}

/// Puts `vcpu` at the program's entry in ring 3.
pub fn setup_vcpu(
    kvm: &Kvm,
    vcpu: &VcpuFd,
    cpu: u32,
    ncpus: u32,
    ram_size: u64,
    program: &GuestProgram,
) -> Result<(), BootError> {
    cpu::set_cpuid(kvm, vcpu, cpu, ncpus)?;
    let sregs = vcpu.get_sregs().map_err(kvm_err("get sregs"))?;
    let gdt_entries = descriptors::gdt(ncpus).len();
    let sregs = cpu::long_mode_sregs(
        sregs,
        SEL_USER_CODE,
        SEL_USER_DATA,
        gdt_entries,
        Some(cpu),
        paging::PML4_ADDR,
    );
    vcpu.set_sregs(&sregs).map_err(kvm_err("set sregs"))?;
    let regs = cpu::entry_regs(
        program.entry,
        user_stack_top(ram_size, cpu),
        cpu::RFLAGS_RESERVED | cpu::RFLAGS_IF | cpu::RFLAGS_IOPL3,
        [cpu as u64, ncpus as u64, ram_size],
    );
    vcpu.set_regs(&regs).map_err(kvm_err("set regs"))?;
    cpu::set_fpu(vcpu)?;
    cpu::set_lapic(vcpu, cpu)?;
    if cpu != 0 {
        // With an in-kernel LAPIC, APs start waiting for INIT/SIPI; ours start at the entry.
        let runnable = kvm_bindings::kvm_mp_state {
            mp_state: kvm_bindings::KVM_MP_STATE_RUNNABLE,
        };
        vcpu.set_mp_state(runnable)
            .map_err(kvm_err("set mp state"))?;
    }
    Ok(())
}

/// Writes the guest arguments (`--guest-args`) NUL-terminated at `ARGS_ADDR`, where the guest
/// runtime's `args` module reads them. At most `ARGS_SIZE - 1` bytes, no NUL inside.
pub fn write_args(mem: &GuestMemoryMmap, args: &str) -> Result<(), BootError> {
    if args.len() >= ARGS_SIZE as usize || args.contains('\0') {
        return Err(BootError::BadGuestArgs { len: args.len() });
    }
    let mut bytes = args.as_bytes().to_vec();
    bytes.push(0);
    write(mem, ARGS_ADDR, &bytes)
}
