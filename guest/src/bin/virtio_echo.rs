//! Round trips through the echo device (`vhost-user-echo` behind a `vhost-bridge` peer) over
//! ivshmem: on each of `queues` queues at once, `requests` chains of a `bytes`-byte readable
//! buffer and a writable one; the backend copies one into the other in the shared memory.
//! Every answer is checked byte for byte. Kicks are doorbells (KVM ioeventfds); the device's
//! calls are MSI-X interrupts (KVM irqfds), or with `wait=poll` there are none and the program
//! spins on the used rings.
//!
//! Guest args: `queues=Q` (default 1; queue q calls our vector q+1), `requests=N` per queue
//! (default 100), `warmup=W` untimed rounds (default 0), `bytes=B` (default 64, at most 65536),
//! `size=S` queue size (default 16), `wait=interrupt|poll`, `header=OFF` (default 0),
//! `arena=OFF` (default just after the header), `index=I`, `timeout_ms=T` (default 10000).
//! Prints `virtio_echo: queues=Q requests=N bytes=B ns_per_round=T requests_per_sec=R
//! mb_per_sec=M calls=C` (rounds: one request on every queue).
//! Exit status: 0 ok; 2 bad args; 10 no doorbell device; 20 open failed; 21 negotiation
//! failed; 22 queue set-up failed; 23 DRIVER_OK failed; 30 a request failed; 31 a wrong answer;
//! 40 the reset at the end failed.
#![no_std]
#![no_main]

use guest::ivshmem::Ivshmem;
use guest::virtio::{Buffer, QueuePlan, VirtioDriver, Wait, MAX_DRIVER_QUEUES};
use guest::virtio_layout::HEADER_SIZE;
use guest::{args, clock, println};

/// Word `w` of round `round`'s payload on queue `q`: differs per round and queue, so a stale or
/// misrouted answer never passes.
fn pattern(q: u64, round: u64, w: u64) -> u64 {
    let x = (round << 32 | q << 24 | w).wrapping_mul(0x9E37_79B9_7F4A_7C15);
    x ^ x >> 29
}

/// Writes the payload at `at` in 8-byte words (then the tail bytes).
fn fill(dev: &Ivshmem, at: u64, q: u64, round: u64, bytes: u64) {
    for w in 0..bytes.div_ceil(8) {
        let word = pattern(q, round, w);
        if 8 * w + 8 <= bytes {
            dev.write_u64(at + 8 * w, word);
        } else {
            for j in 8 * w..bytes {
                dev.write_u8(at + j, (word >> (8 * (j - 8 * w))) as u8);
            }
        }
    }
}

/// The first byte offset at `at` that differs from the payload, if any.
fn first_difference(dev: &Ivshmem, at: u64, q: u64, round: u64, bytes: u64) -> Option<u64> {
    for w in 0..bytes.div_ceil(8) {
        let word = pattern(q, round, w);
        if 8 * w + 8 <= bytes {
            if dev.read_u64(at + 8 * w) != word {
                return Some(8 * w);
            }
        } else {
            for j in 8 * w..bytes {
                if dev.read_u8(at + j) != (word >> (8 * (j - 8 * w))) as u8 {
                    return Some(j);
                }
            }
        }
    }
    None
}

fn main() -> i32 {
    let queues = args::u64_or("queues", 1);
    let requests = args::u64_or("requests", 100);
    let warmup = args::u64_or("warmup", 0);
    let bytes = args::u64_or("bytes", 64);
    let size = args::u64_or("size", 16) as u32;
    let header = args::u64_or("header", 0);
    let arena = args::u64_or("arena", header + HEADER_SIZE as u64);
    let timeout_ns = args::u64_or("timeout_ms", 10_000).saturating_mul(1_000_000);
    let index = args::u64_or("index", 0) as usize;
    let wait = match args::str_or("wait", "interrupt") {
        "interrupt" => Wait::Interrupt,
        "poll" => Wait::Poll,
        other => {
            println!("virtio_echo: wait must be interrupt or poll, not {other}");
            return 2;
        }
    };
    if bytes == 0 || bytes > 65536 || requests == 0 {
        println!("virtio_echo: bytes must be 1..=65536 and requests at least 1");
        return 2;
    }
    if queues == 0 || queues as usize > MAX_DRIVER_QUEUES {
        println!("virtio_echo: queues must be 1..={MAX_DRIVER_QUEUES}");
        return 2;
    }
    let Some(dev) = Ivshmem::open_nth(index).filter(|d| d.is_doorbell()) else {
        println!("virtio_echo: no ivshmem-doorbell device #{index}");
        return 10;
    };
    let mut d = match VirtioDriver::bring_up(
        "virtio_echo",
        &dev,
        header,
        arena..dev.shm_size,
        timeout_ns,
        QueuePlan {
            count: queues as u32,
            size,
            wait,
        },
    ) {
        Ok(d) => d,
        Err(status) => return status,
    };
    // Per queue: the request's bytes, then the answer's.
    let Ok(buffers) = d.alloc(2 * bytes * queues, 64) else {
        println!("virtio_echo: no room for the buffers");
        return 22;
    };
    let input = |q: u64| buffers + 2 * bytes * q;
    let output = |q: u64| input(q) + bytes;
    let calls = || (1..=queues).map(|v| dev.received(v as u16)).sum::<u64>();
    let mut calls_before = calls();
    let mut start = clock::now_ns();
    for round in 0..warmup + requests {
        if round == warmup {
            calls_before = calls();
            start = clock::now_ns();
        }
        for q in 0..queues {
            fill(&dev, input(q), q, round, bytes);
            let len = bytes as u32;
            let readable = Buffer {
                offset: input(q),
                len,
            };
            let writable = Buffer {
                offset: output(q),
                len,
            };
            if let Err(e) = d.submit(q as u32, &[readable], &[writable]) {
                println!("virtio_echo: queue {q} round {round}: {e}");
                return 30;
            }
        }
        for q in 0..queues {
            let used = match d.wait_used(q as u32, wait) {
                Ok(used) => used,
                Err(e) => {
                    println!("virtio_echo: queue {q} round {round}: {e}");
                    return 30;
                }
            };
            if used.len as u64 != bytes {
                println!(
                    "virtio_echo: queue {q} round {round}: {} bytes back",
                    used.len
                );
                return 31;
            }
            if let Some(i) = first_difference(&dev, output(q), q, round, bytes) {
                println!("virtio_echo: queue {q} round {round}: byte {i} differs");
                return 31;
            }
        }
    }
    let elapsed = (clock::now_ns() - start).max(1);
    let total = requests * queues;
    println!(
        "virtio_echo: queues={queues} requests={requests} bytes={bytes} ns_per_round={} \
         requests_per_sec={} mb_per_sec={} calls={}",
        elapsed / requests,
        total * 1_000_000_000 / elapsed,
        total * bytes * 1000 / elapsed,
        calls() - calls_before
    );
    if let Err(e) = d.close() {
        println!("virtio_echo: reset: {e}");
        return 40;
    }
    0
}

guest::entry!(main);
