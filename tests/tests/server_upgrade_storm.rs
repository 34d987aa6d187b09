//! 20 upgrades, then 20 `kill -9` under a keeper, while two host peers play doorbell ping-pong,
//! two VMs (our VMM, when KVM is usable) play it too, a third VM plays it with a host peer, and
//! a QEMU `ivshmem-doorbell` device is
//! attached (when QEMU is installed): no doorbell is lost, nobody sees a leave or anything else,
//! QEMU stays connected, and a peer that joins afterwards is told of everyone.

use std::path::Path;
use std::process::Command;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::Duration;

use harness::qemu::QemuDoorbell;
use harness::raw_client::RawClient;
use harness::server::process_alive;
use harness::vm::{doorbell, Vm};
use harness::{bin, kvm_available, qemu_available, text, wait_until, Scratch, Server, TIMEOUT};
use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;
use peer::ServerEvent;

/// Kills QEMU on drop.
/// A ping-pong thread: what its peer heard from the server, and the peer (kept connected).
type Player = JoinHandle<Result<(Vec<ServerEvent>, peer::Peer), String>>;

/// Two peers ringing each other's vector 0 in turn; each wait has a deadline, so a lost
/// doorbell shows as a timeout. Returns the round counter, the stop flag and the threads,
/// which return the events each peer heard from the server.
fn ping_pong(sock: &Path) -> (Arc<AtomicU64>, Arc<AtomicBool>, Vec<Player>) {
    let rounds = Arc::new(AtomicU64::new(0));
    let stop = Arc::new(AtomicBool::new(false));
    let mut a = peer::Peer::connect(sock).unwrap();
    let mut b = peer::Peer::connect(sock).unwrap();
    assert!(a.await_peer(b.id(), Some(TIMEOUT)));
    let (a_id, b_id) = (a.id(), b.id());
    let _ = a.process_server_messages();
    let _ = b.process_server_messages();
    let wait = Some(Duration::from_secs(5));
    let (r, s) = (rounds.clone(), stop.clone());
    // Set by the pinger before its last ring: the ponger answers it and ends.
    let done = Arc::new(AtomicBool::new(false));
    let finished = done.clone();
    let pinger = std::thread::spawn(move || {
        while !s.load(Ordering::Relaxed) {
            a.ring(b_id, 0).map_err(|e| e.to_string())?;
            match a.wait_vector(0, wait) {
                Ok(Some(_)) => r.fetch_add(1, Ordering::Relaxed),
                other => {
                    return Err(format!(
                        "round {}: no answer: {other:?}",
                        r.load(Ordering::Relaxed)
                    ))
                }
            };
        }
        finished.store(true, Ordering::SeqCst);
        a.ring(b_id, 0).map_err(|e| e.to_string())?;
        Ok((a.process_server_messages(), a))
    });
    let ponger = std::thread::spawn(move || loop {
        match b.wait_vector(0, wait) {
            Ok(Some(_)) => {}
            other => return Err(format!("ponger: no ping: {other:?}")),
        }
        b.ring(a_id, 0).map_err(|e| e.to_string())?;
        if done.load(Ordering::SeqCst) {
            return Ok((b.process_server_messages(), b));
        }
    });
    (rounds, stop, vec![pinger, ponger])
}

fn serving_pid(sock: &Path) -> Option<i32> {
    let out = Command::new(bin("ivshmem-server"))
        .arg("-S")
        .arg(sock)
        .args(["--status", "--json"])
        .output()
        .ok()?;
    text(&out.stdout)
        .strip_prefix("{\"format\":1,\"pid\":")?
        .split(',')
        .next()?
        .parse()
        .ok()
}

/// Runs `disrupt` 20 times (each returns when a new server serves) under the ping-pong and the
/// QEMU device, then checks what everyone saw.
fn storm(name: &str, keeper: bool, mut disrupt: impl FnMut(&Path, &Server)) {
    let dir = Scratch::new(name);
    let sock = dir.join("sock");
    let mut command = Command::new(bin("ivshmem-server"));
    command
        .args(["-F", "--memfd", "-n", "1", "-l", "1M", "-S"])
        .arg(&sock);
    if keeper {
        command.arg("--keeper");
    }
    let server = Server::from_command(command, &sock);
    assert!(
        wait_until(TIMEOUT, || serving_pid(&sock).is_some()),
        "{}",
        server.log_text()
    );

    let mut watcher = RawClient::connect(&sock, 1);
    let mut everyone = vec![watcher.id];
    // Each newcomer joins with one vector: one message to the watcher.
    let joined = |watcher: &mut RawClient, everyone: &mut Vec<u16>| match watcher.next_event() {
        protocol::ClientEvent::PeerVector { peer, .. } => everyone.push(peer),
        other => panic!("expected a join, got {other:?}"),
    };
    let qemu = qemu_available(name).then(|| {
        let q = QemuDoorbell::spawn(&sock, 1);
        joined(&mut watcher, &mut everyone);
        q
    });
    // Two VMs: a lost doorbell makes the ping VM give up after 5 s (exit 1), and the devices
    // log any departure they hear of.
    let vms = kvm_available(name).then(|| {
        let spec = [doorbell(&sock, 1)];
        let args = "rounds=4000000000 warmup=0 timeout_ms=5000";
        let pong = Vm::start(
            "pong",
            "ivshmem_pingpong",
            &spec,
            &format!("role=pong {args}"),
            &[],
        );
        let ping = Vm::start(
            "ping",
            "ivshmem_pingpong",
            &spec,
            &format!("role=ping {args}"),
            &[],
        );
        joined(&mut watcher, &mut everyone);
        joined(&mut watcher, &mut everyone);
        // A third VM plays with a host peer that echoes its rings.
        let mut echo = peer::Peer::connect(&sock).unwrap();
        joined(&mut watcher, &mut everyone);
        let hostping = Vm::start(
            "hostping",
            "ivshmem_pingpong",
            &spec,
            &format!("role=ping peer={} {args}", echo.id()),
            &[],
        );
        joined(&mut watcher, &mut everyone);
        let vm_id = *everyone.last().unwrap();
        let echo_stop = Arc::new(AtomicBool::new(false));
        let halt = echo_stop.clone();
        let echo = std::thread::spawn(move || -> Result<(peer::Peer, u64), String> {
            let mut echoed = 0u64;
            while !halt.load(Ordering::Relaxed) {
                match echo.wait_vector(0, Some(Duration::from_millis(200))) {
                    Ok(Some(_)) => {
                        echo.ring_within(vm_id, 0, Some(TIMEOUT))
                            .map_err(|e| format!("echo: {e}"))?;
                        echoed += 1;
                    }
                    Ok(None) => {}
                    Err(e) => return Err(format!("echo after {echoed}: {e}")),
                }
            }
            Ok((echo, echoed))
        });
        (ping, pong, hostping, echo, echo_stop)
    });
    let (rounds, stop, players) = ping_pong(&sock);
    joined(&mut watcher, &mut everyone);
    joined(&mut watcher, &mut everyone);

    for i in 0..20 {
        let before = rounds.load(Ordering::Relaxed);
        disrupt(&sock, &server);
        // The game goes on after each one.
        assert!(
            wait_until(TIMEOUT, || rounds.load(Ordering::Relaxed) > before + 2),
            "ping-pong stalled after disruption {i}\n{}",
            server.log_text()
        );
    }
    stop.store(true, Ordering::Relaxed);
    // The players stay connected (they are returned) until the end.
    let mut kept = Vec::new();
    let results: Vec<_> = players.into_iter().map(|p| p.join().unwrap()).collect();
    let errors: Vec<&String> = results.iter().filter_map(|r| r.as_ref().err()).collect();
    assert!(errors.is_empty(), "{errors:?}\n{}", server.log_text());
    for r in results {
        let (events, player) = r.unwrap();
        assert!(events.is_empty(), "a player heard {events:?}");
        kept.push(player);
    }
    eprintln!("{name}: {} round trips", rounds.load(Ordering::Relaxed));
    // The watcher heard nothing at all; QEMU is still there; a newcomer is told of everyone.
    assert!(harness::raw_client::silent_for(&watcher.sock, 50));
    let newcomer = RawClient::connect(&sock, 1);
    everyone.sort();
    assert_eq!(newcomer.peer_ids(), everyone);
    // Nobody left, as the server saw it (checked before the VMs and QEMU are stopped).
    assert!(
        !server.log_text().contains("left ("),
        "{}",
        server.log_text()
    );
    if let Some((ping, pong, hostping, echo, echo_stop)) = vms {
        // Still playing after longer than a ring may take to be answered: none was lost.
        let stopped = wait_until(Duration::from_secs(6), || {
            [&ping, &pong, &hostping]
                .iter()
                .any(|vm| !process_alive(vm.pid() as i32))
        });
        assert!(
            !stopped,
            "a VM stopped:\n{}\n{}\n{}",
            ping.stdout(),
            pong.stdout(),
            hostping.stdout()
        );
        for vm in [&ping, &pong, &hostping] {
            assert!(!vm.stderr().contains(" left"), "{}", vm.stderr());
        }
        ping.kill();
        pong.kill();
        hostping.kill();
        echo_stop.store(true, Ordering::Relaxed);
        let (echo, echoed) = echo.join().unwrap().unwrap_or_else(|e| panic!("{e}"));
        eprintln!("{name}: the host echoed {echoed} rings of a VM");
        assert!(echoed > 100, "the VM↔host ping-pong did not run: {echoed}");
        kept.push(echo);
    }
    if let Some(q) = qemu {
        let err = q.stop();
        assert!(err.trim().is_empty(), "QEMU complained: {err}");
    }
    // Whoever serves now shuts down normally.
    let pid = serving_pid(&sock).unwrap();
    if keeper {
        assert!(server.terminate().success());
    } else {
        let last = harness::server::Successor { pid };
        assert!(last.terminate());
    }
}

#[test]
fn server_twenty_upgrades_under_load() {
    storm("srv-upgrade-storm", false, |sock, _| {
        let before = serving_pid(sock).unwrap();
        let out = Command::new(bin("ivshmem-server"))
            .arg("-S")
            .arg(sock)
            .arg("--upgrade")
            .output()
            .unwrap();
        assert!(out.status.success(), "{}", text(&out.stdout));
        assert!(wait_until(TIMEOUT, || !process_alive(before)));
    });
}

#[test]
fn server_twenty_kill_9_under_a_keeper() {
    storm("srv-kill-storm", true, |sock, _| {
        let before = serving_pid(sock).unwrap();
        kill(Pid::from_raw(before), Signal::SIGKILL).unwrap();
        assert!(wait_until(TIMEOUT, || serving_pid(sock).is_some_and(|p| p != before)));
    });
}
