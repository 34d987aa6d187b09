//! The ivshmem driver's interface at its edges, run inside a guest by the nested test
//! (tests/nested/linux-guest): every bad ioctl or mmap argument gets its error, interrupts that
//! arrive before an eventfd is bound are kept, and after removal an open device keeps working
//! for its program (errors, a scratch page) instead of crashing it. Prints one
//! `CHECK name ok|FAIL why` line per check; exits 0 when all pass.
//!
//!   driver_checks edges /dev/ivshmemN      # a doorbell device with at least 2 vectors
//!   driver_checks hold /dev/ivshmemN       # maps it, prints HOLDING, reads a line from stdin
//!                                          # (send it after unbinding), checks the aftermath

use std::ffi::c_void;
use std::io::BufRead;
use std::os::fd::{AsFd, AsRawFd, OwnedFd, RawFd};
use std::process::ExitCode;
use std::ptr;
use std::time::Duration;

use ivshmem_guest::uapi;
use nix::errno::Errno;
use nix::poll::{poll, PollFd, PollFlags, PollTimeout};
use nix::sys::eventfd::{EfdFlags, EventFd};

struct Checks {
    failed: usize,
}

impl Checks {
    fn check(&mut self, name: &str, ok: bool, why: impl FnOnce() -> String) {
        if ok {
            println!("CHECK {name} ok");
        } else {
            self.failed += 1;
            println!("CHECK {name} FAIL {}", why());
        }
    }

    /// `got` must be the error `want`.
    fn errno(&mut self, name: &str, got: Result<i32, Errno>, want: Errno) {
        self.check(name, got == Err(want), || {
            format!("got {got:?}, wanted {want}")
        });
    }
}

fn open(path: &str) -> OwnedFd {
    nix::fcntl::open(
        path,
        nix::fcntl::OFlag::O_RDWR | nix::fcntl::OFlag::O_CLOEXEC,
        nix::sys::stat::Mode::empty(),
    )
    .unwrap_or_else(|e| panic!("open {path}: {e}"))
}

/// A raw ioctl with an arbitrary request and argument (the point is to pass wrong ones).
fn raw_ioctl(fd: RawFd, request: u64, arg: *mut c_void) -> Result<i32, Errno> {
    // SAFETY: the argument is either null, or points at a live value of the request's size;
    // the driver must cope with both.
    Errno::result(unsafe { libc::ioctl(fd, request as _, arg) })
}

fn info(fd: RawFd) -> uapi::Info {
    let mut info = uapi::Info::default();
    // SAFETY: a valid, writable struct ivshmem_info.
    unsafe { uapi::ioctl_info(fd, &mut info) }.expect("IVSHMEM_IOCTL_INFO");
    info
}

fn bind(fd: RawFd, vector: u32, eventfd: RawFd) -> Result<i32, Errno> {
    let b = uapi::EventfdBinding {
        vector,
        fd: eventfd,
    };
    // SAFETY: a valid struct ivshmem_eventfd, only read.
    unsafe { uapi::ioctl_set_eventfd(fd, &b) }
}

fn ring(fd: RawFd, peer: u32, vector: u32) -> Result<i32, Errno> {
    let r = uapi::Ring { peer, vector };
    // SAFETY: a valid struct ivshmem_ring, only read.
    unsafe { uapi::ioctl_ring(fd, &r) }
}

/// mmap of `len` bytes at `offset` with `flags`; unmapped again at once on success.
fn try_mmap(fd: RawFd, len: usize, offset: u64, flags: i32) -> Result<i32, Errno> {
    // SAFETY: a fresh mapping at a kernel-chosen address, unmapped before returning.
    let p = unsafe {
        libc::mmap(
            ptr::null_mut(),
            len,
            libc::PROT_READ | libc::PROT_WRITE,
            flags,
            fd,
            offset as libc::off_t,
        )
    };
    if p == libc::MAP_FAILED {
        return Err(Errno::last());
    }
    // SAFETY: the mapping made just above.
    unsafe { libc::munmap(p, len) };
    Ok(0)
}

fn eventfd() -> OwnedFd {
    EventFd::from_flags(EfdFlags::EFD_CLOEXEC | EfdFlags::EFD_NONBLOCK)
        .expect("eventfd")
        .into()
}

fn readable_within(fd: &OwnedFd, ms: u16) -> bool {
    let mut fds = [PollFd::new(fd.as_fd(), PollFlags::POLLIN)];
    poll(&mut fds, PollTimeout::from(ms)).is_ok_and(|n| n > 0)
}

fn edges(path: &str, c: &mut Checks) {
    let dev = open(path);
    let fd = dev.as_raw_fd();
    let info = info(fd);
    let shm = info.shm_size as usize;
    let page = 4096usize;
    println!("INFO {info:?}");
    c.check("has_vectors", info.vectors >= 2, || {
        format!("{} vectors", info.vectors)
    });

    c.errno(
        "unknown_ioctl",
        raw_ioctl(fd, 0xB9FF, ptr::null_mut()),
        Errno::ENOTTY,
    );
    let info_req = nix::request_code_read!(0xB9, 0x00, std::mem::size_of::<uapi::Info>());
    let eventfd_req = nix::request_code_write!(0xB9, 0x01, 8);
    let ring_req = nix::request_code_write!(0xB9, 0x02, 8);
    c.errno(
        "info_null",
        raw_ioctl(fd, info_req, ptr::null_mut()),
        Errno::EFAULT,
    );
    c.errno(
        "eventfd_null",
        raw_ioctl(fd, eventfd_req, ptr::null_mut()),
        Errno::EFAULT,
    );
    c.errno(
        "ring_null",
        raw_ioctl(fd, ring_req, ptr::null_mut()),
        Errno::EFAULT,
    );
    c.errno(
        "info_bad_pointer",
        raw_ioctl(fd, info_req, 16 as *mut c_void),
        Errno::EFAULT,
    );
    c.errno("ring_peer_too_big", ring(fd, 0x1_0000, 0), Errno::EINVAL);
    c.errno("ring_vector_too_big", ring(fd, 0, 0x1_0000), Errno::EINVAL);

    let efd = eventfd();
    c.errno(
        "bind_vector_too_big",
        bind(fd, info.vectors, efd.as_raw_fd()),
        Errno::EINVAL,
    );
    c.errno(
        "bind_vector_huge",
        bind(fd, u32::MAX, efd.as_raw_fd()),
        Errno::EINVAL,
    );
    c.errno("bind_fd_negative", bind(fd, 0, -2), Errno::EINVAL);
    c.errno("bind_fd_closed", bind(fd, 0, 999), Errno::EBADF);
    c.errno("bind_not_an_eventfd", bind(fd, 0, fd), Errno::EINVAL);
    c.check("unbind_unbound", bind(fd, 0, -1) == Ok(0), || {
        "unbind failed".into()
    });

    c.errno(
        "mmap_private",
        try_mmap(fd, page, 0, libc::MAP_PRIVATE),
        Errno::EINVAL,
    );
    c.errno(
        "mmap_too_long",
        try_mmap(fd, shm + page, 0, libc::MAP_SHARED),
        Errno::EINVAL,
    );
    c.errno(
        "mmap_past_end",
        try_mmap(fd, page, shm as u64, libc::MAP_SHARED),
        Errno::EINVAL,
    );
    c.errno(
        "mmap_regs_two_pages",
        try_mmap(fd, 2 * page, uapi::REGS_MMAP_OFFSET, libc::MAP_SHARED),
        Errno::EINVAL,
    );
    c.errno(
        "mmap_regs_second_page",
        try_mmap(
            fd,
            page,
            uapi::REGS_MMAP_OFFSET + page as u64,
            libc::MAP_SHARED,
        ),
        Errno::EINVAL,
    );
    c.check(
        "mmap_whole_shm",
        try_mmap(fd, shm, 0, libc::MAP_SHARED).is_ok(),
        || "failed".into(),
    );

    // One open file holds a vector; another gets EBUSY until the first closes.
    let other = open(path);
    c.check("bind", bind(fd, 0, efd.as_raw_fd()) == Ok(0), || {
        "bind failed".into()
    });
    c.errno(
        "bind_held_elsewhere",
        bind(other.as_raw_fd(), 0, efd.as_raw_fd()),
        Errno::EBUSY,
    );
    drop(dev);
    c.check(
        "bind_after_holder_closed",
        bind(other.as_raw_fd(), 0, efd.as_raw_fd()) == Ok(0),
        || "still busy".into(),
    );
    let fd = other.as_raw_fd();
    let own = info.iv_position as u32;

    // Our own doorbell: by ioctl on a bound vector, and before binding (kept until bound).
    while readable_within(&efd, 0) {
        let _ = nix::unistd::read(&efd, &mut [0u8; 8]);
    }
    c.check(
        "self_ring_ioctl",
        ring(fd, own, 0).is_ok() && readable_within(&efd, 5000),
        || "vector 0 did not fire".into(),
    );
    let late = eventfd();
    let _ = ring(fd, own, 1);
    std::thread::sleep(Duration::from_millis(200)); // give the MSI time to land before binding
    c.check(
        "kept_until_bound",
        bind(fd, 1, late.as_raw_fd()) == Ok(0) && readable_within(&late, 5000),
        || "the interrupt before binding was lost".into(),
    );
}

fn hold(path: &str, c: &mut Checks) {
    let device = ivshmem_guest::GuestDevice::open_path(path).expect("open");
    device.shm().write(0, b"held").expect("write");
    println!("HOLDING");
    let mut line = String::new();
    let _ = std::io::stdin().lock().read_line(&mut line);
    c.check("gone_seen", device.is_gone(), || {
        "poll shows no hang-up".into()
    });
    // The mappings now show a scratch page: accesses work, nothing crashes.
    let mut buf = [0u8; 4];
    c.check(
        "shm_after_removal",
        device.shm().write(0, b"late").is_ok() && device.shm().read(0, &mut buf).is_ok(),
        || "access failed".into(),
    );
    c.check(
        "store_ring_after_removal",
        device.ring(0, 0).is_ok(),
        || "ring failed".into(),
    );
    c.check(
        "ioctl_ring_after_removal",
        matches!(
            device.ring_with_ioctl(0, 0),
            Err(ivshmem_guest::RingError::Gone)
        ),
        || "no Gone error".into(),
    );
    c.check(
        "wait_after_removal",
        matches!(
            device.wait(Some(Duration::from_secs(5))),
            Err(ivshmem_guest::WaitError::Gone)
        ),
        || "no Gone error".into(),
    );
    let fd = device.device_fd().as_raw_fd();
    c.errno(
        "mmap_after_removal",
        try_mmap(fd, 4096, 0, libc::MAP_SHARED),
        Errno::ENODEV,
    );
    let mut info = uapi::Info::default();
    // SAFETY: a valid, writable struct ivshmem_info.
    c.errno(
        "info_after_removal",
        unsafe { uapi::ioctl_info(fd, &mut info) },
        Errno::ENODEV,
    );
}

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().collect();
    let mut checks = Checks { failed: 0 };
    match args.get(1..).unwrap_or_default() {
        [mode, path] if mode == "edges" => edges(path, &mut checks),
        [mode, path] if mode == "hold" => hold(path, &mut checks),
        _ => {
            eprintln!("usage: driver_checks edges|hold /dev/ivshmemN");
            return ExitCode::from(2);
        }
    }
    println!("CHECKS {} failed", checks.failed);
    if checks.failed == 0 {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    }
}
