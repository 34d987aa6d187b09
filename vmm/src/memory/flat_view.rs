//! Rendering a region tree into a `FlatView`: sorted, non-overlapping ranges, each naming the
//! leaf that serves it and the offset into that leaf, plus the ioeventfds visible through it.
//!
//! QEMU's lookup rules, applied by rendering a node's subregions before the node itself and
//! letting the first to claim an address keep it:
//! - subregions are visited highest priority first, and among equals the later-added first;
//! - a terminal region (RAM, I/O, reservation) shows its own content through the holes its
//!   subregions leave; a pure container leaves them unassigned;
//! - an alias renders its target's window `[alias_offset, alias_offset + size)` at its own place,
//!   recursively (aliases of aliases, nested containers);
//! - disabled regions vanish with their subtree, zero-size regions are ignored, and everything is
//!   clipped to its parent's (and ancestors') extent.
//!
//! Adjacent ranges continuing the same leaf contiguously are merged, so two views are equal when
//! they map the same bytes the same way.

use std::sync::Arc;

use vmm_sys_util::eventfd::EventFd;

use super::region::{MemoryRegion, RegionKind};

/// One piece of a flat view: guest addresses `[addr, addr + size)` are served by `region` (a
/// leaf: RAM, I/O or reservation) starting at `offset_in_region`.
#[derive(Clone, Debug)]
pub struct FlatRange {
    /// First guest address.
    pub addr: u64,
    /// Length in bytes.
    pub size: u64,
    /// The leaf (never a container or alias).
    pub region: MemoryRegion,
    /// Where `addr` falls inside the region (aliases and clipping shift it).
    pub offset_in_region: u64,
    /// Guest writes are dropped (ROM, or a read-only alias).
    pub readonly: bool,
    /// A RAM leaf served through dispatch (never given a KVM slot).
    pub ram_device: bool,
}

impl FlatRange {
    /// One past the last address (may be 2^64).
    pub fn end(&self) -> u128 {
        u128::from(self.addr) + u128::from(self.size)
    }

    /// True when `addr` is in the range.
    pub fn contains(&self, addr: u64) -> bool {
        addr >= self.addr && u128::from(addr) < self.end()
    }

    /// Whether guest accesses to this range are served from host RAM.
    pub fn is_ram(&self) -> bool {
        self.region.is_ram()
    }

    /// Same mapping of the same bytes (QEMU's `flatrange_equal`, plus ram_device).
    pub fn same_mapping(&self, other: &FlatRange) -> bool {
        self.addr == other.addr
            && self.size == other.size
            && self.region == other.region
            && self.offset_in_region == other.offset_in_region
            && self.readonly == other.readonly
            && self.ram_device == other.ram_device
    }
}

/// An ioeventfd as placed in an address space: a guest write of `len` bytes (0 = any length) at
/// `addr`, with value `datamatch` (None = any value), signals `fd`.
#[derive(Clone)]
pub struct IoEventFdRange {
    /// Guest address of the write.
    pub addr: u64,
    /// Write length that matches, 0 for any.
    pub len: u32,
    /// The value that matches, None for any.
    pub datamatch: Option<u64>,
    /// What is signalled.
    pub fd: Arc<EventFd>,
}

impl std::fmt::Debug for IoEventFdRange {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("IoEventFdRange")
            .field("addr", &format_args!("{:#x}", self.addr))
            .field("len", &self.len)
            .field("datamatch", &self.datamatch)
            .field("fd", &Arc::as_ptr(&self.fd))
            .finish()
    }
}

impl IoEventFdRange {
    /// True when both are the same registration (same eventfd, not merely an equal one).
    pub fn same(&self, other: &IoEventFdRange) -> bool {
        self.addr == other.addr
            && self.len == other.len
            && self.datamatch == other.datamatch
            && Arc::ptr_eq(&self.fd, &other.fd)
    }

    fn sort_key(&self) -> (u64, u32, Option<u64>, usize) {
        (
            self.addr,
            self.len,
            self.datamatch,
            Arc::as_ptr(&self.fd) as usize,
        )
    }
}

/// The rendered, immutable picture of an address space.
#[derive(Default)]
pub struct FlatView {
    ranges: Vec<FlatRange>,
    ioeventfds: Vec<IoEventFdRange>,
}

impl FlatView {
    /// Sorted by address, non-overlapping.
    pub fn ranges(&self) -> &[FlatRange] {
        &self.ranges
    }

    /// Sorted by address.
    pub fn ioeventfds(&self) -> &[IoEventFdRange] {
        &self.ioeventfds
    }

    /// Index of the range containing `addr`, or `Err(index of the first range above addr)`.
    pub(crate) fn find(&self, addr: u64) -> Result<usize, usize> {
        let index = self.ranges.partition_point(|r| r.end() <= u128::from(addr));
        match self.ranges.get(index) {
            Some(range) if range.addr <= addr => Ok(index),
            _ => Err(index),
        }
    }

    /// The range containing `addr`.
    pub fn lookup(&self, addr: u64) -> Option<&FlatRange> {
        self.find(addr).ok().map(|i| &self.ranges[i])
    }

    /// Renders the tree under `root` (placed at address 0).
    pub fn render(root: &MemoryRegion) -> FlatView {
        let mut builder = Builder { ranges: Vec::new() };
        builder.render(root, 0, 0, 1u128 << 64, 0);
        let ranges = merge_adjacent(builder.ranges);
        let ioeventfds = collect_ioeventfds(&ranges);
        FlatView { ranges, ioeventfds }
    }
}

/// Aliases can form cycles by mistake; stop descending well before the stack runs out.
const MAX_RENDER_DEPTH: u32 = 64;

/// Ranges under construction, as half-open u128 intervals so a region reaching 2^64 fits.
struct Builder {
    ranges: Vec<PendingRange>,
}

struct PendingRange {
    start: u128,
    end: u128,
    region: MemoryRegion,
    /// Offset in `region` of `start`.
    offset: u128,
    ram_device: bool,
}

impl Builder {
    /// `base` is the address where offset 0 of `region` lands; `[clip_start, clip_end)` is what
    /// the ancestors allow.
    fn render(
        &mut self,
        region: &MemoryRegion,
        base: i128,
        clip_start: u128,
        clip_end: u128,
        depth: u32,
    ) {
        if depth > MAX_RENDER_DEPTH {
            log::error!(
                "memory: region nesting deeper than {MAX_RENDER_DEPTH} at {} (alias cycle?)",
                region.name_str()
            );
            return;
        }
        let (size, enabled, alias_offset, ram_device, subregions) = {
            let state = region.lock();
            (
                state.size,
                state.enabled,
                state.alias_offset,
                state.ram_device,
                state.subregions.clone(),
            )
        };
        if !enabled || size == 0 {
            return;
        }
        // Visible part of this region, in addresses.
        let start = base.max(clip_start as i128);
        let end = (base + size as i128).min(clip_end as i128);
        if start >= end {
            return;
        }
        let (start, end) = (start as u128, end as u128);

        if let RegionKind::Alias(target) = region.kind() {
            self.render(target, base - alias_offset as i128, start, end, depth + 1);
            return;
        }
        for child in &subregions {
            let child_addr = child.lock().addr;
            self.render(child, base + child_addr as i128, start, end, depth + 1);
        }
        if matches!(region.kind(), RegionKind::Container) {
            return;
        }
        self.fill_holes(region, base, start, end, ram_device);
    }

    /// Gives `region` every address of `[start, end)` not already claimed.
    fn fill_holes(
        &mut self,
        region: &MemoryRegion,
        base: i128,
        start: u128,
        end: u128,
        ram_device: bool,
    ) {
        let mut cursor = start;
        let mut index = self.ranges.partition_point(|r| r.end <= cursor);
        while cursor < end {
            let next_claimed = self.ranges.get(index).map(|r| r.start).unwrap_or(u128::MAX);
            if next_claimed > cursor {
                let hole_end = next_claimed.min(end);
                self.ranges.insert(
                    index,
                    PendingRange {
                        start: cursor,
                        end: hole_end,
                        region: region.clone(),
                        offset: (cursor as i128 - base) as u128,
                        ram_device,
                    },
                );
                index += 1;
                cursor = hole_end;
            } else {
                cursor = self.ranges[index].end.max(cursor);
                index += 1;
            }
        }
    }
}

/// Joins neighbours that continue the same leaf, then converts to public ranges. A range
/// reaching 2^64 loses its very last byte, which u64 addresses cannot express anyway.
fn merge_adjacent(pending: Vec<PendingRange>) -> Vec<FlatRange> {
    let mut merged: Vec<PendingRange> = Vec::with_capacity(pending.len());
    for range in pending {
        if let Some(last) = merged.last_mut() {
            if last.end == range.start
                && last.region == range.region
                && last.ram_device == range.ram_device
                && last.offset + (last.end - last.start) == range.offset
            {
                last.end = range.end;
                continue;
            }
        }
        merged.push(range);
    }
    merged
        .into_iter()
        .filter_map(|r| {
            let addr = u64::try_from(r.start).ok()?;
            let size = u64::try_from(r.end - r.start).unwrap_or(u64::MAX);
            let offset_in_region = u64::try_from(r.offset).ok()?;
            Some(FlatRange {
                addr,
                size,
                readonly: false,
                ram_device: r.ram_device && r.region.is_ram(),
                region: r.region,
                offset_in_region,
            })
        })
        .collect()
}

/// Every eventfd of an I/O leaf whose offset falls inside a range's window, at its address.
fn collect_ioeventfds(ranges: &[FlatRange]) -> Vec<IoEventFdRange> {
    let mut out = Vec::new();
    for range in ranges.iter().filter(|r| r.region.is_io()) {
        let window_end = u128::from(range.offset_in_region) + u128::from(range.size);
        for eventfd in range.region.lock().eventfds.iter() {
            let offset = eventfd.offset;
            if offset >= range.offset_in_region && u128::from(offset) < window_end {
                out.push(IoEventFdRange {
                    addr: range.addr + (offset - range.offset_in_region),
                    len: eventfd.len,
                    datamatch: eventfd.datamatch,
                    fd: eventfd.fd.clone(),
                });
            }
        }
    }
    out.sort_by_key(IoEventFdRange::sort_key);
    out
}

/// What changed between two views, in the order listeners must hear it.
pub(crate) struct ViewDiff<'a> {
    pub(crate) removed_ranges: Vec<&'a FlatRange>,
    pub(crate) removed_eventfds: Vec<&'a IoEventFdRange>,
    pub(crate) added_ranges: Vec<&'a FlatRange>,
    pub(crate) added_eventfds: Vec<&'a IoEventFdRange>,
}

impl<'a> ViewDiff<'a> {
    pub(crate) fn between(old: &'a FlatView, new: &'a FlatView) -> Self {
        let mut removed_ranges = Vec::new();
        let mut added_ranges = Vec::new();
        let (mut i, mut j) = (0, 0);
        while i < old.ranges.len() || j < new.ranges.len() {
            match (old.ranges.get(i), new.ranges.get(j)) {
                (Some(o), Some(n)) if o.same_mapping(n) => {
                    i += 1;
                    j += 1;
                }
                (Some(o), Some(n)) if o.addr <= n.addr => {
                    removed_ranges.push(o);
                    i += 1;
                }
                (Some(o), None) => {
                    removed_ranges.push(o);
                    i += 1;
                }
                (_, Some(n)) => {
                    added_ranges.push(n);
                    j += 1;
                }
                (None, None) => unreachable!("loop condition"),
            }
        }
        let removed_eventfds = old
            .ioeventfds
            .iter()
            .filter(|o| !new.ioeventfds.iter().any(|n| n.same(o)))
            .collect();
        let added_eventfds = new
            .ioeventfds
            .iter()
            .filter(|n| !old.ioeventfds.iter().any(|o| o.same(n)))
            .collect();
        ViewDiff {
            removed_ranges,
            removed_eventfds,
            added_ranges,
            added_eventfds,
        }
    }
}
