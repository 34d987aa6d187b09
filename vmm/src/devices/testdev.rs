//! The guest programs' debug/exit/console device ("testdev").
//!
//! MMIO at `layout::TESTDEV_ADDR` (usable from ring 3, registers in `layout::testdev`): exit
//! with a code, console bytes and strings, cpu id, cpu count, RAM size, a monotonic clock, a
//! no-op register for exit benchmarks, and the exception stub's crash report. A few PIO ports
//! (`layout::testdev_pio`) serve string-I/O tests and PIO benchmarks.
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::Arc;
use std::time::Instant;

use vm_memory::{Bytes, GuestAddress, GuestMemoryMmap};

use super::console::Console;
use crate::arch::x86_64::layout::{testdev as reg, testdev_pio, CRASH_FIELDS, MAILBOX_CRASH};
use crate::exit::{CrashRecord, ExitReason, VmControl};
use crate::memory::RegionOps;

/// Longest console string accepted in one CONSOLE_STR write.
const MAX_STRING: u64 = 0xFFFF;

/// The guest programs' device: exit status, console, CPU and clock queries, crash reports
/// (registers in `layout::testdev` and `layout::testdev_pio`).
pub struct TestDev {
    control: Arc<VmControl>,
    console: Arc<Console>,
    ram: GuestMemoryMmap,
    ncpus: u32,
    ram_size: u64,
    created: Instant,
    seq: AtomicU32,
}

impl TestDev {
    /// A testdev for a VM of `ncpus` vCPUs and `ram_size` bytes of RAM (readable as `ram` for
    /// console strings), created at `created`.
    pub fn new(
        control: Arc<VmControl>,
        console: Arc<Console>,
        ram: GuestMemoryMmap,
        ncpus: u32,
        ram_size: u64,
        created: Instant,
    ) -> TestDev {
        TestDev {
            control,
            console,
            ram,
            ncpus,
            ram_size,
            created,
            seq: AtomicU32::new(0),
        }
    }

    fn console_string(&self, word: u64) {
        let addr = word & ((1 << 48) - 1);
        let len = (word >> 48).min(MAX_STRING);
        let mut buf = vec![0u8; len as usize];
        match self.ram.read_slice(&mut buf, GuestAddress(addr)) {
            Ok(()) => self.console.write(&buf),
            Err(_) => log::warn!("testdev: console string {addr:#x}+{len} is not in RAM"),
        }
    }

    fn crash(&self, vector: u64) {
        let mut fields = [0u64; CRASH_FIELDS.len()];
        for (i, f) in fields.iter_mut().enumerate() {
            *f = self
                .ram
                .read_obj(GuestAddress(MAILBOX_CRASH + 8 * i as u64))
                .unwrap_or(u64::MAX);
        }
        let cpu = crate::vcpu::current_cpu().unwrap_or(0);
        self.control.request_exit(ExitReason::Crash(CrashRecord {
            cpu,
            vector: vector as u8,
            error_code: fields[1],
            rip: fields[2],
            cs: fields[3],
            rflags: fields[4],
            rsp: fields[5],
            ss: fields[6],
            cr2: fields[7],
        }));
    }

    fn exit(&self, value: u64) {
        self.control
            .request_exit(ExitReason::GuestExit(value as u32 as i32));
    }
}

/// The MMIO face of the testdev.
pub struct TestDevMmio(pub Arc<TestDev>);

impl RegionOps for TestDevMmio {
    fn read(&self, offset: u64, _size: u32) -> u64 {
        let dev = &self.0;
        match offset {
            reg::CPU_ID => crate::vcpu::current_cpu().unwrap_or(0) as u64,
            reg::NCPUS => dev.ncpus as u64,
            reg::RAM_SIZE => dev.ram_size,
            reg::CLOCK_NS => dev.created.elapsed().as_nanos() as u64,
            _ => 0,
        }
    }

    fn write(&self, offset: u64, _size: u32, value: u64) {
        let dev = &self.0;
        match offset {
            reg::EXIT => dev.exit(value),
            reg::CONSOLE_BYTE => dev.console.write(&[value as u8]),
            reg::CONSOLE_STR => dev.console_string(value),
            reg::CRASH => dev.crash(value),
            _ => {}
        }
    }
}

/// The PIO face of the testdev.
pub struct TestDevPio(pub Arc<TestDev>);

impl RegionOps for TestDevPio {
    fn read(&self, offset: u64, _size: u32) -> u64 {
        match offset as u16 {
            testdev_pio::SEQ => self.0.seq.fetch_add(1, Ordering::Relaxed) as u64 + 1,
            _ => 0,
        }
    }

    fn write(&self, offset: u64, _size: u32, value: u64) {
        match offset as u16 {
            testdev_pio::CONSOLE => self.0.console.write(&[value as u8]),
            testdev_pio::EXIT => self.0.exit(value),
            _ => {}
        }
    }
}
