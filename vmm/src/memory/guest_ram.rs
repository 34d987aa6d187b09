//! Guest RAM as other processes see it: how it is backed ([`RamBacking`], the `--memory`
//! options) and, for devices served outside the VMM (vhost-user backends), where each piece is
//! in guest-physical space, in our address space and in which file ([`GuestRam`]).

use std::os::fd::BorrowedFd;

use super::{MemoryError, MemoryRegion};

/// How guest RAM is allocated.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct RamBacking {
    /// A memfd mapped `MAP_SHARED`, so a vhost-user backend can map it (`shared=on`).
    pub shared: bool,
    /// 2 MiB hugetlb pages (`hugepages=on`); fails when too few are free.
    pub hugepages: bool,
}

impl RamBacking {
    /// Creates the RAM region `name` of `size` bytes with this backing.
    pub fn create(self, name: &str, size: u64) -> Result<MemoryRegion, MemoryError> {
        match (self.shared, self.hugepages) {
            (false, false) => MemoryRegion::ram(name, size),
            (false, true) => MemoryRegion::ram_hugepages(name, size),
            (true, hugepages) => MemoryRegion::ram_shared(name, size, hugepages),
        }
    }
}

/// The `--memory` value: `SIZE` or `[size=]SIZE,shared=on|off,hugepages=on|off` (parsed at the
/// edge, `options::memory`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct MemoryOptions {
    /// Bytes of guest RAM.
    pub size: u64,
    /// How it is allocated.
    pub backing: RamBacking,
}

/// One piece of guest RAM: where the guest sees it and the region behind it.
#[derive(Clone, Debug)]
pub struct GuestRamRegion {
    /// Guest-physical address of the first byte.
    pub guest_addr: u64,
    /// The RAM region (its mapping is our view of it).
    pub region: MemoryRegion,
}

impl GuestRamRegion {
    /// Size in bytes.
    pub fn size(&self) -> u64 {
        self.region.size()
    }

    /// Our userspace address of the first byte.
    pub fn host_addr(&self) -> u64 {
        self.region.host_addr().map_or(0, |p| p as u64)
    }

    /// The file another process maps to see this RAM, and the offset of the first byte in it;
    /// `None` for private (anonymous) RAM.
    pub fn file(&self) -> Option<(BorrowedFd<'_>, u64)> {
        self.region.ram_file()
    }
}

/// Guest RAM, region by region (what a vhost-user frontend sends with SET_MEM_TABLE).
#[derive(Clone, Debug, Default)]
pub struct GuestRam {
    regions: Vec<GuestRamRegion>,
}

impl GuestRam {
    /// RAM made of `regions` (they must not overlap in guest-physical space).
    pub fn new(regions: Vec<GuestRamRegion>) -> GuestRam {
        GuestRam { regions }
    }

    /// The regions, lowest guest address first.
    pub fn regions(&self) -> &[GuestRamRegion] {
        &self.regions
    }

    /// True when every region has a file another process can map (`--memory ...,shared=on`).
    pub fn is_shareable(&self) -> bool {
        !self.regions.is_empty() && self.regions.iter().all(|r| r.file().is_some())
    }

    /// Our userspace address of guest-physical `[gpa, gpa + len)`, if the whole range is in
    /// one RAM region.
    pub fn host_address(&self, gpa: u64, len: u64) -> Option<u64> {
        self.regions.iter().find_map(|r| {
            let offset = gpa.checked_sub(r.guest_addr)?;
            let end = offset.checked_add(len)?;
            (end <= r.size()).then(|| r.host_addr() + offset)
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shared_ram_has_a_file_and_translates() {
        let region = RamBacking {
            shared: true,
            hugepages: false,
        }
        .create("ram", 4 << 20)
        .unwrap();
        let ram = GuestRam::new(vec![GuestRamRegion {
            guest_addr: 0x1000_0000,
            region: region.clone(),
        }]);
        assert!(ram.is_shareable());
        let (fd, offset) = ram.regions()[0].file().unwrap();
        assert_eq!(offset, 0);
        // The fd is the memory: a write through our mapping is visible through the file.
        let host = ram.host_address(0x1000_0010, 4).unwrap();
        // SAFETY: `host` is inside the live 4 MiB mapping of `region`.
        unsafe { (host as *mut u32).write(0xFEED_BEEF) };
        let mut buf = [0u8; 4];
        let file = std::fs::File::from(fd.try_clone_to_owned().unwrap());
        std::os::unix::fs::FileExt::read_exact_at(&file, &mut buf, 0x10).unwrap();
        assert_eq!(u32::from_le_bytes(buf), 0xFEED_BEEF);
        assert_eq!(ram.host_address(0x0FFF_FFFF, 1), None);
        assert_eq!(ram.host_address(0x1000_0000 + (4 << 20) - 4, 8), None);

        let private = RamBacking::default().create("ram", 2 << 20).unwrap();
        let ram = GuestRam::new(vec![GuestRamRegion {
            guest_addr: 0,
            region: private,
        }]);
        assert!(!ram.is_shareable());
    }

    #[test]
    fn hugepages_fail_clearly_or_work() {
        // Either this machine has free hugepages, or the error says what is missing.
        match (RamBacking {
            shared: true,
            hugepages: true,
        })
        .create("ram", 2 << 20)
        {
            Ok(region) => assert!(region.ram_file().is_some()),
            Err(e) => {
                let text = e.to_string();
                assert!(text.contains("hugepage"), "{text}");
            }
        }
    }
}
