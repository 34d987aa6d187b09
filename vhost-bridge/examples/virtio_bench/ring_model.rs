//! `virtio_bench ring-model`: the same echo at the same depth through a split virtqueue between
//! two threads of this process, kept minimal, to measure what a two-sided echo costs on this
//! machine rather than what our path adds to it. The rings (descriptor table, avail ring, used
//! ring) and the request and answer buffers are arrays of atomics the two threads share; a
//! device thread answers the way vhost-user-echo does (avail entry, two descriptors, copy, used
//! element, used index), the driver thread stamps, offers, takes and checks the way
//! `virtio_bench virtio` does. What it leaves out is everything around the ring: no vhost-user
//! process, no vm-memory bounds checks or region lookups, no notifications (both sides look at
//! the other's index 32 times and then yield the CPU, as ours do while busy polling, and never
//! sleep).

use std::sync::atomic::{AtomicBool, AtomicU16, AtomicU32, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Instant;

use anyhow::{ensure, Context};

use super::{pattern, report, stamp, Args};

/// Ring entries (the `virtio` mode's default queue size).
const QUEUE: usize = 128;
/// Looks at the other side's index between two yields of the CPU (virtio_ivshmem's
/// SPINS_PER_YIELD).
const SPINS: u32 = 32;
const F_NEXT: u64 = 1;
const F_WRITE: u64 = 2;

/// The memory both threads share. A descriptor is two words: the buffer's first word in
/// `payload`, then len | flags << 32 | next << 48.
struct Shared {
    desc: Box<[AtomicU64]>,
    /// flags, idx, then the ring.
    avail: Box<[AtomicU16]>,
    /// idx, then (id, len) per element.
    used: Box<[AtomicU32]>,
    payload: Box<[AtomicU64]>,
    stop: AtomicBool,
}

/// Spins on `look` with the yields of a busy-polling side; false once `stop` is set.
fn wait_for(stop: &AtomicBool, mut look: impl FnMut() -> bool) -> bool {
    loop {
        for _ in 0..SPINS {
            if look() {
                return true;
            }
            std::hint::spin_loop();
        }
        if stop.load(Ordering::Relaxed) {
            return false;
        }
        std::thread::yield_now();
    }
}

/// The device thread: answers every available chain by copying its readable buffer into its
/// writable one, publishing each used element as it goes.
fn device(shared: &Shared) {
    // However this thread ends, the driver stops waiting for it.
    struct StopOnExit<'a>(&'a AtomicBool);
    impl Drop for StopOnExit<'_> {
        fn drop(&mut self) {
            self.0.store(true, Ordering::Relaxed);
        }
    }
    let _stop_on_exit = StopOnExit(&shared.stop);
    let (mut next_avail, mut next_used) = (0u16, 0u16);
    loop {
        let mut avail_idx = 0;
        if !wait_for(&shared.stop, || {
            avail_idx = shared.avail[1].load(Ordering::Acquire);
            avail_idx != next_avail
        }) {
            return;
        }
        while next_avail != avail_idx {
            let head = shared.avail[2 + next_avail as usize % QUEUE].load(Ordering::Relaxed);
            next_avail = next_avail.wrapping_add(1);
            let read = |i: usize| {
                let addr = shared.desc[2 * i].load(Ordering::Relaxed) as usize;
                (addr, shared.desc[2 * i + 1].load(Ordering::Relaxed))
            };
            let (from, info) = read(head as usize);
            let (to, _) = read((info >> 48) as usize % QUEUE);
            let words = (info as u32 / 8) as usize;
            for w in 0..words {
                let word = shared.payload[from + w].load(Ordering::Relaxed);
                shared.payload[to + w].store(word, Ordering::Relaxed);
            }
            let at = 1 + 2 * (next_used as usize % QUEUE);
            shared.used[at].store(u32::from(head), Ordering::Relaxed);
            shared.used[at + 1].store(info as u32, Ordering::Relaxed);
            next_used = next_used.wrapping_add(1);
            shared.used[0].store(u32::from(next_used), Ordering::Release);
        }
    }
}

/// The driver side: `depth` slots, each with its request and answer buffer and its two
/// descriptors (2 * slot, 2 * slot + 1).
struct Driver<'a> {
    shared: &'a Shared,
    words: usize,
    next_avail: u16,
    last_used: u16,
    /// Per slot, the request number out.
    out: Vec<u64>,
    expected: Vec<u64>,
}

impl Driver<'_> {
    fn request(&self, slot: usize) -> usize {
        2 * slot * self.words
    }

    fn answer(&self, slot: usize) -> usize {
        (2 * slot + 1) * self.words
    }

    /// Stamps request `i` into `slot` and offers it.
    fn issue(&mut self, slot: usize, i: u64) {
        let s = self.shared;
        let stamp = u64::from_le_bytes(stamp(i));
        s.payload[self.request(slot)].store(stamp, Ordering::Relaxed);
        let len = (self.words * 8) as u64;
        let head = 2 * slot;
        s.desc[2 * head].store(self.request(slot) as u64, Ordering::Relaxed);
        s.desc[2 * head + 1].store(
            len | F_NEXT << 32 | ((head + 1) as u64) << 48,
            Ordering::Relaxed,
        );
        s.desc[2 * head + 2].store(self.answer(slot) as u64, Ordering::Relaxed);
        s.desc[2 * head + 3].store(len | F_WRITE << 32, Ordering::Relaxed);
        s.avail[2 + self.next_avail as usize % QUEUE].store(head as u16, Ordering::Relaxed);
        self.next_avail = self.next_avail.wrapping_add(1);
        s.avail[1].store(self.next_avail, Ordering::Release);
        self.out[slot] = i;
    }

    /// Requests `first..first + total`, `depth` in flight, every answer checked whole.
    fn run(&mut self, first: u64, total: u64, depth: usize) -> anyhow::Result<()> {
        let s = self.shared;
        let mut issued = 0;
        for slot in 0..depth.min(total as usize) {
            self.issue(slot, first + issued);
            issued += 1;
        }
        let mut done = 0;
        while done < total {
            let mut used_idx = 0;
            let answered = wait_for(&s.stop, || {
                used_idx = s.used[0].load(Ordering::Acquire) as u16;
                used_idx != self.last_used
            });
            ensure!(answered, "the device thread stopped");
            while self.last_used != used_idx {
                let at = 1 + 2 * (self.last_used as usize % QUEUE);
                let slot = s.used[at].load(Ordering::Relaxed) as usize / 2;
                let len = s.used[at + 1].load(Ordering::Relaxed) as usize;
                self.last_used = self.last_used.wrapping_add(1);
                let i = *self.out.get(slot).context("a used element names no slot")?;
                ensure!(len == self.words * 8, "request {i}: {len} bytes back");
                let answer = self.answer(slot);
                let expected = &mut self.expected[slot * self.words..(slot + 1) * self.words];
                expected[0] = u64::from_le_bytes(stamp(i));
                let same = expected
                    .iter()
                    .enumerate()
                    .all(|(w, &e)| s.payload[answer + w].load(Ordering::Relaxed) == e);
                ensure!(same, "request {i}: a different payload came back");
                done += 1;
                if issued < total {
                    self.issue(slot, first + issued);
                    issued += 1;
                }
            }
        }
        Ok(())
    }
}

/// The `ring-model` mode.
pub fn ring_model(args: &Args) -> anyhow::Result<()> {
    ensure!(
        args.bytes.is_multiple_of(8),
        "ring-model needs --bytes in whole 8-byte words"
    );
    ensure!(
        2 * args.depth <= QUEUE,
        "ring-model takes a depth up to {}",
        QUEUE / 2
    );
    let words = args.bytes / 8;
    let atomics64 = |n: usize| (0..n).map(|_| AtomicU64::new(0)).collect::<Box<[_]>>();
    let shared = Arc::new(Shared {
        desc: atomics64(2 * QUEUE),
        avail: (0..2 + QUEUE).map(|_| AtomicU16::new(0)).collect(),
        used: (0..1 + 2 * QUEUE).map(|_| AtomicU32::new(0)).collect(),
        payload: atomics64(2 * args.depth * words),
        stop: AtomicBool::new(false),
    });
    let mut d = Driver {
        shared: &shared,
        words,
        next_avail: 0,
        last_used: 0,
        out: vec![0; args.depth],
        expected: vec![0; args.depth * words],
    };
    // Each slot's pattern, in its request buffer and in what its answers must be.
    for slot in 0..args.depth {
        let mut bytes = vec![0u8; args.bytes];
        pattern(&mut bytes, slot);
        for (w, chunk) in bytes.chunks_exact(8).enumerate() {
            let word = u64::from_le_bytes(chunk.try_into().expect("8-byte chunks"));
            shared.payload[d.request(slot) + w].store(word, Ordering::Relaxed);
            d.expected[slot * words + w] = word;
        }
    }
    let device_side = Arc::clone(&shared);
    let device = std::thread::spawn(move || device(&device_side));
    let result = (|| {
        d.run(0, args.warmup, args.depth)?;
        let start = Instant::now();
        d.run(args.warmup, args.requests, args.depth)?;
        report(args, start.elapsed().as_secs_f64());
        Ok(())
    })();
    shared.stop.store(true, Ordering::Relaxed);
    device
        .join()
        .map_err(|_| anyhow::anyhow!("the device thread panicked"))?;
    result
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::Mode;

    fn args(bytes: usize, depth: usize) -> Args {
        Args {
            mode: Mode::RingModel,
            bytes,
            requests: 20_000,
            warmup: 100,
            depth,
        }
    }

    #[test]
    fn every_answer_comes_back_checked_at_depth() {
        for (bytes, depth) in [(64, 16), (8, 1), (4096, 64)] {
            ring_model(&args(bytes, depth)).unwrap();
        }
    }

    #[test]
    fn sizes_it_cannot_model_are_refused() {
        assert!(ring_model(&args(60, 16)).is_err());
        assert!(ring_model(&args(64, 65)).is_err());
    }
}
