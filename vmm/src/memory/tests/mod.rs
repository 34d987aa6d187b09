//! Unit tests for the memory model, with shared helpers: ops that record every call and serve
//! reads from a byte array, a listener that records every event, and a compact view printer.

mod dispatch;
mod kvm;
mod listener;
mod mtree;
mod render;

use std::sync::{Arc, Mutex};

use vmm_sys_util::eventfd::EventFd;

use super::{
    AddressSpace, FlatRange, IoAccess, IoEventFdRange, MemoryListener, MemoryRegion, RegionOps,
    SpaceKind,
};

/// One call an ops object received.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(super) enum OpCall {
    Read { offset: u64, size: u32 },
    Write { offset: u64, size: u32, value: u64 },
}

/// Ops backed by a little byte array (reads return its bytes, writes store them), recording
/// every call.
pub(super) struct RecordingOps {
    pub(super) bytes: Mutex<Vec<u8>>,
    pub(super) calls: Mutex<Vec<OpCall>>,
}

impl RecordingOps {
    pub(super) fn new(size: usize) -> Arc<Self> {
        Arc::new(RecordingOps {
            bytes: Mutex::new((0..size).map(|i| i as u8).collect()),
            calls: Mutex::new(Vec::new()),
        })
    }

    pub(super) fn take_calls(&self) -> Vec<OpCall> {
        std::mem::take(&mut *self.calls.lock().unwrap())
    }
}

impl RegionOps for RecordingOps {
    fn read(&self, offset: u64, size: u32) -> u64 {
        self.calls
            .lock()
            .unwrap()
            .push(OpCall::Read { offset, size });
        let bytes = self.bytes.lock().unwrap();
        let mut value = 0u64;
        for i in 0..size as usize {
            let byte = bytes.get(offset as usize + i).copied().unwrap_or(0);
            value |= u64::from(byte) << (8 * i);
        }
        value
    }

    fn write(&self, offset: u64, size: u32, value: u64) {
        self.calls.lock().unwrap().push(OpCall::Write {
            offset,
            size,
            value,
        });
        let mut bytes = self.bytes.lock().unwrap();
        for i in 0..size as usize {
            if let Some(byte) = bytes.get_mut(offset as usize + i) {
                *byte = (value >> (8 * i)) as u8;
            }
        }
    }
}

pub(super) fn io_region(
    name: &str,
    size: u64,
    access: IoAccess,
) -> (MemoryRegion, Arc<RecordingOps>) {
    let ops = RecordingOps::new(size.min(4096) as usize);
    (MemoryRegion::io(name, size, ops.clone(), access), ops)
}

pub(super) fn ram(name: &str, size: u64) -> MemoryRegion {
    MemoryRegion::ram(name, size).expect("anonymous RAM")
}

/// `(addr, size, leaf name, offset in leaf)` for every range of the committed view.
pub(super) fn ranges(space: &AddressSpace) -> Vec<(u64, u64, String, u64)> {
    space
        .flat_view()
        .ranges()
        .iter()
        .map(|r| (r.addr, r.size, r.region.name(), r.offset_in_region))
        .collect()
}

pub(super) fn r(addr: u64, size: u64, name: &str, offset: u64) -> (u64, u64, String, u64) {
    (addr, size, name.to_string(), offset)
}

/// Renders `root` as a fresh memory space (committed) and lists its ranges.
pub(super) fn render(root: &MemoryRegion) -> Vec<(u64, u64, String, u64)> {
    ranges(&AddressSpace::new("test", root.clone(), SpaceKind::Memory))
}

/// What a listener heard.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(super) enum Event {
    Add(u64, u64, String, u64),
    Del(u64, u64, String, u64),
    EvAdd(u64, u32, Option<u64>),
    EvDel(u64, u32, Option<u64>),
}

pub(super) fn add(addr: u64, size: u64, name: &str, offset: u64) -> Event {
    Event::Add(addr, size, name.to_string(), offset)
}

pub(super) fn del(addr: u64, size: u64, name: &str, offset: u64) -> Event {
    Event::Del(addr, size, name.to_string(), offset)
}

#[derive(Clone, Default)]
pub(super) struct Recorder {
    pub(super) events: Arc<Mutex<Vec<Event>>>,
    /// ram_device flag of every added range, in order.
    pub(super) ram_device_flags: Arc<Mutex<Vec<bool>>>,
}

impl Recorder {
    pub(super) fn take(&self) -> Vec<Event> {
        std::mem::take(&mut *self.events.lock().unwrap())
    }
}

impl MemoryListener for Recorder {
    fn region_add(&mut self, range: &FlatRange) {
        self.ram_device_flags.lock().unwrap().push(range.ram_device);
        self.events.lock().unwrap().push(add(
            range.addr,
            range.size,
            &range.region.name(),
            range.offset_in_region,
        ));
    }
    fn region_del(&mut self, range: &FlatRange) {
        self.events.lock().unwrap().push(del(
            range.addr,
            range.size,
            &range.region.name(),
            range.offset_in_region,
        ));
    }
    fn eventfd_add(&mut self, e: &IoEventFdRange) {
        self.events
            .lock()
            .unwrap()
            .push(Event::EvAdd(e.addr, e.len, e.datamatch));
    }
    fn eventfd_del(&mut self, e: &IoEventFdRange) {
        self.events
            .lock()
            .unwrap()
            .push(Event::EvDel(e.addr, e.len, e.datamatch));
    }
}

/// A committed memory space over `root` with a recorder attached (initial replay discarded).
pub(super) fn space_with_recorder(root: &MemoryRegion) -> (AddressSpace, Recorder) {
    let space = AddressSpace::new("memory", root.clone(), SpaceKind::Memory);
    let recorder = Recorder::default();
    space.add_listener(Box::new(recorder.clone()));
    recorder.take();
    (space, recorder)
}

pub(super) fn eventfd() -> Arc<EventFd> {
    Arc::new(EventFd::new(libc::EFD_NONBLOCK).expect("eventfd"))
}
