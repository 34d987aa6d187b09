//! A PCI function as the bus sees it: config space, BARs (and where each is mapped now), MSI-X.
//!
//! Device models build a [`PciFunction`] (identity, BARs, capabilities) and hand it to the bus.
//! From then on the guest drives it through config cycles: a write to the command register or a
//! BAR re-decodes every BAR and maps, moves or unmaps its region in the address space's root
//! (priority 1, as QEMU maps BARs); a write to the MSI-X message control reaches [`Msix`].

use super::bar::{self, Bar, BarError, BarKind, BAR_COUNT};
use super::config::{self, overlaps, ConfigSpace, PciIds, BAR0};
use super::msix::{Msix, MsixError};
use crate::memory::AddressSpace;

/// Priority of BAR regions in the address space root (QEMU uses 1, so BARs cover RAM).
pub const BAR_PRIORITY: i32 = 1;

/// The address spaces BARs decode into.
#[derive(Clone)]
pub struct BarSpaces {
    /// Guest-physical memory, for memory BARs.
    pub memory: AddressSpace,
    /// I/O ports, for I/O BARs.
    pub io: AddressSpace,
}

/// Which address spaces a config write changed (the caller commits those).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Remapped {
    /// Memory-space BARs moved, appeared or went away.
    pub memory: bool,
    /// I/O-space BARs moved, appeared or went away.
    pub io: bool,
}

struct BarSlot {
    bar: Bar,
    size: u64,
    mapped_at: Option<u64>,
}

/// One PCI function: its config space, its BARs (mapped where the guest put them while decoding
/// is on) and its MSI-X capability.
pub struct PciFunction {
    name: String,
    config: ConfigSpace,
    bars: [Option<BarSlot>; BAR_COUNT],
    msix: Option<(Msix, usize)>,
}

/// Why a BAR or MSI-X could not be added (a device model's bug).
#[derive(Debug, thiserror::Error)]
pub enum FunctionError {
    /// The BAR was refused.
    #[error(transparent)]
    Bar(#[from] BarError),
    /// The MSI-X capability was refused.
    #[error(transparent)]
    Msix(#[from] MsixError),
}

impl PciFunction {
    /// A function with these ids and no BARs, named `name` in the logs.
    pub fn new(name: &str, ids: PciIds) -> Self {
        let mut config = ConfigSpace::new();
        config.set_identity(&ids);
        Self {
            name: name.to_string(),
            config,
            bars: Default::default(),
            msix: None,
        }
    }

    /// The name given at creation, for logs.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// Device-side access to config space (e.g. interrupt pin, initial command bits).
    pub fn config(&self) -> &ConfigSpace {
        &self.config
    }

    /// Device-side write access to config space (no masks applied).
    pub fn config_mut(&mut self) -> &mut ConfigSpace {
        &mut self.config
    }

    /// Offer `bar` in slot `index` (a 64-bit BAR also takes `index + 1`).
    pub fn set_bar(&mut self, index: usize, bar: Bar) -> Result<(), FunctionError> {
        let size = bar.region.size();
        bar::validate(index, bar.kind, size)?;
        let taken = |i: usize| self.bars[i].is_some() || (i > 0 && self.is_high_half(i));
        if taken(index) || (bar.kind.is_64bit() && taken(index + 1)) {
            return Err(BarError::InUse { index }.into());
        }
        bar::install(&mut self.config, index, bar.kind, size);
        self.bars[index] = Some(BarSlot {
            bar,
            size,
            mapped_at: None,
        });
        Ok(())
    }

    fn is_high_half(&self, index: usize) -> bool {
        index > 0
            && self.bars[index - 1]
                .as_ref()
                .is_some_and(|s| s.bar.kind.is_64bit())
    }

    /// Add the MSI-X capability with the table and PBA in BAR `bar`. If that BAR is free, it
    /// becomes an exclusive 32-bit MSI-X BAR (QEMU's `msix_init_exclusive_bar`); otherwise the
    /// device has already put `msix.table_region()`/`pba_region()` into it at the layout's
    /// offsets.
    pub fn add_msix(&mut self, msix: &Msix, bar: u8) -> Result<(), FunctionError> {
        let index = bar as usize;
        if index >= BAR_COUNT {
            return Err(BarError::BadIndex(index).into());
        }
        if self.bars[index].is_none() {
            self.set_bar(index, Bar::memory32(msix.exclusive_bar_region(), false))?;
        }
        let cap = msix.add_capability(&mut self.config, bar)?;
        self.msix = Some((msix.clone(), cap));
        Ok(())
    }

    /// The MSI-X state, if the function has the capability.
    pub fn msix(&self) -> Option<&Msix> {
        self.msix.as_ref().map(|(m, _)| m)
    }

    /// Where BAR `index` is mapped now, if it is.
    pub fn bar_address(&self, index: usize) -> Option<u64> {
        self.bars.get(index)?.as_ref()?.mapped_at
    }

    /// A guest config-space read of `size` bytes at `offset`.
    pub fn config_read(&self, offset: usize, size: usize) -> u32 {
        self.config.read(offset, size)
    }

    /// A guest config write: apply the masks, then the side effects (BAR mapping, MSI-X
    /// control). Returns which address spaces need a commit.
    pub fn config_write(
        &mut self,
        offset: usize,
        size: usize,
        value: u32,
        spaces: &BarSpaces,
    ) -> Remapped {
        self.config.write(offset, size, value);
        let mut remapped = Remapped::default();
        if overlaps(offset, size, config::COMMAND, 2) || overlaps(offset, size, BAR0, 4 * BAR_COUNT)
        {
            remapped = self.update_mappings(spaces);
        }
        if let Some((msix, cap)) = &self.msix {
            if overlaps(offset, size, cap + 2, 2) {
                msix.control_written(&self.config, *cap);
            }
        }
        remapped
    }

    /// Re-decode every BAR and map/move/unmap its region to match. Does not commit.
    pub fn update_mappings(&mut self, spaces: &BarSpaces) -> Remapped {
        let mut remapped = Remapped::default();
        for index in 0..BAR_COUNT {
            let Some(slot) = self.bars[index].as_mut() else {
                continue;
            };
            let wanted = bar::decoded_address(&self.config, index, slot.bar.kind, slot.size);
            if wanted == slot.mapped_at {
                continue;
            }
            let space = if slot.bar.kind == BarKind::Io {
                remapped.io = true;
                &spaces.io
            } else {
                remapped.memory = true;
                &spaces.memory
            };
            let root = space.root();
            match (slot.mapped_at, wanted) {
                (Some(_), Some(address)) => slot.bar.region.set_address(address),
                (None, Some(address)) => {
                    root.add_subregion(address, &slot.bar.region, BAR_PRIORITY)
                }
                (Some(_), None) => root.del_subregion(&slot.bar.region),
                (None, None) => {}
            }
            log::debug!(
                "{}: BAR{index} {:?} -> {:x?}",
                self.name,
                slot.mapped_at,
                wanted
            );
            slot.mapped_at = wanted;
        }
        remapped
    }
}
