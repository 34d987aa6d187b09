//! Guest access dispatch over a `FlatView` (KVM_EXIT_MMIO / KVM_EXIT_IO).
//!
//! An access is cut at range boundaries; each piece goes to its leaf:
//! - RAM (including ram_device RAM): copied to/from the host mapping, with one sized volatile
//!   access when the piece is 1/2/4/8 bytes and naturally aligned (so a peer sees the word whole);
//! - I/O: cut like QEMU's `memory_access_size` into power-of-two pieces no larger than
//!   `valid.max` (and, unless `implemented.unaligned`, no larger than the address alignment);
//!   a piece outside `valid` (smaller than `valid.min`, or misaligned when `valid.unaligned` is
//!   false) is rejected (reads all-ones, writes ignored, logged rate-limited);
//!   a valid piece is then split or widened to the `implemented` sizes: aligned chunks of the
//!   implemented size covering the piece (unaligned chunks if `implemented.unaligned`), reads
//!   extracting the piece's bytes, writes shifting the piece's bytes into place with the other
//!   bytes zero (QEMU's widening, not read-modify-write);
//! - reservations and unassigned addresses read all-ones and ignore writes.
//!
//! Little-endian throughout. Nothing here allocates or takes a lock, so ops may commit a new view
//! (a BAR move) while this runs on the old snapshot.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::OnceLock;
use std::time::Instant;

use super::flat_view::{FlatRange, FlatView};
use super::region::{AccessSizes, IoAccess, RegionKind, RegionOps};

pub(crate) fn read(view: &FlatView, space: &str, addr: u64, data: &mut [u8]) {
    let covered = for_each_piece(view, addr, data.len(), |range, addr, part| match range {
        Some(range) => read_range(range, space, addr, &mut data[part]),
        None => {
            unassigned(space, "read", addr, part.len());
            data[part].fill(0xff);
        }
    });
    // Past the top of the address space.
    data[covered..].fill(0xff);
}

pub(crate) fn write(view: &FlatView, space: &str, addr: u64, data: &[u8]) {
    for_each_piece(view, addr, data.len(), |range, addr, part| match range {
        Some(range) => write_range(range, space, addr, &data[part]),
        None => unassigned(space, "write", addr, part.len()),
    });
}

/// Cuts the access `[addr, addr + len)` at range boundaries and hands each piece, in order, to
/// `piece`: the range serving it (`None` for unassigned space), its guest address and its part
/// of the access buffer. Stops at the top of the address space; returns the bytes covered.
fn for_each_piece(
    view: &FlatView,
    mut addr: u64,
    len: usize,
    mut piece: impl FnMut(Option<&FlatRange>, u64, std::ops::Range<usize>),
) -> usize {
    let mut done = 0;
    while done < len {
        let remaining = len - done;
        let (range, n) = match view.find(addr) {
            Ok(index) => {
                let range = &view.ranges()[index];
                (Some(range), piece_len(range, addr, remaining))
            }
            Err(index) => (None, gap_len(view, index, addr, remaining)),
        };
        piece(range, addr, done..done + n);
        done += n;
        match addr.checked_add(n as u64) {
            Some(next) => addr = next,
            None => break,
        }
    }
    done
}

fn piece_len(range: &FlatRange, addr: u64, remaining: usize) -> usize {
    let available = range.end() - u128::from(addr);
    usize::try_from(available.min(remaining as u128)).unwrap_or(remaining)
}

fn gap_len(view: &FlatView, next_index: usize, addr: u64, remaining: usize) -> usize {
    match view.ranges().get(next_index) {
        Some(next) => {
            usize::try_from((next.addr - addr).min(remaining as u64)).unwrap_or(remaining)
        }
        None => remaining,
    }
}

fn read_range(range: &FlatRange, space: &str, addr: u64, buf: &mut [u8]) {
    let offset = range.offset_in_region + (addr - range.addr);
    match range.region.kind() {
        RegionKind::Ram(mapping) => {
            match ram_ptr(mapping.as_ptr(), mapping_len(range), offset, buf.len()) {
                // SAFETY: `ram_ptr` checked that [offset, offset + len) lies inside the mapping,
                // which lives as long as `range.region`.
                Some(ptr) => unsafe { copy_from_host(ptr, buf) },
                None => buf.fill(0xff),
            }
        }
        RegionKind::Io { ops, access } => io_read(ops.as_ref(), access, range, space, offset, buf),
        RegionKind::Reservation | RegionKind::Container | RegionKind::Alias(_) => buf.fill(0xff),
    }
}

fn write_range(range: &FlatRange, space: &str, addr: u64, buf: &[u8]) {
    let offset = range.offset_in_region + (addr - range.addr);
    match range.region.kind() {
        RegionKind::Ram(mapping) => {
            if let Some(ptr) = ram_ptr(mapping.as_ptr(), mapping_len(range), offset, buf.len()) {
                // SAFETY: `ram_ptr` checked that [offset, offset + len) lies inside the mapping,
                // which lives as long as `range.region`.
                unsafe { copy_to_host(ptr, buf) }
            }
        }
        RegionKind::Io { ops, access } => io_write(ops.as_ref(), access, range, space, offset, buf),
        RegionKind::Reservation | RegionKind::Container | RegionKind::Alias(_) => {}
    }
}

fn mapping_len(range: &FlatRange) -> usize {
    match range.region.kind() {
        RegionKind::Ram(mapping) => mapping.size(),
        _ => 0,
    }
}

fn ram_ptr(base: *mut u8, mapping_len: usize, offset: u64, len: usize) -> Option<*mut u8> {
    let offset = usize::try_from(offset).ok()?;
    if offset.checked_add(len)? > mapping_len {
        return None;
    }
    Some(base.wrapping_add(offset))
}

/// # Safety
/// `src..src + dst.len()` must be readable host memory.
unsafe fn copy_from_host(src: *const u8, dst: &mut [u8]) {
    let aligned = |n: usize| (src as usize).is_multiple_of(n);
    // SAFETY: (all arms) the caller guarantees `src` covers `dst.len()` bytes; the sized arms
    // check alignment first.
    unsafe {
        match dst.len() {
            1 => dst[0] = std::ptr::read_volatile(src),
            2 if aligned(2) => {
                dst.copy_from_slice(&std::ptr::read_volatile(src.cast::<u16>()).to_ne_bytes())
            }
            4 if aligned(4) => {
                dst.copy_from_slice(&std::ptr::read_volatile(src.cast::<u32>()).to_ne_bytes())
            }
            8 if aligned(8) => {
                dst.copy_from_slice(&std::ptr::read_volatile(src.cast::<u64>()).to_ne_bytes())
            }
            n => std::ptr::copy_nonoverlapping(src, dst.as_mut_ptr(), n),
        }
    }
}

/// # Safety
/// `dst..dst + src.len()` must be writable host memory.
unsafe fn copy_to_host(dst: *mut u8, src: &[u8]) {
    let aligned = |n: usize| (dst as usize).is_multiple_of(n);
    // SAFETY: (all arms) the caller guarantees `dst` covers `src.len()` bytes; the sized arms
    // check alignment first and the slice lengths match the widths.
    unsafe {
        match src.len() {
            1 => std::ptr::write_volatile(dst, src[0]),
            2 if aligned(2) => {
                std::ptr::write_volatile(dst.cast::<u16>(), u16::from_ne_bytes([src[0], src[1]]))
            }
            4 if aligned(4) => std::ptr::write_volatile(
                dst.cast::<u32>(),
                u32::from_ne_bytes([src[0], src[1], src[2], src[3]]),
            ),
            8 if aligned(8) => std::ptr::write_volatile(
                dst.cast::<u64>(),
                u64::from_ne_bytes([
                    src[0], src[1], src[2], src[3], src[4], src[5], src[6], src[7],
                ]),
            ),
            n => std::ptr::copy_nonoverlapping(src.as_ptr(), dst, n),
        }
    }
}

/// Sizes clamped to powers of two in 1..=8 with min <= max, so odd declarations cannot loop.
fn sanitize(sizes: &AccessSizes) -> (u64, u64) {
    let clamp = |s: u32| u64::from(s.clamp(1, 8)).next_power_of_two().min(8);
    let min = clamp(sizes.min);
    let max = clamp(sizes.max).max(min);
    (min, max)
}

/// QEMU's `memory_access_size`: the largest power of two that fits what is left, `valid.max`,
/// and (unless the ops implement unaligned accesses) the alignment of `offset`. Like QEMU, a
/// guest access wider than `valid.max` is therefore split rather than rejected.
fn guest_piece_size(access: &IoAccess, offset: u64, remaining: usize) -> u64 {
    let (_, mut max) = sanitize(&access.valid);
    if !access.implemented.unaligned && offset != 0 {
        max = max.min(1 << offset.trailing_zeros().min(3));
    }
    let len = (remaining as u64).min(max);
    1 << (63 - len.leading_zeros())
}

fn is_valid(valid: &AccessSizes, offset: u64, size: u64) -> bool {
    let (min, max) = sanitize(valid);
    // The offset bound keeps the chunk arithmetic below from overflowing at the top of a
    // 2^64-byte region.
    size >= min
        && size <= max
        && (valid.unaligned || offset.is_multiple_of(size))
        && offset <= u64::MAX - 16
}

fn io_read(
    ops: &dyn RegionOps,
    access: &IoAccess,
    range: &FlatRange,
    space: &str,
    offset: u64,
    buf: &mut [u8],
) {
    let mut pos = 0;
    while pos < buf.len() {
        let at = offset + pos as u64;
        let size = guest_piece_size(access, at, buf.len() - pos);
        let piece = &mut buf[pos..pos + size as usize];
        if is_valid(&access.valid, at, size) {
            let value = adjusted_read(ops, &access.implemented, at, size);
            piece.copy_from_slice(&value.to_le_bytes()[..size as usize]);
        } else {
            piece.fill(0xff);
            invalid(space, range, "read", at, size);
        }
        pos += size as usize;
    }
}

fn io_write(
    ops: &dyn RegionOps,
    access: &IoAccess,
    range: &FlatRange,
    space: &str,
    offset: u64,
    buf: &[u8],
) {
    let mut pos = 0;
    while pos < buf.len() {
        let at = offset + pos as u64;
        let size = guest_piece_size(access, at, buf.len() - pos);
        let piece = &buf[pos..pos + size as usize];
        if is_valid(&access.valid, at, size) {
            let mut bytes = [0u8; 8];
            bytes[..piece.len()].copy_from_slice(piece);
            adjusted_write(
                ops,
                &access.implemented,
                at,
                size,
                u64::from_le_bytes(bytes),
            );
        } else {
            invalid(space, range, "write", at, size);
        }
        pos += size as usize;
    }
}

fn mask(bytes: u64) -> u64 {
    if bytes >= 8 {
        u64::MAX
    } else {
        (1u64 << (bytes * 8)) - 1
    }
}

/// The implemented-size chunks covering `[offset, offset + size)`: (chunk size, first chunk).
fn chunking(implemented: &AccessSizes, offset: u64, size: u64) -> (u64, u64) {
    let (min, max) = sanitize(implemented);
    let chunk = size.clamp(min, max);
    let first = if implemented.unaligned {
        offset
    } else {
        offset & !(chunk - 1)
    };
    (chunk, first)
}

/// Reads `size` bytes at `offset` through the implemented sizes.
fn adjusted_read(ops: &dyn RegionOps, implemented: &AccessSizes, offset: u64, size: u64) -> u64 {
    let (chunk, first) = chunking(implemented, offset, size);
    let end = offset + size;
    let mut value = 0;
    let mut at = first;
    while at < end {
        let lo = at.max(offset);
        let hi = (at + chunk).min(end);
        let raw = ops.read(at, chunk as u32) & mask(chunk);
        value |= ((raw >> ((lo - at) * 8)) & mask(hi - lo)) << ((lo - offset) * 8);
        at += chunk;
    }
    value
}

/// Writes `size` bytes at `offset` through the implemented sizes; widened chunks carry zeros in
/// the bytes outside the access.
fn adjusted_write(
    ops: &dyn RegionOps,
    implemented: &AccessSizes,
    offset: u64,
    size: u64,
    value: u64,
) {
    let (chunk, first) = chunking(implemented, offset, size);
    let end = offset + size;
    let mut at = first;
    while at < end {
        let lo = at.max(offset);
        let hi = (at + chunk).min(end);
        let part = ((value >> ((lo - offset) * 8)) & mask(hi - lo)) << ((lo - at) * 8);
        ops.write(at, chunk as u32, part);
        at += chunk;
    }
}

/// At most `PER_SECOND` messages per second across all address spaces, so a guest hammering a
/// bad address cannot flood the log.
struct RateLimit {
    second: AtomicU64,
    count: AtomicU64,
}

const PER_SECOND: u64 = 10;

static LOG_LIMIT: RateLimit = RateLimit {
    second: AtomicU64::new(0),
    count: AtomicU64::new(0),
};

fn log_allowed() -> bool {
    static START: OnceLock<Instant> = OnceLock::new();
    let now = START.get_or_init(Instant::now).elapsed().as_secs() + 1;
    if LOG_LIMIT.second.swap(now, Ordering::Relaxed) != now {
        LOG_LIMIT.count.store(0, Ordering::Relaxed);
    }
    LOG_LIMIT.count.fetch_add(1, Ordering::Relaxed) < PER_SECOND
}

fn unassigned(space: &str, what: &str, addr: u64, len: usize) {
    if log_allowed() {
        log::debug!("{space}: unassigned {what} of {len} bytes at {addr:#x}");
    }
}

fn invalid(space: &str, range: &FlatRange, what: &str, offset: u64, size: u64) {
    if log_allowed() {
        log::warn!(
            "{space}: invalid {size}-byte {what} at offset {offset:#x} of {} (ignored)",
            range.region.name_str()
        );
    }
}
