//! `vhost-user-echo`: a small vhost-user backend (built on `vhost-user-backend`) for tests and
//! benchmarks. Every queue echoes: the bytes of a chain's readable buffers are copied, in order,
//! into its writable buffers, and the chain is returned with the number of bytes written. Its
//! configuration space is `b"ECHO"` followed by the queue count (u32 little-endian).
//!
//! It offers VIRTIO_F_EVENT_IDX and VIRTIO_F_INDIRECT_DESC (virtio-queue follows indirect tables
//! itself). With EVENT_IDX it calls the driver only when the used index crosses the driver's
//! `used_event`, and the driver kicks only when its avail index crosses our `avail_event`
//! (written when we go back to sleep); without it, kicks are suppressed with
//! VRING_USED_F_NO_NOTIFY while we work, and we call after using chains unless the driver set
//! VRING_AVAIL_F_NO_INTERRUPT (a driver polling the used ring; virtio-queue does not look at
//! that flag itself). `--no-event-idx` / `--no-indirect` leave a feature out of the offer.
//! Bytes are copied from the readable buffers to the writable ones in the shared memory
//! directly (one copy).
//!
//! It serves one frontend at a time and listens again when that one disconnects, like the
//! rust-vmm vhost-device backends.

use std::sync::atomic::{fence, Ordering};
use std::sync::{Arc, RwLock};
use std::time::{Duration, Instant};

use clap::Parser;
use vhost::vhost_user::message::{VhostUserProtocolFeatures, VhostUserVirtioFeatures};
use vhost_user_backend::{VhostUserBackendMut, VhostUserDaemon, VringRwLock, VringT};
use virtio_bindings::bindings::virtio_config::VIRTIO_F_VERSION_1;
use virtio_bindings::bindings::virtio_ring::{
    VIRTIO_RING_F_EVENT_IDX, VIRTIO_RING_F_INDIRECT_DESC, VRING_AVAIL_F_NO_INTERRUPT,
};
use virtio_ivshmem::virtqueue::event_crossed;
use virtio_ivshmem::SPINS_PER_YIELD;
use virtio_queue::desc::split::Descriptor;
use virtio_queue::QueueT;
use vm_memory::volatile_memory::{VolatileMemory, VolatileSlice};
use vm_memory::{
    Bytes, GuestAddress, GuestAddressSpace, GuestMemoryAtomic, GuestMemoryBackend, GuestMemoryMmap,
};
use vmm_sys_util::epoll::EventSet;
use vmm_sys_util::event::{
    new_event_consumer_and_notifier, EventConsumer, EventFlag, EventNotifier,
};

#[derive(Parser, Debug)]
#[command(
    version,
    about = "vhost-user echo backend: copies readable buffers into writable ones"
)]
struct Args {
    /// Socket to listen on.
    #[arg(short, long)]
    socket: std::path::PathBuf,
    /// Number of queues.
    #[arg(short, long, default_value_t = 1)]
    queues: usize,
    /// Do not offer VIRTIO_F_EVENT_IDX.
    #[arg(long)]
    no_event_idx: bool,
    /// Do not offer VIRTIO_F_INDIRECT_DESC.
    #[arg(long)]
    no_indirect: bool,
    /// Adaptive busy polling: after answering what a queue had, keep looking at its avail
    /// ring for up to this many microseconds (yielding the CPU between looks) before turning
    /// kicks back on and sleeping. 0 (the default) sleeps at once.
    #[arg(long, default_value_t = 0)]
    poll_us: u64,
}

struct Echo {
    queues: usize,
    features: u64,
    event_idx: bool,
    /// How long a queue's avail ring is polled before sleeping (`--poll-us`).
    busy_poll: Duration,
    mem: Option<GuestMemoryAtomic<GuestMemoryMmap>>,
    /// A chain's readable and writable buffers, kept to be reused by the next chain.
    readable: Vec<(GuestAddress, usize)>,
    writable: Vec<(GuestAddress, usize)>,
}

/// Copies the bytes of `readable` (address, length) buffers, in order, into the `writable`
/// ones, shared memory to shared memory; returns the bytes written. A buffer outside the memory
/// ends the copy there.
fn copy_chain(
    mem: &GuestMemoryMmap,
    readable: &[(GuestAddress, usize)],
    writable: &[(GuestAddress, usize)],
) -> u32 {
    let (mut r, mut r_off, mut w, mut w_off) = (0, 0, 0, 0);
    let mut written = 0u32;
    while let (Some(&(src, src_len)), Some(&(dst, dst_len))) = (readable.get(r), writable.get(w)) {
        let n = (src_len - r_off).min(dst_len - w_off);
        if n > 0 {
            let (Ok(from), Ok(to)) = (
                mem.get_slice(GuestAddress(src.0 + r_off as u64), n),
                mem.get_slice(GuestAddress(dst.0 + w_off as u64), n),
            ) else {
                break;
            };
            from.copy_to_volatile_slice(to);
            written = written.saturating_add(n as u32);
        }
        r_off += n;
        w_off += n;
        if r_off == src_len {
            (r, r_off) = (r + 1, 0);
        }
        if w_off == dst_len {
            (w, w_off) = (w + 1, 0);
        }
    }
    written
}

/// Reads the buffers of the chain at `head` of the descriptor table `table` (`size` entries),
/// following an indirect table if the head points at one (virtio 1.2 §2.7.5), into `readable`
/// and `writable` (address, length). A malformed chain (an index outside its table, a loop, a
/// nested or misshapen indirect table, a table outside the memory, more than 4 GiB in all) ends
/// where it breaks: the echo answers what it could read, the way virtio-queue's chain iterator
/// stops.
fn walk_chain(
    mem: &GuestMemoryMmap,
    table: &VolatileSlice<()>,
    size: u16,
    head: u16,
    readable: &mut Vec<(GuestAddress, usize)>,
    writable: &mut Vec<(GuestAddress, usize)>,
) {
    readable.clear();
    writable.clear();
    let mut table = *table;
    let (mut entries, mut index, mut indirect) = (size, head, false);
    // Descriptors left before the walk is a loop: each table's size.
    let mut ttl = entries;
    let mut bytes = 0u32;
    while index < entries && ttl > 0 {
        ttl -= 1;
        let Ok(desc) = table.get_ref::<Descriptor>(16 * index as usize) else {
            return;
        };
        let desc = desc.load();
        if desc.refers_to_indirect_table() {
            let len = desc.len();
            if indirect || len == 0 || len % 16 != 0 || len / 16 > u32::from(u16::MAX) {
                return;
            }
            let Ok(inner) = mem.get_slice(desc.addr(), len as usize) else {
                return;
            };
            (table, entries, index, indirect) = (inner, (len / 16) as u16, 0, true);
            ttl = entries;
            continue;
        }
        let Some(total) = bytes.checked_add(desc.len()) else {
            return;
        };
        bytes = total;
        let buffer = (desc.addr(), desc.len() as usize);
        if desc.is_write_only() {
            writable.push(buffer);
        } else {
            readable.push(buffer);
        }
        if !desc.has_next() {
            return;
        }
        index = desc.next();
    }
}

/// What a pass over a queue did.
enum Used {
    /// No chain was available.
    Nothing,
    /// Chains were used; whether the driver wants a call for them.
    Call(bool),
}

impl Echo {
    /// Echoes every available chain of `vring`; returns whether any was used and, if so,
    /// whether the driver wants a call for them. Each chain is returned as soon as it is
    /// answered (a polling driver can take it while we do the next),
    /// and the avail index is read again after each batch, so chains added meanwhile are taken
    /// in the same pass. One lock of the vring per pass; the avail ring and the descriptor
    /// table are looked up in the memory once per pass and read through those slices
    /// ([`walk_chain`]); the buffer lists are reused: nothing is allocated per chain.
    fn process(&mut self, vring: &VringRwLock) -> std::io::Result<Used> {
        let Some(mem) = &self.mem else {
            return Ok(Used::Nothing);
        };
        let guard = mem.memory();
        let mem: &GuestMemoryMmap = &guard;
        let mut state = vring.get_mut();
        let queue = state.get_queue_mut();
        if !queue.ready() {
            return Ok(Used::Nothing);
        }
        let size = queue.size();
        let ring = |addr: u64, len: usize| {
            mem.get_slice(GuestAddress(addr), len)
                .map_err(std::io::Error::other)
        };
        // The avail ring with used_event, the used ring's entries, the descriptor table.
        let avail = ring(queue.avail_ring(), 6 + 2 * size as usize)?;
        let used = ring(queue.used_ring(), 4 + 8 * size as usize)?;
        // A descriptor table outside the memory makes every chain empty (answered with 0
        // bytes), as virtio-queue's chains were; a bad avail ring stops the queue.
        let table = ring(queue.desc_table(), 16 * size as usize).ok();
        let mut next_avail = queue.next_avail();
        let first_used = queue.next_used();
        let mut next_used = first_used;
        // A pass ends after a ring's worth of chains, so that a driver waiting for a call gets
        // it even while other chains keep coming.
        while next_used.wrapping_sub(first_used) < size {
            // Acquire: the entries and descriptors behind the index are read next.
            let avail_idx = avail
                .load::<u16>(2, Ordering::Acquire)
                .map(u16::from_le)
                .map_err(std::io::Error::other)?;
            let pending = avail_idx.wrapping_sub(next_avail);
            if pending == 0 {
                break;
            }
            if pending > size {
                return Err(std::io::Error::other(format!(
                    "the driver's avail index moved by {pending}, more than the queue's {size} \
                     entries"
                )));
            }
            for _ in 0..pending {
                let entry = 4 + 2 * (next_avail % size) as usize;
                let head = avail
                    .get_ref::<u16>(entry)
                    .map_err(std::io::Error::other)?
                    .load();
                let head = u16::from_le(head);
                next_avail = next_avail.wrapping_add(1);
                queue.set_next_avail(next_avail);
                if head >= size {
                    return Err(std::io::Error::other(format!(
                        "the driver made descriptor {head} available, outside the queue's \
                         {size} entries"
                    )));
                }
                let (readable, writable) = (&mut self.readable, &mut self.writable);
                match &table {
                    Some(table) => walk_chain(mem, table, size, head, readable, writable),
                    None => {
                        readable.clear();
                        writable.clear();
                    }
                }
                let written = copy_chain(mem, readable, writable);
                // A used element is (id: le32, len: le32), virtio-queue's `VirtqUsedElem`.
                let element = [u32::from(head).to_le(), written.to_le()];
                used.get_ref::<[u32; 2]>(4 + 8 * (next_used % size) as usize)
                    .map_err(std::io::Error::other)?
                    .store(element);
                next_used = next_used.wrapping_add(1);
                // Each chain is published as soon as it is answered: a polling driver takes it
                // while we do the next.
                used.store(next_used.to_le(), 2, Ordering::Release)
                    .map_err(std::io::Error::other)?;
                queue.set_next_used(next_used);
            }
        }
        if next_used == first_used {
            return Ok(Used::Nothing);
        }
        if !self.event_idx {
            return Ok(Used::Call(self.wants_call(&avail)));
        }
        // virtio 1.2 §2.7.10: call if the used index crossed the driver's used_event since the
        // pass began. The fence orders the used index store before reading used_event.
        fence(Ordering::SeqCst);
        let used_event = avail
            .load::<u16>(4 + 2 * size as usize, Ordering::Acquire)
            .map(u16::from_le)
            .map_err(std::io::Error::other)?;
        Ok(Used::Call(event_crossed(used_event, next_used, first_used)))
    }

    /// Busy polling: whether the driver made a chain available on `vring` within
    /// [`busy_poll`](Echo::busy_poll), looking again after each yield of the CPU (a driver on
    /// the same CPU then gets to run).
    fn poll_avail(&self, vring: &VringRwLock) -> bool {
        let Some(mem) = &self.mem else {
            return false;
        };
        let mem = mem.memory();
        let start = Instant::now();
        while start.elapsed() < self.busy_poll {
            std::thread::yield_now();
            let state = vring.get_ref();
            let queue = state.get_queue();
            // Several looks per yield, like the driver's (virtio_ivshmem::SPINS_PER_YIELD): a
            // driver on another CPU adds its next chain sooner than a yield returns.
            for _ in 0..SPINS_PER_YIELD {
                // Acquire: the chains behind the index are read next (virtio 1.2 §2.7.13.3).
                match queue.avail_idx(&*mem, Ordering::Acquire) {
                    Ok(avail) if avail.0 != queue.next_avail() => return true,
                    Ok(_) => {}
                    // A broken ring is for process() to report; stop polling it.
                    Err(_) => return false,
                }
                std::hint::spin_loop();
            }
        }
        false
    }

    /// Without EVENT_IDX, whether the driver wants a call: it has not set
    /// VRING_AVAIL_F_NO_INTERRUPT in the flags of its `avail` ring.
    fn wants_call(&self, avail: &VolatileSlice<()>) -> bool {
        // The fence orders our used index store before reading the flag (virtio 1.2 §2.7.7).
        fence(Ordering::SeqCst);
        avail
            .load::<u16>(0, Ordering::Acquire)
            .map_or(true, |flags| {
                u16::from_le(flags) & VRING_AVAIL_F_NO_INTERRUPT as u16 == 0
            })
    }
}

impl VhostUserBackendMut for Echo {
    type Bitmap = ();
    type Vring = VringRwLock;

    fn num_queues(&self) -> usize {
        self.queues
    }

    fn max_queue_size(&self) -> usize {
        1024
    }

    fn features(&self) -> u64 {
        self.features
    }

    fn protocol_features(&self) -> VhostUserProtocolFeatures {
        VhostUserProtocolFeatures::MQ
            | VhostUserProtocolFeatures::REPLY_ACK
            | VhostUserProtocolFeatures::CONFIG
    }

    fn set_event_idx(&mut self, enabled: bool) {
        self.event_idx = enabled;
    }

    // The worker thread stops on this event when the frontend disconnects; without it the
    // daemon could not be dropped and we could not listen again.
    fn exit_event(&self, _thread_index: usize) -> Option<(EventConsumer, EventNotifier)> {
        new_event_consumer_and_notifier(EventFlag::empty()).ok()
    }

    fn get_config(&self, offset: u32, size: u32) -> Vec<u8> {
        let mut config = b"ECHO".to_vec();
        config.extend_from_slice(&(self.queues as u32).to_le_bytes());
        let end = offset.saturating_add(size) as usize;
        if end > 256 {
            return Vec::new();
        }
        config.resize(config.len().max(end), 0);
        config[offset as usize..end].to_vec()
    }

    fn update_memory(&mut self, mem: GuestMemoryAtomic<GuestMemoryMmap>) -> std::io::Result<()> {
        self.mem = Some(mem);
        Ok(())
    }

    fn handle_event(
        &mut self,
        device_event: u16,
        evset: EventSet,
        vrings: &[VringRwLock],
        _thread_id: usize,
    ) -> std::io::Result<()> {
        if evset != EventSet::IN {
            return Ok(());
        }
        let Some(vring) = vrings.get(device_event as usize) else {
            return Ok(());
        };
        // No kicks while we work (without EVENT_IDX: VRING_USED_F_NO_NOTIFY; with it, the
        // driver kicks only when its index crosses the avail_event we leave behind); drain until
        // no chain appeared while notifications were being turned back on.
        loop {
            vring
                .disable_notification()
                .map_err(std::io::Error::other)?;
            if let Used::Call(call) = self.process(vring)? {
                if call {
                    vring.signal_used_queue()?;
                }
                // Kicks stay off while we poll: a driver adding chains meanwhile has them
                // answered without a kick or a wake-up of ours.
                if !self.busy_poll.is_zero() && self.poll_avail(vring) {
                    continue;
                }
            }
            if !vring.enable_notification().map_err(std::io::Error::other)? {
                return Ok(());
            }
        }
    }
}

fn main() -> std::process::ExitCode {
    env_logger::Builder::from_env(env_logger::Env::default().default_filter_or("info")).init();
    let args = Args::parse();
    if args.queues == 0 || args.queues > 32 {
        log::error!("--queues must be 1 to 32");
        return std::process::ExitCode::from(2);
    }
    loop {
        let mut features =
            1 << VIRTIO_F_VERSION_1 | VhostUserVirtioFeatures::PROTOCOL_FEATURES.bits();
        if !args.no_event_idx {
            features |= 1 << VIRTIO_RING_F_EVENT_IDX;
        }
        if !args.no_indirect {
            features |= 1 << VIRTIO_RING_F_INDIRECT_DESC;
        }
        let backend = Arc::new(RwLock::new(Echo {
            queues: args.queues,
            features,
            event_idx: false,
            busy_poll: Duration::from_micros(args.poll_us),
            readable: Vec::new(),
            writable: Vec::new(),
            mem: None,
        }));
        let mut daemon = match VhostUserDaemon::new(
            "vhost-user-echo".into(),
            backend,
            GuestMemoryAtomic::new(GuestMemoryMmap::new()),
        ) {
            Ok(d) => d,
            Err(e) => {
                log::error!("cannot create the daemon: {e}");
                return std::process::ExitCode::from(1);
            }
        };
        log::info!("listening on {}", args.socket.display());
        match daemon.serve(&args.socket) {
            Ok(()) => log::info!("frontend disconnected; listening again"),
            Err(e) => log::warn!("frontend connection ended: {e}; listening again"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use virtio_bindings::bindings::virtio_ring::{
        VRING_DESC_F_INDIRECT, VRING_DESC_F_NEXT, VRING_DESC_F_WRITE,
    };

    const SIZE: u16 = 8;
    const TABLE: u64 = 0x1000;
    const INDIRECT: u64 = 0x2000;

    fn memory() -> GuestMemoryMmap {
        GuestMemoryMmap::from_ranges(&[(GuestAddress(0), 0x10000)]).unwrap()
    }

    fn put(mem: &GuestMemoryMmap, table: u64, index: u16, desc: Descriptor) {
        mem.write_obj(desc, GuestAddress(table + 16 * index as u64))
            .unwrap();
    }

    /// The (readable, writable) buffers `walk_chain` reads for `head`.
    fn walk(mem: &GuestMemoryMmap, head: u16) -> (Vec<u64>, Vec<u64>) {
        let table = mem
            .get_slice(GuestAddress(TABLE), 16 * SIZE as usize)
            .unwrap();
        let (mut readable, mut writable) = (Vec::new(), Vec::new());
        walk_chain(mem, &table, SIZE, head, &mut readable, &mut writable);
        let addrs = |v: Vec<(GuestAddress, usize)>| v.into_iter().map(|(a, _)| a.0).collect();
        (addrs(readable), addrs(writable))
    }

    const NEXT: u16 = VRING_DESC_F_NEXT as u16;
    const WRITE: u16 = VRING_DESC_F_WRITE as u16;

    #[test]
    fn walks_direct_and_indirect_chains() {
        let mem = memory();
        put(&mem, TABLE, 3, Descriptor::new(0x8000, 64, NEXT, 5));
        put(&mem, TABLE, 5, Descriptor::new(0x9000, 64, WRITE, 0));
        assert_eq!(walk(&mem, 3), (vec![0x8000], vec![0x9000]));
        put(&mem, INDIRECT, 0, Descriptor::new(0xA000, 8, NEXT, 1));
        put(&mem, INDIRECT, 1, Descriptor::new(0xB000, 8, WRITE, 0));
        let indirect = VRING_DESC_F_INDIRECT as u16;
        put(&mem, TABLE, 0, Descriptor::new(INDIRECT, 32, indirect, 0));
        assert_eq!(walk(&mem, 0), (vec![0xA000], vec![0xB000]));
    }

    #[test]
    fn malformed_chains_end_where_they_break() {
        let mem = memory();
        // A loop: at most one table's worth of descriptors.
        put(&mem, TABLE, 1, Descriptor::new(0x8000, 1, NEXT, 2));
        put(&mem, TABLE, 2, Descriptor::new(0x8001, 1, NEXT, 1));
        assert_eq!(walk(&mem, 1).0.len(), SIZE as usize);
        // A next index outside the table.
        put(&mem, TABLE, 4, Descriptor::new(0x8000, 1, NEXT, SIZE));
        assert_eq!(walk(&mem, 4), (vec![0x8000], vec![]));
        // A head outside the table.
        assert_eq!(walk(&mem, SIZE), (vec![], vec![]));
        let indirect = VRING_DESC_F_INDIRECT as u16;
        // An indirect table inside an indirect table, one of a length that is not whole
        // descriptors, and one outside the memory.
        put(&mem, INDIRECT, 0, Descriptor::new(0x8000, 1, NEXT, 1));
        put(
            &mem,
            INDIRECT,
            1,
            Descriptor::new(INDIRECT, 16, indirect, 0),
        );
        put(&mem, TABLE, 0, Descriptor::new(INDIRECT, 32, indirect, 0));
        assert_eq!(walk(&mem, 0), (vec![0x8000], vec![]));
        put(&mem, TABLE, 0, Descriptor::new(INDIRECT, 20, indirect, 0));
        assert_eq!(walk(&mem, 0), (vec![], vec![]));
        put(&mem, TABLE, 0, Descriptor::new(0xFFF0, 32, indirect, 0));
        assert_eq!(walk(&mem, 0), (vec![], vec![]));
        // More than 4 GiB in all.
        put(&mem, TABLE, 6, Descriptor::new(0x8000, u32::MAX, NEXT, 7));
        put(&mem, TABLE, 7, Descriptor::new(0x9000, 2, WRITE, 0));
        assert_eq!(walk(&mem, 6), (vec![0x8000], vec![]));
    }
}
