//! Virtio over ivshmem against a UNIX socket pair, with the same echo payloads:
//!
//! * `virtio_bench virtio -S SOCK --bytes N` — a host driver (`virtio_ivshmem::Driver`) sends
//!   each payload through queue 0 of the echo device (`vhost-user-echo` behind a `vhost-bridge`
//!   on that server, header at offset 0) and waits for it to come back: the payload is copied
//!   into the shared memory, echoed there by the backend, and copied out again.
//! * `virtio_bench socketpair --bytes N` — the baseline: the payload written to one end of a
//!   `socketpair(AF_UNIX, SOCK_STREAM)`, echoed by a thread of this program on the other end,
//!   and read back.
//!
//! Both are one request in flight at a time, every answer checked against what was sent,
//! `--warmup` untimed requests first. Output lines: `requests_per_sec=`, `mb_per_sec=`
//! (10^6 payload bytes per second, one way), `rtt_ns=` (mean per request).

use std::io::{Read, Write};
use std::os::unix::net::UnixStream;
use std::time::{Duration, Instant};

use anyhow::{ensure, Context};
use clap::{Parser, Subcommand};
use peer::{ConnectOptions, Peer, DEFAULT_SOCKET_PATH};
use virtio_ivshmem::{device_id, Buffer, Driver, DriverOptions};

const TIMEOUT: Duration = Duration::from_secs(10);

#[derive(Parser)]
#[command(about = "virtio over ivshmem vs a UNIX socket pair (see the module docs)")]
struct Args {
    #[command(subcommand)]
    mode: Mode,
    /// Payload bytes per request.
    #[arg(long, global = true, default_value_t = 64)]
    bytes: usize,
    /// Timed requests.
    #[arg(short = 'n', long, global = true, default_value_t = 20_000)]
    requests: u64,
    /// Untimed requests first.
    #[arg(long, global = true, default_value_t = 1_000)]
    warmup: u64,
}

#[derive(Subcommand)]
enum Mode {
    /// Through the echo device's queue 0 over ivshmem.
    Virtio {
        /// The ivshmem server's socket (a vhost-bridge serves the echo device on it).
        #[arg(short = 'S', long, default_value = DEFAULT_SOCKET_PATH)]
        socket: String,
    },
    /// Through a UNIX socket pair to an echo thread.
    Socketpair,
}

/// The payload of request `i`: differs per request, so a stale answer never passes.
fn fill(payload: &mut [u8], i: u64) {
    for (j, b) in payload.iter_mut().enumerate() {
        *b = (i as usize).wrapping_mul(7).wrapping_add(j) as u8;
    }
}

/// Runs `request` for the warm-up and the timed requests; prints the figures.
fn measure(args: &Args, mut request: impl FnMut(u64) -> anyhow::Result<()>) -> anyhow::Result<()> {
    for i in 0..args.warmup {
        request(i)?;
    }
    let start = Instant::now();
    for i in 0..args.requests {
        request(args.warmup + i)?;
    }
    let secs = start.elapsed().as_secs_f64();
    let per_sec = args.requests as f64 / secs;
    println!("requests_per_sec={per_sec:.0}");
    println!(
        "mb_per_sec={:.1}",
        per_sec * args.bytes as f64 / 1_000_000.0
    );
    println!("rtt_ns={:.0}", secs * 1e9 / args.requests as f64);
    println!(
        "# {} requests of {} bytes in {secs:.3} s",
        args.requests, args.bytes
    );
    Ok(())
}

fn virtio(args: &Args, socket: &str) -> anyhow::Result<()> {
    let peer = Peer::connect_with(
        socket,
        &ConnectOptions {
            vectors: Some(2),
            timeout: TIMEOUT,
        },
    )
    .context("joining the ivshmem server")?;
    let shm_size = peer.shm().len() as u64;
    let mut d = Driver::open(
        peer,
        DriverOptions {
            header: 0,
            arena: 0x1000..shm_size,
            config_vector: 0,
            timeout: TIMEOUT,
        },
    )
    .context("opening the echo device")?;
    ensure!(
        d.device_id() == device_id::ECHO,
        "device {:#x} is not the echo device",
        d.device_id()
    );
    d.negotiate(0)?;
    d.setup_queue(0, 16, 1)?;
    d.start()?;
    let len = u32::try_from(args.bytes).context("payload size")?;
    let input = d.alloc(args.bytes as u64, 64)?;
    let output = d.alloc(args.bytes as u64, 64)?;
    let mut payload = vec![0u8; args.bytes];
    let mut back = vec![0u8; args.bytes];
    measure(args, |i| {
        fill(&mut payload, i);
        d.shm().write(input as usize, &payload)?;
        d.submit(
            0,
            &[Buffer { offset: input, len }],
            &[Buffer {
                offset: output,
                len,
            }],
        )?;
        let used = d.wait_used(0, TIMEOUT)?;
        ensure!(used.len == len, "request {i}: {} bytes back", used.len);
        d.shm().read(output as usize, &mut back)?;
        ensure!(
            back == payload,
            "request {i}: a different payload came back"
        );
        Ok(())
    })
}

fn socketpair(args: &Args) -> anyhow::Result<()> {
    let (mut client, mut server) = UnixStream::pair()?;
    let bytes = args.bytes;
    let echo = std::thread::spawn(move || -> std::io::Result<()> {
        let mut buf = vec![0u8; bytes];
        loop {
            match server.read_exact(&mut buf) {
                Ok(()) => server.write_all(&buf)?,
                Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof => return Ok(()),
                Err(e) => return Err(e),
            }
        }
    });
    let mut payload = vec![0u8; args.bytes];
    let mut back = vec![0u8; args.bytes];
    measure(args, |i| {
        fill(&mut payload, i);
        client.write_all(&payload)?;
        client.read_exact(&mut back)?;
        ensure!(
            back == payload,
            "request {i}: a different payload came back"
        );
        Ok(())
    })?;
    drop(client);
    echo.join().expect("echo thread")?;
    Ok(())
}

fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    ensure!(args.bytes > 0, "--bytes must be at least 1");
    ensure!(args.requests > 0, "--requests must be at least 1");
    match &args.mode {
        Mode::Virtio { socket } => virtio(&args, socket),
        Mode::Socketpair => socketpair(&args),
    }
}
