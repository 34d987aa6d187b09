//! virtio-net on the virtio-pci transport, its queues served by the kernel's vhost-net
//! (`/dev/vhost-net`) on an existing TAP interface: QEMU's `-netdev tap,vhost=on`. Frames
//! never pass through the VMM: the guest's notify write signals the queue's ioeventfd, which
//! vhost-net polls; vhost-net copies between the rings and the TAP and signals the queue's
//! MSI-X irqfd. The VMM does the control plane only (the `vhost` crate's kernel backend,
//! `vhost::vhost_kern::net::Net`): at creation it attaches the TAP, opens vhost-net, makes
//! itself the owner and gives it guest RAM (VHOST_SET_MEM_TABLE with *our* userspace
//! addresses: vhost-net runs in our address space, so private RAM works, `shared=on` is not
//! needed); at DRIVER_OK it sets the features and each ring, then attaches the TAP to each
//! queue (VHOST_NET_SET_BACKEND); at reset it detaches the TAP (backend fd -1) and reads the
//! rings' bases back.
//!
//! - `config`: options, the MAC address and the configuration space;
//! - `tap`: attaching the TAP with the vnet header and no offloads.
//!
//! Features offered: VERSION_1, MAC, STATUS (link always up), MRG_RXBUF, and the ring features
//! vhost-net has (INDIRECT_DESC, EVENT_IDX). No checksum or segmentation offload: the TAP has
//! none either (TUNSETOFFLOAD 0), so the host stack hands it whole, checksummed frames. One
//! RX/TX queue pair, no control queue.
//!
//! A failing ioctl at DRIVER_OK or reset, or vhost-net signalling a queue's error eventfd (a
//! ring it could not access), stops only this device: DEVICE_NEEDS_RESET and a configuration
//! interrupt, as for a vhost-user device whose backend fails.

mod config;
mod tap;

use std::sync::{Arc, Mutex, Weak};

use vhost::net::VhostNet;
use vhost::vhost_kern::net::Net;
use vhost::{VhostBackend, VhostUserMemoryRegionInfo, VringConfigData};
use virtio_bindings::virtio_config::VIRTIO_F_VERSION_1;
use virtio_bindings::virtio_net::{VIRTIO_NET_F_MAC, VIRTIO_NET_F_MRG_RXBUF, VIRTIO_NET_F_STATUS};
use virtio_bindings::virtio_ring::{VIRTIO_RING_F_EVENT_IDX, VIRTIO_RING_F_INDIRECT_DESC};
use vm_memory::{GuestAddress, GuestMemoryMmap, GuestRegionMmap, MmapRegion};
use vmm_sys_util::eventfd::EventFd;

use super::virtio_pci::{Activation, VirtioBackend, VirtioPci, VirtioPciConfig, VirtioPciError};
use super::DeviceContext;
use crate::background::StopSignal;
use crate::memory::GuestRam;
use crate::pci::BusError;

pub use config::DEFAULT_QUEUE_SIZE;
pub use config::{config_space, BadMac, MacAddress, VirtioNetOptions, CONFIG_LEN};
pub use tap::{Tap, TapError, IFNAME_MAX, VNET_HDR_LEN};

/// Virtio device id of a network card.
pub const VIRTIO_ID_NET: u16 = 1;
/// PCI class: network controller, Ethernet.
pub const CLASS_ETHERNET: u32 = 0x020000;
/// Queues: receive (0) and transmit (1).
pub const QUEUES: usize = 2;

/// Features we take from vhost-net when it has them.
const FROM_VHOST: u64 = (1 << VIRTIO_F_VERSION_1)
    | (1 << VIRTIO_NET_F_MRG_RXBUF)
    | (1 << VIRTIO_RING_F_INDIRECT_DESC)
    | (1 << VIRTIO_RING_F_EVENT_IDX);
/// Features the device itself provides (its configuration space): not vhost-net's business.
const DEVICE_ONLY: u64 = (1 << VIRTIO_NET_F_MAC) | (1 << VIRTIO_NET_F_STATUS);

/// The features offered to the driver, given what vhost-net offers.
pub fn offered_features(vhost: u64) -> u64 {
    (vhost & FROM_VHOST) | DEVICE_ONLY
}

/// Why a virtio-net device could not be added.
#[derive(Debug, thiserror::Error)]
pub enum VirtioNetError {
    /// The TAP could not be attached.
    #[error("virtio-net on {tap}: {cause}")]
    Tap {
        /// The interface.
        tap: String,
        /// What failed.
        cause: TapError,
    },
    /// vhost-net could not be opened or set up.
    #[error("virtio-net on {tap}: /dev/vhost-net: {what}: {cause}")]
    Vhost {
        /// The interface.
        tap: String,
        /// Which step.
        what: &'static str,
        /// The vhost crate's error.
        cause: vhost::Error,
    },
    /// vhost-net lacks a feature we need.
    #[error(
        "virtio-net on {tap}: vhost-net offers features {features:#x} without VIRTIO_F_VERSION_1"
    )]
    NoVersion1 {
        /// The interface.
        tap: String,
        /// What it offers.
        features: u64,
    },
    /// Guest RAM could not be described to vhost-net.
    #[error("virtio-net on {tap}: guest RAM: {why}")]
    Ram {
        /// The interface.
        tap: String,
        /// What is wrong.
        why: String,
    },
    /// The transport could not be built.
    #[error(transparent)]
    Transport(#[from] VirtioPciError),
    /// The bus is full.
    #[error(transparent)]
    Bus(#[from] BusError),
    /// The error watcher could not start.
    #[error("starting the vhost-net error watcher: {0}")]
    Thread(std::io::Error),
}

/// The device a watcher or a failed reset reports to (set once the transport exists).
type DeviceSlot = Arc<Mutex<Weak<VirtioPci>>>;

/// The backend side of a virtio-net device: vhost-net and the TAP.
pub struct VhostNetDevice {
    name: String,
    tap: Tap,
    vhost: Net<Arc<GuestMemoryMmap>>,
    vhost_features: u64,
    config: [u8; CONFIG_LEN],
    /// Queues whose TAP backend is set (to stop at reset).
    started: Vec<usize>,
    /// An earlier failure left vhost-net in an unknown state: no more activations.
    broken: Option<String>,
    device: DeviceSlot,
}

/// Guest RAM as the `vhost` crate's kernel backend translates ring addresses: a view of our
/// own mappings (never unmapped by the view).
fn ram_view(ram: &GuestRam) -> Result<GuestMemoryMmap, String> {
    let mut regions = Vec::new();
    for r in ram.regions() {
        let host = r.region.host_addr().ok_or("a RAM region is not mapped")?;
        // SAFETY: `host` is the live mapping of the region's `size` bytes; the view never
        // unmaps it (`build_raw`), and the device keeps `GuestRam` (which holds the region,
        // hence its mapping) for as long as it holds the view.
        let mapping = unsafe {
            MmapRegion::build_raw(
                host,
                r.size() as usize,
                libc::PROT_READ | libc::PROT_WRITE,
                libc::MAP_PRIVATE | libc::MAP_ANONYMOUS,
            )
        }
        .map_err(|e| e.to_string())?;
        regions.push(
            GuestRegionMmap::new(mapping, GuestAddress(r.guest_addr))
                .ok_or("a RAM region does not fit the guest address space")?,
        );
    }
    GuestMemoryMmap::from_regions(regions).map_err(|e| e.to_string())
}

impl VhostNetDevice {
    /// Attaches the TAP, opens vhost-net, owns it and gives it guest RAM (all before the
    /// seccomp filters: opening files is forbidden afterwards).
    pub fn open(
        name: &str,
        options: &VirtioNetOptions,
        ram: &GuestRam,
    ) -> Result<VhostNetDevice, VirtioNetError> {
        let tap_name = options.tap.clone();
        let tap = Tap::open(&options.tap).map_err(|cause| VirtioNetError::Tap {
            tap: tap_name.clone(),
            cause,
        })?;
        let vhost_error = |what| {
            let tap = tap_name.clone();
            move |cause| VirtioNetError::Vhost { tap, what, cause }
        };
        let view = ram_view(ram).map_err(|why| VirtioNetError::Ram {
            tap: tap_name.clone(),
            why,
        })?;
        let vhost = Net::new(Arc::new(view))
            .map_err(vhost_error("opening (is the vhost_net module loaded?)"))?;
        vhost.set_owner().map_err(vhost_error("VHOST_SET_OWNER"))?;
        let vhost_features = vhost
            .get_features()
            .map_err(vhost_error("VHOST_GET_FEATURES"))?;
        if vhost_features & (1 << VIRTIO_F_VERSION_1) == 0 {
            return Err(VirtioNetError::NoVersion1 {
                tap: tap_name,
                features: vhost_features,
            });
        }
        let regions: Vec<VhostUserMemoryRegionInfo> = ram
            .regions()
            .iter()
            .map(|r| VhostUserMemoryRegionInfo {
                guest_phys_addr: r.guest_addr,
                memory_size: r.size(),
                userspace_addr: r.host_addr(),
                mmap_offset: 0,
                // vhost-net maps nothing: it reads our own address space.
                mmap_handle: -1,
            })
            .collect();
        vhost
            .set_mem_table(&regions)
            .map_err(vhost_error("VHOST_SET_MEM_TABLE"))?;
        Ok(VhostNetDevice {
            name: name.to_string(),
            tap,
            vhost,
            vhost_features,
            config: config_space(options.mac()),
            started: Vec::new(),
            broken: None,
            device: DeviceSlot::default(),
        })
    }

    /// The configuration space as the guest reads it.
    pub fn config(&self) -> &[u8] {
        &self.config
    }

    /// What vhost-net offers.
    pub fn vhost_features(&self) -> u64 {
        self.vhost_features
    }

    /// The TAP interface.
    pub fn tap(&self) -> &Tap {
        &self.tap
    }

    fn start(&mut self, activation: &Activation) -> Result<(), String> {
        let features = activation.features & self.vhost_features;
        let failed = |what: String| move |e: vhost::Error| format!("{what}: {e}");
        self.vhost
            .set_features(features)
            .map_err(failed(format!("VHOST_SET_FEATURES {features:#x}")))?;
        for q in activation
            .queues
            .iter()
            .filter(|q| (q.index as usize) < QUEUES)
        {
            let i = q.index as usize;
            let ring = VringConfigData {
                queue_max_size: q.size,
                queue_size: q.size,
                flags: 0,
                desc_table_addr: q.desc,
                used_ring_addr: q.device,
                avail_ring_addr: q.driver,
                log_addr: None,
            };
            self.vhost
                .set_vring_num(i, q.size)
                .map_err(failed(format!("queue {i}: VHOST_SET_VRING_NUM")))?;
            self.vhost
                .set_vring_base(i, 0)
                .map_err(failed(format!("queue {i}: VHOST_SET_VRING_BASE")))?;
            self.vhost.set_vring_addr(i, &ring).map_err(failed(format!(
                "queue {i}: VHOST_SET_VRING_ADDR (rings at {:#x}, {:#x}, {:#x}, size {})",
                q.desc, q.driver, q.device, q.size
            )))?;
            self.vhost
                .set_vring_kick(i, &q.kick)
                .map_err(failed(format!("queue {i}: VHOST_SET_VRING_KICK")))?;
            self.vhost
                .set_vring_call(i, &q.call)
                .map_err(failed(format!("queue {i}: VHOST_SET_VRING_CALL")))?;
            self.vhost
                .set_vring_err(i, &q.err)
                .map_err(failed(format!("queue {i}: VHOST_SET_VRING_ERR")))?;
            self.started.push(i);
            self.vhost
                .set_backend(i, Some(self.tap.file()))
                .map_err(failed(format!("queue {i}: VHOST_NET_SET_BACKEND")))?;
        }
        // A kick written before the TAP was attached found no backend to run: look again
        // (a spurious kick is a look at an unchanged ring).
        for q in &activation.queues {
            let _ = q.kick.write(1);
        }
        Ok(())
    }

    /// Detaches the TAP from every started queue and reads its ring base back.
    fn stop(&mut self) -> Result<(), String> {
        let mut first_error = None;
        for i in std::mem::take(&mut self.started) {
            let result = self
                .vhost
                .set_backend(i, None)
                .map_err(|e| format!("queue {i}: VHOST_NET_SET_BACKEND -1: {e}"))
                .and_then(|()| {
                    self.vhost
                        .get_vring_base(i)
                        .map_err(|e| format!("queue {i}: VHOST_GET_VRING_BASE: {e}"))
                });
            if let Err(e) = result {
                first_error.get_or_insert(e);
            }
        }
        first_error.map_or(Ok(()), Err)
    }

    fn fail(&mut self, why: String) {
        let why = format!("vhost-net on {}: {why}", self.tap.name());
        if let Some(device) = lock(&self.device).upgrade() {
            device.device_failed(&why);
        } else {
            log::error!("{}: {why}", self.name);
        }
        self.broken.get_or_insert(why);
    }
}

impl VirtioBackend for VhostNetDevice {
    fn device_features(&self) -> u64 {
        offered_features(self.vhost_features)
    }

    fn read_config(&self, offset: u64, data: &mut [u8]) {
        for (i, byte) in data.iter_mut().enumerate() {
            *byte = usize::try_from(offset)
                .ok()
                .and_then(|o| o.checked_add(i))
                .and_then(|o| self.config.get(o))
                .copied()
                .unwrap_or(0);
        }
    }

    fn write_config(&mut self, offset: u64, data: &[u8]) {
        // virtio-net's configuration is read-only without VIRTIO_NET_F_CTRL_MAC_ADDR.
        log::warn!(
            "{}: driver wrote {} byte(s) at {offset:#x} of the read-only configuration; ignored",
            self.name,
            data.len()
        );
    }

    fn activate(&mut self, activation: Activation) -> anyhow::Result<()> {
        if let Some(why) = &self.broken {
            anyhow::bail!("{why} (earlier; vhost-net's state is unknown)");
        }
        self.start(&activation).map_err(|why| {
            let why = format!("vhost-net on {}: {why}", self.tap.name());
            // Whatever started stays until the driver resets (which stops it).
            anyhow::anyhow!(why)
        })
    }

    fn reset(&mut self) {
        if let Err(why) = self.stop() {
            self.fail(why);
        }
    }
}

fn lock<T>(mutex: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(|e| e.into_inner())
}

/// The error watcher: vhost-net signals a queue's error eventfd when it cannot access the ring
/// (a bad address the driver programmed); the device then needs a reset.
fn watch_errors(name: String, device: DeviceSlot, err_fds: Vec<Arc<EventFd>>, stop: StopSignal) {
    use std::os::fd::AsRawFd;
    loop {
        let mut fds: Vec<libc::pollfd> = std::iter::once(stop.fd().as_raw_fd())
            .chain(err_fds.iter().map(|fd| fd.as_raw_fd()))
            .map(|fd| libc::pollfd {
                fd,
                events: libc::POLLIN,
                revents: 0,
            })
            .collect();
        // SAFETY: `fds` is a valid array of pollfds of the length given.
        let n = unsafe { libc::poll(fds.as_mut_ptr(), fds.len() as libc::nfds_t, -1) };
        if n < 0 {
            let error = std::io::Error::last_os_error();
            if error.kind() == std::io::ErrorKind::Interrupted {
                continue;
            }
            log::error!("{name}: error watcher: poll: {error}");
            return;
        }
        if fds[0].revents != 0 {
            return;
        }
        for (queue, pollfd) in fds[1..].iter().enumerate() {
            if pollfd.revents & libc::POLLIN != 0 {
                let _ = err_fds[queue].read();
                if let Some(device) = lock(&device).upgrade() {
                    device.device_failed(&format!(
                        "vhost-net reported an error on queue {queue} (a ring it cannot access)"
                    ));
                }
            }
        }
    }
}

/// Attaches the TAP, opens vhost-net, builds the virtio-pci device, plugs it into bus 0 and
/// starts its error watcher. `index` numbers the virtio-net devices in logs (`virtio-net0`).
pub fn add(
    ctx: &DeviceContext,
    options: &VirtioNetOptions,
    index: usize,
) -> Result<Arc<VirtioPci>, VirtioNetError> {
    let name = format!("virtio-net{index}");
    let device = VhostNetDevice::open(&name, options, &ctx.ram)?;
    let slot = device.device.clone();
    let features = device.vhost_features;
    let config = VirtioPciConfig {
        name: name.clone(),
        virtio_id: VIRTIO_ID_NET,
        class_code: CLASS_ETHERNET,
        queue_max_sizes: vec![options.queue_size; QUEUES],
        device_config_len: CONFIG_LEN as u32,
        msix_vectors: None,
    };
    let (function, pci) = VirtioPci::create(config, Box::new(device), ctx.interrupts.clone())?;
    ctx.pci.add_device(function)?;
    *lock(&slot) = Arc::downgrade(&pci);
    let err_fds = pci.err_fds().to_vec();
    let thread_name = name.clone();
    let watched = slot.clone();
    ctx.threads
        .spawn(&format!("{name}-watch"), move |stop| {
            watch_errors(thread_name, watched, err_fds, stop)
        })
        .map_err(VirtioNetError::Thread)?;
    log::info!(
        "{name}: on TAP {} through vhost-net (features {features:#x}), MAC {}, {QUEUES} queues \
         of up to {}",
        options.tap,
        options.mac(),
        options.queue_size
    );
    Ok(pci)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn offers_only_what_vhost_net_and_the_device_have() {
        let all = u64::MAX;
        let offered = offered_features(all);
        assert_eq!(offered, FROM_VHOST | DEVICE_ONLY);
        // No offload: the TAP has none (TUNSETOFFLOAD 0).
        for bit in [
            virtio_bindings::virtio_net::VIRTIO_NET_F_CSUM,
            virtio_bindings::virtio_net::VIRTIO_NET_F_GUEST_CSUM,
            virtio_bindings::virtio_net::VIRTIO_NET_F_HOST_TSO4,
            virtio_bindings::virtio_net::VIRTIO_NET_F_GUEST_TSO4,
            virtio_bindings::virtio_net::VIRTIO_NET_F_CTRL_VQ,
            virtio_bindings::virtio_net::VIRTIO_NET_F_MQ,
        ] {
            assert_eq!(offered & (1 << bit), 0, "bit {bit}");
        }
        let version_only = 1 << VIRTIO_F_VERSION_1;
        assert_eq!(offered_features(version_only), version_only | DEVICE_ONLY);
    }
}
