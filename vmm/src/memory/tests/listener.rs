//! What listeners hear on commit: slot transitions and ioeventfds.

use super::super::kvm_listener::slot_section;
use super::*;

#[test]
fn add_listener_replays_the_current_view() {
    let root = MemoryRegion::container("root", 0x100000);
    let a = ram("a", 0x1000);
    root.add_subregion(0x1000, &a, 0);
    let space = AddressSpace::new("memory", root.clone(), SpaceKind::Memory);
    let recorder = Recorder::default();
    space.add_listener(Box::new(recorder.clone()));
    assert_eq!(recorder.take(), vec![add(0x1000, 0x1000, "a", 0)]);
    space.commit();
    assert_eq!(recorder.take(), vec![], "nothing changed");
}

#[test]
fn add_and_remove() {
    let root = MemoryRegion::container("root", 0x100000);
    let (space, recorder) = space_with_recorder(&root);
    let a = ram("a", 0x2000);
    root.add_subregion(0x4000, &a, 0);
    space.commit();
    assert_eq!(recorder.take(), vec![add(0x4000, 0x2000, "a", 0)]);
    root.del_subregion(&a);
    space.commit();
    assert_eq!(recorder.take(), vec![del(0x4000, 0x2000, "a", 0)]);
}

#[test]
fn move_is_delete_then_add() {
    let root = MemoryRegion::container("root", 0x100000);
    let bar = ram("bar", 0x2000);
    root.add_subregion(0x4000, &bar, 1);
    let (space, recorder) = space_with_recorder(&root);
    bar.set_address(0x10000);
    space.commit();
    assert_eq!(
        recorder.take(),
        vec![
            del(0x4000, 0x2000, "bar", 0),
            add(0x10000, 0x2000, "bar", 0)
        ]
    );
}

#[test]
fn all_deletions_come_before_additions() {
    let root = MemoryRegion::container("root", 0x100000);
    let a = ram("a", 0x1000);
    let b = ram("b", 0x1000);
    root.add_subregion(0x1000, &a, 0);
    root.add_subregion(0x8000, &b, 0);
    let (space, recorder) = space_with_recorder(&root);
    // Swap places: a new range overlaps where the other one was.
    a.set_address(0x8000);
    b.set_address(0x1000);
    space.commit();
    let events = recorder.take();
    assert_eq!(events.len(), 4);
    assert!(matches!(events[0], Event::Del(..)) && matches!(events[1], Event::Del(..)));
    assert!(matches!(events[2], Event::Add(..)) && matches!(events[3], Event::Add(..)));
    assert!(events.contains(&add(0x8000, 0x1000, "a", 0)));
    assert!(events.contains(&add(0x1000, 0x1000, "b", 0)));
}

#[test]
fn resize_is_delete_then_add() {
    let root = MemoryRegion::container("root", 0x100000);
    let a = ram("a", 0x4000);
    root.add_subregion(0, &a, 0);
    let (space, recorder) = space_with_recorder(&root);
    a.set_size(0x2000);
    space.commit();
    assert_eq!(
        recorder.take(),
        vec![del(0, 0x4000, "a", 0), add(0, 0x2000, "a", 0)]
    );
    a.set_size(0x8000); // beyond the mapping: refused
    space.commit();
    assert_eq!(recorder.take(), vec![]);
}

#[test]
fn enable_and_disable() {
    let root = MemoryRegion::container("root", 0x100000);
    let background = ram("background", 0x4000);
    let bar = ram("bar", 0x1000);
    root.add_subregion(0, &background, 0);
    root.add_subregion(0x1000, &bar, 1);
    let (space, recorder) = space_with_recorder(&root);
    bar.set_enabled(false);
    space.commit();
    assert_eq!(
        recorder.take(),
        vec![
            del(0, 0x1000, "background", 0),
            del(0x1000, 0x1000, "bar", 0),
            del(0x2000, 0x2000, "background", 0x2000),
            add(0, 0x4000, "background", 0),
        ]
    );
    bar.set_enabled(true);
    space.commit();
    assert_eq!(
        recorder.take(),
        vec![
            del(0, 0x4000, "background", 0),
            add(0, 0x1000, "background", 0),
            add(0x1000, 0x1000, "bar", 0),
            add(0x2000, 0x2000, "background", 0x2000),
        ]
    );
}

#[test]
fn alias_window_change() {
    let root = MemoryRegion::container("root", 0x100000);
    let target = ram("target", 0x10000);
    let window = MemoryRegion::alias("window", &target, 0x1000, 0x2000);
    root.add_subregion(0x20000, &window, 0);
    let (space, recorder) = space_with_recorder(&root);
    window.set_alias_offset(0x4000);
    space.commit();
    assert_eq!(
        recorder.take(),
        vec![
            del(0x20000, 0x2000, "target", 0x1000),
            add(0x20000, 0x2000, "target", 0x4000)
        ]
    );
}

#[test]
fn unrelated_ranges_are_untouched() {
    let root = MemoryRegion::container("root", 0x100000);
    let a = ram("a", 0x1000);
    let b = ram("b", 0x1000);
    root.add_subregion(0, &a, 0);
    root.add_subregion(0x8000, &b, 0);
    let (space, recorder) = space_with_recorder(&root);
    b.set_address(0x9000);
    space.commit();
    assert_eq!(
        recorder.take(),
        vec![del(0x8000, 0x1000, "b", 0), add(0x9000, 0x1000, "b", 0)]
    );
}

#[test]
fn ram_device_toggle_changes_the_range_and_is_never_slotted() {
    let root = MemoryRegion::container("root", 0x100000);
    let shm = ram("shm", 0x2000);
    root.add_subregion(0x4000, &shm, 0);
    let (space, recorder) = space_with_recorder(&root);
    shm.set_ram_device(true);
    space.commit();
    assert_eq!(
        recorder.take(),
        vec![del(0x4000, 0x2000, "shm", 0), add(0x4000, 0x2000, "shm", 0)]
    );
    assert_eq!(
        recorder.ram_device_flags.lock().unwrap().last(),
        Some(&true)
    );
    let view = space.flat_view();
    assert!(view.ranges()[0].ram_device);
    assert_eq!(
        slot_section(&view.ranges()[0]),
        None,
        "ram_device is not slotted"
    );
    shm.set_ram_device(false);
    space.commit();
    let view = space.flat_view();
    let host = shm.host_addr().unwrap() as u64;
    assert_eq!(
        slot_section(&view.ranges()[0]),
        Some((0x4000, 0x2000, host))
    );
}

#[test]
fn only_page_aligned_parts_are_slotted() {
    let root = MemoryRegion::container("root", 0x100000);
    let background = ram("background", 0x4000);
    let (io, _) = io_region("io", 0x100, IoAccess::default());
    background.add_subregion(0x1800, &io, 0);
    root.add_subregion(0x10000, &background, 0);
    let space = AddressSpace::new("memory", root.clone(), SpaceKind::Memory);
    let view = space.flat_view();
    let host = background.host_addr().unwrap() as u64;
    let sections: Vec<_> = view.ranges().iter().map(slot_section).collect();
    assert_eq!(
        sections,
        vec![
            // [0x10000, 0x11800) → whole page [0x10000, 0x11000)
            Some((0x10000, 0x1000, host)),
            None, // the I/O leaf
            // [0x11900, 0x14000) → [0x12000, 0x14000)
            Some((0x12000, 0x2000, host + 0x2000)),
        ]
    );

    // A RAM piece smaller than a page gets no slot at all.
    let tiny = MemoryRegion::alias("tiny", &background, 0x100, 0x200);
    root.add_subregion(0x40000, &tiny, 0);
    space.commit();
    let view = space.flat_view();
    let range = view.lookup(0x40000).unwrap();
    assert_eq!(slot_section(range), None);

    // A RAM piece whose host address is not page-aligned where the guest address is.
    let skewed = MemoryRegion::alias("skewed", &background, 0x100, 0x2000);
    root.add_subregion(0x50000, &skewed, 0);
    space.commit();
    let view = space.flat_view();
    assert_eq!(slot_section(view.lookup(0x50000).unwrap()), None);
}

#[test]
fn eventfds_are_added_and_removed() {
    let root = MemoryRegion::container("root", 0x100000);
    let (doorbell, _) = io_region("doorbell", 0x100, IoAccess::sizes(4, 4));
    root.add_subregion(0xc000, &doorbell, 1);
    let (space, recorder) = space_with_recorder(&root);
    let fd = eventfd();
    doorbell.add_eventfd(0xc, 4, Some(3), fd.clone());
    assert_eq!(recorder.take(), vec![], "not before commit");
    space.commit();
    assert_eq!(recorder.take(), vec![Event::EvAdd(0xc00c, 4, Some(3))]);
    assert_eq!(space.ioeventfds().len(), 1);
    doorbell.del_eventfd(0xc, 4, Some(3), &fd);
    space.commit();
    assert_eq!(recorder.take(), vec![Event::EvDel(0xc00c, 4, Some(3))]);
    assert!(space.ioeventfds().is_empty());
}

#[test]
fn eventfds_follow_their_region() {
    let root = MemoryRegion::container("root", 0x100000);
    let (doorbell, _) = io_region("doorbell", 0x100, IoAccess::sizes(4, 4));
    root.add_subregion(0xc000, &doorbell, 1);
    let fd = eventfd();
    doorbell.add_eventfd(0xc, 4, Some(1), fd.clone());
    doorbell.add_eventfd(0x10, 0, None, fd.clone());
    let (space, recorder) = space_with_recorder(&root);

    doorbell.set_address(0xd000);
    space.commit();
    let events = recorder.take();
    assert_eq!(
        events,
        vec![
            del(0xc000, 0x100, "doorbell", 0),
            Event::EvDel(0xc00c, 4, Some(1)),
            Event::EvDel(0xc010, 0, None),
            add(0xd000, 0x100, "doorbell", 0),
            Event::EvAdd(0xd00c, 4, Some(1)),
            Event::EvAdd(0xd010, 0, None),
        ]
    );

    // Disabled: eventfds go; re-enabled: they come back.
    doorbell.set_enabled(false);
    space.commit();
    assert_eq!(
        recorder.take(),
        vec![
            del(0xd000, 0x100, "doorbell", 0),
            Event::EvDel(0xd00c, 4, Some(1)),
            Event::EvDel(0xd010, 0, None),
        ]
    );
    doorbell.set_enabled(true);
    space.commit();
    assert_eq!(recorder.take().len(), 3);

    // Partly hidden: only the eventfd still visible stays.
    let cover = MemoryRegion::reservation("cover", 0x10);
    root.add_subregion(0xd000, &cover, 2);
    space.commit();
    let events = recorder.take();
    assert!(!events.iter().any(|e| matches!(e, Event::EvDel(0xd010, ..))));
    assert!(events.contains(&Event::EvDel(0xd00c, 4, Some(1))));
}

#[test]
fn eventfds_appear_through_aliases() {
    let root = MemoryRegion::container("root", 0x100000);
    let (regs, _) = io_region("regs", 0x100, IoAccess::sizes(4, 4));
    let fd = eventfd();
    regs.add_eventfd(0x20, 4, Some(7), fd);
    let window = MemoryRegion::alias("regs-window", &regs, 0x10, 0x20);
    root.add_subregion(0x3000, &window, 0);
    let space = AddressSpace::new("memory", root.clone(), SpaceKind::Memory);
    let eventfds = space.ioeventfds();
    assert_eq!(eventfds.len(), 1);
    assert_eq!(eventfds[0].addr, 0x3010);
    assert_eq!(eventfds[0].datamatch, Some(7));
}

#[test]
fn commit_with_no_change_tells_nobody() {
    let root = MemoryRegion::container("root", 0x100000);
    let a = ram("a", 0x1000);
    root.add_subregion(0, &a, 0);
    let (space, recorder) = space_with_recorder(&root);
    space.commit();
    a.set_address(0); // same place
    a.set_enabled(true); // already enabled
    space.commit();
    assert_eq!(recorder.take(), vec![]);
}

#[test]
fn remove_listeners_tears_everything_down() {
    let root = MemoryRegion::container("root", 0x100000);
    let a = ram("a", 0x1000);
    let (io, _) = io_region("io", 0x100, IoAccess::default());
    io.add_eventfd(0, 0, None, eventfd());
    root.add_subregion(0, &a, 0);
    root.add_subregion(0x2000, &io, 0);
    let (space, recorder) = space_with_recorder(&root);
    space.remove_listeners();
    assert_eq!(
        recorder.take(),
        vec![
            Event::EvDel(0x2000, 0, None),
            del(0, 0x1000, "a", 0),
            del(0x2000, 0x100, "io", 0),
        ]
    );
}
