//! Round trips through the echo device (`vhost-user-echo` behind a `vhost-bridge` peer) over
//! ivshmem: on each of `queues` queues at once, `requests` chains of a `bytes`-byte readable
//! buffer and a writable one; the backend copies one into the other in the shared memory.
//! Every answer is checked byte for byte. Kicks are doorbells (KVM ioeventfds); the device's
//! calls are MSI-X interrupts (KVM irqfds), or with `wait=poll` there are none and the program
//! spins on the used rings.
//!
//! Guest args: `queues=Q` (default 1; queue q calls our vector q+1), `requests=N` per queue
//! (default 100), `warmup=W` untimed rounds (default 0), `bytes=B` (default 64, at most 65536),
//! `size=S` queue size (default 16), `depth=D` requests in flight per queue (default 1, at most
//! 32 and size/2, or size with indirect tables), `event_idx=1` (negotiate VIRTIO_F_EVENT_IDX;
//! interrupt waits only), `indirect=1` (negotiate VIRTIO_F_INDIRECT_DESC: each request's two
//! buffers go into a table of its own and take one ring descriptor),
//! `wait=interrupt|poll`, `header=OFF` (default 0), `arena=OFF` (default just after the header),
//! `index=I`, `timeout_ms=T` (default 10000).
//! Prints `virtio_echo: queues=Q requests=N bytes=B depth=D ns_per_round=T requests_per_sec=R
//! mb_per_sec=M calls=C kicks=K kicks_suppressed=S indirect=I max_outstanding=O` (rounds: one
//! request on every queue; kicks and I, the requests placed in indirect tables, counted over
//! the timed requests).
//! Exit status: 0 ok; 2 bad args; 10 no doorbell device; 20 open failed; 21 negotiation
//! failed; 22 queue set-up failed; 23 DRIVER_OK failed; 30 a request failed; 31 a wrong answer;
//! 40 the reset at the end failed.
#![no_std]
#![no_main]

use guest::ivshmem::Ivshmem;
use guest::virtio::{Buffer, QueuePlan, VirtioDriver, Wait, MAX_DRIVER_QUEUES, MAX_QUEUE_SIZE};
use guest::virtio_layout::{feature, HEADER_SIZE};

/// Most requests in flight per queue.
const MAX_DEPTH: usize = 32;
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

/// The requests of one run: every queue keeps `depth` requests out, each in its own slot
/// (input and output buffers); an answer is checked and its slot reused at once.
struct Echo<'a, 'd> {
    d: &'a mut VirtioDriver<'d>,
    dev: &'a Ivshmem,
    queues: u64,
    depth: u64,
    bytes: u64,
    wait: Wait,
    buffers: u64,
    /// Per queue: which slot a token (head descriptor) is, and each slot's round.
    slot_of: [[u8; MAX_QUEUE_SIZE]; MAX_DRIVER_QUEUES],
    round_of: [[u64; MAX_DEPTH]; MAX_DRIVER_QUEUES],
    max_outstanding: u16,
}

impl Echo<'_, '_> {
    fn input(&self, q: u64, slot: u64) -> u64 {
        self.buffers + 2 * self.bytes * (q * self.depth + slot)
    }

    fn output(&self, q: u64, slot: u64) -> u64 {
        self.input(q, slot) + self.bytes
    }

    /// Fills `slot` of queue `q` with round `round`'s payload and submits it.
    fn submit(&mut self, q: u64, slot: u64, round: u64) -> Result<(), i32> {
        fill(self.dev, self.input(q, slot), q, round, self.bytes);
        let len = self.bytes as u32;
        let readable = Buffer {
            offset: self.input(q, slot),
            len,
        };
        let writable = Buffer {
            offset: self.output(q, slot),
            len,
        };
        match self.d.submit(q as u32, &[readable], &[writable]) {
            Ok(token) => {
                self.slot_of[q as usize][token as usize] = slot as u8;
                self.round_of[q as usize][slot as usize] = round;
                self.max_outstanding = self.max_outstanding.max(self.d.outstanding(q as u32));
                Ok(())
            }
            Err(e) => {
                println!("virtio_echo: queue {q} round {round}: {e}");
                Err(30)
            }
        }
    }

    /// Rounds `first..first + count` on every queue.
    fn run(&mut self, first: u64, count: u64) -> Result<(), i32> {
        let mut issued = [0u64; MAX_DRIVER_QUEUES];
        let mut done = [0u64; MAX_DRIVER_QUEUES];
        for q in 0..self.queues {
            for slot in 0..self.depth.min(count) {
                self.submit(q, slot, first + slot)?;
            }
            issued[q as usize] = self.depth.min(count);
        }
        while (0..self.queues).any(|q| done[q as usize] < count) {
            for q in 0..self.queues {
                if done[q as usize] == count {
                    continue;
                }
                let used = match self.d.wait_used(q as u32, self.wait) {
                    Ok(used) => used,
                    Err(e) => {
                        println!("virtio_echo: queue {q}: {e}");
                        return Err(30);
                    }
                };
                let slot = self.slot_of[q as usize][used.token as usize] as u64;
                let round = self.round_of[q as usize][slot as usize];
                if used.len as u64 != self.bytes {
                    println!(
                        "virtio_echo: queue {q} round {round}: {} bytes back",
                        used.len
                    );
                    return Err(31);
                }
                let at = self.output(q, slot);
                if let Some(i) = first_difference(self.dev, at, q, round, self.bytes) {
                    println!("virtio_echo: queue {q} round {round}: byte {i} differs");
                    return Err(31);
                }
                done[q as usize] += 1;
                if issued[q as usize] < count {
                    self.submit(q, slot, first + issued[q as usize])?;
                    issued[q as usize] += 1;
                }
            }
        }
        Ok(())
    }
}

fn main() -> i32 {
    let queues = args::u64_or("queues", 1);
    let requests = args::u64_or("requests", 100);
    let warmup = args::u64_or("warmup", 0);
    let bytes = args::u64_or("bytes", 64);
    let size = args::u64_or("size", 16) as u32;
    let depth = args::u64_or("depth", 1);
    let event_idx = args::u64_or("event_idx", 0) != 0;
    let indirect = args::u64_or("indirect", 0) != 0;
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
    // Without tables each request takes two ring descriptors, with them one.
    let per_request = if indirect { 1 } else { 2 };
    if depth == 0 || depth as usize > MAX_DEPTH || per_request * depth > size as u64 {
        println!(
            "virtio_echo: depth must be 1..={MAX_DEPTH} and at most size/2 (size with indirect=1)"
        );
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
            wanted: if event_idx { feature::EVENT_IDX } else { 0 }
                | if indirect { feature::INDIRECT_DESC } else { 0 },
            count: queues as u32,
            size,
            wait,
        },
    ) {
        Ok(d) => d,
        Err(status) => return status,
    };
    if event_idx && d.features() & feature::EVENT_IDX == 0 {
        println!("virtio_echo: EVENT_IDX asked for but not negotiated");
        return 21;
    }
    if indirect && d.features() & feature::INDIRECT_DESC == 0 {
        println!("virtio_echo: INDIRECT_DESC asked for but not negotiated");
        return 21;
    }
    // Per queue and slot: the request's bytes, then the answer's.
    let Ok(buffers) = d.alloc(2 * bytes * queues * depth, 64) else {
        println!("virtio_echo: no room for the buffers");
        return 22;
    };
    let calls = || (1..=queues).map(|v| dev.received(v as u16)).sum::<u64>();
    let kicks = |d: &VirtioDriver| {
        (0..queues as u32)
            .map(|q| d.kicks(q))
            .fold((0, 0), |(a, b), (k, s)| (a + k, b + s))
    };
    let indirect_chains = |d: &VirtioDriver| {
        (0..queues as u32)
            .map(|q| d.indirect_chains(q))
            .sum::<u64>()
    };
    let mut echo = Echo {
        d: &mut d,
        dev: &dev,
        queues,
        depth,
        bytes,
        wait,
        buffers,
        slot_of: [[0; MAX_QUEUE_SIZE]; MAX_DRIVER_QUEUES],
        round_of: [[0; MAX_DEPTH]; MAX_DRIVER_QUEUES],
        max_outstanding: 0,
    };
    if warmup > 0 {
        if let Err(status) = echo.run(0, warmup) {
            return status;
        }
    }
    let calls_before = calls();
    let kicks_before = kicks(echo.d);
    let indirect_before = indirect_chains(echo.d);
    let start = clock::now_ns();
    if let Err(status) = echo.run(warmup, requests) {
        return status;
    }
    let elapsed = (clock::now_ns() - start).max(1);
    let max_outstanding = echo.max_outstanding;
    let kicks_after = kicks(&d);
    let indirect_after = indirect_chains(&d);
    let total = requests * queues;
    println!(
        "virtio_echo: queues={queues} requests={requests} bytes={bytes} depth={depth} \
         ns_per_round={} requests_per_sec={} mb_per_sec={} calls={} kicks={} \
         kicks_suppressed={} indirect={} max_outstanding={max_outstanding}",
        elapsed / requests,
        total * 1_000_000_000 / elapsed,
        total * bytes * 1000 / elapsed,
        calls() - calls_before,
        kicks_after.0 - kicks_before.0,
        kicks_after.1 - kicks_before.1,
        indirect_after - indirect_before,
    );
    if let Err(e) = d.close() {
        println!("virtio_echo: reset: {e}");
        return 40;
    }
    0
}

guest::entry!(main);
