//! The peer crate's example programs against the real server: `ping_pong` between two processes
//! and every `bench` mode printing its machine-readable lines. The examples are built by
//! `cargo test --workspace` (and `cargo build --examples`); when they are missing the tests skip.

use std::path::PathBuf;
use std::process::{Command, Stdio};

use harness::{bin_dir, Scratch, Server};

fn example(name: &str, test: &str) -> Option<PathBuf> {
    let path = bin_dir().join("examples").join(name);
    if path.exists() {
        Some(path)
    } else {
        eprintln!(
            "SKIP {test}: {} not built (cargo build -p ivshmem-peer --examples)",
            path.display()
        );
        None
    }
}

#[test]
fn ping_pong_between_two_processes() {
    let Some(ping_pong) = example("ping_pong", "ping_pong_between_two_processes") else {
        return;
    };
    let dir = Scratch::new("ex-pingpong");
    let server = Server::start(&dir.join("sock"), &["--memfd", "-l", "64K"]);
    let pong = Command::new(&ping_pong)
        .arg("-S")
        .arg(&server.socket)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    // Let the first process connect before the second (the harness's probe connection is the
    // first "joined" in the log), so that the first plays pong. Starting both at once works
    // too, but then either may be pong.
    assert!(harness::wait_until(
        std::time::Duration::from_secs(5),
        || { server.log_text().matches("joined").count() >= 2 }
    ));
    let ping = Command::new(&ping_pong)
        .arg("-S")
        .arg(&server.socket)
        .args(["-n", "5"])
        .output()
        .unwrap();
    let pong = pong.wait_with_output().unwrap();
    let (ping_out, pong_out) = (
        String::from_utf8_lossy(&ping.stdout),
        String::from_utf8_lossy(&pong.stdout),
    );
    assert!(
        ping.status.success(),
        "{ping_out} {}",
        String::from_utf8_lossy(&ping.stderr)
    );
    assert!(
        pong.status.success(),
        "{pong_out} {}",
        String::from_utf8_lossy(&pong.stderr)
    );
    assert!(ping_out.contains("ping: ball 5 came back"), "{ping_out}");
    assert!(pong_out.contains("pong: returned ball 5"), "{pong_out}");
}

fn value(output: &str, key: &str) -> f64 {
    output
        .lines()
        .find_map(|l| l.strip_prefix(&format!("{key}=")))
        .unwrap_or_else(|| panic!("no {key}= line in {output}"))
        .parse()
        .unwrap_or_else(|_| panic!("{key}= is not a number in {output}"))
}

#[test]
fn bench_modes_print_their_results() {
    let Some(bench) = example("bench", "bench_modes_print_their_results") else {
        return;
    };
    let dir = Scratch::new("ex-bench");
    let server = Server::start(&dir.join("sock"), &["--memfd", "-l", "1M"]);
    let run = |args: &[&str]| {
        let out = Command::new(&bench).args(args).output().unwrap();
        let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
        assert!(
            out.status.success(),
            "bench {args:?}: {stdout} {}",
            String::from_utf8_lossy(&out.stderr)
        );
        stdout
    };
    let socket = server.socket.to_str().unwrap();
    let out = run(&["doorbell", "-S", socket, "-n", "200", "--warmup", "20"]);
    assert!(value(&out, "rtt_ns") > 0.0);
    let out = run(&["spin", "-S", socket, "-n", "2000", "--warmup", "200"]);
    assert!(value(&out, "rtt_ns") > 0.0);
    assert!(value(&out, "rtt_p50_ns") > 0.0);
    let out = run(&["bandwidth", "-S", socket, "--millis", "50"]);
    assert!(value(&out, "shm_gbps") > 0.0);
    assert!(value(&out, "private_gbps") > 0.0);
    let out = run(&["eventfd", "-n", "200", "--warmup", "20"]);
    assert!(value(&out, "rtt_ns") > 0.0);
}
