//! Every vCPU checks in; vCPU 0 waits for all of them and exits 0.
#![no_std]
#![no_main]

use core::sync::atomic::{AtomicU32, Ordering};
use guest::{println, testdev};

static ARRIVED: AtomicU32 = AtomicU32::new(0);

fn main() -> i32 {
    let ncpus = testdev::ncpus();
    ARRIVED.fetch_add(1, Ordering::SeqCst);
    let start = guest::clock::now_ns();
    while ARRIVED.load(Ordering::SeqCst) < ncpus {
        if guest::clock::now_ns() - start > 10_000_000_000 {
            println!(
                "smp: only {} of {ncpus} cpus arrived",
                ARRIVED.load(Ordering::SeqCst)
            );
            return 1;
        }
        core::hint::spin_loop();
    }
    println!("smp: all {ncpus} cpus up");
    0
}

fn ap_main(cpu: u32) {
    let id = testdev::cpu_id();
    println!("smp: cpu {cpu} up (testdev says {id})");
    if id == cpu {
        ARRIVED.fetch_add(1, Ordering::SeqCst);
    }
}

guest::entry!(main, ap_main);
