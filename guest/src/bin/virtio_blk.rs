//! A virtio-blk driver over our virtio-pci transport, served by a vhost-user backend (the
//! integration test runs qemu-storage-daemon): finds the device, walks its vendor
//! capabilities, negotiates VERSION_1, sets up queue 0 in this program's own memory (guest
//! RAM, which the backend maps), reads sector 0 and writes sector 1, polling the used ring.
//! Kicks are writes to the notify address (KVM ioeventfd to the backend); nothing of the data
//! path passes through the VMM.
//!
//! Prints `virtio_blk: capacity=N sector0="..."` and `virtio_blk: ok`.
//! Exit status: 0 ok; 30 no device; 31 capabilities missing; 32 features refused;
//! 33 request timed out; 34 request failed (status byte); 35 DEVICE_NEEDS_RESET.
#![no_std]
#![no_main]

use core::ptr::{addr_of_mut, read_volatile, write_volatile};
use core::sync::atomic::{fence, Ordering};

use guest::mmio::{read16, read32, read64, read8, write16, write32, write8};
use guest::pci::{self, BarAllocator};
use guest::println;

const VENDOR: u16 = 0x1AF4;
const DEVICE_BLK: u16 = 0x1042;
const CAP_VENDOR: u8 = 0x09;
const QUEUE_LEN: u16 = 8;

// Common configuration offsets.
const DRIVER_FEATURE_SELECT: u64 = 0x08;
const DRIVER_FEATURE: u64 = 0x0C;
const DEVICE_FEATURE_SELECT: u64 = 0x00;
const DEVICE_FEATURE: u64 = 0x04;
const STATUS: u64 = 0x14;
const QUEUE_SELECT: u64 = 0x16;
const QUEUE_SIZE: u64 = 0x18;
const QUEUE_ENABLE: u64 = 0x1C;
const QUEUE_NOTIFY_OFF: u64 = 0x1E;
const QUEUE_DESC: u64 = 0x20;
const QUEUE_DRIVER: u64 = 0x28;
const QUEUE_DEVICE: u64 = 0x30;

const ACKNOWLEDGE: u8 = 1;
const DRIVER: u8 = 2;
const DRIVER_OK: u8 = 4;
const FEATURES_OK: u8 = 8;
const NEEDS_RESET: u8 = 0x40;

/// Rings and buffers, in this program's memory (identity-mapped guest RAM).
#[repr(C, align(4096))]
struct Arena {
    desc: [u8; 4096],
    avail: [u8; 4096],
    used: [u8; 4096],
    header: [u8; 16],
    status: u8,
    _pad: [u8; 4096 - 17],
    data: [u8; 512],
}

static mut ARENA: Arena = Arena {
    desc: [0; 4096],
    avail: [0; 4096],
    used: [0; 4096],
    header: [0; 16],
    status: 0,
    _pad: [0; 4096 - 17],
    data: [0; 512],
};

struct Device {
    common: u64,
    device_cfg: u64,
    notify: u64,
    notify_multiplier: u32,
}

/// The structure of `cfg_type` as an address, from the vendor capabilities.
fn find_structures(bdf: pci::Bdf, bars: &[Option<(pci::BarInfo, u64)>; 6]) -> Option<Device> {
    let (mut common, mut device_cfg, mut notify, mut multiplier) = (None, None, None, 0);
    let mut at = bdf.read8(0x34) as u16;
    for _ in 0..48 {
        if at == 0 {
            break;
        }
        if bdf.read8(at) == CAP_VENDOR {
            let kind = bdf.read8(at + 3);
            let bar = bdf.read8(at + 4) as usize;
            let offset = bdf.read32(at + 8) as u64;
            let base = bars.get(bar).copied().flatten()?.1 + offset;
            match kind {
                1 => common = Some(base),
                2 => {
                    notify = Some(base);
                    multiplier = bdf.read32(at + 16);
                }
                4 => device_cfg = Some(base),
                _ => {}
            }
        }
        at = bdf.read8(at + 1) as u16;
    }
    Some(Device {
        common: common?,
        device_cfg: device_cfg?,
        notify: notify?,
        notify_multiplier: multiplier,
    })
}

fn arena() -> *mut Arena {
    addr_of_mut!(ARENA)
}

/// One descriptor: address, length, flags, next.
///
/// # Safety
/// `index` < QUEUE_LEN; the arena is ours.
unsafe fn descriptor(index: usize, addr: u64, len: u32, flags: u16, next: u16) {
    let at = (addr_of_mut!((*arena()).desc) as *mut u8).add(16 * index);
    write_volatile(at as *mut u64, addr);
    write_volatile(at.add(8) as *mut u32, len);
    write_volatile(at.add(12) as *mut u16, flags);
    write_volatile(at.add(14) as *mut u16, next);
}

/// Sends one request of one sector and waits for it; returns the status byte.
///
/// # Safety
/// The device is set up on the arena's rings.
unsafe fn request(
    dev: &Device,
    notify_off: u16,
    avail_idx: &mut u16,
    write: bool,
    sector: u64,
) -> Result<u8, i32> {
    let a = arena();
    let header = addr_of_mut!((*a).header) as *mut u8;
    write_volatile(header as *mut u32, write as u32);
    write_volatile(header.add(4) as *mut u32, 0);
    write_volatile(header.add(8) as *mut u64, sector);
    write_volatile(addr_of_mut!((*a).status), 0xFF);
    descriptor(0, header as u64, 16, 1, 1);
    descriptor(
        1,
        addr_of_mut!((*a).data) as u64,
        512,
        if write { 1 } else { 1 | 2 },
        2,
    );
    descriptor(2, addr_of_mut!((*a).status) as u64, 1, 2, 0);
    let avail = addr_of_mut!((*a).avail) as *mut u8;
    let slot = (*avail_idx % QUEUE_LEN) as usize;
    write_volatile(avail.add(4 + 2 * slot) as *mut u16, 0);
    *avail_idx = avail_idx.wrapping_add(1);
    fence(Ordering::SeqCst);
    write_volatile(avail.add(2) as *mut u16, *avail_idx);
    fence(Ordering::SeqCst);
    write16(
        dev.notify + notify_off as u64 * dev.notify_multiplier as u64,
        0,
    );
    let used = addr_of_mut!((*a).used) as *mut u8;
    let deadline = guest::clock::now_ns() + 10_000_000_000;
    while read_volatile(used.add(2) as *const u16) != *avail_idx {
        if read8(dev.common + STATUS) & NEEDS_RESET != 0 {
            return Err(35);
        }
        if guest::clock::now_ns() > deadline {
            return Err(33);
        }
        core::hint::spin_loop();
    }
    fence(Ordering::SeqCst);
    Ok(read_volatile(addr_of_mut!((*a).status)))
}

fn main() -> i32 {
    let Some(bdf) = pci::find(VENDOR, DEVICE_BLK) else {
        println!("virtio_blk: no virtio-blk device");
        return 30;
    };
    let bars = pci::assign_bars(bdf, &mut BarAllocator::new());
    let Some(dev) = find_structures(bdf, &bars) else {
        println!("virtio_blk: capabilities missing");
        return 31;
    };
    // SAFETY: the addresses come from the device's capabilities and BARs we assigned; the
    // arena is this program's own memory.
    unsafe {
        let c = dev.common;
        write8(c + STATUS, 0);
        write8(c + STATUS, ACKNOWLEDGE | DRIVER);
        write32(c + DEVICE_FEATURE_SELECT, 1);
        if read32(c + DEVICE_FEATURE) & 1 == 0 {
            println!("virtio_blk: no VIRTIO_F_VERSION_1");
            return 32;
        }
        write32(c + DRIVER_FEATURE_SELECT, 0);
        write32(c + DRIVER_FEATURE, 0);
        write32(c + DRIVER_FEATURE_SELECT, 1);
        write32(c + DRIVER_FEATURE, 1);
        write8(c + STATUS, ACKNOWLEDGE | DRIVER | FEATURES_OK);
        if read8(c + STATUS) & FEATURES_OK == 0 {
            println!("virtio_blk: FEATURES_OK refused");
            return 32;
        }
        let capacity = read64(dev.device_cfg);
        let a = arena();
        write16(c + QUEUE_SELECT, 0);
        write16(c + QUEUE_SIZE, QUEUE_LEN);
        let notify_off = read16(c + QUEUE_NOTIFY_OFF);
        for (reg, addr) in [
            (QUEUE_DESC, addr_of_mut!((*a).desc) as u64),
            (QUEUE_DRIVER, addr_of_mut!((*a).avail) as u64),
            (QUEUE_DEVICE, addr_of_mut!((*a).used) as u64),
        ] {
            write32(c + reg, addr as u32);
            write32(c + reg + 4, (addr >> 32) as u32);
        }
        write16(c + QUEUE_ENABLE, 1);
        write8(c + STATUS, ACKNOWLEDGE | DRIVER | FEATURES_OK | DRIVER_OK);
        if read8(c + STATUS) & NEEDS_RESET != 0 {
            println!("virtio_blk: DEVICE_NEEDS_RESET after DRIVER_OK");
            return 35;
        }
        let mut avail_idx = 0u16;
        match request(&dev, notify_off, &mut avail_idx, false, 0) {
            Ok(0) => {}
            Ok(status) => {
                println!("virtio_blk: read failed, status {status}");
                return 34;
            }
            Err(code) => {
                println!("virtio_blk: read did not complete ({code})");
                return code;
            }
        }
        let data = &*addr_of_mut!((*a).data);
        let text_len = data.iter().take(32).position(|&b| b == 0).unwrap_or(32);
        let text = core::str::from_utf8(&data[..text_len]).unwrap_or("?");
        println!("virtio_blk: capacity={capacity} sector0={text:?}");
        let message = b"written by the guest";
        let data = &mut *addr_of_mut!((*a).data);
        data.fill(0);
        data[..message.len()].copy_from_slice(message);
        match request(&dev, notify_off, &mut avail_idx, true, 1) {
            Ok(0) => {}
            Ok(status) => {
                println!("virtio_blk: write failed, status {status}");
                return 34;
            }
            Err(code) => {
                println!("virtio_blk: write did not complete ({code})");
                return code;
            }
        }
        write8(c + STATUS, 0);
    }
    println!("virtio_blk: ok");
    0
}

guest::entry!(main);
