//! Prints a greeting and exits 0: the smallest end-to-end check of the VMM.
#![no_std]
#![no_main]

use guest::println;

fn main() -> i32 {
    println!("Hello from guest");
    0
}

guest::entry!(main);
