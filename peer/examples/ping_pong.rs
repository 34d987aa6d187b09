//! Two host processes playing ping-pong through an ivshmem server: a counter in shared memory
//! carries the ball, the doorbell (the partner's vector 0) says "your turn".
//!
//! ```text
//! ivshmem-server -F -S /tmp/ivshmem_socket --memfd &
//! cargo run -p ivshmem-peer --example ping_pong -- -S /tmp/ivshmem_socket &   # waits: pong
//! cargo run -p ivshmem-peer --example ping_pong -- -S /tmp/ivshmem_socket     # starts: ping
//! ```
//!
//! The first process finds nobody else connected, so it plays pong: it waits for a partner and
//! answers every ball (if both start at once and see each other, the lower id plays pong). The second finds the first and plays ping: it writes ball number `n` into
//! shared memory, rings the partner, and waits to be rung back with `n` in the reply slot.
//!
//! Shared-memory layout used here (offsets in bytes): 0 = ball (u64, written by ping),
//! 8 = reply (u64, written by pong), 16 = number of rounds (u64, written by ping).

use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use clap::Parser;
use peer::{Peer, ServerEvent, DEFAULT_SOCKET_PATH};

const BALL: usize = 0;
const REPLY: usize = 8;
const ROUNDS: usize = 16;
const TIMEOUT: Duration = Duration::from_secs(10);

/// Ping-pong between two peers through an ivshmem server.
#[derive(Parser)]
struct Args {
    /// Server socket.
    #[arg(short = 'S', long, default_value = DEFAULT_SOCKET_PATH)]
    socket: String,
    /// Rounds to play (set by the ping side).
    #[arg(short = 'n', long, default_value_t = 10)]
    rounds: u64,
}

fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let mut peer = Peer::connect(&args.socket)?;
    println!(
        "peer {} connected: {} bytes of shared memory, {} vector(s)",
        peer.id(),
        peer.shm().len(),
        peer.own_vector_count()
    );
    // Nobody else here yet: we wait and play pong. If two processes start at the same moment
    // and see each other, the lower id plays pong, so there is always exactly one of each.
    match peer.peers().first() {
        Some(partner) if partner.id < peer.id() => ping(&mut peer, partner.id, args.rounds),
        _ => pong(&mut peer),
    }
}

fn ping(peer: &mut Peer, partner: u16, rounds: u64) -> anyhow::Result<()> {
    // The atomics are looked up again after each wait: waiting may take in server news, so it
    // borrows the peer mutably.
    let shm = peer.shm();
    shm.atomic_u64(ROUNDS)?.store(rounds, Ordering::Relaxed);
    shm.atomic_u64(REPLY)?.store(0, Ordering::Relaxed);
    println!("ping: playing {rounds} round(s) with peer {partner}");
    let start = Instant::now();
    for n in 1..=rounds {
        // Release: the partner that sees the ring and loads the ball also sees ROUNDS.
        peer.shm().atomic_u64(BALL)?.store(n, Ordering::Release);
        peer.ring(partner, 0)?;
        if peer.wait_vector(0, Some(TIMEOUT))?.is_none() {
            anyhow::bail!("ping: peer {partner} did not answer ball {n} within {TIMEOUT:?}");
        }
        let got = peer.shm().atomic_u64(REPLY)?.load(Ordering::Acquire);
        anyhow::ensure!(got == n, "ping: expected reply {n}, found {got}");
        println!("ping: ball {n} came back");
    }
    let per_round = start.elapsed() / rounds.max(1) as u32;
    println!("ping: done, {per_round:?} per round trip");
    Ok(())
}

fn pong(peer: &mut Peer) -> anyhow::Result<()> {
    println!("pong: waiting for a partner to join");
    let already_here = peer.peers().first().map(|p| p.id);
    let partner = match already_here {
        Some(id) => id,
        None => loop {
            let events = peer.poll_server(None);
            if let Some(id) = events.iter().find_map(|e| match e {
                ServerEvent::Joined { peer, .. } => Some(*peer),
                _ => None,
            }) {
                break id;
            }
            if !peer.server_connected() {
                anyhow::bail!("pong: the server went away before a partner joined");
            }
        },
    };
    println!("pong: peer {partner} joined");
    loop {
        if peer.wait_vector(0, Some(TIMEOUT))?.is_none() {
            anyhow::bail!("pong: no ball from peer {partner} within {TIMEOUT:?}");
        }
        let shm = peer.shm();
        let n = shm.atomic_u64(BALL)?.load(Ordering::Acquire);
        shm.atomic_u64(REPLY)?.store(n, Ordering::Release);
        peer.ring(partner, 0)?;
        println!("pong: returned ball {n}");
        if n >= shm.atomic_u64(ROUNDS)?.load(Ordering::Relaxed) {
            println!("pong: done");
            return Ok(());
        }
    }
}
