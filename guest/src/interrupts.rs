//! Interrupts as ring-3 code sees them. The VMM's ring-0 stub for every vector 32..255 counts
//! deliveries in the interrupt mailbox (`layout::MAILBOX_COUNTERS`, user-readable) and EOIs the
//! LAPIC; ring 3 polls those counters or blocks in the halt gate (`hlt` in ring 3, which the
//! VMM's #GP handler turns into "halt unless the counter already changed") until one changes.
use crate::layout::{LAPIC_ADDR, MAILBOX_COUNTERS, VECTOR_TIMER};
use crate::mmio;

const LAPIC_ICR_LOW: u64 = 0x300;
const LAPIC_LVT_TIMER: u64 = 0x320;
const LAPIC_TIMER_INITIAL: u64 = 0x380;
const LAPIC_TIMER_DIVIDE: u64 = 0x3E0;

/// Deliveries of `vector` so far.
pub fn count(vector: u8) -> u64 {
    // SAFETY: the mailbox page is identity-mapped and user-readable.
    unsafe { mmio::read64(MAILBOX_COUNTERS + 8 * vector as u64) }
}

/// Halts until an interrupt arrives, unless `vector`'s counter already differs from `seen`
/// (checked with interrupts off, so a delivery between the caller's check and the halt is
/// never missed).
pub fn halt_until_changed(vector: u8, seen: u64) {
    // SAFETY: the VMM's #GP handler treats a ring-3 `hlt` as the halt gate: it only reads the
    // mailbox, may halt, and resumes after the `hlt` with all registers preserved.
    unsafe {
        core::arch::asm!("hlt", in("rdi") vector as u64, in("rsi") seen, options(nostack));
    }
}

/// Waits until `vector` has been delivered more than `seen` times; returns the new count.
pub fn wait_interrupt(vector: u8, seen: u64) -> u64 {
    loop {
        let now = count(vector);
        if now != seen {
            return now;
        }
        halt_until_changed(vector, seen);
    }
}

/// Like [`wait_interrupt`] but gives up after `timeout_ns` (LAPIC one-shot timer, vector 0x20):
/// `None` on timeout.
pub fn wait_interrupt_timeout(vector: u8, seen: u64, timeout_ns: u64) -> Option<u64> {
    let deadline = crate::clock::now_ns() + timeout_ns;
    loop {
        let now = count(vector);
        if now != seen {
            return Some(now);
        }
        let left = deadline.saturating_sub(crate::clock::now_ns());
        if left == 0 {
            return None;
        }
        arm_timer(left.min(u32::MAX as u64));
        if count(vector) == seen {
            halt_until_changed(vector, seen);
        }
    }
}

/// One-shot LAPIC timer interrupt (vector 0x20) after about `ns` nanoseconds (KVM's LAPIC
/// counts at 1 GHz with divide-by-1).
pub fn arm_timer(ns: u64) {
    // SAFETY: LAPIC registers, identity-mapped for ring 3.
    unsafe {
        mmio::write32(LAPIC_ADDR + LAPIC_TIMER_DIVIDE, 0xB);
        mmio::write32(LAPIC_ADDR + LAPIC_LVT_TIMER, VECTOR_TIMER as u32);
        mmio::write32(
            LAPIC_ADDR + LAPIC_TIMER_INITIAL,
            ns.clamp(1, u32::MAX as u64) as u32,
        );
    }
}

/// Sends `vector` to this vCPU through the LAPIC (fixed delivery, "self" shorthand).
pub fn self_ipi(vector: u8) {
    // SAFETY: LAPIC ICR write.
    unsafe { mmio::write32(LAPIC_ADDR + LAPIC_ICR_LOW, 0x4_0000 | vector as u32) };
}

/// Halts this vCPU forever without burning a host CPU.
pub fn park() -> ! {
    loop {
        // Vector 0 (#DE) is never counted, so its counter stays 0 and the gate halts.
        halt_until_changed(0, 0);
    }
}
