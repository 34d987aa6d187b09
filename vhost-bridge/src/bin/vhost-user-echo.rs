//! `vhost-user-echo`: a small vhost-user backend (built on `vhost-user-backend`) for tests and
//! benchmarks. Every queue echoes: the bytes of a chain's readable buffers are copied, in order,
//! into its writable buffers, and the chain is returned with the number of bytes written. Its
//! configuration space is `b"ECHO"` followed by the queue count (u32 little-endian). It calls
//! the driver after using chains unless the driver set VRING_AVAIL_F_NO_INTERRUPT (a driver
//! polling the used ring; virtio-queue does not look at that flag itself).
//!
//! It serves one frontend at a time and listens again when that one disconnects, like the
//! rust-vmm vhost-device backends.

use std::sync::{Arc, RwLock};

use clap::Parser;
use vhost::vhost_user::message::{VhostUserProtocolFeatures, VhostUserVirtioFeatures};
use vhost_user_backend::{VhostUserBackendMut, VhostUserDaemon, VringRwLock, VringT};
use virtio_bindings::bindings::virtio_config::VIRTIO_F_VERSION_1;
use virtio_bindings::bindings::virtio_ring::VRING_AVAIL_F_NO_INTERRUPT;
use virtio_queue::{QueueOwnedT, QueueT};
use vm_memory::{Bytes, GuestAddress, GuestAddressSpace, GuestMemoryAtomic, GuestMemoryMmap};
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
}

struct Echo {
    queues: usize,
    mem: Option<GuestMemoryAtomic<GuestMemoryMmap>>,
}

impl Echo {
    /// Echoes every available chain of `vring`; returns whether any was used.
    fn process(&self, vring: &VringRwLock) -> std::io::Result<bool> {
        let Some(mem) = &self.mem else {
            return Ok(false);
        };
        let mem = mem.memory();
        let chains: Vec<_> = vring
            .get_mut()
            .get_queue_mut()
            .iter(mem.clone())
            .map_err(std::io::Error::other)?
            .collect();
        let any = !chains.is_empty();
        for chain in chains {
            let head = chain.head_index();
            let mut data = Vec::new();
            let mut written = 0u32;
            for desc in chain.clone() {
                if desc.is_write_only() {
                    continue;
                }
                let start = data.len();
                data.resize(start + desc.len() as usize, 0);
                if chain
                    .memory()
                    .read_slice(&mut data[start..], desc.addr())
                    .is_err()
                {
                    data.truncate(start);
                }
            }
            let mut rest = &data[..];
            for desc in chain {
                if !desc.is_write_only() || rest.is_empty() {
                    continue;
                }
                let n = rest.len().min(desc.len() as usize);
                if mem.write_slice(&rest[..n], desc.addr()).is_ok() {
                    written += n as u32;
                    rest = &rest[n..];
                }
            }
            vring
                .add_used(head, written)
                .map_err(std::io::Error::other)?;
        }
        Ok(any)
    }

    /// Whether the driver wants a call: it has not set VRING_AVAIL_F_NO_INTERRUPT.
    fn wants_call(&self, vring: &VringRwLock) -> bool {
        let Some(mem) = &self.mem else {
            return true;
        };
        let flags_at = GuestAddress(vring.get_ref().get_queue().avail_ring());
        // The fence orders our used index store before reading the flag (virtio 1.2 §2.7.7).
        std::sync::atomic::fence(std::sync::atomic::Ordering::SeqCst);
        mem.memory()
            .load::<u16>(flags_at, std::sync::atomic::Ordering::Acquire)
            .map_or(true, |flags| flags & VRING_AVAIL_F_NO_INTERRUPT as u16 == 0)
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
        1 << VIRTIO_F_VERSION_1 | VhostUserVirtioFeatures::PROTOCOL_FEATURES.bits()
    }

    fn protocol_features(&self) -> VhostUserProtocolFeatures {
        VhostUserProtocolFeatures::MQ
            | VhostUserProtocolFeatures::REPLY_ACK
            | VhostUserProtocolFeatures::CONFIG
    }

    fn set_event_idx(&mut self, _enabled: bool) {}

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
        // Drain until no new chain appeared while we worked (notifications stay on).
        while self.process(vring)? {
            if self.wants_call(vring) {
                vring.signal_used_queue()?;
            }
        }
        Ok(())
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
        let backend = Arc::new(RwLock::new(Echo {
            queues: args.queues,
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
