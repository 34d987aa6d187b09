//! The command line: QEMU's `ivshmem-server` flags with the same defaults and getopt's
//! spellings (`hvFp:S:m:M:l:n:`: combined flags `-vF`, a flag cluster ending in an option with
//! its value attached `-Fl4M`, attached or separate arguments `-l4M` / `-l 4M`, any next word as
//! a value `-n -1`, `--` ends options), plus long options for our extensions.
//!
//! clap (builder API) does the tokenizing; values are checked here in command-line order, so
//! the first bad one is reported and the last of `-M`, `-m`, `--memfd` wins, as with getopt.
//! Every error is a [`UsageError`] naming the offending option and value; nothing here panics
//! or exits, and `-h` prints our own text ([`help_text`]), not clap's.

use std::ffi::OsString;
use std::path::PathBuf;

use protocol::size::SizeError;
use protocol::wire::MAX_VECTORS;

/// QEMU's default pid file (`-p`), written only in daemon mode.
pub const DEFAULT_PID_FILE: &str = "/var/run/ivshmem-server.pid";
pub use protocol::DEFAULT_SOCKET_PATH;
/// QEMU's default POSIX shared-memory name (`-M`): /dev/shm/ivshmem.
pub const DEFAULT_SHM_NAME: &str = "ivshmem";
/// QEMU's default shared-memory size (`-l`): 4 MiB.
pub const DEFAULT_SHM_SIZE: u64 = 4 * 1024 * 1024;
/// QEMU's default vectors per peer (`-n`).
pub const DEFAULT_VECTORS: u32 = 1;
/// Default bound of a peer's outgoing queue of join/leave notices, in messages.
pub const DEFAULT_QUEUE_LIMIT: usize = 16384;
/// Default permissions of the socket and the shared memory: owner only.
pub const DEFAULT_MODE: u32 = 0o600;
/// Default permissions when `--group` is given without `--mode`: owner and group.
pub const DEFAULT_GROUP_MODE: u32 = 0o660;

/// Where the shared memory lives.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ShmBacking {
    /// A POSIX shared-memory object (`shm_open`), e.g. `ivshmem` = /dev/shm/ivshmem (`-M`).
    PosixName(String),
    /// An unlinked file created in this directory, e.g. a hugetlbfs mount (`-m`).
    Directory(PathBuf),
    /// An anonymous memfd (`--memfd`).
    Memfd,
}

/// A group given by `--group`, by name or number.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GroupSpec {
    /// The name or number as given, for messages.
    pub text: String,
    /// The numeric group id it resolved to.
    pub gid: u32,
}

/// The server's parsed command line, with QEMU's defaults for what is not given.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Options {
    /// Log every message (`-v`); needs `-F`.
    pub verbose: bool,
    /// Stay in the foreground instead of daemonizing (`-F`).
    pub foreground: bool,
    /// Where the daemon writes its pid (`-p`).
    pub pid_file: PathBuf,
    /// The listening socket (`-S`).
    pub socket_path: PathBuf,
    /// Where the shared memory comes from (`-M`, `-m` or `--memfd`).
    pub shm: ShmBacking,
    /// Size as given; the shared memory gets [`Options::shm_size`] (the next power of two).
    pub requested_size: u64,
    /// Eventfds per peer (`-n`), at most [`MAX_VECTORS`].
    pub vectors: u32,
    /// Remove the `-M` object on exit (`--unlink-shm`).
    pub unlink_shm: bool,
    /// Explicit `--mode`; see [`Options::mode`] for the effective one.
    pub mode_arg: Option<u32>,
    /// Group owner of the socket and shared memory (`--group`).
    pub group: Option<GroupSpec>,
    /// Bound of each peer's queue of notices (`--queue-limit`).
    pub queue_limit: usize,
    /// `--seccomp`: the filter entered once set-up is over.
    pub seccomp: sandbox::Mode,
    /// `--upgrade-binary`: what SIGUSR2 starts (default: the binary running).
    pub upgrade_binary: Option<PathBuf>,
    /// `--status` / `--upgrade`: ask the server on `-S` (its control socket) instead of serving.
    pub control: Option<ControlCommand>,
    /// `--keeper`: a keeper process holds every fd and restarts a crashed server.
    pub keeper: bool,
    /// `--state-table OFFSET`: keep the peer table in the shared memory at this offset.
    pub state_table: Option<u64>,
    /// `--lifecycle-vector N`: ring this vector of every peer on each join and leave.
    pub lifecycle_vector: Option<u32>,
}

/// A question for a running server (`--status [--json]`, `--upgrade`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ControlCommand {
    /// `--status`: text, or JSON with `--json`.
    Status {
        /// `--json`.
        json: bool,
    },
    /// `--upgrade`: upgrade now and say how it went.
    Upgrade,
}

impl Default for Options {
    fn default() -> Self {
        Options {
            verbose: false,
            foreground: false,
            pid_file: DEFAULT_PID_FILE.into(),
            socket_path: DEFAULT_SOCKET_PATH.into(),
            shm: ShmBacking::PosixName(DEFAULT_SHM_NAME.into()),
            requested_size: DEFAULT_SHM_SIZE,
            vectors: DEFAULT_VECTORS,
            unlink_shm: false,
            mode_arg: None,
            group: None,
            queue_limit: DEFAULT_QUEUE_LIMIT,
            seccomp: sandbox::Mode::On,
            upgrade_binary: None,
            control: None,
            keeper: false,
            state_table: None,
            lifecycle_vector: None,
        }
    }
}

impl Options {
    /// The shared-memory size: the requested size rounded up to a power of two (QEMU's BAR2
    /// must be one). Parsing guarantees this does not overflow.
    pub fn shm_size(&self) -> u64 {
        self.requested_size.next_power_of_two()
    }

    /// Permissions for the socket and the shared memory.
    pub fn mode(&self) -> u32 {
        match (self.mode_arg, &self.group) {
            (Some(mode), _) => mode,
            (None, Some(_)) => DEFAULT_GROUP_MODE,
            (None, None) => DEFAULT_MODE,
        }
    }
}

/// What the command line asks for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Command {
    /// Serve with these options.
    Run(Options),
    /// Print the usage text and exit (`-h`).
    Help,
}

/// Why the command line was refused; the server prints it with the usage hint and exits 1.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum UsageError {
    /// An option that neither QEMU nor we define.
    #[error("unknown option '{0}'")]
    UnknownOption(String),
    /// An option that needs an argument came last.
    #[error("option '{0}' requires an argument")]
    MissingArgument(String),
    /// A flag was given `--flag=value`.
    #[error("option '{0}' takes no argument")]
    UnexpectedArgument(String),
    /// A bare argument: the server takes none.
    #[error("unexpected argument '{0}'")]
    UnexpectedPositional(String),
    /// An argument is not valid UTF-8.
    #[error("argument of '{option}' is not valid UTF-8")]
    NotUtf8 {
        /// The option whose argument it was.
        option: String,
    },
    /// `-l` is not a size.
    #[error("cannot parse size '{0}': expected a number with an optional K, M, G or T suffix")]
    BadSize(String),
    /// `-l 0`: a peer cannot map empty memory.
    #[error("size '{0}' must be greater than 0")]
    ZeroSize(String),
    /// `-l` does not fit in 64 bits once rounded up to a power of two.
    #[error("size '{0}' is too large")]
    SizeTooLarge(String),
    /// `-n` is not a number.
    #[error("cannot parse number of vectors '{0}'")]
    BadVectors(String),
    /// `-n` is above [`MAX_VECTORS`].
    #[error("number of vectors {0} exceeds the maximum of {MAX_VECTORS}")]
    TooManyVectors(u64),
    /// `--mode` is not an octal permission.
    #[error("cannot parse mode '{0}': expected an octal number up to 0777")]
    BadMode(String),
    /// `--group` names no group of this system.
    #[error("unknown group '{0}'")]
    UnknownGroup(String),
    /// `--queue-limit` is not a positive number.
    #[error("cannot parse queue limit '{0}': expected a number of messages of at least 1")]
    BadQueueLimit(String),
    /// `--seccomp` is not on, off or log.
    #[error("cannot parse --seccomp '{0}': expected on, off or log")]
    BadSeccomp(String),
    /// `-v` without `-F`: a daemon has no terminal to log to (as QEMU refuses it).
    #[error("cannot use verbose (-v) in daemon mode: add -F")]
    VerboseNeedsForeground,
    /// `--unlink-shm` with `-m` or `--memfd`, which have no name to unlink.
    #[error("--unlink-shm applies only to a POSIX shared-memory object (-M)")]
    UnlinkWithoutName,
    /// Any other refused value, with the option and why.
    #[error("{option}: {reason}")]
    Invalid {
        /// The option as given.
        option: String,
        /// Why its value was refused.
        reason: String,
    },
}

/// The options clap parses; ids are the short letter (or the long name when there is none).
fn command() -> clap::Command {
    use clap::{Arg, ArgAction};
    let flag = |id: &'static str, short: Option<char>, long: &'static str| {
        let arg = Arg::new(id).long(long).action(ArgAction::SetTrue);
        match short {
            Some(c) => arg.short(c),
            None => arg,
        }
    };
    // getopt takes the next word as the value whatever it looks like (`-n -1`, `-l -F`).
    let value = |id: &'static str, short: Option<char>, long: &'static str| {
        let arg = Arg::new(id)
            .long(long)
            .action(ArgAction::Append)
            .allow_hyphen_values(true)
            .value_parser(clap::value_parser!(OsString));
        match short {
            Some(c) => arg.short(c),
            None => arg,
        }
    };
    clap::Command::new("ivshmem-server")
        .disable_help_flag(true)
        .disable_version_flag(true)
        // getopt lets a flag repeat (`-F -F`); the last value of an option wins.
        .args_override_self(true)
        .arg(flag("h", Some('h'), "help"))
        .arg(flag("v", Some('v'), "verbose"))
        .arg(flag("F", Some('F'), "foreground"))
        .arg(flag("memfd", None, "memfd"))
        .arg(flag("unlink-shm", None, "unlink-shm"))
        .arg(flag("status", None, "status"))
        .arg(flag("json", None, "json"))
        .arg(flag("upgrade", None, "upgrade"))
        .arg(flag("keeper", None, "keeper"))
        .arg(value("p", Some('p'), "pid-file"))
        .arg(value("S", Some('S'), "socket"))
        .arg(value("m", Some('m'), "shm-dir"))
        .arg(value("M", Some('M'), "shm-name"))
        .arg(value("l", Some('l'), "size"))
        .arg(value("n", Some('n'), "vectors"))
        .arg(value("mode", None, "mode"))
        .arg(value("group", None, "group"))
        .arg(value("queue-limit", None, "queue-limit"))
        .arg(value("seccomp", None, "seccomp"))
        .arg(value("upgrade-binary", None, "upgrade-binary"))
        .arg(value("state-table", None, "state-table"))
        .arg(value("lifecycle-vector", None, "lifecycle-vector"))
}

/// Option ids that take a value, with how errors name them.
const VALUE_OPTIONS: &[(&str, &str)] = &[
    ("p", "-p"),
    ("S", "-S"),
    ("m", "-m"),
    ("M", "-M"),
    ("l", "-l"),
    ("n", "-n"),
    ("mode", "--mode"),
    ("group", "--group"),
    ("queue-limit", "--queue-limit"),
    ("seccomp", "--seccomp"),
    ("upgrade-binary", "--upgrade-binary"),
    ("state-table", "--state-table"),
    ("lifecycle-vector", "--lifecycle-vector"),
];

/// Parses the arguments after the program name.
pub fn parse<I, S>(args: I) -> Result<Command, UsageError>
where
    I: IntoIterator<Item = S>,
    S: Into<OsString>,
{
    let args: Vec<OsString> = args.into_iter().map(Into::into).collect();
    let program = std::iter::once(OsString::from("ivshmem-server"));
    let matches = command()
        .try_get_matches_from(program.chain(args.iter().cloned()))
        .map_err(|e| usage_error(&e, &args))?;
    if matches.get_flag("h") {
        return Ok(Command::Help);
    }
    let mut opts = Options {
        verbose: matches.get_flag("v"),
        foreground: matches.get_flag("F"),
        unlink_shm: matches.get_flag("unlink-shm"),
        keeper: matches.get_flag("keeper"),
        ..Options::default()
    };
    // Values in command-line order, so the first bad one is reported and the last of
    // -M / -m / --memfd wins.
    let mut given: Vec<(usize, &str, &str, &OsString)> = Vec::new();
    for &(id, name) in VALUE_OPTIONS {
        if let (Some(indices), Some(values)) =
            (matches.indices_of(id), matches.get_many::<OsString>(id))
        {
            given.extend(indices.zip(values).map(|(i, v)| (i, id, name, v)));
        }
    }
    given.sort_by_key(|(index, ..)| *index);
    let memfd_at = matches
        .get_flag("memfd")
        .then(|| matches.index_of("memfd"))
        .flatten();
    let mut memfd_applied = false;
    for (index, id, name, value) in given {
        if memfd_at.is_some_and(|at| at < index) && !memfd_applied {
            opts.shm = ShmBacking::Memfd;
            memfd_applied = true;
        }
        let value = value.to_str().ok_or_else(|| UsageError::NotUtf8 {
            option: name.to_string(),
        })?;
        apply_value(&mut opts, id, name, value)?;
    }
    if memfd_at.is_some() && !memfd_applied {
        opts.shm = ShmBacking::Memfd;
    }
    match (
        matches.get_flag("status"),
        matches.get_flag("upgrade"),
        matches.get_flag("json"),
    ) {
        (false, false, false) => {}
        (true, false, json) => opts.control = Some(ControlCommand::Status { json }),
        (false, true, false) => opts.control = Some(ControlCommand::Upgrade),
        (false, false, true) => {
            return Err(UsageError::Invalid {
                option: "--json".into(),
                reason: "applies only to --status".into(),
            })
        }
        _ => {
            return Err(UsageError::Invalid {
                option: "--upgrade".into(),
                reason: "cannot be combined with --status or --json".into(),
            })
        }
    }
    if opts.control.is_some() {
        return Ok(Command::Run(opts)); // a client: the serving options do not apply
    }
    if opts.verbose && !opts.foreground {
        return Err(UsageError::VerboseNeedsForeground);
    }
    if let Some(n) = opts.lifecycle_vector {
        if n >= opts.vectors {
            return Err(UsageError::Invalid {
                option: "--lifecycle-vector".into(),
                reason: format!("vector {n} does not exist with -n {}", opts.vectors),
            });
        }
    }
    if opts.unlink_shm && !matches!(opts.shm, ShmBacking::PosixName(_)) {
        return Err(UsageError::UnlinkWithoutName);
    }
    Ok(Command::Run(opts))
}

/// Turns clap's error into ours, naming the option as the user spelled it.
fn usage_error(e: &clap::Error, args: &[OsString]) -> UsageError {
    use clap::error::{ContextKind, ErrorKind};
    let invalid_arg = || {
        e.get(ContextKind::InvalidArg)
            .map(|v| v.to_string())
            .unwrap_or_default()
    };
    match e.kind() {
        ErrorKind::UnknownArgument => {
            let arg = invalid_arg();
            if arg.starts_with('-') && arg.len() > 1 {
                UsageError::UnknownOption(arg)
            } else {
                UsageError::UnexpectedPositional(arg)
            }
        }
        // Only the last word can lack its value: name it as typed (`-l`, `-Fl`, `--size`).
        ErrorKind::InvalidValue => {
            let last = args.last().map(|a| a.to_string_lossy().into_owned());
            let option = match last {
                Some(long) if long.starts_with("--") => long,
                Some(short) => format!("-{}", short.chars().last().unwrap_or('?')),
                None => invalid_arg(),
            };
            UsageError::MissingArgument(option)
        }
        ErrorKind::TooManyValues => {
            UsageError::UnexpectedArgument(invalid_arg().split(' ').next().unwrap_or("").into())
        }
        ErrorKind::InvalidUtf8 => UsageError::NotUtf8 {
            option: invalid_arg(),
        },
        _ => UsageError::Invalid {
            option: invalid_arg(),
            reason: e.kind().as_str().unwrap_or("invalid command line").into(),
        },
    }
}

fn apply_value(opts: &mut Options, id: &str, option: &str, value: &str) -> Result<(), UsageError> {
    match id {
        "p" => opts.pid_file = non_empty(option, value)?.into(),
        "S" => opts.socket_path = non_empty(option, value)?.into(),
        "m" => opts.shm = ShmBacking::Directory(non_empty(option, value)?.into()),
        "M" => opts.shm = ShmBacking::PosixName(parse_shm_name(option, value)?),
        "l" => opts.requested_size = parse_size(value)?,
        "n" => opts.vectors = parse_vectors(value)?,
        "mode" => opts.mode_arg = Some(parse_mode(value)?),
        "group" => opts.group = Some(parse_group(value)?),
        "queue-limit" => {
            opts.queue_limit = match parse_unsigned(value) {
                Some(n) if n >= 1 && n <= usize::MAX as u64 => n as usize,
                _ => return Err(UsageError::BadQueueLimit(value.into())),
            }
        }
        "upgrade-binary" => opts.upgrade_binary = Some(non_empty(option, value)?.into()),
        "state-table" => {
            let offset = match protocol::size::parse_size(value) {
                Ok(n) if n % 8 == 0 => n,
                _ => {
                    return Err(UsageError::Invalid {
                        option: option.into(),
                        reason: format!("'{value}' is not a byte offset that is a multiple of 8"),
                    })
                }
            };
            opts.state_table = Some(offset);
        }
        "lifecycle-vector" => {
            opts.lifecycle_vector = match parse_unsigned(value) {
                Some(n) if n < u64::from(MAX_VECTORS) => Some(n as u32),
                _ => {
                    return Err(UsageError::Invalid {
                        option: option.into(),
                        reason: format!("'{value}' is not a vector number below {MAX_VECTORS}"),
                    })
                }
            }
        }
        "seccomp" => {
            opts.seccomp = value
                .parse()
                .map_err(|_| UsageError::BadSeccomp(value.into()))?
        }
        other => {
            return Err(UsageError::Invalid {
                option: other.into(),
                reason: "not an option that takes a value".into(),
            })
        }
    }
    Ok(())
}

fn non_empty<'v>(option: &str, value: &'v str) -> Result<&'v str, UsageError> {
    if value.is_empty() {
        Err(UsageError::Invalid {
            option: option.into(),
            reason: "empty argument".into(),
        })
    } else {
        Ok(value)
    }
}

/// A POSIX shm name: one path component, optionally with a leading '/'.
fn parse_shm_name(option: &str, value: &str) -> Result<String, UsageError> {
    let bare = value.strip_prefix('/').unwrap_or(value);
    if bare.is_empty() || bare.contains('/') || bare == "." || bare == ".." || bare.len() > 255 {
        return Err(UsageError::Invalid {
            option: option.into(),
            reason: format!(
                "'{value}' is not a valid POSIX shared-memory name (one name without '/')"
            ),
        });
    }
    Ok(bare.to_string())
}

/// strtoul base 0 without sign or whitespace: `0x..` hex, `0..` octal, else decimal.
fn parse_unsigned(text: &str) -> Option<u64> {
    let (digits, radix) =
        if let Some(hex) = text.strip_prefix("0x").or_else(|| text.strip_prefix("0X")) {
            (hex, 16)
        } else if text.len() > 1 && text.starts_with('0') {
            (&text[1..], 8)
        } else {
            (text, 10)
        };
    if digits.is_empty() || !digits.chars().all(|c| c.is_digit(radix)) {
        return None;
    }
    u64::from_str_radix(digits, radix).ok()
}

fn parse_vectors(text: &str) -> Result<u32, UsageError> {
    let n = parse_unsigned(text).ok_or_else(|| UsageError::BadVectors(text.into()))?;
    if n > u64::from(MAX_VECTORS) {
        return Err(UsageError::TooManyVectors(n));
    }
    Ok(n as u32)
}

/// A size for `-l`: the shared syntax ([`protocol::size`]), greater than 0 and small enough that
/// its rounded-up power of two fits in an off_t.
pub fn parse_size(text: &str) -> Result<u64, UsageError> {
    let value = protocol::size::parse_size(text).map_err(|e| match e {
        SizeError::Invalid(_) => UsageError::BadSize(text.into()),
        SizeError::TooLarge(_) => UsageError::SizeTooLarge(text.into()),
    })?;
    if value == 0 {
        return Err(UsageError::ZeroSize(text.into()));
    }
    if value > 1 << 62 {
        return Err(UsageError::SizeTooLarge(text.into()));
    }
    Ok(value)
}

fn parse_mode(text: &str) -> Result<u32, UsageError> {
    let digits = text.strip_prefix("0o").unwrap_or(text);
    match u32::from_str_radix(digits, 8) {
        Ok(mode) if !digits.is_empty() && mode <= 0o777 => Ok(mode),
        _ => Err(UsageError::BadMode(text.into())),
    }
}

fn parse_group(text: &str) -> Result<GroupSpec, UsageError> {
    if !text.is_empty() && text.chars().all(|c| c.is_ascii_digit()) {
        let gid = text
            .parse::<u32>()
            .map_err(|_| UsageError::UnknownGroup(text.into()))?;
        return Ok(GroupSpec {
            text: text.into(),
            gid,
        });
    }
    match nix::unistd::Group::from_name(text) {
        Ok(Some(group)) => Ok(GroupSpec {
            text: text.into(),
            gid: group.gid.as_raw(),
        }),
        _ => Err(UsageError::UnknownGroup(text.into())),
    }
}

/// The `-h` text.
pub fn help_text(program: &str) -> String {
    format!(
        "\
Usage: {program} [OPTION]...
QEMU-compatible ivshmem server: hands out a shared-memory fd and per-peer eventfds
to QEMU ivshmem-doorbell devices and other peers over a UNIX socket.

  -h, --help               show this help and exit
  -v, --verbose            verbose (debug) logging; requires -F
  -F, --foreground         stay in the foreground (default: daemonize)
  -p, --pid-file FILE      PID file, written only when daemonized
                           (default {DEFAULT_PID_FILE})
  -S, --socket PATH        UNIX socket to listen on (default {DEFAULT_SOCKET_PATH})
  -M, --shm-name NAME      POSIX shared-memory object (default {DEFAULT_SHM_NAME},
                           i.e. /dev/shm/{DEFAULT_SHM_NAME})
  -m, --shm-dir DIR        create the shared memory as an unlinked file in DIR
                           (e.g. a hugetlbfs mount)
      --memfd              use an anonymous memfd as the shared memory
                           (-M, -m and --memfd: the last one given wins)
  -l, --size SIZE          shared-memory size in bytes; suffixes K, M, G, T
                           (1K = 1024); rounded up to a power of two
                           (default {DEFAULT_SHM_SIZE})
  -n, --vectors N          interrupt vectors per peer, 0..{MAX_VECTORS}; decimal, 0x hex
                           or 0 octal (default {DEFAULT_VECTORS}). QEMU's ivshmem-client
                           refuses more than 64 ('Too many vectors received')
                           and reconnects in a loop; QEMU's device takes its own
                           `vectors` and closes the rest
      --unlink-shm         remove the -M shared-memory object on exit
      --mode OCTAL         permissions of the socket and the shared memory
                           (default 0600, or 0660 with --group)
      --group NAME|GID     group owning the socket and the shared memory
      --queue-limit N      join/leave messages queued for a peer that does not
                           read before it is dropped (default {DEFAULT_QUEUE_LIMIT})
      --seccomp on|off|log seccomp filter once set up (default on; log: allow and
                           let the kernel log what the filter lacks)
      --status             print the status of the server on -S (peers, memory,
                           counters) and exit; with --json as one JSON object
      --upgrade            upgrade the server on -S now (like SIGUSR2) and say
                           how it went; exit 1 if it failed
      --keeper             crash survival: a keeper process holds the socket, the
                           memory and every peer's fds, and restarts the server
                           (which re-adopts them) if it dies, e.g. on kill -9
      --state-table OFFSET keep a table of the connected peers in the shared memory
                           at OFFSET (a multiple of 8; 1 MiB + 64 bytes; layout in
                           docs/protocol.md). Off by default: the server then never
                           writes to the memory
      --lifecycle-vector N ring vector N of every peer on each join and leave
                           (with --state-table, guests then read who is there)
      --upgrade-binary PATH
                           what SIGUSR2 starts to take over (default: the binary
                           this server was started from, as its path is now)

Peers that send anything or hang up leave; every join and leave is logged on stderr
(more than 10 alike from one pid within 10 s are summed up in one line).
SIGINT, SIGTERM and SIGHUP announce departures, remove the socket (and the PID file)
and exit. SIGUSR2 upgrades without downtime: a new server process takes over every
peer, the socket and the memory; if it cannot, this one logs why and serves on.
"
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn run(args: &[&str]) -> Result<Options, UsageError> {
        match parse(args.iter().copied())? {
            Command::Run(o) => Ok(o),
            Command::Help => panic!("help"),
        }
    }

    #[test]
    fn defaults_match_qemu() {
        let o = run(&[]).unwrap();
        assert!(!o.foreground && !o.verbose);
        assert_eq!(o.pid_file, PathBuf::from("/var/run/ivshmem-server.pid"));
        assert_eq!(o.socket_path, PathBuf::from("/tmp/ivshmem_socket"));
        assert_eq!(o.shm, ShmBacking::PosixName("ivshmem".into()));
        assert_eq!(o.shm_size(), 4194304);
        assert_eq!(o.vectors, 1);
        assert_eq!(o.mode(), 0o600);
    }

    #[test]
    fn getopt_forms() {
        let o = run(&["-F", "-l4M", "-n", "2", "-S/tmp/x"]).unwrap();
        assert!(o.foreground);
        assert_eq!(o.requested_size, 4 << 20);
        assert_eq!(o.vectors, 2);
        assert_eq!(o.socket_path, PathBuf::from("/tmp/x"));
        let o = run(&["-vFl", "1G", "-M", "name"]).unwrap();
        assert!(o.verbose && o.foreground);
        assert_eq!(o.requested_size, 1 << 30);
        assert_eq!(o.shm, ShmBacking::PosixName("name".into()));
        let o = run(&["-Fn0x10", "--"]).unwrap();
        assert_eq!(o.vectors, 16);
        assert_eq!(run(&["-F", "-n", "010"]).unwrap().vectors, 8);
        let o = run(&["-F", "-F", "-l", "1M", "-l2M", "-n", "-1"]);
        assert_eq!(
            o,
            Err(UsageError::BadVectors("-1".into())),
            "getopt takes any next word"
        );
        assert_eq!(run(&["-l", "1M", "-l2M"]).unwrap().requested_size, 2 << 20);
        assert_eq!(run(&["-Fl"]), Err(UsageError::MissingArgument("-l".into())));
        assert_eq!(
            run(&["-n", "2000", "-l", "bad"]),
            Err(UsageError::TooManyVectors(2000)),
            "the first bad value is reported"
        );
        assert_eq!(
            run(&["--", "x"]),
            Err(UsageError::UnexpectedPositional("x".into()))
        );
        {
            use std::os::unix::ffi::OsStrExt;
            let bad = std::ffi::OsStr::from_bytes(b"\xff");
            assert_eq!(
                parse([std::ffi::OsStr::new("-l"), bad]),
                Err(UsageError::NotUtf8 {
                    option: "-l".into()
                })
            );
        }
        assert_eq!(parse(["-h"]).unwrap(), Command::Help);
        assert_eq!(parse(["-F", "--help"]).unwrap(), Command::Help);
    }

    #[test]
    fn last_shm_choice_wins() {
        assert_eq!(
            run(&["-M", "a", "-m", "/d"]).unwrap().shm,
            ShmBacking::Directory("/d".into())
        );
        assert_eq!(
            run(&["-m", "/d", "-M", "a"]).unwrap().shm,
            ShmBacking::PosixName("a".into())
        );
        assert_eq!(run(&["-M", "a", "--memfd"]).unwrap().shm, ShmBacking::Memfd);
        assert_eq!(
            run(&["-M", "/a"]).unwrap().shm,
            ShmBacking::PosixName("a".into())
        );
    }

    #[test]
    fn long_options() {
        let o = run(&[
            "--foreground",
            "--size=8K",
            "--vectors",
            "3",
            "--socket=/s",
            "--mode",
            "0660",
            "--group",
            "0",
            "--queue-limit=5",
            "--memfd",
        ])
        .unwrap();
        assert_eq!(o.requested_size, 8192);
        assert_eq!(o.vectors, 3);
        assert_eq!(o.mode(), 0o660);
        assert_eq!(o.group.as_ref().unwrap().gid, 0);
        assert_eq!(o.queue_limit, 5);
        assert_eq!(o.shm, ShmBacking::Memfd);
        assert_eq!(run(&["--group", "0"]).unwrap().mode(), 0o660);
        assert_eq!(run(&["--group", "root"]).unwrap().group.unwrap().gid, 0);
    }

    #[test]
    fn sizes() {
        assert_eq!(parse_size("4194304").unwrap(), 4194304);
        assert_eq!(parse_size("1k").unwrap(), 1024);
        assert_eq!(parse_size("2M").unwrap(), 2 << 20);
        assert_eq!(parse_size("5G").unwrap(), 5 << 30);
        assert_eq!(parse_size("1T").unwrap(), 1 << 40);
        assert_eq!(parse_size("1.5K").unwrap(), 1536);
        assert_eq!(parse_size("0x1000").unwrap(), 4096);
        assert_eq!(parse_size("100B").unwrap(), 100);
        for bad in [
            "", "M", "-1", "1X", "1.5", "abc", " 1", "1 ", "0x", "1.K", "0xg",
        ] {
            assert!(
                matches!(parse_size(bad), Err(UsageError::BadSize(_))),
                "{bad}"
            );
        }
        assert_eq!(parse_size("0"), Err(UsageError::ZeroSize("0".into())));
        assert!(matches!(
            parse_size("99999999T"),
            Err(UsageError::SizeTooLarge(_))
        ));
        assert!(matches!(
            parse_size("99999999999999999999999999"),
            Err(UsageError::SizeTooLarge(_))
        ));
        let o = run(&["-l", "3000000"]).unwrap();
        assert_eq!(o.shm_size(), 4194304);
        assert_eq!(run(&["-l", "5G"]).unwrap().shm_size(), 8 << 30);
    }

    /// Found by fuzz/fuzz_targets/server_options.rs: 2^88 + 1 tebibytes wrapped around u128
    /// to exactly 1 TiB and was accepted.
    #[test]
    fn huge_sizes_with_a_suffix_do_not_wrap() {
        for huge in [
            "309485009821345068724781057T",
            "309485009821345068724781057.5T",
            "999999999999999999999999999999T",
            "999999999999999999999999999999B",
        ] {
            assert!(
                matches!(parse_size(huge), Err(UsageError::SizeTooLarge(_))),
                "{huge}: {:?}",
                parse_size(huge)
            );
        }
    }

    #[test]
    fn errors_name_the_problem() {
        assert_eq!(run(&["-x"]), Err(UsageError::UnknownOption("-x".into())));
        assert_eq!(
            run(&["--bogus"]),
            Err(UsageError::UnknownOption("--bogus".into()))
        );
        assert_eq!(run(&["-l"]), Err(UsageError::MissingArgument("-l".into())));
        assert_eq!(
            run(&["--size"]),
            Err(UsageError::MissingArgument("--size".into()))
        );
        assert_eq!(
            run(&["--memfd=1"]),
            Err(UsageError::UnexpectedArgument("--memfd".into()))
        );
        assert_eq!(
            run(&["extra"]),
            Err(UsageError::UnexpectedPositional("extra".into()))
        );
        assert_eq!(run(&["-v"]), Err(UsageError::VerboseNeedsForeground));
        assert_eq!(
            run(&["-F", "-n", "1025"]),
            Err(UsageError::TooManyVectors(1025))
        );
        assert_eq!(
            run(&["-F", "-n", "-1"]),
            Err(UsageError::BadVectors("-1".into()))
        );
        assert_eq!(
            run(&["-F", "-n", "09"]),
            Err(UsageError::BadVectors("09".into()))
        );
        assert_eq!(
            run(&["--mode", "0800"]),
            Err(UsageError::BadMode("0800".into()))
        );
        assert_eq!(
            run(&["--mode", "1777"]),
            Err(UsageError::BadMode("1777".into()))
        );
        assert!(matches!(
            run(&["--group", "no-such-group-xyz"]),
            Err(UsageError::UnknownGroup(_))
        ));
        assert!(matches!(
            run(&["--queue-limit", "0"]),
            Err(UsageError::BadQueueLimit(_))
        ));
        assert_eq!(
            run(&["--memfd", "--unlink-shm"]),
            Err(UsageError::UnlinkWithoutName)
        );
        assert!(matches!(
            run(&["-M", "a/b"]),
            Err(UsageError::Invalid { .. })
        ));
        assert!(matches!(run(&["-S", ""]), Err(UsageError::Invalid { .. })));
        assert_eq!(run(&["-F", "-n", "1024"]).unwrap().vectors, 1024);
        assert_eq!(run(&["-F", "-n", "0"]).unwrap().vectors, 0);
    }

    #[test]
    fn help_mentions_every_option() {
        let text = help_text("ivshmem-server");
        for opt in [
            "-h",
            "-v",
            "-F",
            "-p",
            "-S",
            "-M",
            "-m",
            "-l",
            "-n",
            "--memfd",
            "--unlink-shm",
            "--mode",
            "--group",
            "--queue-limit",
            "--seccomp",
        ] {
            assert!(text.contains(opt), "{opt}");
        }
    }

    #[test]
    fn seccomp_modes() {
        assert_eq!(run(&[]).unwrap().seccomp, sandbox::Mode::On);
        assert_eq!(run(&["--seccomp=log"]).unwrap().seccomp, sandbox::Mode::Log);
        assert_eq!(
            run(&["--seccomp", "off"]).unwrap().seccomp,
            sandbox::Mode::Off
        );
        assert!(matches!(
            run(&["--seccomp", "maybe"]),
            Err(UsageError::BadSeccomp(_))
        ));
    }
}
