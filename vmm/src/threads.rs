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

    #[test]
    fn threads_are_named_and_their_stacks_usable() {
        // A thread can use a good part of it (512 KiB on the stack, which an unoptimized build copies once more) and has its name.
        let name = named("stack-test")
            .spawn(|| {
                let buf = std::hint::black_box([7u8; 512 << 10]);
                assert_eq!(buf[(512 << 10) - 1], 7);
                std::thread::current().name().map(str::to_owned)
            })
            .unwrap()
            .join()
            .unwrap();
        assert_eq!(name.as_deref(), Some("stack-test"));
    }
}
