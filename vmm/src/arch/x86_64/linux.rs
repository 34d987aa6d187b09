//! Linux 64-bit boot protocol.
use std::path::Path;

use super::BootError;
use crate::vm::Vm;

pub const DEFAULT_CMDLINE: &str = "console=ttyS0 noapic";

/// Loads `kernel` (+ initrd, cmdline) and puts vCPU 0 at its 64-bit entry.
pub fn boot(
    _vm: &Vm,
    _kernel: &Path,
    _initrd: Option<&Path>,
    _cmdline: &str,
) -> Result<(), BootError> {
    Err(BootError::Other("--kernel is not implemented yet".into()))
}
