//! COM1 (0x3F8, IRQ 4): a 16550A from vm-superio, its output going to the VM console and its
//! interrupt to GSI 4 through an irqfd (the in-kernel IOAPIC/PIC keeps that legacy route).
use std::io::Write;
use std::sync::{Arc, Mutex};

use vm_superio::{Serial, Trigger};
use vmm_sys_util::eventfd::EventFd;

use super::console::Console;
use crate::memory::RegionOps;

/// COM1's base port.
pub const COM1_BASE: u16 = 0x3F8;
/// Ports a 16550 UART decodes.
pub const COM1_SIZE: u16 = 8;
/// COM1's interrupt (IRQ 4 on the IOAPIC).
pub const COM1_GSI: u32 = 4;

/// Raises the serial interrupt by signalling the irqfd bound to GSI 4.
pub struct IrqTrigger(pub Arc<EventFd>);

impl Trigger for IrqTrigger {
    type E = std::io::Error;
    fn trigger(&self) -> std::io::Result<()> {
        self.0.write(1)
    }
}

/// Adapter: vm-superio wants a `Write`.
pub struct ConsoleWriter(pub Arc<Console>);

impl Write for ConsoleWriter {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.write(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// COM1: vm-superio's 16550 UART, its output to the console and its interrupt to an irqfd.
pub struct SerialPort {
    uart: Mutex<Serial<IrqTrigger, vm_superio::serial::NoEvents, ConsoleWriter>>,
}

impl SerialPort {
    /// A UART raising `irq` and printing to `console`.
    pub fn new(irq: Arc<EventFd>, console: Arc<Console>) -> SerialPort {
        SerialPort {
            uart: Mutex::new(Serial::new(IrqTrigger(irq), ConsoleWriter(console))),
        }
    }

    /// Queues input bytes for the guest (stdin forwarding).
    pub fn enqueue_input(&self, bytes: &[u8]) -> usize {
        let mut uart = self.uart.lock().unwrap_or_else(|e| e.into_inner());
        uart.enqueue_raw_bytes(bytes).unwrap_or(0)
    }
}

impl RegionOps for SerialPort {
    fn read(&self, offset: u64, _size: u32) -> u64 {
        let mut uart = self.uart.lock().unwrap_or_else(|e| e.into_inner());
        uart.read(offset as u8) as u64
    }

    fn write(&self, offset: u64, _size: u32, value: u64) {
        let mut uart = self.uart.lock().unwrap_or_else(|e| e.into_inner());
        if let Err(e) = uart.write(offset as u8, value as u8) {
            log::warn!("serial: {e:?}");
        }
    }
}
