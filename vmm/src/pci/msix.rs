//! MSI-X: the vector table, the pending-bit array (PBA), the capability, and the wiring of each
//! vector to KVM.
//!
//! Every vector may have a *source* eventfd that the device (or, for ivshmem, a peer in another
//! process) signals. The wiring follows the guest's view of the vector:
//! - MSI-X enabled, function not masked, vector not masked: the vector has an MSI route (address
//!   and data from its table entry) and the eventfd is bound to it with irqfd, so KVM injects the
//!   interrupt without the VMM's userspace;
//! - enabled but masked: the irqfd is unbound (the route is kept, so unmasking is cheap) and the
//!   eventfd is watched by [`EventWatcher`]; a signal sets the vector's PBA bit. Unmasking with
//!   the bit set re-signals the eventfd after binding it, which delivers the interrupt once;
//! - MSI-X disabled: no route; signals are read and dropped (QEMU drops them too).
//!
//! The wiring is recomputed for a vector after every write to its table entry and for all vectors
//! after every write to the message control register. Vectors without a source can be raised
//! with [`Msix::notify`] (KVM_SIGNAL_MSI or the pending bit).

use std::ops::Range;
use std::sync::{Arc, Mutex, MutexGuard, Weak};

use vmm_sys_util::eventfd::EventFd;

use super::config::{ConfigError, ConfigSpace, CAP_ID_MSIX};
use super::watcher::{EventWatcher, WatchToken};
use crate::interrupts::{InterruptRouter, MsiMessage, RouteBatch};
use crate::memory::{AccessSizes, IoAccess, MemoryRegion, RegionOps};

/// Bytes per table entry.
pub const ENTRY_SIZE: u64 = 16;
/// Largest vector count the capability can describe.
pub const MAX_VECTORS: u16 = 2048;
/// Message control bits.
pub const CONTROL_ENABLE: u16 = 0x8000;
/// Message control: all vectors are masked, whatever their own mask bits.
pub const CONTROL_FUNCTION_MASK: u16 = 0x4000;
/// Vector control bit 0: the vector is masked.
pub const VECTOR_MASKED: u32 = 1;
/// Size of the MSI-X capability structure.
pub const CAPABILITY_SIZE: usize = 12;

/// Why an MSI-X table could not be set up or used.
#[derive(Debug, thiserror::Error)]
pub enum MsixError {
    /// The count is 0 or above [`MAX_VECTORS`].
    #[error("MSI-X vector count {0} is outside 1..=2048")]
    BadVectorCount(usize),
    /// A vector beyond the table.
    #[error("MSI-X vector {vector} does not exist (the table has {count})")]
    NoSuchVector {
        /// The vector asked for.
        vector: usize,
        /// How many the table has.
        count: usize,
    },
    /// No room for the capability in config space.
    #[error(transparent)]
    Config(#[from] ConfigError),
}

/// Where the table and PBA live inside a BAR. [`MsixLayout::exclusive_bar`] is QEMU's
/// `msix_init_exclusive_bar` layout.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct MsixLayout {
    /// Number of vectors (table entries).
    pub vectors: u16,
    /// Offset of the table in the BAR.
    pub table_offset: u64,
    /// Offset of the pending-bit array in the BAR.
    pub pba_offset: u64,
    /// Size of a BAR holding only the table and the PBA.
    pub bar_size: u64,
}

impl MsixLayout {
    /// Table at 0, PBA at max(2048, 16 * vectors), BAR size pow2ceil(max(4096, PBA end)).
    pub fn exclusive_bar(vectors: u16) -> Self {
        let table_size = vectors as u64 * ENTRY_SIZE;
        let pba_offset = table_size.max(2048);
        let pba_size = pba_size(vectors as usize);
        let bar_size = (pba_offset + pba_size).max(4096).next_power_of_two();
        Self {
            vectors,
            table_offset: 0,
            pba_offset,
            bar_size,
        }
    }

    /// Bytes the table takes (16 per vector).
    pub fn table_size(&self) -> u64 {
        self.vectors as u64 * ENTRY_SIZE
    }

    /// Bytes the pending-bit array takes (one bit per vector, in qwords).
    pub fn pba_size(&self) -> u64 {
        pba_size(self.vectors as usize)
    }
}

/// PBA bytes: one bit per vector, in whole qwords.
fn pba_size(vectors: usize) -> u64 {
    vectors.div_ceil(64) as u64 * 8
}

#[derive(Default)]
struct Vector {
    /// Table entry: message address low, high, data, vector control.
    entry: [u32; 4],
    pending: bool,
    source: Option<Arc<EventFd>>,
    /// MSI route and the message it currently carries.
    route: Option<(u32, MsiMessage)>,
    /// The GSI the source eventfd is bound to with irqfd.
    irqfd: Option<u32>,
    watch: Option<WatchToken>,
    /// Whether MSI-X was enabled while the vector was under watch: decides whether signals
    /// found when the watch ends become pending or are dropped.
    watched_while_enabled: bool,
}

impl Vector {
    fn message(&self) -> MsiMessage {
        MsiMessage {
            address: (self.entry[1] as u64) << 32 | self.entry[0] as u64,
            data: self.entry[2],
        }
    }
}

struct MsixState {
    enabled: bool,
    function_masked: bool,
    vectors: Vec<Vector>,
}

impl MsixState {
    fn masked(&self, vector: usize) -> bool {
        !self.enabled || self.function_masked || self.vectors[vector].entry[3] & VECTOR_MASKED != 0
    }
}

struct MsixShared {
    name: String,
    layout: MsixLayout,
    router: Arc<InterruptRouter>,
    watcher: Arc<EventWatcher>,
    state: Mutex<MsixState>,
    /// Handed to watcher callbacks, which must not keep the device alive.
    weak_self: Weak<MsixShared>,
}

/// An MSI-X function's table, PBA and vector wiring. Cheap to clone (shared state).
#[derive(Clone)]
pub struct Msix {
    shared: Arc<MsixShared>,
    table: MemoryRegion,
    pba: MemoryRegion,
}

impl Msix {
    /// `vectors` entries (1..=2048), all masked, MSI-X disabled; routes go through `router`.
    pub fn new(
        name: &str,
        vectors: usize,
        router: Arc<InterruptRouter>,
    ) -> Result<Self, MsixError> {
        if !(1..=MAX_VECTORS as usize).contains(&vectors) {
            return Err(MsixError::BadVectorCount(vectors));
        }
        let layout = MsixLayout::exclusive_bar(vectors as u16);
        let shared = Arc::new_cyclic(|weak_self| MsixShared {
            name: name.to_string(),
            layout,
            router,
            watcher: EventWatcher::global(),
            state: Mutex::new(MsixState {
                enabled: false,
                function_masked: false,
                vectors: (0..vectors)
                    .map(|_| Vector {
                        entry: [0, 0, 0, VECTOR_MASKED],
                        ..Default::default()
                    })
                    .collect(),
            }),
            weak_self: weak_self.clone(),
        });
        // The table and PBA accept dword and qword accesses, implemented as dwords.
        let access = IoAccess {
            valid: AccessSizes::new(4, 8),
            implemented: AccessSizes::new(4, 4),
        };
        let table = MemoryRegion::io(
            &format!("{name}-msix-table"),
            layout.table_size(),
            Arc::new(TableOps(shared.clone())),
            access,
        );
        let pba = MemoryRegion::io(
            &format!("{name}-msix-pba"),
            layout.pba_size(),
            Arc::new(PbaOps(shared.clone())),
            access,
        );
        Ok(Self { shared, table, pba })
    }

    /// Number of vectors in the table.
    pub fn vector_count(&self) -> usize {
        self.shared.layout.vectors as usize
    }

    /// The exclusive-BAR layout (table at 0, PBA after it).
    pub fn layout(&self) -> MsixLayout {
        self.shared.layout
    }

    /// The table as an I/O region (16 bytes per vector). Always the same node.
    pub fn table_region(&self) -> MemoryRegion {
        self.table.clone()
    }

    /// The PBA as an I/O region. Always the same node.
    pub fn pba_region(&self) -> MemoryRegion {
        self.pba.clone()
    }

    /// A new container of `layout().bar_size` bytes holding the table at 0 and the PBA at
    /// `layout().pba_offset`: the whole content of an exclusive MSI-X BAR.
    pub fn exclusive_bar_region(&self) -> MemoryRegion {
        let layout = self.shared.layout;
        let bar = MemoryRegion::container(&format!("{}-msix", self.shared.name), layout.bar_size);
        bar.add_subregion(layout.table_offset, &self.table, 0);
        bar.add_subregion(layout.pba_offset, &self.pba, 0);
        bar
    }

    /// Add the MSI-X capability to `config`, describing a table and PBA in BAR `bar` at the
    /// exclusive-BAR offsets. Returns the capability's offset (pass it to
    /// [`Msix::control_written`]).
    pub fn add_capability(&self, config: &mut ConfigSpace, bar: u8) -> Result<usize, MsixError> {
        let layout = self.shared.layout;
        let cap = config.add_capability(CAP_ID_MSIX, CAPABILITY_SIZE)?;
        config.set_word(cap + 2, layout.vectors - 1);
        config.set_wmask_word(cap + 2, CONTROL_ENABLE | CONTROL_FUNCTION_MASK);
        config.set_dword(cap + 4, layout.table_offset as u32 | bar as u32);
        config.set_dword(cap + 8, layout.pba_offset as u32 | bar as u32);
        Ok(cap)
    }

    /// The guest wrote config space over the capability at `cap`: apply enable/function mask.
    pub fn control_written(&self, config: &ConfigSpace, cap: usize) {
        let control = config.word(cap + 2);
        self.shared.set_control(
            control & CONTROL_ENABLE != 0,
            control & CONTROL_FUNCTION_MASK != 0,
        );
    }

    /// Make `fd` the eventfd that raises `vector` (or detach it with `None`).
    pub fn set_vector_source(
        &self,
        vector: usize,
        fd: Option<Arc<EventFd>>,
    ) -> Result<(), MsixError> {
        let shared = &self.shared;
        let mut state = shared.lock();
        let count = state.vectors.len();
        if vector >= count {
            return Err(MsixError::NoSuchVector { vector, count });
        }
        // Detach the old eventfd (irqfd, watch); the route stays if the vector still wants one.
        if let Some(old) = state.vectors[vector].source.take() {
            shared.detach_source(&mut state.vectors[vector], &old, vector);
        }
        state.vectors[vector].source = fd;
        shared.sync_vectors(&mut state, vector..vector + 1);
        Ok(())
    }

    /// Raise `vector` from device code: through its source eventfd if it has one, otherwise
    /// directly (KVM_SIGNAL_MSI when unmasked, the pending bit when masked, dropped when MSI-X
    /// is disabled).
    pub fn notify(&self, vector: usize) {
        let shared = &self.shared;
        let mut state = shared.lock();
        let enabled = state.enabled;
        let masked = vector < state.vectors.len() && state.masked(vector);
        let Some(v) = state.vectors.get_mut(vector) else {
            return;
        };
        if let Some(fd) = &v.source {
            if let Err(e) = fd.write(1) {
                log::warn!("{}: signalling MSI-X vector {vector}: {e}", shared.name);
            }
        } else if !enabled {
            // Dropped, as QEMU's msix_notify does.
        } else if masked {
            v.pending = true;
        } else if let Err(e) = shared.router.signal_msi(v.message()) {
            log::warn!("{}: MSI-X vector {vector}: {e}", shared.name);
        }
    }

    /// Whether the guest has set MSI-X Enable (the fuzz targets check their model against it).
    pub fn is_enabled(&self) -> bool {
        self.shared.lock().enabled
    }

    /// Whether the guest sees `vector` as masked (disabled, function mask, or vector mask).
    pub fn is_masked(&self, vector: usize) -> bool {
        let state = self.shared.lock();
        vector >= state.vectors.len() || state.masked(vector)
    }

    /// True when `vector` fired while masked and waits for its unmask (its PBA bit).
    pub fn is_pending(&self, vector: usize) -> bool {
        self.shared.poll_watched();
        let state = self.shared.lock();
        state.vectors.get(vector).is_some_and(|v| v.pending)
    }

    /// The MSI route (GSI, message) of `vector`, if it has one.
    pub fn route(&self, vector: usize) -> Option<(u32, MsiMessage)> {
        self.shared.lock().vectors.get(vector).and_then(|v| v.route)
    }

    /// Whether `vector`'s eventfd is bound to KVM with irqfd right now.
    pub fn is_irqfd_bound(&self, vector: usize) -> bool {
        self.shared
            .lock()
            .vectors
            .get(vector)
            .is_some_and(|v| v.irqfd.is_some())
    }
}

impl MsixShared {
    fn lock(&self) -> MutexGuard<'_, MsixState> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn set_control(&self, enabled: bool, function_masked: bool) {
        let mut state = self.lock();
        if state.enabled == enabled && state.function_masked == function_masked {
            return;
        }
        state.enabled = enabled;
        state.function_masked = function_masked;
        let all = 0..state.vectors.len();
        self.sync_vectors(&mut state, all);
    }

    /// Bring the KVM wiring of `vectors` in line with the guest-visible state (module docs):
    /// first every route, in one routing-table push, then each vector's irqfd or watch.
    fn sync_vectors(&self, state: &mut MsixState, vectors: Range<usize>) {
        let enabled = state.enabled;
        {
            let mut batch = self.router.batch();
            for i in vectors.clone() {
                self.sync_route(&mut state.vectors[i], enabled, i, &mut batch);
            }
            if let Err(e) = batch.commit() {
                log::warn!("{}: {e}", self.name);
            }
        }
        for i in vectors {
            let masked = state.masked(i);
            self.sync_wiring(&mut state.vectors[i], enabled, masked, i);
        }
    }

    /// A vector has a route exactly while MSI-X is enabled and the vector has a source.
    fn sync_route(&self, v: &mut Vector, enabled: bool, i: usize, batch: &mut RouteBatch<'_>) {
        let message = v.message();
        let result = match (enabled && v.source.is_some(), v.route) {
            (true, None) => batch.add_msi_route(message).map(|gsi| {
                v.route = Some((gsi, message));
            }),
            (true, Some((gsi, old))) if old != message => {
                v.route = Some((gsi, message));
                batch.update_msi_route(gsi, message)
            }
            (false, Some((gsi, _))) => {
                v.route = None;
                batch.remove_msi_route(gsi)
            }
            _ => Ok(()),
        };
        if let Err(e) = result {
            log::warn!("{}: MSI-X vector {i}: {e}", self.name);
        }
    }

    /// Unmasked with a route: eventfd bound with irqfd (and a pending interrupt re-signalled
    /// through it). Otherwise: eventfd watched.
    fn sync_wiring(&self, v: &mut Vector, enabled: bool, masked: bool, i: usize) {
        let Some(fd) = v.source.clone() else {
            if !masked && v.pending {
                v.pending = false;
                if let Err(e) = self.router.signal_msi(v.message()) {
                    log::warn!("{}: MSI-X vector {i}: {e}", self.name);
                }
            }
            return;
        };
        match v.route {
            Some((gsi, _)) if !masked => {
                if let Some(token) = v.watch.take() {
                    // Signals that arrived while masked (and enabled) are pending interrupts.
                    if self.watcher.unwatch(token) > 0 && v.watched_while_enabled {
                        v.pending = true;
                    }
                }
                if v.irqfd != Some(gsi) {
                    self.unbind(v, &fd, i);
                    match self.router.bind_irqfd(&fd, gsi) {
                        Ok(()) => v.irqfd = Some(gsi),
                        Err(e) => log::warn!("{}: MSI-X vector {i}: {e}", self.name),
                    }
                }
                if v.pending && v.irqfd.is_some() {
                    v.pending = false;
                    // KVM injects through the irqfd just bound.
                    if let Err(e) = fd.write(1) {
                        log::warn!("{}: MSI-X vector {i}: {e}", self.name);
                    }
                }
            }
            _ => {
                self.unbind(v, &fd, i);
                match v.watch {
                    None => {
                        let handler = {
                            let weak = self.weak_self.clone();
                            let watcher = self.watcher.clone();
                            Arc::new(move |token| match weak.upgrade() {
                                Some(shared) => shared.signalled_while_watched(i, token),
                                // Being dropped: consume, the drop unwatches.
                                None => {
                                    watcher.drain(token);
                                }
                            })
                        };
                        match self.watcher.watch(fd.clone(), handler) {
                            Ok(token) => v.watch = Some(token),
                            Err(e) => log::warn!("{}: watching MSI-X vector {i}: {e}", self.name),
                        }
                    }
                    Some(token) if v.watched_while_enabled != enabled => {
                        // Signals not yet seen belong to the state they arrived in.
                        if self.watcher.drain(token) > 0 && v.watched_while_enabled {
                            v.pending = true;
                        }
                    }
                    Some(_) => {}
                }
                v.watched_while_enabled = enabled;
            }
        }
    }

    fn unbind(&self, v: &mut Vector, fd: &EventFd, i: usize) {
        if let Some(gsi) = v.irqfd.take() {
            if let Err(e) = self.router.unbind_irqfd(fd, gsi) {
                log::warn!("{}: MSI-X vector {i}: {e}", self.name);
            }
        }
    }

    /// Remove `fd` (the vector's source until now) from the irqfd and the watcher.
    fn detach_source(&self, v: &mut Vector, fd: &Arc<EventFd>, i: usize) {
        self.unbind(v, fd, i);
        if let Some(token) = v.watch.take() {
            self.watcher.unwatch(token);
        }
    }

    /// Vector `i`'s watched eventfd (registration `token`) is readable.
    fn signalled_while_watched(&self, i: usize, token: WatchToken) {
        let mut state = self.lock();
        let enabled = state.enabled;
        let masked = i < state.vectors.len() && state.masked(i);
        let Some(v) = state.vectors.get_mut(i) else {
            self.watcher.drain(token);
            return;
        };
        if v.watch != Some(token) {
            // Unwatched meanwhile (the registry no longer has it, so nothing is read).
            self.watcher.drain(token);
            return;
        }
        // Read under our lock: the state seen here is the state the signals arrived in.
        if self.watcher.drain(token) > 0 && enabled && masked {
            v.pending = true;
        }
        // Disabled: dropped, as QEMU does. (Unmasked vectors are never watched.)
    }

    /// Fold signals not yet seen by the watcher thread into the pending bits.
    fn poll_watched(&self) {
        let mut state = self.lock();
        let enabled = state.enabled;
        for v in state.vectors.iter_mut() {
            if let Some(token) = v.watch {
                if self.watcher.drain(token) > 0 && enabled {
                    v.pending = true;
                }
            }
        }
    }

    fn read_table(&self, offset: u64) -> u32 {
        let state = self.lock();
        let (vector, field) = ((offset / ENTRY_SIZE) as usize, (offset % ENTRY_SIZE) / 4);
        state
            .vectors
            .get(vector)
            .map_or(0, |v| v.entry[field as usize])
    }

    fn write_table(&self, offset: u64, value: u32) {
        let mut state = self.lock();
        let (vector, field) = ((offset / ENTRY_SIZE) as usize, (offset % ENTRY_SIZE) / 4);
        let Some(v) = state.vectors.get_mut(vector) else {
            return;
        };
        // Only the mask bit of vector control is defined.
        let value = if field == 3 {
            value & VECTOR_MASKED
        } else {
            value
        };
        if v.entry[field as usize] == value {
            return;
        }
        v.entry[field as usize] = value;
        self.sync_vectors(&mut state, vector..vector + 1);
    }

    fn read_pba(&self, offset: u64) -> u32 {
        self.poll_watched();
        let state = self.lock();
        let first = (offset / 4 * 32) as usize;
        (0..32)
            .filter(|bit| state.vectors.get(first + bit).is_some_and(|v| v.pending))
            .fold(0, |acc, bit| acc | 1 << bit)
    }
}

impl Drop for MsixShared {
    fn drop(&mut self) {
        let mut state = self.lock();
        let mut vectors = std::mem::take(&mut state.vectors);
        drop(state);
        let mut batch = self.router.batch();
        for (i, v) in vectors.iter_mut().enumerate() {
            if let Some(fd) = v.source.take() {
                self.detach_source(v, &fd, i);
            }
            if let Some((gsi, _)) = v.route.take() {
                let _ = batch.remove_msi_route(gsi);
            }
        }
    }
}

struct TableOps(Arc<MsixShared>);

impl RegionOps for TableOps {
    fn read(&self, offset: u64, _size: u32) -> u64 {
        self.0.read_table(offset) as u64
    }
    fn write(&self, offset: u64, _size: u32, value: u64) {
        self.0.write_table(offset, value as u32);
    }
}

struct PbaOps(Arc<MsixShared>);

impl RegionOps for PbaOps {
    fn read(&self, offset: u64, _size: u32) -> u64 {
        self.0.read_pba(offset) as u64
    }
    fn write(&self, _offset: u64, _size: u32, _value: u64) {
        // The PBA is read-only.
    }
}
