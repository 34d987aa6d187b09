//! The ivshmem device's BAR0 registers and its MSI-X table and PBA, accessed by a guest at any
//! offset and size, mixed with MSI-X control writes, BAR moves and vectors being signalled.
//!
//! The BARs start mapped (BAR0 at 0xC000_0000, BAR1 at 0xC000_1000, BAR2 at 0x10_0000_0000).
//! Input: byte 0: MSI-X vectors (1 + n mod 64; the first 8 have the server's eventfds as sources);
//! then operations, an opcode byte each (mod 9):
//! 0 `off:u8 size:u8` BAR0 read; 1 `off:u8 size:u8 value:u64` BAR0 write;
//! 2 `off:u16 size:u8` BAR1 read; 3 `off:u16 size:u8 value:u64` BAR1 write;
//! 4 `value:u16` MSI-X message control write; 5 `vector:u8` signal an own vector's eventfd;
//! 6 `vector:u8` `Msix::notify`; 7 `off:u8 size:u8 value:u32` config write (BARs, command);
//! 8 `peer:u8 vector:u8` doorbell write for a peer (mod 4: the two others, the device itself, an
//! unknown id) and vector. Sizes are 1 + (n mod 8).
//!
//! Checked: no panic; IVPosition reads the own id and ignores writes; IntrStatus clears on read;
//! IntrMask keeps what was written; a doorbell rings exactly the addressed known vector; a
//! PBA bit is only ever set for a masked vector; routes and irqfds follow the table and control
//! bits (bound exactly while unmasked); signals while masked become pending and are delivered
//! once on unmask.
#![no_main]

use fuzz_support::machine::Machine;
use fuzz_support::Input;
use libfuzzer_sys::fuzz_target;
use vmm::devices::ivshmem::registers::{
    doorbell_value, DOORBELL, INTR_MASK, INTR_STATUS, IV_POSITION,
};
use vmm::pci::config;
use vmm::pci::msix::CAPABILITY_SIZE;

const MAX_OPS: usize = 512;

fn size(input: &mut Input) -> usize {
    usize::from(input.u8() % 8) + 1
}

fn config_write(m: &Machine, offset: u64, size: usize, value: u64) {
    Machine::write(
        &m.memory,
        Machine::ecam_addr(m.bdf.device, offset),
        size,
        value,
    );
}

/// Where the MSI-X capability is (the function's only capability).
fn msix_cap(m: &Machine) -> u64 {
    u64::from(m.bus.config_read(m.bdf, 0x34, 1))
}

/// Whether the guest reaches region `name` at `addr` (a moved BAR may cover another).
fn serves(m: &Machine, addr: u64, len: u64, name: &str) -> bool {
    let range = m.memory.lookup(addr);
    range.is_some_and(|r| r.region.name() == name && u128::from(addr) + u128::from(len) <= r.end())
}

/// A PBA bit, read as the guest would (through BAR1); None when the PBA is not reachable.
fn pending(m: &Machine, bar1: u64, vector: usize) -> Option<bool> {
    let layout = m.msix.layout();
    let addr = bar1 + layout.pba_offset + (vector as u64 / 64) * 8;
    if !serves(m, addr, 8, "ivshmem0-msix-pba") {
        return None;
    }
    let word = Machine::read(&m.memory, addr, 8);
    Some(word >> (vector % 64) & 1 != 0)
}

fn check_registers(m: &Machine, bar0: u64) {
    if !serves(m, bar0, 0x10, "ivshmem0-mmio") {
        return;
    }
    assert_eq!(
        Machine::read(&m.memory, bar0 + IV_POSITION, 4),
        u64::from(m.own_id)
    );
    Machine::write(&m.memory, bar0 + IV_POSITION, 4, 0xdead);
    assert_eq!(
        Machine::read(&m.memory, bar0 + IV_POSITION, 4),
        u64::from(m.own_id)
    );
    let status = Machine::read(&m.memory, bar0 + INTR_STATUS, 4);
    assert_eq!(
        Machine::read(&m.memory, bar0 + INTR_STATUS, 4),
        0,
        "IntrStatus clears on read"
    );
    Machine::write(&m.memory, bar0 + INTR_STATUS, 4, status);
    let mask = Machine::read(&m.memory, bar0 + INTR_MASK, 4);
    assert_eq!(Machine::read(&m.memory, bar0 + INTR_MASK, 4), mask);
    assert_eq!(Machine::read(&m.memory, bar0 + DOORBELL, 4), 0);
}

fuzz_target!(|data: &[u8]| {
    let mut input = Input::new(data);
    let vectors = usize::from(input.u8() % 64) + 1;
    let m = Machine::new(vectors);
    config_write(&m, 0x10, 4, 0xC000_0000);
    config_write(&m, 0x14, 4, 0xC000_1000);
    config_write(&m, 0x18, 4, 0);
    config_write(&m, 0x1C, 4, 0x10);
    let cap = msix_cap(&m);
    assert_ne!(cap, 0);

    for _ in 0..MAX_OPS {
        if input.is_empty() {
            break;
        }
        let bar0 = m.bar_address(0);
        let bar1 = m.bar_address(1);
        match input.u8() % 9 {
            0 => {
                let (offset, size) = (u64::from(input.u8()), size(&mut input));
                if let Some(bar0) = bar0 {
                    Machine::read(&m.memory, bar0 + offset, size);
                }
            }
            1 => {
                let (offset, size, value) = (u64::from(input.u8()), size(&mut input), input.u64());
                if let Some(bar0) = bar0 {
                    Machine::write(&m.memory, bar0 + offset, size, value);
                }
            }
            2 => {
                let (offset, size) = (u64::from(input.u16()), size(&mut input));
                if let Some(bar1) = bar1 {
                    Machine::read(&m.memory, bar1 + offset % m.msix.layout().bar_size, size);
                }
            }
            3 => {
                let (offset, size, value) = (u64::from(input.u16()), size(&mut input), input.u64());
                if let Some(bar1) = bar1 {
                    Machine::write(
                        &m.memory,
                        bar1 + offset % m.msix.layout().bar_size,
                        size,
                        value,
                    );
                }
            }
            4 => config_write(&m, cap + 2, 2, u64::from(input.u16())),
            5 => {
                let vector = usize::from(input.u8()) % m.own_vectors.len();
                let was_masked = m.msix.is_masked(vector);
                let enabled = m.msix.is_enabled();
                m.own_vectors[vector].write(1).expect("eventfd write");
                if was_masked && enabled {
                    if let Some(bar1) = bar1 {
                        assert_ne!(
                            pending(&m, bar1, vector),
                            Some(false),
                            "a signal while masked is pending"
                        );
                    }
                }
                if !was_masked {
                    let before = m.injected();
                    m.deliver_bound();
                    assert_eq!(m.injected(), before + 1, "unmasked: delivered");
                }
            }
            6 => m.msix.notify(usize::from(input.u8()) % (vectors + 1)),
            7 => {
                let offset = u64::from(input.u8());
                let size = size(&mut input);
                let value = u64::from(input.u32());
                // Keep the capability reachable: writes over it go through op 4.
                if !config::overlaps(offset as usize, size, cap as usize, CAPABILITY_SIZE) {
                    config_write(&m, offset, size, value);
                }
            }
            _ => {
                // The two other peers, the device itself, or an id nobody has.
                let peer = match input.u8() % 4 {
                    n @ (0 | 1) => m.other_peers[usize::from(n)].0,
                    2 => m.own_id,
                    _ => m.own_id.wrapping_add(1000),
                };
                let vector = u32::from(input.u8() % 4);
                if let Some(bar0) = bar0.filter(|&b| serves(&m, b + DOORBELL, 4, "ivshmem0-mmio")) {
                    // Forget rings from earlier raw BAR0 writes.
                    for (_, fds) in &m.other_peers {
                        for fd in fds {
                            let _ = fd.read();
                        }
                    }
                    Machine::write(
                        &m.memory,
                        bar0 + DOORBELL,
                        4,
                        u64::from(doorbell_value(peer, vector)),
                    );
                    let target = if peer == m.own_id {
                        m.own_vectors.get(vector as usize)
                    } else {
                        m.other_peers
                            .iter()
                            .find(|(p, _)| *p == peer)
                            .and_then(|(_, fds)| fds.get(vector as usize))
                    };
                    for (p, fds) in &m.other_peers {
                        for (v, fd) in fds.iter().enumerate() {
                            let rung = fd.read().is_ok();
                            let addressed = target.is_some_and(|t| std::sync::Arc::ptr_eq(t, fd));
                            assert_eq!(
                                rung, addressed,
                                "doorbell peer {peer} vector {vector}: peer {p} vector {v}"
                            );
                        }
                    }
                }
            }
        }
        m.deliver_bound();
        if let Some(bar0) = m.bar_address(0) {
            check_registers(&m, bar0);
        }
        if let Some(bar1) = m.bar_address(1) {
            for vector in 0..vectors {
                if pending(&m, bar1, vector) == Some(true) {
                    assert!(
                        m.msix.is_masked(vector),
                        "vector {vector} pending while unmasked"
                    );
                }
            }
        }
        m.check_msix_wiring();
    }
});
