//! The i8042 keyboard controller, reduced to what ends a VM: writing 0xFE (pulse the reset
//! line) to the command port 0x64 resets the machine, which for us means the VM exits with 0.
//! Reads return 0 (no data, input buffer empty), so polling guests don't spin.
use std::sync::Arc;

use crate::exit::{ExitReason, VmControl};
use crate::memory::RegionOps;

/// Base port of the region (0x60..0x65 covers data 0x60 and command/status 0x64).
pub const I8042_BASE: u16 = 0x60;
/// Ports the region spans.
pub const I8042_SIZE: u16 = 5;
const COMMAND_OFFSET: u64 = 4;
const CMD_RESET: u64 = 0xFE;

/// Just enough of the keyboard controller for a guest to reset the machine: command 0xFE
/// (pulse the reset line) ends the VM as a reset.
pub struct I8042 {
    control: Arc<VmControl>,
}

impl I8042 {
    /// A controller that ends the VM through `control`.
    pub fn new(control: Arc<VmControl>) -> I8042 {
        I8042 { control }
    }
}

impl RegionOps for I8042 {
    fn read(&self, _offset: u64, _size: u32) -> u64 {
        0
    }

    fn write(&self, offset: u64, _size: u32, value: u64) {
        if offset == COMMAND_OFFSET && value & 0xFF == CMD_RESET {
            self.control.request_exit(ExitReason::Reset);
        }
    }
}
