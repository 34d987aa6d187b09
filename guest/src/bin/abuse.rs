//! An abusive guest: for `rounds` rounds, with a PRNG seeded by `seed`, it does what a broken or
//! malicious driver might to every PCI function on bus 0:
//! - writes random values of random sizes to random config registers (BAR registers get hostile
//!   addresses instead, so the program keeps its own code, stack and console);
//! - moves BARs over guest RAM, over each other and to absurd addresses (0, the top of the 64-bit
//!   space, beyond any physical address size, unaligned), with decoding on or off, and sizes
//!   them (all-ones) while decoding is on;
//! - floods ivshmem doorbells to its own id and to unknown peers (ids from `unknown_from`, default
//!   1000: it never rings a peer that exists, which would be a legitimate doorbell), any vector;
//! - writes garbage to MSI-X tables and PBAs (vector numbers kept in 0x30..0xEF with fixed
//!   delivery, so a garbage entry cannot hit the program with an exception or INIT);
//! - reads and writes ivshmem BAR0 at every offset with every size.
//!
//! Before its MMIO writes it turns the other functions' decoding off, so they reach only the
//! device it means (never, say, an MSI-X table another BAR was moved over); it only reads BARs
//! it moved (a write could land in the memory the other peers share).
//! Then it puts everything back and checks the VMM still serves it: its peer id, the shared
//! memory (a marker written before), guest RAM under the BARs it covered, and a doorbell to
//! itself arriving as an MSI-X interrupt.
//!
//! Arguments: `seed=` (1) `rounds=` (200) `unknown_from=` (1000) `until_stop=` (0; 1: go on
//! after `rounds` until a host peer writes [`STOP_FLAG`] (a little-endian u64) 128 bytes before
//! the end of the shared memory; the test does, once the other peers are done).
//! Prints `abuse: start (...)` once set up and `abuse: done` at the end.
//! Exit status: 0 ok; 50 no ivshmem device; 51 guest RAM under a BAR changed; 52 peer id changed
//! or BAR0 unreachable; 53 shared memory lost its contents; 54 own doorbell not delivered.
#![no_std]
#![no_main]

use guest::ivshmem::{self, reg, Ivshmem};
use guest::layout::{
    IOAPIC_ADDR, PCI_ECAM_ADDR, PCI_ECAM_SIZE, PCI_MMIO32_ADDR, PCI_MMIO32_END, PCI_MMIO64_ADDR,
    PCI_MMIO64_SIZE, TESTDEV_ADDR, TESTDEV_SIZE,
};
use guest::mmio::{read16, read32, read64, read8, write16, write32, write64, write8};
use guest::pci::{self, BarAllocator, BarInfo, BarKind, Bdf, Msix, CAP_ID_MSIX};
use guest::println;

/// What a host peer writes at the end of the shared memory (`until_stop=1`) to end the abuse.
const STOP_FLAG: u64 = 0x5354_4F50_4142_5553;

/// xorshift64*: small, seedable, good enough to pick operations.
struct Rng(u64);

impl Rng {
    fn new(seed: u64) -> Rng {
        Rng(seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1)
    }
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }
    fn below(&mut self, n: u64) -> u64 {
        self.next() % n.max(1)
    }
    fn chance(&mut self, percent: u64) -> bool {
        self.below(100) < percent
    }
}

/// Guest RAM that BARs may cover: the upper half of free RAM (nothing of the program lives
/// there), filled with a pattern checked at the end.
#[derive(Clone, Copy)]
struct Victim {
    start: u64,
    end: u64,
}

fn pattern(addr: u64) -> u64 {
    addr.wrapping_mul(0x2545_F491_4F6C_DD1D) ^ 0xA5A5
}

impl Victim {
    fn new() -> Victim {
        let (start, end) = guest::rt::free_ram();
        let mid = (start + (end - start) / 2 + 0xF_FFFF) & !0xF_FFFF;
        Victim { start: mid, end }
    }
    fn fill(&self) {
        let mut a = self.start;
        while a < self.end {
            // SAFETY: free RAM, identity-mapped, used by nothing else.
            unsafe { write64(a, pattern(a)) };
            a += 4096;
        }
    }
    fn intact(&self) -> bool {
        let mut a = self.start;
        while a < self.end {
            // SAFETY: as fill.
            if unsafe { read64(a) } != pattern(a) {
                println!("abuse: RAM at {a:#x} changed");
                return false;
            }
            a += 4096;
        }
        true
    }
}

/// True when a BAR at `[addr, addr + size)` would hide something the program itself needs
/// (its RAM, the config space, its console and exit device, the APICs).
fn harmful(addr: u64, size: u64, victim: Victim) -> bool {
    let end = addr.saturating_add(size.max(1));
    let overlaps = |start: u64, len: u64| addr < start + len && start < end;
    overlaps(0, victim.start)
        || overlaps(victim.end, PCI_ECAM_ADDR - victim.end)
        || overlaps(PCI_ECAM_ADDR, PCI_ECAM_SIZE)
        || overlaps(TESTDEV_ADDR, TESTDEV_SIZE)
        || overlaps(IOAPIC_ADDR, 0xFF00_0000 - IOAPIC_ADDR)
}

/// True when the program may touch `[addr, addr + size)` (identity-mapped, not harmful).
fn accessible(addr: u64, size: u64, victim: Victim) -> bool {
    let Some(end) = addr.checked_add(size) else {
        return false;
    };
    let inside = |start: u64, stop: u64| addr >= start && end <= stop;
    !harmful(addr, size, victim)
        && (inside(victim.start, victim.end)
            || inside(PCI_ECAM_ADDR, 1 << 32)
            || inside(PCI_MMIO64_ADDR, PCI_MMIO64_ADDR + PCI_MMIO64_SIZE))
}

struct Counts {
    config_writes: u64,
    bar_moves: u64,
    sized_live: u64,
    doorbells: u64,
    msix_garbage: u64,
    bar0_sweeps: u64,
}

struct Abuser {
    rng: Rng,
    victim: Victim,
    functions: [Option<Bdf>; 32],
    /// Every memory BAR of every function, sized once at the start.
    bars: [[Option<BarInfo>; 6]; 32],
    /// Where each BAR was last programmed (for "over each other").
    placed: [[u64; 6]; 32],
    allocator: BarAllocator,
    unknown_from: u16,
    own_id: u16,
    counts: Counts,
}

impl Abuser {
    fn function(&mut self) -> (usize, Bdf) {
        loop {
            let slot = self.rng.below(32) as usize;
            if let Some(bdf) = self.functions[slot] {
                return (slot, bdf);
            }
        }
    }

    fn some_bar(&mut self) -> Option<(usize, Bdf, BarInfo)> {
        for _ in 0..64 {
            let (slot, bdf) = self.function();
            let index = self.rng.below(6) as usize;
            if let Some(bar) = self.bars[slot][index] {
                return Some((slot, bdf, bar));
            }
        }
        None
    }

    /// A hostile address for `bar`, never a harmful one once truncated to what the BAR holds.
    fn hostile_address(&mut self, bar: &BarInfo) -> u64 {
        let size = bar.size.max(16);
        let align = |a: u64| a & !(size - 1);
        let wide = matches!(bar.kind, BarKind::Memory64 { .. });
        loop {
            let candidate = match self.rng.below(10) {
                0 => u64::MAX,                      // top of the 64-bit space: end wraps to 2^64
                1 => 1 << 63,                       // beyond any physical address size
                2 => (1 << 52) - size,              // the last bytes of a 52-bit space
                3 => 0xFFFF_FFFF_u64 & !(size - 1), // top of 4 GiB
                4 => self.victim.start + self.rng.below(self.victim.end - self.victim.start),
                5 => {
                    // over another BAR, wherever it is
                    let slot = self.rng.below(32) as usize;
                    self.placed[slot][self.rng.below(6) as usize]
                }
                6 => PCI_MMIO32_ADDR + self.rng.below(PCI_MMIO32_END - PCI_MMIO32_ADDR),
                7 => PCI_MMIO64_ADDR + self.rng.below(PCI_MMIO64_SIZE),
                8 => self.rng.next(), // anything, unaligned
                _ => 0,
            };
            let held = if wide {
                align(candidate)
            } else {
                align(candidate & 0xFFFF_FFFF)
            };
            if !harmful(held, size, self.victim) {
                return held;
            }
        }
    }

    fn place(&mut self, slot: usize, bdf: Bdf, bar: &BarInfo, address: u64) {
        self.program_bar(bdf, bar, address);
        self.placed[slot][bar.index as usize] = pci::bar_address(bdf, bar);
        self.counts.bar_moves += 1;
    }

    /// Writes a BAR's address. A 64-bit BAR is written one dword at a time and, with decoding
    /// on, sits for a moment at a mix of its old and new halves: the dword order is chosen so
    /// that this intermediate address is not harmful to the program (decoding goes off for the
    /// move when neither order is safe).
    fn program_bar(&self, bdf: Bdf, bar: &BarInfo, address: u64) {
        let offset = 0x10 + 4 * bar.index as u16;
        if !matches!(bar.kind, BarKind::Memory64 { .. }) {
            bdf.write32(offset, address as u32);
            return;
        }
        let old = pci::bar_address(bdf, bar);
        let mask = !(bar.size.max(16) - 1);
        let high_first = (address & !0xFFFF_FFFF | old & 0xFFFF_FFFF) & mask;
        let low_first = (old & !0xFFFF_FFFF | address & 0xFFFF_FFFF) & mask;
        let decoding = bdf.command() & pci::COMMAND_MEMORY != 0;
        let safe = |a: u64| !decoding || !harmful(a, bar.size, self.victim);
        let (high, low) = ((address >> 32) as u32, address as u32);
        if safe(high_first) {
            bdf.write32(offset + 4, high);
            bdf.write32(offset, low);
        } else if safe(low_first) {
            bdf.write32(offset, low);
            bdf.write32(offset + 4, high);
        } else {
            bdf.enable_memory(false);
            bdf.write32(offset + 4, high);
            bdf.write32(offset, low);
            bdf.enable_memory(true);
        }
    }

    /// Moves a BAR somewhere hostile, decoding on or off, and pokes it if reachable.
    fn move_bar(&mut self) {
        let Some((slot, bdf, bar)) = self.some_bar() else {
            return;
        };
        let on = self.rng.chance(70);
        bdf.enable_memory(on);
        let address = self.hostile_address(&bar);
        self.place(slot, bdf, &bar, address);
        let at = self.placed[slot][bar.index as usize];
        if on && accessible(at, 8, self.victim) {
            // Reads only: a write could land in the shared memory the other peers use.
            // SAFETY: identity-mapped and harmless to the program (checked above).
            let _ = unsafe { read64(at) };
        }
    }

    /// Sizes a BAR (all-ones, read back, restore) while decoding is on.
    fn size_live(&mut self) {
        let Some((slot, bdf, bar)) = self.some_bar() else {
            return;
        };
        bdf.enable_memory(true);
        let offset = 0x10 + 4 * bar.index as u16;
        let high = matches!(bar.kind, BarKind::Memory64 { .. }) && self.rng.chance(50);
        let offset = if high { offset + 4 } else { offset };
        let old = bdf.read32(offset);
        bdf.write32(offset, 0xFFFF_FFFF);
        let _ = bdf.read32(offset);
        bdf.write32(offset, old);
        self.placed[slot][bar.index as usize] = pci::bar_address(bdf, &bar);
        self.counts.sized_live += 1;
    }

    /// One random config access (1, 2, 4 or 8 bytes, sometimes unaligned, sometimes to a slot
    /// or function that does not exist); a write touching a BAR register becomes a hostile
    /// move instead of raw random bits.
    fn config_write(&mut self) {
        let (slot, function) = if self.rng.chance(80) {
            (self.function().0, 0)
        } else {
            (self.rng.below(32) as usize, self.rng.below(8) as u8)
        };
        let size = 1u64 << self.rng.below(4);
        let mut offset = self.rng.below(0x1000 - size + 1);
        if self.rng.chance(90) {
            offset &= !(size - 1);
        }
        let touches = |start: u64, end: u64| offset < end && start < offset + size;
        if function == 0 && (touches(0x10, 0x28) || touches(0x30, 0x34)) {
            if let (Some(bdf), Some(bar)) = (
                self.functions[slot],
                self.bars[slot][((offset.clamp(0x10, 0x27) - 0x10) / 4) as usize],
            ) {
                let address = self.hostile_address(&bar);
                self.place(slot, bdf, &bar, address);
            }
            return;
        }
        let at = PCI_ECAM_ADDR + ((slot as u64) << 15) + ((function as u64) << 12) + offset;
        let value = self.rng.next();
        // SAFETY: inside the ECAM window (bus 0), identity-mapped; no BAR register is written.
        unsafe {
            match size {
                1 => write8(at, value as u8),
                2 => write16(at, value as u16),
                4 => write32(at, value as u32),
                _ => write64(at, value),
            }
            let _ = read64(at & !7);
        }
        self.counts.config_writes += 1;
    }

    /// Puts every BAR of `bdf` at a fresh address in the PCI windows with decoding on.
    fn reassign(&mut self, slot: usize, bdf: Bdf) {
        bdf.enable_memory(false);
        for bar in self.bars[slot].into_iter().flatten() {
            // A long run uses the windows up: start over (old BARs may get company, which is
            // the kind of thing this program does anyway).
            let address = match self.allocator.allocate(bar.kind, bar.size) {
                Some(address) => address,
                None => {
                    self.allocator = BarAllocator::new();
                    self.allocator
                        .allocate(bar.kind, bar.size)
                        .unwrap_or(PCI_MMIO32_ADDR)
                }
            };
            pci::set_bar_address(bdf, &bar, address);
            self.placed[slot][bar.index as usize] = address;
        }
        bdf.enable_memory(true);
    }

    fn doorbell_value(&mut self) -> u32 {
        let peer = if self.rng.chance(30) {
            self.own_id
        } else {
            let span = 0x1_0000 - self.unknown_from as u64;
            self.unknown_from + self.rng.below(span) as u16
        };
        ivshmem::doorbell_value(peer, self.rng.next() as u32 & 0xFFFF)
    }

    /// Gives `bdf` fresh BAR addresses and turns every other function's decoding off, so the
    /// writes that follow reach only `bdf` (not an MSI-X table another BAR was moved over).
    fn isolate(&mut self, slot: usize, bdf: Bdf) {
        for other in self.functions.into_iter().flatten() {
            if other != bdf {
                other.enable_memory(false);
            }
        }
        self.reassign(slot, bdf);
    }

    /// An ivshmem device's BAR0, isolated (if any device), for sweeps and doorbells.
    fn ivshmem_regs(&mut self) -> Option<u64> {
        let index = self.rng.below(ivshmem::count() as u64) as usize;
        let bdf = ivshmem::find_nth(index)?;
        let slot = bdf.device as usize;
        self.isolate(slot, bdf);
        Some(self.placed[slot][0])
    }

    fn flood_doorbells(&mut self) {
        let Some(regs) = self.ivshmem_regs() else {
            return;
        };
        for _ in 0..64 {
            let value = self.doorbell_value();
            // SAFETY: BAR0 of an ivshmem device, just assigned in a PCI window.
            unsafe { write32(regs + reg::DOORBELL, value) };
            self.counts.doorbells += 1;
        }
    }

    /// Every offset of BAR0 with every access size.
    fn sweep_bar0(&mut self) {
        let Some(regs) = self.ivshmem_regs() else {
            return;
        };
        for offset in 0..ivshmem::BAR0_SIZE {
            for size in [1u64, 2, 4, 8] {
                let at = regs + offset;
                let value = self.rng.next();
                let touches_doorbell = offset < reg::DOORBELL + 4 && offset + size > reg::DOORBELL;
                // SAFETY: BAR0's page in a PCI window, identity-mapped.
                unsafe {
                    match size {
                        1 => {
                            let _ = read8(at);
                        }
                        2 => {
                            let _ = read16(at);
                        }
                        4 => {
                            let _ = read32(at);
                        }
                        _ => {
                            let _ = read64(at);
                        }
                    }
                    if touches_doorbell {
                        // Only whole, harmless doorbells: never a real peer.
                        let doorbell = self.doorbell_value();
                        write32(regs + reg::DOORBELL, doorbell);
                        self.counts.doorbells += 1;
                    } else {
                        match size {
                            1 => write8(at, value as u8),
                            2 => write16(at, value as u16),
                            4 => write32(at, value as u32),
                            _ => write64(at, value),
                        }
                    }
                }
            }
        }
        self.counts.bar0_sweeps += 1;
    }

    /// True once a host peer wrote [`STOP_FLAG`] at `offset` of the first ivshmem device's
    /// shared memory (read through fresh BARs: the abuse may have moved them anywhere).
    fn stop_requested(&mut self, offset: u64) -> bool {
        let Some(bdf) = ivshmem::find_nth(0) else {
            return true;
        };
        let slot = bdf.device as usize;
        self.isolate(slot, bdf);
        let shm = self.placed[slot][2];
        // SAFETY: BAR2 just assigned in the 64-bit window; `offset` is inside it.
        unsafe { read64(shm + offset) == STOP_FLAG }
    }

    /// Garbage in a function's MSI-X table and PBA (vectors kept harmless, see the docs).
    fn msix_garbage(&mut self) {
        let (slot, bdf) = self.function();
        if bdf.find_capability(CAP_ID_MSIX).is_none() {
            return;
        }
        self.isolate(slot, bdf);
        let Some(msix) = Msix::find(bdf) else {
            return;
        };
        if self.rng.chance(50) {
            msix.enable(self.rng.chance(50));
            msix.function_mask(self.rng.chance(50));
        }
        let entries = msix.vectors as u64;
        for _ in 0..16 {
            let entry = msix.table + 16 * self.rng.below(entries + 4);
            let data =
                (self.rng.next() as u32 & 0xFFFF_0000) | (0x30 + self.rng.below(0xC0)) as u32;
            let control = self.rng.next() as u32;
            let at = msix.pba + 8 * self.rng.below(entries.div_ceil(64) + 2);
            // SAFETY: the table and PBA lie in BAR pages just assigned in a PCI window; an entry
            // index past the table stays inside the BAR's page.
            unsafe {
                write64(entry, self.rng.next());
                write32(entry + 8, data);
                write32(entry + 12, control);
                write64(at, self.rng.next());
                let _ = read64(at);
            }
            self.counts.msix_garbage += 1;
        }
    }
}

fn main() -> i32 {
    let seed = guest::args::u64_or("seed", 1);
    let rounds = guest::args::u64_or("rounds", 200);
    let unknown_from = guest::args::u64_or("unknown_from", 1000).clamp(1, 0xFFFF) as u16;
    let until_stop = guest::args::u64_or("until_stop", 0) != 0;

    let mut allocator = BarAllocator::new();
    let Some(dev) = Ivshmem::open(0, &mut allocator) else {
        println!("abuse: no ivshmem device");
        return 50;
    };
    let own_id = dev.id();
    let marker = 0x1DEA_5EED_0000_0000 | own_id as u64;
    let marker_at = dev.shm_size - 64;
    let stop_at = dev.shm_size - 128;
    dev.write_u64(marker_at, marker);

    let victim = Victim::new();
    victim.fill();
    let mut functions = [None; 32];
    let mut bars = [[None; 6]; 32];
    let mut placed = [[0u64; 6]; 32];
    for bdf in pci::devices() {
        let slot = bdf.device as usize;
        functions[slot] = Some(bdf);
        bars[slot] = pci::bars(bdf);
        for bar in bars[slot].into_iter().flatten() {
            placed[slot][bar.index as usize] = pci::bar_address(bdf, &bar);
        }
    }
    let mut abuser = Abuser {
        rng: Rng::new(seed),
        victim,
        functions,
        bars,
        placed,
        allocator,
        unknown_from,
        own_id,
        counts: Counts {
            config_writes: 0,
            bar_moves: 0,
            sized_live: 0,
            doorbells: 0,
            msix_garbage: 0,
            bar0_sweeps: 0,
        },
    };
    println!(
        "abuse: start (peer {own_id}, seed {seed}, {rounds} rounds, RAM under BARs {:#x}..{:#x})",
        victim.start, victim.end
    );

    let mut round = 0u64;
    loop {
        if round >= rounds
            && (!until_stop || round.is_multiple_of(64) && abuser.stop_requested(stop_at))
        {
            break;
        }
        round += 1;
        match abuser.rng.below(100) {
            0..=39 => {
                for _ in 0..16 {
                    abuser.config_write();
                }
            }
            40..=64 => abuser.move_bar(),
            65..=74 => abuser.size_live(),
            75..=84 => abuser.flood_doorbells(),
            85..=94 => abuser.msix_garbage(),
            _ => abuser.sweep_bar0(),
        }
    }
    let c = &abuser.counts;
    println!(
        "abuse: {round} rounds: {} config writes, {} BAR moves, {} BARs sized live, {} doorbells, {} MSI-X garbage writes, {} BAR0 sweeps",
        c.config_writes, c.bar_moves, c.sized_live, c.doorbells, c.msix_garbage, c.bar0_sweeps
    );

    // Put every function back in order, then check the VMM still serves us.
    for slot in 0..32 {
        if let Some(bdf) = abuser.functions[slot] {
            if let Some(msix) = Msix::find(bdf) {
                msix.enable(false);
            }
            bdf.enable_memory(false);
        }
    }
    if !victim.intact() {
        return 51;
    }
    let mut allocator = abuser.allocator;
    let Some(dev) = Ivshmem::open(0, &mut allocator) else {
        return 52;
    };
    if let Some(msix) = dev.msix {
        msix.function_mask(false);
    }
    dev.write_reg(reg::INTR_MASK, 0);
    if dev.id() != own_id {
        println!("abuse: peer id reads {} (was {own_id})", dev.id());
        return 52;
    }
    if dev.read_u64(marker_at) != marker {
        println!("abuse: shared memory lost the marker");
        return 53;
    }
    if dev.is_doorbell() && dev.vectors > 0 {
        let seen = dev.received(0);
        dev.ring(own_id, 0);
        if dev.wait(0, seen, 2_000_000_000).is_none() {
            println!("abuse: own doorbell not delivered");
            return 54;
        }
    }
    println!("abuse: done");
    0
}

guest::entry!(main);
