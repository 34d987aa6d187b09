//! Benchmark floors (`scripts/bench.sh`): what the VMM's figures are measured against.
//!
//! - [`BareNopExits`] (`--bench-bare-exits`): the testdev's no-op register answered right in the
//!   vCPU thread as an [`ExitShortcut`], skipping the memory-model dispatch, so that
//!   `exit_bench` measures a bare `KVM_RUN` loop;
//! - [`host_memory`] (`--bench-host-memcpy SIZE`): host memset/memcpy bandwidth, the floor of
//!   the guest's `ram_bandwidth` and `ivshmem_bandwidth` programs.
use crate::arch::x86_64::layout::{testdev, testdev_pio, TESTDEV_ADDR, TESTDEV_PIO_BASE};
use crate::vcpu::{ExitData, ExitShortcut};

/// Answers testdev NOP accesses (MMIO and PIO) as the device would: reads are 0, writes vanish.
pub struct BareNopExits;

impl BareNopExits {
    const MMIO: u64 = TESTDEV_ADDR + testdev::NOP;
    const PORT: u16 = TESTDEV_PIO_BASE + testdev_pio::NOP;

    fn answer(data: ExitData<'_>) {
        if let ExitData::Read(bytes) = data {
            bytes.fill(0);
        }
    }
}

impl ExitShortcut for BareNopExits {
    fn answer_mmio(&self, addr: u64, data: ExitData<'_>) -> bool {
        if addr != Self::MMIO {
            return false;
        }
        Self::answer(data);
        true
    }

    fn answer_pio(&self, port: u16, data: ExitData<'_>) -> bool {
        if port != Self::PORT {
            return false;
        }
        Self::answer(data);
        true
    }
}

/// Host floor for the guest's ram_bandwidth program: the same fill and copy, 8 rounds each.
pub fn host_memory(size: usize) -> String {
    const ROUNDS: usize = 8;
    let mut a = vec![1u8; size];
    let mut b = vec![2u8; size];
    let start = std::time::Instant::now();
    for round in 0..ROUNDS {
        a.fill(round as u8);
        std::hint::black_box(&mut a);
    }
    let fill = start.elapsed();
    let start = std::time::Instant::now();
    for _ in 0..ROUNDS {
        b.copy_from_slice(&a);
        std::hint::black_box(&mut b);
    }
    let copy = start.elapsed();
    let gbps = |t: std::time::Duration| (size * ROUNDS) as f64 / t.as_nanos() as f64;
    format!(
        "host_memory: buffer={}MiB host_memset_gbps={:.2} host_memcpy_gbps={:.2}",
        size >> 20,
        gbps(fill),
        gbps(copy)
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bare_nop_exits_answer_only_the_nop_register() {
        let nop = BareNopExits;
        let mut bytes = [0xAAu8; 8];
        assert!(nop.answer_mmio(TESTDEV_ADDR + testdev::NOP, ExitData::Read(&mut bytes)));
        assert_eq!(bytes, [0; 8]);
        assert!(nop.answer_mmio(TESTDEV_ADDR + testdev::NOP, ExitData::Write(&[1])));
        let mut bytes = [0xAAu8; 4];
        assert!(!nop.answer_mmio(TESTDEV_ADDR + testdev::EXIT, ExitData::Read(&mut bytes)));
        assert_eq!(bytes, [0xAA; 4], "other registers are left to dispatch");
        assert!(!nop.answer_mmio(TESTDEV_ADDR + testdev::EXIT, ExitData::Write(&[1])));
        let port = TESTDEV_PIO_BASE + testdev_pio::NOP;
        assert!(nop.answer_pio(port, ExitData::Read(&mut bytes)));
        assert_eq!(bytes, [0; 4]);
        assert!(!nop.answer_pio(TESTDEV_PIO_BASE + testdev_pio::EXIT, ExitData::Write(&[0])));
    }
}
