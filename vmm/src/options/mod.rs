//! The command line's edge: option strings become typed options here, and nowhere else. Every
//! device is spelled in one grammar ([`keyvalue`]): `KIND[,KEY=VALUE|,FLAG]...`, parsed into a
//! [`crate::devices::plug::DeviceOptions`] ([`device`]); the device modules never see a string.
//! The `vmm` binary hands these parsers to clap as value parsers, so a bad option is refused
//! before anything starts, with a message naming the device, the key and the value.
pub mod device;
pub mod keyvalue;
pub mod memory;

pub use device::{parse_device, parse_ivshmem, DEVICE_KINDS};
pub use keyvalue::{KeyValues, OptionError};
pub use memory::parse_memory;
