//! Linux 64-bit boot protocol (Documentation/arch/x86/boot.rst, "64-bit boot protocol").
//!
//! The kernel (bzImage via linux-loader's BzImage loader, or an ELF vmlinux) is loaded at 1 MiB
//! (a vmlinux at its physical addresses), the command line at `CMDLINE_ADDR`, the initramfs at
//! the top of RAM, the boot parameters ("zero page") with an e820 map at `ZERO_PAGE_ADDR`, ACPI
//! tables in the BIOS area (see `acpi`), the two BIOS data area fields Linux reads (see
//! `bios_data_area`) and a reset vector that resets through the i8042. vCPU 0 starts at the
//! 64-bit entry with paging on (`paging::linux_tables`: identity map of the first 4 GiB, page 0
//! included), CS = 0x10 / DS = 0x18 in a GDT at `GDT_ADDR`, interrupts off and `rsi` = the zero
//! page. Every vCPU gets CPUID, MSRs, FPU and LAPIC state; the APs stay in wait-for-SIPI, as on
//! real hardware, and Linux starts them itself.
use std::path::Path;

use linux_loader::cmdline::Cmdline;
use linux_loader::loader::bootparam::{boot_e820_entry, boot_params};
use linux_loader::loader::{bzimage::BzImage, elf::Elf, load_cmdline, KernelLoader};
use vm_memory::{Bytes, GuestAddress, GuestMemoryMmap};

use super::image::DeferredCopy;
use super::{acpi, kvm_err, BootError};
use crate::arch::x86_64::layout::*;
use crate::arch::x86_64::{cpu, descriptors, paging};
use crate::vm::Vm;

/// Used when `--cmdline` is not given.
pub const DEFAULT_CMDLINE: &str = "console=ttyS0 reboot=k panic=1";

/// Appended to every command line unless the caller opts out (`vmm --no-auto-cmdline`, like
/// QEMU microvm's `auto-kernel-cmdline=off`): what Linux needs to know about this machine model.
/// `pci=noearly` skips Linux's type-1 PCI scans before the PCI subsystem starts: the early
/// quirks, which only chipsets this machine does not have need, and, on AMD family 0Fh-15h CPUs
/// (the nested bed's TCG CPU), two `search_agp_bridge()` walks of all 256 buses, 2 × 8,192
/// configuration reads that each cost a PIO exit (docs/boot-time.md). PCI itself still probes
/// the bus normally (conf1 and ECAM), so the ivshmem and virtio devices appear as before.
pub const MACHINE_CMDLINE: &str = "pci=noearly";

/// `cmdline` followed by [`MACHINE_CMDLINE`]'s parameters it does not already have.
pub fn with_machine_params(cmdline: &str) -> String {
    let mut line = cmdline.trim_end().to_string();
    for param in MACHINE_CMDLINE.split_whitespace() {
        if !cmdline.split_whitespace().any(|given| given == param) {
            if !line.is_empty() {
                line.push(' ');
            }
            line.push_str(param);
        }
    }
    line
}

/// The boot parameters ("zero page") the kernel reads at entry (RSI).
pub const ZERO_PAGE_ADDR: u64 = 0x7000;
/// The kernel command line.
pub const CMDLINE_ADDR: u64 = 0x8_0000;
/// Longest command line we accept, NUL included.
pub const CMDLINE_MAX: usize = 0x1_0000;
const BOOT_STACK_TOP: u64 = 0x7_FFF0;
/// Where the kernel's protected-mode code goes.
pub const KERNEL_ADDR: u64 = 0x10_0000;
/// The end of conventional memory / start of the EBDA-VGA-BIOS hole.
const LOW_RAM_END: u64 = 0x9_FC00;
/// BIOS data area fields: the EBDA's segment and the base memory size in KiB.
const BDA_EBDA_SEGMENT: u64 = 0x40E;
const BDA_BASE_MEMORY_KIB: u64 = 0x413;

const _: () = assert!(acpi::RSDP_ADDR >= LOW_RAM_END && acpi::ACPI_END <= KERNEL_ADDR);

const E820_RAM: u32 = 1;
const E820_RESERVED: u32 = 2;
/// Selectors the boot protocol asks for.
const BOOT_CS: u16 = 0x10;
const BOOT_DS: u16 = 0x18;

fn write(mem: &GuestMemoryMmap, addr: u64, bytes: &[u8]) -> Result<(), BootError> {
    mem.write_slice(bytes, GuestAddress(addr))
        .map_err(|_| BootError::OutOfRam {
            addr,
            len: bytes.len() as u64,
        })
}

fn open_image<'m>(mem: &'m GuestMemoryMmap, path: &Path) -> Result<DeferredCopy<'m>, BootError> {
    DeferredCopy::open(mem, path).map_err(|source| BootError::ReadImage {
        path: path.display().to_string(),
        source,
    })
}

fn finish_image(image: DeferredCopy) -> Result<(), BootError> {
    let path = image.path().display().to_string();
    image
        .finish()
        .map_err(|source| BootError::ReadImage { path, source })
}

/// The e820 map: low RAM, the legacy hole, RAM from 1 MiB, the ECAM window (reserved, so Linux
/// trusts MCFG).
pub fn e820(ram_size: u64) -> Vec<(u64, u64, u32)> {
    vec![
        (0, LOW_RAM_END, E820_RAM),
        (LOW_RAM_END, KERNEL_ADDR - LOW_RAM_END, E820_RESERVED),
        (KERNEL_ADDR, ram_size - KERNEL_ADDR, E820_RAM),
        (PCI_ECAM_ADDR, PCI_ECAM_SIZE, E820_RESERVED),
    ]
}

/// Where a real-mode jump to the BIOS (`F000:FFF0`, the reset vector) lands.
pub const RESET_VECTOR_ADDR: u64 = 0xF_FFF0;
const _: () = assert!(acpi::ACPI_END <= RESET_VECTOR_ADDR && RESET_VECTOR_ADDR < KERNEL_ADDR);

/// What firmware's reset vector does for us: reset the machine, here through the i8042 (which
/// ends the VM): `mov al, 0xFE; out 0x64, al; 1: hlt; jmp 1b`. Linux jumps there to reboot when
/// the ACPI platform is hardware-reduced and there is no EFI (it then prefers an EFI reset, and
/// falls back to the BIOS): without code there the vCPU would run zeros in real mode forever.
pub const RESET_VECTOR_CODE: [u8; 7] = [0xB0, 0xFE, 0xE6, 0x64, 0xF4, 0xEB, 0xFD];

/// The BIOS data area as firmware leaves it, (address, bytes): the EBDA starts at `LOW_RAM_END`
/// (an empty 1 KiB one, inside the reserved hole) and base memory is the 639 KiB below it.
/// Zeros would also work (Linux then assumes the worst and reserves 128 KiB..1 MiB for the
/// BIOS), but real values keep conventional memory usable and match our e820 map.
pub fn bios_data_area() -> [(u64, Vec<u8>); 2] {
    [
        (
            BDA_EBDA_SEGMENT,
            ((LOW_RAM_END >> 4) as u16).to_le_bytes().to_vec(),
        ),
        (
            BDA_BASE_MEMORY_KIB,
            ((LOW_RAM_END >> 10) as u16).to_le_bytes().to_vec(),
        ),
    ]
}

/// Loads `kernel` (+ initrd, cmdline) and sets up every vCPU.
pub fn boot(vm: &Vm, kernel: &Path, initrd: Option<&Path>, cmdline: &str) -> Result<(), BootError> {
    let mem = vm.guest_memory();
    let ram_size = vm.config().ram_size;
    let ncpus = vm.config().cpus;

    // Kernel: a bzImage, or else an ELF vmlinux. linux-loader checks it and places it; the
    // copies into guest RAM are done afterwards, by several threads (`image`).
    let mut image = open_image(mem, kernel)?;
    let (entry, setup_header) =
        match BzImage::load(mem, None, &mut image, Some(GuestAddress(KERNEL_ADDR))) {
            Ok(loaded) => {
                // The 64-bit entry point is 0x200 past the protected-mode code's start.
                (loaded.kernel_load.0 + 0x200, loaded.setup_header)
            }
            Err(bz_err) => {
                image = open_image(mem, kernel)?;
                match Elf::load(mem, None, &mut image, Some(GuestAddress(KERNEL_ADDR))) {
                    Ok(loaded) => (loaded.kernel_load.0, None),
                    Err(elf_err) => {
                        return Err(BootError::NotAKernel {
                            path: kernel.display().to_string(),
                            bzimage: bz_err,
                            elf: elf_err,
                        })
                    }
                }
            }
        };
    finish_image(image)?;

    let mut params = boot_params::default();
    if let Some(hdr) = setup_header {
        params.hdr = hdr;
    } else {
        params.hdr.boot_flag = 0xAA55;
        params.hdr.header = 0x5372_6448; // "HdrS"
        params.hdr.kernel_alignment = 0x100_0000;
        params.hdr.initrd_addr_max = 0x7FFF_FFFF;
    }
    params.hdr.type_of_loader = 0xFF;
    params.hdr.loadflags |= 0x01; // LOADED_HIGH

    // Command line.
    let mut line = Cmdline::new(CMDLINE_MAX)?;
    line.insert_str(cmdline)?;
    load_cmdline(mem, GuestAddress(CMDLINE_ADDR), &line)?;
    params.hdr.cmd_line_ptr = CMDLINE_ADDR as u32;
    params.hdr.cmdline_size = cmdline.len() as u32 + 1;

    // Initramfs at the top of RAM (below the kernel's limit), page-aligned.
    if let Some(path) = initrd {
        let mut image = open_image(mem, path)?;
        let size = image.file_size();
        let limit = ram_size.min(params.hdr.initrd_addr_max as u64 + 1);
        let addr = limit
            .checked_sub(size)
            .map(|a| a & !0xFFF)
            .filter(|&a| a >= KERNEL_ADDR + (16 << 20))
            .ok_or_else(|| BootError::InitrdTooLarge {
                path: path.display().to_string(),
                size,
                ram_size,
            })?;
        mem.read_exact_volatile_from(GuestAddress(addr), &mut image, size as usize)
            .map_err(|_| BootError::OutOfRam { addr, len: size })?;
        finish_image(image)?;
        params.hdr.ramdisk_image = addr as u32;
        params.hdr.ramdisk_size = size as u32;
    }

    let map = e820(ram_size);
    for (slot, &(addr, size, kind)) in params.e820_table.iter_mut().zip(&map) {
        *slot = boot_e820_entry {
            addr,
            size,
            r#type: kind,
        };
    }
    params.e820_entries = map.len() as u8;
    params.acpi_rsdp_addr = acpi::RSDP_ADDR;
    mem.write_obj(params, GuestAddress(ZERO_PAGE_ADDR))
        .map_err(|_| BootError::OutOfRam {
            addr: ZERO_PAGE_ADDR,
            len: std::mem::size_of::<boot_params>() as u64,
        })?;

    // As firmware would: every BAR placed (a page at least each) and decoding on.
    crate::pci::firmware::assign_bars(&vm.device_context().pci);

    for (addr, table) in acpi::tables(ncpus) {
        write(mem, addr, &table)?;
    }
    for (addr, bytes) in bios_data_area() {
        write(mem, addr, &bytes)?;
    }
    write(mem, RESET_VECTOR_ADDR, &RESET_VECTOR_CODE)?;

    // GDT with the boot protocol's selectors; identity-mapping page tables.
    let gdt = descriptors::linux_boot_gdt();
    let gdt_bytes: Vec<u8> = gdt.iter().flat_map(|w| w.to_le_bytes()).collect();
    write(mem, GDT_ADDR, &gdt_bytes)?;
    for (addr, table) in paging::linux_tables() {
        let bytes: Vec<u8> = table.iter().flat_map(|w| w.to_le_bytes()).collect();
        write(mem, addr, &bytes)?;
    }

    let phys_bits = cpu::phys_address_bits(vm.kvm())?;
    for (index, vcpu) in vm.vcpus().iter().enumerate() {
        let cpu = index as u32;
        cpu::set_cpuid(vm.kvm(), vcpu, cpu, ncpus)?;
        cpu::set_boot_msrs(vcpu, phys_bits)?;
        cpu::set_fpu(vcpu)?;
        cpu::set_lapic(vcpu, cpu)?;
        if cpu == 0 {
            let sregs = vcpu.get_sregs().map_err(kvm_err("get sregs"))?;
            let sregs =
                cpu::long_mode_sregs(sregs, BOOT_CS, BOOT_DS, gdt.len(), None, paging::PML4_ADDR);
            vcpu.set_sregs(&sregs).map_err(kvm_err("set sregs"))?;
            let regs = cpu::entry_regs(
                entry,
                BOOT_STACK_TOP,
                cpu::RFLAGS_RESERVED,
                [0, ZERO_PAGE_ADDR, 0],
            );
            vcpu.set_regs(&regs).map_err(kvm_err("set regs"))?;
        }
    }
    log::info!(
        "linux: entry {entry:#x}, cmdline {cmdline:?}, {} MiB RAM, {ncpus} vCPUs",
        ram_size >> 20
    );
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn machine_params_are_appended_once() {
        assert_eq!(
            with_machine_params("console=ttyS0 quiet"),
            "console=ttyS0 quiet pci=noearly"
        );
        assert_eq!(with_machine_params(""), "pci=noearly");
        assert_eq!(
            with_machine_params("pci=noearly quiet "),
            "pci=noearly quiet"
        );
        // A different pci= option does not stand for ours: Linux takes every pci= it is given.
        assert_eq!(with_machine_params("pci=nomsi"), "pci=nomsi pci=noearly");
    }

    #[test]
    fn e820_covers_ram_and_reserves_holes() {
        let map = e820(256 << 20);
        let ram: u64 = map.iter().filter(|e| e.2 == E820_RAM).map(|e| e.1).sum();
        assert_eq!(ram, (256 << 20) - (KERNEL_ADDR - LOW_RAM_END));
        assert!(map
            .iter()
            .any(|e| e.0 == PCI_ECAM_ADDR && e.2 == E820_RESERVED));
    }

    #[test]
    fn reset_vector_pulses_the_i8042_reset_line_in_reserved_memory() {
        // mov al, 0xFE / out 0x64, al: the i8042's "pulse reset" command.
        assert_eq!(RESET_VECTOR_CODE[..4], [0xB0, 0xFE, 0xE6, 0x64]);
        // hlt, then a short jump (-3) back to it.
        assert_eq!(RESET_VECTOR_CODE[4..], [0xF4, 0xEB, 0xFD]);
        assert!(RESET_VECTOR_ADDR + RESET_VECTOR_CODE.len() as u64 <= KERNEL_ADDR);
        assert!(e820(64 << 20)
            .iter()
            .any(|&(a, s, t)| t == E820_RESERVED && (a..a + s).contains(&RESET_VECTOR_ADDR)));
    }

    #[test]
    fn bios_data_area_points_at_the_reserved_ebda() {
        let [(ebda_at, ebda), (base_at, base)] = bios_data_area();
        assert_eq!((ebda_at, base_at), (0x40E, 0x413));
        let ebda = u16::from_le_bytes([ebda[0], ebda[1]]) as u64;
        let base = u16::from_le_bytes([base[0], base[1]]) as u64;
        assert_eq!((ebda, base), (0x9FC0, 639));
        // The EBDA lies in the e820 hole, right after the last conventional RAM byte.
        let map = e820(64 << 20);
        assert!(map
            .iter()
            .any(|&(a, s, t)| a == ebda << 4 && t == E820_RESERVED && s >= 1024));
        assert_eq!(base << 10, ebda << 4);
    }
}
