//! The command language of `ivshmem-client` (and `ivshmem-guest-client`): splitting a script
//! into commands and parsing each into a [`Command`]. Pure (no I/O), so every rule is
//! unit-tested and fuzzed.
//!
//! Commands are separated by newline, CR or `;` (as in QEMU's ivshmem-client). In `write` text,
//! `\;` is a literal semicolon and `\n`, `\t`, `\0`, `\\`, `\xHH` are the usual escapes.
//!
//! ```
//! use peer_cli::commands::{parse_script, Command, IntTarget};
//!
//! let script = parse_script("int 1 0; wait 0 500").unwrap();
//! assert_eq!(
//!     script[0],
//!     Command::Int { target: IntTarget::One { peer: 1, vector: 0 }, timeout_ms: None }
//! );
//! assert!(parse_script("int 1").unwrap_err().to_string().starts_with("`int 1`: usage"));
//! ```

/// Which vectors `int` rings.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum IntTarget {
    /// One vector of one peer.
    One {
        /// The peer's id.
        peer: u16,
        /// The vector to ring.
        vector: u32,
    },
    /// Every vector of one peer.
    AllOf {
        /// The peer's id.
        peer: u16,
    },
    /// Every vector of every other peer (not ourselves), as QEMU's `int all`.
    Everyone,
}

/// One parsed command.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Command {
    /// `help`, `?`: the command list.
    Help,
    /// `dump`: our id and vectors, then what we know about the others.
    Dump,
    /// `peers`: one line per other peer.
    Peers,
    /// `int ...`: ring; a peer or vector not known yet is awaited up to `timeout_ms` (default
    /// [`DEFAULT_ANNOUNCE_WAIT_MS`]), since the server may still be announcing it.
    Int {
        /// Which vectors to ring.
        target: IntTarget,
        /// How long to await a peer or vector not announced yet, in milliseconds.
        timeout_ms: Option<u64>,
    },
    /// `read OFFSET LEN`: a hex dump of the shared memory.
    Read {
        /// Where to start, in bytes from the start of the shared memory.
        offset: usize,
        /// How many bytes.
        len: usize,
    },
    /// `write OFFSET TEXT`: store bytes into the shared memory.
    Write {
        /// Where to start, in bytes from the start of the shared memory.
        offset: usize,
        /// The bytes, escapes already interpreted.
        data: Vec<u8>,
    },
    /// `wait [VECTOR|any] [MS]`: wait for `vector` (any when `None`) for up to `timeout_ms`
    /// (forever when `None`).
    Wait {
        /// The vector, or `None` for any of ours.
        vector: Option<u32>,
        /// The limit in milliseconds, or `None` for none.
        timeout_ms: Option<u64>,
    },
    /// `wait-peer [PEER|any] [MS]`: wait until `peer` (any other peer when `None`) is known.
    WaitPeer {
        /// The peer, or `None` for any other peer.
        peer: Option<u16>,
        /// The limit in milliseconds, or `None` for none.
        timeout_ms: Option<u64>,
    },
    /// `sleep MS`: pause.
    Sleep {
        /// The pause in milliseconds.
        ms: u64,
    },
    /// `quit`, `exit`: leave.
    Quit,
}

impl Command {
    /// True for the commands that need the server's list of peers (`peers`, `wait-peer`,
    /// `int all`), which a peer behind a device (a guest) does not see.
    pub fn needs_peer_list(&self) -> bool {
        matches!(
            self,
            Command::Peers
                | Command::WaitPeer { .. }
                | Command::Int {
                    target: IntTarget::Everyone,
                    ..
                }
        )
    }
}

/// A command line that could not be parsed; the message names the problem.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct ParseError(pub String);

fn err<T>(msg: impl Into<String>) -> Result<T, ParseError> {
    Err(ParseError(msg.into()))
}

/// How long `int` waits for a peer or vector the server has not announced yet, when no
/// timeout is given.
pub const DEFAULT_ANNOUNCE_WAIT_MS: u64 = 1000;

/// The help text printed by `help` and `?`.
pub const HELP: &str = "\
available commands:
  help, ?                 show this help
  dump                    our id and vectors, then every peer with its vectors
  peers                   one line per other peer: peer_id=ID vectors=N
  int PEER VECTOR [MS]    ring VECTOR of PEER (PEER may be our own id); waits up to
                          MS (default 1000) for it to be announced if not known yet
  int PEER all [MS]       ring every vector of PEER
  int all                 ring every vector of every other peer
  read OFFSET LEN         hex dump of LEN bytes of shared memory at OFFSET
  write OFFSET TEXT       write TEXT at OFFSET (escapes: \\n \\t \\0 \\\\ \\; \\xHH)
  wait [VECTOR|any] [MS]  wait for a notification (default: any vector, forever);
                          a vector not announced yet is awaited within MS
  wait-peer [PEER|any] [MS]  wait until PEER (or any other peer) is connected
  sleep MS                pause
  quit, exit              leave
numbers are decimal or 0x-prefixed hex; commands are separated by newline or ';'";

/// Splits a script into command strings at newline, CR and unescaped `;`. Blank commands are
/// dropped; escapes are kept for [`parse`] to interpret.
pub fn split_commands(script: &str) -> Vec<String> {
    let mut commands = Vec::new();
    let mut current = String::new();
    let mut chars = script.chars();
    while let Some(c) = chars.next() {
        match c {
            '\\' => {
                current.push(c);
                if let Some(next) = chars.next() {
                    current.push(next);
                }
            }
            '\n' | '\r' | ';' => {
                push_trimmed(&mut commands, &current);
                current.clear();
            }
            _ => current.push(c),
        }
    }
    push_trimmed(&mut commands, &current);
    commands
}

fn push_trimmed(commands: &mut Vec<String>, command: &str) {
    let trimmed = command.trim();
    if !trimmed.is_empty() {
        commands.push(trimmed.to_string());
    }
}

/// Parses a decimal or `0x` hex number; `what` names it in the error.
pub fn parse_number(token: &str, what: &str) -> Result<u64, ParseError> {
    let parsed = match token
        .strip_prefix("0x")
        .or_else(|| token.strip_prefix("0X"))
    {
        Some(hex) => u64::from_str_radix(hex, 16),
        None => token.parse::<u64>(),
    };
    parsed.or_else(|_| {
        err(format!(
            "invalid {what} `{token}`: expected a decimal or 0x-prefixed hex number that fits in 64 bits"
        ))
    })
}

fn parse_peer(token: &str) -> Result<u16, ParseError> {
    let n = parse_number(token, "peer id")?;
    u16::try_from(n).or_else(|_| err(format!("peer id {n} is out of range 0..=65535")))
}

fn parse_vector(token: &str) -> Result<u32, ParseError> {
    let n = parse_number(token, "vector")?;
    u32::try_from(n).or_else(|_| err(format!("vector {n} is out of range 0..=4294967295")))
}

fn parse_usize(token: &str, what: &str) -> Result<usize, ParseError> {
    let n = parse_number(token, what)?;
    usize::try_from(n).or_else(|_| {
        err(format!(
            "{what} {n} does not fit in this host's address space"
        ))
    })
}

fn is_any(token: &str) -> bool {
    matches!(token, "any" | "*")
}

/// Splits and parses a whole script; the error names the failing command.
pub fn parse_script(text: &str) -> Result<Vec<Command>, ParseError> {
    split_commands(text)
        .iter()
        .map(|line| parse(line).map_err(|e| ParseError(format!("`{line}`: {e}"))))
        .collect()
}

/// Parses one command (as produced by [`split_commands`]).
pub fn parse(line: &str) -> Result<Command, ParseError> {
    let line = line.trim();
    let (word, rest) = match line.find(char::is_whitespace) {
        Some(i) => (&line[..i], line[i..].trim_start()),
        None => (line, ""),
    };
    let args: Vec<&str> = rest.split_whitespace().collect();
    let no_args = |cmd: Command| {
        if args.is_empty() {
            Ok(cmd)
        } else {
            err(format!("`{word}` takes no arguments, got `{rest}`"))
        }
    };
    match word {
        "help" | "?" => no_args(Command::Help),
        "dump" => no_args(Command::Dump),
        "peers" => no_args(Command::Peers),
        "quit" | "exit" => no_args(Command::Quit),
        "int" => {
            let (target, timeout) = match args.as_slice() {
                ["all"] => (IntTarget::Everyone, None),
                [peer, "all", timeout @ ..] if timeout.len() <= 1 => (
                    IntTarget::AllOf {
                        peer: parse_peer(peer)?,
                    },
                    timeout.first(),
                ),
                [peer, vector, timeout @ ..] if timeout.len() <= 1 => (
                    IntTarget::One {
                        peer: parse_peer(peer)?,
                        vector: parse_vector(vector)?,
                    },
                    timeout.first(),
                ),
                _ => {
                    return err(format!(
                        "usage: `int PEER VECTOR [MS]`, `int PEER all [MS]` or `int all` (got `int {rest}`)"
                    ))
                }
            };
            Ok(Command::Int {
                target,
                timeout_ms: timeout
                    .map(|t| parse_number(t, "timeout (ms)"))
                    .transpose()?,
            })
        }
        "read" => match args.as_slice() {
            [offset, len] => Ok(Command::Read {
                offset: parse_usize(offset, "offset")?,
                len: parse_usize(len, "length")?,
            }),
            _ => err(format!("usage: `read OFFSET LEN` (got `read {rest}`)")),
        },
        "write" => {
            let (offset, text) = match rest.find(char::is_whitespace) {
                Some(i) => (&rest[..i], rest[i..].trim_start()),
                None => (rest, ""),
            };
            if offset.is_empty() || text.is_empty() {
                return err(format!("usage: `write OFFSET TEXT` (got `write {rest}`)"));
            }
            Ok(Command::Write {
                offset: parse_usize(offset, "offset")?,
                data: unescape(text)?,
            })
        }
        "wait" => {
            let (vector, timeout) = optional_pair(&args, "wait [VECTOR|any] [TIMEOUT_MS]")?;
            Ok(Command::Wait {
                vector: vector.map(parse_vector).transpose()?,
                timeout_ms: timeout
                    .map(|t| parse_number(t, "timeout (ms)"))
                    .transpose()?,
            })
        }
        "wait-peer" => {
            let (peer, timeout) = optional_pair(&args, "wait-peer [PEER|any] [TIMEOUT_MS]")?;
            Ok(Command::WaitPeer {
                peer: peer.map(parse_peer).transpose()?,
                timeout_ms: timeout
                    .map(|t| parse_number(t, "timeout (ms)"))
                    .transpose()?,
            })
        }
        "sleep" => match args.as_slice() {
            [ms] => Ok(Command::Sleep {
                ms: parse_number(ms, "duration (ms)")?,
            }),
            _ => err(format!("usage: `sleep MS` (got `sleep {rest}`)")),
        },
        "" => err("empty command"),
        other => err(format!("unknown command `{other}` (try `help`)")),
    }
}

/// Up to two optional arguments where the first may be `any`/`*` (meaning "not given").
fn optional_pair<'a>(
    args: &[&'a str],
    usage: &str,
) -> Result<(Option<&'a str>, Option<&'a str>), ParseError> {
    match args {
        [] => Ok((None, None)),
        [first] => Ok(((!is_any(first)).then_some(*first), None)),
        [first, second] => Ok(((!is_any(first)).then_some(*first), Some(*second))),
        _ => err(format!("usage: `{usage}` (got {} arguments)", args.len())),
    }
}

/// Interprets the escapes allowed in `write` text.
pub fn unescape(text: &str) -> Result<Vec<u8>, ParseError> {
    let mut out = Vec::with_capacity(text.len());
    let mut chars = text.chars();
    while let Some(c) = chars.next() {
        if c != '\\' {
            let mut buf = [0u8; 4];
            out.extend_from_slice(c.encode_utf8(&mut buf).as_bytes());
            continue;
        }
        match chars.next() {
            Some('n') => out.push(b'\n'),
            Some('t') => out.push(b'\t'),
            Some('r') => out.push(b'\r'),
            Some('0') => out.push(0),
            Some('\\') => out.push(b'\\'),
            Some(';') => out.push(b';'),
            Some('x') => {
                let hex: String = chars.by_ref().take(2).collect();
                let byte = (hex.len() == 2)
                    .then(|| u8::from_str_radix(&hex, 16).ok())
                    .flatten()
                    .ok_or_else(|| {
                        ParseError(format!(
                            "invalid escape `\\x{hex}`: expected two hex digits"
                        ))
                    })?;
                out.push(byte);
            }
            Some(other) => return err(format!("unknown escape `\\{other}` in text")),
            None => return err("text ends with a lone `\\`"),
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn split_on_newline_cr_and_semicolon() {
        assert_eq!(
            split_commands("dump; int 1 0\r\nread 0 16;;  \n"),
            vec!["dump", "int 1 0", "read 0 16"]
        );
        assert_eq!(split_commands(""), Vec::<String>::new());
        assert_eq!(
            split_commands(r"write 0 a\;b; peers"),
            vec![r"write 0 a\;b", "peers"]
        );
        assert_eq!(split_commands("write 0 a\\"), vec!["write 0 a\\"]);
    }

    #[test]
    fn numbers_decimal_and_hex() {
        assert_eq!(parse_number("42", "x"), Ok(42));
        assert_eq!(parse_number("0x1F", "x"), Ok(31));
        assert_eq!(parse_number("0X10", "x"), Ok(16));
        assert!(parse_number("0x", "offset")
            .unwrap_err()
            .0
            .contains("invalid offset `0x`"));
        assert!(parse_number("-1", "x").is_err());
        assert!(parse_number("18446744073709551616", "x").is_err());
        assert!(parse_number("0xg", "x").is_err());
        assert!(parse_number("", "x").is_err());
    }

    #[test]
    fn qemu_commands() {
        assert_eq!(parse("help"), Ok(Command::Help));
        assert_eq!(parse("?"), Ok(Command::Help));
        assert_eq!(parse("dump"), Ok(Command::Dump));
        let int = |target, timeout_ms| Ok(Command::Int { target, timeout_ms });
        assert_eq!(
            parse("int 3 1"),
            int(IntTarget::One { peer: 3, vector: 1 }, None)
        );
        assert_eq!(
            parse("int 0x10 all"),
            int(IntTarget::AllOf { peer: 16 }, None)
        );
        assert_eq!(parse("int all"), int(IntTarget::Everyone, None));
        assert_eq!(
            parse("int 1 2 300"),
            int(IntTarget::One { peer: 1, vector: 2 }, Some(300))
        );
        assert_eq!(
            parse("int 1 all 0"),
            int(IntTarget::AllOf { peer: 1 }, Some(0))
        );
        assert!(parse("int").is_err());
        assert!(parse("int 1").is_err());
        assert!(parse("int 1 2 3 4").is_err());
        assert!(parse("int all 5").is_err());
        assert!(parse("int 1 2 x").unwrap_err().0.contains("timeout"));
        assert!(parse("int 65536 0").unwrap_err().0.contains("65536"));
        assert!(parse("int x 0").unwrap_err().0.contains("peer id `x`"));
        assert!(parse("dump now").is_err());
    }

    #[test]
    fn memory_commands() {
        assert_eq!(
            parse("read 0x100 16"),
            Ok(Command::Read {
                offset: 256,
                len: 16
            })
        );
        assert!(parse("read 0").is_err());
        assert_eq!(
            parse("write 8   hello world"),
            Ok(Command::Write {
                offset: 8,
                data: b"hello world".to_vec()
            })
        );
        assert_eq!(
            parse(r"write 0 a\;b\n\x00\\"),
            Ok(Command::Write {
                offset: 0,
                data: b"a;b\n\0\\".to_vec()
            })
        );
        assert!(parse("write 0").is_err());
        assert!(parse("write").is_err());
        assert!(parse(r"write 0 \q").unwrap_err().0.contains(r"\q"));
        assert!(parse(r"write 0 \x4").is_err());
        assert!(parse(r"write 0 ab\").is_err());
        assert_eq!(
            parse("write 0 héllo"),
            Ok(Command::Write {
                offset: 0,
                data: "héllo".as_bytes().to_vec()
            })
        );
    }

    #[test]
    fn wait_commands() {
        assert_eq!(
            parse("wait"),
            Ok(Command::Wait {
                vector: None,
                timeout_ms: None
            })
        );
        assert_eq!(
            parse("wait 2"),
            Ok(Command::Wait {
                vector: Some(2),
                timeout_ms: None
            })
        );
        assert_eq!(
            parse("wait any 500"),
            Ok(Command::Wait {
                vector: None,
                timeout_ms: Some(500)
            })
        );
        assert_eq!(
            parse("wait-peer 1 1000"),
            Ok(Command::WaitPeer {
                peer: Some(1),
                timeout_ms: Some(1000)
            })
        );
        assert!(parse("wait 1 2 3").is_err());
        assert_eq!(parse("sleep 0x10"), Ok(Command::Sleep { ms: 16 }));
        assert!(parse("bogus 1")
            .unwrap_err()
            .0
            .contains("unknown command `bogus`"));
    }

    #[test]
    fn scripts_name_the_failing_command() {
        assert_eq!(
            parse_script("dump; sleep 1"),
            Ok(vec![Command::Dump, Command::Sleep { ms: 1 }])
        );
        assert_eq!(
            parse_script("dump; read 0").unwrap_err().0,
            "`read 0`: usage: `read OFFSET LEN` (got `read 0`)"
        );
    }

    #[test]
    fn commands_that_need_the_peer_list() {
        for (line, needs) in [
            ("peers", true),
            ("wait-peer", true),
            ("int all", true),
            ("int 1 all", false),
            ("int 1 0", false),
            ("wait", false),
            ("dump", false),
        ] {
            assert_eq!(parse(line).unwrap().needs_peer_list(), needs, "{line}");
        }
    }

    #[test]
    fn no_input_panics() {
        for line in [
            "",
            " ",
            "\\",
            "write \\",
            "int all all",
            "read 0xffffffffffffffff 0xffffffffffffffff",
            "wait -1",
            "é",
            "write 0 \\xé",
            "write 0 \\x",
            "int 0x 0",
        ] {
            let _ = parse(line);
            let _ = split_commands(line);
        }
    }
}
