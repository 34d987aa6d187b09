//! String port I/O (`rep outsb`, `rep insd`): every element must reach the device once.
#![no_std]
#![no_main]

use guest::layout::{testdev_pio, TESTDEV_PIO_BASE};
use guest::{pio, println};

fn main() -> i32 {
    // SAFETY: the testdev's PIO ports (the VMM's TSS I/O bitmap allows ring-3 port I/O).
    unsafe {
        pio::outsb(
            TESTDEV_PIO_BASE + testdev_pio::CONSOLE,
            b"string pio: rep outsb ok\n",
        )
    };
    let mut words = [0u32; 8];
    // SAFETY: as above.
    unsafe { pio::insd(TESTDEV_PIO_BASE + testdev_pio::SEQ, &mut words) };
    for pair in words.windows(2) {
        if pair[1] != pair[0] + 1 {
            println!("string pio: rep insd not sequential: {words:?}");
            return 1;
        }
    }
    println!("string pio: rep insd ok {words:?}");
    0
}

guest::entry!(main);
