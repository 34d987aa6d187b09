//! Guest arguments: the string given to `vmm --guest-args`, which the VMM writes NUL-terminated
//! at `layout::ARGS_ADDR` before the program starts (all zero when none were given).
//!
//! Format: `key=value` words separated by spaces (a word without `=` is a flag with an empty
//! value). The first occurrence of a key wins.
use crate::layout::{ARGS_ADDR, ARGS_SIZE};

/// The whole argument string (empty when none were given or it is not UTF-8).
pub fn all() -> &'static str {
    // SAFETY: the args page is guest RAM, identity-mapped and user-readable; the VMM writes it
    // before any vCPU runs and nothing writes it afterwards.
    let page = unsafe { core::slice::from_raw_parts(ARGS_ADDR as *const u8, ARGS_SIZE as usize) };
    let len = page.iter().position(|&b| b == 0).unwrap_or(0);
    core::str::from_utf8(&page[..len]).unwrap_or("")
}

/// Every (key, value) pair, in order.
pub fn pairs() -> impl Iterator<Item = (&'static str, &'static str)> {
    all()
        .split(' ')
        .filter(|w| !w.is_empty())
        .map(|w| w.split_once('=').unwrap_or((w, "")))
}

/// The value of `key`, if given.
pub fn get(key: &str) -> Option<&'static str> {
    pairs().find(|(k, _)| *k == key).map(|(_, v)| v)
}

/// `key` as a number (decimal or 0x-prefixed hex); `None` when missing or malformed.
pub fn get_u64(key: &str) -> Option<u64> {
    let text = get(key)?;
    match text.strip_prefix("0x") {
        Some(hex) => u64::from_str_radix(hex, 16).ok(),
        None => text.parse().ok(),
    }
}

/// `key` as a number, or `default` when missing. A malformed value is reported and ends the
/// program (exit status 2), so a typo never silently runs with the default.
pub fn u64_or(key: &str, default: u64) -> u64 {
    match get(key) {
        None => default,
        Some(text) => get_u64(key).unwrap_or_else(|| {
            crate::println!("guest args: {key}={text} is not a number");
            crate::testdev::exit(2)
        }),
    }
}

/// `key` as a number when given; a malformed value is reported and ends the program (exit
/// status 2), as in [`u64_or`].
pub fn opt_u64(key: &str) -> Option<u64> {
    get(key).map(|_| u64_or(key, 0))
}

/// `key`'s value, or `default` when missing.
pub fn str_or(key: &str, default: &'static str) -> &'static str {
    get(key).unwrap_or(default)
}
