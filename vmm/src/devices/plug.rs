//! The one way a device is created: typed [`DeviceOptions`] in, a [`Plugged`] device out, through
//! [`DeviceSet::plug`]. The machine's fixed devices ([`MACHINE_DEVICES`]) go through the same
//! path as the ones the command line asks for, so adding a device kind is one variant and one
//! match arm here, its options parsed at the edge (the `options` module).
use std::sync::Arc;

use vmm_sys_util::eventfd::{EventFd, EFD_NONBLOCK};

use super::acpi_sleep::{AcpiSleep, ACPI_SLEEP_BASE, ACPI_SLEEP_SIZE};
use super::i8042::{I8042, I8042_BASE, I8042_SIZE};
use super::ivshmem::{IvshmemDevice, IvshmemError, IvshmemOptions};
use super::pci_testdev::{PciTestDev, PciTestDevConfig, PciTestDevError};
use super::rtc::{CmosRtc, RTC_BASE, RTC_SIZE};
use super::serial::{SerialPort, COM1_BASE, COM1_GSI, COM1_SIZE};
use super::testdev::{TestDev, TestDevMmio, TestDevPio};
use super::vhost_user::{KindInfo, VhostUserError, VhostUserOptions};
use super::virtio_net::{VirtioNetError, VirtioNetOptions};
use super::virtio_pci::VirtioPci;
use super::DeviceContext;
use crate::arch::x86_64::layout::{self, TESTDEV_PIO_BASE, TESTDEV_PIO_SIZE};
use crate::interrupts::InterruptError;
use crate::memory::{IoAccess, MemoryRegion, RegionOps};

/// A device to create, with its settings.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum DeviceOptions {
    /// One of the machine's fixed devices.
    Fixed(FixedDevice),
    /// ivshmem-plain or ivshmem-doorbell.
    Ivshmem(IvshmemOptions),
    /// The PCI test device.
    PciTestDev(PciTestDevConfig),
    /// A virtio-pci device served by a vhost-user backend process.
    VhostUser(VhostUserOptions),
    /// A virtio-net device served by the kernel's vhost-net on a TAP interface.
    VirtioNet(VirtioNetOptions),
}

/// The ISA-style devices every VM has, at fixed addresses.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum FixedDevice {
    /// The guest programs' testdev (MMIO and PIO).
    TestDev,
    /// The keyboard controller's reset line.
    I8042,
    /// The CMOS real-time clock.
    Rtc,
    /// The ACPI sleep register (power-off).
    AcpiSleep,
    /// COM1.
    Serial,
}

/// The fixed devices, in the order every VM plugs them.
pub const MACHINE_DEVICES: [FixedDevice; 5] = [
    FixedDevice::TestDev,
    FixedDevice::I8042,
    FixedDevice::Rtc,
    FixedDevice::AcpiSleep,
    FixedDevice::Serial,
];

/// A created device: what the VM keeps of it.
pub enum Plugged {
    /// A fixed device the VM needs nothing more from.
    Fixed(FixedDevice),
    /// COM1, which the VM feeds stdin to.
    Serial(Arc<SerialPort>),
    /// An ivshmem device (its counters go into the exit report).
    Ivshmem(Arc<IvshmemDevice>),
    /// The PCI test device.
    PciTestDev(Arc<PciTestDev>),
    /// A vhost-user device (its kind's name, e.g. `vhost-user-blk`, and the transport).
    VhostUser(&'static str, Arc<VirtioPci>),
    /// A virtio-net device (the transport).
    VirtioNet(Arc<VirtioPci>),
}

/// Why a device could not be created.
#[derive(Debug, thiserror::Error)]
pub enum DeviceError {
    /// An ivshmem device.
    #[error(transparent)]
    Ivshmem(#[from] IvshmemError),
    /// The PCI test device.
    #[error(transparent)]
    PciTestDev(#[from] PciTestDevError),
    /// A vhost-user device.
    #[error(transparent)]
    VhostUser(#[from] VhostUserError),
    /// A virtio-net device.
    #[error(transparent)]
    VirtioNet(#[from] VirtioNetError),
    /// A legacy interrupt line could not be wired.
    #[error("{device}: {source}")]
    Interrupt {
        /// The device.
        device: &'static str,
        /// The router's error.
        source: InterruptError,
    },
    /// An eventfd could not be created.
    #[error("{device}: eventfd: {source}")]
    EventFd {
        /// The device.
        device: &'static str,
        /// The error.
        source: std::io::Error,
    },
}

/// The devices of one VM, created one by one through [`DeviceSet::plug`].
pub struct DeviceSet {
    ctx: DeviceContext,
    plugged: Vec<Plugged>,
}

impl DeviceSet {
    /// An empty set plugging into `ctx`.
    pub fn new(ctx: DeviceContext) -> DeviceSet {
        DeviceSet {
            ctx,
            plugged: Vec::new(),
        }
    }

    /// What the devices are plugged into.
    pub fn context(&self) -> &DeviceContext {
        &self.ctx
    }

    /// Creates the device and plugs it into the VM (visible to the guest after the next commit
    /// of the address spaces).
    pub fn plug(&mut self, options: &DeviceOptions) -> Result<&Plugged, DeviceError> {
        let device = match options {
            DeviceOptions::Fixed(fixed) => self.plug_fixed(*fixed)?,
            DeviceOptions::Ivshmem(options) => {
                let name = format!("ivshmem{}", self.ivshmem().count());
                Plugged::Ivshmem(super::ivshmem::add(&self.ctx, options, &name)?)
            }
            DeviceOptions::PciTestDev(config) => {
                Plugged::PciTestDev(super::pci_testdev::add(&self.ctx, config)?)
            }
            DeviceOptions::VhostUser(options) => {
                // Numbered per kind in logs: vhost-user-blk0, vhost-user-blk1, ...
                let kind = KindInfo::of(options).name;
                let index = self.vhost_user().filter(|(k, _)| *k == kind).count();
                let device = super::vhost_user::add(&self.ctx, options, index)?;
                Plugged::VhostUser(kind, device)
            }
            DeviceOptions::VirtioNet(options) => {
                let index = self.virtio_net().count();
                Plugged::VirtioNet(super::virtio_net::add(&self.ctx, options, index)?)
            }
        };
        self.plugged.push(device);
        Ok(self.plugged.last().expect("just pushed"))
    }

    /// COM1, if the VM has one.
    pub fn serial(&self) -> Option<&Arc<SerialPort>> {
        self.plugged.iter().find_map(|d| match d {
            Plugged::Serial(port) => Some(port),
            _ => None,
        })
    }

    /// The ivshmem devices, in the order they were plugged.
    pub fn ivshmem(&self) -> impl Iterator<Item = &Arc<IvshmemDevice>> {
        self.plugged.iter().filter_map(|d| match d {
            Plugged::Ivshmem(device) => Some(device),
            _ => None,
        })
    }

    /// The vhost-user devices (kind name, transport), in the order they were plugged.
    pub fn vhost_user(&self) -> impl Iterator<Item = (&'static str, &Arc<VirtioPci>)> {
        self.plugged.iter().filter_map(|d| match d {
            Plugged::VhostUser(kind, device) => Some((*kind, device)),
            _ => None,
        })
    }

    /// The virtio-net devices (their transports), in the order they were plugged.
    pub fn virtio_net(&self) -> impl Iterator<Item = &Arc<VirtioPci>> {
        self.plugged.iter().filter_map(|d| match d {
            Plugged::VirtioNet(device) => Some(device),
            _ => None,
        })
    }

    fn plug_fixed(&self, device: FixedDevice) -> Result<Plugged, DeviceError> {
        let ctx = &self.ctx;
        match device {
            FixedDevice::TestDev => {
                let testdev = Arc::new(TestDev::new(
                    ctx.control.clone(),
                    ctx.console.clone(),
                    ctx.guest_memory.clone(),
                    ctx.machine.cpus,
                    ctx.machine.ram_size,
                    ctx.machine.created,
                ));
                let mmio = MemoryRegion::io(
                    "testdev",
                    layout::TESTDEV_SIZE,
                    Arc::new(TestDevMmio(testdev.clone())),
                    IoAccess::sizes(1, 8),
                );
                ctx.memory
                    .root()
                    .add_subregion(layout::TESTDEV_ADDR, &mmio, 0);
                self.map_pio(
                    "testdev-pio",
                    TESTDEV_PIO_BASE,
                    TESTDEV_PIO_SIZE,
                    Arc::new(TestDevPio(testdev)),
                    IoAccess::sizes(1, 4),
                );
            }
            FixedDevice::I8042 => {
                let i8042 = Arc::new(I8042::new(ctx.control.clone()));
                self.map_pio(
                    "i8042",
                    I8042_BASE,
                    I8042_SIZE,
                    i8042,
                    IoAccess::sizes(1, 1),
                );
            }
            FixedDevice::Rtc => {
                let rtc = Arc::new(CmosRtc::new());
                self.map_pio("rtc", RTC_BASE, RTC_SIZE, rtc, IoAccess::sizes(1, 1));
            }
            FixedDevice::AcpiSleep => {
                let sleep = Arc::new(AcpiSleep::new(ctx.control.clone()));
                self.map_pio(
                    "acpi-sleep",
                    ACPI_SLEEP_BASE,
                    ACPI_SLEEP_SIZE,
                    sleep,
                    IoAccess::sizes(1, 1),
                );
            }
            FixedDevice::Serial => {
                let irq = Arc::new(EventFd::new(EFD_NONBLOCK).map_err(|source| {
                    DeviceError::EventFd {
                        device: "serial",
                        source,
                    }
                })?);
                ctx.interrupts
                    .bind_irqfd(&irq, COM1_GSI)
                    .map_err(|source| DeviceError::Interrupt {
                        device: "serial",
                        source,
                    })?;
                let serial = Arc::new(SerialPort::new(irq, ctx.console.clone()));
                self.map_pio(
                    "serial",
                    COM1_BASE,
                    COM1_SIZE,
                    serial.clone(),
                    IoAccess::sizes(1, 1),
                );
                return Ok(Plugged::Serial(serial));
            }
        }
        Ok(Plugged::Fixed(device))
    }

    /// Maps `ops` at `port..port + size` of the I/O space (visible at the next commit).
    fn map_pio(&self, name: &str, port: u16, size: u16, ops: Arc<dyn RegionOps>, access: IoAccess) {
        let region = MemoryRegion::io(name, u64::from(size), ops, access);
        self.ctx
            .io
            .root()
            .add_subregion(u64::from(port), &region, 0);
    }
}
