//! Flat-view rendering: QEMU's lookup rules.

use super::*;

#[test]
fn higher_priority_wins_regardless_of_order() {
    let root = MemoryRegion::container("root", 0x10000);
    let high = ram("high", 0x2000);
    let low = ram("low", 0x2000);
    root.add_subregion(0x1000, &high, 2);
    root.add_subregion(0x0, &low, 1);
    assert_eq!(
        render(&root),
        vec![r(0, 0x1000, "low", 0), r(0x1000, 0x2000, "high", 0)]
    );
}

#[test]
fn later_added_wins_among_equal_priorities() {
    let root = MemoryRegion::container("root", 0x10000);
    let first = ram("first", 0x2000);
    let second = ram("second", 0x2000);
    root.add_subregion(0x0, &first, 0);
    root.add_subregion(0x1000, &second, 0);
    assert_eq!(
        render(&root),
        vec![r(0, 0x1000, "first", 0), r(0x1000, 0x2000, "second", 0)]
    );

    // Reverse the order of addition: now `first` wins the overlap.
    let root = MemoryRegion::container("root", 0x10000);
    let first = ram("first", 0x2000);
    let second = ram("second", 0x2000);
    root.add_subregion(0x1000, &second, 0);
    root.add_subregion(0x0, &first, 0);
    assert_eq!(
        render(&root),
        vec![
            r(0, 0x2000, "first", 0),
            r(0x2000, 0x1000, "second", 0x1000)
        ]
    );
}

#[test]
fn moving_a_region_makes_it_the_latest_added() {
    let root = MemoryRegion::container("root", 0x10000);
    let a = ram("a", 0x2000);
    let b = ram("b", 0x2000);
    root.add_subregion(0x0, &a, 0);
    root.add_subregion(0x1000, &b, 0);
    a.set_address(0x800);
    assert_eq!(
        render(&root),
        vec![r(0x800, 0x2000, "a", 0), r(0x2800, 0x800, "b", 0x1800)]
    );
}

#[test]
fn terminal_region_shows_through_holes_of_its_subregions() {
    let root = MemoryRegion::container("root", 0x10000);
    let background = ram("background", 0x4000);
    let (io, _) = io_region("io", 0x1000, IoAccess::default());
    background.add_subregion(0x1000, &io, 0);
    root.add_subregion(0x8000, &background, 0);
    assert_eq!(
        render(&root),
        vec![
            r(0x8000, 0x1000, "background", 0),
            r(0x9000, 0x1000, "io", 0),
            r(0xa000, 0x2000, "background", 0x2000),
        ]
    );
}

#[test]
fn io_region_with_subregions_shows_through_holes() {
    let (background, _) = io_region("bg-io", 0x3000, IoAccess::default());
    let child = ram("child", 0x1000);
    background.add_subregion(0x1000, &child, 0);
    assert_eq!(
        render(&background),
        vec![
            r(0, 0x1000, "bg-io", 0),
            r(0x1000, 0x1000, "child", 0),
            r(0x2000, 0x1000, "bg-io", 0x2000),
        ]
    );
}

#[test]
fn pure_container_leaves_holes_unassigned() {
    let root = MemoryRegion::container("root", 0x10000);
    let a = ram("a", 0x1000);
    let b = ram("b", 0x1000);
    root.add_subregion(0x1000, &a, 0);
    root.add_subregion(0x4000, &b, 0);
    assert_eq!(
        render(&root),
        vec![r(0x1000, 0x1000, "a", 0), r(0x4000, 0x1000, "b", 0)]
    );
}

#[test]
fn alias_renders_its_target_window_with_offset() {
    let root = MemoryRegion::container("root", 0x100000);
    let target = ram("target", 0x10000);
    let window = MemoryRegion::alias("window", &target, 0x2000, 0x1000);
    root.add_subregion(0x8000, &window, 0);
    assert_eq!(render(&root), vec![r(0x8000, 0x1000, "target", 0x2000)]);
}

#[test]
fn nested_aliases_add_their_offsets() {
    let root = MemoryRegion::container("root", 0x100000);
    let target = ram("target", 0x10000);
    let outer = MemoryRegion::alias("outer", &target, 0x4000, 0x8000);
    let inner = MemoryRegion::alias("inner", &outer, 0x1000, 0x2000);
    root.add_subregion(0x20000, &inner, 0);
    assert_eq!(render(&root), vec![r(0x20000, 0x2000, "target", 0x5000)]);

    // An alias window reaching past its target's end is clipped to the target.
    let clipped = MemoryRegion::alias("clipped", &target, 0xf000, 0x4000);
    root.add_subregion(0x40000, &clipped, 0);
    assert_eq!(
        render(&root),
        vec![
            r(0x20000, 0x2000, "target", 0x5000),
            r(0x40000, 0x1000, "target", 0xf000),
        ]
    );
}

#[test]
fn alias_of_a_container_shows_its_subtree_shifted_and_clipped() {
    let root = MemoryRegion::container("root", 0x100000);
    let bus = MemoryRegion::container("bus", 0x10000);
    let dev_a = ram("dev-a", 0x1000);
    let (dev_b, _) = io_region("dev-b", 0x1000, IoAccess::default());
    bus.add_subregion(0x1000, &dev_a, 0);
    bus.add_subregion(0x3000, &dev_b, 0);
    // Window [0x1800, 0x3800) of the bus at 0x50000.
    let hole = MemoryRegion::alias("bus-hole", &bus, 0x1800, 0x2000);
    root.add_subregion(0x50000, &hole, 0);
    assert_eq!(
        render(&root),
        vec![
            r(0x50000, 0x800, "dev-a", 0x800),
            r(0x51800, 0x800, "dev-b", 0)
        ]
    );
}

#[test]
fn alias_offset_change_moves_the_window() {
    let root = MemoryRegion::container("root", 0x100000);
    let target = ram("target", 0x10000);
    let window = MemoryRegion::alias("window", &target, 0, 0x1000);
    root.add_subregion(0x8000, &window, 0);
    let space = AddressSpace::new("memory", root.clone(), SpaceKind::Memory);
    window.set_alias_offset(0x3000);
    assert_eq!(
        ranges(&space),
        vec![r(0x8000, 0x1000, "target", 0)],
        "not before commit"
    );
    space.commit();
    assert_eq!(ranges(&space), vec![r(0x8000, 0x1000, "target", 0x3000)]);
}

#[test]
fn disabled_regions_vanish_with_their_subtree() {
    let root = MemoryRegion::container("root", 0x10000);
    let background = ram("background", 0x4000);
    let top = ram("top", 0x1000);
    root.add_subregion(0, &background, 0);
    root.add_subregion(0x1000, &top, 1);
    top.set_enabled(false);
    assert_eq!(render(&root), vec![r(0, 0x4000, "background", 0)]);

    let sub = MemoryRegion::container("sub", 0x2000);
    let leaf = ram("leaf", 0x1000);
    sub.add_subregion(0, &leaf, 0);
    root.add_subregion(0x8000, &sub, 0);
    sub.set_enabled(false);
    assert_eq!(render(&root), vec![r(0, 0x4000, "background", 0)]);
    sub.set_enabled(true);
    assert_eq!(
        render(&root),
        vec![r(0, 0x4000, "background", 0), r(0x8000, 0x1000, "leaf", 0)]
    );
}

#[test]
fn zero_size_regions_are_ignored() {
    let root = MemoryRegion::container("root", 0x10000);
    let background = ram("background", 0x2000);
    let (empty, _) = io_region("empty", 0, IoAccess::default());
    root.add_subregion(0, &background, 0);
    root.add_subregion(0x1000, &empty, 5);
    assert_eq!(render(&root), vec![r(0, 0x2000, "background", 0)]);
}

#[test]
fn zero_size_ram_is_an_error() {
    assert!(MemoryRegion::ram("nothing", 0).is_err());
}

#[test]
fn subregions_are_clipped_to_every_ancestor() {
    let root = MemoryRegion::container("root", 0x10000);
    let parent = MemoryRegion::container("parent", 0x2000);
    let child = MemoryRegion::container("child", 0x4000);
    let leaf = ram("leaf", 0x3000);
    root.add_subregion(0x4000, &parent, 0);
    parent.add_subregion(0x1000, &child, 0);
    child.add_subregion(0, &leaf, 0);
    // leaf would cover [0x5000, 0x8000) but parent ends at 0x6000.
    assert_eq!(render(&root), vec![r(0x5000, 0x1000, "leaf", 0)]);

    // Root clips too.
    let big = ram("big", 0x4000);
    root.add_subregion(0xe000, &big, 0);
    assert_eq!(
        render(&root),
        vec![r(0x5000, 0x1000, "leaf", 0), r(0xe000, 0x2000, "big", 0)]
    );
}

#[test]
fn overlapping_containers_fall_through_to_lower_priority() {
    let root = MemoryRegion::container("root", 0x10000);
    let high = MemoryRegion::container("high", 0x8000);
    let low = MemoryRegion::container("low", 0x8000);
    let high_leaf = ram("high-leaf", 0x1000);
    let low_leaf_a = ram("low-a", 0x2000);
    let low_leaf_b = ram("low-b", 0x1000);
    high.add_subregion(0x1000, &high_leaf, 0);
    low.add_subregion(0x0, &low_leaf_a, 0);
    low.add_subregion(0x4000, &low_leaf_b, 0);
    root.add_subregion(0, &low, 0);
    root.add_subregion(0, &high, 1);
    // The high container's leaf wins where it is; its holes show the low container's leaves.
    assert_eq!(
        render(&root),
        vec![
            r(0, 0x1000, "low-a", 0),
            r(0x1000, 0x1000, "high-leaf", 0),
            r(0x4000, 0x1000, "low-b", 0),
        ]
    );
}

#[test]
fn reservation_hides_what_is_below() {
    let root = MemoryRegion::container("root", 0x10000);
    let background = ram("background", 0x4000);
    let reserved = MemoryRegion::reservation("reserved", 0x1000);
    root.add_subregion(0, &background, 0);
    root.add_subregion(0x2000, &reserved, 1);
    assert_eq!(
        render(&root),
        vec![
            r(0, 0x2000, "background", 0),
            r(0x2000, 0x1000, "reserved", 0),
            r(0x3000, 0x1000, "background", 0x3000),
        ]
    );
}

#[test]
fn adjacent_pieces_of_the_same_leaf_merge() {
    let root = MemoryRegion::container("root", 0x100000);
    let target = ram("target", 0x10000);
    let a = MemoryRegion::alias("a", &target, 0x1000, 0x1000);
    let b = MemoryRegion::alias("b", &target, 0x2000, 0x1000);
    root.add_subregion(0x10000, &a, 0);
    root.add_subregion(0x11000, &b, 0);
    assert_eq!(render(&root), vec![r(0x10000, 0x2000, "target", 0x1000)]);
}

#[test]
fn whole_space_root_reaches_the_top_of_memory() {
    let root = MemoryRegion::container("system", u64::MAX);
    assert_eq!(root.size(), u64::MAX);
    let top = ram("top", 0x1000);
    root.add_subregion(u64::MAX - 0xfff, &top, 0);
    assert_eq!(render(&root), vec![r(u64::MAX - 0xfff, 0x1000, "top", 0)]);
}

#[test]
fn tree_changes_take_effect_at_commit() {
    let root = MemoryRegion::container("root", 0x10000);
    let space = AddressSpace::new("memory", root.clone(), SpaceKind::Memory);
    let a = ram("a", 0x1000);
    root.add_subregion(0, &a, 0);
    assert!(ranges(&space).is_empty());
    space.commit();
    assert_eq!(ranges(&space), vec![r(0, 0x1000, "a", 0)]);
    let before = space.flat_view();
    root.del_subregion(&a);
    space.commit();
    assert!(ranges(&space).is_empty());
    assert_eq!(before.ranges().len(), 1, "an old snapshot stays as it was");
}

#[test]
fn region_with_a_parent_cannot_be_added_twice() {
    let one = MemoryRegion::container("one", 0x10000);
    let two = MemoryRegion::container("two", 0x10000);
    let leaf = ram("leaf", 0x1000);
    one.add_subregion(0, &leaf, 0);
    two.add_subregion(0x1000, &leaf, 0);
    assert_eq!(render(&two), vec![]);
    assert_eq!(render(&one), vec![r(0, 0x1000, "leaf", 0)]);
    one.del_subregion(&leaf);
    two.add_subregion(0x1000, &leaf, 0);
    assert_eq!(render(&two), vec![r(0x1000, 0x1000, "leaf", 0)]);
}

#[test]
fn alias_cycle_does_not_overflow_the_stack() {
    let root = MemoryRegion::container("root", 0x10000);
    let alias = MemoryRegion::alias("self-alias", &root, 0, 0x1000);
    root.add_subregion(0, &alias, 0);
    assert_eq!(render(&root), vec![]);
}
