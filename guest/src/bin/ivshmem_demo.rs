//! The ivshmem demo: say hello through shared memory and ring everyone who answers.
//!
//! Publishes "hello from VM <id>" in our slot of the peer directory (`guest::ivshmem::directory`:
//! 64-byte slots at the start of the shared memory, slot = peer id), then watches the directory:
//! every other peer that publishes a slot (other VMs, or a host peer using `ivshmem-client
//! write`) gets its message printed and one doorbell (`vector`). Doorbells that arrive are
//! counted and printed. Ends when it has heard from `peers` others and received `doorbells`
//! doorbells (exit 0), or after `timeout_ms` (exit 1). The slot stays after we end, so peers
//! that start later still hear from us (and their doorbell to us goes nowhere).
//!
//! Doorbells to one vector that arrive together merge into one interrupt (an eventfd counts,
//! an MSI does not), so `doorbells` above 1 is only exact when the senders use different
//! vectors or take turns.
//!
//! Guest args: `peers=N` (default 1), `doorbells=D` (default 1), `timeout_ms=T` (default 30000),
//! `vector=V` the vector we ring (default 0), `index=I` which ivshmem device (default 0).
//! Exit status: 0 done; 1 timeout; 2 bad args; 10 no ivshmem-doorbell device; 11 our id has no
//! directory slot.
#![no_std]
#![no_main]

use guest::ivshmem::{directory, Ivshmem};
use guest::{args, clock, interrupts, println};

struct Seen([u64; 4]);

impl Seen {
    fn get(&self, id: u16) -> bool {
        self.0[id as usize / 64] & (1 << (id % 64)) != 0
    }
    fn set(&mut self, id: u16, on: bool) {
        let bit = 1 << (id % 64);
        if on {
            self.0[id as usize / 64] |= bit
        } else {
            self.0[id as usize / 64] &= !bit
        }
    }
}

fn main() -> i32 {
    let peers = args::u64_or("peers", 1);
    let doorbells = args::u64_or("doorbells", 1);
    let timeout_ns = args::u64_or("timeout_ms", 30_000).saturating_mul(1_000_000);
    let ring_vector = args::u64_or("vector", 0) as u16;
    let index = args::u64_or("index", 0) as usize;

    let Some(dev) = Ivshmem::open_nth(index).filter(|d| d.is_doorbell()) else {
        println!("ivshmem-demo: no ivshmem-doorbell device #{index} (use --ivshmem doorbell,...)");
        return 10;
    };
    let id = dev.id();
    println!(
        "ivshmem-demo: I am peer {id} ({} KiB shared memory, {} vector(s))",
        dev.shm_size >> 10,
        dev.vectors
    );
    let mut text = [0u8; 32];
    let hello = format_into(&mut text, format_args!("hello from VM {id}"));
    if !directory::publish(&dev, id, hello) {
        println!(
            "ivshmem-demo: peer id {id} has no directory slot (max {})",
            directory::slots(&dev)
        );
        return 11;
    }
    println!("ivshmem-demo: wrote \"{hello}\" to slot {id}");

    let slots = directory::slots(&dev) as u16;
    let start = clock::now_ns();
    let mut seen = Seen([0; 4]);
    let mut heard = 0u64;
    let mut received = 0u64;
    let mut counts = [0u64; guest::ivshmem::MAX_VECTORS as usize];
    let result = loop {
        // New (or departed) peers in the directory.
        for other in (0..slots).filter(|&s| s != id) {
            let valid = directory::is_valid(&dev, other);
            if valid && !seen.get(other) {
                seen.set(other, true);
                heard += 1;
                let mut buf = [0u8; directory::TEXT_LEN];
                println!(
                    "ivshmem-demo: peer {other} says: \"{}\"",
                    directory::text(&dev, other, &mut buf)
                );
                dev.ring(other, ring_vector);
                println!("ivshmem-demo: rang peer {other} (vector {ring_vector})");
            } else if !valid && seen.get(other) {
                seen.set(other, false);
                println!("ivshmem-demo: peer {other} left the directory");
            }
        }
        // Doorbells that arrived.
        for v in 0..dev.vectors {
            let now = dev.received(v);
            while counts[v as usize] < now {
                counts[v as usize] += 1;
                received += 1;
                println!("ivshmem-demo: doorbell on vector {v} ({received} so far)");
            }
        }
        directory::set_counter(&dev, id, received);
        if heard >= peers && received >= doorbells {
            break 0;
        }
        let elapsed = clock::now_ns() - start;
        if elapsed >= timeout_ns {
            println!(
                "ivshmem-demo: timeout after {} ms: heard from {heard} of {peers} peer(s), \
                 {received} of {doorbells} doorbell(s)",
                elapsed / 1_000_000
            );
            break 1;
        }
        // Sleep until a doorbell (or the rescan timer) wakes us.
        let seen0 = dev.received(0);
        if counts[0] == seen0 {
            // Any interrupt ends the halt: a doorbell on any vector, or the next tick.
            guest::ivshmem::start_ticks();
            interrupts::halt_until_changed(dev.cpu_vector(0), seen0);
        }
    };
    if result == 0 {
        println!("ivshmem-demo: done: heard from {heard} peer(s), received {received} doorbell(s)");
    }
    result
}

/// Formats into `buf` (truncating) and returns the text.
fn format_into<'a>(buf: &'a mut [u8], args: core::fmt::Arguments<'_>) -> &'a str {
    struct Writer<'b> {
        buf: &'b mut [u8],
        len: usize,
    }
    impl core::fmt::Write for Writer<'_> {
        fn write_str(&mut self, s: &str) -> core::fmt::Result {
            let n = s.len().min(self.buf.len() - self.len);
            self.buf[self.len..self.len + n].copy_from_slice(&s.as_bytes()[..n]);
            self.len += n;
            Ok(())
        }
    }
    let mut w = Writer { buf, len: 0 };
    let _ = core::fmt::write(&mut w, args);
    let len = w.len;
    core::str::from_utf8(&w.buf[..len]).unwrap_or("")
}

guest::entry!(main);
