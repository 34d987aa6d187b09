//! The listening UNIX socket: replacing a stale socket file, refusing to start next to a live
//! server, owner-only permissions from the moment the file exists, and removing the file on exit
//! only if it is still ours.

use std::io;
use std::os::unix::fs::{FileTypeExt, MetadataExt};
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::{Path, PathBuf};

use nix::sys::stat::{umask, Mode};
use nix::unistd::{chown, Gid};

/// Why the server could not take its socket path.
#[derive(Debug, thiserror::Error)]
pub enum ListenError {
    /// A live server answers on the path: two servers must not share it.
    #[error("another server is already listening on {0}")]
    InUse(PathBuf),
    /// Something other than a socket is at the path; we never delete it.
    #[error("{0} exists and is not a socket; refusing to replace it")]
    NotASocket(PathBuf),
    /// The existing socket could not be probed for a live server.
    #[error("cannot check the existing socket {path}: {source}")]
    Probe {
        /// The socket path.
        path: PathBuf,
        /// The failed system call's error.
        source: io::Error,
    },
    /// The socket is stale (nobody answers) but could not be removed.
    #[error("cannot remove the stale socket {path}: {source}")]
    RemoveStale {
        /// The socket path.
        path: PathBuf,
        /// The failed system call's error.
        source: io::Error,
    },
    /// `bind` failed (permissions, path too long, missing directory).
    #[error("cannot bind {path}: {source}")]
    Bind {
        /// The socket path.
        path: PathBuf,
        /// The failed system call's error.
        source: io::Error,
    },
    /// The socket's mode or group (`--mode`, `--group`) could not be set.
    #[error("cannot set permissions of {path}: {source}")]
    Permissions {
        /// The socket path.
        path: PathBuf,
        /// The failed system call's error.
        source: io::Error,
    },
}

/// The bound socket and the identity of its file.
#[derive(Debug)]
pub struct Listener {
    /// The listening socket.
    pub socket: UnixListener,
    /// Where it is bound; removed on exit if it is still our file.
    pub path: PathBuf,
    dev: u64,
    ino: u64,
}

impl Listener {
    /// Binds `path` (non-blocking) with `mode` and optional group, after dealing with a file
    /// already there: a socket nobody listens on is replaced, a live one is refused.
    pub fn bind(path: &Path, mode: u32, gid: Option<u32>) -> Result<Listener, ListenError> {
        match std::fs::symlink_metadata(path) {
            Ok(meta) if !meta.file_type().is_socket() => {
                return Err(ListenError::NotASocket(path.into()));
            }
            Ok(_) => match UnixStream::connect(path) {
                Ok(_) => return Err(ListenError::InUse(path.into())),
                Err(e) if e.kind() == io::ErrorKind::ConnectionRefused => {
                    std::fs::remove_file(path).map_err(|source| ListenError::RemoveStale {
                        path: path.into(),
                        source,
                    })?;
                    log::info!("ivshmem-server: removed stale socket {}", path.display());
                }
                Err(source) => {
                    return Err(ListenError::Probe {
                        path: path.into(),
                        source,
                    })
                }
            },
            Err(_) => {} // nothing there (or unreadable: bind will say)
        }
        // Owner-only from creation on: no window in which others could connect.
        let old = umask(Mode::from_bits_truncate(0o177));
        let bound = UnixListener::bind(path);
        umask(old);
        let socket = bound.map_err(|source| ListenError::Bind {
            path: path.into(),
            source,
        })?;
        let perm_err = |source| ListenError::Permissions {
            path: path.into(),
            source,
        };
        let cleanup = |e: ListenError| {
            let _ = std::fs::remove_file(path);
            e
        };
        if let Some(gid) = gid {
            chown(path, None, Some(Gid::from_raw(gid)))
                .map_err(|e| cleanup(perm_err(io::Error::from(e))))?;
        }
        if mode != 0o600 {
            use std::os::unix::fs::PermissionsExt;
            std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode))
                .map_err(|e| cleanup(perm_err(e)))?;
        }
        socket
            .set_nonblocking(true)
            .map_err(|e| cleanup(perm_err(e)))?;
        let meta = std::fs::symlink_metadata(path).map_err(|e| cleanup(perm_err(e)))?;
        Ok(Listener {
            socket,
            path: path.into(),
            dev: meta.dev(),
            ino: meta.ino(),
        })
    }

    /// The listening socket and the file, apart (the event loop takes the socket).
    pub fn into_parts(self) -> (UnixListener, SocketFile) {
        let file = SocketFile {
            path: self.path,
            identity: Some((self.dev, self.ino)),
        };
        (self.socket, file)
    }

    /// Removes the socket file if it is still the one we bound (not a successor's).
    pub fn remove_file(&self) {
        SocketFile {
            path: self.path.clone(),
            identity: Some((self.dev, self.ino)),
        }
        .remove_file();
    }
}

/// A socket file whose listening socket this process took over (upgrade) or was given
/// (socket activation): removed on exit only if it is still the file that was there.
#[derive(Debug)]
pub struct SocketFile {
    path: PathBuf,
    identity: Option<(u64, u64)>,
}

impl SocketFile {
    /// The file at `path` as it is now; if nothing is there, nothing will be removed.
    pub fn adopted(path: &Path) -> SocketFile {
        let identity = std::fs::symlink_metadata(path)
            .ok()
            .filter(|m| m.file_type().is_socket())
            .map(|m| (m.dev(), m.ino()));
        SocketFile {
            path: path.into(),
            identity,
        }
    }

    /// A file this process must never remove (systemd's socket unit owns it).
    pub fn not_ours(path: &Path) -> SocketFile {
        SocketFile {
            path: path.into(),
            identity: None,
        }
    }

    /// Whether this process may remove the file (it is not systemd's).
    pub fn is_ours(&self) -> bool {
        self.identity.is_some()
    }

    /// Removes the file if it is still the one recorded.
    pub fn remove_file(&self) {
        let Some((dev, ino)) = self.identity else {
            return;
        };
        if let Ok(meta) = std::fs::symlink_metadata(&self.path) {
            if meta.dev() == dev && meta.ino() == ino {
                if let Err(e) = std::fs::remove_file(&self.path) {
                    log::warn!("ivshmem-server: cannot remove {}: {e}", self.path.display());
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    fn scratch(tag: &str) -> PathBuf {
        let dir =
            std::env::temp_dir().join(format!("ivshmem-listener-{tag}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        dir
    }

    #[test]
    fn stale_socket_is_replaced_live_one_refused() {
        let dir = scratch("stale");
        let path = dir.join("sock");
        drop(UnixListener::bind(&path).unwrap()); // leaves a stale file
        let l = Listener::bind(&path, 0o600, None).unwrap();
        let mode = std::fs::metadata(&path).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600);
        let err = Listener::bind(&path, 0o600, None).unwrap_err();
        assert!(matches!(err, ListenError::InUse(_)), "{err}");
        l.remove_file();
        assert!(!path.exists());
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn regular_file_is_not_replaced() {
        let dir = scratch("file");
        let path = dir.join("sock");
        std::fs::write(&path, b"x").unwrap();
        assert!(matches!(
            Listener::bind(&path, 0o600, None),
            Err(ListenError::NotASocket(_))
        ));
        assert!(path.exists());
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn mode_is_applied() {
        let dir = scratch("mode");
        let path = dir.join("sock");
        let l = Listener::bind(&path, 0o660, None).unwrap();
        assert_eq!(
            std::fs::metadata(&path).unwrap().permissions().mode() & 0o777,
            0o660
        );
        // A successor's file is not removed.
        std::fs::remove_file(&path).unwrap();
        let other = UnixListener::bind(&path).unwrap();
        l.remove_file();
        assert!(path.exists());
        drop(other);
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
