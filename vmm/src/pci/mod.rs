//! PCI: bus 0 with a host bridge, config space (conf1 ports and ECAM), BARs and MSI-X.
//!
//! - `config`: the 256-byte config space with write / write-1-to-clear masks and capabilities;
//! - `bar`: BAR encoding (sizing masks) and decoding (where a BAR is mapped);
//! - `function`: a device's function (config, BAR regions, MSI-X) and BAR (re)mapping;
//! - `bus`: slots, the host bridge, conf1 (0xCF8/0xCFC) and ECAM accessors;
//! - `msix`: MSI-X table/PBA/capability and the irqfd/route wiring of each vector;
//! - `watcher`: the one thread that watches eventfds of masked vectors (PBA pending bits).
//!
//! A device model builds a [`PciFunction`] (identity, [`Bar`]s, optionally an [`Msix`]) and
//! plugs it with [`PciBus::add_device`]. Everything after that is driven by the guest.

pub mod bar;
pub mod bus;
pub mod config;
pub mod firmware;
pub mod function;
pub mod msix;
pub mod watcher;

#[cfg(test)]
mod tests;

use std::sync::Arc;

pub use bar::{Bar, BarKind};
pub use bus::{Bdf, BusError, PciBus};
pub use config::{ConfigError, ConfigSpace, PciIds};
pub use function::{BarSpaces, FunctionError, PciFunction};
pub use msix::{Msix, MsixError, MsixLayout};

use crate::memory::AddressSpace;

/// Priority of the config-space accessors in their address spaces.
const ACCESSOR_PRIORITY: i32 = 0;

/// Create bus 0 and map its config-space accessors: ECAM (1 MiB, bus 0) at `ecam_base` in
/// `memory` (the layout's `PCI_ECAM_ADDR`), conf1 at 0xCF8/0xCFC in `io`. BARs will be mapped
/// into the roots of the same spaces. Commits both.
pub fn attach(memory: &AddressSpace, io: &AddressSpace, ecam_base: u64) -> Arc<PciBus> {
    let bus = PciBus::new(BarSpaces {
        memory: memory.clone(),
        io: io.clone(),
    });
    memory
        .root()
        .add_subregion(ecam_base, &bus.ecam_region(), ACCESSOR_PRIORITY);
    let (address, data) = bus.conf1_regions();
    io.root()
        .add_subregion(bus::CONF1_ADDRESS_PORT, &address, ACCESSOR_PRIORITY);
    io.root()
        .add_subregion(bus::CONF1_DATA_PORT, &data, ACCESSOR_PRIORITY);
    memory.commit();
    io.commit();
    bus
}
