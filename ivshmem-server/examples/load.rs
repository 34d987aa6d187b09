//! Load benchmark for `ivshmem-server`, each result measured next to a floor taken in the same
//! run: a minimal in-process blocking broker (no epoll, no queues, no leave handling) doing the
//! same protocol work, so `*_ratio=` says what our server's design costs over the bare minimum.
//!
//! * `load connect --server BIN --peers 1000 --vectors 4`: `--peers` raw protocol clients
//!   (plain `UnixStream` + `protocol::recv_message`, no mapping) join one after the other; one
//!   drainer thread reads every client socket (epoll, non-blocking, fds closed at once) so no
//!   queue fills. Done when every client has every message the protocol implies:
//!   `peers*(3+vectors) + vectors*peers*(peers-1)`. Reports the wall time, the server's RSS with
//!   everyone joined (per peer: the growth over the idle server's RSS, divided by the peers), the
//!   same workload against the floor, then SIGTERM with everyone still connected (the server
//!   announces each departure) and the time to exit 0. `--rounds` storms (default 2) against
//!   each side, a fresh server or floor each time, alternating which goes first (server, floor,
//!   floor, server, ...): one storm takes 30-100 s on a small shared machine, and one storm of
//!   each, one after the other, measured how the machine's other load drifted as much as the
//!   server. The times are the means, the ratio the ratio of the means.
//! * `load cycles --server BIN --secs 3`: one client connects, reads its handshake, closes, over
//!   and over; cycles per second against the server and the floor, and the server's fd count
//!   before and after (no leak). Both run side by side and are measured in alternation,
//!   `--rounds` slices of `secs / rounds` each (server first in odd rounds, floor first in even
//!   ones), so that load from elsewhere on the machine hits both alike; the figures are the
//!   medians over the slices, the ratio the median of the rounds' ratios.
//!
//! Both also report CPU time (`schedstat`, nanoseconds): the broker's alone (the server
//! process, or the floor's thread) and the whole workload's (the broker and the client
//! threads), with `*_cpu_ratio=` lines in the same sense as the wall-time ratio. What other
//! processes take from the CPUs counts in the wall time, not here; where the two disagree, the
//! machine's load moved, not the server's cost.
//!
//! Output: `key=value` lines for scripts, `#` lines for humans. Every wait has a deadline, so a
//! broken server makes this fail with a message instead of hanging.

use std::fs::File;
use std::io::{self, Read};
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, OwnedFd};
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc;
use std::sync::Arc;
use std::thread::{self, JoinHandle};
use std::time::{Duration, Instant};

use anyhow::{anyhow, bail, Context, Result};
use clap::{Parser, Subcommand};
use nix::sys::epoll::{Epoll, EpollCreateFlags, EpollEvent, EpollFlags, EpollTimeout};
use nix::sys::eventfd::{EfdFlags, EventFd};
use nix::sys::signal::{kill, Signal};
use nix::sys::socket::{
    connect, setsockopt, socket, sockopt, AddressFamily, SockFlag, SockType, UnixAddr,
};
use nix::sys::time::{TimeVal, TimeValLike};
use nix::unistd::Pid;
use protocol::fd_limit::raise_fd_limit;
use protocol::fdpass::{recv_message, send_message_all, Received};
use protocol::server::new_peer_sequence;
use protocol::wire::{MAX_PEER_ID, MAX_VECTORS, PROTOCOL_VERSION, SHM_MESSAGE};

/// How long the server may take to exit after SIGTERM.
const SHUTDOWN_LIMIT: Duration = Duration::from_secs(10);
/// How long the server may take to create its socket.
const STARTUP_LIMIT: Duration = Duration::from_secs(10);
/// Deadline for any single connect or read that should be quick.
const IO_TIMEOUT: Duration = Duration::from_secs(10);

#[derive(Parser)]
#[command(about = "Load benchmark for ivshmem-server against an in-process floor broker")]
struct Cli {
    #[command(subcommand)]
    command: Workload,
}

#[derive(Subcommand)]
enum Workload {
    /// Many peers join; time until everyone knows everyone, server RSS, shutdown time.
    Connect {
        /// The ivshmem-server binary.
        #[arg(long)]
        server: PathBuf,
        #[arg(long, default_value_t = 1000)]
        peers: usize,
        #[arg(long, default_value_t = 4)]
        vectors: u32,
        /// Fail if the expected messages have not all arrived within this many seconds.
        #[arg(long, default_value_t = 120)]
        timeout_secs: u64,
        /// Storms against each side, alternating which goes first (server, floor, floor,
        /// server, ...); the figures are the means.
        #[arg(long, default_value_t = 2)]
        rounds: u32,
    },
    /// One peer joins and leaves over and over; cycles per second and the server's fd count.
    Cycles {
        /// The ivshmem-server binary.
        #[arg(long)]
        server: PathBuf,
        /// Measured duration of each run, in seconds.
        #[arg(long, default_value_t = 3.0)]
        secs: f64,
        #[arg(long, default_value_t = 4)]
        vectors: u32,
        /// Unmeasured cycles before each run.
        #[arg(long, default_value_t = 50)]
        warmup: u32,
        /// Alternating measurement slices per side (`--secs` is split among them).
        #[arg(long, default_value_t = 6)]
        rounds: u32,
        /// An extra argument for the server (repeatable), e.g. `--server-arg=--state-table=0`.
        #[arg(long = "server-arg", allow_hyphen_values = true)]
        server_args: Vec<String>,
    },
}

fn main() {
    let cli = Cli::parse();
    let result = match cli.command {
        Workload::Connect {
            server,
            peers,
            vectors,
            timeout_secs,
            rounds,
        } => connect_benchmark(
            &server,
            peers,
            vectors,
            Duration::from_secs(timeout_secs),
            rounds,
        ),
        Workload::Cycles {
            server,
            secs,
            vectors,
            warmup,
            rounds,
            server_args,
        } => cycles_benchmark(&server, secs, vectors, warmup, rounds, &server_args),
    };
    if let Err(e) = result {
        eprintln!("load: error: {e:#}");
        std::process::exit(1);
    }
}

// ---------------------------------------------------------------------------------------------
// connect

fn connect_benchmark(
    server_bin: &Path,
    peers: usize,
    vectors: u32,
    timeout: Duration,
    rounds: u32,
) -> Result<()> {
    if peers == 0 || peers > usize::from(MAX_PEER_ID) + 1 {
        bail!(
            "--peers must be between 1 and {}",
            usize::from(MAX_PEER_ID) + 1
        );
    }
    if rounds == 0 || rounds > 100 {
        bail!("--rounds must be between 1 and 100");
    }
    check_vectors(vectors)?;
    let fd_limit = raise_fd_limit().context("raise RLIMIT_NOFILE")?;
    // The floor runs in this process: its sockets and eventfds plus our client sockets.
    let needed = peers as u64 * (2 + u64::from(vectors)) + 64;
    if needed > fd_limit {
        bail!("{peers} peers with {vectors} vectors need about {needed} fds here, the limit is {fd_limit}");
    }
    let expected = expected_messages(peers, vectors);
    println!(
        "# connect: {peers} peers, {vectors} vectors, {expected} messages in all; {rounds} \
         round(s), the server first in odd rounds and the floor first in even ones"
    );
    println!("peers={peers}");
    println!("vectors={vectors}");
    println!("expected_messages={expected}");

    let scratch = Scratch::new()?;
    let (mut ours, mut floor_runs) = (Vec::new(), Vec::new());
    let mut first_server = None;
    for round in 0..rounds {
        for server_turn in [round % 2 == 0, round % 2 != 0] {
            if server_turn {
                let run = connect_server_once(server_bin, peers, vectors, timeout, &scratch)?;
                println!(
                    "# round {}: server: everyone joined in {:.1} ms (CPU: server {:.1} ms, \
                     clients {:.1} ms)",
                    round + 1,
                    ms(run.storm.elapsed),
                    ms(run.broker_cpu),
                    ms(run.storm.clients_cpu)
                );
                ours.push((run.storm.elapsed, run.broker_cpu, run.storm.clients_cpu));
                first_server.get_or_insert(run);
            } else {
                let (storm, broker_cpu) = connect_floor_once(peers, vectors, timeout, &scratch)?;
                println!(
                    "# round {}: floor: everyone joined in {:.1} ms (CPU: broker {:.1} ms, \
                     clients {:.1} ms)",
                    round + 1,
                    ms(storm.elapsed),
                    ms(broker_cpu),
                    ms(storm.clients_cpu)
                );
                floor_runs.push((storm.elapsed, broker_cpu, storm.clients_cpu));
            }
        }
    }
    let first = first_server.ok_or_else(|| anyhow!("no server round ran"))?;
    println!(
        "# server: RSS {} KiB with everyone joined ({:.1} KiB per peer over {} KiB at start); \
         exited 0 {:.1} ms after SIGTERM; clients saw {} departure notices (first round)",
        first.rss,
        first.rss_per_peer,
        first.rss_start,
        ms(first.shutdown),
        first.storm.leave_notices
    );
    // Means; with the two sides alternated (S F F S ...) a load that drifts steadily during the
    // run weighs on both alike.
    let mean = |runs: &[(Duration, Duration, Duration)],
                pick: fn(&(Duration, Duration, Duration)) -> Duration| {
        runs.iter().map(pick).sum::<Duration>().as_secs_f64() / runs.len() as f64
    };
    let (wall, floor_wall) = (mean(&ours, |r| r.0), mean(&floor_runs, |r| r.0));
    let (broker, floor_broker) = (mean(&ours, |r| r.1), mean(&floor_runs, |r| r.1));
    let (all, floor_all) = (mean(&ours, |r| r.1 + r.2), mean(&floor_runs, |r| r.1 + r.2));
    let list = |runs: &[(Duration, Duration, Duration)]| {
        runs.iter()
            .map(|r| format!("{:.1}", ms(r.0)))
            .collect::<Vec<_>>()
            .join(",")
    };
    println!("connect_ms={:.1}", wall * 1000.0);
    println!("connect_ms_rounds={}", list(&ours));
    println!("server_rss_start_kib={}", first.rss_start);
    println!("server_rss_kib={}", first.rss);
    println!("server_rss_per_peer_kib={:.2}", first.rss_per_peer);
    println!("shutdown_ms={:.1}", ms(first.shutdown));
    println!("shutdown_leave_notices={}", first.storm.leave_notices);
    println!("floor_connect_ms={:.1}", floor_wall * 1000.0);
    println!("floor_connect_ms_rounds={}", list(&floor_runs));
    println!("rounds={rounds}");
    println!("connect_ratio={:.3}", wall / floor_wall);
    // CPU time: the broker alone, and the broker with both client threads (the whole
    // workload); what other processes on the machine take does not count here.
    println!("server_cpu_ms={:.1}", broker * 1000.0);
    println!("floor_broker_cpu_ms={:.1}", floor_broker * 1000.0);
    println!("broker_cpu_ratio={:.3}", broker / floor_broker);
    println!("connect_cpu_ms={:.1}", all * 1000.0);
    println!("floor_connect_cpu_ms={:.1}", floor_all * 1000.0);
    println!("connect_cpu_ratio={:.3}", all / floor_all);
    Ok(())
}

/// One connect storm against a fresh server process.
struct ServerStorm {
    storm: ConnectOutcome,
    /// The server's CPU time from serving (after the probe) to everyone joined.
    broker_cpu: Duration,
    rss_start: u64,
    rss: u64,
    rss_per_peer: f64,
    shutdown: Duration,
}

fn connect_server_once(
    server_bin: &Path,
    peers: usize,
    vectors: u32,
    timeout: Duration,
    scratch: &Scratch,
) -> Result<ServerStorm> {
    let socket = scratch.path("server.sock");
    let _ = std::fs::remove_file(&socket);
    let mut server = ServerProcess::start(server_bin, &socket, vectors, scratch, &[])?;
    let rss_start = server.rss_kib()?;
    let cpu_start = server.cpu()?;
    let mut rss = 0;
    let mut broker_cpu = Duration::ZERO;
    let mut shutdown = None;
    let storm = run_connect(&socket, peers, vectors, timeout, |joined| {
        broker_cpu = server.cpu()?.saturating_sub(cpu_start);
        rss = server.rss_kib()?;
        // Shut down with everyone still connected: the server announces every departure.
        joined.shutting_down.store(true, Ordering::SeqCst);
        shutdown = Some(server.terminate()?);
        Ok(())
    })
    .with_context(|| format!("connect workload against the server{}", server.log_tail()))?;
    let shutdown = shutdown.ok_or_else(|| anyhow!("server was not shut down"))?;
    // Per peer: what the peers added on top of the idle server.
    let rss_per_peer = rss.saturating_sub(rss_start) as f64 / peers as f64;
    Ok(ServerStorm {
        storm,
        broker_cpu,
        rss_start,
        rss,
        rss_per_peer,
        shutdown,
    })
}

/// One connect storm against a fresh floor broker; with the broker thread's CPU time.
fn connect_floor_once(
    peers: usize,
    vectors: u32,
    timeout: Duration,
    scratch: &Scratch,
) -> Result<(ConnectOutcome, Duration)> {
    let floor_socket = scratch.path("floor.sock");
    let _ = std::fs::remove_file(&floor_socket);
    let floor = FloorBroker::start(&floor_socket, vectors, FloorMode::Connect { peers })?;
    let cpu_start = floor.cpu()?;
    let mut broker_cpu = Duration::ZERO;
    let floor_run = run_connect(&floor_socket, peers, vectors, timeout, |_| {
        broker_cpu = floor.cpu()?.saturating_sub(cpu_start);
        Ok(())
    })
    .context("connect workload against the floor broker");
    let floor_end = floor.stop();
    let floor_run = floor_run?;
    floor_end.context("floor broker")?;
    Ok((floor_run, broker_cpu))
}

/// Everything `peers` clients receive in all: each its handshake (version, id, shared memory)
/// and its own vectors, and each pair learns of the other once.
fn expected_messages(peers: usize, vectors: u32) -> u64 {
    let (p, v) = (peers as u64, u64::from(vectors));
    p * (3 + v) + v * p * (p - 1)
}

/// Messages one client receives while all `peers` join: its handshake, every peer's vectors.
fn expected_per_client(peers: usize, vectors: u32) -> u64 {
    3 + u64::from(vectors) * peers as u64
}

struct ConnectOutcome {
    /// From the first connect to the last expected message.
    elapsed: Duration,
    /// CPU time of this side's two client threads over `elapsed`: the connecting thread and
    /// the drainer.
    clients_cpu: Duration,
    /// Departure notices received after `shutting_down` was set.
    leave_notices: u64,
}

/// The drainer's word that every expected message arrived.
struct Joined {
    at: Instant,
    /// The drainer's CPU time until then.
    drainer_cpu: Duration,
}

/// Shared between the connecting thread and the drainer.
struct DrainShared {
    /// Set before the server is asked to stop: from then on departure notices and EOF are fine.
    shutting_down: AtomicBool,
    /// Set to end the drainer.
    stop: AtomicBool,
}

/// Connects `peers` clients to `socket` one after the other while a drainer thread reads them
/// all; once every expected message has arrived, calls `when_joined` (clients still connected,
/// drainer still reading) and then disconnects everyone.
fn run_connect(
    socket: &Path,
    peers: usize,
    vectors: u32,
    timeout: Duration,
    when_joined: impl FnOnce(&DrainShared) -> Result<()>,
) -> Result<ConnectOutcome> {
    let epoll = Arc::new(Epoll::new(EpollCreateFlags::EPOLL_CLOEXEC).context("epoll_create")?);
    let shared = Arc::new(DrainShared {
        shutting_down: AtomicBool::new(false),
        stop: AtomicBool::new(false),
    });
    let (stream_tx, stream_rx) = mpsc::channel::<UnixStream>();
    let (joined_tx, joined_rx) = mpsc::channel::<Result<Joined>>();
    let drainer = {
        let epoll = Arc::clone(&epoll);
        let shared = Arc::clone(&shared);
        thread::Builder::new()
            .name("drainer".into())
            .spawn(move || Drainer::new(peers, vectors, stream_rx, joined_tx).run(&epoll, &shared))
            .context("cannot start the drainer thread")?
    };
    let stop_drainer = |drainer: JoinHandle<Result<u64>>| -> Result<u64> {
        shared.stop.store(true, Ordering::SeqCst);
        drainer
            .join()
            .map_err(|_| anyhow!("the drainer thread panicked"))?
    };

    let start = Instant::now();
    let main_cpu_start = thread_cpu()?;
    for index in 0..peers {
        if start.elapsed() > timeout {
            let drained = stop_drainer(drainer);
            bail!(
                "only {index} of {peers} clients connected within {} s{}",
                timeout.as_secs(),
                drained
                    .err()
                    .map(|e| format!(": {e:#}"))
                    .unwrap_or_default()
            );
        }
        let stream = match connect_client(socket) {
            Ok(s) => s,
            Err(e) => {
                let drained = stop_drainer(drainer);
                let e = e.context(format!("client {index} cannot connect"));
                return Err(match drained {
                    Err(d) => e.context(format!("{d:#}")),
                    Ok(_) => e,
                });
            }
        };
        stream.set_nonblocking(true)?;
        epoll
            .add(&stream, EpollEvent::new(EpollFlags::EPOLLIN, index as u64))
            .context("epoll_ctl ADD")?;
        if stream_tx.send(stream).is_err() {
            // The drainer stopped early: its error says why.
            stop_drainer(drainer)?;
            bail!("the drainer stopped before all clients connected");
        }
    }
    let finished = match joined_rx.recv_timeout(timeout.saturating_sub(start.elapsed())) {
        Ok(Ok(joined)) => joined,
        Ok(Err(e)) => {
            let _ = stop_drainer(drainer);
            return Err(e);
        }
        Err(_) => {
            // Timed out (or the drainer died): stop it; its error has the counts.
            let drained = stop_drainer(drainer);
            bail!(
                "not every expected message arrived within {} s{}",
                timeout.as_secs(),
                drained
                    .err()
                    .map(|e| format!(": {e:#}"))
                    .unwrap_or_default()
            );
        }
    };
    let elapsed = finished.at.duration_since(start);
    let clients_cpu = finished.drainer_cpu + thread_cpu()?.saturating_sub(main_cpu_start);
    let hook = when_joined(&shared);
    if shared.shutting_down.load(Ordering::SeqCst) {
        // Let the drainer read the departure notices up to every client's EOF.
        let deadline = Instant::now() + IO_TIMEOUT;
        while !drainer.is_finished() && Instant::now() < deadline {
            thread::sleep(Duration::from_millis(5));
        }
    }
    let drained = stop_drainer(drainer);
    hook?;
    Ok(ConnectOutcome {
        elapsed,
        clients_cpu,
        leave_notices: drained?,
    })
}

/// Reads every client socket until told to stop, checking what arrives against the protocol.
struct Drainer {
    peers: usize,
    per_client: u64,
    total: u64,
    received: u64,
    /// Messages each client has received so far.
    counts: Vec<u64>,
    clients: Vec<Option<UnixStream>>,
    incoming: mpsc::Receiver<UnixStream>,
    joined: Option<mpsc::Sender<Result<Joined>>>,
    /// This thread's CPU time when it started.
    cpu_start: Duration,
    leave_notices: u64,
    closed: usize,
}

impl Drainer {
    fn new(
        peers: usize,
        vectors: u32,
        incoming: mpsc::Receiver<UnixStream>,
        joined: mpsc::Sender<Result<Joined>>,
    ) -> Self {
        Drainer {
            peers,
            per_client: expected_per_client(peers, vectors),
            total: expected_messages(peers, vectors),
            received: 0,
            counts: vec![0; peers],
            clients: Vec::with_capacity(peers),
            incoming,
            joined: Some(joined),
            cpu_start: Duration::ZERO,
            leave_notices: 0,
            closed: 0,
        }
    }

    /// Returns the number of departure notices seen during shutdown. An error is also sent on
    /// the `joined` channel when it happens before everyone joined.
    fn run(mut self, epoll: &Epoll, shared: &DrainShared) -> Result<u64> {
        let result = thread_cpu().and_then(|cpu| {
            self.cpu_start = cpu;
            self.drain(epoll, shared)
        });
        if let (Err(e), Some(joined)) = (&result, self.joined.take()) {
            let _ = joined.send(Err(anyhow!("{e:#}")));
        }
        result.map(|()| self.leave_notices)
    }

    fn drain(&mut self, epoll: &Epoll, shared: &DrainShared) -> Result<()> {
        let mut events = vec![EpollEvent::empty(); 1024];
        while !shared.stop.load(Ordering::SeqCst) {
            let n = match epoll.wait(&mut events, EpollTimeout::from(50u16)) {
                Ok(n) => n,
                Err(nix::errno::Errno::EINTR) => continue,
                Err(e) => return Err(e).context("epoll_wait"),
            };
            for event in &events[..n] {
                let index = usize::try_from(event.data()).unwrap_or(usize::MAX);
                self.read_client(index, epoll, shared)?;
            }
            if self.closed == self.peers {
                break;
            }
        }
        if self.joined.is_some() {
            bail!("stopped before everyone joined: {}", self.progress());
        }
        Ok(())
    }

    fn progress(&self) -> String {
        let done = self
            .counts
            .iter()
            .filter(|&&c| c >= self.per_client)
            .count();
        let fewest = self.counts.iter().copied().min().unwrap_or(0);
        format!(
            "{} of {} messages arrived; {done} of {} clients complete; {} connected; the least \
             served client has {fewest} of {}",
            self.received,
            self.total,
            self.peers,
            self.clients.len(),
            self.per_client
        )
    }

    /// Reads client `index` until it would block.
    fn read_client(&mut self, index: usize, epoll: &Epoll, shared: &DrainShared) -> Result<()> {
        if index >= self.peers {
            bail!("epoll reported unknown client {index}");
        }
        // The connecting thread registers a client with epoll just before handing it over.
        while self.clients.len() <= index {
            let stream = self
                .incoming
                .recv_timeout(IO_TIMEOUT)
                .map_err(|_| anyhow!("client {index} was never handed to the drainer"))?;
            self.clients.push(Some(stream));
        }
        let Some(stream) = &self.clients[index] else {
            return Ok(()); // closed already; a stale event
        };
        let shutting_down = || shared.shutting_down.load(Ordering::SeqCst);
        loop {
            let fd = stream.as_fd();
            match recv_message(fd) {
                Ok(Received::Message { value, fd }) => {
                    let has_fd = fd.is_some();
                    drop(fd);
                    let count = self.counts[index];
                    if count >= self.per_client {
                        if !has_fd && shutting_down() {
                            self.leave_notices += 1;
                            continue;
                        }
                        bail!(
                            "client {index} got an unexpected message {value} (fd: {has_fd}) \
                             after all {} expected",
                            self.per_client
                        );
                    }
                    check_join_message(index, count, value, has_fd)?;
                    self.counts[index] += 1;
                    self.received += 1;
                    if self.received == self.total {
                        if let Some(joined) = self.joined.take() {
                            let at = Instant::now();
                            let cpu = thread_cpu()?.saturating_sub(self.cpu_start);
                            let _ = joined.send(Ok(Joined {
                                at,
                                drainer_cpu: cpu,
                            }));
                        }
                    }
                }
                Ok(Received::Eof) => {
                    if !shutting_down() {
                        bail!(
                            "the server closed client {index} after {} messages; {}",
                            self.counts[index],
                            self.progress()
                        );
                    }
                    let _ = epoll.delete(stream);
                    self.clients[index] = None;
                    self.closed += 1;
                    return Ok(());
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Ok(()),
                Err(e) if shutting_down() => {
                    // A reset during shutdown is the server going away.
                    let _ = (epoll.delete(stream), e);
                    self.clients[index] = None;
                    self.closed += 1;
                    return Ok(());
                }
                Err(e) => {
                    return Err(e).with_context(|| format!("reading client {index}"));
                }
            }
        }
    }
}

/// Checks the `count`-th message a client receives while peers join: version, its id, the
/// shared memory, then peer vectors (a peer id with an fd); a leave (no fd) is wrong here.
fn check_join_message(client: usize, count: u64, value: i64, has_fd: bool) -> Result<()> {
    let ok = match count {
        0 => value == PROTOCOL_VERSION && !has_fd,
        1 => (0..=i64::from(MAX_PEER_ID)).contains(&value) && !has_fd,
        2 => value == SHM_MESSAGE && has_fd,
        _ => (0..=i64::from(MAX_PEER_ID)).contains(&value) && has_fd,
    };
    if !ok {
        bail!("client {client}: message {count} is {value} (fd: {has_fd}), not what the protocol says");
    }
    Ok(())
}

// ---------------------------------------------------------------------------------------------
// cycles

fn cycles_benchmark(
    server_bin: &Path,
    secs: f64,
    vectors: u32,
    warmup: u32,
    rounds: u32,
    server_args: &[String],
) -> Result<()> {
    if !(secs.is_finite() && secs > 0.0 && secs <= 3600.0) {
        bail!("--secs must be between 0 and 3600");
    }
    if rounds == 0 || rounds > 1000 {
        bail!("--rounds must be between 1 and 1000");
    }
    check_vectors(vectors)?;
    raise_fd_limit().context("raise RLIMIT_NOFILE")?;
    let slice = Duration::from_secs_f64(secs / f64::from(rounds));
    println!(
        "# cycles: one peer joins and leaves for {secs} s on each side, in {rounds} alternating \
         slices, {vectors} vectors, {warmup} warm-up cycles"
    );
    let scratch = Scratch::new()?;

    let socket = scratch.path("server.sock");
    let mut server = ServerProcess::start(server_bin, &socket, vectors, &scratch, server_args)?;
    let fds_before = server.fd_count()?;
    let floor_socket = scratch.path("floor.sock");
    let floor = FloorBroker::start(&floor_socket, vectors, FloorMode::Cycles)?;
    let measured = alternate_cycles(
        (&socket, &server),
        (&floor_socket, &floor),
        vectors,
        warmup,
        rounds,
        slice,
    );
    let floor_end = floor.stop();
    let (ours, floor_runs) =
        measured.with_context(|| format!("cycles against the server{}", server.log_tail()))?;
    floor_end.context("floor broker")?;
    // The last departure is handled asynchronously: give the server a moment to close it.
    let settle = Instant::now() + Duration::from_secs(2);
    let mut fds_after = server.fd_count()?;
    while fds_after > fds_before && Instant::now() < settle {
        thread::sleep(Duration::from_millis(10));
        fds_after = server.fd_count()?;
    }
    let shutdown = server.terminate()?;

    let rate = |runs: &[CyclesOutcome]| median(runs.iter().map(CyclesOutcome::per_sec).collect());
    let (ours_rate, floor_rate) = (rate(&ours), rate(&floor_runs));
    let ratio = median(
        ours.iter()
            .zip(&floor_runs)
            .map(|(a, b)| a.per_sec() / b.per_sec().max(f64::MIN_POSITIVE))
            .collect(),
    );
    let total = |runs: &[CyclesOutcome]| runs.iter().map(|r| r.cycles).sum::<u64>();
    let stale: u64 = ours.iter().map(|r| r.stale_handshakes).sum();
    let spread = |runs: &[CyclesOutcome]| {
        let rates: Vec<f64> = runs.iter().map(CyclesOutcome::per_sec).collect();
        let low = rates.iter().copied().fold(f64::INFINITY, f64::min);
        let high = rates.iter().copied().fold(0.0, f64::max);
        format!("{low:.0}-{high:.0}")
    };
    println!(
        "# server: {ours_rate:.0} cycles/s, median of {rounds} (range {}; {} cycles; {stale} \
         handshakes also listed a previous peer); fds {fds_before} -> {fds_after}",
        spread(&ours),
        total(&ours)
    );
    println!(
        "# floor: {floor_rate:.0} cycles/s, median of {rounds} (range {}; {} cycles)",
        spread(&floor_runs),
        total(&floor_runs)
    );

    println!("cycles={}", total(&ours));
    println!("cycles_per_sec={ours_rate:.1}");
    println!("stale_handshakes={stale}");
    println!("server_fds_before={fds_before}");
    println!("server_fds_after={fds_after}");
    println!("shutdown_ms={:.1}", ms(shutdown));
    println!("floor_cycles={}", total(&floor_runs));
    println!("floor_cycles_per_sec={floor_rate:.1}");
    println!("rounds={rounds}");
    println!("cycles_ratio={ratio:.3}");
    // CPU time per cycle over all slices: the broker alone, and the broker with the client
    // thread (the whole workload); what other processes on the machine take does not count
    // here. The ratio is the floor's over ours, a rate ratio like cycles_ratio.
    let per_cycle = |runs: &[CyclesOutcome], pick: fn(&CyclesOutcome) -> Duration| {
        runs.iter().map(pick).sum::<Duration>().as_secs_f64() * 1e6 / total(runs).max(1) as f64
    };
    let (broker, floor_broker) = (
        per_cycle(&ours, |r| r.broker_cpu),
        per_cycle(&floor_runs, |r| r.broker_cpu),
    );
    let (all, floor_all) = (
        per_cycle(&ours, |r| r.broker_cpu + r.client_cpu),
        per_cycle(&floor_runs, |r| r.broker_cpu + r.client_cpu),
    );
    println!(
        "# CPU per cycle: server {broker:.1} µs (with the client {all:.1} µs), floor \
         {floor_broker:.1} µs (with the client {floor_all:.1} µs)"
    );
    println!("server_cpu_us_per_cycle={broker:.2}");
    println!("floor_broker_cpu_us_per_cycle={floor_broker:.2}");
    println!("broker_cpu_ratio={:.3}", floor_broker / broker);
    println!("cycle_cpu_us={all:.2}");
    println!("floor_cycle_cpu_us={floor_all:.2}");
    println!("cycles_cpu_ratio={:.3}", floor_all / all);
    if fds_after != fds_before {
        bail!("the server's fd count went from {fds_before} to {fds_after}: a leak");
    }
    Ok(())
}

/// `rounds` slices of `slice` against each broker, alternating which goes first; each warmed
/// up once before the first.
fn alternate_cycles(
    (server, server_process): (&Path, &ServerProcess),
    (floor, floor_broker): (&Path, &FloorBroker),
    vectors: u32,
    warmup: u32,
    rounds: u32,
    slice: Duration,
) -> Result<(Vec<CyclesOutcome>, Vec<CyclesOutcome>)> {
    run_cycles(server, vectors, warmup, Duration::ZERO).context("warming up the server")?;
    run_cycles(floor, vectors, warmup, Duration::ZERO).context("warming up the floor broker")?;
    let (mut ours, mut floor_runs) = (Vec::new(), Vec::new());
    for round in 0..rounds {
        for server_turn in [round % 2 == 0, round % 2 != 0] {
            // The CPU time of the broker and of this (the client) thread over the slice; the
            // other broker is idle meanwhile.
            let broker_cpu = || {
                if server_turn {
                    server_process.cpu()
                } else {
                    floor_broker.cpu()
                }
            };
            let (broker_start, client_start) = (broker_cpu()?, thread_cpu()?);
            let mut run = if server_turn {
                run_cycles(server, vectors, 0, slice).context("server")?
            } else {
                run_cycles(floor, vectors, 0, slice).context("floor broker")?
            };
            run.broker_cpu = broker_cpu()?.saturating_sub(broker_start);
            run.client_cpu = thread_cpu()?.saturating_sub(client_start);
            if server_turn {
                ours.push(run);
            } else {
                floor_runs.push(run);
            }
        }
    }
    Ok((ours, floor_runs))
}

fn median(mut values: Vec<f64>) -> f64 {
    values.sort_by(f64::total_cmp);
    match values.len() {
        0 => 0.0,
        n if n % 2 == 1 => values[n / 2],
        n => (values[n / 2 - 1] + values[n / 2]) / 2.0,
    }
}

struct CyclesOutcome {
    cycles: u64,
    elapsed: Duration,
    /// CPU time of the broker (server process or floor thread) over the slice.
    broker_cpu: Duration,
    /// CPU time of the client thread over the slice.
    client_cpu: Duration,
    /// Handshakes that also listed an earlier peer whose departure the server had not yet
    /// processed (allowed: leaving is asynchronous).
    stale_handshakes: u64,
}

impl CyclesOutcome {
    fn per_sec(&self) -> f64 {
        self.cycles as f64 / self.elapsed.as_secs_f64()
    }
}

fn run_cycles(
    socket: &Path,
    vectors: u32,
    warmup: u32,
    duration: Duration,
) -> Result<CyclesOutcome> {
    for i in 0..warmup {
        one_cycle(socket, vectors).with_context(|| format!("warm-up cycle {i}"))?;
    }
    let start = Instant::now();
    let mut cycles = 0;
    let mut stale_handshakes = 0;
    while start.elapsed() < duration {
        if one_cycle(socket, vectors).with_context(|| format!("cycle {cycles}"))? {
            stale_handshakes += 1;
        }
        cycles += 1;
    }
    Ok(CyclesOutcome {
        cycles,
        elapsed: start.elapsed(),
        broker_cpu: Duration::ZERO,
        client_cpu: Duration::ZERO,
        stale_handshakes,
    })
}

/// Connects, reads the handshake up to the last of its own vectors, disconnects. Returns
/// whether the handshake also listed other peers (a previous client not yet gone).
fn one_cycle(socket: &Path, vectors: u32) -> Result<bool> {
    let stream = connect_client(socket)?;
    stream.set_read_timeout(Some(IO_TIMEOUT))?;
    let mut own_id = None;
    let mut own_vectors = 0;
    let mut others = false;
    let mut count = 0u64;
    while own_vectors < vectors {
        let (value, has_fd) = match recv_message(stream.as_fd()) {
            Ok(Received::Message { value, fd }) => (value, fd.is_some()),
            Ok(Received::Eof) => bail!("closed by the server after {count} messages"),
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                bail!("no message within {} s after {count}", IO_TIMEOUT.as_secs())
            }
            Err(e) => return Err(e).context("reading the handshake"),
        };
        if count < 3 {
            check_join_message(0, count, value, has_fd)?;
            if count == 1 {
                own_id = Some(value);
            }
        } else if Some(value) == own_id {
            if !has_fd {
                bail!("the server announced our own departure ({value})");
            }
            own_vectors += 1;
        } else if (0..=i64::from(MAX_PEER_ID)).contains(&value) {
            others = true; // an earlier peer's vectors or its departure
        } else {
            bail!("message {count} is {value}, not a peer id");
        }
        count += 1;
        // Every earlier peer whose departure the server has not processed yet may be listed
        // (vectors, then its leave): under `taskset -c 0` a starved server can be dozens behind.
        if count > 3 + (u64::from(MAX_PEER_ID) + 1) * (u64::from(vectors) + 1) {
            bail!("handshake too long: {count} messages without all own vectors");
        }
    }
    Ok(others)
}

// ---------------------------------------------------------------------------------------------
// the floor broker

#[derive(Clone, Copy)]
enum FloorMode {
    /// Accept `peers` clients, introduce each to all, keep everything open until stopped.
    Connect { peers: usize },
    /// Accept, handshake, wait for the client to close, close; repeat until stopped.
    Cycles,
}

/// The bare minimum a broker must do, blocking, in one thread of this process.
struct FloorBroker {
    thread: JoinHandle<Result<()>>,
    stop: Arc<AtomicBool>,
    /// The broker thread's id, for its CPU time.
    tid: i32,
}

struct FloorPeer {
    id: u16,
    stream: UnixStream,
    vectors: Vec<OwnedFd>,
}

impl FloorBroker {
    fn start(socket: &Path, vectors: u32, mode: FloorMode) -> Result<Self> {
        let listener = UnixListener::bind(socket)
            .with_context(|| format!("cannot bind the floor socket {}", socket.display()))?;
        // Non-blocking accept, polled, so that a stop request is always noticed.
        listener.set_nonblocking(true)?;
        let shm = memfd(1 << 20)?;
        let stop = Arc::new(AtomicBool::new(false));
        let (tid_tx, tid_rx) = mpsc::channel();
        let thread = {
            let stop = Arc::clone(&stop);
            thread::Builder::new()
                .name("floor".into())
                .spawn(move || {
                    // SAFETY: gettid has no preconditions.
                    let _ = tid_tx.send(unsafe { libc::gettid() });
                    match mode {
                        FloorMode::Connect { peers } => {
                            floor_connect(&listener, &shm, vectors, peers, &stop)
                        }
                        FloorMode::Cycles => floor_cycles(&listener, &shm, vectors, &stop),
                    }
                })
                .context("cannot start the floor thread")?
        };
        let tid = tid_rx
            .recv_timeout(STARTUP_LIMIT)
            .map_err(|_| anyhow!("the floor thread did not start"))?;
        Ok(FloorBroker { thread, stop, tid })
    }

    /// CPU time the broker thread has run so far.
    fn cpu(&self) -> Result<Duration> {
        task_cpu(&format!("/proc/self/task/{}/schedstat", self.tid))
    }

    fn stop(self) -> Result<()> {
        self.stop.store(true, Ordering::SeqCst);
        self.thread
            .join()
            .map_err(|_| anyhow!("the floor thread panicked"))?
    }
}

/// Accepts one connection, or `None` once `stop` is set.
fn floor_accept(listener: &UnixListener, stop: &AtomicBool) -> Result<Option<UnixStream>> {
    loop {
        if stop.load(Ordering::SeqCst) {
            return Ok(None);
        }
        match listener.accept() {
            Ok((stream, _)) => {
                stream.set_nonblocking(false)?;
                return Ok(Some(stream));
            }
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                poll_readable(listener.as_fd(), 50)?;
            }
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e).context("accept"),
        }
    }
}

fn floor_connect(
    listener: &UnixListener,
    shm: &OwnedFd,
    vectors: u32,
    peers: usize,
    stop: &AtomicBool,
) -> Result<()> {
    let mut joined: Vec<FloorPeer> = Vec::with_capacity(peers);
    while joined.len() < peers {
        let Some(stream) = floor_accept(listener, stop)? else {
            return Ok(());
        };
        let id = u16::try_from(joined.len()).context("too many peers for 16-bit ids")?;
        let own = eventfds(vectors)?;
        let own_borrowed: Vec<BorrowedFd<'_>> = own.iter().map(|f| f.as_fd()).collect();
        // Join notices to everyone already there, then the newcomer's whole sequence.
        for peer in &joined {
            for fd in &own_borrowed {
                send_message_all(peer.stream.as_fd(), i64::from(id), Some(*fd))
                    .with_context(|| format!("join notice to peer {}", peer.id))?;
            }
        }
        let existing: Vec<(u16, Vec<BorrowedFd<'_>>)> = joined
            .iter()
            .map(|p| (p.id, p.vectors.iter().map(|f| f.as_fd()).collect()))
            .collect();
        let sequence = new_peer_sequence(
            id,
            shm.as_fd(),
            &own_borrowed,
            existing.iter().map(|(id, v)| (*id, &v[..])),
        );
        for message in sequence {
            send_message_all(stream.as_fd(), message.value, message.fd)
                .with_context(|| format!("handshake to peer {id}"))?;
        }
        drop(existing);
        drop(own_borrowed);
        joined.push(FloorPeer {
            id,
            stream,
            vectors: own,
        });
    }
    // Keep every connection open until the measurement is over.
    while !stop.load(Ordering::SeqCst) {
        thread::sleep(Duration::from_millis(10));
    }
    Ok(())
}

fn floor_cycles(
    listener: &UnixListener,
    shm: &OwnedFd,
    vectors: u32,
    stop: &AtomicBool,
) -> Result<()> {
    let mut next_id: u16 = 0;
    while let Some(mut stream) = floor_accept(listener, stop)? {
        let id = next_id;
        next_id = next_id.wrapping_add(1);
        let own = eventfds(vectors)?;
        let own_borrowed: Vec<BorrowedFd<'_>> = own.iter().map(|f| f.as_fd()).collect();
        for message in new_peer_sequence(id, shm.as_fd(), &own_borrowed, []) {
            send_message_all(stream.as_fd(), message.value, message.fd)
                .with_context(|| format!("handshake to peer {id}"))?;
        }
        // Wait for the client to close (read returns 0); time out to notice a stop request.
        stream.set_read_timeout(Some(Duration::from_millis(100)))?;
        let mut byte = [0u8; 1];
        loop {
            match stream.read(&mut byte) {
                Ok(0) => break,
                Ok(_) => bail!("client {id} sent data; clients never send"),
                Err(e)
                    if matches!(
                        e.kind(),
                        io::ErrorKind::WouldBlock
                            | io::ErrorKind::TimedOut
                            | io::ErrorKind::Interrupted
                    ) =>
                {
                    if stop.load(Ordering::SeqCst) {
                        return Ok(());
                    }
                }
                Err(e) if e.kind() == io::ErrorKind::ConnectionReset => break,
                Err(e) => {
                    return Err(e).with_context(|| format!("waiting for client {id} to close"))
                }
            }
        }
    }
    Ok(())
}

fn eventfds(vectors: u32) -> Result<Vec<OwnedFd>> {
    (0..vectors)
        .map(|_| {
            EventFd::from_flags(EfdFlags::EFD_NONBLOCK | EfdFlags::EFD_CLOEXEC)
                .map(OwnedFd::from)
                .context("eventfd")
        })
        .collect()
}

fn memfd(size: u64) -> Result<OwnedFd> {
    let fd = nix::sys::memfd::memfd_create(c"floor-shm", nix::sys::memfd::MFdFlags::MFD_CLOEXEC)
        .context("memfd_create")?;
    let file = File::from(fd);
    file.set_len(size).context("ftruncate")?;
    Ok(OwnedFd::from(file))
}

// ---------------------------------------------------------------------------------------------
// the server process

struct ServerProcess {
    child: Option<Child>,
    pid: Pid,
    log_path: PathBuf,
}

impl ServerProcess {
    /// Starts `BIN -F -S socket --memfd -l 1M -n vectors EXTRA...` and waits until it accepts.
    fn start(
        bin: &Path,
        socket: &Path,
        vectors: u32,
        scratch: &Scratch,
        extra: &[String],
    ) -> Result<Self> {
        let log_path = scratch.path("server.log");
        let log = File::create(&log_path)
            .with_context(|| format!("cannot create {}", log_path.display()))?;
        let child = Command::new(bin)
            .arg("-F")
            .arg("-S")
            .arg(socket)
            .args(["--memfd", "-l", "1M", "-n", &vectors.to_string()])
            .args(extra)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .with_context(|| format!("cannot start {}", bin.display()))?;
        let pid = Pid::from_raw(i32::try_from(child.id()).context("pid out of range")?);
        let mut server = ServerProcess {
            child: Some(child),
            pid,
            log_path: log_path.clone(),
        };
        let deadline = Instant::now() + STARTUP_LIMIT;
        while !socket.exists() {
            if let Some(status) = server.child_mut()?.try_wait()? {
                let log = std::fs::read_to_string(&log_path).unwrap_or_default();
                bail!("the server exited at startup ({status}): {}", log.trim());
            }
            if Instant::now() > deadline {
                bail!(
                    "the server did not create {} within {} s",
                    socket.display(),
                    STARTUP_LIMIT.as_secs()
                );
            }
            thread::sleep(Duration::from_millis(5));
        }
        // The socket file appears at bind, before the rest of the set-up (control socket,
        // upgrade helper, event loop): the first message on a probe connection says it serves.
        let probe = UnixStream::connect(socket).context("probe connection")?;
        probe.set_read_timeout(Some(STARTUP_LIMIT))?;
        let mut first = [0u8; 8];
        (&probe)
            .read_exact(&mut first)
            .context("the server did not answer a probe connection")?;
        drop(probe);
        // Then its departure is handled (its fds closed) and the fd count settles.
        let mut last = server.fd_count()?;
        loop {
            thread::sleep(Duration::from_millis(20));
            let now = server.fd_count()?;
            if now == last || Instant::now() > deadline {
                break;
            }
            last = now;
        }
        Ok(server)
    }

    /// The end of the server's stderr, to explain a failure.
    fn log_tail(&self) -> String {
        let log = std::fs::read_to_string(&self.log_path).unwrap_or_default();
        let lines: Vec<&str> = log.lines().collect();
        let tail = lines[lines.len().saturating_sub(10)..].join("\n");
        if tail.is_empty() {
            String::new()
        } else {
            format!(" (server stderr ends with:\n{tail})")
        }
    }

    fn child_mut(&mut self) -> Result<&mut Child> {
        self.child
            .as_mut()
            .ok_or_else(|| anyhow!("the server has already been stopped"))
    }

    fn rss_kib(&self) -> Result<u64> {
        let path = format!("/proc/{}/status", self.pid);
        let status = std::fs::read_to_string(&path).with_context(|| format!("reading {path}"))?;
        status
            .lines()
            .find_map(|line| line.strip_prefix("VmRSS:"))
            .and_then(|rest| rest.trim().trim_end_matches("kB").trim().parse().ok())
            .ok_or_else(|| anyhow!("no VmRSS in {path}"))
    }

    /// CPU time the server has run so far, all its threads.
    fn cpu(&self) -> Result<Duration> {
        let dir = format!("/proc/{}/task", self.pid);
        let mut total = Duration::ZERO;
        for task in std::fs::read_dir(&dir).with_context(|| format!("reading {dir}"))? {
            let path = task?.path().join("schedstat");
            // A thread that ended in between has nothing more to add.
            if let Ok(cpu) = task_cpu(&path.to_string_lossy()) {
                total += cpu;
            }
        }
        Ok(total)
    }

    fn fd_count(&self) -> Result<usize> {
        let path = format!("/proc/{}/fd", self.pid);
        Ok(std::fs::read_dir(&path)
            .with_context(|| format!("reading {path}"))?
            .count())
    }

    /// SIGTERM; returns how long the server took to exit. Fails unless it exits 0 in time.
    fn terminate(&mut self) -> Result<Duration> {
        let start = Instant::now();
        kill(self.pid, Signal::SIGTERM).context("cannot send SIGTERM to the server")?;
        loop {
            if let Some(status) = self.child_mut()?.try_wait()? {
                let took = start.elapsed();
                self.child = None;
                if !status.success() {
                    bail!("the server exited with {status} after SIGTERM");
                }
                return Ok(took);
            }
            if start.elapsed() > SHUTDOWN_LIMIT {
                bail!(
                    "the server did not exit within {} s of SIGTERM",
                    SHUTDOWN_LIMIT.as_secs()
                );
            }
            thread::sleep(Duration::from_millis(1));
        }
    }
}

impl Drop for ServerProcess {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

// ---------------------------------------------------------------------------------------------
// helpers

/// A private temporary directory, removed on drop.
struct Scratch {
    dir: PathBuf,
}

impl Scratch {
    fn new() -> Result<Self> {
        let dir = std::env::temp_dir().join(format!("ivshmem-load-{}", std::process::id()));
        std::fs::create_dir_all(&dir)
            .with_context(|| format!("cannot create {}", dir.display()))?;
        Ok(Scratch { dir })
    }

    fn path(&self, name: &str) -> PathBuf {
        self.dir.join(name)
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// A blocking connect that gives up after [`IO_TIMEOUT`] (a Unix connect blocks while the
/// listener's backlog is full); retries briefly while the listener is not listening yet.
fn connect_client(path: &Path) -> Result<UnixStream> {
    let addr =
        UnixAddr::new(path).with_context(|| format!("bad socket path {}", path.display()))?;
    let deadline = Instant::now() + IO_TIMEOUT;
    loop {
        let fd = socket(
            AddressFamily::Unix,
            SockType::Stream,
            SockFlag::SOCK_CLOEXEC,
            None,
        )
        .context("socket")?;
        let timeout = TimeVal::milliseconds(IO_TIMEOUT.as_millis() as i64);
        setsockopt(&fd, sockopt::SendTimeout, &timeout).context("SO_SNDTIMEO")?;
        match connect(fd.as_raw_fd(), &addr) {
            Ok(()) => return Ok(UnixStream::from(fd)),
            Err(nix::errno::Errno::ECONNREFUSED) if Instant::now() < deadline => {
                thread::sleep(Duration::from_millis(5));
            }
            Err(nix::errno::Errno::EAGAIN | nix::errno::Errno::EINPROGRESS) => {
                bail!(
                    "connect to {} timed out after {} s",
                    path.display(),
                    IO_TIMEOUT.as_secs()
                )
            }
            Err(e) => return Err(e).with_context(|| format!("connect to {}", path.display())),
        }
    }
}

fn poll_readable(fd: BorrowedFd<'_>, timeout_ms: i32) -> Result<()> {
    let mut pfd = libc::pollfd {
        fd: fd.as_raw_fd(),
        events: libc::POLLIN,
        revents: 0,
    };
    // SAFETY: one valid pollfd, count 1.
    let r = unsafe { libc::poll(&mut pfd, 1, timeout_ms) };
    if r < 0 {
        let e = io::Error::last_os_error();
        if e.kind() != io::ErrorKind::Interrupted {
            return Err(e).context("poll");
        }
    }
    Ok(())
}

/// A task's CPU time: the first field of its `schedstat` (nanoseconds on the CPU; not
/// rounded to clock ticks as `stat`'s utime and stime are).
fn task_cpu(path: &str) -> Result<Duration> {
    let text = std::fs::read_to_string(path).with_context(|| format!("reading {path}"))?;
    let ns: u64 = text
        .split_whitespace()
        .next()
        .and_then(|f| f.parse().ok())
        .ok_or_else(|| anyhow!("no CPU time in {path}: {text:?}"))?;
    Ok(Duration::from_nanos(ns))
}

/// The calling thread's CPU time.
fn thread_cpu() -> Result<Duration> {
    task_cpu("/proc/thread-self/schedstat")
}

fn check_vectors(vectors: u32) -> Result<()> {
    if vectors == 0 || vectors > MAX_VECTORS {
        bail!("--vectors must be between 1 and {MAX_VECTORS}");
    }
    Ok(())
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}
