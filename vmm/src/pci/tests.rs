//! Bus-level tests: enumeration through ECAM and conf1, BAR sizing and (re)mapping seen by a
//! recording listener, MSI-X table/PBA/mask semantics and their KVM wiring (with a fake KVM).

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use vmm_sys_util::eventfd::EventFd;

use super::config::{COMMAND_IO, COMMAND_MEMORY};
use super::*;
use crate::interrupts::fake::FakeIrqBackend;
use crate::interrupts::{InterruptRouter, MsiMessage, Route};
use crate::memory::{FlatRange, IoAccess, MemoryListener, MemoryRegion, RegionOps, SpaceKind};

/// Where the tests put ECAM (the real layout uses the same address).
const PCI_ECAM_ADDR: u64 = 0xB000_0000;

#[derive(Clone, Default)]
struct Recorder(Arc<Mutex<Vec<String>>>);

impl Recorder {
    fn take(&self) -> Vec<String> {
        std::mem::take(&mut self.0.lock().unwrap())
    }
}

impl MemoryListener for Recorder {
    fn region_add(&mut self, r: &FlatRange) {
        self.0.lock().unwrap().push(format!(
            "add {} {:#x}+{:#x}",
            r.region.name(),
            r.addr,
            r.size
        ));
    }
    fn region_del(&mut self, r: &FlatRange) {
        self.0.lock().unwrap().push(format!(
            "del {} {:#x}+{:#x}",
            r.region.name(),
            r.addr,
            r.size
        ));
    }
}

/// Registers that remember the last write (offset, value) and read back a constant.
#[derive(Default)]
struct Scratch {
    last: Mutex<Option<(u64, u64)>>,
    reads: AtomicU64,
}

impl RegionOps for Scratch {
    fn read(&self, offset: u64, _size: u32) -> u64 {
        self.reads.fetch_add(1, Ordering::Relaxed);
        0x5A00 + offset
    }
    fn write(&self, offset: u64, _size: u32, value: u64) {
        *self.last.lock().unwrap() = Some((offset, value));
    }
}

struct Machine {
    memory: AddressSpace,
    io: AddressSpace,
    bus: Arc<PciBus>,
    memory_events: Recorder,
    io_events: Recorder,
}

impl Machine {
    fn new() -> Self {
        let system = MemoryRegion::container("system", u64::MAX);
        let ram = MemoryRegion::ram("ram", 1 << 20).unwrap();
        system.add_subregion(0, &ram, 0);
        let memory = AddressSpace::new("memory", system, SpaceKind::Memory);
        let io = AddressSpace::new("io", MemoryRegion::container("io", 0x1_0000), SpaceKind::Io);
        let memory_events = Recorder::default();
        let io_events = Recorder::default();
        memory.add_listener(Box::new(memory_events.clone()));
        io.add_listener(Box::new(io_events.clone()));
        let bus = attach(&memory, &io, PCI_ECAM_ADDR);
        memory_events.take();
        io_events.take();
        Self {
            memory,
            io,
            bus,
            memory_events,
            io_events,
        }
    }

    fn ecam_addr(slot: u8, register: u64) -> u64 {
        PCI_ECAM_ADDR + ((slot as u64) << 15) + register
    }

    fn cfg_read(&self, slot: u8, register: u64, size: usize) -> u64 {
        self.read(Self::ecam_addr(slot, register), size)
    }

    fn cfg_write(&self, slot: u8, register: u64, size: usize, value: u64) {
        self.write(Self::ecam_addr(slot, register), size, value);
    }

    fn read(&self, addr: u64, size: usize) -> u64 {
        let mut data = [0u8; 8];
        self.memory.read(addr, &mut data[..size]);
        u64::from_le_bytes(data)
    }

    fn write(&self, addr: u64, size: usize, value: u64) {
        self.memory.write(addr, &value.to_le_bytes()[..size]);
    }

    fn io_read(&self, port: u64, size: usize) -> u64 {
        let mut data = [0u8; 8];
        self.io.read(port, &mut data[..size]);
        u64::from_le_bytes(data)
    }

    fn io_write(&self, port: u64, size: usize, value: u64) {
        self.io.write(port, &value.to_le_bytes()[..size]);
    }

    /// Size a BAR the way a guest does: all-ones, read back, restore.
    fn size_bar(&self, slot: u8, index: u64) -> u32 {
        let register = 0x10 + 4 * index;
        let old = self.cfg_read(slot, register, 4);
        self.cfg_write(slot, register, 4, 0xFFFF_FFFF);
        let probed = self.cfg_read(slot, register, 4) as u32;
        self.cfg_write(slot, register, 4, old);
        probed
    }
}

const TEST_IDS: PciIds = PciIds {
    vendor_id: 0x1b36,
    device_id: 0x0005,
    revision: 0,
    class: 0x00,
    subclass: 0xff,
    prog_if: 0,
    subsystem_vendor_id: 0x1af4,
    subsystem_id: 0x1100,
};

fn test_function() -> (PciFunction, Arc<Scratch>, Arc<Scratch>, MemoryRegion) {
    let regs = Arc::new(Scratch::default());
    let ports = Arc::new(Scratch::default());
    let ram = MemoryRegion::ram("bar-ram", 1 << 20).unwrap();
    let mut f = PciFunction::new("testfn", TEST_IDS);
    f.set_bar(
        0,
        Bar::memory32(
            MemoryRegion::io("bar-regs", 0x100, regs.clone(), IoAccess::sizes(1, 4)),
            false,
        ),
    )
    .unwrap();
    f.set_bar(2, Bar::memory64(ram.clone(), true)).unwrap();
    f.set_bar(
        4,
        Bar::io(MemoryRegion::io(
            "bar-ports",
            0x20,
            ports.clone(),
            IoAccess::sizes(1, 4),
        )),
    )
    .unwrap();
    (f, regs, ports, ram)
}

#[test]
fn host_bridge_and_absent_slots_through_ecam() {
    let m = Machine::new();
    assert_eq!(m.cfg_read(0, 0, 4), 0x29C0_8086);
    assert_eq!(m.cfg_read(0, 0x0A, 2), 0x0600);
    assert_eq!(m.cfg_read(0, 0, 2), 0x8086);
    assert_eq!(m.cfg_read(0, 2, 1), 0xC0);
    // Absent devices and functions read all-ones; past 256 bytes reads zero.
    assert_eq!(m.cfg_read(5, 0, 4), 0xFFFF_FFFF);
    assert_eq!(m.cfg_read(5, 0, 2), 0xFFFF);
    assert_eq!(m.read(PCI_ECAM_ADDR + (1 << 12), 4), 0xFFFF_FFFF);
    assert_eq!(m.cfg_read(0, 0x100, 4), 0);
    // Writes to absent slots are ignored without harm.
    m.cfg_write(7, 4, 2, 0xFFFF);
}

#[test]
fn conf1_reaches_the_same_config_space() {
    let m = Machine::new();
    let (f, ..) = test_function();
    let bdf = m.bus.add_device(f).unwrap();
    assert_eq!(bdf, Bdf::new(0, 1, 0));
    assert_eq!(bdf.to_string(), "00:01.0");
    let select = |slot: u64, register: u64| 0x8000_0000 | slot << 11 | register;
    m.io_write(0xCF8, 4, select(1, 0));
    assert_eq!(m.io_read(0xCF8, 4), select(1, 0));
    assert_eq!(m.io_read(0xCFC, 4), 0x0005_1b36);
    assert_eq!(m.io_read(0xCFE, 2), 0x0005);
    assert_eq!(m.io_read(0xCFD, 1), 0x1b);
    // Config writes through conf1 (byte-wise into the command register).
    m.io_write(0xCF8, 4, select(1, 4));
    m.io_write(0xCFC, 1, COMMAND_MEMORY as u64);
    assert_eq!(m.cfg_read(1, 4, 2), COMMAND_MEMORY as u64);
    // Without the enable bit nothing is selected.
    m.io_write(0xCF8, 4, select(1, 0) & !0x8000_0000);
    assert_eq!(m.io_read(0xCFC, 4), 0xFFFF_FFFF);
    // Byte writes to the address port do not change it.
    m.io_write(0xCF8, 4, select(0, 0));
    m.io_write(0xCFB, 1, 0);
    assert_eq!(m.io_read(0xCFC, 4), 0x29C0_8086);
}

#[test]
fn bar_sizing_reports_size_and_type() {
    let m = Machine::new();
    let (f, ..) = test_function();
    m.bus.add_device(f).unwrap();
    assert_eq!(m.size_bar(1, 0), 0xFFFF_FF00);
    assert_eq!(m.size_bar(1, 1), 0);
    assert_eq!(m.size_bar(1, 2), 0xFFF0_000C);
    assert_eq!(m.size_bar(1, 3), 0xFFFF_FFFF);
    assert_eq!(m.size_bar(1, 4), 0xFFFF_FFE1);
    assert_eq!(m.size_bar(1, 5), 0);
    // Sizing with decoding off never mapped anything.
    assert!(m.memory_events.take().is_empty());
}

#[test]
fn command_register_maps_and_unmaps_bars() {
    let m = Machine::new();
    let (f, regs, ports, ram) = test_function();
    m.bus.add_device(f).unwrap();
    m.cfg_write(1, 0x10, 4, 0xC000_0000);
    m.cfg_write(1, 0x18, 4, 0x0000_0000);
    m.cfg_write(1, 0x1C, 4, 0x10);
    m.cfg_write(1, 0x20, 4, 0xC000);
    // Nothing decodes yet.
    assert_eq!(m.read(0xC000_0000, 4), 0xFFFF_FFFF);
    assert!(m.memory_events.take().is_empty());

    m.cfg_write(1, 4, 2, COMMAND_MEMORY as u64);
    let mut events = m.memory_events.take();
    events.sort();
    assert_eq!(
        events,
        vec![
            "add bar-ram 0x1000000000+0x100000",
            "add bar-regs 0xc0000000+0x100",
        ]
    );
    assert!(m.io_events.take().is_empty());
    assert_eq!(m.read(0xC000_0010, 4), 0x5A10);
    m.write(0xC000_0020, 4, 0x1234);
    assert_eq!(*regs.last.lock().unwrap(), Some((0x20, 0x1234)));
    // The RAM BAR is the region's memory.
    m.write(0x10_0000_0100, 8, 0xDEAD_BEEF_0BAD_F00D);
    let host = ram.host_addr().unwrap();
    // SAFETY: the RAM region is 1 MiB and stays alive; offset 0x100 is inside it.
    let seen = unsafe { std::ptr::read_unaligned(host.add(0x100) as *const u64) };
    assert_eq!(seen, 0xDEAD_BEEF_0BAD_F00D);
    // I/O BAR needs the IO bit.
    assert_eq!(m.io_read(0xC004, 4), 0xFFFF_FFFF);
    m.cfg_write(1, 4, 2, (COMMAND_MEMORY | COMMAND_IO) as u64);
    assert_eq!(m.io_events.take(), vec!["add bar-ports 0xc000+0x20"]);
    assert_eq!(m.io_read(0xC004, 4), 0x5A04);
    m.io_write(0xC008, 2, 0x77);
    assert_eq!(*ports.last.lock().unwrap(), Some((8, 0x77)));

    // Disabling memory decoding unmaps both memory BARs and leaves the I/O BAR alone.
    m.cfg_write(1, 4, 2, COMMAND_IO as u64);
    let mut events = m.memory_events.take();
    events.sort();
    assert_eq!(
        events,
        vec![
            "del bar-ram 0x1000000000+0x100000",
            "del bar-regs 0xc0000000+0x100",
        ]
    );
    assert!(m.io_events.take().is_empty());
    assert_eq!(m.read(0xC000_0010, 4), 0xFFFF_FFFF);
    assert_eq!(m.read(0x10_0000_0100, 8), u64::MAX);
    m.cfg_write(1, 4, 2, 0);
    assert_eq!(m.io_events.take(), vec!["del bar-ports 0xc000+0x20"]);
}

#[test]
fn moving_a_bar_moves_its_region() {
    let m = Machine::new();
    let (f, _, _, _) = test_function();
    m.bus.add_device(f).unwrap();
    m.cfg_write(1, 0x18, 4, 0);
    m.cfg_write(1, 0x1C, 4, 0x10);
    m.cfg_write(1, 4, 2, COMMAND_MEMORY as u64);
    m.write(0x10_0000_0000, 4, 0xCAFE);
    m.memory_events.take();
    // Move the 64-bit BAR by rewriting its high dword.
    m.cfg_write(1, 0x1C, 4, 0x11);
    assert_eq!(
        m.memory_events.take(),
        vec![
            "del bar-ram 0x1000000000+0x100000",
            "add bar-ram 0x1100000000+0x100000",
        ]
    );
    assert_eq!(m.read(0x10_0000_0000, 4), 0xFFFF_FFFF);
    assert_eq!(m.read(0x11_0000_0000, 4), 0xCAFE);
    assert_eq!(
        m.bus
            .with_function(Bdf::new(0, 1, 0), |f| f.bar_address(2))
            .flatten(),
        Some(0x11_0000_0000)
    );
    // Sizing a 32-bit BAR while decoding is on unmaps it (the probe address is invalid) and
    // restoring maps it again.
    m.cfg_write(1, 0x10, 4, 0xC000_0000);
    m.memory_events.take();
    assert_eq!(m.size_bar(1, 0), 0xFFFF_FF00);
    assert_eq!(
        m.memory_events.take(),
        vec![
            "del bar-regs 0xc0000000+0x100",
            "add bar-regs 0xc0000000+0x100",
        ]
    );
}

#[test]
fn a_bar_covers_ram_with_priority_one() {
    let m = Machine::new();
    let (f, _, _, _) = test_function();
    m.bus.add_device(f).unwrap();
    m.write(0x8_0000, 4, 0x1111);
    m.cfg_write(1, 0x10, 4, 0x8_0000);
    m.cfg_write(1, 4, 2, COMMAND_MEMORY as u64);
    assert_eq!(m.read(0x8_0000, 4), 0x5A00);
    m.cfg_write(1, 4, 2, 0);
    assert_eq!(m.read(0x8_0000, 4), 0x1111);
}

#[test]
fn interrupt_pin_and_line() {
    let m = Machine::new();
    let (mut f, ..) = test_function();
    f.config_mut().set_byte(config::INTERRUPT_PIN, 0);
    m.bus.add_device(f).unwrap();
    m.cfg_write(1, 0x3C, 2, 0xFFFF);
    assert_eq!(m.cfg_read(1, 0x3C, 2), 0x00FF);
}

#[test]
fn slots_fill_in_order_and_run_out() {
    let m = Machine::new();
    for slot in 1..32 {
        let f = PciFunction::new("f", TEST_IDS);
        assert_eq!(m.bus.add_device(f).unwrap(), Bdf::new(0, slot, 0));
    }
    assert_eq!(
        m.bus.add_device(PciFunction::new("f", TEST_IDS)),
        Err(BusError::Full)
    );
    assert_eq!(
        m.bus.add_device_at(0, PciFunction::new("f", TEST_IDS)),
        Err(BusError::SlotTaken(0))
    );
}

// ---------------------------------------------------------------- MSI-X

fn wait_for(what: &str, mut f: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(5);
    while !f() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(2));
    }
}

struct MsixMachine {
    m: Machine,
    backend: Arc<FakeIrqBackend>,
    router: Arc<InterruptRouter>,
    msix: Msix,
    sources: Vec<Arc<EventFd>>,
    cap: u64,
}

const MSIX_BAR: u64 = 0xC010_0000;

impl MsixMachine {
    fn new(vectors: usize) -> Self {
        let m = Machine::new();
        let backend = FakeIrqBackend::new();
        let router = InterruptRouter::new(backend.clone());
        let msix = Msix::new("t", vectors, router.clone()).unwrap();
        let sources: Vec<_> = (0..vectors)
            .map(|i| {
                let fd = Arc::new(EventFd::new(libc::EFD_NONBLOCK).unwrap());
                msix.set_vector_source(i, Some(fd.clone())).unwrap();
                fd
            })
            .collect();
        let mut f = PciFunction::new("msixfn", TEST_IDS);
        f.add_msix(&msix, 1).unwrap();
        m.bus.add_device(f).unwrap();
        m.cfg_write(1, 0x14, 4, MSIX_BAR);
        m.cfg_write(1, 4, 2, COMMAND_MEMORY as u64);
        let cap = m.cfg_read(1, 0x34, 1);
        Self {
            m,
            backend,
            router,
            msix,
            sources,
            cap,
        }
    }

    fn control(&self) -> u64 {
        self.m.cfg_read(1, self.cap + 2, 2)
    }

    fn set_control(&self, bits: u16) {
        self.m.cfg_write(1, self.cap + 2, 2, bits as u64);
    }

    fn program(&self, vector: u64, data: u32, masked: bool) {
        let entry = MSIX_BAR + 16 * vector;
        self.m.write(entry, 4, 0xFEE0_0000);
        self.m.write(entry + 4, 4, 0);
        self.m.write(entry + 8, 4, data as u64);
        self.m.write(entry + 12, 4, masked as u64);
    }

    fn mask(&self, vector: u64, masked: bool) {
        self.m.write(MSIX_BAR + 16 * vector + 12, 4, masked as u64);
    }

    fn pba(&self) -> u64 {
        self.m.read(MSIX_BAR + 2048, 8)
    }

    fn delivered(&self) -> Vec<u32> {
        self.backend
            .snapshot(|s| s.signalled.iter().map(|m| m.data).collect())
    }
}

#[test]
fn exclusive_bar_layouts_match_qemu() {
    let l = MsixLayout::exclusive_bar(1);
    assert_eq!((l.table_offset, l.pba_offset, l.bar_size), (0, 2048, 4096));
    assert_eq!(l.pba_size(), 8);
    let l = MsixLayout::exclusive_bar(128);
    assert_eq!((l.pba_offset, l.bar_size), (2048, 4096));
    let l = MsixLayout::exclusive_bar(129);
    assert_eq!((l.pba_offset, l.pba_size(), l.bar_size), (2064, 24, 4096));
    let l = MsixLayout::exclusive_bar(256);
    assert_eq!((l.pba_offset, l.bar_size), (4096, 8192));
    let l = MsixLayout::exclusive_bar(2048);
    assert_eq!(
        (l.pba_offset, l.pba_size(), l.bar_size),
        (32768, 256, 65536)
    );
    let router = InterruptRouter::new(FakeIrqBackend::new());
    assert!(matches!(
        Msix::new("x", 0, router.clone()),
        Err(MsixError::BadVectorCount(0))
    ));
    assert!(Msix::new("x", 2049, router).is_err());
}

#[test]
fn msix_capability_and_table_defaults() {
    let t = MsixMachine::new(4);
    assert_eq!(t.m.cfg_read(1, 6, 2) & 0x10, 0x10, "capability list bit");
    assert_eq!(t.m.cfg_read(1, t.cap, 1), 0x11);
    assert_eq!(t.control(), 3, "table size N-1, disabled, not masked");
    assert_eq!(t.m.cfg_read(1, t.cap + 4, 4), 1, "table at 0 in BAR1");
    assert_eq!(
        t.m.cfg_read(1, t.cap + 8, 4),
        2048 | 1,
        "PBA at 2048 in BAR1"
    );
    assert_eq!(t.m.size_bar(1, 1), 0xFFFF_F000);
    // Entries start masked; the table size field is read-only.
    assert_eq!(t.m.read(MSIX_BAR + 12, 4), 1);
    t.set_control(0xFFFF);
    assert_eq!(t.control(), 0xC003);
    t.set_control(0);
    // Table entries are plain storage; vector control keeps only the mask bit.
    t.m.write(MSIX_BAR + 16 * 3, 8, 0x1_FEE0_1000);
    t.m.write(MSIX_BAR + 16 * 3 + 8, 4, 0x4455);
    t.m.write(MSIX_BAR + 16 * 3 + 12, 4, 0xFFFF_FFFF);
    assert_eq!(t.m.read(MSIX_BAR + 16 * 3, 8), 0x1_FEE0_1000);
    assert_eq!(t.m.read(MSIX_BAR + 16 * 3 + 8, 8), 0x1_0000_4455);
    // Byte accesses are not valid for the table.
    t.m.write(MSIX_BAR + 16 * 3 + 8, 1, 0);
    assert_eq!(t.m.read(MSIX_BAR + 16 * 3 + 8, 4), 0x4455);
    assert_eq!(t.pba(), 0);
}

#[test]
fn unmasked_vectors_are_routed_and_bound_to_irqfd() {
    let t = MsixMachine::new(2);
    t.program(0, 0x40, false);
    t.program(1, 0x41, true);
    // Disabled: no routes, nothing bound.
    assert!(t.msix.route(0).is_none());
    assert!(!t.msix.is_irqfd_bound(0));
    t.set_control(msix::CONTROL_ENABLE);
    let (gsi0, m0) = t.msix.route(0).unwrap();
    assert_eq!(
        m0,
        MsiMessage {
            address: 0xFEE0_0000,
            data: 0x40
        }
    );
    assert!(t.backend.is_bound(&t.sources[0], gsi0));
    let (gsi1, _) = t.msix.route(1).unwrap();
    assert!(!t.backend.is_bound(&t.sources[1], gsi1), "masked vector");
    // Legacy pins survive in the table KVM got.
    let routes = t.router.routes();
    for pin in 0..24 {
        assert!(routes.iter().any(|r| matches!(r,
            Route::Irqchip { gsi, chip: 2, pin: p } if *gsi == pin && *p == pin)));
    }
    assert!(routes.contains(&Route::Msi {
        gsi: gsi0,
        message: m0
    }));
    // A signal on the bound eventfd is KVM's business: "deliver" it.
    t.sources[0].write(1).unwrap();
    assert_eq!(t.backend.deliver_bound(&t.sources[0]), 1);
    assert_eq!(t.delivered(), vec![0x40]);
    // Changing the message while unmasked updates the route in place.
    t.m.write(MSIX_BAR + 8, 4, 0x50);
    assert_eq!(t.router.msi_route(gsi0).unwrap().data, 0x50);
    assert!(t.backend.is_bound(&t.sources[0], gsi0));
    // Disabling MSI-X unbinds and removes the routes.
    t.set_control(0);
    assert!(!t.backend.is_bound(&t.sources[0], gsi0));
    assert!(t.msix.route(0).is_none());
    assert!(!t
        .router
        .routes()
        .iter()
        .any(|r| matches!(r, Route::Msi { .. })));
}

#[test]
fn masked_vector_sets_pending_and_unmask_delivers_once() {
    let t = MsixMachine::new(3);
    t.program(2, 0x42, true);
    t.set_control(msix::CONTROL_ENABLE);
    t.sources[2].write(1).unwrap();
    // The watcher thread (or the PBA read itself) notices the signal.
    wait_for("pending bit", || t.pba() == 1 << 2);
    assert!(t.msix.is_pending(2));
    assert!(t.delivered().is_empty());
    // Unmask: bound again and the pending interrupt re-signalled through the irqfd.
    t.mask(2, false);
    assert_eq!(t.pba(), 0);
    let (gsi, _) = t.msix.route(2).unwrap();
    assert!(t.backend.is_bound(&t.sources[2], gsi));
    assert_eq!(t.backend.deliver_bound(&t.sources[2]), 1);
    assert_eq!(t.delivered(), vec![0x42]);
    assert_eq!(t.backend.deliver_bound(&t.sources[2]), 0, "delivered once");
}

#[test]
fn function_mask_masks_every_vector() {
    let t = MsixMachine::new(2);
    t.program(0, 0x30, false);
    t.program(1, 0x31, false);
    t.set_control(msix::CONTROL_ENABLE | msix::CONTROL_FUNCTION_MASK);
    assert!(t.msix.is_masked(0) && t.msix.is_masked(1));
    assert!(!t.msix.is_irqfd_bound(0) && !t.msix.is_irqfd_bound(1));
    t.sources[1].write(1).unwrap();
    wait_for("pending bit", || t.pba() == 0b10);
    t.set_control(msix::CONTROL_ENABLE);
    assert!(t.msix.is_irqfd_bound(0) && t.msix.is_irqfd_bound(1));
    assert_eq!(t.pba(), 0);
    assert_eq!(t.backend.deliver_bound(&t.sources[1]), 1);
    assert_eq!(t.delivered(), vec![0x31]);
}

#[test]
fn signals_while_disabled_are_dropped() {
    let t = MsixMachine::new(1);
    t.program(0, 0x20, false);
    t.sources[0].write(1).unwrap();
    // Give the watcher time to consume and drop it.
    wait_for("watcher to drain", || t.sources[0].read().is_err());
    assert_eq!(t.pba(), 0);
    t.set_control(msix::CONTROL_ENABLE);
    assert_eq!(t.pba(), 0);
    assert_eq!(t.backend.deliver_bound(&t.sources[0]), 0);
}

#[test]
fn notify_without_source_uses_signal_msi_or_pending() {
    let backend = FakeIrqBackend::new();
    let router = InterruptRouter::new(backend.clone());
    let msix = Msix::new("n", 1, router).unwrap();
    let m = Machine::new();
    let mut f = PciFunction::new("n", TEST_IDS);
    f.add_msix(&msix, 1).unwrap();
    m.bus.add_device(f).unwrap();
    m.cfg_write(1, 0x14, 4, MSIX_BAR);
    m.cfg_write(1, 4, 2, COMMAND_MEMORY as u64);
    let cap = m.cfg_read(1, 0x34, 1);
    m.write(MSIX_BAR, 4, 0xFEE0_0000);
    m.write(MSIX_BAR + 8, 4, 0x66);
    msix.notify(0); // disabled: dropped
    m.cfg_write(1, cap + 2, 2, msix::CONTROL_ENABLE as u64);
    msix.notify(0); // masked: pending
    assert!(msix.is_pending(0));
    m.write(MSIX_BAR + 12, 4, 0); // unmask: delivered by KVM_SIGNAL_MSI
    assert!(!msix.is_pending(0));
    msix.notify(0);
    let data: Vec<u32> = backend.snapshot(|s| s.signalled.iter().map(|m| m.data).collect());
    assert_eq!(data, vec![0x66, 0x66]);
}

#[test]
fn replacing_a_source_rewires_the_vector() {
    let t = MsixMachine::new(1);
    t.program(0, 0x45, false);
    t.set_control(msix::CONTROL_ENABLE);
    let (gsi, _) = t.msix.route(0).unwrap();
    let new = Arc::new(EventFd::new(libc::EFD_NONBLOCK).unwrap());
    t.msix.set_vector_source(0, Some(new.clone())).unwrap();
    assert!(!t.backend.is_bound(&t.sources[0], gsi));
    let (gsi2, _) = t.msix.route(0).unwrap();
    assert!(t.backend.is_bound(&new, gsi2));
    t.msix.set_vector_source(0, None).unwrap();
    assert!(t.msix.route(0).is_none());
    assert!(t.backend.snapshot(|s| s.irqfds.is_empty()));
    assert!(t.msix.set_vector_source(1, None).is_err());
}

#[test]
fn dropping_the_device_releases_routes_and_irqfds() {
    let backend = FakeIrqBackend::new();
    let router = InterruptRouter::new(backend.clone());
    {
        let msix = Msix::new("d", 1, router.clone()).unwrap();
        let fd = Arc::new(EventFd::new(libc::EFD_NONBLOCK).unwrap());
        msix.set_vector_source(0, Some(fd)).unwrap();
        let mut config = ConfigSpace::new();
        let cap = msix.add_capability(&mut config, 1).unwrap();
        msix.table_region();
        config.write(cap + 2, 2, msix::CONTROL_ENABLE as u32);
        msix.control_written(&config, cap);
        // Unmask through the table ops.
        let table = msix.table_region();
        let space = AddressSpace::new("t", table, SpaceKind::Memory);
        space.write(12, &0u32.to_le_bytes());
        assert!(msix.is_irqfd_bound(0));
    }
    assert!(backend.snapshot(|s| s.irqfds.is_empty()));
    assert!(!router
        .routes()
        .iter()
        .any(|r| matches!(r, Route::Msi { .. })));
}

#[test]
fn enabling_many_vectors_pushes_the_routing_table_once() {
    let t = MsixMachine::new(64);
    for i in 0..64 {
        t.program(i, 0x40 + i as u32, i % 2 == 0);
    }
    let calls = t.backend.snapshot(|s| s.set_routing_calls);
    t.set_control(msix::CONTROL_ENABLE);
    assert_eq!(t.backend.snapshot(|s| s.set_routing_calls), calls + 1);
    assert_eq!(
        t.router
            .routes()
            .iter()
            .filter(|r| matches!(r, Route::Msi { .. }))
            .count(),
        64
    );
    assert_eq!(
        t.backend.snapshot(|s| s.irqfds.len()),
        32,
        "odd vectors unmasked"
    );
    t.set_control(0);
    assert_eq!(t.backend.snapshot(|s| s.set_routing_calls), calls + 2);
    assert!(t.backend.snapshot(|s| s.irqfds.is_empty()));
}

#[test]
fn signals_during_disable_do_not_become_pending_after_enable() {
    let t = MsixMachine::new(1);
    t.program(0, 0x20, true);
    t.sources[0].write(1).unwrap();
    t.set_control(msix::CONTROL_ENABLE);
    // Whether the watcher dropped it before the enable or the enable drained it, it is gone.
    assert_eq!(t.pba(), 0);
    t.mask(0, false);
    assert_eq!(t.backend.deliver_bound(&t.sources[0]), 0);
}
