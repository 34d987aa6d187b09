//! Virtio over ivshmem against a UNIX socket pair and memcpy, with the same echo payloads and
//! the same number of requests in flight (`--depth`):
//!
//! * `virtio_bench virtio -S SOCK --bytes N --depth D` — a host driver
//!   (`virtio_ivshmem::Driver`) keeps D echo requests in flight on queue 0 of the echo device
//!   (`vhost-user-echo` behind a `vhost-bridge` on that server, header at offset 0). Each
//!   request has its own slot in the shared memory: the payload is produced there in place (its
//!   first 8 bytes carry the request number, the rest is the slot's pattern), the backend copies
//!   it into the slot's answer buffer, and the driver reads the answer out and checks it whole.
//!   `--event-idx` and `--indirect` ask for those ring features; `--poll-us N` busy-polls the
//!   used ring for up to N µs before sleeping for a call (the driver's
//!   [`busy_poll`](virtio_ivshmem::DriverOptions::busy_poll); 0, the default, sleeps at once).
//! * `virtio_bench socketpair --bytes N --depth D` — the baseline: the same payloads written to
//!   one end of a `socketpair(AF_UNIX, SOCK_STREAM)`, D requests out at a time, echoed by a
//!   thread on the other end, read back and checked whole; one non-blocking client thread
//!   that sleeps in poll() only when it can neither write nor read.
//! * `virtio_bench memcpy --bytes N --depth D` — the other baseline: the same payloads copied
//!   between D source and D destination buffers (one copy per request, no check).
//! * `virtio_bench ring-model --bytes N --depth D` — the same echo through a minimal split ring
//!   between two threads of this process (ring_model.rs): what the machine allows a virtqueue
//!   echo at that depth, without anything around the ring.
//!
//! `--warmup` untimed requests first. Output lines: `requests_per_sec=`, `mb_per_sec=` (10^6
//! payload bytes per second, one way), `rtt_ns=` (mean time per request: with D in flight, the
//! inverse of the rate, not a latency); `virtio` adds per-request `kicks=`, `kicks_suppressed=`,
//! `calls=`, `indirect=` (chains in indirect tables), `sleeps=` (waits that slept) and `polled=`
//! (waits busy polling answered), and `max_outstanding=`.

use std::io::{Read, Write};
use std::os::fd::AsFd;
use std::os::unix::net::UnixStream;
use std::time::{Duration, Instant};

use anyhow::{bail, ensure, Context};
use clap::{Parser, Subcommand};
use nix::poll::{PollFd, PollFlags, PollTimeout};
use peer::{ConnectOptions, Peer, DEFAULT_SOCKET_PATH};
use virtio_ivshmem::layout::feature;
use virtio_ivshmem::{device_id, Buffer, Driver, DriverOptions};

mod ring_model;

const TIMEOUT: Duration = Duration::from_secs(10);

#[derive(Parser)]
#[command(about = "virtio over ivshmem vs a UNIX socket pair and memcpy (see the module docs)")]
struct Args {
    #[command(subcommand)]
    mode: Mode,
    /// Payload bytes per request (at least 8).
    #[arg(long, global = true, default_value_t = 64)]
    bytes: usize,
    /// Timed requests.
    #[arg(short = 'n', long, global = true, default_value_t = 20_000)]
    requests: u64,
    /// Untimed requests first.
    #[arg(long, global = true, default_value_t = 1_000)]
    warmup: u64,
    /// Requests in flight.
    #[arg(long, global = true, default_value_t = 1)]
    depth: usize,
}

#[derive(Subcommand)]
enum Mode {
    /// Through the echo device's queue 0 over ivshmem.
    Virtio {
        /// The ivshmem server's socket (a vhost-bridge serves the echo device on it).
        #[arg(short = 'S', long, default_value = DEFAULT_SOCKET_PATH)]
        socket: String,
        /// Negotiate VIRTIO_F_EVENT_IDX (if offered).
        #[arg(long)]
        event_idx: bool,
        /// Negotiate VIRTIO_F_INDIRECT_DESC (if offered).
        #[arg(long)]
        indirect: bool,
        /// Queue size (a power of two the device accepts).
        #[arg(long, default_value_t = 128)]
        queue_size: u32,
        /// Busy-poll the used ring for up to this many µs before sleeping (0: sleep at once).
        #[arg(long, default_value_t = 0)]
        poll_us: u64,
    },
    /// Through a UNIX socket pair to an echo thread.
    Socketpair,
    /// memcpy between buffers.
    Memcpy,
    /// Through a minimal split ring between two threads of this process.
    RingModel,
}

/// Slot `slot`'s payload pattern (request numbers go in the first 8 bytes).
fn pattern(payload: &mut [u8], slot: usize) {
    for (j, b) in payload.iter_mut().enumerate() {
        *b = slot.wrapping_mul(31).wrapping_add(j.wrapping_mul(7)) as u8;
    }
}

/// Request `i`'s stamp.
fn stamp(i: u64) -> [u8; 8] {
    i.wrapping_mul(0x9E37_79B9_7F4A_7C15).to_le_bytes()
}

/// Prints the figures for `requests` requests of `bytes` in `secs`.
fn report(args: &Args, secs: f64) {
    let per_sec = args.requests as f64 / secs;
    println!("requests_per_sec={per_sec:.0}");
    println!(
        "mb_per_sec={:.1}",
        per_sec * args.bytes as f64 / 1_000_000.0
    );
    println!("rtt_ns={:.0}", secs * 1e9 / args.requests as f64);
    println!(
        "# {} requests of {} bytes, {} in flight, in {secs:.3} s",
        args.requests, args.bytes, args.depth
    );
}

fn virtio(
    args: &Args,
    socket: &str,
    event_idx: bool,
    indirect: bool,
    queue_size: u32,
    poll_us: u64,
) -> anyhow::Result<()> {
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
            busy_poll: Duration::from_micros(poll_us),
        },
    )
    .context("opening the echo device")?;
    ensure!(
        d.device_id() == device_id::ECHO,
        "device {:#x} is not the echo device",
        d.device_id()
    );
    let mut wanted = 0;
    if event_idx {
        wanted |= feature::EVENT_IDX;
    }
    if indirect {
        wanted |= feature::INDIRECT_DESC;
    }
    let features = d.negotiate(wanted)?;
    eprintln!("# features {features:#x}");
    d.setup_queue(0, queue_size, 1)?;
    d.start()?;
    let len = u32::try_from(args.bytes).context("payload size")?;
    let bytes = args.bytes as u64;
    let mut p = Pipeline {
        len,
        inputs: Vec::new(),
        outputs: Vec::new(),
        expected: vec![vec![0u8; args.bytes]; args.depth],
        back: vec![0u8; args.bytes],
        out: vec![None; 1 << 16],
        max_outstanding: 0,
        d,
    };
    // Per slot: the request's bytes, then the answer's.
    for slot in 0..args.depth {
        let input = p.d.alloc(bytes, 64)?;
        let output = p.d.alloc(bytes, 64)?;
        pattern(&mut p.expected[slot], slot);
        p.d.shm().write(input as usize, &p.expected[slot])?;
        p.inputs.push(input);
        p.outputs.push(output);
    }
    p.run(0, args.warmup, args.depth)?;
    let before = p.d.stats(0);
    let start = Instant::now();
    p.run(args.warmup, args.requests, args.depth)?;
    let secs = start.elapsed().as_secs_f64();
    let after = p.d.stats(0);
    report(args, secs);
    let per = |a: u64, b: u64| (a - b) as f64 / args.requests as f64;
    println!("kicks={:.3}", per(after.kicks, before.kicks));
    println!(
        "kicks_suppressed={:.3}",
        per(after.kicks_suppressed, before.kicks_suppressed)
    );
    println!("calls={:.3}", per(after.calls, before.calls));
    println!("indirect={:.3}", per(after.indirect, before.indirect));
    println!("sleeps={:.3}", per(after.sleeps, before.sleeps));
    println!("polled={:.3}", per(after.polled, before.polled));
    println!("max_outstanding={}", p.max_outstanding);
    Ok(())
}

/// The virtio run's state: one slot per request in flight.
struct Pipeline {
    d: Driver,
    len: u32,
    inputs: Vec<u64>,
    outputs: Vec<u64>,
    /// Per slot, the answer expected for its current request.
    expected: Vec<Vec<u8>>,
    back: Vec<u8>,
    /// Token (head descriptor) -> (slot, request number).
    out: Vec<Option<(usize, u64)>>,
    max_outstanding: usize,
}

impl Pipeline {
    /// Stamps request `i` into `slot`'s payload and adds it to the queue (no kick).
    fn issue(&mut self, slot: usize, i: u64) -> anyhow::Result<()> {
        self.d.shm().write(self.inputs[slot] as usize, &stamp(i))?;
        let token = self.d.add(
            0,
            &[Buffer {
                offset: self.inputs[slot],
                len: self.len,
            }],
            &[Buffer {
                offset: self.outputs[slot],
                len: self.len,
            }],
        )?;
        self.out[token as usize] = Some((slot, i));
        Ok(())
    }

    /// Requests `first..first + total`, `depth` in flight: every answer taken is checked and
    /// its slot reused at once; one kick per batch added.
    fn run(&mut self, first: u64, total: u64, depth: usize) -> anyhow::Result<()> {
        let mut issued = 0u64;
        let mut done = 0u64;
        for slot in 0..depth.min(total as usize) {
            self.issue(slot, first + issued)?;
            issued += 1;
        }
        self.d.kick(0)?;
        while done < total {
            self.max_outstanding = self.max_outstanding.max(self.d.outstanding(0));
            let mut used = Some(self.d.wait_used(0, TIMEOUT)?);
            while let Some(u) = used {
                let Some((slot, i)) = self.out.get_mut(u.token as usize).and_then(Option::take)
                else {
                    bail!("token {} came back but is not out", u.token);
                };
                ensure!(u.len == self.len, "request {i}: {} bytes back", u.len);
                self.d
                    .shm()
                    .read(self.outputs[slot] as usize, &mut self.back)?;
                self.expected[slot][..8].copy_from_slice(&stamp(i));
                ensure!(
                    self.back == self.expected[slot],
                    "request {i}: a different payload came back"
                );
                done += 1;
                if issued < total {
                    self.issue(slot, first + issued)?;
                    issued += 1;
                }
                used = self.d.try_used(0)?;
            }
            self.d.kick(0)?;
        }
        Ok(())
    }
}

fn socketpair(args: &Args) -> anyhow::Result<()> {
    let (client, mut server) = UnixStream::pair()?;
    let bytes = args.bytes;
    // The echo returns whatever arrived in one read (a byte stream: requests that arrived
    // together go back together), so at depth it costs fewer system calls than one per request.
    let echo_buf = (bytes * args.depth).max(bytes);
    let echo = std::thread::spawn(move || -> std::io::Result<()> {
        let mut buf = vec![0u8; echo_buf];
        loop {
            match server.read(&mut buf) {
                Ok(0) => return Ok(()),
                Ok(n) => server.write_all(&buf[..n])?,
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
                Err(e) => return Err(e),
            }
        }
    });
    // One thread, the socket non-blocking: it writes requests while fewer than `depth` are
    // out (as far as the socket takes them) and reads answers as they come, sleeping in
    // poll() only when it can do neither. Answers come back in order.
    // One request out never needs to write and read at once: plain blocking calls then.
    client.set_nonblocking(args.depth > 1)?;
    let mut client = client;
    let depth = args.depth as u64;
    let total = args.warmup + args.requests;
    let mut slots = vec![vec![0u8; bytes]; args.depth];
    for (slot, payload) in slots.iter_mut().enumerate() {
        pattern(payload, slot);
    }
    let mut expected = slots.clone();
    // Answers are read as they come, several per read when several are there.
    let mut inbuf = vec![0u8; bytes * args.depth];
    let (mut issued, mut sent_bytes, mut done, mut filled) = (0u64, 0usize, 0u64, 0usize);
    let mut start = Instant::now();
    let would_block = |e: &std::io::Error| e.kind() == std::io::ErrorKind::WouldBlock;
    while done < total {
        let mut progress = false;
        // Send: the request being written, or the next one if fewer than `depth` are out.
        while issued < total && issued - done < depth {
            let slot = &mut slots[(issued % depth) as usize];
            if sent_bytes == 0 {
                slot[..8].copy_from_slice(&stamp(issued));
            }
            match client.write(&slot[sent_bytes..]) {
                Ok(n) => {
                    progress = true;
                    sent_bytes += n;
                    if sent_bytes == bytes {
                        sent_bytes = 0;
                        issued += 1;
                    }
                }
                Err(e) if would_block(&e) => break,
                Err(e) => return Err(e.into()),
            }
        }
        // Receive whatever answers are there, and check every complete one.
        match client.read(&mut inbuf[filled..]) {
            Ok(0) => bail!("the echo thread closed the socket"),
            Ok(n) => {
                progress = true;
                filled += n;
                let mut at = 0;
                while filled - at >= bytes {
                    let want = &mut expected[(done % depth) as usize];
                    want[..8].copy_from_slice(&stamp(done));
                    ensure!(
                        inbuf[at..at + bytes] == *want,
                        "request {done}: a different payload came back"
                    );
                    at += bytes;
                    done += 1;
                    if done == args.warmup {
                        start = Instant::now();
                    }
                }
                inbuf.copy_within(at..filled, 0);
                filled -= at;
            }
            Err(e) if would_block(&e) => {}
            Err(e) => return Err(e.into()),
        }
        if !progress {
            let mut events = PollFlags::POLLIN;
            if issued < total && issued - done < depth {
                events |= PollFlags::POLLOUT;
            }
            let mut fds = [PollFd::new(client.as_fd(), events)];
            match nix::poll::poll(&mut fds, PollTimeout::from(10_000u16)) {
                Ok(0) => bail!("no progress for 10 s"),
                Ok(_) | Err(nix::errno::Errno::EINTR) => {}
                Err(e) => return Err(e.into()),
            }
        }
    }
    let secs = start.elapsed().as_secs_f64();
    report(args, secs);
    client.shutdown(std::net::Shutdown::Both)?;
    echo.join().expect("echo thread")?;
    Ok(())
}

fn memcpy(args: &Args) -> anyhow::Result<()> {
    let depth = args.depth;
    let mut src = vec![vec![0u8; args.bytes]; depth];
    for (slot, payload) in src.iter_mut().enumerate() {
        pattern(payload, slot);
    }
    let mut dst = vec![vec![0u8; args.bytes]; depth];
    let mut copy = |i: u64| {
        let slot = (i % depth as u64) as usize;
        src[slot][..8].copy_from_slice(&stamp(i));
        dst[slot].copy_from_slice(std::hint::black_box(&src[slot]));
        std::hint::black_box(&dst[slot]);
    };
    for i in 0..args.warmup {
        copy(i);
    }
    let start = Instant::now();
    for i in 0..args.requests {
        copy(args.warmup + i);
    }
    report(args, start.elapsed().as_secs_f64());
    Ok(())
}

fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    ensure!(args.bytes >= 8, "--bytes must be at least 8");
    ensure!(args.requests > 0, "--requests must be at least 1");
    ensure!(
        (1..=1024).contains(&args.depth),
        "--depth must be 1 to 1024"
    );
    match &args.mode {
        Mode::Virtio {
            socket,
            event_idx,
            indirect,
            queue_size,
            poll_us,
        } => virtio(&args, socket, *event_idx, *indirect, *queue_size, *poll_us),
        Mode::Socketpair => socketpair(&args),
        Mode::Memcpy => memcpy(&args),
        Mode::RingModel => ring_model::ring_model(&args),
    }
}
