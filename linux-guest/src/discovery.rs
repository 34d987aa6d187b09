//! Finding devices: `/sys/class/ivshmem/ivshmemN` has one entry per device the module bound,
//! with its PCI address; the node is `/dev/ivshmemN`.

use std::path::{Path, PathBuf};

/// Where the module's class lives in sysfs.
pub const SYSFS_CLASS: &str = "/sys/class/ivshmem";

/// One device the module bound.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DeviceEntry {
    /// `ivshmemN`.
    pub name: String,
    /// N.
    pub index: u32,
    /// `/dev/ivshmemN`.
    pub path: PathBuf,
    /// Its PCI address, e.g. `0000:00:04.0`.
    pub pci_address: String,
}

/// The devices the module bound, by index (empty when the module is not loaded).
pub fn list() -> Vec<DeviceEntry> {
    list_in(Path::new(SYSFS_CLASS))
}

fn list_in(class: &Path) -> Vec<DeviceEntry> {
    let Ok(dir) = std::fs::read_dir(class) else {
        return Vec::new();
    };
    let mut devices: Vec<DeviceEntry> = dir
        .flatten()
        .filter_map(|entry| {
            let name = entry.file_name().into_string().ok()?;
            let index = name.strip_prefix("ivshmem")?.parse().ok()?;
            let pci_address = std::fs::read_to_string(entry.path().join("pci_address")).ok()?;
            Some(DeviceEntry {
                path: Path::new("/dev").join(&name),
                name,
                index,
                pci_address: pci_address.trim().to_string(),
            })
        })
        .collect();
    devices.sort_by_key(|d| d.index);
    devices
}

/// The device at `address`; a short address (`00:04.0`) means PCI domain 0.
pub fn by_pci_address(address: &str) -> Option<DeviceEntry> {
    by_pci_address_in(Path::new(SYSFS_CLASS), address)
}

fn by_pci_address_in(class: &Path, address: &str) -> Option<DeviceEntry> {
    let full = if address.matches(':').count() == 1 {
        format!("0000:{address}")
    } else {
        address.to_string()
    };
    list_in(class)
        .into_iter()
        .find(|d| d.pci_address.eq_ignore_ascii_case(&full))
}

/// True when `text` looks like a PCI address (`[DDDD:]BB:DD.F`) rather than an index or a path.
pub fn is_pci_address(text: &str) -> bool {
    let parts: Vec<&str> = text.split(':').collect();
    let hex = |s: &str, n: usize| s.len() == n && s.chars().all(|c| c.is_ascii_hexdigit());
    let slot_fn = |s: &str| matches!(s.split_once('.'), Some((d, f)) if hex(d, 2) && hex(f, 1));
    match parts.as_slice() {
        [bus, slot] => hex(bus, 2) && slot_fn(slot),
        [domain, bus, slot] => hex(domain, 4) && hex(bus, 2) && slot_fn(slot),
        _ => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fake_class(devices: &[(&str, &str)]) -> PathBuf {
        let dir = std::env::temp_dir().join(format!(
            "ivshmem-guest-class-{}-{}",
            std::process::id(),
            devices.len()
        ));
        let _ = std::fs::remove_dir_all(&dir);
        for (name, address) in devices {
            std::fs::create_dir_all(dir.join(name)).unwrap();
            std::fs::write(dir.join(name).join("pci_address"), format!("{address}\n")).unwrap();
        }
        std::fs::create_dir_all(dir.join("not-ours")).unwrap();
        dir
    }

    #[test]
    fn lists_by_index_and_finds_by_address() {
        let class = fake_class(&[("ivshmem10", "0000:00:05.0"), ("ivshmem2", "0000:00:04.0")]);
        let names: Vec<String> = list_in(&class).into_iter().map(|d| d.name).collect();
        assert_eq!(names, ["ivshmem2", "ivshmem10"]);
        let found = by_pci_address_in(&class, "00:05.0").unwrap();
        assert_eq!(found.path, Path::new("/dev/ivshmem10"));
        assert_eq!(found.index, 10);
        assert!(by_pci_address_in(&class, "0000:00:06.0").is_none());
        assert!(list_in(&class.join("missing")).is_empty());
        std::fs::remove_dir_all(class).unwrap();
    }

    #[test]
    fn pci_address_syntax() {
        for ok in ["00:04.0", "0000:00:04.0", "0001:af:1f.7"] {
            assert!(is_pci_address(ok), "{ok}");
        }
        for bad in [
            "0",
            "/dev/ivshmem0",
            "00:04",
            "0:04.0",
            "00:04.10",
            "zz:04.0",
            "",
        ] {
            assert!(!is_pci_address(bad), "{bad}");
        }
    }
}
