//! The `ivshmem-client` command language: arbitrary scripts, split and parsed.
//!
//! The parser is the peer library's `peer_cli::commands`, shared by `ivshmem-client` and
//! `ivshmem-guest-client`.
//! Input: the script text (lossy UTF-8). Checked: no panic; every command either parses or
//! gives a message; `write` data is never longer than its text; a script parses exactly when
//! each of its commands does.
#![no_main]

use libfuzzer_sys::fuzz_target;
use peer_cli::commands;

fuzz_target!(|data: &[u8]| {
    let script = String::from_utf8_lossy(data);
    // A whole script parses exactly when each of its commands does.
    let each_ok = commands::split_commands(&script)
        .iter()
        .all(|line| commands::parse(line).is_ok());
    assert_eq!(commands::parse_script(&script).is_ok(), each_ok);
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
