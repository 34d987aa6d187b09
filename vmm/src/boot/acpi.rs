//! ACPI tables for Linux guests: RSDP → XSDT → FADT (→ DSDT), MADT, MCFG.
//!
//! The platform is "hardware-reduced" ACPI (no PM timer, SCI or GPE blocks to emulate), so Linux
//! sets up no legacy PIC and routes ISA interrupts only for devices the DSDT describes. The DSDT
//! therefore describes, as PC firmware does: the PCI host bridge (bus 0, its windows), COM1
//! (PNP0501, ports 0x3F8-0x3FF, IRQ 4 through the IOAPIC: without it the serial port's interrupt
//! is never routed and userspace writes to the console fail with EIO) and the CMOS RTC (PNP0B00,
//! ports 0x70-0x71, no IRQ: see `devices::rtc`). The FADT names the RTC's century register, says
//! there is no VGA and (by leaving the 8042 flag clear) no PS/2 controller to probe; its reset
//! register is the i8042 command port with value 0xFE, so an ACPI reboot ends the VM like a
//! keyboard-controller reset, and its sleep control register with the DSDT's `\_S5` lets a
//! power-off end it too (`devices::acpi_sleep`).
//!
//! MADT: one enabled LAPIC per vCPU, the IOAPIC at `IOAPIC_ADDR` (GSI base 0), PCAT_COMPAT, and
//! no interrupt source override: every ISA IRQ is the IOAPIC pin of the same number, as KVM's
//! (and `interrupts::legacy_routes`') routing has it. PC firmware announces IRQ 0 → GSI 2 because
//! its board wires the PIT to pin 2; KVM's in-kernel PIT raises GSI 0, which reaches pin 0. (On
//! hardware-reduced ACPI Linux does not use the PIT's interrupt anyway.) MCFG: the ECAM window
//! for bus 0. The RSDP goes at `RSDP_ADDR` in the BIOS area, where Linux scans, and its address is
//! also passed in the boot parameters.
use acpi_tables::fadt::FADTBuilder;
use acpi_tables::gas::{AccessSize, AddressSpace, GAS};
use acpi_tables::mcfg::MCFG;
use acpi_tables::rsdp::Rsdp;
use acpi_tables::sdt::Sdt;
use acpi_tables::xsdt::XSDT;
use acpi_tables::Aml;

use crate::arch::x86_64::layout::*;
use crate::devices::acpi_sleep::{
    ACPI_SLEEP_BASE, S5_SLEEP_TYPE, SLEEP_CONTROL_OFFSET, SLEEP_STATUS_OFFSET,
};
use crate::devices::rtc::{CENTURY, RTC_BASE, RTC_SIZE};
use crate::devices::serial::{COM1_BASE, COM1_GSI, COM1_SIZE};

/// Where the RSDP goes (start of the BIOS area Linux scans); the other tables follow it.
pub const RSDP_ADDR: u64 = 0xE_0000;
/// End of the area the tables may use.
pub const ACPI_END: u64 = 0xF_0000;

const OEM_ID: [u8; 6] = *b"IVSHRS";
const OEM_TABLE_ID: [u8; 8] = *b"IVSHMVMM";
const OEM_REVISION: u32 = 1;

/// FADT flags.
const FADT_RESET_REG_SUP: u32 = 1 << 10;
const FADT_HW_REDUCED_ACPI: u32 = 1 << 20;
/// IA-PC boot architecture flags: VGA is not present. (Bit 1, "8042", stays clear: the i8042
/// here only resets; bit 5, "CMOS RTC not present", stays clear.)
const IAPC_BOOT_NO_VGA: u16 = 1 << 2;

fn bytes(table: &dyn Aml) -> Vec<u8> {
    let mut out = Vec::new();
    table.to_aml_bytes(&mut out);
    out
}

/// DSDT: the PCI host bridge `\_SB.PCI0` (PNP0A08, segment 0, bus 0) with its resources — conf1
/// ports, the I/O ports around them, the 32-bit MMIO window and the 64-bit window — so Linux
/// finds bus 0 through ACPI and knows where BARs may go. No _PRT: our devices use MSI/MSI-X.
fn dsdt() -> Vec<u8> {
    use acpi_tables::aml::{
        self, AddressSpaceCacheable, Device, EISAName, Name, Path, ResourceTemplate, Scope,
    };
    let bus = aml::AddressSpace::<u16>::new_bus_number(0, 0);
    let conf1 = aml::IO::new(0xCF8, 0xCF8, 1, 8);
    let io_low = aml::AddressSpace::<u16>::new_io(0, 0xCF7, None);
    let io_high = aml::AddressSpace::<u16>::new_io(0xD00, 0xFFFF, None);
    let mmio32 = aml::AddressSpace::<u32>::new_memory(
        AddressSpaceCacheable::NotCacheable,
        true,
        PCI_MMIO32_ADDR as u32,
        (PCI_MMIO32_END - 1) as u32,
        None,
    );
    let mmio64 = aml::AddressSpace::<u64>::new_memory(
        AddressSpaceCacheable::Cacheable,
        true,
        PCI_MMIO64_ADDR,
        PCI_MMIO64_ADDR + PCI_MMIO64_SIZE - 1,
        None,
    );
    let crs = ResourceTemplate::new(vec![&bus, &conf1, &io_low, &io_high, &mmio32, &mmio64]);
    let hid = EISAName::new("PNP0A08");
    let cid = EISAName::new("PNP0A03");
    let zero = aml::ZERO;
    let names = [
        Name::new(Path::new("_HID"), &hid),
        Name::new(Path::new("_CID"), &cid),
        Name::new(Path::new("_ADR"), &zero),
        Name::new(Path::new("_SEG"), &zero),
        Name::new(Path::new("_UID"), &zero),
        Name::new(Path::new("_BBN"), &zero),
        Name::new(Path::new("_CRS"), &crs),
    ];
    let children: Vec<&dyn Aml> = names.iter().map(|n| n as &dyn Aml).collect();
    let pci0 = Device::new(Path::new("PCI0"), children);

    // COM1: edge-triggered, active-high ISA IRQ 4, identity-mapped to IOAPIC pin 4.
    let com1_ports = aml::IO::new(COM1_BASE, COM1_BASE, 1, COM1_SIZE as u8);
    let com1_irq = aml::Interrupt::new(true, true, false, false, COM1_GSI);
    let com1_crs = ResourceTemplate::new(vec![&com1_ports, &com1_irq]);
    let com1_hid = EISAName::new("PNP0501");
    let one = aml::ONE;
    let com1_names = [
        Name::new(Path::new("_HID"), &com1_hid),
        Name::new(Path::new("_UID"), &one),
        Name::new(Path::new("_CRS"), &com1_crs),
    ];
    let com1 = Device::new(
        Path::new("COM1"),
        com1_names.iter().map(|n| n as &dyn Aml).collect(),
    );

    let rtc_ports = aml::IO::new(RTC_BASE, RTC_BASE, 1, RTC_SIZE as u8);
    let rtc_crs = ResourceTemplate::new(vec![&rtc_ports]);
    let rtc_hid = EISAName::new("PNP0B00");
    let rtc_names = [
        Name::new(Path::new("_HID"), &rtc_hid),
        Name::new(Path::new("_CRS"), &rtc_crs),
    ];
    let rtc = Device::new(
        Path::new("RTC_"),
        rtc_names.iter().map(|n| n as &dyn Aml).collect(),
    );

    let sb = Scope::new(Path::new("\\_SB_"), vec![&pci0, &com1, &rtc]);
    // S5 (soft off) is sleep type S5_SLEEP_TYPE in the FADT's sleep control register.
    let s5_type = S5_SLEEP_TYPE;
    let s5 = aml::Package::new(vec![&s5_type, &zero, &zero, &zero]);
    let s5 = Name::new(Path::new("\\_S5_"), &s5);
    let mut body = Vec::new();
    sb.to_aml_bytes(&mut body);
    s5.to_aml_bytes(&mut body);

    table(*b"DSDT", 6, &body)
}

/// A table with our OEM fields: the 36-byte header, then `body`, checksummed.
fn table(signature: [u8; 4], revision: u8, body: &[u8]) -> Vec<u8> {
    let mut sdt = Sdt::new(
        signature,
        36 + body.len() as u32,
        revision,
        OEM_ID,
        OEM_TABLE_ID,
        OEM_REVISION,
    );
    sdt.write_bytes(36, body);
    sdt.update_checksum();
    sdt.as_slice().to_vec()
}

fn fadt(dsdt_addr: u64) -> Vec<u8> {
    let mut builder = FADTBuilder::new(OEM_ID, OEM_TABLE_ID, OEM_REVISION).dsdt_64(dsdt_addr);
    builder.flags = (FADT_HW_REDUCED_ACPI | FADT_RESET_REG_SUP).into();
    builder.reset_reg = GAS::new(AddressSpace::SystemIo, 8, 0, AccessSize::ByteAccess, 0x64);
    builder.reset_value = 0xFE;
    let sleep_reg = |offset: u64| {
        let port = ACPI_SLEEP_BASE as u64 + offset;
        GAS::new(AddressSpace::SystemIo, 8, 0, AccessSize::ByteAccess, port)
    };
    builder.sleep_control_reg = sleep_reg(SLEEP_CONTROL_OFFSET);
    builder.sleep_status_reg = sleep_reg(SLEEP_STATUS_OFFSET);
    builder.century = CENTURY;
    builder.iapc_boot_arch = IAPC_BOOT_NO_VGA.into();
    bytes(&builder.finalize())
}

/// MADT, written by hand: the crate's MADT cannot set flags.
fn madt(ncpus: u32) -> Vec<u8> {
    let mut body = Vec::new();
    body.extend_from_slice(&(LAPIC_ADDR as u32).to_le_bytes());
    body.extend_from_slice(&1u32.to_le_bytes()); // PCAT_COMPAT
    for cpu in 0..ncpus {
        // Processor Local APIC: type 0, length 8, ACPI processor UID, APIC id, flags (enabled).
        body.extend_from_slice(&[0, 8, cpu as u8, cpu as u8]);
        body.extend_from_slice(&1u32.to_le_bytes());
    }
    // I/O APIC: type 1, length 12, id, reserved, address, GSI base.
    body.extend_from_slice(&[1, 12, ncpus as u8, 0]);
    body.extend_from_slice(&(IOAPIC_ADDR as u32).to_le_bytes());
    body.extend_from_slice(&0u32.to_le_bytes());
    // Local APIC NMI: type 4, length 6, all processors, flags, LINT1.
    body.extend_from_slice(&[4, 6, 0xFF, 0, 0, 1]);

    table(*b"APIC", 5, &body)
}

fn mcfg() -> Vec<u8> {
    let mut mcfg = MCFG::new(OEM_ID, OEM_TABLE_ID, OEM_REVISION);
    mcfg.add_ecam(PCI_ECAM_ADDR, 0, 0, 0);
    bytes(&mcfg)
}

/// All tables as (guest address, bytes), RSDP first.
pub fn tables(ncpus: u32) -> Vec<(u64, Vec<u8>)> {
    let align = |addr: u64| (addr + 15) & !15;
    let mut next = align(RSDP_ADDR + Rsdp::len() as u64);
    let mut place = |len: usize| {
        let at = next;
        next = align(next + len as u64);
        at
    };
    let dsdt = dsdt();
    let dsdt_addr = place(dsdt.len());
    let fadt = fadt(dsdt_addr);
    let fadt_addr = place(fadt.len());
    let madt = madt(ncpus);
    let madt_addr = place(madt.len());
    let mcfg = mcfg();
    let mcfg_addr = place(mcfg.len());
    let mut xsdt = XSDT::new(OEM_ID, OEM_TABLE_ID, OEM_REVISION);
    for addr in [fadt_addr, madt_addr, mcfg_addr] {
        xsdt.add_entry(addr);
    }
    let xsdt = bytes(&xsdt);
    let xsdt_addr = place(xsdt.len());
    let rsdp = bytes(&Rsdp::new(OEM_ID, xsdt_addr));
    let out = vec![
        (RSDP_ADDR, rsdp),
        (dsdt_addr, dsdt),
        (fadt_addr, fadt),
        (madt_addr, madt),
        (mcfg_addr, mcfg),
        (xsdt_addr, xsdt),
    ];
    assert!(next <= ACPI_END, "ACPI tables overflow their area");
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn checksum_ok(table: &[u8]) -> bool {
        table.iter().fold(0u8, |a, b| a.wrapping_add(*b)) == 0
    }

    #[test]
    fn tables_are_well_formed() {
        let tables = tables(2);
        let (rsdp_addr, rsdp) = &tables[0];
        assert_eq!(*rsdp_addr, RSDP_ADDR);
        assert_eq!(&rsdp[..8], b"RSD PTR ");
        assert!(checksum_ok(&rsdp[..20]), "RSDP v1 checksum");
        assert!(checksum_ok(rsdp), "RSDP extended checksum");
        let xsdt_addr = u64::from_le_bytes(rsdp[24..32].try_into().unwrap());
        let find = |addr: u64| &tables.iter().find(|(a, _)| *a == addr).unwrap().1;
        let xsdt = find(xsdt_addr);
        assert_eq!(&xsdt[..4], b"XSDT");
        let mut signatures = Vec::new();
        for entry in xsdt[36..].chunks(8) {
            let table = find(u64::from_le_bytes(entry.try_into().unwrap()));
            let len = u32::from_le_bytes(table[4..8].try_into().unwrap()) as usize;
            assert_eq!(len, table.len());
            assert!(checksum_ok(table), "{:?}", &table[..4]);
            signatures.push(String::from_utf8_lossy(&table[..4]).into_owned());
        }
        assert_eq!(signatures, ["FACP", "APIC", "MCFG"]);
        for (_, table) in &tables[1..] {
            assert!(checksum_ok(table));
        }
        let madt = find(u64::from_le_bytes(xsdt[44..52].try_into().unwrap()));
        assert_eq!(madt[44], 0, "first MADT entry is a local APIC");
        assert_eq!(madt[52], 0, "second local APIC");
        assert_eq!(madt[60], 1, "then the IOAPIC");
        // No interrupt source override: ISA IRQ n is IOAPIC pin n in KVM's routing.
        let mut at = 44;
        while at < madt.len() {
            assert_ne!(madt[at], 2, "interrupt source override at {at}");
            at += madt[at + 1] as usize;
        }
        for irq in 0..16 {
            assert!(crate::interrupts::legacy_routes().contains(
                &crate::interrupts::Route::Irqchip {
                    gsi: irq,
                    chip: kvm_bindings::KVM_IRQCHIP_IOAPIC,
                    pin: irq,
                }
            ));
        }
        let fadt = find(u64::from_le_bytes(xsdt[36..44].try_into().unwrap()));
        assert_eq!(
            fadt[108], CENTURY,
            "FADT CENTURY names the RTC's century register"
        );
        let boot_arch = u16::from_le_bytes([fadt[109], fadt[110]]);
        assert_eq!(
            boot_arch, IAPC_BOOT_NO_VGA,
            "no 8042 to probe, CMOS RTC present"
        );
    }

    /// Disassembles the DSDT with ACPICA's `iasl` when it is installed (skipped otherwise).
    #[test]
    fn dsdt_disassembles() {
        let dir = std::env::temp_dir().join(format!("vmm-dsdt-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let aml = dir.join("dsdt.aml");
        std::fs::write(&aml, dsdt()).unwrap();
        let out = std::process::Command::new("iasl")
            .arg("-d")
            .arg(&aml)
            .output();
        let Ok(out) = out else {
            eprintln!("SKIP: iasl not installed");
            let _ = std::fs::remove_dir_all(&dir);
            return;
        };
        let dsl = std::fs::read_to_string(dir.join("dsdt.dsl")).unwrap_or_default();
        let _ = std::fs::remove_dir_all(&dir);
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        for needle in [
            "Device (PCI0)",
            "PNP0A08",
            "0xC0000000",
            "0x0000001000000000",
            "Device (COM1)",
            "PNP0501",
            "IO (Decode16,\n                    0x03F8,             // Range Minimum\n                    0x03F8,             // Range Maximum\n                    0x01,               // Alignment\n                    0x08,               // Length",
            "Interrupt (ResourceConsumer, Edge, ActiveHigh, Exclusive, ,, )\n                {\n                    0x00000004,",
            "Device (RTC)",
            "PNP0B00",
            "0x0070,             // Range Minimum",
            "Name (\\_S5, Package (0x04)  // _S5_: S5 System State\n    {\n        0x05,",
        ] {
            assert!(dsl.contains(needle), "{needle} missing in\n{dsl}");
        }
    }
}
