//! Reads address 0 (not present) so the vmm reports a page fault and exits with status 3.
#![no_std]
#![no_main]

use guest::println;

fn main() -> i32 {
    println!("about to fault");
    // SAFETY: deliberately invalid: page 0 is not mapped, the #PF is what this program tests.
    let value = unsafe { core::ptr::read_volatile(core::ptr::null::<u64>()) };
    println!("read {value:#x} from address 0: no fault?");
    1
}

guest::entry!(main);
