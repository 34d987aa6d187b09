//! Wall-clock time as the server records it (join times, start times): whole seconds since the
//! Unix epoch, which outlive the process (handover state, the keeper, `--status`).

/// Seconds since the Unix epoch, now.
pub fn unix_now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}
