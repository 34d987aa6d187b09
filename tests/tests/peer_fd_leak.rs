//! Dropping a `Peer` closes everything it opened: the socket, the shared-memory fd and mapping,
//! and every eventfd — also after joins, leaves and a server that went away. (Alone in its test
//! binary so no other test opens fds meanwhile.)

use std::time::Duration;

use harness::{fd_count, wait_until, Scratch, Server};
use peer::{ConnectOptions, Peer, ServerEvent};

fn mappings() -> usize {
    std::fs::read_to_string("/proc/self/maps")
        .map(|m| m.lines().count())
        .unwrap_or(0)
}

#[test]
fn dropping_peers_closes_all_fds_and_unmaps() {
    let dir = Scratch::new("peer-leak");
    let server = Server::start(&dir.join("sock"), &["--memfd", "-l", "1M", "-n", "4"]);
    let options = ConnectOptions {
        vectors: Some(4),
        timeout: Duration::from_secs(5),
    };
    let me = std::process::id();
    // Warm up whatever the runtime opens lazily.
    drop(Peer::connect_with(&server.socket, &options).unwrap());
    let fds_before = fd_count(me);
    let maps_before = mappings();
    for _ in 0..10 {
        let mut a = Peer::connect_with(&server.socket, &options).unwrap();
        let b = Peer::connect_with(&server.socket, &options).unwrap();
        // a hears b join (4 more fds), then leave (closed again).
        let b_id = b.id();
        drop(b);
        let left = wait_until(Duration::from_secs(5), || {
            a.poll_server(Some(Duration::from_millis(100)))
                .contains(&ServerEvent::Left { peer: b_id })
        });
        assert!(left, "a did not hear b leave");
        drop(a);
    }
    assert_eq!(fd_count(me), fds_before, "fds leaked");
    assert_eq!(mappings(), maps_before, "mappings leaked");

    // A peer whose server went away also closes everything on drop.
    let mut a = Peer::connect_with(&server.socket, &options).unwrap();
    assert!(server.terminate().success());
    // `terminate` returned after the harness closed its pipe from the server's stderr.
    let gone = wait_until(Duration::from_secs(5), || {
        a.poll_server(Some(Duration::from_millis(100)));
        !a.server_connected()
    });
    assert!(gone);
    // Count from here: a holds the shared-memory fd and its 4 vectors; its socket closed when
    // the server went away.
    let with_a = fd_count(me);
    drop(a);
    assert_eq!(
        fd_count(me),
        with_a - 5,
        "fds leaked after the server went away"
    );
}
