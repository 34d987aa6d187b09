//! Interrupt routing: the VM's whole GSI routing table, GSI allocation, MSI routes and irqfds.
//!
//! `KVM_SET_GSI_ROUTING` replaces the *entire* table, so the VMM keeps its own copy and pushes it
//! whole after every change. The copy starts with the routes KVM installs by default for an
//! in-kernel irqchip (GSI 0..15 to both the PIC and the IOAPIC, 16..23 to the IOAPIC), so adding
//! MSI routes never disconnects the legacy pins (serial, PIT). MSI routes get GSIs from 24 up; a
//! freed GSI is reused.
//!
//! Design decision: the KVM calls go through the small [`IrqBackend`] trait (implemented for
//! `VmFd`) so that the table, the MSI-X state machine built on it and their tests run without
//! `/dev/kvm`.

use std::collections::BTreeMap;
use std::io;
use std::sync::{Arc, Mutex, MutexGuard};

use kvm_bindings::{
    kvm_irq_routing_entry, kvm_msi, KvmIrqRouting, KVM_IRQCHIP_IOAPIC, KVM_IRQCHIP_PIC_MASTER,
    KVM_IRQCHIP_PIC_SLAVE, KVM_IRQ_ROUTING_IRQCHIP, KVM_IRQ_ROUTING_MSI, KVM_MAX_IRQ_ROUTES,
};
use kvm_ioctls::VmFd;
use vmm_sys_util::eventfd::EventFd;

/// Number of IOAPIC input pins (GSIs 0..23 are the legacy pins).
pub const IOAPIC_PINS: u32 = 24;
/// Number of legacy PIC lines (GSIs 0..15 are also routed to the 8259 pair).
pub const PIC_LINES: u32 = 16;
/// First GSI handed out for MSI routes.
pub const FIRST_MSI_GSI: u32 = IOAPIC_PINS;

/// An MSI message: what a device writes (address/data) to raise an interrupt.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct MsiMessage {
    /// The address the device writes to (the LAPIC window, with the destination CPU).
    pub address: u64,
    /// The value it writes (vector and delivery mode).
    pub data: u32,
}

/// Errors of the interrupt router.
#[derive(Debug, thiserror::Error)]
pub enum InterruptError {
    /// Every GSI KVM allows is in use.
    #[error("no free GSI left (KVM allows {KVM_MAX_IRQ_ROUTES} routes)")]
    GsiExhausted,
    /// No MSI route has this GSI (never added, or removed).
    #[error("GSI {0} has no MSI route")]
    UnknownGsi(u32),
    /// KVM refused the routing table.
    #[error("KVM_SET_GSI_ROUTING failed: {0}")]
    SetRouting(#[source] io::Error),
    /// KVM could not attach an eventfd to a GSI.
    #[error("KVM_IRQFD (bind fd to GSI {gsi}) failed: {source}")]
    BindIrqfd {
        /// The GSI.
        gsi: u32,
        /// KVM's error.
        #[source]
        source: io::Error,
    },
    /// KVM could not detach an eventfd from a GSI.
    #[error("KVM_IRQFD (unbind fd from GSI {gsi}) failed: {source}")]
    UnbindIrqfd {
        /// The GSI.
        gsi: u32,
        /// KVM's error.
        #[source]
        source: io::Error,
    },
    /// KVM could not inject an MSI.
    #[error("KVM_SIGNAL_MSI failed: {0}")]
    SignalMsi(#[source] io::Error),
}

/// The KVM operations the router needs. Implemented for `VmFd`; tests use a recording fake.
pub trait IrqBackend: Send + Sync {
    /// Replaces KVM's whole GSI routing table (KVM_SET_GSI_ROUTING).
    fn set_gsi_routing(&self, entries: &[kvm_irq_routing_entry]) -> io::Result<()>;
    /// Makes KVM inject `gsi` when `fd` is signalled (KVM_IRQFD).
    fn register_irqfd(&self, fd: &EventFd, gsi: u32) -> io::Result<()>;
    /// Undoes [`IrqBackend::register_irqfd`].
    fn unregister_irqfd(&self, fd: &EventFd, gsi: u32) -> io::Result<()>;
    /// Injects one MSI now (KVM_SIGNAL_MSI).
    fn signal_msi(&self, message: MsiMessage) -> io::Result<()>;
}

fn errno_to_io(e: vmm_sys_util::errno::Error) -> io::Error {
    io::Error::from_raw_os_error(e.errno())
}

impl IrqBackend for VmFd {
    fn set_gsi_routing(&self, entries: &[kvm_irq_routing_entry]) -> io::Result<()> {
        let table = KvmIrqRouting::from_entries(entries)
            .map_err(|e| io::Error::new(io::ErrorKind::InvalidInput, format!("{e:?}")))?;
        VmFd::set_gsi_routing(self, &table).map_err(errno_to_io)
    }
    fn register_irqfd(&self, fd: &EventFd, gsi: u32) -> io::Result<()> {
        VmFd::register_irqfd(self, fd, gsi).map_err(errno_to_io)
    }
    fn unregister_irqfd(&self, fd: &EventFd, gsi: u32) -> io::Result<()> {
        VmFd::unregister_irqfd(self, fd, gsi).map_err(errno_to_io)
    }
    fn signal_msi(&self, message: MsiMessage) -> io::Result<()> {
        let msi = kvm_msi {
            address_lo: message.address as u32,
            address_hi: (message.address >> 32) as u32,
            data: message.data,
            ..Default::default()
        };
        VmFd::signal_msi(self, msi).map(|_| ()).map_err(errno_to_io)
    }
}

/// One route of the table, in a form that is easy to compare in tests.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Route {
    /// GSI to an input of an in-kernel interrupt controller.
    Irqchip {
        /// The GSI.
        gsi: u32,
        /// The interrupt controller (KVM_IRQCHIP_*).
        chip: u32,
        /// Its input pin.
        pin: u32,
    },
    /// GSI to an MSI message.
    Msi {
        /// The GSI.
        gsi: u32,
        /// The message KVM writes when the GSI fires.
        message: MsiMessage,
    },
}

impl Route {
    /// The GSI this route serves.
    pub fn gsi(&self) -> u32 {
        match *self {
            Route::Irqchip { gsi, .. } | Route::Msi { gsi, .. } => gsi,
        }
    }

    fn to_kvm(self) -> kvm_irq_routing_entry {
        let mut entry = kvm_irq_routing_entry {
            gsi: self.gsi(),
            ..Default::default()
        };
        match self {
            Route::Irqchip { chip, pin, .. } => {
                entry.type_ = KVM_IRQ_ROUTING_IRQCHIP;
                entry.u.irqchip.irqchip = chip;
                entry.u.irqchip.pin = pin;
            }
            Route::Msi { message, .. } => {
                entry.type_ = KVM_IRQ_ROUTING_MSI;
                entry.u.msi.address_lo = message.address as u32;
                entry.u.msi.address_hi = (message.address >> 32) as u32;
                entry.u.msi.data = message.data;
            }
        }
        entry
    }
}

/// The routes KVM installs by default with `KVM_CREATE_IRQCHIP` (see the kernel's default
/// routing): GSI 0..15 to the PIC pair and the IOAPIC, 16..23 to the IOAPIC only.
pub fn legacy_routes() -> Vec<Route> {
    let mut routes = Vec::new();
    for gsi in 0..IOAPIC_PINS {
        if gsi < PIC_LINES {
            let chip = if gsi < 8 {
                KVM_IRQCHIP_PIC_MASTER
            } else {
                KVM_IRQCHIP_PIC_SLAVE
            };
            routes.push(Route::Irqchip {
                gsi,
                chip,
                pin: gsi % 8,
            });
        }
        routes.push(Route::Irqchip {
            gsi,
            chip: KVM_IRQCHIP_IOAPIC,
            pin: gsi,
        });
    }
    routes
}

struct RouterState {
    legacy: Vec<Route>,
    /// MSI routes by GSI.
    msi: BTreeMap<u32, MsiMessage>,
}

impl RouterState {
    fn table(&self) -> Vec<Route> {
        let mut routes = self.legacy.clone();
        routes.extend(
            self.msi
                .iter()
                .map(|(&gsi, &message)| Route::Msi { gsi, message }),
        );
        routes
    }

    fn free_gsi(&self) -> Option<u32> {
        let mut candidate = FIRST_MSI_GSI;
        for &gsi in self.msi.keys() {
            if gsi != candidate {
                break;
            }
            candidate += 1;
        }
        let limit = KVM_MAX_IRQ_ROUTES - self.legacy.len();
        (self.msi.len() < limit).then_some(candidate)
    }
}

/// The VM's GSI routing table and irqfd bindings. Shared (`Arc`) by all devices; thread-safe.
pub struct InterruptRouter {
    backend: Arc<dyn IrqBackend>,
    state: Mutex<RouterState>,
}

impl InterruptRouter {
    /// A router for a VM with an in-kernel irqchip (PIC + IOAPIC): keeps the legacy routes.
    /// Nothing is pushed to KVM until the first MSI route is added (KVM's default table is
    /// already equal to the legacy routes).
    pub fn new(backend: Arc<dyn IrqBackend>) -> Arc<Self> {
        Self::with_legacy_routes(backend, legacy_routes())
    }

    /// A router whose table starts with `legacy` (e.g. empty for a split irqchip).
    pub fn with_legacy_routes(backend: Arc<dyn IrqBackend>, legacy: Vec<Route>) -> Arc<Self> {
        Arc::new(Self {
            backend,
            state: Mutex::new(RouterState {
                legacy,
                msi: BTreeMap::new(),
            }),
        })
    }

    fn lock(&self) -> MutexGuard<'_, RouterState> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn push(&self, state: &RouterState) -> Result<(), InterruptError> {
        let entries: Vec<kvm_irq_routing_entry> =
            state.table().into_iter().map(Route::to_kvm).collect();
        self.backend
            .set_gsi_routing(&entries)
            .map_err(InterruptError::SetRouting)
    }

    /// Allocate a GSI and route it to `message`. Returns the GSI.
    pub fn add_msi_route(&self, message: MsiMessage) -> Result<u32, InterruptError> {
        let mut state = self.lock();
        let gsi = state.free_gsi().ok_or(InterruptError::GsiExhausted)?;
        state.msi.insert(gsi, message);
        if let Err(e) = self.push(&state) {
            state.msi.remove(&gsi);
            return Err(e);
        }
        Ok(gsi)
    }

    /// Point an existing MSI route at a new message. An irqfd bound to the GSI follows.
    pub fn update_msi_route(&self, gsi: u32, message: MsiMessage) -> Result<(), InterruptError> {
        let mut state = self.lock();
        let slot = state
            .msi
            .get_mut(&gsi)
            .ok_or(InterruptError::UnknownGsi(gsi))?;
        if *slot == message {
            return Ok(());
        }
        let old = std::mem::replace(slot, message);
        if let Err(e) = self.push(&state) {
            state.msi.insert(gsi, old);
            return Err(e);
        }
        Ok(())
    }

    /// Remove an MSI route and free its GSI. Unbind its irqfds first.
    pub fn remove_msi_route(&self, gsi: u32) -> Result<(), InterruptError> {
        let mut state = self.lock();
        let old = state
            .msi
            .remove(&gsi)
            .ok_or(InterruptError::UnknownGsi(gsi))?;
        if let Err(e) = self.push(&state) {
            state.msi.insert(gsi, old);
            return Err(e);
        }
        Ok(())
    }

    /// Several route changes pushed to KVM as one `KVM_SET_GSI_ROUTING` (at `commit`, or when
    /// the batch is dropped). Each push costs KVM an RCU synchronisation, so enabling MSI-X on
    /// a device with many vectors must not push once per vector. Other router calls wait
    /// until the batch ends.
    pub fn batch(&self) -> RouteBatch<'_> {
        RouteBatch {
            router: self,
            state: self.lock(),
            dirty: false,
        }
    }

    /// Let KVM inject `gsi` whenever `fd` is signalled (no VMM userspace on that path). If the
    /// eventfd already holds a count, KVM injects at once.
    pub fn bind_irqfd(&self, fd: &EventFd, gsi: u32) -> Result<(), InterruptError> {
        self.backend
            .register_irqfd(fd, gsi)
            .map_err(|source| InterruptError::BindIrqfd { gsi, source })
    }

    /// Detaches `fd` from `gsi`: signals on it no longer reach the guest.
    pub fn unbind_irqfd(&self, fd: &EventFd, gsi: u32) -> Result<(), InterruptError> {
        self.backend
            .unregister_irqfd(fd, gsi)
            .map_err(|source| InterruptError::UnbindIrqfd { gsi, source })
    }

    /// Inject one MSI directly (KVM_SIGNAL_MSI), without a route.
    pub fn signal_msi(&self, message: MsiMessage) -> Result<(), InterruptError> {
        self.backend
            .signal_msi(message)
            .map_err(InterruptError::SignalMsi)
    }

    /// The whole table as it was last pushed (legacy routes first, then MSI routes by GSI).
    pub fn routes(&self) -> Vec<Route> {
        self.lock().table()
    }

    /// The message of an MSI route.
    pub fn msi_route(&self, gsi: u32) -> Option<MsiMessage> {
        self.lock().msi.get(&gsi).copied()
    }
}

/// See [`InterruptRouter::batch`]. If the final push fails the table keeps the changes (it is
/// the desired state; the next push retries) and the error is returned (or logged on drop).
pub struct RouteBatch<'a> {
    router: &'a InterruptRouter,
    state: MutexGuard<'a, RouterState>,
    dirty: bool,
}

impl RouteBatch<'_> {
    /// Adds a route for `message` on a free GSI and returns that GSI.
    pub fn add_msi_route(&mut self, message: MsiMessage) -> Result<u32, InterruptError> {
        let gsi = self.state.free_gsi().ok_or(InterruptError::GsiExhausted)?;
        self.state.msi.insert(gsi, message);
        self.dirty = true;
        Ok(gsi)
    }

    /// Points an existing MSI route at a new message (the guest rewrote the MSI-X entry).
    pub fn update_msi_route(
        &mut self,
        gsi: u32,
        message: MsiMessage,
    ) -> Result<(), InterruptError> {
        let slot = self
            .state
            .msi
            .get_mut(&gsi)
            .ok_or(InterruptError::UnknownGsi(gsi))?;
        if *slot != message {
            *slot = message;
            self.dirty = true;
        }
        Ok(())
    }

    /// Frees an MSI route's GSI for reuse.
    pub fn remove_msi_route(&mut self, gsi: u32) -> Result<(), InterruptError> {
        self.state
            .msi
            .remove(&gsi)
            .ok_or(InterruptError::UnknownGsi(gsi))?;
        self.dirty = true;
        Ok(())
    }

    /// Push the table if anything changed.
    pub fn commit(mut self) -> Result<(), InterruptError> {
        self.push_if_dirty()
    }

    fn push_if_dirty(&mut self) -> Result<(), InterruptError> {
        if !std::mem::take(&mut self.dirty) {
            return Ok(());
        }
        self.router.push(&self.state)
    }
}

impl Drop for RouteBatch<'_> {
    fn drop(&mut self) {
        if let Err(e) = self.push_if_dirty() {
            log::warn!("{e}");
        }
    }
}

/// A recording [`IrqBackend`] for tests: keeps the last table, the bound irqfds and signalled
/// MSIs, and can deliver "interrupts" by reading bound eventfds. Other crates' tests and the fuzz
/// targets get it with the `test-util` feature.
#[cfg(any(test, feature = "test-util"))]
pub mod fake {
    use super::*;
    use std::os::fd::AsRawFd;

    /// What the fake was asked to do.
    #[derive(Default)]
    pub struct FakeState {
        /// The last routing table pushed.
        pub table: Vec<kvm_irq_routing_entry>,
        /// How often a table was pushed (batching tests count them).
        pub set_routing_calls: usize,
        /// (raw fd, gsi) pairs currently bound.
        pub irqfds: Vec<(i32, u32)>,
        /// MSIs injected directly, in order.
        pub signalled: Vec<MsiMessage>,
    }

    /// The fake backend itself.
    #[derive(Default)]
    pub struct FakeIrqBackend {
        /// Its record, behind a lock as the trait takes `&self`.
        pub state: Mutex<FakeState>,
    }

    impl FakeState {
        /// The MSI routes of the last table pushed, by GSI.
        pub fn msi_routes(&self) -> std::collections::BTreeMap<u32, MsiMessage> {
            self.table
                .iter()
                .filter(|e| e.type_ == KVM_IRQ_ROUTING_MSI)
                .map(|e| {
                    // SAFETY: type_ says the union holds the msi member.
                    let msi = unsafe { e.u.msi };
                    let message = MsiMessage {
                        address: (msi.address_hi as u64) << 32 | msi.address_lo as u64,
                        data: msi.data,
                    };
                    (e.gsi, message)
                })
                .collect()
        }
    }

    impl FakeIrqBackend {
        /// A fresh fake with an empty record.
        pub fn new() -> Arc<Self> {
            Arc::new(Self::default())
        }
        /// Runs `f` on the record under the lock.
        pub fn snapshot<R>(&self, f: impl FnOnce(&FakeState) -> R) -> R {
            f(&self.state.lock().unwrap())
        }
        /// True when `fd` is bound to `gsi` right now.
        pub fn is_bound(&self, fd: &EventFd, gsi: u32) -> bool {
            self.snapshot(|s| s.irqfds.contains(&(fd.as_raw_fd(), gsi)))
        }
        /// What KVM would do for a bound irqfd: consume the eventfd count and "inject" the
        /// route's MSI (recorded in `signalled`). Returns how many were injected.
        pub fn deliver_bound(&self, fd: &EventFd) -> usize {
            let mut state = self.state.lock().unwrap();
            let Some(&(_, gsi)) = state.irqfds.iter().find(|(f, _)| *f == fd.as_raw_fd()) else {
                return 0;
            };
            let Ok(count) = fd.read() else { return 0 };
            let entry = state
                .table
                .iter()
                .find(|e| e.gsi == gsi && e.type_ == KVM_IRQ_ROUTING_MSI)
                .copied();
            let Some(entry) = entry else { return 0 };
            // SAFETY: type_ says the union holds the msi member.
            let msi = unsafe { entry.u.msi };
            let message = MsiMessage {
                address: (msi.address_hi as u64) << 32 | msi.address_lo as u64,
                data: msi.data,
            };
            for _ in 0..count {
                state.signalled.push(message);
            }
            count as usize
        }
    }

    impl IrqBackend for FakeIrqBackend {
        fn set_gsi_routing(&self, entries: &[kvm_irq_routing_entry]) -> io::Result<()> {
            let mut state = self.state.lock().unwrap();
            state.table = entries.to_vec();
            state.set_routing_calls += 1;
            Ok(())
        }
        fn register_irqfd(&self, fd: &EventFd, gsi: u32) -> io::Result<()> {
            let mut state = self.state.lock().unwrap();
            if state.irqfds.contains(&(fd.as_raw_fd(), gsi)) {
                return Err(io::Error::from_raw_os_error(libc::EBUSY));
            }
            state.irqfds.push((fd.as_raw_fd(), gsi));
            Ok(())
        }
        fn unregister_irqfd(&self, fd: &EventFd, gsi: u32) -> io::Result<()> {
            let mut state = self.state.lock().unwrap();
            let before = state.irqfds.len();
            state.irqfds.retain(|&b| b != (fd.as_raw_fd(), gsi));
            if state.irqfds.len() == before {
                return Err(io::Error::from_raw_os_error(libc::ENOENT));
            }
            Ok(())
        }
        fn signal_msi(&self, message: MsiMessage) -> io::Result<()> {
            self.state.lock().unwrap().signalled.push(message);
            Ok(())
        }
    }
}

#[cfg(test)]
mod tests {
    use super::fake::FakeIrqBackend;
    use super::*;

    fn msg(n: u32) -> MsiMessage {
        MsiMessage {
            address: 0xFEE0_0000,
            data: n,
        }
    }

    #[test]
    fn legacy_table_matches_kvm_default() {
        let routes = legacy_routes();
        // 16 PIC + 24 IOAPIC routes.
        assert_eq!(routes.len(), 40);
        assert!(routes.contains(&Route::Irqchip {
            gsi: 4,
            chip: KVM_IRQCHIP_PIC_MASTER,
            pin: 4
        }));
        assert!(routes.contains(&Route::Irqchip {
            gsi: 12,
            chip: KVM_IRQCHIP_PIC_SLAVE,
            pin: 4
        }));
        assert!(routes.contains(&Route::Irqchip {
            gsi: 23,
            chip: KVM_IRQCHIP_IOAPIC,
            pin: 23
        }));
        assert!(!routes.iter().any(|r| matches!(r,
            Route::Irqchip { gsi, chip, .. } if *gsi >= 16 && *chip != KVM_IRQCHIP_IOAPIC)));
    }

    #[test]
    fn msi_routes_keep_legacy_pins_in_the_pushed_table() {
        let backend = FakeIrqBackend::new();
        let router = InterruptRouter::new(backend.clone());
        let a = router.add_msi_route(msg(0x40)).unwrap();
        let b = router.add_msi_route(msg(0x41)).unwrap();
        assert_eq!((a, b), (24, 25));
        backend.snapshot(|s| {
            assert_eq!(s.table.len(), 42);
            for gsi in 0..24 {
                assert!(s.table.iter().any(|e| e.gsi == gsi
                    && e.type_ == KVM_IRQ_ROUTING_IRQCHIP
                    // SAFETY: irqchip member per type_.
                    && unsafe { e.u.irqchip.irqchip } == KVM_IRQCHIP_IOAPIC));
            }
            let msi: Vec<_> = s
                .table
                .iter()
                .filter(|e| e.type_ == KVM_IRQ_ROUTING_MSI)
                .map(|e| {
                    // SAFETY: the filter above kept MSI entries, whose union member is `msi`.
                    let (address_lo, data) = unsafe { (e.u.msi.address_lo, e.u.msi.data) };
                    (e.gsi, address_lo, data)
                })
                .collect();
            assert_eq!(msi, vec![(24, 0xFEE0_0000, 0x40), (25, 0xFEE0_0000, 0x41)]);
        });
    }

    #[test]
    fn gsis_are_reused_and_updates_replace_the_message() {
        let backend = FakeIrqBackend::new();
        let router = InterruptRouter::new(backend.clone());
        let a = router.add_msi_route(msg(1)).unwrap();
        let b = router.add_msi_route(msg(2)).unwrap();
        router.remove_msi_route(a).unwrap();
        assert_eq!(router.add_msi_route(msg(3)).unwrap(), a);
        router.update_msi_route(b, msg(9)).unwrap();
        assert_eq!(router.msi_route(b), Some(msg(9)));
        assert!(matches!(
            router.update_msi_route(999, msg(1)),
            Err(InterruptError::UnknownGsi(999))
        ));
        assert!(matches!(
            router.remove_msi_route(999),
            Err(InterruptError::UnknownGsi(999))
        ));
        let calls = backend.snapshot(|s| s.set_routing_calls);
        // Unchanged message: no ioctl.
        router.update_msi_route(b, msg(9)).unwrap();
        assert_eq!(backend.snapshot(|s| s.set_routing_calls), calls);
    }

    #[test]
    fn a_batch_pushes_once() {
        let backend = FakeIrqBackend::new();
        let router = InterruptRouter::new(backend.clone());
        let keep = router.add_msi_route(msg(1)).unwrap();
        let calls = backend.snapshot(|s| s.set_routing_calls);
        let mut batch = router.batch();
        let gsis: Vec<u32> = (0..100)
            .map(|i| batch.add_msi_route(msg(i)).unwrap())
            .collect();
        batch.update_msi_route(keep, msg(7)).unwrap();
        batch.remove_msi_route(gsis[5]).unwrap();
        assert!(batch.remove_msi_route(9999).is_err());
        batch.commit().unwrap();
        assert_eq!(backend.snapshot(|s| s.set_routing_calls), calls + 1);
        assert_eq!(backend.snapshot(|s| s.table.len()), 40 + 100);
        assert_eq!(router.msi_route(keep), Some(msg(7)));
        assert_eq!(router.msi_route(gsis[5]), None);
        // An empty batch pushes nothing; a dropped batch pushes its changes.
        router.batch().commit().unwrap();
        assert_eq!(backend.snapshot(|s| s.set_routing_calls), calls + 1);
        {
            let mut batch = router.batch();
            batch.remove_msi_route(gsis[6]).unwrap();
        }
        assert_eq!(backend.snapshot(|s| s.set_routing_calls), calls + 2);
        assert_eq!(router.msi_route(gsis[6]), None);
    }

    #[test]
    fn exhaustion_is_an_error() {
        let backend = FakeIrqBackend::new();
        let router = InterruptRouter::new(backend);
        let available = KVM_MAX_IRQ_ROUTES - legacy_routes().len();
        for i in 0..available {
            router.add_msi_route(msg(i as u32)).unwrap();
        }
        assert!(matches!(
            router.add_msi_route(msg(0)),
            Err(InterruptError::GsiExhausted)
        ));
    }

    /// The `VmFd` backend against a real VM with an in-kernel irqchip: the table (legacy pins
    /// plus MSI routes) is accepted, irqfds bind and unbind, KVM_SIGNAL_MSI is accepted.
    #[test]
    fn real_kvm_accepts_the_table_and_irqfds() {
        let required = std::env::var("IVSHMEM_REQUIRE_KVM").is_ok_and(|v| v == "1");
        let vm = match kvm_ioctls::Kvm::new().and_then(|kvm| kvm.create_vm()) {
            Ok(vm) => Arc::new(vm),
            Err(e) if required => panic!("KVM required (IVSHMEM_REQUIRE_KVM=1): {e}"),
            Err(e) => {
                eprintln!("real_kvm_accepts_the_table_and_irqfds: skipped, no KVM: {e}");
                return;
            }
        };
        vm.create_irq_chip().unwrap();
        // KVM_SIGNAL_MSI reports "no destination" (-1, read as EPERM) without a vCPU.
        let _vcpu = vm.create_vcpu(0).unwrap();
        let router = InterruptRouter::new(vm.clone());
        let mut gsis = Vec::new();
        {
            let mut batch = router.batch();
            for i in 0..64 {
                gsis.push(batch.add_msi_route(msg(0x40 + i)).unwrap());
            }
            batch.commit().unwrap();
        }
        let fd = EventFd::new(libc::EFD_NONBLOCK).unwrap();
        router.bind_irqfd(&fd, gsis[3]).unwrap();
        router.update_msi_route(gsis[3], msg(0x99)).unwrap();
        fd.write(1).unwrap();
        router.unbind_irqfd(&fd, gsis[3]).unwrap();
        router.remove_msi_route(gsis[3]).unwrap();
        router.signal_msi(msg(0x41)).unwrap();
        // The legacy pins still work after our pushes: an irqfd on GSI 4 (COM1) binds.
        router.bind_irqfd(&fd, 4).unwrap();
        router.unbind_irqfd(&fd, 4).unwrap();
    }

    #[test]
    fn irqfd_bind_unbind() {
        let backend = FakeIrqBackend::new();
        let router = InterruptRouter::new(backend.clone());
        let fd = EventFd::new(libc::EFD_NONBLOCK).unwrap();
        let gsi = router.add_msi_route(msg(0x33)).unwrap();
        router.bind_irqfd(&fd, gsi).unwrap();
        assert!(backend.is_bound(&fd, gsi));
        fd.write(1).unwrap();
        assert_eq!(backend.deliver_bound(&fd), 1);
        assert_eq!(backend.snapshot(|s| s.signalled.clone()), vec![msg(0x33)]);
        router.unbind_irqfd(&fd, gsi).unwrap();
        assert!(router.unbind_irqfd(&fd, gsi).is_err());
    }
}
