//! Host-side benchmarks for ivshmem, each printing one machine-readable result line:
//!
//! * `bench doorbell -S SOCK` — round trip through server-brokered eventfds between two peer
//!   processes (ring the partner's vector 0, wait to be rung back): `rtt_ns=<mean>`.
//! * `bench spin -S SOCK` — round trip by spinning on a shared-memory flag (no syscalls):
//!   `rtt_ns=<mean>`.
//! * `bench bandwidth -S SOCK` — memcpy into the mapped shared memory vs into private memory:
//!   `shm_gbps=<x>` and `private_gbps=<y>` (10^9 bytes per second).
//! * `bench eventfd` — baseline: the same ping-pong over a raw eventfd pair between two
//!   processes, no server, with the same wait code (`Vector::wait`: poll, then read):
//!   `rtt_ns=<mean>`.
//!
//! The partner process is this program re-executed with a hidden `*-echo` subcommand. Every
//! timed run follows untimed warm-up iterations. Lines starting with `#` are human-readable
//! detail (min/median/p99, sizes); round-trip modes also print `rtt_p50_ns=<median>`, which
//! is steadier than the mean on a busy machine. Use a dedicated server: the doorbell mode takes the first peer
//! that joins after it connected as its partner.

use std::hint::black_box;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::process::{Child, Command};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use anyhow::{bail, ensure, Context};
use clap::{Parser, Subcommand};
use nix::sys::eventfd::{EfdFlags, EventFd};
use peer::vector::Vector;
use peer::{ConnectOptions, Peer, ServerEvent, DEFAULT_SOCKET_PATH};

/// How long either side waits for the other before giving up.
const PARTNER_TIMEOUT: Duration = Duration::from_secs(10);

#[derive(Parser)]
#[command(about = "ivshmem host benchmarks (see the module docs)")]
struct Args {
    #[command(subcommand)]
    mode: Mode,
}

#[derive(Subcommand)]
enum Mode {
    /// Doorbell round trip via server-brokered eventfds (two peer processes).
    Doorbell {
        #[arg(short = 'S', long, default_value = DEFAULT_SOCKET_PATH)]
        socket: String,
        #[arg(short = 'n', long, default_value_t = 100_000)]
        iters: u64,
        #[arg(long, default_value_t = 10_000)]
        warmup: u64,
    },
    /// Round trip by spinning on a shared-memory flag (two peer processes).
    Spin {
        #[arg(short = 'S', long, default_value = DEFAULT_SOCKET_PATH)]
        socket: String,
        #[arg(short = 'n', long, default_value_t = 1_000_000)]
        iters: u64,
        #[arg(long, default_value_t = 100_000)]
        warmup: u64,
        /// Byte offset of the two flags (ping at +0, pong at +64); must be 8-aligned.
        #[arg(long, default_value_t = 0)]
        offset: usize,
    },
    /// Write bandwidth: memcpy into shared memory vs private memory.
    Bandwidth {
        #[arg(short = 'S', long, default_value = DEFAULT_SOCKET_PATH)]
        socket: String,
        /// Bytes per copy (default: the whole shared memory, at most 64 MiB).
        #[arg(long)]
        size: Option<usize>,
        /// Minimum measured time per target, in milliseconds.
        #[arg(long, default_value_t = 1000)]
        millis: u64,
    },
    /// Baseline: ping-pong over a raw eventfd pair between two processes, no server.
    Eventfd {
        #[arg(short = 'n', long, default_value_t = 100_000)]
        iters: u64,
        #[arg(long, default_value_t = 10_000)]
        warmup: u64,
    },
    #[command(hide = true)]
    DoorbellEcho {
        #[arg(short = 'S', long)]
        socket: String,
        #[arg(long)]
        partner: u16,
        #[arg(long)]
        rounds: u64,
    },
    #[command(hide = true)]
    SpinEcho {
        #[arg(short = 'S', long)]
        socket: String,
        #[arg(long)]
        offset: usize,
        #[arg(long)]
        rounds: u64,
    },
    #[command(hide = true)]
    EventfdEcho {
        /// The fd we wait on.
        #[arg(long)]
        wait_fd: i32,
        /// The fd we ring.
        #[arg(long)]
        ring_fd: i32,
        #[arg(long)]
        rounds: u64,
    },
}

fn main() -> std::process::ExitCode {
    match run(Args::parse().mode) {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            // The whole cause chain, skipping causes an outer message already spells out.
            let mut message = e.to_string();
            for cause in e.chain().skip(1) {
                let cause = cause.to_string();
                if !message.contains(&cause) {
                    message = format!("{message}: {cause}");
                }
            }
            eprintln!("bench: {message}");
            std::process::ExitCode::FAILURE
        }
    }
}

fn run(mode: Mode) -> anyhow::Result<()> {
    match mode {
        Mode::Doorbell {
            socket,
            iters,
            warmup,
        } => doorbell(&socket, iters, warmup),
        Mode::Spin {
            socket,
            iters,
            warmup,
            offset,
        } => spin(&socket, iters, warmup, offset),
        Mode::Bandwidth {
            socket,
            size,
            millis,
        } => bandwidth(&socket, size, Duration::from_millis(millis)),
        Mode::Eventfd { iters, warmup } => eventfd_pair(iters, warmup),
        Mode::DoorbellEcho {
            socket,
            partner,
            rounds,
        } => doorbell_echo(&socket, partner, rounds),
        Mode::SpinEcho {
            socket,
            offset,
            rounds,
        } => spin_echo(&socket, offset, rounds),
        Mode::EventfdEcho {
            wait_fd,
            ring_fd,
            rounds,
        } => eventfd_echo(wait_fd, ring_fd, rounds),
    }
}

/// Starts this program again with `args` (the partner side).
fn spawn_partner(args: &[String]) -> anyhow::Result<Child> {
    let exe = std::env::current_exe().context("cannot find our own executable")?;
    Command::new(exe)
        .args(args)
        .spawn()
        .context("cannot start the partner process")
}

fn finish_partner(mut child: Child) -> anyhow::Result<()> {
    let status = child.wait().context("waiting for the partner process")?;
    ensure!(status.success(), "the partner process failed: {status}");
    Ok(())
}

/// Per-iteration round-trip times; prints the detail line and the `rtt_ns=` line.
/// Runs `round` `warmup + iters` times and returns the wall time of each of the last `iters`
/// rounds, in ns.
fn time_rounds(
    iters: u64,
    warmup: u64,
    mut round: impl FnMut(u64) -> anyhow::Result<()>,
) -> anyhow::Result<Vec<u64>> {
    let mut samples = Vec::with_capacity(iters as usize);
    for i in 0..iters + warmup {
        let start = Instant::now();
        round(i)?;
        if i >= warmup {
            samples.push(start.elapsed().as_nanos() as u64);
        }
    }
    Ok(samples)
}

fn report_rtt(what: &str, samples: &mut [u64]) {
    if samples.is_empty() {
        println!("rtt_ns=0");
        return;
    }
    let mean = samples.iter().sum::<u64>() / samples.len() as u64;
    samples.sort_unstable();
    let pct = |p: f64| samples[((samples.len() - 1) as f64 * p) as usize];
    println!(
        "# {what}: {} iterations, mean {mean} ns, min {} ns, p50 {} ns, p99 {} ns, max {} ns",
        samples.len(),
        samples[0],
        pct(0.5),
        pct(0.99),
        samples[samples.len() - 1]
    );
    println!("rtt_ns={mean}");
    println!("rtt_p50_ns={}", pct(0.5));
}

fn connect(socket: &str) -> anyhow::Result<Peer> {
    let options = ConnectOptions {
        vectors: Some(1),
        ..ConnectOptions::default()
    };
    Ok(Peer::connect_with(socket, &options)?)
}

/// Waits for the first peer that joins and returns its id.
fn await_partner(peer: &mut Peer) -> anyhow::Result<u16> {
    let deadline = Instant::now() + PARTNER_TIMEOUT;
    while Instant::now() < deadline {
        for event in peer.poll_server(Some(Duration::from_millis(100))) {
            if let ServerEvent::Joined { peer: id, .. } = event {
                return Ok(id);
            }
        }
        ensure!(peer.server_connected(), "the server went away");
    }
    bail!("no partner joined within {PARTNER_TIMEOUT:?}")
}

fn doorbell(socket: &str, iters: u64, warmup: u64) -> anyhow::Result<()> {
    let mut peer = connect(socket)?;
    let child = spawn_partner(&[
        "doorbell-echo".into(),
        "-S".into(),
        socket.into(),
        "--partner".into(),
        peer.id().to_string(),
        "--rounds".into(),
        (iters + warmup).to_string(),
    ])?;
    let partner = await_partner(&mut peer)?;
    let mut samples = time_rounds(iters, warmup, |i| {
        peer.ring(partner, 0)?;
        ensure!(
            peer.wait_vector(0, Some(PARTNER_TIMEOUT))?.is_some(),
            "partner did not answer round {i}"
        );
        Ok(())
    })?;
    finish_partner(child)?;
    report_rtt(
        "doorbell round trip via ivshmem-server eventfds",
        &mut samples,
    );
    Ok(())
}

fn doorbell_echo(socket: &str, partner: u16, rounds: u64) -> anyhow::Result<()> {
    let mut peer = connect(socket)?;
    for i in 0..rounds {
        ensure!(
            peer.wait_vector(0, Some(PARTNER_TIMEOUT))?.is_some(),
            "echo: no ring for round {i}"
        );
        if peer.peer_vector_count(partner).is_none() {
            // A partner that joined after us (e.g. a VM pinging this echo): learn about it.
            peer.process_server_messages();
        }
        peer.ring(partner, 0)?;
    }
    Ok(())
}

/// Spins until `flag` holds `value`, giving up after [`PARTNER_TIMEOUT`].
fn spin_until(flag: &AtomicU64, value: u64) -> anyhow::Result<()> {
    let mut spins: u64 = 0;
    let mut since: Option<Instant> = None;
    while flag.load(Ordering::Acquire) != value {
        std::hint::spin_loop();
        spins += 1;
        if spins & ((1 << 20) - 1) == 0 {
            let since = *since.get_or_insert_with(Instant::now);
            ensure!(
                since.elapsed() < PARTNER_TIMEOUT,
                "partner did not set the flag to {value} within {PARTNER_TIMEOUT:?}"
            );
        }
    }
    Ok(())
}

fn spin(socket: &str, iters: u64, warmup: u64, offset: usize) -> anyhow::Result<()> {
    let mut peer = connect(socket)?;
    let ping = peer.shm().atomic_u64(offset)?;
    let pong = peer.shm().atomic_u64(offset + 64)?;
    ping.store(0, Ordering::Release);
    pong.store(0, Ordering::Release);
    let child = spawn_partner(&[
        "spin-echo".into(),
        "-S".into(),
        socket.into(),
        "--offset".into(),
        offset.to_string(),
        "--rounds".into(),
        (iters + warmup).to_string(),
    ])?;
    await_partner(&mut peer)?;
    let shm = peer.shm();
    let (ping, pong) = (shm.atomic_u64(offset)?, shm.atomic_u64(offset + 64)?);
    // Round numbers start at 1: the flags start at 0.
    let mut samples = time_rounds(iters, warmup, |i| {
        ping.store(i + 1, Ordering::Release);
        spin_until(pong, i + 1)
    })?;
    finish_partner(child)?;
    report_rtt(
        "round trip by spinning on a shared-memory flag",
        &mut samples,
    );
    Ok(())
}

fn spin_echo(socket: &str, offset: usize, rounds: u64) -> anyhow::Result<()> {
    let peer = connect(socket)?;
    let (ping, pong) = (
        peer.shm().atomic_u64(offset)?,
        peer.shm().atomic_u64(offset + 64)?,
    );
    for round in 1..=rounds {
        spin_until(ping, round)?;
        pong.store(round, Ordering::Release);
    }
    Ok(())
}

/// Copies `src` to `dst` (each `len` bytes) repeatedly for at least `min_time`; returns GB/s.
fn copy_rate(src: &[u8], dst: *mut u8, min_time: Duration) -> f64 {
    let len = src.len();
    // Warm-up: fault in every page and prime caches/TLB.
    for _ in 0..2 {
        // SAFETY: the caller guarantees `dst` is valid for `len` bytes of writes and does not
        // overlap `src`.
        unsafe { std::ptr::copy_nonoverlapping(src.as_ptr(), dst, len) };
    }
    let start = Instant::now();
    let mut bytes: u64 = 0;
    while start.elapsed() < min_time {
        // SAFETY: as above.
        unsafe { std::ptr::copy_nonoverlapping(black_box(src.as_ptr()), black_box(dst), len) };
        bytes += len as u64;
    }
    bytes as f64 / start.elapsed().as_secs_f64() / 1e9
}

fn bandwidth(socket: &str, size: Option<usize>, min_time: Duration) -> anyhow::Result<()> {
    let peer = connect(socket)?;
    let shm = peer.shm();
    let len = size.unwrap_or_else(|| shm.len().min(64 << 20));
    shm.check_range(0, len)?;
    ensure!(len > 0, "size must be positive");
    let src: Vec<u8> = (0..len).map(|i| (i * 31 + 7) as u8).collect();
    let mut private = vec![0u8; len];
    // The shared memory is valid for `len` bytes (checked above); nobody else writes it during
    // the benchmark (use a dedicated server).
    let shm_gbps = copy_rate(&src, shm.as_ptr(), min_time);
    let private_gbps = copy_rate(&src, private.as_mut_ptr(), min_time);
    black_box(&private);
    println!(
        "# memcpy of {len} bytes, at least {min_time:?} each: shared memory {shm_gbps:.2} GB/s, \
         private memory {private_gbps:.2} GB/s"
    );
    println!("shm_gbps={shm_gbps:.3}");
    println!("private_gbps={private_gbps:.3}");
    Ok(())
}

fn new_eventfd() -> anyhow::Result<OwnedFd> {
    // Non-blocking like the server's; no EFD_CLOEXEC: the partner process inherits these two.
    Ok(EventFd::from_flags(EfdFlags::EFD_NONBLOCK)
        .context("eventfd")?
        .into())
}

fn eventfd_pair(iters: u64, warmup: u64) -> anyhow::Result<()> {
    let to_child = new_eventfd()?;
    let to_parent = new_eventfd()?;
    let child = spawn_partner(&[
        "eventfd-echo".into(),
        "--wait-fd".into(),
        to_child.as_raw_fd().to_string(),
        "--ring-fd".into(),
        to_parent.as_raw_fd().to_string(),
        "--rounds".into(),
        (iters + warmup).to_string(),
    ])?;
    let (ring, wait) = (Vector::new(to_child), Vector::new(to_parent));
    let mut samples = time_rounds(iters, warmup, |i| {
        ring.ring()?;
        ensure!(
            wait.wait(Some(PARTNER_TIMEOUT))? > 0,
            "partner did not answer round {i}"
        );
        Ok(())
    })?;
    finish_partner(child)?;
    report_rtt(
        "raw eventfd pair between two processes (no server)",
        &mut samples,
    );
    Ok(())
}

/// Takes ownership of an fd number inherited from the parent, after checking it is open.
fn inherited_fd(raw: i32) -> anyhow::Result<OwnedFd> {
    ensure!(
        // SAFETY: F_GETFD only queries the fd table.
        raw >= 0 && unsafe { libc::fcntl(raw, libc::F_GETFD) } >= 0,
        "fd {raw} is not open in this process"
    );
    // SAFETY: the parent created this fd for us and passed its number; nothing else in this
    // process owns it (we just started and opened nothing with that number ourselves).
    Ok(unsafe { OwnedFd::from_raw_fd(raw) })
}

fn eventfd_echo(wait_fd: i32, ring_fd: i32, rounds: u64) -> anyhow::Result<()> {
    let wait = Vector::new(inherited_fd(wait_fd)?);
    let ring = Vector::new(inherited_fd(ring_fd)?);
    for i in 0..rounds {
        ensure!(
            wait.wait(Some(PARTNER_TIMEOUT))? > 0,
            "echo: no ring for round {i}"
        );
        ring.ring()?;
    }
    Ok(())
}
