//! Runs a list of ivshmem operations given in the guest args, for tests that need a VM to do
//! precise things in a precise order: `ops=OP,OP,...` (no spaces), `timeout_ms=T` for every
//! wait (default 30000).
//!
//! Every ivshmem device is opened at start (BARs assigned, MSI-X on); `dev:I` selects the one
//! the following operations use (default 0). Numbers are decimal or 0x-hex.
//!
//! | op              | does                                                            |
//! |-----------------|-----------------------------------------------------------------|
//! | `dev:I`         | use device I                                                    |
//! | `id:N`          | check IVPosition == N                                           |
//! | `show`          | print `dev=I id=N shm_size=S doorbell=0/1`                      |
//! | `w64:OFF:VAL`   | write the u64 VAL at shared-memory offset OFF                   |
//! | `wid:OFF`       | write our id (u64) at OFF                                       |
//! | `until:OFF:VAL` | wait until the u64 at OFF == VAL                                |
//! | `nz:OFF`        | wait until the u64 at OFF != 0                                  |
//! | `ring:PEER:V`   | ring vector V of PEER                                           |
//! | `ringat:OFF:V`  | ring vector V of the peer whose id is the u64 at OFF            |
//! | `ringself:V`    | ring our own vector V                                           |
//! | `irq:V`         | wait for the next doorbell on our vector V (consumes one)       |
//! | `quiet:V:MS`    | check no doorbell arrives on vector V for MS milliseconds       |
//! | `sleep:MS`      | pause                                                           |
//! | `mask:V` / `unmask:V` | mask / unmask our MSI-X entry V                           |
//! | `pending:V:B`   | check entry V's PBA bit is B (0 or 1)                           |
//! | `move:BAR`      | move BAR 0, 1 or 2 to a new address (decoding stays on)         |
//!
//! Prints `ivshmem_script: ok OP` per step and `ivshmem_script: done`.
//! Exit status: 0 all done; 1 a wait timed out or a check failed; 2 a malformed op;
//! 10 no ivshmem device (or `dev:I` out of range).
#![no_std]
#![no_main]

use guest::ivshmem::{self, Ivshmem, MAX_VECTORS};
use guest::pci::BarAllocator;
use guest::{args, clock, println};

const MAX_DEVICES: usize = 4;

fn number(text: &str) -> Option<u64> {
    match text.strip_prefix("0x") {
        Some(hex) => u64::from_str_radix(hex, 16).ok(),
        None => text.parse().ok(),
    }
}

/// Polls `cond` (with short sleeps, no busy loop) until it holds or `timeout_ns` passed.
fn poll(timeout_ns: u64, mut cond: impl FnMut() -> bool) -> bool {
    let deadline = clock::now_ns().saturating_add(timeout_ns);
    loop {
        if cond() {
            return true;
        }
        if clock::now_ns() > deadline {
            return cond();
        }
        // Sleep until the next tick.
        ivshmem::sleep_ns(1);
    }
}

struct State {
    devices: [Option<Ivshmem>; MAX_DEVICES],
    /// Doorbells consumed so far, per device and vector.
    consumed: [[u64; MAX_VECTORS as usize]; MAX_DEVICES],
    current: usize,
    timeout_ns: u64,
    allocator: BarAllocator,
}

enum Failure {
    Malformed,
    Failed,
    NoDevice,
}

impl State {
    fn dev(&self) -> Result<&Ivshmem, Failure> {
        self.devices[self.current].as_ref().ok_or(Failure::NoDevice)
    }

    fn run(&mut self, op: &str) -> Result<(), Failure> {
        let mut parts = op.split(':');
        let name = parts.next().unwrap_or("");
        let mut arg = || parts.next().and_then(number).ok_or(Failure::Malformed);
        match name {
            "dev" => {
                let index = arg()? as usize;
                if index >= MAX_DEVICES || self.devices[index].is_none() {
                    return Err(Failure::NoDevice);
                }
                self.current = index;
            }
            "id" => {
                let want = arg()?;
                let id = self.dev()?.id();
                if id as u64 != want {
                    println!("ivshmem_script: id is {id}, expected {want}");
                    return Err(Failure::Failed);
                }
            }
            "show" => {
                let dev = self.dev()?;
                println!(
                    "ivshmem_script: dev={} id={} shm_size={} doorbell={}",
                    self.current,
                    dev.id(),
                    dev.shm_size,
                    dev.is_doorbell() as u8
                );
            }
            "w64" => {
                let (offset, value) = (arg()?, arg()?);
                self.dev()?.write_u64(offset, value);
            }
            "wid" => {
                let offset = arg()?;
                let dev = self.dev()?;
                dev.write_u64(offset, dev.id() as u64);
            }
            "until" | "nz" => {
                let offset = arg()?;
                let want = if name == "until" { Some(arg()?) } else { None };
                let dev = *self.dev()?;
                let ok = poll(self.timeout_ns, || {
                    let value = dev.read_u64(offset);
                    want.map_or(value != 0, |w| value == w)
                });
                if !ok {
                    println!(
                        "ivshmem_script: {op}: offset {offset:#x} holds {:#x}",
                        dev.read_u64(offset)
                    );
                    return Err(Failure::Failed);
                }
            }
            "ring" => {
                let (peer, vector) = (arg()?, arg()?);
                self.dev()?.ring(peer as u16, vector as u16);
            }
            "ringat" => {
                let (offset, vector) = (arg()?, arg()?);
                let dev = self.dev()?;
                let peer = dev.read_u64(offset) as u16;
                dev.ring(peer, vector as u16);
                println!("ivshmem_script: rang peer {peer} vector {vector}");
            }
            "ringself" => {
                let vector = arg()?;
                let dev = self.dev()?;
                dev.ring(dev.id(), vector as u16);
            }
            "irq" | "quiet" => {
                let vector = arg()? as u16;
                let timeout = if name == "quiet" {
                    arg()? * 1_000_000
                } else {
                    self.timeout_ns
                };
                let dev = *self.dev()?;
                if vector >= dev.vectors {
                    return Err(Failure::Malformed);
                }
                let consumed = &mut self.consumed[self.current][vector as usize];
                let arrived = dev.wait(vector, *consumed, timeout).is_some();
                if arrived {
                    *consumed += 1;
                }
                if arrived != (name == "irq") {
                    println!(
                        "ivshmem_script: {op}: {}",
                        if arrived {
                            "a doorbell arrived"
                        } else {
                            "no doorbell in time"
                        }
                    );
                    return Err(Failure::Failed);
                }
            }
            "mask" | "unmask" => {
                let vector = arg()? as u16;
                let msix = self.dev()?.msix.ok_or(Failure::NoDevice)?;
                msix.mask(vector, name == "mask");
            }
            "pending" => {
                let (vector, want) = (arg()? as u16, arg()?);
                let msix = self.dev()?.msix.ok_or(Failure::NoDevice)?;
                if msix.is_pending(vector) as u64 != want {
                    println!("ivshmem_script: {op}: pending bit is {}", (want == 0) as u8);
                    return Err(Failure::Failed);
                }
            }
            "move" => {
                let bar = arg()? as u8;
                let current = self.current;
                let dev = self.devices[current].as_mut().ok_or(Failure::NoDevice)?;
                let Some(address) = dev.move_bar(bar, &mut self.allocator) else {
                    return Err(Failure::Failed);
                };
                println!("ivshmem_script: BAR{bar} now at {address:#x}");
            }
            "sleep" => {
                let ms = arg()?;
                poll(ms * 1_000_000, || false);
            }
            _ => return Err(Failure::Malformed),
        }
        Ok(())
    }
}

fn main() -> i32 {
    let timeout_ns = args::u64_or("timeout_ms", 30_000).saturating_mul(1_000_000);
    let mut allocator = BarAllocator::new();
    let mut devices = [None; MAX_DEVICES];
    for (index, slot) in devices.iter_mut().enumerate().take(ivshmem::count()) {
        *slot = Ivshmem::open(index, &mut allocator);
    }
    if devices[0].is_none() {
        println!("ivshmem_script: no ivshmem device");
        return 10;
    }
    let mut state = State {
        devices,
        consumed: [[0; MAX_VECTORS as usize]; MAX_DEVICES],
        current: 0,
        timeout_ns,
        allocator,
    };
    for op in args::str_or("ops", "").split(',').filter(|o| !o.is_empty()) {
        match state.run(op) {
            Ok(()) => println!("ivshmem_script: ok {op}"),
            Err(Failure::Malformed) => {
                println!("ivshmem_script: malformed op `{op}`");
                return 2;
            }
            Err(Failure::NoDevice) => {
                println!("ivshmem_script: {op}: no such device");
                return 10;
            }
            Err(Failure::Failed) => {
                println!("ivshmem_script: FAILED {op}");
                return 1;
            }
        }
    }
    println!("ivshmem_script: done");
    0
}

guest::entry!(main);
