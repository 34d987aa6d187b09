//! Printing for the command-line clients: results on stdout, complaints on stderr prefixed with
//! the program's name. Write errors (e.g. a closed pipe) are ignored so that printing can never
//! panic or end a session.

use std::fmt;
use std::io::Write;

/// Prints one line on stdout, ignoring write errors: `say!("peer_id={id}")`, `say!()`.
#[macro_export]
macro_rules! say {
    () => {
        $crate::output::say_line(format_args!(""))
    };
    ($($arg:tt)*) => {
        $crate::output::say_line(format_args!($($arg)*))
    };
}

/// Writes `line` and a newline on stdout, ignoring write errors (see [`say!`](crate::say)).
pub fn say_line(line: fmt::Arguments<'_>) {
    let mut out = std::io::stdout().lock();
    let _ = writeln!(out, "{line}");
}

/// Prints `<program>: <message>` on stderr, ignoring write errors.
pub fn complain(program: &str, message: impl fmt::Display) {
    let mut err = std::io::stderr().lock();
    let _ = writeln!(err, "{program}: {message}");
}

/// Writes `text` on stdout without a newline and flushes (prompts), ignoring write errors.
pub fn prompt(text: &str) {
    let mut out = std::io::stdout().lock();
    let _ = write!(out, "{text}");
    let _ = out.flush();
}

/// Flushes stdout, ignoring errors.
pub fn flush_stdout() {
    let _ = std::io::stdout().flush();
}
