//! `--ivshmem` option parsing: the device variants and where their shared memory comes from.
//!
//! Spellings accepted (QEMU-flavoured):
//! - `plain,path=FILE[,size=S]`    ivshmem-plain on a file (created and sized if needed)
//! - `plain,shm=NAME[,size=S]`     ivshmem-plain on /dev/shm/NAME
//! - `plain,memfd,size=S`          ivshmem-plain on an anonymous memfd (private to this VM)
//! - `shm=NAME,size=MB`            QEMU's old `-device ivshmem,shm=hello,size=1` (size in MiB
//!   when it has no suffix), meaning a plain device on /dev/shm/NAME
//! - `doorbell,socket=PATH[,vectors=N]`  ivshmem-doorbell, a client of an ivshmem server
//!
//! Common keys: `mapping=slot|trap` (BAR2 as a KVM memory slot, the default, or served through
//! MMIO exits for comparison), `ioeventfd=on|off` (doorbell only, default on).

use std::path::PathBuf;

/// Largest vector count we accept (the MSI-X table of BAR1 allows 2048; the server 1024).
pub const MAX_VECTORS: u32 = 1024;

/// Where a plain device's memory comes from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SharedMemorySource {
    /// A file at this path (ivshmem-plain `path=` and `shm=`, which means /dev/shm/NAME).
    File(PathBuf),
    /// An anonymous memfd owned by this VM.
    Memfd,
}

/// Which device, with its variant's settings.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum IvshmemVariant {
    /// `ivshmem-plain`: shared memory only, no interrupts.
    Plain {
        /// Where the memory comes from.
        source: SharedMemorySource,
        /// Bytes; `None` means "the file's current size".
        size: Option<u64>,
    },
    /// `ivshmem-doorbell`: memory and doorbells from an ivshmem server.
    Doorbell {
        /// The server's socket (`socket=`).
        socket: PathBuf,
        /// MSI-X vectors of the device (`vectors=`).
        vectors: u32,
        /// Doorbells through KVM ioeventfds (`ioeventfd=`, default on).
        ioeventfd: bool,
    },
}

/// How BAR2 reaches the guest.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Bar2Mapping {
    /// A KVM memory slot: guest accesses never exit.
    Slot,
    /// Every access exits and is served by the VMM (for comparison and debugging).
    Trap,
}

/// A parsed `--ivshmem` argument.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IvshmemOptions {
    /// The device variant and its settings.
    pub variant: IvshmemVariant,
    /// How BAR2 is mapped (`mapping=`).
    pub mapping: Bar2Mapping,
}

/// Why an `--ivshmem` argument was refused.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum OptionsError {
    /// The first word is neither `plain` nor `doorbell`, and not the legacy form.
    #[error("--ivshmem {0:?}: give `plain,...`, `doorbell,...` or the legacy `shm=NAME,size=MB`")]
    NoVariant(String),
    /// A key no variant knows.
    #[error("--ivshmem: unknown key `{0}`")]
    UnknownKey(String),
    /// A key given twice.
    #[error("--ivshmem: key `{0}` given twice")]
    Duplicate(String),
    #[error("--ivshmem: `{key}` needs a value")]
    /// A key that needs a value came without one.
    MissingValue {
        /// The key.
        key: String,
    },
    /// A size that does not parse.
    #[error("--ivshmem: bad size `{0}` (a number with an optional K, M, G or T suffix)")]
    BadSize(String),
    /// A size that is not a power of two.
    #[error("--ivshmem: size {0} is not a power of two (BAR2 must be)")]
    SizeNotPowerOfTwo(u64),
    #[error("--ivshmem: bad value `{value}` for `{key}`")]
    /// A value that does not parse for its key.
    BadValue {
        /// The key.
        key: String,
        /// The value as given.
        value: String,
    },
    /// A plain device with none or several of `path=`, `shm=`, `memfd`.
    #[error("--ivshmem plain needs exactly one of path=, shm= or memfd")]
    PlainSource,
    /// `memfd` without `size=`: there is no file to take a size from.
    #[error("--ivshmem plain,memfd needs size=")]
    MemfdSize,
    /// A doorbell device without `socket=`.
    #[error("--ivshmem doorbell needs socket=PATH")]
    DoorbellSocket,
    /// `vectors=` outside 1..=[`MAX_VECTORS`].
    #[error("--ivshmem: vectors={0} out of range 1..={MAX_VECTORS}")]
    Vectors(u32),
    /// A key of the other variant.
    #[error("--ivshmem: `{0}` does not apply to this variant")]
    NotApplicable(String),
    /// `shm=` with a path rather than a file name in /dev/shm.
    #[error("--ivshmem shm=NAME: NAME must be a plain file name, got `{0}`")]
    ShmName(String),
}

/// Parses a size in the shared syntax ([`protocol::size`]); `default_unit` applies to a bare
/// number.
pub fn parse_size(text: &str, default_unit: u64) -> Result<u64, OptionsError> {
    protocol::size::parse_size_in(text, default_unit)
        .map_err(|_| OptionsError::BadSize(text.to_string()))
}

fn parse_bool(key: &str, value: &str) -> Result<bool, OptionsError> {
    match value {
        "on" | "true" | "yes" | "1" => Ok(true),
        "off" | "false" | "no" | "0" => Ok(false),
        _ => Err(OptionsError::BadValue {
            key: key.into(),
            value: value.into(),
        }),
    }
}

impl IvshmemOptions {
    /// Parses `plain,KEY=VALUE,...`, `doorbell,KEY=VALUE,...` or QEMU's legacy `shm=NAME,size=MB`.
    pub fn parse(text: &str) -> Result<IvshmemOptions, OptionsError> {
        let mut parts = text.split(',').filter(|p| !p.is_empty()).peekable();
        let variant_word = match parts.peek() {
            Some(&w @ ("plain" | "doorbell")) => {
                parts.next();
                w
            }
            Some(w) if w.starts_with("shm=") => "legacy",
            _ => return Err(OptionsError::NoVariant(text.to_string())),
        };

        let mut keys: Vec<(String, Option<String>)> = Vec::new();
        for part in parts {
            let (key, value) = match part.split_once('=') {
                Some((k, v)) => (k.to_string(), Some(v.to_string())),
                None => (part.to_string(), None),
            };
            if keys.iter().any(|(k, _)| *k == key) {
                return Err(OptionsError::Duplicate(key));
            }
            keys.push((key, value));
        }
        let mut take = |key: &str| -> Option<Option<String>> {
            let i = keys.iter().position(|(k, _)| k == key)?;
            Some(keys.remove(i).1)
        };
        let value =
            |key: &str, v: Option<Option<String>>| -> Result<Option<String>, OptionsError> {
                match v {
                    None => Ok(None),
                    Some(Some(v)) => Ok(Some(v)),
                    Some(None) => Err(OptionsError::MissingValue { key: key.into() }),
                }
            };

        let mapping = match value("mapping", take("mapping"))?.as_deref() {
            None | Some("slot") => Bar2Mapping::Slot,
            Some("trap") => Bar2Mapping::Trap,
            Some(other) => {
                return Err(OptionsError::BadValue {
                    key: "mapping".into(),
                    value: other.into(),
                })
            }
        };

        let variant = match variant_word {
            "doorbell" => {
                let socket =
                    value("socket", take("socket"))?.ok_or(OptionsError::DoorbellSocket)?;
                let vectors = match value("vectors", take("vectors"))? {
                    None => 1,
                    Some(v) => v.parse().map_err(|_| OptionsError::BadValue {
                        key: "vectors".into(),
                        value: v.clone(),
                    })?,
                };
                if vectors == 0 || vectors > MAX_VECTORS {
                    return Err(OptionsError::Vectors(vectors));
                }
                let ioeventfd = match value("ioeventfd", take("ioeventfd"))? {
                    None => true,
                    Some(v) => parse_bool("ioeventfd", &v)?,
                };
                IvshmemVariant::Doorbell {
                    socket: PathBuf::from(socket),
                    vectors,
                    ioeventfd,
                }
            }
            plain_or_legacy => {
                // The legacy spelling's bare size is in MiB, as QEMU's old `size=` was.
                let unit = if plain_or_legacy == "legacy" {
                    1 << 20
                } else {
                    1
                };
                let size = value("size", take("size"))?
                    .map(|s| parse_size(&s, unit))
                    .transpose()?;
                let path = value("path", take("path"))?;
                let shm = value("shm", take("shm"))?;
                let memfd = take("memfd").is_some();
                let source = match (path, shm, memfd) {
                    (Some(p), None, false) => SharedMemorySource::File(PathBuf::from(p)),
                    (None, Some(name), false) => {
                        if name.is_empty() || name.contains('/') || name == "." || name == ".." {
                            return Err(OptionsError::ShmName(name));
                        }
                        SharedMemorySource::File(PathBuf::from("/dev/shm").join(name))
                    }
                    (None, None, true) if plain_or_legacy == "plain" => {
                        if size.is_none() {
                            return Err(OptionsError::MemfdSize);
                        }
                        SharedMemorySource::Memfd
                    }
                    _ => return Err(OptionsError::PlainSource),
                };
                if let Some(size) = size {
                    if !size.is_power_of_two() {
                        return Err(OptionsError::SizeNotPowerOfTwo(size));
                    }
                }
                IvshmemVariant::Plain { source, size }
            }
        };
        if let Some((key, _)) = keys.first() {
            let known = [
                "path",
                "shm",
                "memfd",
                "size",
                "socket",
                "vectors",
                "ioeventfd",
            ];
            return Err(if known.contains(&key.as_str()) {
                OptionsError::NotApplicable(key.clone())
            } else {
                OptionsError::UnknownKey(key.clone())
            });
        }
        Ok(IvshmemOptions { variant, mapping })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn plain(source: SharedMemorySource, size: Option<u64>) -> IvshmemVariant {
        IvshmemVariant::Plain { source, size }
    }

    #[test]
    fn plain_path_with_size() {
        let o = IvshmemOptions::parse("plain,path=/tmp/x,size=4M").unwrap();
        assert_eq!(
            o.variant,
            plain(SharedMemorySource::File("/tmp/x".into()), Some(4 << 20))
        );
        assert_eq!(o.mapping, Bar2Mapping::Slot);
    }

    #[test]
    fn plain_shm_means_dev_shm() {
        let o = IvshmemOptions::parse("plain,shm=hello,size=1G,mapping=trap").unwrap();
        assert_eq!(
            o.variant,
            plain(
                SharedMemorySource::File("/dev/shm/hello".into()),
                Some(1 << 30)
            )
        );
        assert_eq!(o.mapping, Bar2Mapping::Trap);
    }

    #[test]
    fn legacy_spelling_size_in_mib() {
        let o = IvshmemOptions::parse("shm=hello,size=1").unwrap();
        assert_eq!(
            o.variant,
            plain(
                SharedMemorySource::File("/dev/shm/hello".into()),
                Some(1 << 20)
            )
        );
    }

    #[test]
    fn plain_memfd_needs_size() {
        assert_eq!(
            IvshmemOptions::parse("plain,memfd"),
            Err(OptionsError::MemfdSize)
        );
        let o = IvshmemOptions::parse("plain,memfd,size=2M").unwrap();
        assert_eq!(o.variant, plain(SharedMemorySource::Memfd, Some(2 << 20)));
    }

    #[test]
    fn doorbell_defaults_and_values() {
        let o = IvshmemOptions::parse("doorbell,socket=/tmp/s").unwrap();
        assert_eq!(
            o.variant,
            IvshmemVariant::Doorbell {
                socket: "/tmp/s".into(),
                vectors: 1,
                ioeventfd: true
            }
        );
        let o = IvshmemOptions::parse("doorbell,socket=/tmp/s,vectors=4,ioeventfd=off").unwrap();
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
    fn errors_name_the_problem() {
        use OptionsError::*;
        let cases: &[(&str, OptionsError)] = &[
            ("", NoVariant("".into())),
            ("virtio", NoVariant("virtio".into())),
            ("plain", PlainSource),
            ("plain,path=/a,shm=b", PlainSource),
            ("plain,path=/a,size=3M", SizeNotPowerOfTwo(3 << 20)),
            ("plain,path=/a,size=4Q", BadSize("4Q".into())),
            (
                "plain,path=/a,size=99999999999T",
                BadSize("99999999999T".into()),
            ),
            ("plain,shm=../etc,size=1M", ShmName("../etc".into())),
            ("plain,path=/a,colour=red", UnknownKey("colour".into())),
            ("plain,path=/a,vectors=2", NotApplicable("vectors".into())),
            ("plain,path=/a,path=/b", Duplicate("path".into())),
            ("doorbell", DoorbellSocket),
            (
                "doorbell,socket",
                MissingValue {
                    key: "socket".into(),
                },
            ),
            ("doorbell,socket=/s,vectors=0", Vectors(0)),
            ("doorbell,socket=/s,vectors=5000", Vectors(5000)),
            (
                "doorbell,socket=/s,vectors=x",
                BadValue {
                    key: "vectors".into(),
                    value: "x".into(),
                },
            ),
            (
                "doorbell,socket=/s,mapping=fast",
                BadValue {
                    key: "mapping".into(),
                    value: "fast".into(),
                },
            ),
            ("doorbell,socket=/s,size=1M", NotApplicable("size".into())),
        ];
        for (text, want) in cases {
            assert_eq!(&IvshmemOptions::parse(text).unwrap_err(), want, "{text}");
        }
    }
}
