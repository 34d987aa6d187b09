//! Prints "idle: waiting" and then waits for interrupts forever (without burning a host CPU):
//! for tests that stop a VM from outside (signals) and for long-running demos.
#![no_std]
#![no_main]

fn main() -> i32 {
    guest::println!("idle: waiting");
    guest::rt::park()
}

guest::entry!(main);
