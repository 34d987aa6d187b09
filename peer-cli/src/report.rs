//! Output of the commands whose printing both clients share: `read`'s hex dump and `wait`'s
//! notification lines.

use std::time::Duration;

use crate::say;
use peer::vector::OwnVectors;
use peer::SharedMemory;

use super::hexdump;
use super::session::CommandFailed;

/// `read OFFSET LEN`: prints `len` bytes of `shm` at `offset` as hex dump lines; an out-of-range
/// request is refused before anything is printed.
pub fn read(shm: &SharedMemory, offset: usize, len: usize) -> Result<(), CommandFailed> {
    let failed = |e| CommandFailed(format!("read: {e}"));
    shm.check_range(offset, len).map_err(failed)?;
    let mut buf = [0u8; 16];
    let mut done = 0;
    while done < len {
        let n = (len - done).min(16);
        shm.read(offset + done, &mut buf[..n]).map_err(failed)?;
        say!("{}", hexdump::line(offset + done, &buf[..n]));
        done += n;
    }
    Ok(())
}

/// `write OFFSET TEXT`: copies `data` into `shm` at `offset`, refusing a range outside it.
pub fn write(shm: &SharedMemory, offset: usize, data: &[u8]) -> Result<(), CommandFailed> {
    shm.write(offset, data)
        .map_err(|e| CommandFailed(format!("write: {e}")))
}

/// The QEMU-style line for a ring on our `vector`; `own` is our peer id as printed.
pub fn notification_line(own: impl std::fmt::Display, vector: u32) -> String {
    format!("receive notification from peer_id={own} vector={vector}")
}

/// `wait [VECTOR|any] [MS]` (`vector` `None` = any): waits on `vectors` and prints one line per
/// vector that fired, `own` being our id as printed; fails when nothing fired within
/// `timeout_ms`, or with `failed`'s message when waiting failed.
pub fn wait<V: OwnVectors>(
    vectors: &mut V,
    own: impl std::fmt::Display,
    vector: Option<u32>,
    timeout_ms: Option<u64>,
    failed: impl Fn(V::Error) -> CommandFailed,
) -> Result<(), CommandFailed> {
    let timeout = timeout_ms.map(Duration::from_millis);
    let fired = match vector {
        Some(v) => match vectors.wait_one(v, timeout).map_err(&failed)? {
            true => vec![v],
            false => Vec::new(),
        },
        None => vectors.wait_any(timeout).map_err(&failed)?,
    };
    report_fired(own, vector, &fired, timeout_ms)
}

/// `wait`'s outcome: one line per vector in `fired`, or, when nothing fired within
/// `timeout_ms`, the failure naming the `awaited` vector (`None` = any).
fn report_fired(
    own: impl std::fmt::Display,
    awaited: Option<u32>,
    fired: &[u32],
    timeout_ms: Option<u64>,
) -> Result<(), CommandFailed> {
    if fired.is_empty() {
        let which = match awaited {
            Some(v) => format!("vector {v}"),
            None => "any vector".to_string(),
        };
        return Err(CommandFailed(format!(
            "wait: no notification on {which} within {} ms",
            timeout_ms.unwrap_or(0)
        )));
    }
    for &vector in fired {
        say!("{}", notification_line(&own, vector));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn wait_without_notifications_names_what_was_awaited() {
        assert_eq!(
            report_fired(3, Some(2), &[], Some(50)).unwrap_err().0,
            "wait: no notification on vector 2 within 50 ms"
        );
        assert_eq!(
            report_fired("none", None, &[], None).unwrap_err().0,
            "wait: no notification on any vector within 0 ms"
        );
        assert!(report_fired(3, None, &[0, 1], Some(50)).is_ok());
        assert_eq!(
            notification_line("none", 1),
            "receive notification from peer_id=none vector=1"
        );
    }
}
