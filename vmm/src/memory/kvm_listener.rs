//! `KvmMemoryListener`: keeps KVM's memory slots and ioeventfds in step with a flat view.
//!
//! RAM ranges become `KVM_SET_USER_MEMORY_REGION` slots, trimmed to whole pages (KVM maps pages;
//! the sub-page edges stay with dispatch, which serves any address not slotted). ram_device
//! ranges are never slotted: their accesses must exit to be served by dispatch. A range that
//! moves or changes size arrives as a deletion then an addition, so slots never overlap. Slot
//! ids are recycled lowest-first. Each slot keeps its region alive until the slot is deleted, so
//! KVM never points at unmapped memory. I/O-leaf eventfds become `KVM_IOEVENTFD`s (MMIO in a
//! memory space, PIO in an I/O space), with a datamatch as wide as the eventfd's length.
//!
//! A RAM range beyond the host's physical address width (where a guest may move a 64-bit BAR:
//! nothing can reach it there) gets no slot, quietly: KVM would refuse it on every move.
//!
//! KVM refusing a request is logged and counted (`errors()`), never fatal: a listener callback
//! has nobody to return an error to.

use std::collections::BTreeSet;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use kvm_bindings::{kvm_userspace_memory_region, KVM_MEM_READONLY};
use kvm_ioctls::{IoEventAddress, NoDatamatch, VmFd};

use super::address_space::SpaceKind;
use super::flat_view::{FlatRange, IoEventFdRange};
use super::listener::MemoryListener;
use super::region::MemoryRegion;
use super::PAGE_SIZE;

/// Counters shared between a listener and whoever wants to watch it (the listener itself is
/// boxed into an address space).
#[derive(Clone, Default, Debug)]
pub struct KvmListenerStats {
    inner: Arc<StatsInner>,
}

#[derive(Default, Debug)]
struct StatsInner {
    slot_adds: AtomicU64,
    slot_dels: AtomicU64,
    slots: AtomicU64,
    ioeventfds: AtomicU64,
    errors: AtomicU64,
}

impl KvmListenerStats {
    /// Slots currently installed.
    pub fn slot_count(&self) -> u64 {
        self.inner.slots.load(Ordering::Relaxed)
    }
    /// KVM_SET_USER_MEMORY_REGION calls that added a slot.
    pub fn slot_adds(&self) -> u64 {
        self.inner.slot_adds.load(Ordering::Relaxed)
    }
    /// KVM_SET_USER_MEMORY_REGION calls that deleted a slot.
    pub fn slot_dels(&self) -> u64 {
        self.inner.slot_dels.load(Ordering::Relaxed)
    }
    /// Slot operations of either kind.
    pub fn slot_ops(&self) -> u64 {
        self.slot_adds() + self.slot_dels()
    }
    /// Ioeventfds currently registered.
    pub fn ioeventfd_count(&self) -> u64 {
        self.inner.ioeventfds.load(Ordering::Relaxed)
    }
    /// Requests KVM refused (or that could not be expressed).
    pub fn errors(&self) -> u64 {
        self.inner.errors.load(Ordering::Relaxed)
    }
}

/// One installed slot.
#[derive(Debug)]
struct KvmSlot {
    id: u32,
    guest_addr: u64,
    size: u64,
    host_addr: u64,
    flags: u32,
    /// Keeps the mapping alive while KVM uses it.
    _region: MemoryRegion,
}

/// The page-aligned part of a RAM range: (guest address, size, host address).
pub(super) fn slot_section(range: &FlatRange) -> Option<(u64, u64, u64)> {
    if !range.is_ram() || range.ram_device {
        return None;
    }
    let host = range.region.host_addr()? as u64 + range.offset_in_region;
    let start = range.addr.checked_add(PAGE_SIZE - 1)? & !(PAGE_SIZE - 1);
    let end = (range.end() & !u128::from(PAGE_SIZE - 1)) as u64;
    if end <= start {
        return None;
    }
    let host_start = host + (start - range.addr);
    if !host_start.is_multiple_of(PAGE_SIZE) {
        log::warn!(
            "kvm: RAM {} at {:#x} is not page-aligned in the host; served by dispatch",
            range.region.name_str(),
            range.addr
        );
        return None;
    }
    Some((start, end - start, host_start))
}

/// First guest-physical address KVM cannot map: 2^MAXPHYADDR of the host (CPUID 0x8000_0008;
/// KVM's limit, and no guest CPU can form an address above it either).
fn physical_address_limit() -> u64 {
    let bits = std::arch::x86_64::__cpuid(0x8000_0008).eax & 0xFF;
    1u64 << bits.clamp(32, 52)
}

/// True when `[guest_addr, guest_addr + size)` lies beyond what KVM and the guest can address.
fn unreachable(guest_addr: u64, size: u64) -> bool {
    guest_addr
        .checked_add(size)
        .is_none_or(|end| end > physical_address_limit())
}

/// Turns RAM ranges into KVM memory slots and eventfd ranges into KVM ioeventfds.
pub struct KvmMemoryListener {
    vm: Arc<VmFd>,
    kind: SpaceKind,
    slots: Vec<KvmSlot>,
    free_ids: BTreeSet<u32>,
    next_id: u32,
    ioeventfds: Vec<IoEventFdRange>,
    stats: KvmListenerStats,
}

impl KvmMemoryListener {
    /// A listener for one address space of `vm`. Use one `Memory` listener per VM (slot ids are
    /// allocated per listener); an `Io` listener only handles ioeventfds.
    pub fn new(vm: Arc<VmFd>, kind: SpaceKind) -> Self {
        KvmMemoryListener {
            vm,
            kind,
            slots: Vec::new(),
            free_ids: BTreeSet::new(),
            next_id: 0,
            ioeventfds: Vec::new(),
            stats: KvmListenerStats::default(),
        }
    }

    /// A handle on the counters that stays usable after the listener is boxed away.
    pub fn stats(&self) -> KvmListenerStats {
        self.stats.clone()
    }

    /// How many KVM memory slots are in use.
    pub fn slot_count(&self) -> usize {
        self.slots.len()
    }

    /// Installed slots as (slot id, guest address, size, host address), by guest address.
    pub fn slots(&self) -> Vec<(u32, u64, u64, u64)> {
        let mut slots: Vec<_> = self
            .slots
            .iter()
            .map(|s| (s.id, s.guest_addr, s.size, s.host_addr))
            .collect();
        slots.sort_by_key(|s| s.1);
        slots
    }

    fn allocate_id(&mut self) -> u32 {
        if let Some(id) = self.free_ids.pop_first() {
            return id;
        }
        self.next_id += 1;
        self.next_id - 1
    }

    fn set_slot(&self, id: u32, guest_addr: u64, size: u64, host_addr: u64, flags: u32) -> bool {
        let region = kvm_userspace_memory_region {
            slot: id,
            flags,
            guest_phys_addr: guest_addr,
            memory_size: size,
            userspace_addr: host_addr,
        };
        // SAFETY: `host_addr..host_addr + size` lies inside a live mapping owned by a region the
        // slot keeps alive until it is deleted (size 0 deletes and touches no memory).
        match unsafe { self.vm.set_user_memory_region(region) } {
            Ok(()) => true,
            Err(e) => {
                log::error!("kvm: slot {id} at {guest_addr:#x} size {size:#x} refused: {e}");
                self.stats.inner.errors.fetch_add(1, Ordering::Relaxed);
                false
            }
        }
    }

    fn io_address(&self, addr: u64) -> IoEventAddress {
        match self.kind {
            SpaceKind::Memory => IoEventAddress::Mmio(addr),
            SpaceKind::Io => IoEventAddress::Pio(addr),
        }
    }

    /// Registers (or with `deassign`, unregisters) one ioeventfd.
    fn ioevent(&self, e: &IoEventFdRange, deassign: bool) -> bool {
        let addr = self.io_address(e.addr);
        let fd = e.fd.as_ref();
        let vm = &self.vm;
        let result = match (e.len, e.datamatch) {
            // kvm-ioctls derives the length from the datamatch type: without one it registers
            // "any length", which covers every `len`.
            (_, None) if deassign => vm.unregister_ioevent(fd, &addr, NoDatamatch),
            (_, None) => vm.register_ioevent(fd, &addr, NoDatamatch),
            (1, Some(v)) if deassign => vm.unregister_ioevent(fd, &addr, v as u8),
            (1, Some(v)) => vm.register_ioevent(fd, &addr, v as u8),
            (2, Some(v)) if deassign => vm.unregister_ioevent(fd, &addr, v as u16),
            (2, Some(v)) => vm.register_ioevent(fd, &addr, v as u16),
            (4, Some(v)) if deassign => vm.unregister_ioevent(fd, &addr, v as u32),
            (4, Some(v)) => vm.register_ioevent(fd, &addr, v as u32),
            (8, Some(v)) if deassign => vm.unregister_ioevent(fd, &addr, v),
            (8, Some(v)) => vm.register_ioevent(fd, &addr, v),
            (len, Some(_)) => {
                log::error!(
                    "kvm: ioeventfd at {:#x}: datamatch needs a length of 1, 2, 4 or 8, not {len}",
                    e.addr
                );
                self.stats.inner.errors.fetch_add(1, Ordering::Relaxed);
                return false;
            }
        };
        match result {
            Ok(()) => true,
            Err(err) => {
                log::error!(
                    "kvm: {} ioeventfd at {:#x} (len {}, datamatch {:?}) refused: {err}",
                    if deassign { "removing" } else { "adding" },
                    e.addr,
                    e.len,
                    e.datamatch
                );
                self.stats.inner.errors.fetch_add(1, Ordering::Relaxed);
                false
            }
        }
    }
}

impl MemoryListener for KvmMemoryListener {
    fn region_add(&mut self, range: &FlatRange) {
        if self.kind != SpaceKind::Memory {
            return;
        }
        let Some((guest_addr, size, host_addr)) = slot_section(range) else {
            return;
        };
        if unreachable(guest_addr, size) {
            log::debug!("kvm: RAM at {guest_addr:#x} size {size:#x} is unreachable; no slot");
            return;
        }
        let flags = if range.readonly { KVM_MEM_READONLY } else { 0 };
        let id = self.allocate_id();
        if self.set_slot(id, guest_addr, size, host_addr, flags) {
            self.slots.push(KvmSlot {
                id,
                guest_addr,
                size,
                host_addr,
                flags,
                _region: range.region.clone(),
            });
            self.stats.inner.slot_adds.fetch_add(1, Ordering::Relaxed);
            self.stats
                .inner
                .slots
                .store(self.slots.len() as u64, Ordering::Relaxed);
        } else {
            self.free_ids.insert(id);
        }
    }

    fn region_del(&mut self, range: &FlatRange) {
        if self.kind != SpaceKind::Memory {
            return;
        }
        let Some((guest_addr, size, host_addr)) = slot_section(range) else {
            return;
        };
        if unreachable(guest_addr, size) {
            return;
        }
        let Some(index) = self
            .slots
            .iter()
            .position(|s| s.guest_addr == guest_addr && s.size == size && s.host_addr == host_addr)
        else {
            log::warn!("kvm: no slot at {guest_addr:#x} size {size:#x} to delete");
            return;
        };
        let slot = self.slots.swap_remove(index);
        // Even if KVM refuses, forget the slot: keeping it would block its addresses forever.
        self.set_slot(slot.id, slot.guest_addr, 0, slot.host_addr, slot.flags);
        self.free_ids.insert(slot.id);
        self.stats.inner.slot_dels.fetch_add(1, Ordering::Relaxed);
        self.stats
            .inner
            .slots
            .store(self.slots.len() as u64, Ordering::Relaxed);
    }

    fn eventfd_add(&mut self, eventfd: &IoEventFdRange) {
        if self.ioevent(eventfd, false) {
            self.ioeventfds.push(eventfd.clone());
            self.stats
                .inner
                .ioeventfds
                .store(self.ioeventfds.len() as u64, Ordering::Relaxed);
        }
    }

    fn eventfd_del(&mut self, eventfd: &IoEventFdRange) {
        let Some(index) = self.ioeventfds.iter().position(|e| e.same(eventfd)) else {
            return;
        };
        let registered = self.ioeventfds.swap_remove(index);
        self.ioevent(&registered, true);
        self.stats
            .inner
            .ioeventfds
            .store(self.ioeventfds.len() as u64, Ordering::Relaxed);
    }
}

impl Drop for KvmMemoryListener {
    /// Tears down what this listener installed, before the regions it kept alive go.
    fn drop(&mut self) {
        for eventfd in std::mem::take(&mut self.ioeventfds) {
            self.ioevent(&eventfd, true);
        }
        for slot in std::mem::take(&mut self.slots) {
            self.set_slot(slot.id, slot.guest_addr, 0, slot.host_addr, slot.flags);
        }
        self.stats.inner.slots.store(0, Ordering::Relaxed);
        self.stats.inner.ioeventfds.store(0, Ordering::Relaxed);
    }
}
