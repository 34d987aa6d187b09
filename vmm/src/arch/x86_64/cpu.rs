//! Per-vCPU architectural state: CPUID, LAPIC, FPU, MSRs, and the register/segment state for
//! entering a guest directly in 64-bit mode (ring 3 for guest programs, ring 0 for Linux).
use kvm_bindings::{kvm_fpu, kvm_msr_entry, kvm_regs, kvm_segment, kvm_sregs, CpuId, Msrs};
use kvm_ioctls::{Kvm, VcpuFd};

use super::layout::*;
use super::{kvm_err, CpuError};

const CR0_PE: u64 = 1;
const CR0_MP: u64 = 1 << 1;
const CR0_ET: u64 = 1 << 4;
const CR0_NE: u64 = 1 << 5;
const CR0_WP: u64 = 1 << 16;
const CR0_PG: u64 = 1 << 31;
const CR4_PAE: u64 = 1 << 5;
const CR4_OSFXSR: u64 = 1 << 9;
const CR4_OSXMMEXCPT: u64 = 1 << 10;
const EFER_SCE: u64 = 1;
const EFER_LME: u64 = 1 << 8;
const EFER_LMA: u64 = 1 << 10;

/// RFLAGS bit 1, which always reads as 1.
pub const RFLAGS_RESERVED: u64 = 1 << 1;
/// RFLAGS.IF: interrupts enabled.
pub const RFLAGS_IF: u64 = 1 << 9;
/// RFLAGS.IOPL = 3: ring 3 may use port I/O (where the hypervisor keeps it).
pub const RFLAGS_IOPL3: u64 = 3 << 12;

/// CPUID.1:ECX bit 24: the LAPIC timer has TSC-deadline mode.
const CPUID_1_ECX_TSC_DEADLINE: u32 = 1 << 24;
/// CPUID.1:ECX bit 31: running under a hypervisor.
const CPUID_1_ECX_HYPERVISOR: u32 = 1 << 31;

/// The host's supported CPUID, adjusted per vCPU (APIC ids) — set before any other state,
/// because KVM checks EFER.LME against the guest's CPUID.
///
/// KVM emulates the LAPIC's TSC-deadline timer mode but leaves its bit out of the supported
/// CPUID (it is a capability, KVM_CAP_TSC_DEADLINE_TIMER): without it a Linux guest arms its
/// timer through the initial-count register, with a conversion on every arming and a
/// calibration at boot. We set the bit when KVM has the capability, as QEMU's `-cpu host` does.
pub fn set_cpuid(kvm: &Kvm, vcpu: &VcpuFd, cpu: u32, ncpus: u32) -> Result<(), CpuError> {
    let mut cpuid: CpuId = kvm
        .get_supported_cpuid(kvm_bindings::KVM_MAX_CPUID_ENTRIES)
        .map_err(kvm_err("get supported cpuid"))?;
    let tsc_deadline = kvm.check_extension(kvm_ioctls::Cap::TscDeadlineTimer);
    for entry in cpuid.as_mut_slice() {
        match entry.function {
            1 => {
                // Initial APIC id, logical processor count; we are a hypervisor guest.
                entry.ebx = (entry.ebx & 0x0000_FFFF) | (cpu << 24) | (ncpus.min(255) << 16);
                entry.ecx |= CPUID_1_ECX_HYPERVISOR;
                if tsc_deadline {
                    entry.ecx |= CPUID_1_ECX_TSC_DEADLINE;
                }
            }
            0xB | 0x1F => entry.edx = cpu,
            _ => {}
        }
    }
    vcpu.set_cpuid2(&cpuid).map_err(kvm_err("set cpuid"))
}

/// LAPIC: software-enabled (SVR), spurious vector 0xFF, LINT0 ExtINT on the BSP (legacy PIC),
/// LINT1 NMI, timer masked.
pub fn set_lapic(vcpu: &VcpuFd, cpu: u32) -> Result<(), CpuError> {
    let mut lapic = vcpu.get_lapic().map_err(kvm_err("get lapic"))?;
    let mut put = |offset: usize, value: u32| {
        for (i, b) in value.to_le_bytes().iter().enumerate() {
            lapic.regs[offset + i] = *b as _;
        }
    };
    put(0xF0, 0x100 | VECTOR_SPURIOUS as u32); // SVR
    put(0x80, 0); // TPR
    put(0x320, 1 << 16); // LVT timer masked
    put(0x350, if cpu == 0 { 0x700 } else { 1 << 16 }); // LINT0: ExtINT / masked
    put(0x360, 0x400); // LINT1: NMI
    vcpu.set_lapic(&lapic).map_err(kvm_err("set lapic"))
}

/// x87/SSE defaults (what FNINIT + LDMXCSR would give).
pub fn set_fpu(vcpu: &VcpuFd) -> Result<(), CpuError> {
    let fpu = kvm_fpu {
        fcw: 0x37F,
        mxcsr: 0x1F80,
        ..Default::default()
    };
    vcpu.set_fpu(&fpu).map_err(kvm_err("set fpu"))
}

const MSR_MTRR_DEF_TYPE: u32 = 0x2FF;
const MSR_MTRR_PHYS_BASE0: u32 = 0x200;
const MTRR_ENABLE: u64 = 1 << 11;
const MTRR_VALID: u64 = 1 << 11;
const MTRR_UNCACHEABLE: u64 = 0;
const MTRR_WRITE_BACK: u64 = 6;

/// The guest's physical address width, from the CPUID KVM offers (leaf 0x8000_0008).
pub fn phys_address_bits(kvm: &Kvm) -> Result<u8, CpuError> {
    let cpuid = kvm
        .get_supported_cpuid(kvm_bindings::KVM_MAX_CPUID_ENTRIES)
        .map_err(kvm_err("get supported cpuid"))?;
    Ok(cpuid
        .as_slice()
        .iter()
        .find(|e| e.function == 0x8000_0008)
        .map(|e| e.eax as u8)
        .filter(|&bits| bits >= 36)
        .unwrap_or(36))
}

/// MTRRs as PC firmware leaves them: enabled, write-back by default, the device area
/// (`[DEVICE_AREA_ADDR, 4 GiB)`: ECAM, PCI MMIO, IOAPIC, LAPIC) uncached by two variable ranges.
/// With MTRRs off Linux also skips PAT set-up and has no write-combining mappings.
pub fn mtrr_msrs(phys_bits: u8) -> Vec<(u32, u64)> {
    let phys_mask = (1u64 << phys_bits) - 1;
    let mut entries = vec![(MSR_MTRR_DEF_TYPE, MTRR_ENABLE | MTRR_WRITE_BACK)];
    // Power-of-two sized, size-aligned pieces: 0xB000_0000 + 256 MiB, 0xC000_0000 + 1 GiB.
    let ranges = [(DEVICE_AREA_ADDR, 256u64 << 20), (PCI_MMIO32_ADDR, 1 << 30)];
    const _: () = assert!(DEVICE_AREA_ADDR + (256 << 20) == PCI_MMIO32_ADDR);
    const _: () = assert!(PCI_MMIO32_ADDR + (1 << 30) == DEVICE_AREA_END);
    for (i, (base, size)) in ranges.into_iter().enumerate() {
        let msr = MSR_MTRR_PHYS_BASE0 + 2 * i as u32;
        entries.push((msr, base | MTRR_UNCACHEABLE));
        entries.push((msr + 1, (!(size - 1) & phys_mask) | MTRR_VALID));
    }
    entries
}

/// MSRs Linux expects sane values in (fast strings, no SYSENTER, PAT default, MTRRs).
pub fn set_boot_msrs(vcpu: &VcpuFd, phys_bits: u8) -> Result<(), CpuError> {
    let mut entries = vec![
        (0x174u32, 0u64),               // SYSENTER_CS
        (0x175, 0),                     // SYSENTER_ESP
        (0x176, 0),                     // SYSENTER_EIP
        (0xC000_0081, 0),               // STAR
        (0xC000_0082, 0),               // LSTAR
        (0xC000_0084, 0),               // SFMASK
        (0x10, 0),                      // TSC
        (0x1A0, 1),                     // MISC_ENABLE: fast strings
        (0x277, 0x0007_0406_0007_0406), // PAT
    ];
    entries.extend(mtrr_msrs(phys_bits));
    let msrs = Msrs::from_entries(
        &entries
            .iter()
            .map(|&(index, data)| kvm_msr_entry {
                index,
                data,
                ..Default::default()
            })
            .collect::<Vec<_>>(),
    )
    .map_err(CpuError::MsrList)?;
    let set = vcpu.set_msrs(&msrs).map_err(kvm_err("set msrs"))?;
    if set != entries.len() {
        log::debug!("KVM accepted {set} of {} boot MSRs", entries.len());
    }
    Ok(())
}

fn code_segment(selector: u16) -> kvm_segment {
    kvm_segment {
        base: 0,
        limit: 0xFFFF_FFFF,
        selector,
        type_: 0xB, // execute/read, accessed
        present: 1,
        dpl: (selector & 3) as u8,
        db: 0,
        s: 1,
        l: 1,
        g: 1,
        ..Default::default()
    }
}

fn data_segment(selector: u16) -> kvm_segment {
    kvm_segment {
        base: 0,
        limit: 0xFFFF_FFFF,
        selector,
        type_: 0x3, // read/write, accessed
        present: 1,
        dpl: (selector & 3) as u8,
        db: 1,
        s: 1,
        l: 0,
        g: 1,
        ..Default::default()
    }
}

/// Special registers for 64-bit mode with paging at `cr3`: `code`/`data` selectors (their RPL
/// is the privilege level), GDT of `gdt_entries` 8-byte entries, the guest-program IDT, and
/// TR = this vCPU's TSS when `tss` is given.
pub fn long_mode_sregs(
    mut sregs: kvm_sregs,
    code: u16,
    data: u16,
    gdt_entries: usize,
    tss: Option<u32>,
    cr3: u64,
) -> kvm_sregs {
    sregs.cs = code_segment(code);
    let ds = data_segment(data);
    sregs.ds = ds;
    sregs.es = ds;
    sregs.fs = ds;
    sregs.gs = ds;
    sregs.ss = ds;
    sregs.tr = match tss {
        Some(cpu) => kvm_segment {
            base: super::descriptors::tss_base(cpu),
            limit: super::descriptors::tss_limit(cpu) as u32,
            selector: SEL_TSS0 + 16 * cpu as u16,
            type_: 0xB, // busy 64-bit TSS
            present: 1,
            ..Default::default()
        },
        None => kvm_segment {
            limit: 0xFFFF,
            type_: 0xB,
            present: 1,
            ..Default::default()
        },
    };
    sregs.ldt = kvm_segment {
        type_: 0x2,
        present: 1,
        limit: 0xFFFF,
        unusable: 1,
        ..Default::default()
    };
    sregs.gdt.base = GDT_ADDR;
    sregs.gdt.limit = (gdt_entries * 8 - 1) as u16;
    sregs.idt.base = IDT_ADDR;
    sregs.idt.limit = 256 * 16 - 1;
    sregs.cr0 = CR0_PE | CR0_MP | CR0_ET | CR0_NE | CR0_WP | CR0_PG;
    sregs.cr3 = cr3;
    sregs.cr4 = CR4_PAE | CR4_OSFXSR | CR4_OSXMMEXCPT;
    sregs.efer = EFER_SCE | EFER_LME | EFER_LMA;
    sregs
}

/// General registers at entry.
pub fn entry_regs(rip: u64, rsp: u64, rflags: u64, args: [u64; 3]) -> kvm_regs {
    kvm_regs {
        rip,
        rsp,
        rflags,
        rdi: args[0],
        rsi: args[1],
        rdx: args[2],
        ..Default::default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mtrrs_make_ram_write_back_and_the_device_area_uncached() {
        let msrs = mtrr_msrs(40);
        assert_eq!(msrs[0], (0x2FF, 0x806), "enabled, default write-back");
        assert_eq!(
            &msrs[1..],
            [
                (0x200, 0xB000_0000),
                (0x201, 0xFF_F000_0800),
                (0x202, 0xC000_0000),
                (0x203, 0xFF_C000_0800),
            ]
        );
        // A variable range covers addr when (addr & mask) == (base & mask).
        let covered = |addr: u64| {
            msrs[1..].chunks(2).any(|pair| {
                let (base, mask) = (pair[0].1, pair[1].1 & !0xFFF);
                addr & mask == base & mask
            })
        };
        for addr in [
            PCI_ECAM_ADDR,
            PCI_MMIO32_ADDR,
            IOAPIC_ADDR,
            LAPIC_ADDR,
            (1 << 32) - 1,
        ] {
            assert!(covered(addr), "{addr:#x} uncached");
        }
        for addr in [0, 0x10_0000, DEVICE_AREA_ADDR - 1, 1 << 32, PCI_MMIO64_ADDR] {
            assert!(!covered(addr), "{addr:#x} write-back");
        }
    }
}
