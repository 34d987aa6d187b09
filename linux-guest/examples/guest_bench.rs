//! Benchmarks of the Linux guest side, run inside a guest by tests/nested/guest-bench (and so by
//! `scripts/bench.sh`'s `guest_linux` section). Prints `BENCH key=value` lines.
//!
//!   guest_bench rtt --device 0 --peer 2 --rounds 1000 --blocks 5 --warmup 100
//!       rings vector V of the partner (one store to the mapped Doorbell register) and waits to be
//!       rung back on our vector V (poll on its eventfd), `warmup` untimed then `blocks` ×
//!       `rounds` timed times: `linux_rtt_mean_ns`, `linux_rtt_p50_ns` (over all rounds) and
//!       `linux_rtt_block_median_ns` (the median of the blocks' means). The partner answers every
//!       ring once, as `ivshmem_pingpong role=pong` or `bench doorbell-echo` do.
//!   guest_bench bandwidth --device 0 --window-mb 8
//!       fills a window of the shared memory (the driver's write-back mapping of BAR2) again and
//!       again, then a window of the same size in an anonymous mapping of our own, three times
//!       alternately: `linux_bar2_gbps`, `linux_ram_gbps` (medians, 10^9 bytes/s).
//!
//! Exit status: 0 done, 1 the partner did not answer or a write failed, 2 bad arguments or no
//! device.

use std::ffi::c_void;
use std::num::NonZeroUsize;
use std::process::ExitCode;
use std::ptr::NonNull;
use std::time::{Duration, Instant};

use clap::{Parser, Subcommand};
use ivshmem_guest::GuestDevice;
use nix::sys::mman::{mmap_anonymous, munmap, MapFlags, ProtFlags};

#[derive(Debug, Parser)]
#[command(name = "guest_bench")]
struct Args {
    /// The device: an index (0 = /dev/ivshmem0), a PCI address or a device node.
    #[arg(short = 'd', long, default_value = "0", global = true)]
    device: String,
    #[command(subcommand)]
    bench: Bench,
}

#[derive(Debug, Subcommand)]
enum Bench {
    /// Doorbell round trips with a partner that rings back.
    Rtt {
        /// The partner's peer id.
        #[arg(long)]
        peer: u16,
        /// The vector rung on both sides.
        #[arg(long, default_value_t = 0)]
        vector: u32,
        /// Timed rounds per block.
        #[arg(long, default_value_t = 1000)]
        rounds: u64,
        /// Blocks of timed rounds (the median of their means is robust to a burst of load).
        #[arg(long, default_value_t = 1)]
        blocks: u64,
        /// Untimed rounds first.
        #[arg(long, default_value_t = 100)]
        warmup: u64,
        /// How long to wait for each answer.
        #[arg(long, default_value_t = 60_000)]
        timeout_ms: u64,
    },
    /// Write bandwidth into the shared memory against an anonymous mapping.
    Bandwidth {
        /// Window size in MiB (in both memories).
        #[arg(long, default_value_t = 8)]
        window_mb: usize,
        /// Where the window starts in the shared memory, in KiB (past the guest programs'
        /// peer directory by default).
        #[arg(long, default_value_t = 64)]
        offset_kb: usize,
        /// Stop each measurement after this many MiB...
        #[arg(long, default_value_t = 1024)]
        total_mb: u64,
        /// ... or after this many milliseconds, whichever comes first.
        #[arg(long, default_value_t = 1000)]
        max_ms: u64,
    },
}

fn main() -> ExitCode {
    let args = Args::parse();
    let device = match GuestDevice::open_spec(&args.device) {
        Ok(device) => device,
        Err(e) => {
            eprintln!("guest_bench: {e}");
            return ExitCode::from(2);
        }
    };
    let outcome = match args.bench {
        Bench::Rtt {
            peer,
            vector,
            rounds,
            blocks,
            warmup,
            timeout_ms,
        } => round_trips(
            &device,
            Partner {
                peer,
                vector,
                timeout: Duration::from_millis(timeout_ms),
            },
            warmup,
            rounds.max(1),
            blocks.max(1),
        ),
        Bench::Bandwidth {
            window_mb,
            offset_kb,
            total_mb,
            max_ms,
        } => bandwidth(
            &device,
            window_mb << 20,
            offset_kb << 10,
            total_mb << 20,
            Duration::from_millis(max_ms),
        ),
    };
    match outcome {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("guest_bench: {e}");
            ExitCode::from(1)
        }
    }
}

/// Who answers our rings, on which vector, and how long we wait for each answer.
struct Partner {
    peer: u16,
    vector: u32,
    timeout: Duration,
}

fn round_trips(
    device: &GuestDevice,
    partner: Partner,
    warmup: u64,
    rounds: u64,
    blocks: u64,
) -> Result<(), String> {
    let Partner {
        peer,
        vector,
        timeout,
    } = partner;
    // A ring that arrived before we started (none should) would answer our first round.
    device
        .drain_vector(vector)
        .map_err(|e| format!("vector {vector}: {e}"))?;
    let timed = rounds * blocks;
    let mut times = Vec::with_capacity(timed as usize);
    for round in 0..warmup + timed {
        let start = Instant::now();
        device
            .ring(peer, vector)
            .map_err(|e| format!("ring {peer}/{vector}: {e}"))?;
        match device.wait_vector(vector, Some(timeout)) {
            Ok(Some(_)) => {}
            Ok(None) => {
                return Err(format!(
                    "round {round}: no answer from peer {peer} within {timeout:?}"
                ))
            }
            Err(e) => return Err(format!("round {round}: {e}")),
        }
        if round >= warmup {
            times.push(start.elapsed().as_nanos() as u64);
        }
    }
    let mut block_means: Vec<u64> = times
        .chunks(rounds as usize)
        .map(|block| block.iter().sum::<u64>() / block.len() as u64)
        .collect();
    block_means.sort_unstable();
    let mean = times.iter().sum::<u64>() / times.len() as u64;
    times.sort_unstable();
    println!("BENCH linux_rtt_rounds={rounds}");
    println!("BENCH linux_rtt_blocks={blocks}");
    println!("BENCH linux_rtt_mean_ns={mean}");
    println!("BENCH linux_rtt_p50_ns={}", times[times.len() / 2]);
    println!(
        "BENCH linux_rtt_block_median_ns={}",
        block_means[block_means.len() / 2]
    );
    Ok(())
}

/// Private anonymous memory of our own, unmapped on drop.
struct AnonymousMapping {
    base: NonNull<c_void>,
    len: NonZeroUsize,
}

impl AnonymousMapping {
    fn new(len: NonZeroUsize) -> Result<AnonymousMapping, String> {
        // SAFETY: a fresh private mapping at an address the kernel picks; nothing else refers
        // to it, and it is unmapped only in Drop.
        let base = unsafe {
            mmap_anonymous(
                None,
                len,
                ProtFlags::PROT_READ | ProtFlags::PROT_WRITE,
                MapFlags::MAP_PRIVATE,
            )
        }
        .map_err(|e| format!("anonymous mmap of {len} bytes: {e}"))?;
        Ok(AnonymousMapping { base, len })
    }

    fn fill(&mut self, byte: u8) {
        // SAFETY: the whole mapping is ours and writable; no reference into it exists.
        unsafe { std::ptr::write_bytes(self.base.as_ptr().cast::<u8>(), byte, self.len.get()) };
    }
}

impl Drop for AnonymousMapping {
    fn drop(&mut self) {
        // SAFETY: our own mapping, of exactly this length, unmapped once.
        if let Err(e) = unsafe { munmap(self.base, self.len.get()) } {
            eprintln!("guest_bench: munmap: {e}");
        }
    }
}

/// Fills a window again and again with `fill` (one untimed pass first, so page faults are not
/// counted) until `total` bytes or `max` time; bytes per nanosecond = GB/s.
fn fill_rate(
    window: usize,
    total: u64,
    max: Duration,
    mut fill: impl FnMut(u8) -> Result<(), String>,
) -> Result<f64, String> {
    fill(0)?;
    let start = Instant::now();
    let mut written = 0u64;
    let mut pass = 1u8;
    while written < total && start.elapsed() < max {
        // A different byte each pass, so no pass repeats the previous one's stores.
        fill(pass)?;
        pass = pass.wrapping_add(1);
        written += window as u64;
    }
    Ok(written as f64 / start.elapsed().as_nanos().max(1) as f64)
}

fn bandwidth(
    device: &GuestDevice,
    window: usize,
    offset: usize,
    total: u64,
    max: Duration,
) -> Result<(), String> {
    let shm = device.shm();
    shm.check_range(offset, window)
        .map_err(|e| format!("a {window}-byte window at {offset}: {e}"))?;
    let len = NonZeroUsize::new(window).ok_or("the window is empty")?;
    let mut own = AnonymousMapping::new(len)?;
    // Alternated, so a change in the machine's load touches both alike; medians reported.
    let (mut bar2, mut ram) = (Vec::new(), Vec::new());
    for _ in 0..BANDWIDTH_BLOCKS {
        bar2.push(fill_rate(window, total, max, |byte| {
            shm.fill(offset, window, byte).map_err(|e| e.to_string())
        })?);
        ram.push(fill_rate(window, total, max, |byte| {
            own.fill(byte);
            Ok(())
        })?);
    }
    println!("BENCH linux_bw_window_mb={}", window >> 20);
    println!("BENCH linux_bar2_gbps={:.3}", median(&mut bar2));
    println!("BENCH linux_ram_gbps={:.3}", median(&mut ram));
    Ok(())
}

/// How many times the two bandwidths are measured, alternately.
const BANDWIDTH_BLOCKS: usize = 3;

fn median(values: &mut [f64]) -> f64 {
    values.sort_unstable_by(f64::total_cmp);
    values[values.len() / 2]
}
