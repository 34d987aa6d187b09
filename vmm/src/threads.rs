//! How the VMM starts its threads: named, with one stack size for all.

/// The stack of every thread the VMM starts: std's default less 64 KiB, so just under one
/// transparent huge page.
///
/// std's default, 2 MiB, is exactly one huge page: when such a stack lands on a 2 MiB boundary
/// (next to the 2 MiB-aligned guest RAM, say) and the host's THP is `always` (Debian's
/// default), the thread's first touch backs the whole stack with a huge page, 2 MB resident
/// for the few KiB a thread uses. Seen on the nested bed in about half the boots of ours and of
/// firecracker's (docs/boot-time.md). A mapping smaller than 2 MiB never gets a huge page, and
/// 64 KiB less leaves the threads (unoptimized builds included) the room they had.
pub const STACK_BYTES: usize = (2 << 20) - (64 << 10);
const _: () = assert!(
    STACK_BYTES < 2 << 20,
    "a thread stack must stay under a huge page"
);

/// A builder for a thread named `name` with a [`STACK_BYTES`] stack.
pub fn named(name: impl Into<String>) -> std::thread::Builder {
    std::thread::Builder::new()
        .name(name.into())
        .stack_size(STACK_BYTES)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The size of the mapping of /proc/self/maps that holds `addr`.
    fn mapping_size(addr: usize) -> usize {
        let maps = std::fs::read_to_string("/proc/self/maps").unwrap();
        maps.lines()
            .filter_map(|line| {
                let (start, end) = line.split_whitespace().next()?.split_once('-')?;
                let start = usize::from_str_radix(start, 16).ok()?;
                let end = usize::from_str_radix(end, 16).ok()?;
                (start..end).contains(&addr).then_some(end - start)
            })
            .next()
            .expect("a mapping holds the stack")
    }

    #[test]
    fn thread_stacks_are_usable_and_never_a_whole_huge_page() {
        let (name, stack_mapping) = named("stack-test")
            .spawn(|| {
                // A good part of the stack is usable (512 KiB on it, which an unoptimized build
                // copies once more).
                let buf = std::hint::black_box([7u8; 512 << 10]);
                assert_eq!(buf[(512 << 10) - 1], 7);
                let local = 0u8;
                (
                    std::thread::current().name().map(str::to_owned),
                    mapping_size(std::hint::black_box(&local) as *const u8 as usize),
                )
            })
            .unwrap()
            .join()
            .unwrap();
        assert_eq!(name.as_deref(), Some("stack-test"));
        // The writable stack mapping is smaller than a 2 MiB huge page, so THP cannot back it.
        assert!(
            stack_mapping < 2 << 20,
            "stack mapping of {stack_mapping} bytes"
        );
    }
}
