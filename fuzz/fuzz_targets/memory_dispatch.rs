//! The memory model: random region trees (RAM, I/O, containers, aliases, reservations, with
//! priorities, moves, resizes, disabling) rendered into flat views, and guest accesses
//! dispatched through them.
//!
//! Input: operations, an opcode byte each (mod 14), then operands (little-endian). Regions are
//! numbered in creation order; a region may only be placed into a region created after it
//! (or the root) and an alias may only target an earlier region, so the tree has no cycles:
//! 0 `size` new RAM; 1 `size valid:u8 impl:u8` new I/O region (valid and implemented access
//! sizes); 2 `size` new container; 3 `size` new reservation; 4 `target:u8 offset size` new
//! alias; 5 `parent:u8 child:u8 addr priority:i8` add a subregion (parent 255 = root);
//! 6 `child:u8` remove it from its parent; 7 `region:u8 addr` move; 8 `region:u8 on:u8`
//! enable/disable; 9 `region:u8 size` resize; 10 `region:u8 offset` alias offset; 11 commit;
//! 12 `addr len:u8` read; 13 `addr len:u8 value:u64` write.
//! A `size` or `addr` is a selector byte and then a u64 (selector bit 0) or a u16 scaled by 16.
//!
//! Checked against a reference model that resolves one address at a time by walking the tree
//! with QEMU's rules: no panic; flat ranges sorted, non-overlapping and non-empty; each address
//! served by the leaf (and offset) the model finds; reads of unassigned space and reservations
//! give all-ones; RAM bytes read and written through dispatch are the RAM's bytes.
#![no_main]

use std::sync::Arc;

use fuzz_support::Input;
use libfuzzer_sys::fuzz_target;
use vmm::memory::{AccessSizes, AddressSpace, IoAccess, MemoryRegion, RegionOps, SpaceKind};

const MAX_REGIONS: usize = 40;
const MAX_OPS: usize = 256;
/// RAM regions are really mapped: keep them small.
const MAX_RAM: u64 = 0x4000;

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Kind {
    Ram,
    Io,
    Container,
    Reservation,
    Alias,
}

struct Node {
    region: MemoryRegion,
    kind: Kind,
}

/// Ops of an I/O region: pure (no side effects), so reads can be repeated.
struct Pattern(u8);

impl RegionOps for Pattern {
    fn read(&self, offset: u64, size: u32) -> u64 {
        assert!(
            matches!(size, 1 | 2 | 4 | 8),
            "ops get sizes 1, 2, 4 or 8, not {size}"
        );
        offset
            .wrapping_mul(0x0101_0101)
            .wrapping_add(u64::from(self.0))
    }
    fn write(&self, _offset: u64, size: u32, _value: u64) {
        assert!(
            matches!(size, 1 | 2 | 4 | 8),
            "ops get sizes 1, 2, 4 or 8, not {size}"
        );
    }
}

fn number(input: &mut Input) -> u64 {
    if input.u8() & 1 != 0 {
        input.u64()
    } else {
        u64::from(input.u16()) * 16
    }
}

fn access_sizes(byte: u8) -> AccessSizes {
    let sizes = [1, 2, 4, 8];
    let min = sizes[usize::from(byte & 3)];
    let max = sizes[usize::from(byte >> 2 & 3)].max(min);
    AccessSizes {
        min,
        max,
        unaligned: byte & 0x10 != 0,
    }
}

fn size_u128(region: &MemoryRegion) -> u128 {
    match region.size() {
        u64::MAX => 1 << 64,
        size => u128::from(size),
    }
}

/// The leaf and offset serving `offset` in `region`, walking the tree (QEMU's rules).
fn resolve(nodes: &[Node], region: &MemoryRegion, offset: u128) -> Option<(MemoryRegion, u128)> {
    if !region.is_enabled() || offset >= size_u128(region) {
        return None;
    }
    if let Some(target) = region.alias_target() {
        return resolve(nodes, &target, offset + u128::from(region.alias_offset()));
    }
    for child in region.subregions() {
        let start = u128::from(child.address());
        if offset >= start {
            if let Some(found) = resolve(nodes, &child, offset - start) {
                return Some(found);
            }
        }
    }
    let is_container = nodes
        .iter()
        .find(|n| n.region == *region)
        .is_none_or(|n| n.kind == Kind::Container);
    (!is_container).then(|| (region.clone(), offset))
}

fn kind_of(nodes: &[Node], region: &MemoryRegion) -> Kind {
    nodes
        .iter()
        .find(|n| n.region == *region)
        .map_or(Kind::Container, |n| n.kind)
}

/// The flat view is well formed and agrees with the model at `addr`.
fn check_address(space: &AddressSpace, nodes: &[Node], root: &MemoryRegion, addr: u64) {
    if addr == u64::MAX {
        return; // a range reaching 2^64 cannot include its last byte in u64 terms
    }
    let expected = resolve(nodes, root, u128::from(addr));
    let got = space.lookup(addr).map(|r| {
        (
            r.region.clone(),
            u128::from(r.offset_in_region) + u128::from(addr - r.addr),
        )
    });
    match (&expected, &got) {
        (None, None) => {}
        (Some((want, want_off)), Some((have, have_off))) => {
            assert_eq!(want, have, "leaf serving {addr:#x}");
            assert_eq!(want_off, have_off, "offset in {want:?} at {addr:#x}");
        }
        _ => panic!("at {addr:#x}: model says {expected:?}, view says {got:?}"),
    }
}

fn check_view(space: &AddressSpace, nodes: &[Node], root: &MemoryRegion, extra: &[u64]) {
    let view = space.flat_view();
    let mut previous_end = 0u128;
    let mut samples: Vec<u64> = extra.to_vec();
    for (i, range) in view.ranges().iter().enumerate() {
        assert!(range.size > 0, "empty range");
        assert!(
            i == 0 || u128::from(range.addr) >= previous_end,
            "ranges overlap or unsorted"
        );
        previous_end = range.end();
        assert_ne!(kind_of(nodes, &range.region), Kind::Container);
        assert_ne!(kind_of(nodes, &range.region), Kind::Alias);
        samples.extend([range.addr, range.addr.wrapping_sub(1)]);
        let last = u64::try_from(range.end() - 1).unwrap_or(u64::MAX);
        samples.extend([last, last.wrapping_add(1)]);
    }
    samples.truncate(64);
    for addr in samples {
        check_address(space, nodes, root, addr);
    }
}

/// What the model expects for each byte of an access: Some(RAM host pointer), or None for
/// bytes that must read all-ones (unassigned, reservation); I/O bytes are not predicted.
enum Byte {
    Ram(*mut u8),
    AllOnes,
    Io,
}

fn predict(nodes: &[Node], root: &MemoryRegion, addr: u64, len: usize) -> Vec<Byte> {
    (0..len as u64)
        .map(|i| {
            let Some(a) = addr.checked_add(i) else {
                return Byte::AllOnes;
            };
            match resolve(nodes, root, u128::from(a)) {
                None => Byte::AllOnes,
                Some((leaf, offset)) => match kind_of(nodes, &leaf) {
                    Kind::Reservation => Byte::AllOnes,
                    Kind::Io => Byte::Io,
                    _ => {
                        let base = leaf.host_addr().expect("RAM leaf has a mapping");
                        Byte::Ram(base.wrapping_add(offset as usize))
                    }
                },
            }
        })
        .collect()
}

fuzz_target!(|data: &[u8]| {
    let mut input = Input::new(data);
    let root = MemoryRegion::container("root", u64::MAX);
    let space = AddressSpace::new("memory", root.clone(), SpaceKind::Memory);
    let mut nodes: Vec<Node> = Vec::new();
    let mut committed = true;

    for _ in 0..MAX_OPS {
        if input.is_empty() {
            break;
        }
        let op = input.u8() % 14;
        let pick = |input: &mut Input, nodes: &[Node]| -> Option<usize> {
            let i = usize::from(input.u8());
            (!nodes.is_empty()).then(|| i % nodes.len())
        };
        let name = format!("r{}", nodes.len());
        match op {
            0..=4 if nodes.len() >= MAX_REGIONS => {}
            0 => {
                let size = number(&mut input) % MAX_RAM + 1;
                let region = MemoryRegion::ram(&name, size).expect("small RAM");
                region.set_ram_device(size.is_multiple_of(2));
                nodes.push(Node {
                    region,
                    kind: Kind::Ram,
                });
            }
            1 => {
                let size = number(&mut input).max(1);
                let valid = access_sizes(input.u8());
                let implemented = access_sizes(input.u8());
                let ops = Arc::new(Pattern(nodes.len() as u8));
                let region = MemoryRegion::io(&name, size, ops, IoAccess { valid, implemented });
                nodes.push(Node {
                    region,
                    kind: Kind::Io,
                });
            }
            2 => {
                let region = MemoryRegion::container(&name, number(&mut input));
                nodes.push(Node {
                    region,
                    kind: Kind::Container,
                });
            }
            3 => {
                let region = MemoryRegion::reservation(&name, number(&mut input));
                nodes.push(Node {
                    region,
                    kind: Kind::Reservation,
                });
            }
            4 => {
                let target = pick(&mut input, &nodes);
                let offset = number(&mut input);
                let size = number(&mut input);
                if let Some(target) = target {
                    let region = MemoryRegion::alias(&name, &nodes[target].region, offset, size);
                    nodes.push(Node {
                        region,
                        kind: Kind::Alias,
                    });
                }
            }
            5 => {
                let parent = input.u8();
                let child = pick(&mut input, &nodes);
                let addr = number(&mut input);
                let priority = i32::from(input.u8() as i8);
                let Some(child) = child else { continue };
                let parent = if parent == 255 {
                    Some(root.clone())
                } else {
                    let p = usize::from(parent) % nodes.len();
                    (p > child).then(|| nodes[p].region.clone())
                };
                if let Some(parent) = parent {
                    parent.add_subregion(addr, &nodes[child].region, priority);
                }
            }
            6 => {
                if let Some(child) = pick(&mut input, &nodes) {
                    root.del_subregion(&nodes[child].region);
                    for node in &nodes[child + 1..] {
                        node.region.del_subregion(&nodes[child].region);
                    }
                }
            }
            7 => {
                let region = pick(&mut input, &nodes);
                let addr = number(&mut input);
                if let Some(region) = region {
                    nodes[region].region.set_address(addr);
                }
            }
            8 => {
                let region = pick(&mut input, &nodes);
                let on = input.bool();
                if let Some(region) = region {
                    nodes[region].region.set_enabled(on);
                }
            }
            9 => {
                let region = pick(&mut input, &nodes);
                let size = number(&mut input);
                if let Some(region) = region {
                    nodes[region].region.set_size(size);
                }
            }
            10 => {
                let region = pick(&mut input, &nodes);
                let offset = number(&mut input);
                if let Some(region) = region {
                    nodes[region].region.set_alias_offset(offset);
                }
            }
            11 => {
                space.commit();
                committed = true;
                check_view(&space, &nodes, &root, &[]);
            }
            12 | 13 => {
                let addr = number(&mut input);
                let len = usize::from(input.u8() % 16) + 1;
                let value = if op == 13 { input.u64() } else { 0 };
                if !committed {
                    // Accesses use the last committed view; the model follows the tree now.
                    space.commit();
                    committed = true;
                }
                check_view(&space, &nodes, &root, &[addr]);
                let bytes = predict(&nodes, &root, addr, len);
                if op == 12 {
                    let mut data = vec![0u8; len];
                    space.read(addr, &mut data);
                    for (i, byte) in bytes.iter().enumerate() {
                        match byte {
                            // SAFETY: the model found this byte inside a live RAM mapping.
                            Byte::Ram(ptr) => assert_eq!(data[i], unsafe { ptr.read_volatile() }),
                            Byte::AllOnes => assert_eq!(data[i], 0xff, "byte {i} at {addr:#x}"),
                            Byte::Io => {}
                        }
                    }
                } else {
                    let data: Vec<u8> = (0..len).map(|i| (value >> (8 * (i % 8))) as u8).collect();
                    space.write(addr, &data);
                    // Later bytes win where two bytes of the access alias one RAM byte.
                    for (i, byte) in bytes.iter().enumerate() {
                        if let Byte::Ram(ptr) = byte {
                            let last = bytes
                                .iter()
                                .rposition(|b| matches!(b, Byte::Ram(p) if p == ptr))
                                .expect("present");
                            // SAFETY: the model found this byte inside a live RAM mapping.
                            assert_eq!(unsafe { ptr.read_volatile() }, data[last], "byte {i}");
                        }
                    }
                }
            }
            _ => unreachable!(),
        }
        if op != 11 && op != 12 && op != 13 {
            committed = false;
        }
    }
});
