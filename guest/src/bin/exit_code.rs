//! Exits with status 42: checks that the guest's exit code becomes the vmm's.
#![no_std]
#![no_main]

fn main() -> i32 {
    42
}

guest::entry!(main);
