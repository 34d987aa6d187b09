//! `bed-io`: test equipment for the nested bed's virtio scenario (tests/nested/vhost-user-devices,
//! docs/nested-kvm.md). Busybox has no vsock client, no random-read tool and no round-trip timer;
//! this is the smallest program that does those, in L2 Linux and in L1.
//!
//! ```text
//! bed-io vsock-listen PORT MESSAGE   accept one vsock connection, send MESSAGE, close
//! bed-io vsock-connect CID PORT      connect, print what the peer sends until it closes
//! bed-io vsock-ping CID PORT ROUNDS  1-byte round trips to an echo server: vsock_rtt_us=
//! bed-io uds-connect UDS PORT        vhost-device-vsock's host side: `CONNECT PORT\n` on UDS,
//!                                    the `OK ...` answer, then what the guest sends
//! bed-io uds-listen PATH MESSAGE     accept one UNIX connection (UDS_PORT), send MESSAGE, close
//! bed-io uds-echo PATH               accept one UNIX connection, echo until it closes
//! bed-io randread DEV SECONDS        4 KiB O_DIRECT reads at random offsets: randread_iops=
//! bed-io seqread DEV MIB             1 MiB O_DIRECT reads from offset 0: seq_read_mbs=
//! bed-io seqwrite DEV MIB            1 MiB O_DIRECT writes from offset 0: seq_write_mbs=
//! bed-io read FILE SECONDS BS        read(2)s of BS bytes for SECONDS (e.g. /dev/hwrng):
//!                                    read_bytes_per_s=, with bytes= and reads=
//! ```
//! (Debian's busybox dd prints no transfer rate, hence seqread/seqwrite.)
use std::io::{Read, Write};
use std::os::fd::{FromRawFd, OwnedFd};
use std::os::unix::fs::OpenOptionsExt;
use std::os::unix::net::{UnixListener, UnixStream};
use std::process::ExitCode;
use std::time::{Duration, Instant};

type Result<T> = std::result::Result<T, String>;

fn main() -> ExitCode {
    match run() {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("bed-io: {e}");
            ExitCode::FAILURE
        }
    }
}

fn run() -> Result<()> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let words: Vec<&str> = args.iter().map(String::as_str).collect();
    match words.as_slice() {
        ["vsock-listen", port, message] => vsock_listen(num(port)?, message),
        ["vsock-connect", cid, port] => vsock_connect(num(cid)?, num(port)?).and_then(print_all),
        ["vsock-ping", cid, port, rounds] => vsock_ping(num(cid)?, num(port)?, num(rounds)?),
        ["uds-connect", uds, port] => uds_connect(uds, num(port)?),
        ["uds-listen", path, message] => uds_listen(path, message),
        ["uds-echo", path] => uds_echo(path),
        ["randread", dev, seconds] => randread(dev, num(seconds)?),
        ["seqread", dev, mib] => sequential(dev, num(mib)?, false),
        ["seqwrite", dev, mib] => sequential(dev, num(mib)?, true),
        ["read", file, seconds, bs] => read_rate(file, num(seconds)?, num(bs)?),
        _ => Err("usage: see the comment at the top of tests/src/bin/bed-io.rs".into()),
    }
}

fn num<T: std::str::FromStr>(text: &str) -> Result<T> {
    text.parse().map_err(|_| format!("not a number: {text}"))
}

fn os(what: &str) -> String {
    format!("{what}: {}", std::io::Error::last_os_error())
}

fn vsock_addr(cid: u32, port: u32) -> libc::sockaddr_vm {
    // SAFETY: sockaddr_vm is plain data; all-zero is a valid value.
    let mut addr: libc::sockaddr_vm = unsafe { std::mem::zeroed() };
    addr.svm_family = libc::AF_VSOCK as libc::sa_family_t;
    addr.svm_cid = cid;
    addr.svm_port = port;
    addr
}

fn vsock_socket() -> Result<OwnedFd> {
    // SAFETY: socket(2) with constant arguments; the fd is owned from here on.
    let fd = unsafe { libc::socket(libc::AF_VSOCK, libc::SOCK_STREAM | libc::SOCK_CLOEXEC, 0) };
    if fd < 0 {
        return Err(os("socket(AF_VSOCK)"));
    }
    // SAFETY: fd was just returned by socket(2) and nothing else owns it.
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
}

/// A connected vsock stream, as a std stream (the fd is a socket: read/write work on it).
fn vsock_connect(cid: u32, port: u32) -> Result<UnixStream> {
    use std::os::fd::AsRawFd;
    let sock = vsock_socket()?;
    let addr = vsock_addr(cid, port);
    // SAFETY: addr is a valid sockaddr_vm of the size given.
    let rc = unsafe {
        libc::connect(
            sock.as_raw_fd(),
            &addr as *const libc::sockaddr_vm as *const libc::sockaddr,
            std::mem::size_of::<libc::sockaddr_vm>() as libc::socklen_t,
        )
    };
    if rc < 0 {
        return Err(os(&format!("connect(vsock {cid}:{port})")));
    }
    Ok(UnixStream::from(sock))
}

fn vsock_listen(port: u32, message: &str) -> Result<()> {
    use std::os::fd::AsRawFd;
    let sock = vsock_socket()?;
    let addr = vsock_addr(libc::VMADDR_CID_ANY, port);
    // SAFETY: addr is a valid sockaddr_vm of the size given; the fd is ours.
    unsafe {
        if libc::bind(
            sock.as_raw_fd(),
            &addr as *const libc::sockaddr_vm as *const libc::sockaddr,
            std::mem::size_of::<libc::sockaddr_vm>() as libc::socklen_t,
        ) < 0
        {
            return Err(os(&format!("bind(vsock port {port})")));
        }
        if libc::listen(sock.as_raw_fd(), 1) < 0 {
            return Err(os("listen"));
        }
    }
    println!("vsock: listening on port {port}");
    std::io::stdout().flush().ok();
    let mut peer = vsock_addr(0, 0);
    let mut len = std::mem::size_of::<libc::sockaddr_vm>() as libc::socklen_t;
    // SAFETY: peer and len describe a writable sockaddr_vm.
    let fd = unsafe {
        libc::accept4(
            sock.as_raw_fd(),
            &mut peer as *mut libc::sockaddr_vm as *mut libc::sockaddr,
            &mut len,
            libc::SOCK_CLOEXEC,
        )
    };
    if fd < 0 {
        return Err(os("accept"));
    }
    // SAFETY: accept4 returned a new fd that nothing else owns.
    let mut conn = UnixStream::from(unsafe { OwnedFd::from_raw_fd(fd) });
    println!(
        "vsock: accepted cid {} port {}",
        peer.svm_cid, peer.svm_port
    );
    conn.write_all(format!("{message}\n").as_bytes())
        .map_err(|e| format!("write: {e}"))
}

fn print_all(mut stream: UnixStream) -> Result<()> {
    stream
        .set_read_timeout(Some(Duration::from_secs(30)))
        .map_err(|e| e.to_string())?;
    let mut text = String::new();
    stream
        .read_to_string(&mut text)
        .map_err(|e| format!("read: {e}"))?;
    print!("{text}");
    Ok(())
}

/// One byte there and back, ROUNDS times after ROUNDS/10 warm-up rounds.
fn ping(stream: &mut UnixStream, rounds: u32) -> Result<()> {
    let warmup = rounds / 10;
    let mut byte = [0u8; 1];
    let mut start = Instant::now();
    for i in 0..warmup + rounds {
        if i == warmup {
            start = Instant::now();
        }
        stream
            .write_all(&[i as u8])
            .map_err(|e| format!("write: {e}"))?;
        stream
            .read_exact(&mut byte)
            .map_err(|e| format!("read: {e}"))?;
        if byte[0] != i as u8 {
            return Err(format!(
                "round {i}: echoed {} instead of {}",
                byte[0], i as u8
            ));
        }
    }
    let us = start.elapsed().as_secs_f64() * 1e6 / f64::from(rounds.max(1));
    println!("vsock_rtt_us={us:.1} rounds={rounds}");
    Ok(())
}

fn vsock_ping(cid: u32, port: u32, rounds: u32) -> Result<()> {
    let mut stream = vsock_connect(cid, port)?;
    ping(&mut stream, rounds)
}

fn uds_connect(uds: &str, port: u32) -> Result<()> {
    let mut stream = UnixStream::connect(uds).map_err(|e| format!("connect {uds}: {e}"))?;
    stream
        .write_all(format!("CONNECT {port}\n").as_bytes())
        .map_err(|e| format!("write: {e}"))?;
    print_all(stream)
}

fn unix_accept(path: &str) -> Result<UnixStream> {
    let _ = std::fs::remove_file(path);
    let listener = UnixListener::bind(path).map_err(|e| format!("bind {path}: {e}"))?;
    println!("uds: listening on {path}");
    std::io::stdout().flush().ok();
    let (stream, _) = listener.accept().map_err(|e| format!("accept: {e}"))?;
    Ok(stream)
}

fn uds_listen(path: &str, message: &str) -> Result<()> {
    let mut stream = unix_accept(path)?;
    println!("uds: accepted on {path}");
    stream
        .write_all(format!("{message}\n").as_bytes())
        .map_err(|e| format!("write: {e}"))
}

fn uds_echo(path: &str) -> Result<()> {
    let mut stream = unix_accept(path)?;
    let mut buf = [0u8; 4096];
    loop {
        let n = stream.read(&mut buf).map_err(|e| format!("read: {e}"))?;
        if n == 0 {
            return Ok(());
        }
        stream
            .write_all(&buf[..n])
            .map_err(|e| format!("write: {e}"))?;
    }
}

/// A buffer of `len` bytes aligned to 4 KiB (O_DIRECT wants one), inside `raw`.
fn aligned(raw: &mut Vec<u8>, len: usize) -> &mut [u8] {
    raw.resize(len + 4096, 0);
    let skew = raw.as_ptr().align_offset(4096);
    &mut raw[skew..skew + len]
}

/// MIB MiB in 1 MiB O_DIRECT reads or writes from offset 0 of DEV, then fsync: MB/s (MiB/s).
fn sequential(dev: &str, mib: u64, write: bool) -> Result<()> {
    use std::os::unix::fs::FileExt;
    let file = std::fs::OpenOptions::new()
        .read(true)
        .write(write)
        .custom_flags(libc::O_DIRECT)
        .open(dev)
        .map_err(|e| format!("open {dev}: {e}"))?;
    let mut raw = Vec::new();
    let buf = aligned(&mut raw, 1 << 20);
    buf.fill(0x5A);
    let start = Instant::now();
    for i in 0..mib {
        if write {
            file.write_all_at(buf, i << 20)
        } else {
            file.read_exact_at(buf, i << 20)
        }
        .map_err(|e| format!("{} at {i} MiB: {e}", if write { "write" } else { "read" }))?;
    }
    file.sync_all().map_err(|e| format!("fsync: {e}"))?;
    let mbs = mib as f64 / start.elapsed().as_secs_f64();
    let key = if write {
        "seq_write_mbs"
    } else {
        "seq_read_mbs"
    };
    println!("{key}={mbs:.1} mib={mib}");
    Ok(())
}

/// 4 KiB reads with O_DIRECT at random 4 KiB-aligned offsets of DEV, for SECONDS.
fn randread(dev: &str, seconds: u64) -> Result<()> {
    use std::os::unix::fs::FileExt;
    let file = std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_DIRECT)
        .open(dev)
        .map_err(|e| format!("open {dev}: {e}"))?;
    let size = std::fs::File::open(dev)
        .and_then(|mut f| std::io::Seek::seek(&mut f, std::io::SeekFrom::End(0)))
        .map_err(|e| format!("size of {dev}: {e}"))?;
    let blocks = size / 4096;
    if blocks == 0 {
        return Err(format!("{dev} is smaller than 4 KiB"));
    }
    let mut raw = Vec::new();
    let buf = aligned(&mut raw, 4096);
    let mut state: u64 = 0x9E37_79B9_7F4A_7C15;
    let (start, limit) = (Instant::now(), Duration::from_secs(seconds));
    let mut reads: u64 = 0;
    while start.elapsed() < limit {
        // xorshift64: any spread of offsets will do.
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        file.read_exact_at(buf, (state % blocks) * 4096)
            .map_err(|e| format!("pread: {e}"))?;
        reads += 1;
    }
    let iops = reads as f64 / start.elapsed().as_secs_f64();
    println!("randread_iops={iops:.0} reads={reads}");
    Ok(())
}

/// read(2)s of BS bytes from FILE for SECONDS (a character device such as /dev/hwrng: no
/// O_DIRECT, no seeking); fails when nothing came at all.
fn read_rate(file: &str, seconds: f64, bs: usize) -> Result<()> {
    let mut f = std::fs::File::open(file).map_err(|e| format!("open {file}: {e}"))?;
    let mut buf = vec![0u8; bs.max(1)];
    let (start, limit) = (Instant::now(), Duration::from_secs_f64(seconds));
    let (mut bytes, mut reads) = (0u64, 0u64);
    while start.elapsed() < limit {
        let n = f.read(&mut buf).map_err(|e| format!("read {file}: {e}"))?;
        if n == 0 {
            break;
        }
        bytes += n as u64;
        reads += 1;
    }
    if bytes == 0 {
        return Err(format!("{file}: no bytes"));
    }
    let rate = bytes as f64 / start.elapsed().as_secs_f64();
    println!("read_bytes_per_s={rate:.0} bytes={bytes} reads={reads}");
    Ok(())
}
