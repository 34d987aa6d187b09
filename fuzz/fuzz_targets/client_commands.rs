//! The `ivshmem-client` command language: arbitrary scripts, split and parsed.
//!
//! The parser lives in the client binary (peer/src/bin/ivshmem-client/commands.rs); it has no
//! dependencies, so it is compiled into this target as a module.
//! Input: the script text (lossy UTF-8). Checked: no panic; every command either parses or
//! gives a message; `write` data is never longer than its text.
#![no_main]

#[allow(dead_code)]
#[path = "../../peer/src/bin/ivshmem-client/commands.rs"]
mod commands;

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let script = String::from_utf8_lossy(data);
    for line in commands::split_commands(&script) {
        assert!(!line.trim().is_empty());
        match commands::parse(&line) {
            Ok(commands::Command::Write { data, .. }) => assert!(data.len() <= line.len()),
            Ok(_) => {}
            Err(e) => assert!(!e.to_string().is_empty()),
        }
        if let Err(e) = commands::unescape(&line) {
            assert!(!e.to_string().is_empty());
        }
    }
});
