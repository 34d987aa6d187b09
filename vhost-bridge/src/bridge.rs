//! [`Bridge`]: the device side of one virtio-over-ivshmem header. It publishes the header,
//! answers the driver's requests (status, features, queues), hands the rings to the vhost-user
//! backend at DRIVER_OK, and resets when the driver leaves. It never touches the data path: the
//! driver's kicks are our own vector eventfds, which the backend holds, and the backend's calls
//! go straight to the driver's vector eventfd.

use std::os::fd::{AsFd, BorrowedFd};
use std::path::PathBuf;
use std::time::{Duration, Instant};

use nix::poll::{PollFd, PollFlags, PollTimeout};
use peer::{ConnectOptions, Peer, ServerEvent};
use virtio_ivshmem::layout::{
    self, feature, field, queue_field, status, ErrorCode, QueueSetup, NO_PEER,
};
use virtio_ivshmem::Header;

use crate::backend::{Backend, BackendError, QueueStart};

/// What the bridge serves, from the command line.
#[derive(Debug, Clone)]
pub struct Config {
    /// The ivshmem server's socket.
    pub socket: PathBuf,
    /// The vhost-user backend's socket.
    pub backend: PathBuf,
    /// Offset of the header in the shared memory.
    pub header: u64,
    /// Virtio device id to publish.
    pub device_id: u32,
    /// Queue count when the backend cannot say (no MQ protocol feature), or a smaller limit.
    pub queues: Option<u32>,
    /// Largest queue size offered (vhost-user cannot ask the backend).
    pub queue_size: u32,
    /// Bytes of configuration space to fetch from the backend (GET_CONFIG), when it offers it.
    pub config_size: u32,
    /// How long to wait for the server, and for the backend at start.
    pub timeout: Duration,
    /// How long live rings wait for a lost backend to come back before the device is flagged
    /// DEVICE_NEEDS_RESET (the driver then gets an error instead of waiting on).
    pub backend_grace: Duration,
}

/// Errors that stop the bridge.
#[derive(Debug, thiserror::Error)]
pub enum BridgeError {
    /// Cannot join the ivshmem server.
    #[error("cannot join the ivshmem server: {0}")]
    Connect(#[from] peer::ConnectError),
    /// The header cannot be at the offset given.
    #[error(transparent)]
    Header(#[from] virtio_ivshmem::header::BadHeaderBase),
    /// The backend could not be reached at start.
    #[error("backend {path}: {source}")]
    Backend {
        /// Its socket.
        path: PathBuf,
        /// Why.
        #[source]
        source: BackendError,
    },
    /// The server gives us too few vectors for the queues.
    #[error(
        "the server gives each peer {have} vectors; this device needs {need} (1 for requests, 1 \
         per queue): start the server with -n {need} or more"
    )]
    TooFewVectors {
        /// Vectors we have.
        have: u32,
        /// Vectors needed.
        need: u32,
    },
    /// The queue size option is not a power of two within limits.
    #[error("queue size {0} must be a power of two from 1 to 32768")]
    QueueSize(u32),
    /// The server went away: no driver can join any more.
    #[error("the ivshmem server went away: {0}")]
    ServerGone(String),
    /// Waiting failed.
    #[error("poll: {0}")]
    Poll(#[from] nix::Error),
}

/// The rings handed to the backend while the device is live.
struct Running {
    features: u64,
    driver: u16,
    queues: Vec<(u32, QueueSetup, u32)>,
}

/// The device side of one header.
pub struct Bridge {
    peer: Peer,
    config: Config,
    backend: Option<Backend>,
    running: Option<Running>,
    /// The device status as we applied it (the header's copy is for the driver to read).
    status: u32,
    num_queues: u32,
    offered: u64,
    next_reconnect: Instant,
    reconnect_delay: Duration,
    /// When the backend of live rings went away (cleared when it is back or we gave up).
    backend_lost_at: Option<Instant>,
}

/// How long a request from a driver peer we have not heard of waits for the server to announce
/// it: a driver can ring us as soon as it has joined, before the server's message about its
/// join (and its vectors) has reached us. Without the wait such a request was refused
/// (`UnknownDriverPeer`) and its answer could not even be rung.
const DRIVER_JOIN_WAIT: Duration = Duration::from_secs(2);
const RECONNECT_MIN: Duration = Duration::from_millis(50);
const RECONNECT_MAX: Duration = Duration::from_secs(1);

impl Bridge {
    /// Joins the server, connects the backend (waiting up to `config.timeout` for it), and
    /// publishes the header.
    pub fn new(config: Config) -> Result<Bridge, BridgeError> {
        if !config.queue_size.is_power_of_two() || config.queue_size > layout::MAX_QUEUE_SIZE {
            return Err(BridgeError::QueueSize(config.queue_size));
        }
        let mut peer = Peer::connect_with(
            &config.socket,
            &ConnectOptions {
                vectors: None,
                timeout: config.timeout,
            },
        )?;
        Header::new(peer.shm(), config.header)?;
        let backend = connect_backend_waiting(&config)?;
        let need = backend.num_queues + 1;
        let me = peer.id();
        if !peer.await_vector(me, need - 1, Some(config.timeout)) {
            return Err(BridgeError::TooFewVectors {
                have: peer.own_vector_count(),
                need,
            });
        }
        let bridge = Bridge {
            num_queues: backend.num_queues,
            offered: backend.features & !feature::NEVER_OFFERED,
            backend: Some(backend),
            peer,
            config,
            running: None,
            status: 0,
            next_reconnect: Instant::now(),
            reconnect_delay: RECONNECT_MIN,
            backend_lost_at: None,
        };
        bridge.publish();
        log::info!(
            "serving virtio device {} with {} queue(s) at offset {:#x} as peer {} (features \
             {:#x})",
            bridge.config.device_id,
            bridge.num_queues,
            bridge.config.header,
            bridge.peer.id(),
            bridge.offered
        );
        Ok(bridge)
    }

    fn header(&self) -> Header<'_> {
        Header::new(self.peer.shm(), self.config.header).expect("checked in new")
    }

    /// Writes a fresh header: magic cleared first and set last, so a driver never sees a half
    /// written one. A previous header's generation is carried on and bumped.
    fn publish(&self) {
        let h = self.header();
        let generation = if h.is_published() {
            h.get(field::GENERATION).wrapping_add(1)
        } else {
            1
        };
        h.set64(field::MAGIC, 0);
        let _ = self.peer.shm().fill(
            self.config.header as usize + 8,
            layout::HEADER_SIZE as usize - 8,
            0,
        );
        h.set(field::VERSION, layout::VERSION);
        h.set(field::HEADER_SIZE, layout::HEADER_SIZE);
        h.set(field::DEVICE_ID, self.config.device_id);
        h.set(field::DEVICE_PEER, self.peer.id() as u32);
        h.set(field::NUM_QUEUES, self.num_queues);
        h.set(field::GENERATION, generation);
        h.set64(field::DEVICE_FEATURES, self.offered);
        h.set(field::DRIVER_PEER, NO_PEER);
        for q in 0..self.num_queues {
            h.queue_set(q, queue_field::MAX_SIZE, self.config.queue_size);
            h.queue_set(q, queue_field::KICK_VECTOR, q + 1);
        }
        if let Some(b) = &self.backend {
            h.write_config(&b.config);
        }
        h.set64(field::MAGIC, layout::MAGIC);
    }

    /// Serves until the server goes away.
    pub fn run(&mut self) -> Result<(), BridgeError> {
        loop {
            self.handle_request();
            let timeout = if self.backend.is_none() {
                let mut until = self.next_reconnect;
                if let Some(lost) = self.backend_lost_at {
                    until = until.min(lost + self.config.backend_grace);
                }
                until
                    .saturating_duration_since(Instant::now())
                    .max(Duration::from_millis(1))
            } else {
                Duration::from_secs(1)
            };
            let (request, server, backend) = self.wait(timeout)?;
            if request {
                let _ = self.peer.drain_vector(layout::DEVICE_REQUEST_VECTOR);
            }
            if server {
                for event in self.peer.process_server_messages() {
                    match event {
                        ServerEvent::Left { peer } => self.peer_left(peer),
                        ServerEvent::ServerGone { reason } => {
                            self.stop_rings();
                            return Err(BridgeError::ServerGone(reason));
                        }
                        _ => {}
                    }
                }
            }
            if backend {
                self.backend_lost("the backend closed its socket");
            }
            if self.backend.is_none() && Instant::now() >= self.next_reconnect {
                self.reconnect();
            }
            if self
                .backend_lost_at
                .is_some_and(|lost| lost.elapsed() >= self.config.backend_grace)
            {
                self.give_up_on_backend();
            }
        }
    }

    /// Polls the request vector, the server and the backend socket; says which are readable.
    fn wait(&self, timeout: Duration) -> Result<(bool, bool, bool), BridgeError> {
        let request_fd = self.peer.own_vector_fd(layout::DEVICE_REQUEST_VECTOR);
        let server_fd = self.peer.server_fd();
        let backend_fd = self.backend.as_ref().map(|b| b.socket_fd());
        // SAFETY: the backend's socket fd stays open while `self.backend` lives, which is for
        // the whole of this call (we hold `&self`).
        let backend_fd = backend_fd.map(|fd| unsafe { BorrowedFd::borrow_raw(fd) });
        let slots: [Option<BorrowedFd<'_>>; 3] = [request_fd, server_fd, backend_fd];
        let mut fds: Vec<PollFd<'_>> = Vec::new();
        let mut which = Vec::new();
        for (i, fd) in slots.iter().enumerate() {
            if let Some(fd) = fd {
                fds.push(PollFd::new(fd.as_fd(), PollFlags::POLLIN));
                which.push(i);
            }
        }
        let ms = PollTimeout::try_from(timeout.as_millis().min(60_000) as i32)
            .unwrap_or(PollTimeout::MAX);
        match nix::poll::poll(&mut fds, ms) {
            Ok(_) => {}
            Err(nix::errno::Errno::EINTR) => return Ok((false, false, false)),
            Err(e) => return Err(e.into()),
        }
        let mut ready = [false; 3];
        for (fd, &i) in fds.iter().zip(&which) {
            ready[i] = fd.revents().is_some_and(|r| !r.is_empty());
        }
        Ok((ready[0], ready[1], ready[2]))
    }

    /// Answers the driver's pending request, if any.
    fn handle_request(&mut self) {
        let h = self.header();
        let request = h.get(field::REQUEST);
        if request == h.get(field::ACK) {
            return;
        }
        let wanted = h.get(field::DRIVER_STATUS);
        let result = self.apply(wanted);
        let h = self.header();
        let code = match result {
            Ok(()) => ErrorCode::None,
            Err(code) => {
                log::warn!("refused the driver's request (status {wanted:#x}): {code:?}");
                code
            }
        };
        h.set(field::ERROR, code as u32);
        h.set(field::DEVICE_STATUS, self.status);
        h.set(field::ACK, request);
        self.notify_driver();
    }

    /// Rings the driver's config vector, if the driver and the vector exist.
    fn notify_driver(&self) {
        let h = self.header();
        let Ok(driver) = u16::try_from(h.get(field::DRIVER_PEER)) else {
            return;
        };
        let vector = h.get(field::DRIVER_CONFIG_VECTOR);
        if self
            .peer
            .peer_vector_count(driver)
            .is_some_and(|n| vector < n)
        {
            let _ = self.peer.ring(driver, vector);
        }
    }

    /// The driver peer named in the header, if it is a peer we know (a stale or bogus claim is
    /// cleared).
    fn driver_peer(&self) -> Option<u16> {
        let h = self.header();
        let raw = h.get(field::DRIVER_PEER);
        let known = u16::try_from(raw)
            .ok()
            .filter(|&id| id != self.peer.id() && self.peer.peer_vector_count(id).is_some());
        if known.is_none() && raw != NO_PEER {
            let _ = h.compare_exchange(field::DRIVER_PEER, raw, NO_PEER);
        }
        known
    }

    /// Takes in the server's news until the driver peer the header names is known to us (at
    /// most [`DRIVER_JOIN_WAIT`]); the events met on the way stay queued for [`run`](Self::run).
    /// A known peer's vectors came with its join (the server sends them in one burst), so a
    /// config vector beyond them is the driver's error, refused at once.
    fn await_driver_announced(&mut self) {
        let claim = self.header().get(field::DRIVER_PEER);
        let Ok(driver) = u16::try_from(claim) else {
            return;
        };
        if driver == self.peer.id() || self.peer.peer_vector_count(driver).is_some() {
            return;
        }
        if !self.peer.await_peer(driver, Some(DRIVER_JOIN_WAIT)) {
            log::warn!(
                "driver peer {driver} not announced by the server within {DRIVER_JOIN_WAIT:?}"
            );
        }
    }

    /// Applies the status the driver asks for.
    fn apply(&mut self, wanted: u32) -> Result<(), ErrorCode> {
        self.await_driver_announced();
        let Some(driver) = self.driver_peer() else {
            return Err(ErrorCode::UnknownDriverPeer);
        };
        let h = self.header();
        let config_vector = h.get(field::DRIVER_CONFIG_VECTOR);
        if self
            .peer
            .peer_vector_count(driver)
            .is_none_or(|n| config_vector >= n)
        {
            return Err(ErrorCode::BadConfigVector);
        }
        if wanted == 0 {
            self.end_session();
            self.status = 0;
            self.clear_queue_entries();
            return Ok(());
        }
        if self.running.is_some() {
            // Live: only a reset changes anything.
            return if wanted & status::DRIVER_OK != 0 {
                Ok(())
            } else {
                Err(ErrorCode::BadStatusSequence)
            };
        }
        let basic = status::ACKNOWLEDGE | status::DRIVER;
        if wanted & status::FEATURES_OK != 0 && self.status & status::FEATURES_OK == 0 {
            let accepted = h.get64(field::DRIVER_FEATURES);
            if accepted & !self.offered != 0 || accepted & feature::VERSION_1 == 0 {
                self.status = wanted & basic;
                return Err(ErrorCode::FeaturesRefused);
            }
        }
        if wanted & status::DRIVER_OK != 0 {
            if wanted & status::FEATURES_OK == 0 || self.status & status::FEATURES_OK == 0 {
                return Err(ErrorCode::BadStatusSequence);
            }
            let running = self.check_queues(driver)?;
            if let Err(code) = self.start_rings(&running, false) {
                self.status |= status::DEVICE_NEEDS_RESET;
                return Err(code);
            }
            self.running = Some(running);
        }
        self.status = wanted & (basic | status::FEATURES_OK | status::DRIVER_OK);
        Ok(())
    }

    /// Validates the driver's queue set-up against the memory and its vectors.
    fn check_queues(&self, driver: u16) -> Result<Running, ErrorCode> {
        let h = self.header();
        let shm_size = self.peer.shm().len() as u64;
        let driver_vectors = self.peer.peer_vector_count(driver).unwrap_or(0);
        let mut queues = Vec::new();
        for q in 0..self.num_queues {
            let setup = h.queue_setup(q);
            if setup.size == 0 {
                continue;
            }
            setup.validate(self.config.queue_size, shm_size, self.config.header)?;
            let call = h.queue_get(q, queue_field::CALL_VECTOR);
            if call >= driver_vectors {
                return Err(ErrorCode::BadCallVector);
            }
            queues.push((q, setup, call));
        }
        Ok(Running {
            features: h.get64(field::DRIVER_FEATURES),
            driver,
            queues,
        })
    }

    /// Hands the rings to the backend. `resume`: after a backend restart, continue from the
    /// used index found in memory (completed in order, so in-flight requests are redone).
    fn start_rings(&mut self, running: &Running, resume: bool) -> Result<(), ErrorCode> {
        let shm = self.peer.shm();
        let mut starts = Vec::new();
        for &(q, setup, call) in &running.queues {
            let base = if resume {
                let mut idx = [0u8; 2];
                let _ = shm.read(setup.used as usize + 2, &mut idx);
                u16::from_le_bytes(idx)
            } else {
                0
            };
            let (Some(kick), Some(call)) = (
                self.peer.own_vector_fd(q + 1),
                self.peer.peer_vector_fd(running.driver, call),
            ) else {
                return Err(ErrorCode::BadCallVector);
            };
            starts.push(QueueStart {
                index: q,
                setup,
                max_size: self.config.queue_size,
                base,
                kick,
                call,
            });
        }
        let Some(backend) = self.backend.as_mut() else {
            return Err(ErrorCode::BackendFailed);
        };
        match backend.start(
            running.features,
            shm.fd(),
            shm.as_ptr() as u64,
            shm.len() as u64,
            &starts,
        ) {
            Ok(()) => {
                log::info!(
                    "device live: driver peer {}, {} queue(s), features {:#x}{}",
                    running.driver,
                    starts.len(),
                    running.features,
                    if resume {
                        " (resumed on a new backend connection)"
                    } else {
                        ""
                    }
                );
                Ok(())
            }
            Err(e) => {
                log::warn!("backend refused the rings: {e}");
                backend.stop();
                Err(ErrorCode::BackendFailed)
            }
        }
    }

    fn stop_rings(&mut self) {
        if self.running.take().is_some() {
            if let Some(b) = self.backend.as_mut() {
                b.stop();
            }
        }
    }

    /// Stops live rings and, if there were any, starts the next session on a fresh backend
    /// connection. A backend keeps its own used index across sessions unless it rereads it from
    /// the ring (vhost-user-backend before 0.11 does not: vhost-device-rng 0.1 would answer the
    /// next driver at the old index), and a fresh connection resets every backend alike.
    fn end_session(&mut self) {
        if self.running.is_none() {
            return;
        }
        self.stop_rings();
        if self.backend.take().is_some() {
            log::info!(
                "session ended: reconnecting to {} for a fresh one",
                self.config.backend.display()
            );
            self.reconnect_waiting();
        }
    }

    /// Reconnects the backend, waiting up to the configured timeout for it to listen again; on
    /// failure the run loop keeps retrying in the background.
    fn reconnect_waiting(&mut self) {
        match connect_backend_waiting(&self.config) {
            Ok(backend) => {
                self.backend = Some(backend);
                self.reconnect_delay = RECONNECT_MIN;
            }
            Err(e) => {
                log::warn!("{e}; retrying");
                self.next_reconnect = Instant::now() + self.reconnect_delay;
            }
        }
    }

    /// Clears what drivers write in every queue entry (size 0: unused), as a reset must: the
    /// next driver sets up only the queues it uses, and an entry left from an earlier session
    /// would be handed to the backend at its DRIVER_OK, with rings in memory that driver now uses
    /// for something else (the backend's writes to them, such as `avail_event`, land in it).
    fn clear_queue_entries(&self) {
        let h = self.header();
        for q in 0..self.num_queues {
            h.queue_set(q, queue_field::SIZE, 0);
            h.queue_set(q, queue_field::CALL_VECTOR, 0);
            h.queue_set64(q, queue_field::DESC, 0);
            h.queue_set64(q, queue_field::AVAIL, 0);
            h.queue_set64(q, queue_field::USED, 0);
        }
    }

    /// A peer left: if it was our driver, reset the device for the next one.
    fn peer_left(&mut self, peer: u16) {
        let h = self.header();
        if h.get(field::DRIVER_PEER) != peer as u32 {
            return;
        }
        log::info!("driver peer {peer} left: resetting the device");
        self.end_session();
        self.status = 0;
        let h = self.header();
        h.set(field::DEVICE_STATUS, 0);
        h.set(field::DRIVER_STATUS, 0);
        h.set(field::ERROR, 0);
        self.clear_queue_entries();
        h.set(field::ACK, h.get(field::REQUEST));
        h.bump(field::GENERATION);
        let _ = h.compare_exchange(field::DRIVER_PEER, peer as u32, NO_PEER);
    }

    fn backend_lost(&mut self, why: &str) {
        if self.backend.take().is_some() {
            log::warn!("{why}; reconnecting to {}", self.config.backend.display());
            self.next_reconnect = Instant::now();
            self.reconnect_delay = RECONNECT_MIN;
            if self.running.is_some() {
                self.backend_lost_at = Some(Instant::now());
            }
        }
    }

    /// The backend of live rings did not come back within the grace period: the rings are
    /// given up and the device flagged DEVICE_NEEDS_RESET, so the driver gets an error instead
    /// of waiting for a device that looks merely slow. Reconnecting goes on for the next
    /// session.
    fn give_up_on_backend(&mut self) {
        self.backend_lost_at = None;
        let Some(running) = self.running.take() else {
            return;
        };
        log::warn!(
            "backend {} did not come back within {:?}: device flagged DEVICE_NEEDS_RESET",
            self.config.backend.display(),
            self.config.backend_grace
        );
        self.flag_needs_reset(&running);
    }

    /// Sets DEVICE_NEEDS_RESET and wakes the driver: its config vector, and every queue's call
    /// vector (a driver sleeping for used buffers looks at the status when it wakes).
    fn flag_needs_reset(&mut self, running: &Running) {
        self.status |= status::DEVICE_NEEDS_RESET;
        self.header().set(field::DEVICE_STATUS, self.status);
        self.notify_driver();
        for &(_, _, call) in &running.queues {
            let _ = self.peer.ring(running.driver, call);
        }
    }

    /// Tries the backend again; on success, resumes live rings on it.
    fn reconnect(&mut self) {
        match Backend::connect(
            &self.config.backend,
            self.config.queues,
            self.config.config_size,
        ) {
            Ok(backend) => {
                log::info!("backend {} connected again", self.config.backend.display());
                self.backend = Some(backend);
                self.reconnect_delay = RECONNECT_MIN;
                self.backend_lost_at = None;
                if let Some(running) = self.running.take() {
                    if self.start_rings(&running, true).is_ok() {
                        self.running = Some(running);
                    } else {
                        self.flag_needs_reset(&running);
                    }
                }
            }
            Err(e) => {
                log::debug!("backend not back yet: {e}");
                self.next_reconnect = Instant::now() + self.reconnect_delay;
                self.reconnect_delay = (self.reconnect_delay * 2).min(RECONNECT_MAX);
            }
        }
    }
}

/// Connects to the backend, retrying until `config.timeout` passes (it may still be starting).
fn connect_backend_waiting(config: &Config) -> Result<Backend, BridgeError> {
    let deadline = Instant::now() + config.timeout;
    let mut delay = RECONNECT_MIN;
    loop {
        match Backend::connect(&config.backend, config.queues, config.config_size) {
            Ok(b) => return Ok(b),
            Err(source) if Instant::now() >= deadline => {
                return Err(BridgeError::Backend {
                    path: config.backend.clone(),
                    source,
                })
            }
            Err(e) => {
                log::debug!("backend not ready: {e}");
                std::thread::sleep(delay);
                delay = (delay * 2).min(RECONNECT_MAX);
            }
        }
    }
}
