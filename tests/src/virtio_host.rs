//! The VMM's device side without KVM, for testing vhost-user devices on the host: system
//! memory with shared guest RAM at 0, PCI bus 0, a fake interrupt router ([`Machine`], on
//! `DeviceContext::without_kvm_backed`), and a virtio-pci
//! driver run by the test itself ([`HostDriver`]: config cycles, MMIO to BAR4, one split queue
//! in guest RAM, polling its used ring). The VMM code under test is the real one: bus, BARs,
//! memory dispatch, the virtio-pci transport, the vhost-user frontend and its watcher thread.
//! Plus [`Backend`], a backend process killed on drop, and [`backend_available`].

use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::Duration;

use vmm::background::BackgroundThreads;
use vmm::devices::DeviceContext;
use vmm::memory::{AddressSpace, RamBacking};
use vmm::pci::Bdf;

use crate::wait_until;

/// Guest RAM of a [`Machine`].
pub const RAM_SIZE: u64 = 4 << 20;
/// Where [`Machine::map_device`] puts BAR4 (the virtio structures).
pub const BAR4: u64 = 0xE000_0000;
/// How long a request or a backend's start may take.
pub const WAIT: Duration = Duration::from_secs(10);

/// The environment variable that makes a missing `program` a failure instead of a skip:
/// `IVSHMEM_REQUIRE_VHOST_DEVICE` for rust-vmm's `vhost-device-*` (scripts/test.sh's `cargo
/// install`s), `IVSHMEM_REQUIRE_QEMU` for the rest (Debian's QEMU packages).
pub fn require_variable(program: &str) -> &'static str {
    let name = program.rsplit('/').next().unwrap_or(program);
    if name.starts_with("vhost-device-") {
        "IVSHMEM_REQUIRE_VHOST_DEVICE"
    } else {
        "IVSHMEM_REQUIRE_QEMU"
    }
}

/// True when `program` runs (`probe` is `--version` or the like); otherwise skips with a
/// printed reason, or panics when [`require_variable`] is set to 1.
pub fn backend_available(test: &str, program: &str, probe: &str) -> bool {
    let found = Command::new(program)
        .arg(probe)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success());
    if !found {
        if std::env::var("IVSHMEM_REQUIRE_QEMU").as_deref() == Ok("1") {
            panic!("{test}: {program} is not available and IVSHMEM_REQUIRE_QEMU=1");
        }
        eprintln!("SKIP {test}: {program} not found (set IVSHMEM_REQUIRE_QEMU=1 to fail instead)");
    }
    found
}

/// A backend process; killed on drop.
pub struct Backend(Child);

impl Backend {
    /// Starts `command` and waits for `socket` to appear.
    pub fn start(command: &mut Command, socket: &Path) -> Backend {
        let child = command
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("spawn the backend");
        let backend = Backend(child);
        assert!(
            wait_until(WAIT, || socket.exists()),
            "the backend did not create {}",
            socket.display()
        );
        backend
    }

    /// Kills it now.
    pub fn kill(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

impl Drop for Backend {
    fn drop(&mut self) {
        self.kill();
    }
}

/// A VM's device side without KVM.
pub struct Machine {
    /// System memory (RAM at 0, BARs where [`Machine::map_device`] puts them).
    pub memory: AddressSpace,
    /// What devices are plugged with.
    pub ctx: DeviceContext,
    threads: Arc<BackgroundThreads>,
}

impl Machine {
    /// A machine with [`RAM_SIZE`] of RAM backed as `backing`.
    pub fn new(backing: RamBacking) -> Machine {
        // The VMM's own KVM-less context: bus 0 where the VM has it, a recording fake behind
        // the interrupt router (MSI-X stays disabled here; the driver polls).
        let (ctx, _irqs) = DeviceContext::without_kvm_backed(RAM_SIZE, backing);
        Machine {
            memory: ctx.memory.clone(),
            threads: ctx.threads.clone(),
            ctx,
        }
    }

    /// A machine with shared RAM (what vhost-user needs).
    pub fn shared() -> Machine {
        Machine::new(RamBacking {
            shared: true,
            hugepages: false,
        })
    }

    /// Puts the device in slot 1 at [`BAR4`], turns memory decoding on, and returns its
    /// vendor:device id dword.
    pub fn map_device(&self) -> u32 {
        self.map_device_at(1, BAR4)
    }

    /// Puts the device in `slot` with its BAR4 at `bar4` (below 4 GiB), turns memory decoding
    /// on, and returns its vendor:device id dword.
    pub fn map_device_at(&self, slot: u8, bar4: u64) -> u32 {
        let bdf = Bdf::new(0, slot, 0);
        self.ctx.pci.config_write(bdf, 0x10 + 4 * 4, 4, bar4 as u32);
        self.ctx.pci.config_write(bdf, 0x10 + 5 * 4, 4, 0);
        self.ctx.pci.config_write(bdf, 0x04, 2, 0x0006);
        self.memory.commit();
        self.ctx.pci.config_read(bdf, 0, 4)
    }

    /// A guest read of `size` bytes.
    pub fn read(&self, addr: u64, size: usize) -> u64 {
        let mut data = [0u8; 8];
        self.memory.read(addr, &mut data[..size]);
        u64::from_le_bytes(data)
    }

    /// A guest write of `size` bytes.
    pub fn write(&self, addr: u64, size: usize, value: u64) {
        self.memory.write(addr, &value.to_le_bytes()[..size]);
    }

    /// A guest write of `data`.
    pub fn write_bytes(&self, addr: u64, data: &[u8]) {
        self.memory.write(addr, data);
    }

    /// A guest read of `len` bytes.
    pub fn read_bytes(&self, addr: u64, len: usize) -> Vec<u8> {
        let mut data = vec![0u8; len];
        self.memory.read(addr, &mut data);
        data
    }
}

impl Drop for Machine {
    fn drop(&mut self) {
        self.threads.shutdown();
    }
}

/// Common configuration registers (virtio 1.x §4.1.4.3), offsets in BAR4.
pub mod reg {
    /// device_feature_select.
    pub const DEVICE_FEATURE_SELECT: u64 = 0x00;
    /// device_feature.
    pub const DEVICE_FEATURE: u64 = 0x04;
    /// driver_feature_select.
    pub const DRIVER_FEATURE_SELECT: u64 = 0x08;
    /// driver_feature.
    pub const DRIVER_FEATURE: u64 = 0x0C;
    /// num_queues.
    pub const NUM_QUEUES: u64 = 0x12;
    /// device_status.
    pub const STATUS: u64 = 0x14;
    /// queue_select.
    pub const QUEUE_SELECT: u64 = 0x16;
    /// queue_size.
    pub const QUEUE_SIZE: u64 = 0x18;
    /// queue_enable.
    pub const QUEUE_ENABLE: u64 = 0x1C;
    /// queue_notify_off.
    pub const QUEUE_NOTIFY_OFF: u64 = 0x1E;
    /// queue_desc.
    pub const QUEUE_DESC: u64 = 0x20;
    /// queue_driver.
    pub const QUEUE_DRIVER: u64 = 0x28;
    /// queue_device.
    pub const QUEUE_DEVICE: u64 = 0x30;
    /// The device configuration structure (BAR4 offset).
    pub const DEVICE_CFG: u64 = 0x2000;
    /// The notify structure (BAR4 offset).
    pub const NOTIFY: u64 = 0x3000;
}

/// Device status bits.
pub mod status {
    /// ACKNOWLEDGE | DRIVER.
    pub const ACK_DRIVER: u64 = 1 | 2;
    /// DRIVER_OK.
    pub const DRIVER_OK: u64 = 4;
    /// FEATURES_OK.
    pub const FEATURES_OK: u64 = 8;
    /// DEVICE_NEEDS_RESET.
    pub const NEEDS_RESET: u64 = 0x40;
}

// Guest RAM layout of the host driver (a second driver uses the next 64 KiB: `ring_base`).
const DESC: u64 = 0x10_0000;
const AVAIL: u64 = 0x10_1000;
const USED: u64 = 0x10_2000;
const QUEUE_LEN: u16 = 16;

/// One buffer of a request: guest address, length, whether the device writes it.
#[derive(Clone, Copy, Debug)]
pub struct Buf {
    /// Guest-physical address.
    pub addr: u64,
    /// Length in bytes.
    pub len: u32,
    /// The device writes it.
    pub writable: bool,
}

/// One virtio-blk request of one sector through `driver` (IN = read, OUT = write), its header
/// at `at`, the sector's data at `at + 0x1000` and the status byte at `at + 0x2000` (guest RAM
/// the caller keeps clear of its rings); returns the status byte.
pub fn blk_request(
    m: &Machine,
    driver: &mut HostDriver<'_>,
    write: bool,
    sector: u64,
    at: u64,
) -> u8 {
    let (header, data, status_byte) = (at, at + 0x1000, at + 0x2000);
    let mut bytes = Vec::with_capacity(16);
    bytes.extend_from_slice(&u32::from(write).to_le_bytes());
    bytes.extend_from_slice(&0u32.to_le_bytes());
    bytes.extend_from_slice(&sector.to_le_bytes());
    m.write_bytes(header, &bytes);
    m.write_bytes(status_byte, &[0xFF]);
    driver.submit(&[
        Buf {
            addr: header,
            len: 16,
            writable: false,
        },
        Buf {
            addr: data,
            len: 512,
            writable: !write,
        },
        Buf {
            addr: status_byte,
            len: 1,
            writable: true,
        },
    ]);
    m.read_bytes(status_byte, 1)[0]
}

/// A virtio-pci driver on the host, one split queue (`queue`), polling its used ring.
pub struct HostDriver<'a> {
    m: &'a Machine,
    bar4: u64,
    rings: u64,
    queue: u16,
    notify_off: u64,
    next_avail: u16,
}

impl<'a> HostDriver<'a> {
    /// Reset, negotiate VERSION_1 only, set up `queue` (and no other), DRIVER_OK: the device
    /// at [`BAR4`], rings at the default place.
    pub fn start(m: &'a Machine, queue: u16) -> HostDriver<'a> {
        HostDriver::start_at(m, BAR4, 0, queue)
    }

    /// The same for the device whose BAR4 is at `bar4`, with its rings `rings` bytes above the
    /// default place (give each driver of one machine its own 64 KiB).
    pub fn start_at(m: &'a Machine, bar4: u64, rings: u64, queue: u16) -> HostDriver<'a> {
        let b = bar4;
        let (desc, avail, used) = (DESC + rings, AVAIL + rings, USED + rings);
        m.write(b + reg::STATUS, 1, 0);
        m.write(b + reg::STATUS, 1, status::ACK_DRIVER);
        m.write(b + reg::DEVICE_FEATURE_SELECT, 4, 1);
        assert_eq!(
            m.read(b + reg::DEVICE_FEATURE, 4) & 1,
            1,
            "VIRTIO_F_VERSION_1"
        );
        m.write(b + reg::DEVICE_FEATURE_SELECT, 4, 0);
        let low = m.read(b + reg::DEVICE_FEATURE, 4);
        assert_eq!(
            low & (1 << 30),
            0,
            "VHOST_USER_F_PROTOCOL_FEATURES is hidden"
        );
        m.write(b + reg::DRIVER_FEATURE_SELECT, 4, 0);
        m.write(b + reg::DRIVER_FEATURE, 4, 0);
        m.write(b + reg::DRIVER_FEATURE_SELECT, 4, 1);
        m.write(b + reg::DRIVER_FEATURE, 4, 1);
        m.write(b + reg::STATUS, 1, status::ACK_DRIVER | status::FEATURES_OK);
        assert_eq!(
            m.read(b + reg::STATUS, 1),
            status::ACK_DRIVER | status::FEATURES_OK
        );
        m.write_bytes(avail, &[0; 4]);
        m.write_bytes(used, &[0; 4]);
        m.write(b + reg::QUEUE_SELECT, 2, u64::from(queue));
        m.write(b + reg::QUEUE_SIZE, 2, u64::from(QUEUE_LEN));
        for (r, addr) in [
            (reg::QUEUE_DESC, desc),
            (reg::QUEUE_DRIVER, avail),
            (reg::QUEUE_DEVICE, used),
        ] {
            m.write(b + r, 4, addr);
            m.write(b + r + 4, 4, 0);
        }
        m.write(b + reg::QUEUE_ENABLE, 2, 1);
        let notify_off = m.read(b + reg::QUEUE_NOTIFY_OFF, 2);
        m.write(
            b + reg::STATUS,
            1,
            status::ACK_DRIVER | status::FEATURES_OK | status::DRIVER_OK,
        );
        HostDriver {
            m,
            bar4,
            rings,
            queue,
            notify_off,
            next_avail: 0,
        }
    }

    /// The device status register.
    pub fn status(&self) -> u64 {
        self.m.read(self.bar4 + reg::STATUS, 1)
    }

    /// Submits `bufs` as one chain, kicks, and waits until the device has used it; returns the
    /// bytes the device says it wrote.
    pub fn submit(&mut self, bufs: &[Buf]) -> u32 {
        let m = self.m;
        let (desc, avail, used) = (DESC + self.rings, AVAIL + self.rings, USED + self.rings);
        for (i, buf) in bufs.iter().enumerate() {
            let last = i + 1 == bufs.len();
            let flags = u16::from(!last) | if buf.writable { 2 } else { 0 };
            let mut d = Vec::with_capacity(16);
            d.extend_from_slice(&buf.addr.to_le_bytes());
            d.extend_from_slice(&buf.len.to_le_bytes());
            d.extend_from_slice(&flags.to_le_bytes());
            d.extend_from_slice(&(if last { 0u16 } else { i as u16 + 1 }).to_le_bytes());
            m.write_bytes(desc + 16 * i as u64, &d);
        }
        let slot = u64::from(self.next_avail % QUEUE_LEN);
        m.write(avail + 4 + 2 * slot, 2, 0);
        self.next_avail = self.next_avail.wrapping_add(1);
        m.write(avail + 2, 2, u64::from(self.next_avail));
        // The kick: a write to the queue's notify address (KVM's ioeventfd in a VM; here the
        // transport's fallback passes it on).
        m.write(
            BAR4 + reg::NOTIFY + 4 * self.notify_off,
            2,
            u64::from(self.queue),
        );
        let done = wait_until(WAIT, || m.read(USED + 2, 2) == u64::from(self.next_avail));
        assert!(
            done,
            "request {} on queue {} never completed (status {:#x})",
            self.next_avail,
            self.queue,
            self.status()
        );
        let used_slot = u64::from(self.next_avail.wrapping_sub(1) % QUEUE_LEN);
        m.read(used + 4 + 8 * used_slot + 4, 4) as u32
    }
}
