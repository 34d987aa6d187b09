//! `ivshmem-client` on a terminal (run under `script(1)` for a pty): the `cmd> ` prompt, and
//! notifications, joins and leaves printed while the prompt is idle.

use std::io::{Read, Write};
use std::process::{Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use harness::eventfd::ring_eventfd;
use harness::fake_server::{vectors, welcome, FakeServer, Step};
use harness::{bin, wait_until, Scratch};

#[test]
fn interactive_prompt_prints_news_while_idle() {
    if Command::new("script").arg("--version").output().is_err() {
        eprintln!("SKIP interactive_prompt_prints_news_while_idle: script(1) is not installed");
        return;
    }
    let dir = Scratch::new("cli-tty");
    let mut steps = welcome(3, 65536);
    steps.extend(vectors(1, 1));
    steps.extend(vectors(3, 2));
    steps.push(Step::AwaitGo);
    steps.extend(vectors(5, 1)); // peer 5 joins
    steps.push(Step::Value(1)); // peer 1 leaves
    let server = FakeServer::start(&dir.join("sock"), steps);

    let cmdline = format!(
        "{} -S {}",
        bin("ivshmem-client").display(),
        server.path.display()
    );
    let mut child = Command::new("script")
        .args(["-q", "-e", "-c", &cmdline, "/dev/null"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn script");
    let output = Arc::new(Mutex::new(String::new()));
    let mut stdout = child.stdout.take().unwrap();
    let sink = output.clone();
    std::thread::spawn(move || {
        let mut buf = [0u8; 1024];
        while let Ok(n) = stdout.read(&mut buf) {
            if n == 0 {
                break;
            }
            sink.lock()
                .unwrap()
                .push_str(&String::from_utf8_lossy(&buf[..n]));
        }
    });
    let seen = |text: &str| {
        let text = text.to_string();
        let output = output.clone();
        wait_until(Duration::from_secs(10), move || {
            output.lock().unwrap().contains(&text)
        })
    };
    assert!(seen("cmd> "), "no prompt: {:?}", output.lock().unwrap());

    // A ring while idle at the prompt is printed at once, QEMU style.
    let sent: Vec<_> = (0..3).map(|_| server.next_vector()).collect();
    ring_eventfd(&sent[2].fd);
    assert!(
        seen("receive notification from peer_id=3 vector=1"),
        "{:?}",
        output.lock().unwrap()
    );
    // Joins and leaves too.
    server.go();
    assert!(
        seen("peer_id=5 joined with 1 vector(s)"),
        "{:?}",
        output.lock().unwrap()
    );
    assert!(seen("peer_id=1 left"), "{:?}", output.lock().unwrap());

    // Commands still work, and quit ends with status 0.
    let mut stdin = child.stdin.take().unwrap();
    stdin.write_all(b"peers\n").unwrap();
    assert!(seen("peer_id=5 vectors=1"), "{:?}", output.lock().unwrap());
    stdin.write_all(b"quit\n").unwrap();
    let status = child.wait().unwrap();
    assert!(status.success(), "{status}: {:?}", output.lock().unwrap());
    server.finish();
}
