//! The KVM listener against a real VM: slots added, moved, removed; ioeventfds registered and
//! following their region. Skipped (with a message) when /dev/kvm cannot be opened, unless
//! IVSHMEM_REQUIRE_KVM=1.

use super::super::{KvmMemoryListener, PAGE_SIZE};
use super::*;

fn kvm_vm(test: &str) -> Option<Arc<kvm_ioctls::VmFd>> {
    let required = std::env::var("IVSHMEM_REQUIRE_KVM").is_ok_and(|v| v == "1");
    match kvm_ioctls::Kvm::new().and_then(|kvm| kvm.create_vm()) {
        Ok(vm) => Some(Arc::new(vm)),
        Err(e) if required => {
            panic!("{test}: KVM required (IVSHMEM_REQUIRE_KVM=1) but unavailable: {e}")
        }
        Err(e) => {
            eprintln!("{test}: skipped, KVM unavailable: {e}");
            None
        }
    }
}

fn memfd(size: u64) -> std::os::fd::OwnedFd {
    let fd = nix::sys::memfd::memfd_create("memory-test", nix::sys::memfd::MFdFlags::MFD_CLOEXEC)
        .expect("memfd_create");
    nix::unistd::ftruncate(&fd, size as i64).expect("ftruncate");
    fd
}

#[test]
fn kvm_slots_follow_the_flat_view() {
    let Some(vm) = kvm_vm("kvm_slots_follow_the_flat_view") else {
        return;
    };
    let system = MemoryRegion::container("system", u64::MAX);
    let memory = ram("ram", 0x20_0000);
    system.add_subregion(0, &memory, 0);
    let space = AddressSpace::new("memory", system.clone(), SpaceKind::Memory);
    let listener = KvmMemoryListener::new(vm.clone(), SpaceKind::Memory);
    let stats = listener.stats();
    space.add_listener(Box::new(listener));
    space.commit();
    assert_eq!((stats.slot_count(), stats.slot_adds()), (1, 1));

    // A shared-memory BAR: added, moved, made a ram_device, removed.
    let fd = memfd(0x10_0000);
    let shm =
        MemoryRegion::ram_from_fd("shm", std::os::fd::AsFd::as_fd(&fd), 0, 0x10_0000).unwrap();
    system.add_subregion(0xe000_0000, &shm, 1);
    space.commit();
    assert_eq!(stats.slot_count(), 2);
    shm.set_address(0xf000_0000);
    space.commit();
    assert_eq!(stats.slot_count(), 2);
    assert_eq!((stats.slot_adds(), stats.slot_dels()), (3, 1));
    shm.set_ram_device(true);
    space.commit();
    assert_eq!(stats.slot_count(), 1, "ram_device is not slotted");
    shm.set_ram_device(false);
    space.commit();
    assert_eq!(stats.slot_count(), 2);

    // An MMIO leaf punching a sub-page hole in RAM splits its slot; slot ids are recycled.
    let (mmio, _) = io_region("mmio", 0x100, IoAccess::sizes(4, 4));
    system.add_subregion(0x10_0800, &mmio, 1);
    space.commit();
    assert_eq!(stats.slot_count(), 3, "RAM below and above the hole");

    // An ioeventfd with a 4-byte datamatch, following its region.
    let doorbell = eventfd();
    mmio.add_eventfd(0xc, 4, Some(2), doorbell.clone());
    mmio.add_eventfd(0x10, 0, None, doorbell.clone());
    space.commit();
    assert_eq!(stats.ioeventfd_count(), 2);
    mmio.set_address(0x1000_0000);
    space.commit();
    assert_eq!(stats.ioeventfd_count(), 2);
    assert_eq!(stats.slot_count(), 2, "RAM is whole again");
    mmio.del_eventfd(0xc, 4, Some(2), &doorbell);
    space.commit();
    assert_eq!(stats.ioeventfd_count(), 1);

    system.del_subregion(&shm);
    space.commit();
    assert_eq!(stats.slot_count(), 1);
    assert_eq!(stats.errors(), 0, "KVM accepted every request");
    space.remove_listeners();
    assert_eq!((stats.slot_count(), stats.ioeventfd_count()), (0, 0));
    assert_eq!(stats.errors(), 0);
    assert_eq!(PAGE_SIZE, 4096);
}

#[test]
fn kvm_pio_ioeventfds_in_the_io_space() {
    let Some(vm) = kvm_vm("kvm_pio_ioeventfds_in_the_io_space") else {
        return;
    };
    let io = MemoryRegion::container("io", 0x10000);
    let (port, _) = io_region("port", 4, IoAccess::sizes(1, 4));
    io.add_subregion(0x510, &port, 0);
    let space = AddressSpace::new("io", io.clone(), SpaceKind::Io);
    let listener = KvmMemoryListener::new(vm, SpaceKind::Io);
    let stats = listener.stats();
    space.add_listener(Box::new(listener));
    let fd = eventfd();
    port.add_eventfd(0, 1, Some(0x5a), fd.clone());
    port.add_eventfd(2, 2, Some(0x1234), fd.clone());
    space.commit();
    assert_eq!(stats.ioeventfd_count(), 2);
    port.set_address(0x520);
    space.commit();
    assert_eq!(stats.ioeventfd_count(), 2);
    assert_eq!(stats.slot_count(), 0);
    assert_eq!(stats.errors(), 0);
}

/// Found by the `abuse` guest: a 64-bit BAR moved to the top of the address space (or past the
/// physical address width) made KVM refuse a slot, logged as an error, on every move.
#[test]
fn ram_beyond_the_physical_address_width_gets_no_slot_and_no_error() {
    let Some(vm) = kvm_vm("ram_beyond_the_physical_address_width_gets_no_slot_and_no_error") else {
        return;
    };
    let system = MemoryRegion::container("system", u64::MAX);
    let space = AddressSpace::new("memory", system.clone(), SpaceKind::Memory);
    let listener = KvmMemoryListener::new(vm.clone(), SpaceKind::Memory);
    let stats = listener.stats();
    space.add_listener(Box::new(listener));
    let fd = memfd(0x10_0000);
    let shm =
        MemoryRegion::ram_from_fd("shm", std::os::fd::AsFd::as_fd(&fd), 0, 0x10_0000).unwrap();
    system.add_subregion(0x10_0000_0000, &shm, 1);
    space.commit();
    assert_eq!(stats.slot_count(), 1);
    for address in [!0xF_FFFF, 1 << 63, (1 << 52) - 0x10_0000, 0x10_0000_0000] {
        shm.set_address(address);
        space.commit();
    }
    assert_eq!(stats.slot_count(), 1, "back in reach: slotted again");
    assert_eq!(stats.errors(), 0, "nothing asked of KVM that it refuses");
    space.remove_listeners();
}
