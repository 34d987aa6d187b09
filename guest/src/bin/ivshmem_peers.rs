//! Who is connected, from inside a guest: reads the server's peer state table
//! (`ivshmem-server --state-table OFFSET`) through `guest::peers`, and sleeps on the lifecycle
//! doorbell (`--lifecycle-vector N`) between reads when given one.
//!
//! Prints `ivshmem-peers: I am peer ID ...`, then one `peer_id=ID vectors=N` line per other
//! connected peer (as `ivshmem-client peers`) and `ivshmem-peers: N other peer(s), generation G`.
//! Then, in order, if asked:
//! - `wait=PEER|any`: waits until that peer (any other) is connected and prints its
//!   `peer_id=ID vectors=N` line (as `ivshmem-client wait-peer`);
//! - `watch=K`: prints `ivshmem-peers: watching for K change(s)`, then one line per join
//!   (`peer_id=ID joined with N vector(s)`) and leave (`peer_id=ID left`) of other peers, as
//!   `ivshmem-client` reports them, until K were seen.
//!
//! Guest args: `table=OFFSET` (required: where the server keeps the table), `lifecycle=V` (our
//! vector the server rings on joins and leaves; without it the table is re-read at every timer
//! tick), `wait=PEER|any`, `watch=K`, `timeout_ms=T` for each wait (default 30000),
//! `index=I` which ivshmem device (default 0).
//! Exit status: 0 done; 1 timeout; 2 bad args; 10 no ivshmem-doorbell device; 12 no `table=`,
//! or the table does not fit in the shared memory, or `lifecycle=` is not one of our vectors;
//! 13 no valid table at that offset (e.g. a server without `--state-table`: the message says
//! what was found).
#![no_std]
#![no_main]

use guest::ivshmem::Ivshmem;
use guest::peers::{Peers, ReadError, Row};
use guest::{args, println};

/// Most other peers whose joins and leaves `watch` follows (the rest are counted, not named).
const WATCHED: usize = 64;

fn main() -> i32 {
    let index = args::u64_or("index", 0) as usize;
    let timeout_ns = args::u64_or("timeout_ms", 30_000).saturating_mul(1_000_000);
    let lifecycle = args::opt_u64("lifecycle").map(|v| v.min(u16::MAX as u64) as u16);
    let watch = args::u64_or("watch", 0);
    let wait = match args::get("wait") {
        None => None,
        Some("any") => Some(None),
        Some(_) => match args::get_u64("wait") {
            Some(id) if id <= u16::MAX as u64 => Some(Some(id as u16)),
            _ => {
                println!("ivshmem-peers: wait= takes a peer id (0-65535) or `any`");
                return 2;
            }
        },
    };

    let Some(dev) = Ivshmem::open_nth(index).filter(|d| d.is_doorbell()) else {
        println!("ivshmem-peers: no ivshmem-doorbell device #{index} (use --ivshmem doorbell,...)");
        return 10;
    };
    let Some(offset) = args::opt_u64("table") else {
        println!("ivshmem-peers: no table=OFFSET: where does the server keep its state table?");
        return 12;
    };
    let Some(peers) = Peers::new(&dev, offset, lifecycle) else {
        println!(
            "ivshmem-peers: no room for a state table at {offset:#x}: it needs {} bytes, \
             8-aligned, in the {}-byte shared memory (and lifecycle= must be below {})",
            guest::state_table::TABLE_SIZE,
            dev.shm_size,
            dev.vectors
        );
        return 12;
    };
    let own = dev.id();
    match lifecycle {
        Some(v) => {
            println!("ivshmem-peers: I am peer {own} (table at {offset:#x}, lifecycle vector {v})")
        }
        None => {
            println!("ivshmem-peers: I am peer {own} (table at {offset:#x}, no lifecycle vector)")
        }
    }
    match run(&dev, &peers, own, wait, watch, timeout_ns) {
        Ok(code) => code,
        Err(e) => {
            println!("ivshmem-peers: {e}");
            13
        }
    }
}

fn run(
    dev: &Ivshmem,
    peers: &Peers,
    own: u16,
    wait: Option<Option<u16>>,
    watch: u64,
    timeout_ns: u64,
) -> Result<i32, ReadError> {
    let mut rows = [Row::default(); WATCHED + 1];
    let snapshot = peers.list(&mut rows)?;
    let (mut known, mut count) = others(&rows, snapshot.present, own);
    for row in &known[..count] {
        println!("peer_id={} vectors={}", row.id, row.vectors);
    }
    let others_total = snapshot.present
        - usize::from(
            rows[..snapshot.present.min(rows.len())]
                .iter()
                .any(|r| r.id == own),
        );
    println!(
        "ivshmem-peers: {others_total} other peer(s), generation {}",
        snapshot.header.generation
    );

    if let Some(want) = wait {
        let found = match want {
            Some(id) => peers.wait_join(dev, id, timeout_ns)?,
            None => peers.wait_any(dev, own, timeout_ns)?,
        };
        match found {
            Some(row) => println!("peer_id={} vectors={}", row.id, row.vectors),
            None => {
                match want {
                    Some(id) => {
                        println!("ivshmem-peers: wait-peer: peer {id} did not connect in time")
                    }
                    None => {
                        println!("ivshmem-peers: wait-peer: any other peer did not connect in time")
                    }
                }
                return Ok(1);
            }
        }
    }

    if watch > 0 {
        // The baseline is the table now (the wait above may have seen peers join).
        let snapshot = peers.list(&mut rows)?;
        (known, count) = others(&rows, snapshot.present, own);
        let mut generation = snapshot.header.generation;
        println!("ivshmem-peers: watching for {watch} change(s)");
        let mut seen = 0u64;
        while seen < watch {
            let changed = peers.wait_for(dev, timeout_ns, |p| {
                let h = p.header()?;
                Ok((h.generation != generation).then_some(h.generation))
            })?;
            let Some(now) = changed else {
                println!("ivshmem-peers: timeout: {seen} of {watch} change(s) seen");
                return Ok(1);
            };
            generation = now;
            let snapshot = peers.list(&mut rows)?;
            let (current, current_count) = others(&rows, snapshot.present, own);
            seen += report_changes(&known[..count], &current[..current_count]);
            known = current;
            count = current_count;
        }
        println!("ivshmem-peers: done: {seen} change(s)");
    }
    Ok(0)
}

/// The first [`WATCHED`] rows other than ours, by id.
fn others(rows: &[Row], present: usize, own: u16) -> ([Row; WATCHED], usize) {
    let mut out = [Row::default(); WATCHED];
    let mut n = 0;
    for row in rows[..present.min(rows.len())]
        .iter()
        .filter(|r| r.id != own)
    {
        if n == WATCHED {
            break;
        }
        out[n] = *row;
        n += 1;
    }
    (out, n)
}

/// Prints the joins and leaves between two id-sorted lists; returns how many.
fn report_changes(before: &[Row], after: &[Row]) -> u64 {
    let (mut i, mut j, mut changes) = (0, 0, 0);
    while i < before.len() || j < after.len() {
        let b = before.get(i);
        let a = after.get(j);
        match (b, a) {
            // The same peer. Compared by id only: a server that takes over (upgrade, restart
            // after a crash) rewrites every row with a new generation, and ids are not reused
            // until the 16-bit counter wraps.
            (Some(b), Some(a)) if b.id == a.id => {
                i += 1;
                j += 1;
            }
            (Some(b), a) if a.is_none_or(|a| b.id < a.id) => {
                println!("peer_id={} left", b.id);
                changes += 1;
                i += 1;
            }
            (_, Some(a)) => {
                println!("peer_id={} joined with {} vector(s)", a.id, a.vectors);
                changes += 1;
                j += 1;
            }
            (_, None) => break,
        }
    }
    changes
}

guest::entry!(main);
