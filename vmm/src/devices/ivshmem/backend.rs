//! Where an ivshmem-plain device's memory comes from: a file (created and sized when needed,
//! so several VMs naming the same file share it) or an anonymous memfd.

use std::fs::OpenOptions;
use std::os::fd::OwnedFd;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};

use super::options::SharedMemorySource;

/// Why a plain device's shared memory could not be set up.
#[derive(Debug, thiserror::Error)]
pub enum BackendError {
    /// The `path=` or `shm=` file could not be opened.
    #[error("ivshmem: cannot open {path}: {source}")]
    Open {
        /// The file.
        path: PathBuf,
        /// The open error.
        source: std::io::Error,
    },
    /// The file or memfd could not be given its size.
    #[error("ivshmem: cannot size {what} to {size} bytes: {source}")]
    Resize {
        /// What was being sized.
        what: String,
        /// The size asked for.
        size: u64,
        /// The ftruncate error.
        source: std::io::Error,
    },
    #[error("ivshmem: {what} is {size} bytes; BAR2 needs a non-zero power of two (give size=)")]
    /// The size is zero or not a power of two, which BAR2 must be.
    BadSize {
        /// The file.
        what: String,
        /// Its size.
        size: u64,
    },
    /// `memfd_create` failed.
    #[error("ivshmem: memfd_create: {0}")]
    Memfd(std::io::Error),
}

/// An open shared-memory object and its size in bytes.
pub struct SharedMemory {
    /// The memory's fd, mapped as BAR2.
    pub fd: OwnedFd,
    /// Its size in bytes (a power of two).
    pub size: u64,
}

/// Opens (creating when missing) the memory of a plain device. With `size`, a smaller file is
/// grown to it; without, the file's own size is used. The size must be a power of two.
pub fn open(source: &SharedMemorySource, size: Option<u64>) -> Result<SharedMemory, BackendError> {
    match source {
        SharedMemorySource::File(path) => open_file(path, size),
        SharedMemorySource::Memfd => {
            let size = size.unwrap_or(0);
            let fd = nix::sys::memfd::memfd_create(
                c"ivshmem-plain",
                nix::sys::memfd::MFdFlags::MFD_CLOEXEC,
            )
            .map_err(|e| BackendError::Memfd(e.into()))?;
            let file = std::fs::File::from(fd);
            file.set_len(size).map_err(|source| BackendError::Resize {
                what: "memfd".into(),
                size,
                source,
            })?;
            checked(OwnedFd::from(file), size, "memfd")
        }
    }
}

fn open_file(path: &Path, size: Option<u64>) -> Result<SharedMemory, BackendError> {
    let file = OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(false)
        .mode(0o600)
        .open(path)
        .map_err(|source| BackendError::Open {
            path: path.to_path_buf(),
            source,
        })?;
    let what = path.display().to_string();
    let current = file
        .metadata()
        .map_err(|source| BackendError::Open {
            path: path.to_path_buf(),
            source,
        })?
        .len();
    let size = match size {
        Some(want) if current < want => {
            file.set_len(want).map_err(|source| BackendError::Resize {
                what: what.clone(),
                size: want,
                source,
            })?;
            want
        }
        Some(want) => want,
        None => current,
    };
    checked(OwnedFd::from(file), size, &what)
}

fn checked(fd: OwnedFd, size: u64, what: &str) -> Result<SharedMemory, BackendError> {
    if !size.is_power_of_two() {
        return Err(BackendError::BadSize {
            what: what.into(),
            size,
        });
    }
    Ok(SharedMemory { fd, size })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn file_is_created_grown_and_reused() {
        let dir = std::env::temp_dir().join(format!("ivshmem-backend-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("mem");
        let src = SharedMemorySource::File(path.clone());
        let a = open(&src, Some(1 << 20)).unwrap();
        assert_eq!(a.size, 1 << 20);
        assert_eq!(std::fs::metadata(&path).unwrap().len(), 1 << 20);
        let b = open(&src, None).unwrap();
        assert_eq!(b.size, 1 << 20);
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn sizes_that_are_not_powers_of_two_are_refused() {
        let dir = std::env::temp_dir().join(format!("ivshmem-backend2-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("odd");
        std::fs::write(&path, vec![0u8; 3000]).unwrap();
        let err = open(&SharedMemorySource::File(path), None).err().unwrap();
        assert!(
            matches!(err, BackendError::BadSize { size: 3000, .. }),
            "{err}"
        );
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn memfd_has_the_requested_size() {
        let m = open(&SharedMemorySource::Memfd, Some(2 << 20)).unwrap();
        assert_eq!(m.size, 2 << 20);
    }
}
