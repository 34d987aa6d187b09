//! Benchmark: ring-3 write bandwidth to guest RAM. Prints `ram_write_gbps=..` (and the copy
//! rate, `ram_copy_gbps=..`), to compare with a host memcpy.
#![no_std]
#![no_main]

use guest::{clock, println, rt};

const ROUNDS: u64 = 8;

fn main() -> i32 {
    let (start, end) = rt::free_ram();
    let half = ((end - start) / 2) & !0xFFF;
    if half < (1 << 20) {
        println!("ram_bandwidth: not enough free RAM");
        return 1;
    }
    // SAFETY: [start, end) is free RAM that nothing else uses.
    let (a, b) = unsafe {
        (
            core::slice::from_raw_parts_mut(start as *mut u8, half as usize),
            core::slice::from_raw_parts_mut((start + half) as *mut u8, half as usize),
        )
    };
    a.fill(1); // fault everything in before timing
    b.fill(2);
    let t0 = clock::now_ns();
    for round in 0..ROUNDS {
        a.fill(round as u8);
        // Keeps the optimizer from merging the rounds into one fill.
        core::hint::black_box(&mut *a);
    }
    let t1 = clock::now_ns();
    for _ in 0..ROUNDS {
        b.copy_from_slice(a);
        core::hint::black_box(&mut *b);
    }
    let t2 = clock::now_ns();
    let bytes = (half * ROUNDS) as f64;
    let write = bytes / (t1 - t0) as f64;
    let copy = bytes / (t2 - t1) as f64;
    println!(
        "ram_bandwidth: buffer={}MiB ram_write_gbps={:.2} ram_copy_gbps={:.2}",
        half >> 20,
        write,
        copy
    );
    0
}

guest::entry!(main);
