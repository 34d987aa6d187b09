//! Creating the shared memory every peer maps: a POSIX shm object (`-M`), an unlinked file in a
//! directory such as a hugetlbfs mount (`-m`), or an anonymous memfd (`--memfd`).
//!
//! Sizes are u64 throughout (QEMU's server truncates them to 32 bits). Like QEMU, an existing
//! object that already has the wanted size is left alone (its contents survive a restart), and
//! `ftruncate` failing with EINVAL is retried with the size doubled, which is what a hugetlbfs
//! file needs when its page size exceeds the request; unlike QEMU this works for every size.
//! The memory is sparse: nothing is allocated until a peer touches it.

use std::ffi::CString;
use std::os::fd::{AsFd, OwnedFd};
use std::path::PathBuf;

use nix::errno::Errno;
use nix::fcntl::OFlag;
use nix::sys::memfd::{memfd_create, MFdFlags};
use nix::sys::mman::{shm_open, shm_unlink};
use nix::sys::stat::{fchmod, fstat, Mode};
use nix::unistd::{fchown, ftruncate, mkstemp, unlink, Gid};

use crate::options::ShmBacking;

/// How many times a failed `ftruncate` is retried with the size doubled.
const MAX_DOUBLINGS: u32 = 24;

/// Why the shared memory could not be set up; the server exits with it.
#[derive(Debug, thiserror::Error)]
pub enum ShmError {
    /// `shm_open` of the `-M` name failed.
    #[error("cannot open shared memory object '{name}': {errno}")]
    Open {
        /// The POSIX name.
        name: String,
        /// The system call's error.
        errno: Errno,
    },
    /// No file could be created in the `-m` directory.
    #[error("cannot create a file in '{dir}': {errno}")]
    CreateInDir {
        /// The directory.
        dir: PathBuf,
        /// The system call's error.
        errno: Errno,
    },
    /// `memfd_create` failed (`--memfd`).
    #[error("cannot create a memfd: {0}")]
    Memfd(Errno),
    /// `ftruncate` failed, also after doubling the size (hugetlbfs).
    #[error("cannot size the shared memory ({what}) to {size} bytes: {errno}")]
    Resize {
        /// The shared memory's description.
        what: String,
        /// The last size tried.
        size: u64,
        /// The last error.
        errno: Errno,
    },
    /// `fchmod` or `fchown` failed (`--mode`, `--group`).
    #[error("cannot set permissions of the shared memory ({what}): {errno}")]
    Permissions {
        /// The shared memory's description.
        what: String,
        /// The system call's error.
        errno: Errno,
    },
    /// `fstat` failed.
    #[error("cannot stat the shared memory ({what}): {errno}")]
    Stat {
        /// The shared memory's description.
        what: String,
        /// The system call's error.
        errno: Errno,
    },
}

/// The server's shared memory: the fd every peer receives and what it is, for logs and cleanup.
#[derive(Debug)]
pub struct SharedMemory {
    /// The fd every peer receives.
    pub fd: OwnedFd,
    /// Actual size (`st_size`): the requested power of two, or larger on hugetlbfs.
    pub size: u64,
    /// Human-readable origin, e.g. `/dev/shm/ivshmem`.
    pub description: String,
    /// The POSIX name to `shm_unlink` on exit, when asked to.
    posix_name: Option<String>,
}

/// Permissions for the shared memory.
#[derive(Debug, Clone, Copy)]
pub struct Access {
    /// Permission bits (`--mode`).
    pub mode: u32,
    /// Group owner (`--group`), if any.
    pub gid: Option<u32>,
}

impl SharedMemory {
    /// Creates (or opens) the shared memory with `size` bytes (a power of two).
    pub fn create(
        backing: &ShmBacking,
        size: u64,
        access: Access,
    ) -> Result<SharedMemory, ShmError> {
        let (fd, description, posix_name) = match backing {
            ShmBacking::PosixName(name) => {
                let path = format!("/{name}");
                let fd = shm_open(
                    path.as_str(),
                    OFlag::O_CREAT | OFlag::O_RDWR | OFlag::O_CLOEXEC,
                    Mode::from_bits_truncate(access.mode),
                )
                .map_err(|errno| ShmError::Open {
                    name: name.clone(),
                    errno,
                })?;
                (fd, format!("/dev/shm/{name}"), Some(name.clone()))
            }
            ShmBacking::Directory(dir) => {
                let template = dir.join("ivshmem.XXXXXX");
                let (fd, path) = mkstemp(&template).map_err(|errno| ShmError::CreateInDir {
                    dir: dir.clone(),
                    errno,
                })?;
                // Anonymous from now on, like QEMU: nothing to clean up, even after a crash.
                let _ = unlink(&path);
                (fd, format!("unlinked file in {}", dir.display()), None)
            }
            ShmBacking::Memfd => {
                let name = CString::new("ivshmem").expect("no NUL");
                let fd = memfd_create(name.as_c_str(), MFdFlags::MFD_CLOEXEC)
                    .map_err(ShmError::Memfd)?;
                (fd, "memfd".to_string(), None)
            }
        };
        let mut shm = SharedMemory {
            fd,
            size: 0,
            description,
            posix_name,
        };
        shm.apply_access(backing, access)?;
        shm.size = shm.resize(size)?;
        Ok(shm)
    }

    fn apply_access(&self, backing: &ShmBacking, access: Access) -> Result<(), ShmError> {
        if matches!(backing, ShmBacking::Memfd) {
            return Ok(()); // no name anyone could open
        }
        let err = |errno| ShmError::Permissions {
            what: self.description.clone(),
            errno,
        };
        if let Some(gid) = access.gid {
            fchown(self.fd.as_fd(), None, Some(Gid::from_raw(gid))).map_err(err)?;
        }
        // shm_open's mode was filtered by the umask, and an existing object keeps its old mode.
        match fchmod(self.fd.as_fd(), Mode::from_bits_truncate(access.mode)) {
            Ok(()) => Ok(()),
            // An existing object owned by someone else that we may use: keep its permissions.
            Err(Errno::EPERM) if self.posix_name.is_some() => {
                log::warn!(
                    "cannot change permissions of {}: not its owner",
                    self.description
                );
                Ok(())
            }
            Err(errno) => Err(err(errno)),
        }
    }

    /// Gives the object `size` bytes unless it already has exactly that, doubling on EINVAL.
    fn resize(&self, size: u64) -> Result<u64, ShmError> {
        let current = self.current_size()?;
        if current == size {
            return Ok(size);
        }
        let mut attempt = size;
        let mut doublings = 0;
        loop {
            let length = i64::try_from(attempt).map_err(|_| ShmError::Resize {
                what: self.description.clone(),
                size,
                errno: Errno::EFBIG,
            })?;
            match ftruncate(self.fd.as_fd(), length) {
                Ok(()) => break,
                Err(Errno::EINVAL) if doublings < MAX_DOUBLINGS && attempt < (1 << 62) => {
                    attempt *= 2;
                    doublings += 1;
                }
                Err(Errno::EINTR) => {}
                Err(errno) => {
                    return Err(ShmError::Resize {
                        what: self.description.clone(),
                        size,
                        errno,
                    })
                }
            }
        }
        if attempt != size {
            log::info!(
                "ivshmem-server: {} could not hold {size} bytes; sized to {attempt} bytes",
                self.description
            );
        }
        self.current_size()
    }

    fn current_size(&self) -> Result<u64, ShmError> {
        let st = fstat(self.fd.as_fd()).map_err(|errno| ShmError::Stat {
            what: self.description.clone(),
            errno,
        })?;
        Ok(st.st_size as u64)
    }

    /// Removes the POSIX object's name (`--unlink-shm`); mapped memory stays valid for peers.
    pub fn unlink_name(&self) {
        if let Some(name) = &self.posix_name {
            if let Err(errno) = shm_unlink(format!("/{name}").as_str()) {
                log::warn!(
                    "cannot remove shared memory object {}: {errno}",
                    self.description
                );
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const ACCESS: Access = Access {
        mode: 0o600,
        gid: None,
    };

    #[test]
    fn memfd_has_requested_size() {
        let shm = SharedMemory::create(&ShmBacking::Memfd, 1 << 20, ACCESS).unwrap();
        assert_eq!(shm.size, 1 << 20);
        assert_eq!(fstat(shm.fd.as_fd()).unwrap().st_size, 1 << 20);
    }

    #[test]
    fn huge_sparse_memfd() {
        let shm = SharedMemory::create(&ShmBacking::Memfd, 8 << 30, ACCESS).unwrap();
        assert_eq!(shm.size, 8 << 30);
    }

    #[test]
    fn directory_file_is_unlinked_and_owner_only() {
        let dir = std::env::temp_dir().join(format!("ivshmem-shm-test-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let shm = SharedMemory::create(&ShmBacking::Directory(dir.clone()), 65536, ACCESS).unwrap();
        assert_eq!(shm.size, 65536);
        let st = fstat(shm.fd.as_fd()).unwrap();
        assert_eq!(st.st_mode & 0o777, 0o600);
        assert_eq!(std::fs::read_dir(&dir).unwrap().count(), 0, "file unlinked");
        std::fs::remove_dir(&dir).unwrap();
    }

    #[test]
    fn posix_object_keeps_size_and_can_be_unlinked() {
        let name = format!("ivshmem-unit-{}", std::process::id());
        let backing = ShmBacking::PosixName(name.clone());
        let access = Access {
            mode: 0o640,
            gid: None,
        };
        let shm = SharedMemory::create(&backing, 4096, access).unwrap();
        assert_eq!(shm.size, 4096);
        let path = format!("/dev/shm/{name}");
        let meta = std::fs::metadata(&path).unwrap();
        use std::os::unix::fs::PermissionsExt;
        assert_eq!(meta.permissions().mode() & 0o777, 0o640);
        // Reopening with a different size resizes it.
        let again = SharedMemory::create(&backing, 8192, ACCESS).unwrap();
        assert_eq!(again.size, 8192);
        again.unlink_name();
        assert!(!std::path::Path::new(&path).exists());
        drop(shm);
    }

    #[test]
    fn missing_directory_is_an_error() {
        let err = SharedMemory::create(
            &ShmBacking::Directory("/nonexistent/dir".into()),
            4096,
            ACCESS,
        )
        .unwrap_err();
        assert!(err.to_string().contains("/nonexistent/dir"), "{err}");
    }
}
