//! The region tree: `MemoryRegion` nodes (RAM, I/O, container, alias, reservation).
//!
//! A `MemoryRegion` is a cheap handle (`Arc`) to one node. What a node *is* (its kind: the RAM
//! mapping, the I/O ops, the alias target) never changes after creation, so dispatch can reach it
//! without a lock; what can change (size, address in the parent, enabled, subregions, alias
//! offset, eventfds, ram_device mode) lives behind a per-node mutex and only becomes visible to
//! the guest when an address space commits (see `address_space`). Every mutation bumps a global
//! tree generation so `commit()` can tell whether it needs to re-render.
//!
//! Subregions are kept in QEMU's order: by priority, highest first, and among equal priorities
//! the most recently added (or moved) first. Rendering walks them in that order, so the first to
//! claim an address wins.

use std::fmt;
use std::os::fd::{AsFd, BorrowedFd, FromRawFd};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, Weak};

use vm_memory::mmap::MmapRegionError;
use vm_memory::{FileOffset, MmapRegion};
use vmm_sys_util::eventfd::EventFd;

use super::MemoryError;

/// Device callbacks of an I/O region. `offset` is relative to the region start; `size` is one of
/// the region's implemented sizes (1, 2, 4 or 8): dispatch has already split or widened the
/// guest access. Values are little-endian, in the low `size` bytes.
pub trait RegionOps: Send + Sync {
    /// A guest read of `size` bytes at `offset`.
    fn read(&self, offset: u64, size: u32) -> u64;
    /// A guest write of `size` bytes of `value` at `offset`.
    fn write(&self, offset: u64, size: u32, value: u64);
}

/// A range of access sizes in bytes (powers of two in 1..=8), and whether accesses not aligned
/// to their size are allowed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct AccessSizes {
    /// Smallest access size.
    pub min: u32,
    /// Largest access size.
    pub max: u32,
    /// Accesses not aligned to their size are allowed.
    pub unaligned: bool,
}

impl AccessSizes {
    /// `min..=max`, aligned accesses only.
    pub const fn new(min: u32, max: u32) -> Self {
        AccessSizes {
            min,
            max,
            unaligned: false,
        }
    }
}

impl Default for AccessSizes {
    /// QEMU's default: 1 to 4 bytes, aligned.
    fn default() -> Self {
        AccessSizes::new(1, 4)
    }
}

/// Access rules of an I/O region: which guest accesses are `valid` (others are rejected) and
/// which sizes the ops `implemented` (dispatch splits or widens to these).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct IoAccess {
    /// Accesses the guest may make; dispatch rejects the others.
    pub valid: AccessSizes,
    /// What the ops handle; dispatch splits or widens guest accesses to fit.
    pub implemented: AccessSizes,
}

impl IoAccess {
    /// Guests may use any size in `min..=max` and the ops implement exactly that.
    pub const fn sizes(min: u32, max: u32) -> Self {
        IoAccess {
            valid: AccessSizes::new(min, max),
            implemented: AccessSizes::new(min, max),
        }
    }

    /// The same valid sizes, with the ops implementing `min..=max` (aligned).
    pub const fn with_implemented(self, min: u32, max: u32) -> Self {
        IoAccess {
            valid: self.valid,
            implemented: AccessSizes::new(min, max),
        }
    }
}

/// The host mapping behind a RAM region: vm-memory's `MmapRegion`, which owns the mapping and
/// unmaps it when the last handle to the region goes (and, for a file mapping, keeps a
/// duplicate of the fd open as long), or, for anonymous RAM placed by `map_anonymous`, one that
/// this value unmaps itself. Its length is the region size rounded up to a page.
pub(crate) struct RamMapping {
    region: MmapRegion,
    /// `(address, length)` to unmap on drop, when `region` does not own its mapping.
    unmap: Option<(usize, usize)>,
}

impl From<MmapRegion> for RamMapping {
    fn from(region: MmapRegion) -> Self {
        RamMapping {
            region,
            unmap: None,
        }
    }
}

impl std::ops::Deref for RamMapping {
    type Target = MmapRegion;
    fn deref(&self) -> &MmapRegion {
        &self.region
    }
}

impl Drop for RamMapping {
    fn drop(&mut self) {
        if let Some((addr, len)) = self.unmap {
            // SAFETY: the mapping `map_anonymous` made and handed to nobody else; the region
            // viewing it goes with this value.
            unsafe { libc::munmap(addr as *mut libc::c_void, len) };
        }
    }
}

/// Where anonymous RAM starts in the host's address space: a multiple of 2 MiB, so that a
/// 2 MiB-aligned guest range sits on a 2 MiB-aligned host range. KVM maps guest memory with
/// 2 MiB pages (one nested page fault per 2 MiB instead of per 4 KiB) only where the two are
/// congruent, and transparent huge pages back only aligned host ranges. Linux before 6.7 does
/// not align large anonymous mappings by itself (docs/boot-time.md).
const ANONYMOUS_RAM_ALIGN: usize = 2 << 20;

/// Anonymous private memory, zero-filled, without swap reservation (as `MmapRegion::new`),
/// starting at a multiple of `ANONYMOUS_RAM_ALIGN`.
fn map_anonymous(name: &str, size: u64) -> Result<RamMapping, MemoryError> {
    let len = mapping_len(name, size)?;
    let flags = libc::MAP_PRIVATE | libc::MAP_ANONYMOUS | libc::MAP_NORESERVE;
    let prot = libc::PROT_READ | libc::PROT_WRITE;
    let reserve = len
        .checked_add(ANONYMOUS_RAM_ALIGN)
        .ok_or_else(|| MemoryError::TooLarge {
            name: name.to_string(),
            size,
        })?;
    // SAFETY: a new anonymous mapping at an address of the kernel's choosing; no existing memory
    // is affected. MAP_FAILED is checked below.
    let base = unsafe { libc::mmap(std::ptr::null_mut(), reserve, prot, flags, -1, 0) };
    if base == libc::MAP_FAILED {
        let source = MmapRegionError::Mmap(std::io::Error::last_os_error());
        return Err(mmap_failed(name, reserve, source));
    }
    let base = base as usize;
    let start = (base + ANONYMOUS_RAM_ALIGN - 1) & !(ANONYMOUS_RAM_ALIGN - 1);
    let (head, tail) = (start - base, base + reserve - (start + len));
    // SAFETY: both ranges lie inside the mapping just made and outside [start, start + len),
    // which is all that is kept; nothing refers to them.
    unsafe {
        if head > 0 {
            libc::munmap(base as *mut libc::c_void, head);
        }
        if tail > 0 {
            libc::munmap((start + len) as *mut libc::c_void, tail);
        }
    }
    // SAFETY: [start, start + len) is a live mapping of this process, unmapped only when the
    // returned `RamMapping` drops.
    let built = unsafe {
        vm_memory::mmap::MmapRegionBuilder::new(len)
            .with_mmap_prot(prot)
            .with_mmap_flags(flags)
            .with_raw_mmap_pointer(start as *mut u8)
    }
    .build();
    match built {
        Ok(region) => Ok(RamMapping {
            region,
            unmap: Some((start, len)),
        }),
        Err(source) => {
            // SAFETY: the kept range, which nothing else refers to.
            unsafe { libc::munmap(start as *mut libc::c_void, len) };
            Err(mmap_failed(name, len, source))
        }
    }
}

/// A `MAP_SHARED` read/write mapping of `fd` from `offset` (page-aligned).
fn map_shared_fd(
    name: &str,
    fd: BorrowedFd<'_>,
    offset: u64,
    size: u64,
) -> Result<RamMapping, MemoryError> {
    let len = mapping_len(name, size)?;
    if !offset.is_multiple_of(super::PAGE_SIZE) || libc::off_t::try_from(offset).is_err() {
        return Err(MemoryError::UnalignedOffset {
            name: name.to_string(),
            offset,
        });
    }
    let file = fd
        .try_clone_to_owned()
        .map_err(|source| MemoryError::DupFd {
            name: name.to_string(),
            source,
        })?;
    MmapRegion::build(
        Some(FileOffset::new(std::fs::File::from(file), offset)),
        len,
        libc::PROT_READ | libc::PROT_WRITE,
        libc::MAP_SHARED,
    )
    .map(RamMapping::from)
    .map_err(|source| mmap_failed(name, len, source))
}

fn mmap_failed(name: &str, len: usize, source: MmapRegionError) -> MemoryError {
    MemoryError::Mmap {
        name: name.to_string(),
        size: len as u64,
        source,
    }
}

fn mapping_len(name: &str, size: u64) -> Result<usize, MemoryError> {
    if size == 0 {
        return Err(MemoryError::ZeroSize(name.to_string()));
    }
    let rounded = size
        .checked_add(super::PAGE_SIZE - 1)
        .map(|s| s & !(super::PAGE_SIZE - 1))
        .and_then(|s| usize::try_from(s).ok())
        .ok_or_else(|| MemoryError::TooLarge {
            name: name.to_string(),
            size,
        })?;
    Ok(rounded)
}

/// What a node is; fixed at creation.
pub(crate) enum RegionKind {
    Ram(RamMapping),
    Io {
        ops: Arc<dyn RegionOps>,
        access: IoAccess,
    },
    Container,
    Alias(MemoryRegion),
    Reservation,
}

/// A memfd of `size` bytes (hugetlb pages when `hugepages`), mapped `MAP_SHARED`: guest RAM that
/// another process (a vhost-user backend) can map from the fd.
fn map_memfd(name: &str, size: u64, hugepages: bool) -> Result<RamMapping, MemoryError> {
    let len = mapping_len(name, size)?;
    let mut flags = libc::MFD_CLOEXEC;
    if hugepages {
        flags |= libc::MFD_HUGETLB;
    }
    let cname = std::ffi::CString::new(format!("vmm-{name}")).unwrap_or_default();
    // SAFETY: a NUL-terminated name and plain flags; the returned fd is checked below.
    let raw = unsafe { libc::memfd_create(cname.as_ptr(), flags) };
    if raw < 0 {
        return Err(MemoryError::Memfd {
            name: name.to_string(),
            hugepages,
            source: std::io::Error::last_os_error(),
        });
    }
    // SAFETY: `raw` is a fresh fd we own.
    let file = unsafe { std::fs::File::from_raw_fd(raw) };
    file.set_len(len as u64)
        .map_err(|source| MemoryError::Memfd {
            name: name.to_string(),
            hugepages,
            source,
        })?;
    let mapping = MmapRegion::build(
        Some(FileOffset::new(file, 0)),
        len,
        libc::PROT_READ | libc::PROT_WRITE,
        libc::MAP_SHARED | if hugepages { libc::MAP_POPULATE } else { 0 },
    );
    mapping.map(RamMapping::from).map_err(|source| {
        if hugepages {
            // hugetlbfs reserves the pages at mmap time: ENOMEM means too few free hugepages.
            MemoryError::NoHugepages {
                name: name.to_string(),
                size: len as u64,
            }
        } else {
            mmap_failed(name, len, source)
        }
    })
}

/// Anonymous private memory on 2 MiB hugetlb pages (not shareable).
fn map_anonymous_hugepages(name: &str, size: u64) -> Result<RamMapping, MemoryError> {
    let len = mapping_len(name, size)?;
    MmapRegion::build(
        None,
        len,
        libc::PROT_READ | libc::PROT_WRITE,
        libc::MAP_PRIVATE | libc::MAP_ANONYMOUS | libc::MAP_HUGETLB | libc::MAP_POPULATE,
    )
    .map(RamMapping::from)
    .map_err(|_| MemoryError::NoHugepages {
        name: name.to_string(),
        size: len as u64,
    })
}

/// An ioeventfd registered on an I/O region, at an offset relative to the region.
#[derive(Clone)]
pub(crate) struct RegionEventFd {
    pub(crate) offset: u64,
    pub(crate) len: u32,
    pub(crate) datamatch: Option<u64>,
    pub(crate) fd: Arc<EventFd>,
}

impl RegionEventFd {
    fn same(&self, offset: u64, len: u32, datamatch: Option<u64>, fd: &Arc<EventFd>) -> bool {
        self.offset == offset
            && self.len == len
            && self.datamatch == datamatch
            && Arc::ptr_eq(&self.fd, fd)
    }
}

/// The mutable part of a node.
pub(crate) struct RegionState {
    /// Size in bytes; `1 << 64` for a region created with size `u64::MAX` (QEMU's convention
    /// for "the whole 64-bit space").
    pub(crate) size: u128,
    pub(crate) enabled: bool,
    /// Offset in the parent (meaningless without a parent).
    pub(crate) addr: u64,
    pub(crate) priority: i32,
    pub(crate) parent: Option<Weak<RegionNode>>,
    /// QEMU order: priority descending, later-added first among equals.
    pub(crate) subregions: Vec<MemoryRegion>,
    pub(crate) alias_offset: u64,
    pub(crate) ram_device: bool,
    pub(crate) eventfds: Vec<RegionEventFd>,
}

pub(crate) struct RegionNode {
    pub(crate) name: String,
    pub(crate) kind: RegionKind,
    state: Mutex<RegionState>,
}

static TREE_GENERATION: AtomicU64 = AtomicU64::new(1);

/// Generation of the whole region forest; changes whenever any node changes.
pub(crate) fn tree_generation() -> u64 {
    TREE_GENERATION.load(Ordering::Acquire)
}

fn tree_changed() {
    TREE_GENERATION.fetch_add(1, Ordering::AcqRel);
}

fn size_from_u64(size: u64) -> u128 {
    if size == u64::MAX {
        1u128 << 64
    } else {
        u128::from(size)
    }
}

/// A node of the region tree. Cloning gives another handle to the same node; equality is
/// identity.
#[derive(Clone)]
pub struct MemoryRegion {
    pub(crate) node: Arc<RegionNode>,
}

impl PartialEq for MemoryRegion {
    fn eq(&self, other: &Self) -> bool {
        Arc::ptr_eq(&self.node, &other.node)
    }
}
impl Eq for MemoryRegion {}

impl fmt::Debug for MemoryRegion {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "MemoryRegion({:?})", self.node.name)
    }
}

impl MemoryRegion {
    fn with_kind(name: &str, size: u64, kind: RegionKind) -> Self {
        MemoryRegion {
            node: Arc::new(RegionNode {
                name: name.to_string(),
                kind,
                state: Mutex::new(RegionState {
                    size: size_from_u64(size),
                    enabled: true,
                    addr: 0,
                    priority: 0,
                    parent: None,
                    subregions: Vec::new(),
                    alias_offset: 0,
                    ram_device: false,
                    eventfds: Vec::new(),
                }),
            }),
        }
    }

    /// Anonymous private RAM of `size` bytes (zero-filled).
    pub fn ram(name: &str, size: u64) -> Result<Self, MemoryError> {
        let mapping = map_anonymous(name, size)?;
        Ok(Self::with_kind(name, size, RegionKind::Ram(mapping)))
    }

    /// RAM of `size` bytes another process can map: a memfd (on hugetlb pages when
    /// `hugepages`), mapped `MAP_SHARED`; [`MemoryRegion::ram_file`] gives its fd.
    pub fn ram_shared(name: &str, size: u64, hugepages: bool) -> Result<Self, MemoryError> {
        let mapping = map_memfd(name, size, hugepages)?;
        Ok(Self::with_kind(name, size, RegionKind::Ram(mapping)))
    }

    /// Anonymous private RAM on hugetlb pages (fails when too few are free).
    pub fn ram_hugepages(name: &str, size: u64) -> Result<Self, MemoryError> {
        let mapping = map_anonymous_hugepages(name, size)?;
        Ok(Self::with_kind(name, size, RegionKind::Ram(mapping)))
    }

    /// RAM backed by `fd` (from `offset`, which must be page-aligned), mapped `MAP_SHARED`
    /// (write-back), so other processes mapping the same file see the same bytes.
    pub fn ram_from_fd(
        name: &str,
        fd: BorrowedFd<'_>,
        offset: u64,
        size: u64,
    ) -> Result<Self, MemoryError> {
        let mapping = map_shared_fd(name, fd, offset, size)?;
        Ok(Self::with_kind(name, size, RegionKind::Ram(mapping)))
    }

    /// An I/O leaf served by `ops`.
    pub fn io(name: &str, size: u64, ops: Arc<dyn RegionOps>, access: IoAccess) -> Self {
        Self::with_kind(name, size, RegionKind::Io { ops, access })
    }

    /// A pure container: only its subregions are visible; holes are unassigned.
    pub fn container(name: &str, size: u64) -> Self {
        Self::with_kind(name, size, RegionKind::Container)
    }

    /// A window of `size` bytes into `target`, starting at `offset` in the target.
    pub fn alias(name: &str, target: &MemoryRegion, offset: u64, size: u64) -> Self {
        let region = Self::with_kind(name, size, RegionKind::Alias(target.clone()));
        region.lock().alias_offset = offset;
        region
    }

    /// Claims an address range without backing it: accesses read all-ones and writes are
    /// ignored, and lower-priority regions underneath are hidden.
    pub fn reservation(name: &str, size: u64) -> Self {
        Self::with_kind(name, size, RegionKind::Reservation)
    }

    pub(crate) fn lock(&self) -> MutexGuard<'_, RegionState> {
        // A panic while holding a node lock leaves plain data behind; keep going.
        self.node.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// RAM served through read/write dispatch instead of a KVM slot (ivshmem `mapping=trap`).
    /// No effect on non-RAM regions.
    pub fn set_ram_device(&self, trap: bool) {
        let mut state = self.lock();
        if state.ram_device != trap {
            state.ram_device = trap;
            tree_changed();
        }
    }

    /// Whether this RAM region is served through dispatch.
    pub fn is_ram_device(&self) -> bool {
        self.lock().ram_device
    }

    /// Places `child` at `offset` in this region with `priority`. A child already placed in
    /// another region is refused (logged), as QEMU refuses it.
    pub fn add_subregion(&self, offset: u64, child: &MemoryRegion, priority: i32) {
        if child == self {
            log::error!("memory: cannot add region {} to itself", self.node.name);
            return;
        }
        {
            let mut child_state = child.lock();
            if child_state
                .parent
                .as_ref()
                .and_then(Weak::upgrade)
                .is_some()
            {
                log::error!(
                    "memory: region {} already has a parent; not adding it to {}",
                    child.node.name,
                    self.node.name
                );
                return;
            }
            child_state.parent = Some(Arc::downgrade(&self.node));
            child_state.addr = offset;
            child_state.priority = priority;
        }
        insert_in_order(&mut self.lock().subregions, child.clone(), priority);
        tree_changed();
    }

    /// Removes `child` from this region (no effect if it is not a child).
    pub fn del_subregion(&self, child: &MemoryRegion) {
        let removed = {
            let mut state = self.lock();
            let before = state.subregions.len();
            state.subregions.retain(|c| c != child);
            before != state.subregions.len()
        };
        if removed {
            child.lock().parent = None;
            tree_changed();
        }
    }

    /// Moves this region within its parent. Like QEMU, a moved region counts as the most
    /// recently added among its priority.
    pub fn set_address(&self, offset: u64) {
        let (parent, priority) = {
            let mut state = self.lock();
            if state.addr == offset {
                return;
            }
            state.addr = offset;
            (
                state.parent.as_ref().and_then(Weak::upgrade),
                state.priority,
            )
        };
        if let Some(parent) = parent {
            let parent = MemoryRegion { node: parent };
            let mut parent_state = parent.lock();
            parent_state.subregions.retain(|c| c != self);
            insert_in_order(&mut parent_state.subregions, self.clone(), priority);
        }
        tree_changed();
    }

    /// Offset of this region in its parent.
    pub fn address(&self) -> u64 {
        self.lock().addr
    }

    /// Priority of this region in its parent.
    pub fn priority(&self) -> i32 {
        self.lock().priority
    }

    /// Shows or hides the region (and its subregions) in its address space, as a BAR with
    /// decoding turned off; the next commit applies it.
    pub fn set_enabled(&self, enabled: bool) {
        let mut state = self.lock();
        if state.enabled != enabled {
            state.enabled = enabled;
            tree_changed();
        }
    }

    /// False when the region is hidden.
    pub fn is_enabled(&self) -> bool {
        self.lock().enabled
    }

    /// Changes where an alias's window starts in its target. No effect on non-aliases.
    pub fn set_alias_offset(&self, offset: u64) {
        let mut state = self.lock();
        if state.alias_offset != offset {
            state.alias_offset = offset;
            tree_changed();
        }
    }

    /// Where an alias's window starts in its target (0 for non-aliases).
    pub fn alias_offset(&self) -> u64 {
        self.lock().alias_offset
    }

    /// Changes the size (`u64::MAX` = the whole 64-bit space). A RAM region cannot grow beyond
    /// its mapping: such a request is refused (logged).
    pub fn set_size(&self, size: u64) {
        if let RegionKind::Ram(mapping) = &self.node.kind {
            if size > mapping.size() as u64 {
                log::error!(
                    "memory: RAM region {} cannot grow to {size:#x} (mapping is {:#x})",
                    self.node.name,
                    mapping.size()
                );
                return;
            }
        }
        let mut state = self.lock();
        let size = size_from_u64(size);
        if state.size != size {
            state.size = size;
            tree_changed();
        }
    }

    /// Size in bytes (`u64::MAX` for a region spanning the whole 64-bit space).
    pub fn size(&self) -> u64 {
        u64::try_from(self.lock().size).unwrap_or(u64::MAX)
    }

    /// The name given at creation, for `info mtree` and logs.
    pub fn name(&self) -> String {
        self.node.name.clone()
    }

    pub(crate) fn name_str(&self) -> &str {
        &self.node.name
    }

    pub(crate) fn kind(&self) -> &RegionKind {
        &self.node.kind
    }

    /// True for a RAM region (backed by host memory).
    pub fn is_ram(&self) -> bool {
        matches!(self.node.kind, RegionKind::Ram(_))
    }

    /// True for an I/O region (device callbacks).
    pub fn is_io(&self) -> bool {
        matches!(self.node.kind, RegionKind::Io { .. })
    }

    /// The target of an alias.
    pub fn alias_target(&self) -> Option<MemoryRegion> {
        match &self.node.kind {
            RegionKind::Alias(target) => Some(target.clone()),
            _ => None,
        }
    }

    /// Host address of a RAM leaf's mapping (None for non-RAM).
    pub fn host_addr(&self) -> Option<*mut u8> {
        match &self.node.kind {
            RegionKind::Ram(mapping) => Some(mapping.as_ptr()),
            _ => None,
        }
    }

    /// The file behind a shared RAM region and the offset of the region's first byte in it
    /// (`None` for anonymous RAM and non-RAM regions). The fd lives as long as the region.
    pub fn ram_file(&self) -> Option<(BorrowedFd<'_>, u64)> {
        match &self.node.kind {
            RegionKind::Ram(mapping) if mapping.flags() & libc::MAP_SHARED != 0 => {
                mapping.file_offset().map(|f| (f.file().as_fd(), f.start()))
            }
            _ => None,
        }
    }

    /// Subregions in QEMU's order (priority descending, later-added first).
    pub fn subregions(&self) -> Vec<MemoryRegion> {
        self.lock().subregions.clone()
    }

    /// KVM ioeventfd on an I/O leaf: a guest write of `len` bytes (0 = any length) at `offset`
    /// (with value `datamatch`, None = any value) signals `fd` without leaving the kernel.
    /// Takes effect at the next commit, wherever the region is then visible.
    pub fn add_eventfd(&self, offset: u64, len: u32, datamatch: Option<u64>, fd: Arc<EventFd>) {
        if !self.is_io() {
            log::warn!(
                "memory: eventfd on non-I/O region {} is ignored",
                self.node.name
            );
        }
        let mut state = self.lock();
        if state
            .eventfds
            .iter()
            .any(|e| e.same(offset, len, datamatch, &fd))
        {
            return;
        }
        state.eventfds.push(RegionEventFd {
            offset,
            len,
            datamatch,
            fd,
        });
        tree_changed();
    }

    /// Removes an eventfd added with the same arguments (no effect if none matches).
    pub fn del_eventfd(&self, offset: u64, len: u32, datamatch: Option<u64>, fd: &Arc<EventFd>) {
        let mut state = self.lock();
        let before = state.eventfds.len();
        state
            .eventfds
            .retain(|e| !e.same(offset, len, datamatch, fd));
        if state.eventfds.len() != before {
            tree_changed();
        }
    }
}

fn insert_in_order(subregions: &mut Vec<MemoryRegion>, child: MemoryRegion, priority: i32) {
    // Before the first sibling with priority <= ours: later-added wins among equals.
    let position = subregions
        .iter()
        .position(|other| priority >= other.lock().priority)
        .unwrap_or(subregions.len());
    subregions.insert(position, child);
}
