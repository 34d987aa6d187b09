//! Resets the machine through the i8042 (0xFE to port 0x64): the VMM ends with status 0.
#![no_std]
#![no_main]

use guest::{pio, println};

fn main() -> i32 {
    println!("reset: pulsing the i8042 reset line");
    // SAFETY: the i8042 command port; the TSS I/O bitmap allows ring-3 port I/O.
    unsafe { pio::outb(0x64, 0xFE) };
    println!("reset: still running after the reset command");
    1
}

guest::entry!(main);
