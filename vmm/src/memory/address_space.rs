//! `AddressSpace`: a root region, its current `FlatView`, and the listeners told about changes.
//!
//! Concurrency design: the current view is an `Arc<FlatView>` behind an `RwLock` that is held
//! only long enough to clone or swap the `Arc`. Dispatch (vCPU threads) takes a snapshot and
//! calls device ops with no lock held, so an ops callback may change the tree and `commit()` on
//! the same thread; the in-flight access finishes on the old snapshot, as in QEMU's RCU scheme.
//! `commit()` serializes on a mutex that also owns the listeners, renders, swaps the view in and
//! tells every listener the difference: all range deletions, then eventfd deletions, then range
//! additions, then eventfd additions (so KVM never sees overlapping slots).

use std::sync::{Arc, Mutex, MutexGuard, RwLock};

use super::dispatch;
use super::flat_view::{FlatRange, FlatView, IoEventFdRange, ViewDiff};
use super::listener::MemoryListener;
use super::mtree;
use super::region::{tree_generation, MemoryRegion};

/// Which kind of guest address space: memory (MMIO exits, KVM memory slots) or x86 I/O ports.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SpaceKind {
    /// Guest-physical memory.
    Memory,
    /// x86 I/O ports (64 KiB).
    Io,
}

struct CommitState {
    /// Tree generation the current view was rendered from.
    rendered_generation: u64,
    listeners: Vec<Box<dyn MemoryListener>>,
}

struct SpaceInner {
    name: String,
    root: MemoryRegion,
    kind: SpaceKind,
    view: RwLock<Arc<FlatView>>,
    commit: Mutex<CommitState>,
}

/// Address space: a root region rendered to a `FlatView`. Clones are the same space.
#[derive(Clone)]
pub struct AddressSpace {
    inner: Arc<SpaceInner>,
}

impl std::fmt::Debug for AddressSpace {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "AddressSpace({:?})", self.inner.name)
    }
}

impl AddressSpace {
    /// Creates the space and renders its current tree (no listeners yet).
    pub fn new(name: &str, root: MemoryRegion, kind: SpaceKind) -> Self {
        let generation = tree_generation();
        let view = FlatView::render(&root);
        AddressSpace {
            inner: Arc::new(SpaceInner {
                name: name.to_string(),
                root,
                kind,
                view: RwLock::new(Arc::new(view)),
                commit: Mutex::new(CommitState {
                    rendered_generation: generation,
                    listeners: Vec::new(),
                }),
            }),
        }
    }

    /// The name given at creation, for `info mtree`.
    pub fn name(&self) -> &str {
        &self.inner.name
    }

    /// The root region: add subregions here, then commit.
    pub fn root(&self) -> &MemoryRegion {
        &self.inner.root
    }

    /// Memory or I/O.
    pub fn kind(&self) -> SpaceKind {
        self.inner.kind
    }

    fn lock_commit(&self) -> MutexGuard<'_, CommitState> {
        self.inner.commit.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Re-renders the flat view if any region changed since the last commit, tells listeners
    /// the difference (all deletions before additions) and swaps the new view in. Tree changes
    /// take effect only here. Safe to call from an ops callback during dispatch; must not be
    /// called from a listener callback.
    pub fn commit(&self) {
        let mut state = self.lock_commit();
        let generation = tree_generation();
        if generation == state.rendered_generation {
            return;
        }
        let new_view = Arc::new(FlatView::render(&self.inner.root));
        state.rendered_generation = generation;
        let old_view = {
            let mut current = self.inner.view.write().unwrap_or_else(|e| e.into_inner());
            std::mem::replace(&mut *current, new_view.clone())
        };
        let diff = ViewDiff::between(&old_view, &new_view);
        for listener in state.listeners.iter_mut() {
            for range in &diff.removed_ranges {
                listener.region_del(range);
            }
        }
        for listener in state.listeners.iter_mut() {
            for eventfd in &diff.removed_eventfds {
                listener.eventfd_del(eventfd);
            }
        }
        for listener in state.listeners.iter_mut() {
            for range in &diff.added_ranges {
                listener.region_add(range);
            }
        }
        for listener in state.listeners.iter_mut() {
            for eventfd in &diff.added_eventfds {
                listener.eventfd_add(eventfd);
            }
        }
    }

    /// Adds a listener and replays the current (committed) view to it as additions.
    pub fn add_listener(&self, mut listener: Box<dyn MemoryListener>) {
        let mut state = self.lock_commit();
        let view = self.flat_view();
        for range in view.ranges() {
            listener.region_add(range);
        }
        for eventfd in view.ioeventfds() {
            listener.eventfd_add(eventfd);
        }
        state.listeners.push(listener);
    }

    /// Removes every listener, first telling each that the whole view went away (KVM slots
    /// and ioeventfds are torn down).
    pub fn remove_listeners(&self) {
        let mut state = self.lock_commit();
        let view = self.flat_view();
        for mut listener in state.listeners.drain(..) {
            for eventfd in view.ioeventfds() {
                listener.eventfd_del(eventfd);
            }
            for range in view.ranges() {
                listener.region_del(range);
            }
        }
    }

    /// The current committed view (a snapshot: later commits do not change it).
    pub fn flat_view(&self) -> Arc<FlatView> {
        self.inner
            .view
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    /// Dispatches a guest read (KVM_EXIT_MMIO / KVM_EXIT_IO) of `data.len()` bytes at `addr`.
    pub fn read(&self, addr: u64, data: &mut [u8]) {
        let view = self.flat_view();
        dispatch::read(&view, &self.inner.name, addr, data);
    }

    /// Dispatches a guest write of `data` at `addr`.
    pub fn write(&self, addr: u64, data: &[u8]) {
        let view = self.flat_view();
        dispatch::write(&view, &self.inner.name, addr, data);
    }

    /// The range serving `addr` in the current view.
    pub fn lookup(&self, addr: u64) -> Option<FlatRange> {
        self.flat_view().lookup(addr).cloned()
    }

    /// Ioeventfds placed in the current view.
    pub fn ioeventfds(&self) -> Vec<IoEventFdRange> {
        self.flat_view().ioeventfds().to_vec()
    }

    /// QEMU-like `info mtree` for this space (the tree as it is now, committed or not), followed
    /// by the trees of alias targets that are not part of it.
    pub fn info_mtree(&self) -> String {
        mtree::info_mtree(&self.inner.name, &self.inner.root)
    }

    /// QEMU-like `info mtree -f`: the committed flat view.
    pub fn info_flatview(&self) -> String {
        mtree::info_flatview(&self.inner.name, &self.inner.root, &self.flat_view())
    }
}
