//! QEMU-style `info mtree` (the region tree) and `info mtree -f` (the flat view) text.
//!
//! Lines look like QEMU's: `  00000000c0000000-00000000c00000ff (prio 1, i/o): ivshmem-mmio`,
//! two spaces of indent per level, children sorted by address (then priority, highest first),
//! aliases shown as `alias NAME @TARGET START-END`, with every alias target printed afterwards
//! as its own `memory-region:` tree.

use std::fmt::Write;

use super::flat_view::FlatView;
use super::region::{MemoryRegion, RegionKind};

const INDENT: &str = "  ";

/// Last address of `size` bytes from `start` (QEMU's `MR_SIZE`), as printed: 64-bit wrapping.
fn last_address(start: u128, size: u128) -> u64 {
    (start + size.saturating_sub(1)) as u64
}

/// QEMU's `memory_region_type`.
fn region_type(region: &MemoryRegion) -> &'static str {
    region_type_at_depth(region, 0)
}

fn region_type_at_depth(region: &MemoryRegion, depth: u32) -> &'static str {
    match region.kind() {
        RegionKind::Alias(target) if depth < 64 => region_type_at_depth(target, depth + 1),
        RegionKind::Ram(_) if region.is_ram_device() => "ramd",
        RegionKind::Ram(_) => "ram",
        _ => "i/o",
    }
}

pub(crate) fn info_mtree(space_name: &str, root: &MemoryRegion) -> String {
    let mut out = String::new();
    let mut alias_targets: Vec<MemoryRegion> = Vec::new();
    let _ = writeln!(out, "address-space: {space_name}");
    print_region(&mut out, root, 1, 0, true, &mut alias_targets);
    out.push('\n');
    // Printing a target may queue further targets (aliases inside it).
    let mut next = 0;
    while next < alias_targets.len() {
        let target = alias_targets[next].clone();
        let _ = writeln!(out, "memory-region: {}", target.name_str());
        print_region(&mut out, &target, 1, 0, false, &mut alias_targets);
        out.push('\n');
        next += 1;
    }
    out
}

fn print_region(
    out: &mut String,
    region: &MemoryRegion,
    level: usize,
    base: u128,
    is_root: bool,
    alias_targets: &mut Vec<MemoryRegion>,
) {
    if level > 64 {
        let _ = writeln!(out, "{}[nesting too deep]", INDENT.repeat(level));
        return;
    }
    let (addr, priority, size, enabled, alias_offset, subregions) = {
        let state = region.lock();
        (
            if is_root { 0 } else { state.addr },
            if is_root { 0 } else { state.priority },
            state.size,
            state.enabled,
            state.alias_offset,
            state.subregions.clone(),
        )
    };
    let start = base + u128::from(addr);
    let disabled = if enabled { "" } else { " [disabled]" };
    let _ = write!(
        out,
        "{}{:016x}-{:016x} (prio {priority}, {}): ",
        INDENT.repeat(level),
        start as u64,
        last_address(start, size),
        region_type(region),
    );
    match region.kind() {
        RegionKind::Alias(target) => {
            if !alias_targets.contains(target) {
                alias_targets.push(target.clone());
            }
            let _ = writeln!(
                out,
                "alias {} @{} {:016x}-{:016x}{disabled}",
                region.name_str(),
                target.name_str(),
                alias_offset,
                last_address(u128::from(alias_offset), size),
            );
        }
        _ => {
            let _ = writeln!(out, "{}{disabled}", region.name_str());
        }
    }
    let mut children: Vec<(u64, i32, MemoryRegion)> = subregions
        .into_iter()
        .map(|child| {
            let state = child.lock();
            (state.addr, state.priority, child.clone())
        })
        .collect();
    // Stable: equal address and priority keep tree order (later-added first).
    children.sort_by(|a, b| a.0.cmp(&b.0).then(b.1.cmp(&a.1)));
    for (_, _, child) in &children {
        print_region(out, child, level + 1, start, false, alias_targets);
    }
}

pub(crate) fn info_flatview(space_name: &str, root: &MemoryRegion, view: &FlatView) -> String {
    let mut out = String::new();
    let _ = writeln!(out, "FlatView #0");
    let _ = writeln!(out, " AS \"{space_name}\", root: {}", root.name_str());
    let _ = writeln!(out, " Root memory region: {}", root.name_str());
    if view.ranges().is_empty() {
        let _ = writeln!(out, "{INDENT}No rendered FlatView");
    }
    for range in view.ranges() {
        let kind = if range.readonly {
            "rom"
        } else if range.ram_device {
            "ramd"
        } else {
            region_type(&range.region)
        };
        let _ = write!(
            out,
            "{INDENT}{:016x}-{:016x} (prio {}, {kind}): {}",
            range.addr,
            last_address(u128::from(range.addr), u128::from(range.size)),
            range.region.priority(),
            range.region.name_str(),
        );
        if range.offset_in_region != 0 {
            let _ = write!(out, " @{:016x}", range.offset_in_region);
        }
        out.push('\n');
    }
    out.push('\n');
    out
}
