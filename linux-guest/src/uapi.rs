//! The kernel module's userspace interface, mirrored from `driver/ivshmem_uapi.h` (a unit test
//! reads the header and checks the numbers and field order here against it).

/// mmap offset of the shared memory (BAR2).
pub const SHM_MMAP_OFFSET: u64 = 0;
/// mmap offset of the register page (BAR0).
pub const REGS_MMAP_OFFSET: u64 = 1 << 40;
/// Offset of the IVPosition register in BAR0.
pub const REG_IV_POSITION: usize = 0x08;
/// Offset of the Doorbell register in BAR0: `peer << 16 | vector`.
pub const REG_DOORBELL: usize = 0x0c;
/// [`Info::flags`]: the register page can be mmap'd.
pub const INFO_REGS_MMAP: u32 = 1;

/// `struct ivshmem_info`.
#[repr(C)]
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Info {
    /// Bytes of shared memory (BAR2).
    pub shm_size: u64,
    /// Its mmap offset.
    pub shm_offset: u64,
    /// The register page's mmap offset.
    pub regs_offset: u64,
    /// Bytes of registers (BAR0).
    pub regs_size: u32,
    /// IVPosition as the device reports it.
    pub iv_position: i32,
    /// MSI-X vectors enabled (0 for ivshmem-plain).
    pub vectors: u32,
    /// `INFO_*` flags.
    pub flags: u32,
}

/// `struct ivshmem_eventfd`.
#[repr(C)]
#[derive(Debug, Clone, Copy)]
pub struct EventfdBinding {
    /// One of our vectors.
    pub vector: u32,
    /// An eventfd, or -1 to unbind.
    pub fd: i32,
}

/// `struct ivshmem_ring`.
#[repr(C)]
#[derive(Debug, Clone, Copy)]
pub struct Ring {
    /// Target peer (at most 0xffff).
    pub peer: u32,
    /// Target vector (at most 0xffff).
    pub vector: u32,
}

const MAGIC: u8 = 0xB9;
nix::ioctl_read!(
    /// `IVSHMEM_IOCTL_INFO`: what the device is.
    ioctl_info,
    MAGIC,
    0x00,
    Info
);
nix::ioctl_write_ptr!(
    /// `IVSHMEM_IOCTL_SET_EVENTFD`: bind (or unbind) an eventfd to one of our vectors.
    ioctl_set_eventfd,
    MAGIC,
    0x01,
    EventfdBinding
);
nix::ioctl_write_ptr!(
    /// `IVSHMEM_IOCTL_RING`: ring a peer's vector through the doorbell register.
    ioctl_ring,
    MAGIC,
    0x02,
    Ring
);

#[cfg(test)]
mod tests {
    use super::*;

    const HEADER: &str = include_str!("../driver/ivshmem_uapi.h");

    /// The value of `#define NAME VALUE` in the header.
    fn define(name: &str) -> String {
        HEADER
            .lines()
            .find_map(|l| l.strip_prefix(&format!("#define {name} ")))
            .unwrap_or_else(|| panic!("{name} not in ivshmem_uapi.h"))
            .split("/*")
            .next()
            .unwrap()
            .trim()
            .to_string()
    }

    /// The field names of `struct NAME` in the header, in order.
    fn fields(name: &str) -> Vec<String> {
        let body = HEADER
            .split(&format!("struct {name} {{"))
            .nth(1)
            .unwrap_or_else(|| panic!("struct {name} not in ivshmem_uapi.h"));
        body.split("};")
            .next()
            .unwrap()
            .lines()
            .filter_map(|l| l.split(';').next()?.split_whitespace().nth(1))
            .map(str::to_string)
            .collect()
    }

    #[test]
    fn numbers_match_the_header() {
        assert_eq!(define("IVSHMEM_IOCTL_MAGIC"), format!("0x{MAGIC:02X}"));
        assert_eq!(define("IVSHMEM_SHM_MMAP_OFFSET"), "0ULL");
        assert_eq!(define("IVSHMEM_REGS_MMAP_OFFSET"), "_BITULL(40)");
        assert_eq!(REGS_MMAP_OFFSET, 1 << 40);
        assert_eq!(
            define("IVSHMEM_REG_IV_POSITION"),
            format!("{REG_IV_POSITION:#04x}")
        );
        assert_eq!(
            define("IVSHMEM_REG_DOORBELL"),
            format!("{REG_DOORBELL:#04x}")
        );
        assert_eq!(define("IVSHMEM_INFO_REGS_MMAP"), "_BITUL(0)");
        assert!(define("IVSHMEM_IOCTL_INFO")
            .starts_with("_IOR(IVSHMEM_IOCTL_MAGIC, 0x00, struct ivshmem_info)"));
        assert!(define("IVSHMEM_IOCTL_SET_EVENTFD")
            .starts_with("_IOW(IVSHMEM_IOCTL_MAGIC, 0x01, struct ivshmem_eventfd)"));
        assert!(define("IVSHMEM_IOCTL_RING")
            .starts_with("_IOW(IVSHMEM_IOCTL_MAGIC, 0x02, struct ivshmem_ring)"));
    }

    #[test]
    fn structs_match_the_header() {
        assert_eq!(
            fields("ivshmem_info"),
            [
                "shm_size",
                "shm_offset",
                "regs_offset",
                "regs_size",
                "iv_position",
                "vectors",
                "flags"
            ]
        );
        assert_eq!(std::mem::size_of::<Info>(), 40);
        assert_eq!(fields("ivshmem_eventfd"), ["vector", "fd"]);
        assert_eq!(std::mem::size_of::<EventfdBinding>(), 8);
        assert_eq!(fields("ivshmem_ring"), ["peer", "vector"]);
        assert_eq!(std::mem::size_of::<Ring>(), 8);
    }
}
