//! The hardware-reduced ACPI sleep registers (FADT SLEEP_CONTROL_REG / SLEEP_STATUS_REG), reduced
//! to what powers a VM off: the DSDT's `\_S5` says S5 (soft off) is sleep type 5, so Linux's
//! `poweroff` writes `SLP_EN | 5 << 2` to the control register, and the VM ends with exit
//! status 0 as after a reset. Without them Linux has no power-off method and halts forever.
//! Other sleep types are not advertised and are ignored; the status register reads 0.
use std::sync::Arc;

use crate::exit::{ExitReason, VmControl};
use crate::memory::RegionOps;

/// Control register at `ACPI_SLEEP_BASE`, status register right after it.
pub const ACPI_SLEEP_BASE: u16 = 0x600;
/// Ports the device decodes.
pub const ACPI_SLEEP_SIZE: u16 = 2;
/// PM1 control: the guest writes SLP_TYP and SLP_EN here to power off.
pub const SLEEP_CONTROL_OFFSET: u64 = 0;
/// PM1 status (reads 0).
pub const SLEEP_STATUS_OFFSET: u64 = 1;
/// The sleep type `\_S5` names (any value 0..7 would do; QEMU and firmware commonly use 5).
pub const S5_SLEEP_TYPE: u8 = 5;
const SLP_TYP_SHIFT: u8 = 2;
const SLP_TYP_MASK: u8 = 7;
const SLP_EN: u8 = 1 << 5;

/// The fixed-hardware sleep registers the FADT points at: entering S5 ends the VM
/// (`poweroff` in a Linux guest).
pub struct AcpiSleep {
    control: Arc<VmControl>,
}

impl AcpiSleep {
    /// A device that ends the VM through `control`.
    pub fn new(control: Arc<VmControl>) -> AcpiSleep {
        AcpiSleep { control }
    }
}

/// Whether a write to the sleep control register enters S5.
fn enters_s5(value: u8) -> bool {
    value & SLP_EN != 0 && (value >> SLP_TYP_SHIFT) & SLP_TYP_MASK == S5_SLEEP_TYPE
}

impl RegionOps for AcpiSleep {
    fn read(&self, _offset: u64, _size: u32) -> u64 {
        0
    }

    fn write(&self, offset: u64, _size: u32, value: u64) {
        if offset == SLEEP_CONTROL_OFFSET && enters_s5(value as u8) {
            self.control.request_exit(ExitReason::Reset);
        } else if offset == SLEEP_CONTROL_OFFSET {
            log::debug!("acpi: sleep control write {value:#x} ignored (only S5 is supported)");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_slp_en_with_the_s5_type_powers_off() {
        assert!(enters_s5(0x34), "what Linux writes for S5");
        assert!(!enters_s5(0x14), "S5 type without SLP_EN");
        assert!(!enters_s5(0x20 | 3 << 2), "S3 is not offered");
        assert!(!enters_s5(0x80 | 0x20), "S0");
    }
}
