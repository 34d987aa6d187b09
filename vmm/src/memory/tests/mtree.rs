//! `info mtree` / `info flatview` text.

use super::*;

fn sample() -> (AddressSpace, MemoryRegion) {
    let system = MemoryRegion::container("system", u64::MAX);
    let memory = ram("ram", 0x800_0000);
    let (mmio, _) = io_region("ivshmem-mmio", 0x100, IoAccess::sizes(4, 4));
    let hole = MemoryRegion::container("hole", 0x1000);
    let shm = ram("shm", 0x40_0000);
    let bar = MemoryRegion::alias("shm-bar", &shm, 0, 0x40_0000);
    let cover = MemoryRegion::reservation("cover", 0x1000);
    system.add_subregion(0, &memory, 0);
    system.add_subregion(0xc000_0000, &mmio, 1);
    system.add_subregion(0xd000_0000, &hole, 0);
    system.add_subregion(0xe000_0000, &bar, 1);
    system.add_subregion(0x0, &cover, 2);
    hole.set_enabled(false);
    (AddressSpace::new("memory", system, SpaceKind::Memory), shm)
}

#[test]
fn info_mtree_looks_like_qemu() {
    let (space, _) = sample();
    let expected = "\
address-space: memory
  0000000000000000-ffffffffffffffff (prio 0, i/o): system
    0000000000000000-0000000000000fff (prio 2, i/o): cover
    0000000000000000-0000000007ffffff (prio 0, ram): ram
    00000000c0000000-00000000c00000ff (prio 1, i/o): ivshmem-mmio
    00000000d0000000-00000000d0000fff (prio 0, i/o): hole [disabled]
    00000000e0000000-00000000e03fffff (prio 1, ram): alias shm-bar @shm 0000000000000000-00000000003fffff

memory-region: shm
  0000000000000000-00000000003fffff (prio 0, ram): shm

";
    assert_eq!(space.info_mtree(), expected);
}

#[test]
fn info_flatview_looks_like_qemu() {
    let (space, shm) = sample();
    shm.set_ram_device(true);
    space.commit();
    let expected = "\
FlatView #0
 AS \"memory\", root: system
 Root memory region: system
  0000000000000000-0000000000000fff (prio 2, i/o): cover
  0000000000001000-0000000007ffffff (prio 0, ram): ram @0000000000001000
  00000000c0000000-00000000c00000ff (prio 1, i/o): ivshmem-mmio
  00000000e0000000-00000000e03fffff (prio 0, ramd): shm

";
    assert_eq!(space.info_flatview(), expected);
}

#[test]
fn empty_flatview_says_so() {
    let space = AddressSpace::new("io", MemoryRegion::container("io", 0x10000), SpaceKind::Io);
    assert!(space.info_flatview().contains("  No rendered FlatView\n"));
}
