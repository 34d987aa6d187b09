//! `--memory SIZE[,shared=on|off][,hugepages=on|off]` (also `size=SIZE,...`) into typed
//! [`MemoryOptions`]. A bare size number is MiB, as QEMU's `-m`.
use super::keyvalue::{KeyValues, OptionError};
use crate::memory::{MemoryOptions, RamBacking};

/// Parses a `--memory` value.
pub fn parse_memory(text: &str) -> Result<MemoryOptions, OptionError> {
    // `512M,...` is `size=512M,...`: every item is then a key of the one grammar.
    let text = match text.split(',').next() {
        Some(first) if !first.is_empty() && !first.contains('=') => format!("size={text}"),
        _ => text.to_string(),
    };
    let mut kv = KeyValues::parse_keys("memory", &text)?;
    let size = kv.size("size", 1 << 20)?;
    let backing = RamBacking {
        shared: kv.switch("shared")?.unwrap_or(false),
        hugepages: kv.switch("hugepages")?.unwrap_or(false),
    };
    let size = size.ok_or_else(|| kv.conflict("needs a size (e.g. 512M or size=512M)"))?;
    kv.finish()?;
    Ok(MemoryOptions { size, backing })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn spellings() {
        let plain = parse_memory("512M").unwrap();
        assert_eq!(plain.size, 512 << 20);
        assert_eq!(plain.backing, RamBacking::default());
        assert_eq!(
            parse_memory("64").unwrap().size,
            64 << 20,
            "bare numbers are MiB"
        );
        let shared = parse_memory("512M,shared=on").unwrap();
        assert!(shared.backing.shared && !shared.backing.hugepages);
        let both = parse_memory("size=1G,shared=on,hugepages=on").unwrap();
        assert_eq!(both.size, 1 << 30);
        assert!(both.backing.shared && both.backing.hugepages);
    }

    #[test]
    fn refusals_name_the_problem() {
        for (text, expected) in [
            ("512M,shared=maybe", "shared"),
            ("shared=on", "needs a size"),
            ("512M,colour=red", "unknown key `colour`"),
            ("512M,shared=on,shared=off", "given twice"),
        ] {
            let error = parse_memory(text).unwrap_err().to_string();
            assert!(error.contains(expected), "{text}: {error}");
        }
    }
}
