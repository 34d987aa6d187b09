//! Reads random bytes from a virtio entropy device over ivshmem (vhost-device-rng behind a
//! `vhost-bridge` peer): `requests` requests of `bytes` bytes each on queue 0, with the rings
//! and buffers in the shared memory, kicks through the doorbell (KVM ioeventfd) and the
//! device's calls as MSI-X interrupts (KVM irqfd). Checks every answer is full and the bytes
//! are not constant, then resets the device and gives up its claim.
//!
//! Guest args: `requests=N` (default 100), `bytes=B` per request (default 64, at most 4096),
//! `size=S` queue size (default 16, so the rings wrap), `header=OFF` (default 0),
//! `arena=OFF` where rings and buffers go (default just after the header), `index=I` which
//! ivshmem device, `timeout_ms=T` per wait (default 10000), `indirect=1` (negotiate
//! VIRTIO_F_INDIRECT_DESC and place every request, one buffer, in an indirect table, which the
//! backend must follow).
//! Prints `virtio_rng: requests=N bytes=B zeros=Z ns_per_request=T calls=C indirect=I` (I: the
//! requests placed in indirect tables).
//! Exit status: 0 ok; 2 bad args; 10 no doorbell device; 20 open failed; 21 negotiation
//! failed; 22 queue set-up failed; 23 DRIVER_OK failed; 30 a request failed; 31 a short
//! answer; 32 the bytes look constant; 40 the reset at the end failed.
#![no_std]
#![no_main]

use guest::ivshmem::Ivshmem;
use guest::virtio::{Buffer, QueuePlan, VirtioDriver, Wait};
use guest::virtio_layout::{feature, HEADER_SIZE};
use guest::{args, clock, println};

fn main() -> i32 {
    let requests = args::u64_or("requests", 100);
    let bytes = args::u64_or("bytes", 64);
    let size = args::u64_or("size", 16) as u32;
    let header = args::u64_or("header", 0);
    let arena = args::u64_or("arena", header + HEADER_SIZE as u64);
    let timeout_ns = args::u64_or("timeout_ms", 10_000).saturating_mul(1_000_000);
    let index = args::u64_or("index", 0) as usize;
    let indirect = args::u64_or("indirect", 0) != 0;
    if bytes == 0 || bytes > 4096 || requests == 0 {
        println!("virtio_rng: bytes must be 1..=4096 and requests at least 1");
        return 2;
    }
    let Some(dev) = Ivshmem::open_nth(index).filter(|d| d.is_doorbell()) else {
        println!("virtio_rng: no ivshmem-doorbell device #{index}");
        return 10;
    };
    let mut d = match VirtioDriver::bring_up(
        "virtio_rng",
        &dev,
        header,
        arena..dev.shm_size,
        timeout_ns,
        QueuePlan {
            wanted: if indirect { feature::INDIRECT_DESC } else { 0 },
            count: 1,
            size,
            wait: Wait::Interrupt,
        },
    ) {
        Ok(d) => d,
        Err(status) => return status,
    };
    if indirect {
        if d.features() & feature::INDIRECT_DESC == 0 {
            println!("virtio_rng: INDIRECT_DESC asked for but not negotiated");
            return 21;
        }
        if let Err(e) = d.set_indirect_min(0, 1) {
            println!("virtio_rng: queue 0: {e}");
            return 22;
        }
    }
    // Two buffers, alternated, so consecutive answers can be compared.
    let Ok(buffers) = d.alloc(2 * bytes, 64) else {
        println!("virtio_rng: no room for the buffers");
        return 22;
    };
    let mut zeros = 0u64;
    let mut same_as_previous = 0u64;
    let calls_before = dev.received(1);
    let start = clock::now_ns();
    for i in 0..requests {
        let at = buffers + bytes * (i % 2);
        for b in 0..bytes {
            dev.write_u8(at + b, 0);
        }
        let buffer = Buffer {
            offset: at,
            len: bytes as u32,
        };
        let result = d
            .submit(0, &[], &[buffer])
            .and_then(|_| d.wait_used(0, Wait::Interrupt));
        let used = match result {
            Ok(used) => used,
            Err(e) => {
                println!("virtio_rng: request {i}: {e}");
                return 30;
            }
        };
        if used.len as u64 != bytes {
            println!("virtio_rng: request {i}: {} bytes of {bytes}", used.len);
            return 31;
        }
        let other = buffers + bytes * ((i + 1) % 2);
        let mut same = i > 0;
        for b in 0..bytes {
            let value = dev.read_u8(at + b);
            zeros += (value == 0) as u64;
            same &= value == dev.read_u8(other + b);
        }
        same_as_previous += same as u64;
    }
    let elapsed = clock::now_ns() - start;
    let calls = dev.received(1) - calls_before;
    println!(
        "virtio_rng: requests={requests} bytes={bytes} zeros={zeros} ns_per_request={} \
         calls={calls} indirect={}",
        elapsed / requests,
        d.indirect_chains(0)
    );
    // Random bytes are zero 1 time in 256; allow four times that (and a little for tiny runs).
    if zeros > (requests * bytes) / 64 + 4 || same_as_previous > 0 {
        println!("virtio_rng: not random: {zeros} zero bytes, {same_as_previous} repeated answers");
        return 32;
    }
    if let Err(e) = d.close() {
        println!("virtio_rng: reset: {e}");
        return 40;
    }
    0
}

guest::entry!(main);
