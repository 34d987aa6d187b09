//! Access dispatch: RAM copies, cross-range splits, widening/splitting to implemented sizes,
//! invalid sizes, unassigned addresses, re-entrant commits.

use super::super::AccessSizes;
use super::*;
use OpCall::{Read, Write};

fn space(root: &MemoryRegion) -> AddressSpace {
    AddressSpace::new("memory", root.clone(), SpaceKind::Memory)
}

/// An I/O leaf at 0x1000 in a fresh space.
fn io_space(access: IoAccess) -> (AddressSpace, Arc<RecordingOps>) {
    let root = MemoryRegion::container("root", 0x10000);
    let (io, ops) = io_region("io", 0x100, access);
    root.add_subregion(0x1000, &io, 0);
    (space(&root), ops)
}

fn read(space: &AddressSpace, addr: u64, len: usize) -> Vec<u8> {
    let mut data = vec![0u8; len];
    space.read(addr, &mut data);
    data
}

fn access(valid: (u32, u32, bool), implemented: (u32, u32, bool)) -> IoAccess {
    IoAccess {
        valid: AccessSizes {
            min: valid.0,
            max: valid.1,
            unaligned: valid.2,
        },
        implemented: AccessSizes {
            min: implemented.0,
            max: implemented.1,
            unaligned: implemented.2,
        },
    }
}

#[test]
fn ram_reads_and_writes_hit_the_host_mapping() {
    let root = MemoryRegion::container("root", 0x100000);
    let memory = ram("ram", 0x4000);
    root.add_subregion(0x10000, &memory, 0);
    let space = space(&root);
    space.write(0x10ffe, &[1, 2, 3, 4, 5, 6, 7, 8]);
    assert_eq!(read(&space, 0x10ffe, 8), vec![1, 2, 3, 4, 5, 6, 7, 8]);
    let host = memory.host_addr().unwrap();
    // SAFETY: the region is 0x4000 bytes and alive; offset 0xffe + 8 is inside.
    let seen = unsafe { std::slice::from_raw_parts(host.add(0xffe), 8) };
    assert_eq!(seen, &[1, 2, 3, 4, 5, 6, 7, 8]);
    for len in [1usize, 2, 4, 8, 3, 16] {
        space.write(0x10100, &vec![0xaa; len]);
        assert_eq!(read(&space, 0x10100, len), vec![0xaa; len]);
    }
}

#[test]
fn unassigned_reads_all_ones_and_ignores_writes() {
    let root = MemoryRegion::container("root", 0x100000);
    let space = space(&root);
    space.write(0x500, &[1, 2, 3, 4]);
    assert_eq!(read(&space, 0x500, 4), vec![0xff; 4]);
    // Past the top of the address space.
    assert_eq!(read(&space, u64::MAX - 1, 4), vec![0xff; 4]);
}

#[test]
fn reservation_reads_all_ones() {
    let root = MemoryRegion::container("root", 0x100000);
    root.add_subregion(0x2000, &MemoryRegion::reservation("reserved", 0x1000), 0);
    let space = space(&root);
    space.write(0x2000, &[0; 4]);
    assert_eq!(read(&space, 0x2000, 4), vec![0xff; 4]);
}

#[test]
fn an_access_crossing_ranges_is_split() {
    let root = MemoryRegion::container("root", 0x100000);
    let memory = ram("ram", 0x1000);
    let (io, ops) = io_region("io", 0x100, IoAccess::sizes(1, 4));
    root.add_subregion(0x0, &memory, 0);
    root.add_subregion(0x1000, &io, 0);
    let space = space(&root);
    // 2 bytes of RAM, then 2 bytes of I/O at offset 0.
    space.write(0xffe, &[0x11, 0x22, 0x33, 0x44]);
    assert_eq!(
        ops.take_calls(),
        vec![Write {
            offset: 0,
            size: 2,
            value: 0x4433
        }]
    );
    assert_eq!(read(&space, 0xffe, 4), vec![0x11, 0x22, 0x33, 0x44]);
    assert_eq!(ops.take_calls(), vec![Read { offset: 0, size: 2 }]);
    // I/O then unassigned.
    assert_eq!(read(&space, 0x10fe, 4), vec![0xfe, 0xff, 0xff, 0xff]);
    assert_eq!(
        ops.take_calls(),
        vec![Read {
            offset: 0xfe,
            size: 2
        }]
    );
    // RAM, a gap, RAM: [0x1000, 0x1100) I/O in between.
    let top = ram("top", 0x1000);
    root.add_subregion(0x1100, &top, 0);
    space.commit();
    let mut data = [0u8; 0x102];
    space.read(0xfff, &mut data);
    assert_eq!(
        ops.take_calls().len(),
        0x100 / 4,
        "I/O part read in 4-byte pieces"
    );
}

#[test]
fn wide_access_is_split_into_implemented_sizes_little_endian() {
    let (space, ops) = io_space(IoAccess {
        valid: AccessSizes::new(1, 4),
        implemented: AccessSizes::new(1, 1),
    });
    space.write(0x1010, &[0xa, 0xb, 0xc, 0xd]);
    assert_eq!(
        ops.take_calls(),
        vec![
            Write {
                offset: 0x10,
                size: 1,
                value: 0xa
            },
            Write {
                offset: 0x11,
                size: 1,
                value: 0xb
            },
            Write {
                offset: 0x12,
                size: 1,
                value: 0xc
            },
            Write {
                offset: 0x13,
                size: 1,
                value: 0xd
            },
        ]
    );
    assert_eq!(read(&space, 0x1010, 4), vec![0xa, 0xb, 0xc, 0xd]);
    assert_eq!(
        ops.take_calls(),
        vec![
            Read {
                offset: 0x10,
                size: 1
            },
            Read {
                offset: 0x11,
                size: 1
            },
            Read {
                offset: 0x12,
                size: 1
            },
            Read {
                offset: 0x13,
                size: 1
            },
        ]
    );
}

#[test]
fn eight_byte_access_to_an_eight_byte_valid_four_byte_implemented_leaf() {
    // Like an MSI-X table: valid 4..8, implemented 4.
    let (space, ops) = io_space(access((4, 8, false), (4, 4, false)));
    space.write(0x1008, &0x1122_3344_5566_7788u64.to_le_bytes());
    assert_eq!(
        ops.take_calls(),
        vec![
            Write {
                offset: 8,
                size: 4,
                value: 0x5566_7788
            },
            Write {
                offset: 12,
                size: 4,
                value: 0x1122_3344
            },
        ]
    );
    assert_eq!(
        read(&space, 0x1008, 8),
        0x1122_3344_5566_7788u64.to_le_bytes()
    );
}

#[test]
fn narrow_read_is_widened_at_the_aligned_address() {
    let (space, ops) = io_space(IoAccess::sizes(1, 4).with_implemented(4, 4));
    // Backing bytes are 0, 1, 2, ...: byte at 0x12 is 0x12.
    assert_eq!(read(&space, 0x1012, 1), vec![0x12]);
    assert_eq!(
        ops.take_calls(),
        vec![Read {
            offset: 0x10,
            size: 4
        }]
    );
    assert_eq!(read(&space, 0x1016, 2), vec![0x16, 0x17]);
    assert_eq!(
        ops.take_calls(),
        vec![Read {
            offset: 0x14,
            size: 4
        }]
    );
}

#[test]
fn narrow_write_is_widened_with_zeros_not_read_modify_write() {
    let (space, ops) = io_space(IoAccess::sizes(1, 4).with_implemented(4, 4));
    space.write(0x1012, &[0xab]);
    assert_eq!(
        ops.take_calls(),
        vec![Write {
            offset: 0x10,
            size: 4,
            value: 0x00ab_0000
        }]
    );
}

#[test]
fn accesses_are_cut_at_alignment_unless_unaligned_is_valid() {
    // Aligned-only region: a 4-byte access at offset 2 becomes two 2-byte accesses.
    let (space, ops) = io_space(IoAccess::sizes(1, 4));
    assert_eq!(read(&space, 0x1002, 4), vec![2, 3, 4, 5]);
    assert_eq!(
        ops.take_calls(),
        vec![Read { offset: 2, size: 2 }, Read { offset: 4, size: 2 }]
    );
    // Odd length: 3 bytes at 0 → 2 + 1.
    assert_eq!(read(&space, 0x1000, 3), vec![0, 1, 2]);
    assert_eq!(
        ops.take_calls(),
        vec![Read { offset: 0, size: 2 }, Read { offset: 2, size: 1 }]
    );

    // Unaligned valid and implemented: one access.
    let (space, ops) = io_space(access((1, 4, true), (1, 4, true)));
    assert_eq!(read(&space, 0x1002, 4), vec![2, 3, 4, 5]);
    assert_eq!(ops.take_calls(), vec![Read { offset: 2, size: 4 }]);

    // Unaligned valid, implemented aligned 4: two aligned reads, bytes extracted.
    let (space, ops) = io_space(access((1, 4, true), (4, 4, false)));
    assert_eq!(read(&space, 0x1002, 4), vec![2, 3, 4, 5]);
    assert_eq!(
        ops.take_calls(),
        vec![Read { offset: 0, size: 4 }, Read { offset: 4, size: 4 }]
    );
    space.write(0x1002, &[0xa, 0xb, 0xc, 0xd]);
    assert_eq!(
        ops.take_calls(),
        vec![
            Write {
                offset: 0,
                size: 4,
                value: 0x0b0a_0000
            },
            Write {
                offset: 4,
                size: 4,
                value: 0x0000_0d0c
            },
        ]
    );

    // Unaligned valid, implemented 1..4 aligned: cut at the alignment, no widening needed.
    let (space, ops) = io_space(access((1, 4, true), (1, 4, false)));
    space.write(0x1002, &[0xa, 0xb, 0xc, 0xd]);
    assert_eq!(
        ops.take_calls(),
        vec![
            Write {
                offset: 2,
                size: 2,
                value: 0x0b0a
            },
            Write {
                offset: 4,
                size: 2,
                value: 0x0d0c
            },
        ]
    );

    // Implemented unaligned but not valid unaligned: the misaligned access is rejected.
    let (space, ops) = io_space(access((1, 4, false), (1, 4, true)));
    assert_eq!(read(&space, 0x1002, 4), vec![0xff; 4]);
    assert_eq!(read(&space, 0x1004, 4), vec![4, 5, 6, 7]);
    assert_eq!(ops.take_calls(), vec![Read { offset: 4, size: 4 }]);
}

#[test]
fn invalid_sizes_are_rejected() {
    let (space, ops) = io_space(IoAccess::sizes(4, 4));
    assert_eq!(read(&space, 0x1000, 1), vec![0xff]);
    assert_eq!(read(&space, 0x1000, 2), vec![0xff, 0xff]);
    space.write(0x1000, &[1]);
    space.write(0x1000, &[1, 2]);
    // Misaligned 4-byte access: cut to the alignment (2), which is below the minimum.
    space.write(0x1002, &[1, 2, 3, 4]);
    assert_eq!(read(&space, 0x1002, 4), vec![0xff; 4]);
    assert_eq!(
        ops.take_calls(),
        vec![],
        "no invalid access reached the device"
    );
    // A valid one does.
    space.write(0x1004, &[1, 2, 3, 4]);
    assert_eq!(
        ops.take_calls(),
        vec![Write {
            offset: 4,
            size: 4,
            value: 0x0403_0201
        }]
    );
}

#[test]
fn ram_device_is_served_by_dispatch() {
    let root = MemoryRegion::container("root", 0x100000);
    let shm = ram("shm", 0x1000);
    shm.set_ram_device(true);
    root.add_subregion(0x8000, &shm, 0);
    let space = space(&root);
    assert!(space.flat_view().ranges()[0].ram_device);
    space.write(0x8004, &0xdead_beefu32.to_le_bytes());
    assert_eq!(read(&space, 0x8004, 4), 0xdead_beefu32.to_le_bytes());
    // SAFETY: 4 aligned bytes at offset 4 of a live 0x1000-byte mapping.
    let host = unsafe { std::ptr::read(shm.host_addr().unwrap().add(4).cast::<u32>()) };
    assert_eq!(host, 0xdead_beef);
}

#[test]
fn io_space_dispatch_works_like_memory() {
    let root = MemoryRegion::container("io", 0x10000);
    let (port, ops) = io_region("port", 8, IoAccess::sizes(1, 1));
    root.add_subregion(0x3f8, &port, 0);
    let space = AddressSpace::new("io", root, SpaceKind::Io);
    space.write(0x3f8, b"x");
    assert_eq!(
        ops.take_calls(),
        vec![Write {
            offset: 0,
            size: 1,
            value: u64::from(b'x')
        }]
    );
    assert_eq!(read(&space, 0x3fa, 1), vec![2]);
    assert_eq!(read(&space, 0x60, 1), vec![0xff]);
}

/// Ops whose write moves another region and commits, as a PCI BAR write does.
struct Remapper {
    space: Mutex<Option<AddressSpace>>,
    bar: MemoryRegion,
}

impl RegionOps for Remapper {
    fn read(&self, _offset: u64, _size: u32) -> u64 {
        self.bar.address()
    }
    fn write(&self, _offset: u64, _size: u32, value: u64) {
        self.bar.set_address(value);
        let space = self.space.lock().unwrap().clone();
        if let Some(space) = space {
            space.commit();
        }
    }
}

#[test]
fn ops_may_change_the_tree_and_commit_during_dispatch() {
    let root = MemoryRegion::container("root", 0x100000);
    let bar = ram("bar", 0x1000);
    root.add_subregion(0x10000, &bar, 1);
    let remapper = Arc::new(Remapper {
        space: Mutex::new(None),
        bar: bar.clone(),
    });
    let config = MemoryRegion::io("config", 8, remapper.clone(), IoAccess::sizes(4, 8));
    root.add_subregion(0, &config, 0);
    let space = space(&root);
    *remapper.space.lock().unwrap() = Some(space.clone());
    let (recorder_space, recorder) = (space.clone(), Recorder::default());
    recorder_space.add_listener(Box::new(recorder.clone()));
    recorder.take();

    space.write(0, &0x20000u32.to_le_bytes());
    assert_eq!(
        recorder.take(),
        vec![
            del(0x10000, 0x1000, "bar", 0),
            add(0x20000, 0x1000, "bar", 0)
        ]
    );
    space.write(0x20000, &[7]);
    assert_eq!(read(&space, 0x20000, 1), vec![7]);
    assert_eq!(read(&space, 0x10000, 1), vec![0xff]);
    // Break the cycle space → root → config → remapper → space.
    *remapper.space.lock().unwrap() = None;
}

#[test]
fn concurrent_dispatch_during_commits() {
    let root = MemoryRegion::container("root", 0x100000);
    let memory = ram("ram", 0x1000);
    let bar = ram("bar", 0x1000);
    root.add_subregion(0, &memory, 0);
    root.add_subregion(0x10000, &bar, 1);
    let space = space(&root);
    std::thread::scope(|scope| {
        for cpu in 0..3u8 {
            let space = space.clone();
            scope.spawn(move || {
                for i in 0..2000u32 {
                    let addr = u64::from(cpu) * 8;
                    space.write(addr, &i.to_le_bytes());
                    let mut back = [0u8; 4];
                    space.read(addr, &mut back);
                    assert_eq!(u32::from_le_bytes(back), i);
                    let mut bar_byte = [0u8; 1];
                    space.read(0x10000, &mut bar_byte);
                }
            });
        }
        for i in 0..200u64 {
            bar.set_address(0x10000 + (i % 2) * 0x1000);
            space.commit();
        }
    });
}

/// Anonymous RAM starts on a 2 MiB boundary of the host's address space (so KVM can map it with
/// 2 MiB pages), is zero-filled and writable end to end, and is unmapped when dropped.
#[test]
fn anonymous_ram_is_2mib_aligned_and_usable() {
    for size in [2u64 << 20, 34 << 20, (64 << 20) + 4096] {
        let ram = MemoryRegion::ram("ram", size).unwrap();
        let addr = ram.host_addr().unwrap() as usize;
        assert_eq!(addr % (2 << 20), 0, "{size:#x} bytes at {addr:#x}");
        let space = AddressSpace::new("test", ram.clone(), SpaceKind::Memory);
        let mut byte = [0xAAu8];
        space.read(size - 1, &mut byte);
        assert_eq!(byte, [0]);
        space.write(size - 1, &[0x5A]);
        space.read(size - 1, &mut byte);
        assert_eq!(byte, [0x5A]);
        drop((space, ram));
        let maps = std::fs::read_to_string("/proc/self/maps").unwrap();
        assert!(
            !maps.lines().any(|l| l.starts_with(&format!("{addr:x}-"))),
            "{addr:#x} still mapped"
        );
    }
}
