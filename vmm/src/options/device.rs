//! `--device KIND,...` (and its older spelling `--ivshmem VARIANT,...`) into typed
//! [`DeviceOptions`].
//!
//! Kinds:
//! - `ivshmem-plain,path=FILE|shm=NAME|memfd[,size=S][,mapping=slot|trap]`
//! - `ivshmem-doorbell,socket=PATH[,vectors=N][,ioeventfd=on|off][,mapping=slot|trap]`
//! - `pci-testdev[,vectors=N][,ram=SIZE]`
//! - `vhost-user-blk,socket=PATH[,queues=N][,queue-size=N][,vectors=N]`
//! - `vhost-user-fs,socket=PATH,tag=NAME[,queues=N][,queue-size=N][,vectors=N]` (N request queues)
//! - `vhost-user-vsock,socket=PATH[,queue-size=N][,vectors=N]`
//! - `vhost-user,socket=PATH,virtio-id=N,queues=N[,queue-size=N][,config-size=N][,vectors=N]`
//! - `virtio-net,tap=NAME[,mac=XX:XX:XX:XX:XX:XX][,queue-size=N]`
//!
//! The vhost-user devices need guest RAM a backend can map (`--memory SIZE,shared=on`);
//! virtio-net (the kernel's vhost-net, in our address space) does not.
//!
//! `--ivshmem plain,...` / `--ivshmem doorbell,...` mean `--device ivshmem-plain,...` /
//! `ivshmem-doorbell,...`, and QEMU's old `-device ivshmem,shm=NAME,size=MB` is accepted as
//! `--ivshmem shm=NAME,size=MB` (size in MiB when bare, as QEMU had it).
use std::path::PathBuf;

use super::keyvalue::{KeyValues, OptionError};
use crate::devices::ivshmem::options::{
    Bar2Mapping, IvshmemOptions, IvshmemVariant, SharedMemorySource, MAX_VECTORS,
};
use crate::devices::pci_testdev::PciTestDevConfig;
use crate::devices::plug::DeviceOptions;
use crate::devices::vhost_user::{VhostUserKind, VhostUserOptions, FS_TAG_MAX, MAX_QUEUES};
use crate::devices::virtio_net::{MacAddress, VirtioNetOptions, IFNAME_MAX};
use crate::devices::virtio_pci::MAX_MSIX_VECTORS;

/// The kinds `--device` takes, with their keys (for `--help` and error messages).
pub const DEVICE_KINDS: &[&str] = &[
    "ivshmem-plain,path=FILE|shm=NAME|memfd[,size=S][,mapping=slot|trap]",
    "ivshmem-doorbell,socket=PATH[,vectors=N][,ioeventfd=on|off][,mapping=slot|trap]",
    "pci-testdev[,vectors=N][,ram=SIZE]",
    "vhost-user-blk,socket=PATH[,queues=N][,queue-size=N][,vectors=N]",
    "vhost-user-fs,socket=PATH,tag=NAME[,queues=N][,queue-size=N][,vectors=N]",
    "vhost-user-vsock,socket=PATH[,queue-size=N][,vectors=N]",
    "vhost-user,socket=PATH,virtio-id=N,queues=N[,queue-size=N][,config-size=N][,vectors=N]",
    "virtio-net,tap=NAME[,mac=XX:XX:XX:XX:XX:XX][,queue-size=N]",
];

fn known_kinds() -> String {
    DEVICE_KINDS
        .iter()
        .map(|k| k.split([',', '[']).next().unwrap_or(k))
        .collect::<Vec<_>>()
        .join(", ")
}

/// Parses a `--device` value.
pub fn parse_device(text: &str) -> Result<DeviceOptions, OptionError> {
    let mut kv = KeyValues::parse(text)?;
    let device = match kv.kind() {
        "ivshmem-plain" => DeviceOptions::Ivshmem(ivshmem_plain(&mut kv, 1)?),
        "ivshmem-doorbell" => DeviceOptions::Ivshmem(ivshmem_doorbell(&mut kv)?),
        "pci-testdev" => DeviceOptions::PciTestDev(pci_testdev(&mut kv)?),
        "vhost-user-blk" | "vhost-user-fs" | "vhost-user-vsock" | "vhost-user" => {
            DeviceOptions::VhostUser(vhost_user(&mut kv)?)
        }
        "virtio-net" => DeviceOptions::VirtioNet(virtio_net(&mut kv)?),
        other => {
            return Err(OptionError::UnknownKind {
                kind: other.into(),
                known: known_kinds(),
            })
        }
    };
    kv.finish()?;
    Ok(device)
}

/// Parses an `--ivshmem` value: `plain,...`, `doorbell,...` or QEMU's legacy `shm=NAME,size=MB`.
pub fn parse_ivshmem(text: &str) -> Result<DeviceOptions, OptionError> {
    if text.starts_with("shm=") {
        let mut kv = KeyValues::parse_keys("ivshmem", text)?;
        let options = ivshmem_plain(&mut kv, 1 << 20)?;
        kv.finish()?;
        return Ok(DeviceOptions::Ivshmem(options));
    }
    match text.split(',').next() {
        Some("plain" | "doorbell") => parse_device(&format!("ivshmem-{text}")),
        _ => Err(OptionError::UnknownKind {
            kind: text.split(',').next().unwrap_or_default().into(),
            known: "plain, doorbell, or the legacy shm=NAME,size=MB".into(),
        }),
    }
}

fn mapping(kv: &mut KeyValues) -> Result<Bar2Mapping, OptionError> {
    Ok(match kv.choice("mapping", &["slot", "trap"])? {
        Some("trap") => Bar2Mapping::Trap,
        _ => Bar2Mapping::Slot,
    })
}

/// `size_unit` applies to a bare size number: bytes, or MiB for the legacy spelling.
fn ivshmem_plain(kv: &mut KeyValues, size_unit: u64) -> Result<IvshmemOptions, OptionError> {
    let mapping = mapping(kv)?;
    let size = kv.size("size", size_unit)?;
    if let Some(size) = size {
        if !size.is_power_of_two() {
            return Err(kv.bad("size", &size.to_string(), "a power of two (BAR2 must be)"));
        }
    }
    let path = kv.path("path")?;
    let shm = kv.string("shm")?;
    let memfd = kv.flag("memfd")?;
    let source = match (path, shm, memfd) {
        (Some(path), None, false) => SharedMemorySource::File(path),
        (None, Some(name), false) => {
            if name.is_empty() || name.contains('/') || name == "." || name == ".." {
                return Err(kv.bad("shm", &name, "a plain file name in /dev/shm"));
            }
            SharedMemorySource::File(PathBuf::from("/dev/shm").join(name))
        }
        (None, None, true) if size_unit == 1 => {
            if size.is_none() {
                return Err(kv.conflict("memfd needs size="));
            }
            SharedMemorySource::Memfd
        }
        _ => return Err(kv.conflict("needs exactly one of path=, shm= or memfd")),
    };
    Ok(IvshmemOptions {
        variant: IvshmemVariant::Plain { source, size },
        mapping,
    })
}

fn ivshmem_doorbell(kv: &mut KeyValues) -> Result<IvshmemOptions, OptionError> {
    let mapping = mapping(kv)?;
    let socket = kv
        .path("socket")?
        .ok_or_else(|| kv.conflict("needs socket=PATH"))?;
    let vectors = kv.number("vectors", 1..=MAX_VECTORS)?.unwrap_or(1);
    let ioeventfd = kv.switch("ioeventfd")?.unwrap_or(true);
    Ok(IvshmemOptions {
        variant: IvshmemVariant::Doorbell {
            socket,
            vectors,
            ioeventfd,
        },
        mapping,
    })
}

fn vhost_user(kv: &mut KeyValues) -> Result<VhostUserOptions, OptionError> {
    let socket = kv
        .path("socket")?
        .ok_or_else(|| kv.conflict("needs socket=PATH (the backend's UNIX socket)"))?;
    let queue_size = kv.number::<u16>("queue-size", 1..=32768)?;
    if let Some(size) = queue_size.filter(|s| !s.is_power_of_two()) {
        return Err(kv.bad(
            "queue-size",
            &size.to_string(),
            "a power of two up to 32768",
        ));
    }
    let vectors = kv.number::<u16>("vectors", 2..=MAX_MSIX_VECTORS)?;
    // vsock has its three fixed queues: `queues` stays untaken there, so finish() refuses it.
    let queues = match kv.kind() {
        "vhost-user-vsock" => None,
        _ => kv.number::<u16>("queues", 1..=MAX_QUEUES)?,
    };
    let kind = match kv.kind() {
        "vhost-user-blk" => VhostUserKind::Blk,
        "vhost-user-fs" => {
            let tag = kv
                .string("tag")?
                .ok_or_else(|| kv.conflict("needs tag=NAME (what the guest mounts)"))?;
            if tag.is_empty() || tag.len() > FS_TAG_MAX {
                return Err(kv.bad("tag", &tag, "1 to 36 bytes"));
            }
            VhostUserKind::Fs { tag }
        }
        "vhost-user-vsock" => VhostUserKind::Vsock,
        _ => {
            let virtio_id = kv
                .number::<u16>("virtio-id", 1..=0xFFBF)?
                .ok_or_else(|| kv.conflict("needs virtio-id=N"))?;
            let config_size = kv.number::<u32>("config-size", 0..=4096)?.unwrap_or(0);
            if queues.is_none() {
                return Err(kv.conflict("needs queues=N"));
            }
            VhostUserKind::Generic {
                virtio_id,
                config_size,
            }
        }
    };
    let mut options = VhostUserOptions::new(kind, socket);
    options.queues = queues;
    options.vectors = vectors;
    if let Some(size) = queue_size {
        options.queue_size = size;
    }
    Ok(options)
}

fn virtio_net(kv: &mut KeyValues) -> Result<VirtioNetOptions, OptionError> {
    let tap = kv
        .string("tap")?
        .ok_or_else(|| kv.conflict("needs tap=NAME (an existing TAP interface)"))?;
    if tap.is_empty() || tap.len() > IFNAME_MAX || tap.contains(['/', ' ', '\0']) {
        return Err(kv.bad("tap", &tap, "an interface name of 1 to 15 bytes"));
    }
    let mac = match kv.string("mac")? {
        Some(text) => Some(
            text.parse::<MacAddress>()
                .map_err(|e| kv.bad("mac", &text, &e.to_string()))?,
        ),
        None => None,
    };
    let queue_size = kv.number::<u16>("queue-size", 1..=32768)?;
    if let Some(size) = queue_size.filter(|s| !s.is_power_of_two()) {
        return Err(kv.bad(
            "queue-size",
            &size.to_string(),
            "a power of two up to 32768",
        ));
    }
    let mut options = VirtioNetOptions::new(tap);
    options.mac = mac;
    if let Some(size) = queue_size {
        options.queue_size = size;
    }
    Ok(options)
}

fn pci_testdev(kv: &mut KeyValues) -> Result<PciTestDevConfig, OptionError> {
    let mut config = PciTestDevConfig::default();
    if let Some(vectors) = kv.number("vectors", 1..=2048)? {
        config.vectors = vectors;
    }
    if let Some(ram) = kv.size("ram", 1)? {
        if !ram.is_power_of_two() || !(4096..=1 << 40).contains(&ram) {
            return Err(kv.bad("ram", &ram.to_string(), "a power of two from 4K to 1T"));
        }
        config.ram_size = ram;
    }
    Ok(config)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ivshmem(text: &str) -> IvshmemOptions {
        match parse_ivshmem(text).unwrap() {
            DeviceOptions::Ivshmem(o) => o,
            other => panic!("{text}: {other:?}"),
        }
    }

    fn plain(source: SharedMemorySource, size: Option<u64>) -> IvshmemVariant {
        IvshmemVariant::Plain { source, size }
    }

    #[test]
    fn plain_spellings() {
        let o = ivshmem("plain,path=/tmp/x,size=4M");
        assert_eq!(
            o.variant,
            plain(SharedMemorySource::File("/tmp/x".into()), Some(4 << 20))
        );
        assert_eq!(o.mapping, Bar2Mapping::Slot);
        let o = ivshmem("plain,shm=hello,size=1G,mapping=trap");
        assert_eq!(
            o.variant,
            plain(
                SharedMemorySource::File("/dev/shm/hello".into()),
                Some(1 << 30)
            )
        );
        assert_eq!(o.mapping, Bar2Mapping::Trap);
        assert_eq!(
            ivshmem("shm=hello,size=1").variant,
            plain(
                SharedMemorySource::File("/dev/shm/hello".into()),
                Some(1 << 20)
            ),
            "the legacy spelling's bare size is MiB"
        );
        assert_eq!(
            ivshmem("plain,memfd,size=2M").variant,
            plain(SharedMemorySource::Memfd, Some(2 << 20))
        );
        assert_eq!(
            parse_device("ivshmem-plain,memfd,size=2M").unwrap(),
            parse_ivshmem("plain,memfd,size=2M").unwrap(),
            "--ivshmem plain is --device ivshmem-plain"
        );
    }

    #[test]
    fn doorbell_defaults_and_values() {
        let o = ivshmem("doorbell,socket=/tmp/s");
        assert_eq!(
            o.variant,
            IvshmemVariant::Doorbell {
                socket: "/tmp/s".into(),
                vectors: 1,
                ioeventfd: true
            }
        );
        let o = ivshmem("doorbell,socket=/tmp/s,vectors=4,ioeventfd=off");
        assert_eq!(
            o.variant,
            IvshmemVariant::Doorbell {
                socket: "/tmp/s".into(),
                vectors: 4,
                ioeventfd: false
            }
        );
    }

    #[test]
    fn testdev_options() {
        assert_eq!(
            parse_device("pci-testdev").unwrap(),
            DeviceOptions::PciTestDev(PciTestDevConfig::default())
        );
        let DeviceOptions::PciTestDev(c) = parse_device("pci-testdev,vectors=8,ram=2M").unwrap()
        else {
            panic!("not a testdev")
        };
        assert_eq!((c.vectors, c.ram_size), (8, 2 << 20));
    }

    /// Each message names the device kind and the key or value at fault.
    #[test]
    fn errors_name_the_problem() {
        let cases: &[(&str, &str)] = &[
            ("", "empty option string"),
            (
                "virtio",
                "unknown device `virtio` (have: ivshmem-plain, ivshmem-doorbell, pci-testdev, vhost-user-blk, vhost-user-fs, vhost-user-vsock, vhost-user, virtio-net)",
            ),
            ("ivshmem-plain", "needs exactly one of path=, shm= or memfd"),
            ("ivshmem-plain,path=/a,shm=b", "needs exactly one of"),
            ("ivshmem-plain,memfd", "memfd needs size="),
            (
                "ivshmem-plain,path=/a,size=3M",
                "size=\"3145728\": a power of two",
            ),
            ("ivshmem-plain,path=/a,size=4Q", "size=\"4Q\": a size"),
            (
                "ivshmem-plain,path=/a,size=99999999999T",
                "size=\"99999999999T\"",
            ),
            (
                "ivshmem-plain,shm=../etc,size=1M",
                "shm=\"../etc\": a plain file name",
            ),
            ("ivshmem-plain,path=/a,colour=red", "unknown key `colour`"),
            ("ivshmem-plain,path=/a,vectors=2", "unknown key `vectors`"),
            ("ivshmem-plain,path=/a,path=/b", "`path` given twice"),
            ("ivshmem-doorbell", "needs socket=PATH"),
            ("ivshmem-doorbell,socket", "`socket` needs a value"),
            (
                "ivshmem-doorbell,socket=/s,vectors=0",
                "vectors=\"0\": a number from 1 to 1024",
            ),
            (
                "ivshmem-doorbell,socket=/s,vectors=5000",
                "vectors=\"5000\"",
            ),
            ("ivshmem-doorbell,socket=/s,vectors=x", "vectors=\"x\""),
            (
                "ivshmem-doorbell,socket=/s,mapping=fast",
                "mapping=\"fast\": one of slot, trap",
            ),
            ("ivshmem-doorbell,socket=/s,size=1M", "unknown key `size`"),
            ("pci-testdev,vectors=0", "pci-testdev: vectors=\"0\""),
            ("pci-testdev,ram=3M", "pci-testdev: ram=\"3145728\""),
            (
                "pci-testdev,colour=red",
                "pci-testdev: unknown key `colour` (have: ram, vectors)",
            ),
            (
                "pci-testdev,vectors=2,vectors=3",
                "pci-testdev: `vectors` given twice",
            ),
        ];
        for (text, want) in cases {
            let got = parse_device(text).unwrap_err().to_string();
            assert!(got.contains(want), "{text:?}: {got:?} lacks {want:?}");
        }
        assert!(parse_ivshmem("virtio,x=1")
            .unwrap_err()
            .to_string()
            .contains("plain, doorbell"));
    }

    fn vhost(text: &str) -> VhostUserOptions {
        match parse_device(text).unwrap() {
            DeviceOptions::VhostUser(o) => o,
            other => panic!("{text}: {other:?}"),
        }
    }

    #[test]
    fn vhost_user_spellings() {
        let blk = vhost("vhost-user-blk,socket=/tmp/b.sock");
        assert_eq!(blk.kind, VhostUserKind::Blk);
        assert_eq!(blk.socket, PathBuf::from("/tmp/b.sock"));
        assert_eq!((blk.queues, blk.queue_size), (None, 256));
        let blk = vhost("vhost-user-blk,socket=s,queues=4,queue-size=1024");
        assert_eq!((blk.queues, blk.queue_size), (Some(4), 1024));
        let fs = vhost("vhost-user-fs,socket=s,tag=share,queues=2");
        assert_eq!(
            fs.kind,
            VhostUserKind::Fs {
                tag: "share".into()
            }
        );
        assert_eq!(fs.queues, Some(2));
        assert_eq!(
            vhost("vhost-user-vsock,socket=s").kind,
            VhostUserKind::Vsock
        );
        let rng = vhost("vhost-user,socket=s,virtio-id=4,queues=1");
        assert_eq!(
            rng.kind,
            VhostUserKind::Generic {
                virtio_id: 4,
                config_size: 0
            }
        );
        let console = vhost("vhost-user,socket=s,virtio-id=3,queues=2,config-size=12");
        assert_eq!(
            console.kind,
            VhostUserKind::Generic {
                virtio_id: 3,
                config_size: 12
            }
        );
        assert_eq!(console.queues, Some(2));
        // MSI-X vectors: one per queue plus one unless given; vsock 2 (shared, as QEMU's).
        assert_eq!(vhost("vhost-user-blk,socket=s").vector_count(), None);
        assert_eq!(
            vhost("vhost-user-blk,socket=s,vectors=2").vector_count(),
            Some(2)
        );
        assert_eq!(vhost("vhost-user-vsock,socket=s").vector_count(), Some(2));
        assert_eq!(
            vhost("vhost-user-vsock,socket=s,vectors=4").vector_count(),
            Some(4)
        );
    }

    #[test]
    fn vhost_user_blk_queues_default_to_the_vcpus_the_backend_can_serve() {
        // Left out: one per vCPU (QEMU's num-queues default), capped by GET_QUEUE_NUM.
        let blk = vhost("vhost-user-blk,socket=s");
        assert_eq!(blk.queue_count(4, Some(8)), 4);
        assert_eq!(blk.queue_count(4, Some(2)), 2);
        assert_eq!(blk.queue_count(1, Some(8)), 1);
        // A backend without the MQ protocol feature serves one.
        assert_eq!(blk.queue_count(4, None), 1);
        assert_eq!(blk.queue_count(1000, Some(1000)), 256);
        // Given: as given, whatever the vCPUs (more than the backend has fails at start-up).
        let blk = vhost("vhost-user-blk,socket=s,queues=3");
        assert_eq!(blk.queue_count(1, Some(2)), 3);
        // fs: one request queue unless given; generic: as given.
        let fs = vhost("vhost-user-fs,socket=s,tag=t");
        assert_eq!(fs.queue_count(4, Some(8)), 1);
        let fs = vhost("vhost-user-fs,socket=s,tag=t,queues=2");
        assert_eq!(fs.queue_count(4, Some(8)), 2);
        let rng = vhost("vhost-user,socket=s,virtio-id=4,queues=1");
        assert_eq!(rng.queue_count(4, Some(8)), 1);
    }

    #[test]
    fn vhost_user_refusals_name_the_problem() {
        for (text, expected) in [
            ("vhost-user-blk", "needs socket=PATH"),
            ("vhost-user-blk,socket=s,queue-size=100", "power of two"),
            ("vhost-user-blk,socket=s,queues=0", "from 1 to 256"),
            ("vhost-user-blk,socket=s,queues=257", "from 1 to 256"),
            ("vhost-user-blk,socket=s,queues=auto", "queues"),
            ("vhost-user-blk,socket=s,tag=x", "unknown key `tag`"),
            ("vhost-user-fs,socket=s", "needs tag=NAME"),
            (
                "vhost-user-fs,socket=s,tag=0123456789012345678901234567890123456",
                "1 to 36 bytes",
            ),
            ("vhost-user,socket=s,queues=1", "needs virtio-id=N"),
            ("vhost-user,socket=s,virtio-id=4", "needs queues=N"),
            ("vhost-user-vsock,socket=s,queues=2", "unknown key `queues`"),
            ("vhost-user-vsock,socket=s,vectors=1", "from 2 to 2048"),
            ("vhost-user-gpu,socket=s", "unknown device"),
        ] {
            let error = parse_device(text).unwrap_err().to_string();
            assert!(error.contains(expected), "{text}: {error}");
        }
    }

    #[test]
    fn virtio_net_spellings() {
        let DeviceOptions::VirtioNet(o) = parse_device("virtio-net,tap=tap0").unwrap() else {
            panic!("not virtio-net")
        };
        assert_eq!(o, VirtioNetOptions::new("tap0"));
        assert_eq!(o.queue_size, 256);
        let DeviceOptions::VirtioNet(o) =
            parse_device("virtio-net,tap=t1,mac=02:00:00:00:00:01,queue-size=1024").unwrap()
        else {
            panic!("not virtio-net")
        };
        assert_eq!(o.tap, "t1");
        assert_eq!(o.mac, Some(MacAddress([2, 0, 0, 0, 0, 1])));
        assert_eq!(o.queue_size, 1024);
    }

    #[test]
    fn virtio_net_refusals_name_the_problem() {
        for (text, expected) in [
            ("virtio-net", "needs tap=NAME"),
            ("virtio-net,tap=", "tap"),
            ("virtio-net,tap=0123456789abcdef", "1 to 15 bytes"),
            ("virtio-net,tap=a/b", "1 to 15 bytes"),
            ("virtio-net,tap=t,mac=01:00:5e:00:00:01", "not multicast"),
            ("virtio-net,tap=t,mac=52:54:00:12:34", "six hex bytes"),
            ("virtio-net,tap=t,queue-size=3", "power of two"),
            ("virtio-net,tap=t,queues=2", "unknown key `queues`"),
            ("virtio-net,tap=t,socket=/s", "unknown key `socket`"),
        ] {
            let error = parse_device(text).unwrap_err().to_string();
            assert!(error.contains(expected), "{text}: {error}");
        }
    }
}
