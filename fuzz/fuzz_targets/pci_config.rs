//! PCI config space through ECAM and conf1: arbitrary sequences of reads and writes of any
//! size at any offset, on a bus with the host bridge and an ivshmem-doorbell function (BARs,
//! MSI-X capability).
//!
//! Input: operations, an opcode byte each (mod 6), then its operands (little-endian):
//! 0 `off:u32 size:u8` ECAM read at `off` (mod 1 MiB + 4 KiB, so past the window too);
//! 1 `off:u32 size:u8 value:u64` ECAM write; 2 `value:u32` conf1 address register write;
//! 3 `port:u8 size:u8` conf1 data read (0xCFC + port mod 4); 4 `port:u8 size:u8 value:u64`
//! conf1 data write; 5 `port:u16 size:u8 value:u64` any I/O port write. Sizes are 1 + (n mod 8).
//!
//! Checked: no panic; read-only identity registers keep their values; absent functions read
//! all-ones; BARs are mapped exactly where the function says; MSI-X wiring matches the
//! capability's control bits.
#![no_main]

use fuzz_support::machine::Machine;
use fuzz_support::Input;
use libfuzzer_sys::fuzz_target;
use vmm::arch::x86_64::layout::PCI_ECAM_ADDR as ECAM_BASE;
use vmm::guest_abi::ivshmem::{DEVICE_ID, VENDOR_ID};
use vmm::pci::Bdf;

const MAX_OPS: usize = 512;
const ECAM_SPAN: u64 = (1 << 20) + 4096;

fn size(input: &mut Input) -> usize {
    usize::from(input.u8() % 8) + 1
}

fn check(m: &Machine) {
    let host_bridge = Bdf::new(0, 0, 0);
    let ivshmem = m.bdf;
    assert_eq!(m.bus.config_read(host_bridge, 0, 4), 0x29C0_8086);
    assert_eq!(
        m.bus.config_read(ivshmem, 0, 4),
        u32::from(DEVICE_ID) << 16 | u32::from(VENDOR_ID)
    );
    assert_eq!(m.bus.config_read(ivshmem, 0x0A, 2), 0x0500, "class code");
    assert_eq!(
        m.bus.config_read(ivshmem, 0x2C, 4),
        0x1100_1af4,
        "subsystem"
    );
    assert_eq!(m.bus.config_read(Bdf::new(0, 7, 0), 0, 4), u32::MAX);
    assert_eq!(
        m.bus.config_read(Bdf::new(0, m.bdf.device, 3), 0, 2),
        0xFFFF
    );
    for index in [0, 1, 2] {
        if let Some(address) = m.bar_address(index) {
            let root = m.memory.root();
            assert!(
                root.subregions()
                    .iter()
                    .any(|r| r.address() == address && r.priority() == 1),
                "BAR{index} is in the memory root at {address:#x}"
            );
        }
    }
    m.check_msix_wiring();
}

fuzz_target!(|data: &[u8]| {
    let m = Machine::new(4);
    let mut input = Input::new(data);
    for _ in 0..MAX_OPS {
        if input.is_empty() {
            break;
        }
        match input.u8() % 6 {
            0 => {
                let offset = u64::from(input.u32()) % ECAM_SPAN;
                let size = size(&mut input);
                let value = Machine::read(&m.memory, ECAM_BASE + offset, size);
                let aligned = matches!(size, 1 | 2 | 4) && offset.is_multiple_of(size as u64);
                let ecam_serves = m
                    .memory
                    .lookup(ECAM_BASE + offset)
                    .is_some_and(|r| r.region.name() == "pci-ecam");
                if aligned && ecam_serves && (offset >> 12) & 7 != 0 {
                    // Functions 1..7 do not exist.
                    assert_eq!(value, (1u64 << (8 * size)) - 1);
                }
            }
            1 => {
                let offset = u64::from(input.u32()) % ECAM_SPAN;
                let size = size(&mut input);
                let value = input.u64();
                Machine::write(&m.memory, ECAM_BASE + offset, size, value);
            }
            2 => Machine::write(&m.io, 0xCF8, 4, u64::from(input.u32())),
            3 => {
                let port = 0xCFC + u64::from(input.u8() % 4);
                let size = size(&mut input);
                Machine::read(&m.io, port, size);
            }
            4 => {
                let port = 0xCFC + u64::from(input.u8() % 4);
                let size = size(&mut input);
                let value = input.u64();
                Machine::write(&m.io, port, size, value);
            }
            _ => {
                let port = u64::from(input.u16());
                let size = size(&mut input);
                let value = input.u64();
                Machine::write(&m.io, port, size, value);
            }
        }
        m.deliver_bound();
        check(&m);
    }
});
