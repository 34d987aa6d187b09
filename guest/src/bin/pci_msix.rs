//! MSI-X with `--device pci-testdev`: programs the table (address 0xFEE00000, data = CPU vector),
//! enables MSI-X and checks, for the device's vectors (raised by writing BAR0's RAISE register,
//! which signals the vector's eventfd, bound to KVM with irqfd):
//! - an unmasked vector interrupts exactly once per raise (many rounds);
//! - a masked vector does not interrupt; its PBA bit is set; unmasking delivers it once and
//!   clears the bit;
//! - the function mask holds back every vector the same way;
//! - while MSI-X is disabled raises are dropped (no interrupt, no pending bit later);
//! - RAISE_FAST (a KVM ioeventfd per vector) interrupts without any exit to the VMM: the
//!   device's BAR0 access counter does not move.
//!
//! Exit status: 0 ok; 40 no device; 41 no MSI-X; 42 unmasked vector not delivered (or twice);
//! 43 masked vector delivered; 44 no pending bit; 45 unmask did not deliver or left pending;
//! 46 function mask failed; 47 disabled MSI-X delivered something; 48 RAISE_FAST not delivered;
//! 49 RAISE_FAST reached the VMM.
#![no_std]
#![no_main]

use guest::interrupts::count;
use guest::mmio::{read32, write32};
use guest::pci::{self, testdev as td, BarAllocator};
use guest::println;

const FIRST_VECTOR: u8 = 0x50;
const TIMEOUT_NS: u64 = 2_000_000_000;
/// How long "nothing arrives" is watched for.
const QUIET_NS: u64 = 30_000_000;
const ROUNDS: u64 = 200;

fn raise_fast(regs: u64, index: u16) {
    // SAFETY: BAR0 of the device, assigned by us.
    unsafe { write32(regs + td::reg::RAISE_FAST, index as u32) };
}

fn accesses(regs: u64) -> u32 {
    // SAFETY: BAR0 of the device, assigned by us.
    unsafe { read32(regs + td::reg::ACCESSES) }
}

fn raise(regs: u64, index: u16) {
    // SAFETY: BAR0 of the device, assigned by us.
    unsafe { write32(regs + td::reg::RAISE, index as u32) };
}

/// Waits (polling the mailbox counter, so it does not depend on the halt gate) until `vector`
/// has been delivered more than `seen` times or `timeout_ns` passed.
fn wait_count(vector: u8, seen: u64, timeout_ns: u64) -> bool {
    let deadline = guest::clock::now_ns() + timeout_ns;
    loop {
        for _ in 0..1000 {
            if count(vector) != seen {
                return true;
            }
            core::hint::spin_loop();
        }
        if guest::clock::now_ns() > deadline {
            return false;
        }
    }
}

fn delivered(vector: u8, seen: u64) -> bool {
    wait_count(vector, seen, TIMEOUT_NS)
}

fn quiet(vector: u8, seen: u64) -> bool {
    !wait_count(vector, seen, QUIET_NS)
}

fn main() -> i32 {
    let Some(dev) = pci::find(td::VENDOR_ID, td::DEVICE_ID) else {
        println!("pci_msix: no pci-testdev");
        return 40;
    };
    let bars = pci::assign_bars(dev, &mut BarAllocator::new());
    let Some((_, regs)) = bars[0] else { return 40 };
    let Some(msix) = pci::Msix::find(dev) else {
        println!("pci_msix: no MSI-X capability");
        return 41;
    };
    let n = msix.vectors.min(4);
    if n < 3 {
        println!("pci_msix: need at least 3 vectors, have {}", msix.vectors);
        return 41;
    }
    println!(
        "pci_msix: {} vectors, table at {:#x}, PBA at {:#x}",
        msix.vectors, msix.table, msix.pba
    );
    for i in 0..n {
        msix.setup_vector(i, FIRST_VECTOR + i as u8);
    }
    msix.enable(true);

    // 1. Unmasked vectors: one interrupt per raise.
    for round in 0..ROUNDS {
        let i = (round % n as u64) as u16;
        let vector = FIRST_VECTOR + i as u8;
        let seen = count(vector);
        raise(regs, i);
        if !delivered(vector, seen) {
            println!("pci_msix: round {round}: vector {i} not delivered");
            return 42;
        }
        if count(vector) != seen + 1 {
            println!(
                "pci_msix: round {round}: vector {i} delivered {} times",
                count(vector) - seen
            );
            return 42;
        }
    }
    println!("pci_msix: {ROUNDS} unmasked deliveries ok");

    // 2. Per-vector mask: pending while masked, delivered on unmask.
    let v1 = FIRST_VECTOR + 1;
    msix.mask(1, true);
    let seen = count(v1);
    raise(regs, 1);
    if !quiet(v1, seen) {
        println!("pci_msix: masked vector 1 was delivered");
        return 43;
    }
    if !msix.is_pending(1) || msix.is_pending(0) {
        println!("pci_msix: PBA bit for masked vector 1 not set (or vector 0 set)");
        return 44;
    }
    msix.mask(1, false);
    if !delivered(v1, seen) || msix.is_pending(1) {
        println!("pci_msix: unmasking vector 1 did not deliver / left pending");
        return 45;
    }
    if !quiet(v1, seen + 1) {
        println!("pci_msix: vector 1 delivered twice after unmask");
        return 45;
    }
    println!("pci_msix: mask/pending/unmask ok");

    // 3. Function mask.
    let v2 = FIRST_VECTOR + 2;
    msix.function_mask(true);
    let seen2 = count(v2);
    raise(regs, 2);
    if !quiet(v2, seen2) || !msix.is_pending(2) {
        println!("pci_msix: function mask did not hold vector 2 back");
        return 46;
    }
    msix.function_mask(false);
    if !delivered(v2, seen2) || msix.is_pending(2) {
        println!("pci_msix: clearing the function mask did not deliver vector 2");
        return 46;
    }
    println!("pci_msix: function mask ok");

    // 4. Disabled: dropped.
    let v0 = FIRST_VECTOR;
    msix.enable(false);
    let seen0 = count(v0);
    raise(regs, 0);
    if !quiet(v0, seen0) {
        return 47;
    }
    msix.enable(true);
    if !quiet(v0, seen0) || msix.is_pending(0) {
        println!("pci_msix: a raise while disabled was delivered or left pending");
        return 47;
    }
    // And it works again afterwards.
    raise(regs, 0);
    if !delivered(v0, seen0) {
        return 42;
    }
    // 5. Exit-free doorbell: ioeventfd -> eventfd -> irqfd -> interrupt, all in the kernel.
    let before = accesses(regs);
    let start = guest::clock::now_ns();
    for round in 0..ROUNDS {
        let i = (round % n as u64) as u16;
        let vector = FIRST_VECTOR + i as u8;
        let seen = count(vector);
        raise_fast(regs, i);
        if !delivered(vector, seen) {
            println!("pci_msix: fast round {round}: vector {i} not delivered");
            return 48;
        }
    }
    let elapsed_ns = guest::clock::now_ns() - start;
    let after = accesses(regs);
    if after.wrapping_sub(before) != 1 {
        println!(
            "pci_msix: {} RAISE_FAST writes reached the VMM",
            after.wrapping_sub(before) - 1
        );
        return 49;
    }
    println!(
        "pci_msix: {ROUNDS} exit-free doorbell deliveries ok ({} ns per doorbell -> interrupt)",
        elapsed_ns / ROUNDS
    );
    println!("pci_msix: ok");
    0
}

guest::entry!(main);
