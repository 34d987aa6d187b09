//! Doorbell round trips between this VM and another peer (a VM running this program with the
//! other role, or a host echo such as `bench doorbell-echo`).
//!
//! - `role=ping`: rings `peer` on `vector` and waits to be rung back on our `vector`;
//!   `warmup` untimed rounds, then `rounds` timed ones; prints `rtt_ns=<mean>`.
//! - `role=pong`: waits for a ring on `vector` and rings `peer` back, `warmup + rounds` times.
//!
//! `peer=ID` names the partner; without it (or `peer=auto`) the partner is found through the peer
//! directory: each side publishes "pingpong ping" / "pingpong pong" in its slot and looks for
//! the other role. A host partner needs `peer=ID` (it answers `warmup + rounds` rings).
//!
//! With `transport=memory` there are no doorbells: both sides spin on two words of shared memory
//! at `offset` (default 0x10000), as the host's `bench spin` / `bench spin-echo` do (compatible
//! with them), on a doorbell or a plain device.
//!
//! Guest args: `role=ping|pong` (default ping), `peer=ID|auto`, `rounds=N` (default 10000),
//! `warmup=W` (default rounds/10), `vector=V` (default 0), `wait=halt|spin` (default halt: the
//! vCPU sleeps in the halt gate; spin polls the interrupt counter), `timeout_ms=T` per wait
//! (default 10000), `index=I` which ivshmem device.
//! Exit status: 0 ok; 1 a ring was not answered in time; 2 bad args; 10 no doorbell device;
//! 11 no partner found.
#![no_std]
#![no_main]

use guest::ivshmem::{directory, Deadline, Ivshmem};
use guest::{args, clock, println};

fn find_partner(dev: &Ivshmem, own: u16, role: &str, timeout_ns: u64) -> Option<u16> {
    let want = if role == "ping" {
        "pingpong pong"
    } else {
        "pingpong ping"
    };
    let deadline = clock::now_ns() + timeout_ns;
    loop {
        for id in (0..directory::slots(dev) as u16).filter(|&id| id != own) {
            let mut buf = [0u8; directory::TEXT_LEN];
            if directory::is_valid(dev, id) && directory::text(dev, id, &mut buf) == want {
                return Some(id);
            }
        }
        if clock::now_ns() > deadline {
            return None;
        }
        // Nothing to wait on yet (the partner does not know us): poll at a modest pace.
        guest::ivshmem::sleep_ns(1_000_000);
    }
}

fn main() -> i32 {
    let role = args::str_or("role", "ping");
    if role != "ping" && role != "pong" {
        println!("ivshmem_pingpong: role must be ping or pong, not {role}");
        return 2;
    }
    let rounds = args::u64_or("rounds", 10_000);
    let warmup = args::u64_or("warmup", rounds / 10);
    let vector = args::u64_or("vector", 0) as u16;
    let spin = match args::str_or("wait", "halt") {
        "halt" => false,
        "spin" => true,
        other => {
            println!("ivshmem_pingpong: wait must be halt or spin, not {other}");
            return 2;
        }
    };
    let timeout_ns = args::u64_or("timeout_ms", 10_000).saturating_mul(1_000_000);
    let index = args::u64_or("index", 0) as usize;

    let memory = match args::str_or("transport", "doorbell") {
        "doorbell" => false,
        "memory" => true,
        other => {
            println!("ivshmem_pingpong: transport must be doorbell or memory, not {other}");
            return 2;
        }
    };
    let Some(dev) = Ivshmem::open_nth(index).filter(|d| memory || d.is_doorbell()) else {
        println!("ivshmem_pingpong: no ivshmem-doorbell device #{index}");
        return 10;
    };
    if memory {
        let offset = args::u64_or("offset", 0x10000);
        return memory_pingpong(&dev, role, offset, warmup, rounds, timeout_ns);
    }
    if vector >= dev.vectors {
        println!(
            "ivshmem_pingpong: vector {vector} but the device has {}",
            dev.vectors
        );
        return 2;
    }
    let own = dev.id();
    let explicit = match args::get("peer") {
        None | Some("auto") => None,
        Some(_) => Some(args::u64_or("peer", 0) as u16),
    };
    if explicit.is_none() {
        let text = if role == "ping" {
            "pingpong ping"
        } else {
            "pingpong pong"
        };
        directory::publish(&dev, own, text);
    }
    let wait = |seen: u64| {
        if spin {
            dev.wait_spin(vector, seen, timeout_ns)
        } else {
            dev.wait(vector, seen, timeout_ns)
        }
    };
    let total = warmup + rounds;
    let mut seen = dev.received(vector);

    if role == "pong" {
        println!(
            "ivshmem_pingpong: pong: I am peer {own}, answering {total} rings on vector {vector}"
        );
        let mut partner = explicit;
        for i in 0..total {
            let Some(now) = wait(seen) else {
                println!("ivshmem_pingpong: pong: no ring {i} of {total} within the timeout");
                return 1;
            };
            seen = now;
            let to = match partner {
                Some(p) => p,
                None => match find_partner(&dev, own, role, timeout_ns) {
                    Some(p) => *partner.insert(p),
                    None => return 11,
                },
            };
            dev.ring(to, vector);
        }
        println!("ivshmem_pingpong: pong: answered {total} rings");
    } else {
        let partner = match explicit {
            Some(p) => p,
            None => match find_partner(&dev, own, role, timeout_ns) {
                Some(p) => p,
                None => {
                    println!("ivshmem_pingpong: ping: no partner in the directory");
                    return 11;
                }
            },
        };
        println!(
            "ivshmem_pingpong: ping: I am peer {own}, partner {partner}, vector {vector}, \
             {warmup} warm-up + {rounds} rounds, wait={}",
            if spin { "spin" } else { "halt" }
        );
        let mut start = clock::now_ns();
        for i in 0..total {
            if i == warmup {
                start = clock::now_ns();
            }
            dev.ring(partner, vector);
            let Some(now) = wait(seen) else {
                println!("ivshmem_pingpong: ping: round {i} of {total} not answered in time");
                return 1;
            };
            seen = now;
        }
        let elapsed = clock::now_ns() - start;
        println!(
            "ivshmem_pingpong: ping: rounds={rounds} rtt_ns={} total_ms={}",
            elapsed / rounds.max(1),
            elapsed / 1_000_000
        );
    }
    if explicit.is_none() {
        directory::withdraw(&dev, own);
    }
    0
}

/// Round trips through two shared-memory words (no doorbells, both sides spin), the protocol
/// of the host's `bench spin` / `bench spin-echo`: ping stores round `r` (1, 2, ...) at `offset`,
/// pong answers by storing `r` at `offset + 64`.
fn memory_pingpong(
    dev: &Ivshmem,
    role: &str,
    offset: u64,
    warmup: u64,
    rounds: u64,
    timeout_ns: u64,
) -> i32 {
    let (ping, pong) = (offset, offset + 64);
    if pong + 8 > dev.shm_size {
        println!("ivshmem_pingpong: offset {offset:#x} outside the shared memory");
        return 2;
    }
    let total = warmup + rounds;
    let spin_until = |at: u64, value: u64| -> bool {
        let deadline = Deadline::start(timeout_ns);
        let mut ok = true;
        while dev.read_u64(at) != value {
            if deadline.passed() {
                ok = false;
                break;
            }
            // No `pause` (spin_loop hint): under a hypervisor it may trap and yield the vCPU.
        }
        ok
    };
    if role == "pong" {
        println!("ivshmem_pingpong: pong: answering {total} rounds through memory at {offset:#x}");
        for round in 1..=total {
            if !spin_until(ping, round) {
                println!("ivshmem_pingpong: pong: round {round} of {total} never came");
                return 1;
            }
            dev.write_u64(pong, round);
        }
        println!("ivshmem_pingpong: pong: answered {total} rounds");
        return 0;
    }
    dev.write_u64(pong, 0);
    println!("ivshmem_pingpong: ping: memory at {offset:#x}, {warmup} warm-up + {rounds} rounds");
    let mut start = clock::now_ns();
    for round in 1..=total {
        if round == warmup + 1 {
            start = clock::now_ns();
        }
        dev.write_u64(ping, round);
        if !spin_until(pong, round) {
            println!("ivshmem_pingpong: ping: round {round} of {total} not answered in time");
            return 1;
        }
    }
    let elapsed = clock::now_ns() - start;
    println!(
        "ivshmem_pingpong: ping: transport=memory rounds={rounds} rtt_ns={} total_ms={}",
        elapsed / rounds.max(1),
        elapsed / 1_000_000
    );
    0
}

guest::entry!(main);
