//! The server's command line: arbitrary argument vectors.
//!
//! Input: arguments separated by NUL bytes (lossy UTF-8 decoding keeps non-UTF-8 inputs
//! reachable through `\u{FFFD}`; raw non-UTF-8 `OsString`s are built from bytes 0x80.. after a
//! 0x01 marker). Checked: no panic; errors print a message; accepted sizes are non-zero, round
//! up to a power of two without overflow and are not smaller than their whole part.
#![no_main]

use std::ffi::OsString;
use std::os::unix::ffi::OsStringExt;

use ivshmem_server::options::{self, Command};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let args: Vec<OsString> = data
        .split(|&b| b == 0)
        .take(64)
        .map(|arg| match arg.strip_prefix(&[1]) {
            Some(raw) => OsString::from_vec(raw.to_vec()),
            None => OsString::from(String::from_utf8_lossy(arg).into_owned()),
        })
        .collect();
    match options::parse(args) {
        Ok(Command::Run(opts)) => {
            assert!(opts.requested_size > 0);
            let size = opts.shm_size();
            assert!(size.is_power_of_two() && size >= opts.requested_size);
            assert!(opts.vectors <= protocol::wire::MAX_VECTORS);
            assert!(opts.queue_limit >= 1);
            let _ = opts.mode();
        }
        Ok(Command::Help) => {}
        Err(e) => assert!(!e.to_string().is_empty()),
    }
    if let Ok(text) = std::str::from_utf8(data) {
        if let Ok(size) = options::parse_size(text) {
            assert!(size > 0);
            // The whole part alone, computed without overflow, is a lower bound.
            if let Some(lower) = whole_part_with_suffix(text) {
                assert!(lower <= u128::from(size), "{text:?} parsed as {size}");
            }
        }
    }
});

/// `DIGITS[.DIGITS]SUFFIX` -> DIGITS << suffix shift, or None if it does not have that form (or
/// does not fit in a u128, when parse_size must refuse it anyway).
fn whole_part_with_suffix(text: &str) -> Option<u128> {
    let shift = match text.chars().last()?.to_ascii_uppercase() {
        'B' => 0,
        'K' => 10,
        'M' => 20,
        'G' => 30,
        'T' => 40,
        _ => return None,
    };
    let number = &text[..text.len() - 1];
    let whole = number.split('.').next()?;
    whole.parse::<u128>().ok()?.checked_mul(1 << shift)
}
