//! Ring-3 write bandwidth into the ivshmem shared memory (BAR2) compared with guest RAM.
//!
//! Fills a `window_mb` window (default: 16 MiB, or less if BAR2 or free RAM is smaller) again and
//! again with `rep stosq` until `total_mb` (default 64) bytes are written or `max_ms` (default
//! 2000) passed, first in BAR2, then in free guest RAM, and prints
//! `ivshmem_bandwidth: ... bar2_gbps=<x> ram_gbps=<y>` (10^9 bytes/s). With `mapping=trap` every
//! store exits to the VMM, so that run stops at `max_ms` with a small byte count.
//!
//! Timing uses the TSC (no exits inside the loop), calibrated against the VMM clock.
//! Guest args: `total_mb`, `window_mb`, `max_ms`, `offset_kb` (where in BAR2 the window starts;
//! default 64 KiB, past the peer directory), `index`.
//! Exit status: 0 ok; 2 bad args; 10 no ivshmem device; 12 window does not fit.
#![no_std]
#![no_main]

use guest::ivshmem::Ivshmem;
use guest::{args, clock, println, rt};

/// Bytes filled between two deadline checks.
const CHUNK: u64 = 64 << 10;

fn rdtsc() -> u64 {
    // SAFETY: rdtsc has no side effects (and is allowed in ring 3 unless CR4.TSD, which the
    // VMM does not set).
    unsafe { core::arch::x86_64::_rdtsc() }
}

/// TSC ticks per microsecond, measured over ~20 ms of VMM clock.
fn tsc_per_us() -> u64 {
    let (c0, t0) = (clock::now_ns(), rdtsc());
    guest::ivshmem::sleep_ns(20_000_000);
    let (c1, t1) = (clock::now_ns(), rdtsc());
    ((t1 - t0) * 1000 / (c1 - c0).max(1)).max(1)
}

/// Fills `len` bytes at `addr` with `value` (8-byte stores).
fn fill(addr: u64, len: u64, value: u64) {
    // SAFETY: callers pass a mapped, writable window nothing else references.
    unsafe {
        core::arch::asm!("rep stosq", inout("rdi") addr => _, inout("rcx") len / 8 => _,
                         in("rax") value, options(nostack, preserves_flags));
    }
}

/// Writes into `[addr, addr + window)` repeatedly; returns (bytes, ns).
fn measure(addr: u64, window: u64, total: u64, max_ticks: u64, ticks_per_us: u64) -> (u64, u64) {
    let start = rdtsc();
    let mut written = 0;
    let mut round = 0u64;
    'outer: while written < total {
        let mut at = 0;
        while at < window {
            let len = CHUNK.min(window - at);
            fill(addr + at, len, round);
            written += len;
            at += len;
            if written >= total || rdtsc() - start > max_ticks {
                break 'outer;
            }
        }
        round += 1;
    }
    let ns = (rdtsc() - start) * 1000 / ticks_per_us;
    (written, ns.max(1))
}

fn main() -> i32 {
    let total = args::u64_or("total_mb", 64) << 20;
    let max_ms = args::u64_or("max_ms", 2000);
    let offset = args::u64_or("offset_kb", 64) << 10;
    let index = args::u64_or("index", 0) as usize;

    let Some(dev) = Ivshmem::open_nth(index) else {
        println!("ivshmem_bandwidth: no ivshmem device #{index}");
        return 10;
    };
    let (ram_start, ram_end) = rt::free_ram();
    let ram_free = (ram_end - ram_start) & !0xFFFF;
    let default_window = (16u64 << 20)
        .min(dev.shm_size.saturating_sub(offset))
        .min(ram_free);
    let window =
        args::get("window_mb").map_or(default_window, |_| args::u64_or("window_mb", 0) << 20);
    if window < CHUNK || offset + window > dev.shm_size || window > ram_free {
        println!(
            "ivshmem_bandwidth: window {window:#x} at {offset:#x} does not fit BAR2 ({:#x}) and \
             free RAM ({ram_free:#x})",
            dev.shm_size
        );
        return 12;
    }
    let ticks = tsc_per_us();
    let max_ticks = max_ms * 1000 * ticks;
    // One untimed pass over each window (bounded by max_ms), so first-touch faults are not
    // timed.
    measure(dev.shm + offset, window, window, max_ticks, ticks);
    measure(ram_start, window, window, max_ticks, ticks);

    // No timer ticks during the measurements.
    guest::ivshmem::stop_ticks();
    let (bar2_bytes, bar2_ns) = measure(dev.shm + offset, window, total, max_ticks, ticks);
    let (ram_bytes, ram_ns) = measure(ram_start, window, total, max_ticks, ticks);
    let gbps = |bytes: u64, ns: u64| bytes as f64 / ns as f64;
    println!(
        "ivshmem_bandwidth: window={}KiB bar2_bytes={bar2_bytes} bar2_ms={} ram_bytes={ram_bytes} \
         ram_ms={} bar2_gbps={:.3} ram_gbps={:.3} bar2_mbps={:.2}",
        window >> 10,
        bar2_ns / 1_000_000,
        ram_ns / 1_000_000,
        gbps(bar2_bytes, bar2_ns),
        gbps(ram_bytes, ram_ns),
        gbps(bar2_bytes, bar2_ns) * 1000.0
    );
    0
}

guest::entry!(main);
