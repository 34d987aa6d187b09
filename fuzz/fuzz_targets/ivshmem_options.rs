//! The VMM's `--ivshmem` option value: arbitrary strings.
//!
//! Input: the option text (lossy UTF-8). Checked: no panic; errors print a message; accepted
//! sizes are non-zero; a doorbell has 1..=1024 vectors.
#![no_main]

use libfuzzer_sys::fuzz_target;
use vmm::devices::ivshmem::options::{parse_size, IvshmemOptions, IvshmemVariant, MAX_VECTORS};

fuzz_target!(|data: &[u8]| {
    let text = String::from_utf8_lossy(data);
    match IvshmemOptions::parse(&text) {
        Ok(options) => match options.variant {
            IvshmemVariant::Plain { size, .. } => assert_ne!(size, Some(0)),
            IvshmemVariant::Doorbell { vectors, .. } => {
                assert!((1..=MAX_VECTORS).contains(&vectors))
            }
        },
        Err(e) => assert!(!e.to_string().is_empty()),
    }
    for unit in [1, 1 << 20] {
        if let Err(e) = parse_size(&text, unit) {
            assert!(!e.to_string().is_empty());
        }
    }
});
