//! The VMM's device options (`--device KIND,...` and `--ivshmem VARIANT,...`): arbitrary
//! strings through the one grammar (`vmm::options`).
//!
//! Input: the option text (lossy UTF-8), tried as both. Checked: no panic; errors print a
//! message; accepted ivshmem sizes are non-zero powers of two; a doorbell has 1..=1024 vectors.
#![no_main]

use libfuzzer_sys::fuzz_target;
use vmm::devices::ivshmem::options::{IvshmemVariant, MAX_VECTORS};
use vmm::devices::plug::DeviceOptions;
use vmm::options::{parse_device, parse_ivshmem};

fuzz_target!(|data: &[u8]| {
    let text = String::from_utf8_lossy(data);
    for parsed in [parse_device(&text), parse_ivshmem(&text)] {
        match parsed {
            Ok(DeviceOptions::Ivshmem(options)) => match options.variant {
                IvshmemVariant::Plain { size, .. } => {
                    assert!(size.is_none_or(|s| s.is_power_of_two()))
                }
                IvshmemVariant::Doorbell { vectors, .. } => {
                    assert!((1..=MAX_VECTORS).contains(&vectors))
                }
            },
            Ok(DeviceOptions::PciTestDev(config)) => {
                assert!(config.ram_size.is_power_of_two() && (1..=2048).contains(&config.vectors))
            }
            Ok(DeviceOptions::VhostUser(options)) => {
                assert!(
                    options.queue_size.is_power_of_two() && options.queues.is_none_or(|q| q >= 1)
                );
                assert!(!options.socket.as_os_str().is_empty());
            }
            Ok(other) => panic!("the command line cannot ask for {other:?}"),
            Err(e) => assert!(!e.to_string().is_empty()),
        }
    }
});
