//! Sizes on command lines: one rule set for every tool here (the server's `-l`, the VMM's
//! `--memory`, `--ivshmem ...,size=`, `--device pci-testdev,ram=`), QEMU's as far as it goes:
//!
//! - a decimal number, or a `0x` hexadecimal number (bytes, no suffix);
//! - an optional suffix `B` (bytes), `K`, `M`, `G` or `T` (binary: 1K = 1024), in either case;
//!   without a suffix the caller's default unit applies (bytes, or MiB for `--memory` as in
//!   QEMU's `-m`);
//! - a decimal fraction only together with a K/M/G/T suffix (`1.5G`), rounded down to a whole
//!   byte, as QEMU does; `1.5` alone is rejected since it cannot mean a byte count;
//! - no signs, spaces or other characters; a value beyond 64 bits is [`SizeError::TooLarge`].
//!
//! Limits specific to one use (non-zero, a power of two, a maximum) are the caller's.

/// Why a size was refused; both carry the text as given.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SizeError {
    /// Not a number with an optional suffix.
    #[error("cannot parse size '{0}': expected a number with an optional B, K, M, G or T suffix")]
    Invalid(String),
    /// The number or its suffix's multiple does not fit in 64 bits.
    #[error("size '{0}' is too large")]
    TooLarge(String),
}

/// Parses a size whose bare number is in bytes.
pub fn parse_size(text: &str) -> Result<u64, SizeError> {
    parse_size_in(text, 1)
}

/// Parses a size whose bare number is in units of `default_unit` bytes (e.g. `1 << 20`).
pub fn parse_size_in(text: &str, default_unit: u64) -> Result<u64, SizeError> {
    let invalid = || SizeError::Invalid(text.to_string());
    let too_large = || SizeError::TooLarge(text.to_string());
    if let Some(hex) = text.strip_prefix("0x").or_else(|| text.strip_prefix("0X")) {
        if hex.is_empty() || !hex.bytes().all(|b| b.is_ascii_hexdigit()) {
            return Err(invalid());
        }
        return u64::from_str_radix(hex, 16).map_err(|_| too_large());
    }
    let (number, unit, suffixed) = match text.bytes().last() {
        Some(c) if c.is_ascii_alphabetic() => {
            let shift = match c.to_ascii_uppercase() {
                b'B' => 0,
                b'K' => 10,
                b'M' => 20,
                b'G' => 30,
                b'T' => 40,
                _ => return Err(invalid()),
            };
            (&text[..text.len() - 1], 1u64 << shift, shift > 0)
        }
        _ => (text, default_unit, false),
    };
    let (int, frac) = number.split_once('.').unwrap_or((number, ""));
    let all_digits = |s: &str| s.bytes().all(|b| b.is_ascii_digit());
    let has_point = number.contains('.');
    if int.is_empty()
        || !all_digits(int)
        || !all_digits(frac)
        || (has_point && (frac.is_empty() || !suffixed))
    {
        return Err(invalid());
    }
    let whole = int
        .parse::<u64>()
        .map_err(|_| too_large())?
        .checked_mul(unit)
        .ok_or_else(too_large)?;
    // Fraction of a unit, rounded down; only the first 18 digits can matter below 2^40.
    let frac = &frac[..frac.len().min(18)];
    let part = if frac.is_empty() {
        0
    } else {
        let numerator: u128 = frac.parse().map_err(|_| invalid())?;
        let scale = 10u128.pow(frac.len() as u32);
        (numerator * u128::from(unit) / scale) as u64
    };
    whole.checked_add(part).ok_or_else(too_large)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bytes_suffixes_and_case() {
        assert_eq!(parse_size("4194304"), Ok(4194304));
        assert_eq!(parse_size("0"), Ok(0));
        assert_eq!(parse_size("100B"), Ok(100));
        assert_eq!(parse_size("100b"), Ok(100));
        assert_eq!(parse_size("1k"), Ok(1024));
        assert_eq!(parse_size("2M"), Ok(2 << 20));
        assert_eq!(parse_size("5g"), Ok(5 << 30));
        assert_eq!(parse_size("1T"), Ok(1 << 40));
        assert_eq!(parse_size("0x1000"), Ok(4096));
        assert_eq!(parse_size("0X1f"), Ok(31));
    }

    #[test]
    fn default_unit_applies_to_bare_numbers_only() {
        assert_eq!(parse_size_in("64", 1 << 20), Ok(64 << 20));
        assert_eq!(parse_size_in("64M", 1 << 20), Ok(64 << 20));
        assert_eq!(parse_size_in("4096B", 1 << 20), Ok(4096));
        assert_eq!(parse_size_in("1G", 1 << 20), Ok(1 << 30));
    }

    #[test]
    fn fractions_need_a_suffix_and_round_down() {
        assert_eq!(parse_size("1.5K"), Ok(1536));
        assert_eq!(parse_size("1.5G"), Ok(3 << 29));
        assert_eq!(parse_size("0.001K"), Ok(1));
        assert_eq!(parse_size("0.0001K"), Ok(0));
        assert_eq!(parse_size("1.0000000000000000000000001M"), Ok(1 << 20));
        for bad in ["1.5", "1.5B", "1.K", ".5K", "1..5K", "0x1.5"] {
            assert_eq!(
                parse_size(bad),
                Err(SizeError::Invalid(bad.into())),
                "{bad}"
            );
        }
    }

    #[test]
    fn malformed_is_invalid() {
        for bad in [
            "", "M", "-1", "+1", "1X", "abc", " 1", "1 ", "0x", "0xg", "1MB", "1KiB", "1e6", "é",
        ] {
            assert_eq!(
                parse_size(bad),
                Err(SizeError::Invalid(bad.into())),
                "{bad}"
            );
        }
    }

    #[test]
    fn overflow_is_too_large() {
        for big in [
            "18446744073709551616",
            "99999999999999999999999999",
            "16777216T",
            "0x10000000000000000",
            "16777216.5T",
        ] {
            assert_eq!(
                parse_size(big),
                Err(SizeError::TooLarge(big.into())),
                "{big}"
            );
        }
        assert_eq!(parse_size("18446744073709551615"), Ok(u64::MAX));
        assert_eq!(parse_size("16777215T"), Ok(16777215 << 40));
        assert_eq!(
            parse_size_in("17592186044416", 1 << 20),
            Err(SizeError::TooLarge("17592186044416".into()))
        );
    }
}
