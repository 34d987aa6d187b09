//! Interrupt path self-test: self-IPIs through the LAPIC reach the VMM's ring-0 stub, which
//! counts them in the mailbox; the halt gate blocks until they arrive; a wait with a timeout
//! (LAPIC timer) returns when nothing comes.
#![no_std]
#![no_main]

use guest::{interrupts, println};

const VECTOR: u8 = 0x40;

fn main() -> i32 {
    for round in 1..=3u64 {
        let seen = interrupts::count(VECTOR);
        interrupts::self_ipi(VECTOR);
        let now = interrupts::wait_interrupt(VECTOR, seen);
        if now != seen + 1 {
            println!("irq_selftest: round {round}: counter {seen} -> {now}");
            return 1;
        }
    }
    let start = guest::clock::now_ns();
    let got = interrupts::wait_interrupt_timeout(VECTOR + 1, 0, 20_000_000);
    let waited_ms = (guest::clock::now_ns() - start) / 1_000_000;
    if got.is_some() || waited_ms < 15 {
        println!("irq_selftest: timeout wait returned {got:?} after {waited_ms} ms");
        return 1;
    }
    println!(
        "irq_selftest: ok (vector {VECTOR:#x} x{}, timeout after {waited_ms} ms, timer irqs {})",
        interrupts::count(VECTOR),
        interrupts::count(guest::layout::VECTOR_TIMER)
    );
    0
}

guest::entry!(main);
