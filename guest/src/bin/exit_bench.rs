//! Benchmark: round trips through the VMM. Prints `mmio_exits_per_sec=..` (testdev NOP register
//! reads) and `pio_exits_per_sec=..` (NOP port reads).
#![no_std]
#![no_main]

use guest::layout::{testdev_pio, TESTDEV_PIO_BASE};
use guest::{clock, pio, println, testdev};

const ITERATIONS: u64 = 20_000;

fn main() -> i32 {
    let t0 = clock::now_ns();
    for _ in 0..ITERATIONS {
        testdev::nop_read();
    }
    let t1 = clock::now_ns();
    for _ in 0..ITERATIONS {
        // SAFETY: testdev NOP port.
        unsafe { pio::inl(TESTDEV_PIO_BASE + testdev_pio::NOP) };
    }
    let t2 = clock::now_ns();
    let rate = |ns: u64| ITERATIONS as f64 * 1e9 / ns as f64;
    println!(
        "exit_bench: iterations={ITERATIONS} mmio_exits_per_sec={:.0} pio_exits_per_sec={:.0} mmio_rtt_ns={} pio_rtt_ns={}",
        rate(t1 - t0),
        rate(t2 - t1),
        (t1 - t0) / ITERATIONS,
        (t2 - t1) / ITERATIONS
    );
    0
}

guest::entry!(main);
