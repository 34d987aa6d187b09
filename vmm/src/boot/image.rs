//! Kernel and initramfs images copied into guest RAM by several threads.
//!
//! Copying an image is mostly the first touch of guest RAM: the host zeroes every page (or 2 MiB
//! huge page) it hands out, then copies the file's bytes out of its page cache. For the 63 MB
//! ELF vmlinux of Debian's kernel that took 0.8 s of a nested-bed boot, in one thread, in every
//! VMM measured (docs/boot-time.md). linux-loader still parses and checks the image here, but
//! [`DeferredCopy`] only notes the copies into guest RAM it asks for; [`DeferredCopy::finish`]
//! then does them on up to [`MAX_THREADS`] threads (the CPUs we may run on), in 2 MiB pieces
//! aligned to guest-physical 2 MiB boundaries, so that no two threads fault the same huge page.
//! Each thread reads through its own open file description (`/proc/self/fd/N`), so their file
//! offsets do not race. The pieces are one queue: where no such description can be opened or a
//! thread cannot start, the threads that run copy its share.

use std::fs::File;
use std::io::{self, Read, Seek, SeekFrom};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Mutex;

use vm_memory::bitmap::BitmapSlice;
use vm_memory::volatile_memory::{Error as VolatileMemoryError, VolatileSlice};
use vm_memory::{
    Bytes, GuestAddress, GuestMemoryBackend, GuestMemoryMmap, GuestMemoryRegion,
    MemoryRegionAddress, ReadVolatile,
};

/// At most this many threads copy one image.
pub const MAX_THREADS: usize = 4;
/// Each thread's unit of work, and the alignment of its guest-physical end: a transparent huge
/// page.
const PIECE: u64 = 2 << 20;
/// Below this, one thread copies the image (threads would cost more than they save).
const MIN_PARALLEL_BYTES: u64 = 4 << 20;

/// One copy linux-loader asked for: `len` bytes from `file_offset` to `guest_addr`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct PendingCopy {
    file_offset: u64,
    guest_addr: u64,
    len: u64,
}

/// An image file as linux-loader reads it (`Read + Seek + ReadVolatile`): header reads happen at
/// once, reads into guest RAM are noted and done later by [`finish`](Self::finish).
pub struct DeferredCopy<'m> {
    path: PathBuf,
    file: File,
    file_size: u64,
    mem: &'m GuestMemoryMmap,
    copies: Vec<PendingCopy>,
}

impl<'m> DeferredCopy<'m> {
    /// Opens `path`, whose copies will go into `mem`. It must be a regular file: its size
    /// places the initramfs, and the copies read it from several offsets.
    pub fn open(mem: &'m GuestMemoryMmap, path: &Path) -> io::Result<Self> {
        let file = File::open(path)?;
        let metadata = file.metadata()?;
        if !metadata.is_file() {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                "not a regular file",
            ));
        }
        let file_size = metadata.len();
        Ok(Self {
            path: path.to_path_buf(),
            file,
            file_size,
            mem,
            copies: Vec::new(),
        })
    }

    /// The file's size in bytes.
    pub fn file_size(&self) -> u64 {
        self.file_size
    }

    /// The file's path (for errors).
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Does the noted copies on one thread per CPU we may run on, up to [`MAX_THREADS`].
    pub fn finish(self) -> io::Result<()> {
        let cpus = std::thread::available_parallelism().map_or(1, |n| n.get());
        self.finish_on(cpus.min(MAX_THREADS))
    }

    /// Does the noted copies on at most `threads` threads (one below [`MIN_PARALLEL_BYTES`]);
    /// the first error ends them.
    pub fn finish_on(self, threads: usize) -> io::Result<()> {
        let total: u64 = self.copies.iter().map(|c| c.len).sum();
        let threads = threads.min(total.div_ceil(PIECE) as usize);
        let pieces = split_into_pieces(&self.copies);
        let mut files = vec![self.file];
        if total >= MIN_PARALLEL_BYTES {
            for _ in 1..threads {
                match reopen(&files[0]) {
                    Ok(file) => files.push(file),
                    Err(e) => {
                        log::debug!("{}: no second file description ({e})", self.path.display());
                        break;
                    }
                }
            }
        }
        let next = AtomicUsize::new(0);
        let first_error = Mutex::new(None);
        let copy_pieces = |mut file: File| {
            while let Some(piece) = pieces.get(next.fetch_add(1, Ordering::Relaxed)) {
                if let Err(e) = copy_piece(self.mem, &mut file, piece) {
                    // Every other thread stops at its next piece.
                    next.store(pieces.len(), Ordering::Relaxed);
                    first_error
                        .lock()
                        .unwrap_or_else(|poisoned| poisoned.into_inner())
                        .get_or_insert(e);
                    return;
                }
            }
        };
        std::thread::scope(|scope| {
            let mut files = files.into_iter();
            let own = files.next();
            for file in files {
                // The pieces are a shared queue: should a thread not start, the others copy
                // its share.
                let spawned =
                    crate::threads::named("image-copy").spawn_scoped(scope, || copy_pieces(file));
                if let Err(e) = spawned {
                    log::debug!("{}: a copy thread did not start ({e})", self.path.display());
                }
            }
            if let Some(file) = own {
                copy_pieces(file);
            }
        });
        match first_error
            .into_inner()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
        {
            Some(e) => Err(e),
            None => Ok(()),
        }
    }

    /// The guest-physical address of `len` bytes at our address `host`, when they lie in one
    /// region of guest RAM.
    fn guest_addr_of(&self, host: u64, len: u64) -> Option<u64> {
        self.mem.iter().find_map(|region| {
            let base = region.get_host_address(MemoryRegionAddress(0)).ok()? as u64;
            let offset = host.checked_sub(base)?;
            (offset.checked_add(len)? <= region.len()).then(|| region.start_addr().0 + offset)
        })
    }
}

/// A second open file description of `file` (its own offset), through /proc.
fn reopen(file: &File) -> io::Result<File> {
    use std::os::fd::AsRawFd;
    File::open(format!("/proc/self/fd/{}", file.as_raw_fd()))
}

/// Copies one piece of the file into guest RAM.
fn copy_piece(mem: &GuestMemoryMmap, file: &mut File, piece: &PendingCopy) -> io::Result<()> {
    file.seek(SeekFrom::Start(piece.file_offset))?;
    mem.read_exact_volatile_from(GuestAddress(piece.guest_addr), file, piece.len as usize)
        .map_err(|e| io::Error::new(io::ErrorKind::UnexpectedEof, e))
}

/// `copies` cut so that every piece ends at a 2 MiB guest-physical boundary or where its copy
/// ends.
fn split_into_pieces(copies: &[PendingCopy]) -> Vec<PendingCopy> {
    let mut pieces = Vec::new();
    for copy in copies {
        let mut done = 0;
        while done < copy.len {
            let guest_addr = copy.guest_addr + done;
            let to_boundary = PIECE - guest_addr % PIECE;
            let len = to_boundary.min(copy.len - done);
            pieces.push(PendingCopy {
                file_offset: copy.file_offset + done,
                guest_addr,
                len,
            });
            done += len;
        }
    }
    pieces
}

impl Read for DeferredCopy<'_> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        self.file.read(buf)
    }
}

impl Seek for DeferredCopy<'_> {
    fn seek(&mut self, pos: SeekFrom) -> io::Result<u64> {
        self.file.seek(pos)
    }
}

impl ReadVolatile for DeferredCopy<'_> {
    /// Notes a copy into guest RAM and moves the file offset past it, as a `read` would; it
    /// stops at the end of the file, as a `read` would, so a loader sees a truncated image as
    /// such. A buffer outside guest RAM is read at once.
    fn read_volatile<B: BitmapSlice>(
        &mut self,
        buf: &mut VolatileSlice<B>,
    ) -> Result<usize, VolatileMemoryError> {
        let host = buf.ptr_guard_mut().as_ptr() as u64;
        let Some(guest_addr) = self.guest_addr_of(host, buf.len() as u64) else {
            return self.file.read_volatile(buf);
        };
        let file_offset = self
            .file
            .stream_position()
            .map_err(VolatileMemoryError::IOError)?;
        let len = (buf.len() as u64).min(self.file_size.saturating_sub(file_offset));
        self.file
            .seek(SeekFrom::Start(file_offset + len))
            .map_err(VolatileMemoryError::IOError)?;
        if len > 0 {
            self.copies.push(PendingCopy {
                file_offset,
                guest_addr,
                len,
            });
        }
        Ok(len as usize)
    }
}

/// Benchmark (`vmm --bench-image-copy FILE`): copies `path` into fresh guest RAM, allocated as
/// the VM's is, the way a kernel is loaded, on one thread and on the threads [`DeferredCopy::finish`]
/// picks, alternated `ROUNDS` times; returns the medians.
pub fn bench_copy(path: &Path) -> anyhow::Result<String> {
    const ROUNDS: usize = 5;
    let len = std::fs::metadata(path)?.len();
    let ram_size = (len + PIECE).next_multiple_of(PIECE);
    let cpus = std::thread::available_parallelism().map_or(1, |n| n.get());
    let threads = cpus.min(MAX_THREADS);
    let copy_once = |threads: usize| -> anyhow::Result<f64> {
        let ram = crate::memory::MemoryRegion::ram("bench-image", ram_size)?;
        let mem = crate::vm::ram_view(&ram, ram_size)?;
        let start = std::time::Instant::now();
        let mut image = DeferredCopy::open(&mem, path)?;
        mem.read_exact_volatile_from(GuestAddress(0), &mut image, len as usize)?;
        image.finish_on(threads)?;
        Ok(start.elapsed().as_secs_f64() * 1e3)
    };
    let (mut one, mut many) = (Vec::new(), Vec::new());
    for _ in 0..ROUNDS {
        one.push(copy_once(1)?);
        many.push(copy_once(threads)?);
    }
    let median = |v: &mut Vec<f64>| {
        v.sort_by(f64::total_cmp);
        v[v.len() / 2]
    };
    Ok(format!(
        "image_copy: bytes={len} threads={threads} one_thread_ms={:.2} parallel_ms={:.2}",
        median(&mut one),
        median(&mut many)
    ))
}

#[cfg(test)]
mod tests {
    use std::io::Write;

    use super::*;

    fn memory(size: usize) -> GuestMemoryMmap {
        GuestMemoryMmap::from_ranges(&[(GuestAddress(0), size)]).unwrap()
    }

    /// A file removed when dropped.
    struct TempFile(std::path::PathBuf);
    impl Drop for TempFile {
        fn drop(&mut self) {
            let _ = std::fs::remove_file(&self.0);
        }
    }

    /// A temporary file of `len` bytes whose every 8-byte word is its own offset.
    fn pattern_file(len: usize) -> TempFile {
        static N: AtomicUsize = AtomicUsize::new(0);
        let n = N.fetch_add(1, Ordering::Relaxed);
        let file =
            TempFile(std::env::temp_dir().join(format!("vmm-image-{}-{n}", std::process::id())));
        let bytes: Vec<u8> = (0..len.div_ceil(8) as u64)
            .flat_map(|i| (i * 8).to_le_bytes())
            .take(len)
            .collect();
        File::create(&file.0).unwrap().write_all(&bytes).unwrap();
        file
    }

    fn read_back(mem: &GuestMemoryMmap, addr: u64, len: usize) -> Vec<u8> {
        let mut out = vec![0; len];
        mem.read_slice(&mut out, GuestAddress(addr)).unwrap();
        out
    }

    #[test]
    fn copies_land_only_after_finish_and_match_the_file() {
        let mem = memory(64 << 20);
        let len = (9 << 20) + 4321; // several pieces, a ragged end
        let file = pattern_file(len);
        let mut image = DeferredCopy::open(&mem, &file.0).unwrap();
        // An unaligned start: the first piece ends at the next 2 MiB boundary.
        let addr = (3 << 20) + 0x1234;
        mem.read_exact_volatile_from(GuestAddress(addr), &mut image, len)
            .unwrap();
        assert!(read_back(&mem, addr, len).iter().all(|&b| b == 0));
        image.finish().unwrap();
        assert_eq!(read_back(&mem, addr, len), std::fs::read(&file.0).unwrap());
    }

    #[test]
    fn header_reads_happen_at_once_and_segments_from_their_offsets() {
        let mem = memory(32 << 20);
        let file = pattern_file(12 << 20);
        let whole = std::fs::read(&file.0).unwrap();
        let mut image = DeferredCopy::open(&mem, &file.0).unwrap();
        let mut header = [0u8; 16];
        image.read_exact(&mut header).unwrap();
        assert_eq!(header[..], whole[..16]);
        // Two segments, the second before the first in the file, as a loader may ask.
        image.seek(SeekFrom::Start(8 << 20)).unwrap();
        mem.read_exact_volatile_from(GuestAddress(20 << 20), &mut image, 4 << 20)
            .unwrap();
        image.seek(SeekFrom::Start(4096)).unwrap();
        mem.read_exact_volatile_from(GuestAddress(1 << 20), &mut image, 5 << 20)
            .unwrap();
        assert_eq!(image.stream_position().unwrap(), 4096 + (5 << 20));
        image.finish().unwrap();
        assert_eq!(read_back(&mem, 20 << 20, 4 << 20), whole[8 << 20..12 << 20]);
        assert_eq!(
            read_back(&mem, 1 << 20, 5 << 20),
            whole[4096..4096 + (5 << 20)]
        );
    }

    #[test]
    fn a_read_past_the_end_is_short_as_from_the_file() {
        let mem = memory(16 << 20);
        let file = pattern_file(1000);
        let mut image = DeferredCopy::open(&mem, &file.0).unwrap();
        image.seek(SeekFrom::Start(900)).unwrap();
        // The loader's view: 100 bytes, then the end of the file.
        let err = mem
            .read_exact_volatile_from(GuestAddress(0x1000), &mut image, 500)
            .unwrap_err();
        assert!(
            matches!(
                err,
                vm_memory::GuestMemoryError::PartialBuffer {
                    expected: 500,
                    completed: 100
                }
            ),
            "{err:?}"
        );
    }

    #[test]
    fn only_regular_files_are_images() {
        let mem = memory(2 << 20);
        let err = DeferredCopy::open(&mem, Path::new("/dev/null"))
            .err()
            .unwrap();
        assert_eq!(err.kind(), io::ErrorKind::InvalidInput);
        assert!(DeferredCopy::open(&mem, Path::new("/nonexistent/image")).is_err());
    }

    #[test]
    fn pieces_end_at_2mib_guest_boundaries() {
        let pieces = split_into_pieces(&[PendingCopy {
            file_offset: 10,
            guest_addr: (2 << 20) - 100,
            len: (2 << 20) + 200,
        }]);
        assert_eq!(
            pieces,
            [
                PendingCopy {
                    file_offset: 10,
                    guest_addr: (2 << 20) - 100,
                    len: 100
                },
                PendingCopy {
                    file_offset: 110,
                    guest_addr: 2 << 20,
                    len: 2 << 20
                },
                PendingCopy {
                    file_offset: 110 + (2 << 20),
                    guest_addr: 4 << 20,
                    len: 100
                },
            ]
        );
    }
}
