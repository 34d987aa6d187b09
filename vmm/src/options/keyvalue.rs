//! The one option grammar every device (and `--memory`) is written in:
//! `KIND[,KEY=VALUE|,FLAG]...`, QEMU's `-device` spelling.
//!
//! A key may appear once; a key nobody takes is an error naming it and the keys that exist, so
//! every device refuses the same mistakes the same way. Values are typed by the taker (sizes,
//! numbers in a range, on/off switches, paths).
use std::path::PathBuf;
use std::str::FromStr;

/// Why an option string was refused. Each names the device kind and the offending key or value.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum OptionError {
    /// Nothing before the first comma.
    #[error("empty option string (expected KIND[,KEY=VALUE]...)")]
    Empty,
    /// A kind no device has.
    #[error("unknown device `{kind}` (have: {known})")]
    UnknownKind {
        /// What was given.
        kind: String,
        /// The kinds that exist, comma-separated.
        known: String,
    },
    /// A key given twice.
    #[error("{kind}: `{key}` given twice")]
    Duplicate {
        /// The device kind.
        kind: String,
        /// The key.
        key: String,
    },
    /// A key the kind does not have.
    #[error("{kind}: unknown key `{key}` (have: {known})")]
    UnknownKey {
        /// The device kind.
        kind: String,
        /// The key.
        key: String,
        /// The keys this kind takes, comma-separated.
        known: String,
    },
    /// A key that needs a value came bare.
    #[error("{kind}: `{key}` needs a value ({key}=...)")]
    MissingValue {
        /// The device kind.
        kind: String,
        /// The key.
        key: String,
    },
    /// A flag (a bare word) given a value.
    #[error("{kind}: `{key}` is a flag and takes no value")]
    UnexpectedValue {
        /// The device kind.
        kind: String,
        /// The key.
        key: String,
    },
    /// A required key is absent.
    #[error("{kind}: needs {key}=...")]
    Required {
        /// The device kind.
        kind: String,
        /// The key.
        key: String,
    },
    /// A value that does not parse or is out of range for its key.
    #[error("{kind}: {key}={value:?}: {expected}")]
    BadValue {
        /// The device kind.
        kind: String,
        /// The key.
        key: String,
        /// The value as given.
        value: String,
        /// What would have been accepted.
        expected: String,
    },
    /// Keys that cannot be combined, or a combination that is incomplete.
    #[error("{kind}: {problem}")]
    Conflict {
        /// The device kind.
        kind: String,
        /// What is wrong with the combination.
        problem: String,
    },
}

/// A parsed `KIND,KEY=VALUE,...` string whose keys are taken one by one, then checked for
/// leftovers with [`KeyValues::finish`].
#[derive(Debug)]
pub struct KeyValues {
    kind: String,
    pairs: Vec<(String, Option<String>)>,
    known: Vec<&'static str>,
}

impl KeyValues {
    /// Splits `text` into its kind (the first item) and its keys.
    pub fn parse(text: &str) -> Result<KeyValues, OptionError> {
        let mut items = text.split(',');
        let kind = items.next().unwrap_or_default();
        if kind.is_empty() {
            return Err(OptionError::Empty);
        }
        Self::with_kind(kind, items)
    }

    /// Like [`KeyValues::parse`] for strings that carry no kind word: `kind` is given, every
    /// item of `text` is a key.
    pub fn parse_keys(kind: &str, text: &str) -> Result<KeyValues, OptionError> {
        Self::with_kind(kind, text.split(','))
    }

    fn with_kind<'a>(
        kind: &str,
        items: impl Iterator<Item = &'a str>,
    ) -> Result<KeyValues, OptionError> {
        let mut pairs: Vec<(String, Option<String>)> = Vec::new();
        for item in items.filter(|i| !i.is_empty()) {
            let (key, value) = match item.split_once('=') {
                Some((k, v)) => (k, Some(v.to_string())),
                None => (item, None),
            };
            if pairs.iter().any(|(k, _)| k == key) {
                return Err(OptionError::Duplicate {
                    kind: kind.into(),
                    key: key.into(),
                });
            }
            pairs.push((key.to_string(), value));
        }
        Ok(KeyValues {
            kind: kind.to_string(),
            pairs,
            known: Vec::new(),
        })
    }

    /// The kind word.
    pub fn kind(&self) -> &str {
        &self.kind
    }

    fn take_raw(&mut self, key: &'static str) -> Option<Option<String>> {
        self.known.push(key);
        let at = self.pairs.iter().position(|(k, _)| k == key)?;
        Some(self.pairs.remove(at).1)
    }

    /// The value of `key`, if given.
    pub fn string(&mut self, key: &'static str) -> Result<Option<String>, OptionError> {
        match self.take_raw(key) {
            None => Ok(None),
            Some(Some(value)) => Ok(Some(value)),
            Some(None) => Err(OptionError::MissingValue {
                kind: self.kind.clone(),
                key: key.into(),
            }),
        }
    }

    /// The value of `key`, which must be given.
    pub fn required(&mut self, key: &'static str) -> Result<String, OptionError> {
        self.string(key)?.ok_or_else(|| OptionError::Required {
            kind: self.kind.clone(),
            key: key.into(),
        })
    }

    /// A path value.
    pub fn path(&mut self, key: &'static str) -> Result<Option<PathBuf>, OptionError> {
        match self.string(key)? {
            Some(p) if p.is_empty() => Err(self.bad(key, &p, "a path")),
            other => Ok(other.map(PathBuf::from)),
        }
    }

    /// Whether the bare flag `key` is present (`KIND,memfd`).
    pub fn flag(&mut self, key: &'static str) -> Result<bool, OptionError> {
        match self.take_raw(key) {
            None => Ok(false),
            Some(None) => Ok(true),
            Some(Some(_)) => Err(OptionError::UnexpectedValue {
                kind: self.kind.clone(),
                key: key.into(),
            }),
        }
    }

    /// An on/off switch (`on|off`, also `true|false|yes|no|1|0`).
    pub fn switch(&mut self, key: &'static str) -> Result<Option<bool>, OptionError> {
        let Some(value) = self.string(key)? else {
            return Ok(None);
        };
        match value.as_str() {
            "on" | "true" | "yes" | "1" => Ok(Some(true)),
            "off" | "false" | "no" | "0" => Ok(Some(false)),
            _ => Err(self.bad(key, &value, "on or off")),
        }
    }

    /// A size with an optional K/M/G/T suffix ([`protocol::size`]); `default_unit` applies to a
    /// bare number.
    pub fn size(
        &mut self,
        key: &'static str,
        default_unit: u64,
    ) -> Result<Option<u64>, OptionError> {
        let Some(value) = self.string(key)? else {
            return Ok(None);
        };
        protocol::size::parse_size_in(&value, default_unit)
            .map(Some)
            .map_err(|_| {
                self.bad(
                    key,
                    &value,
                    "a size: a number with an optional K, M, G or T suffix",
                )
            })
    }

    /// A number in `range`.
    pub fn number<T>(
        &mut self,
        key: &'static str,
        range: std::ops::RangeInclusive<T>,
    ) -> Result<Option<T>, OptionError>
    where
        T: FromStr + PartialOrd + std::fmt::Display,
    {
        let Some(value) = self.string(key)? else {
            return Ok(None);
        };
        match value.parse::<T>() {
            Ok(n) if range.contains(&n) => Ok(Some(n)),
            _ => Err(self.bad(
                key,
                &value,
                &format!("a number from {} to {}", range.start(), range.end()),
            )),
        }
    }

    /// One of `choices`.
    pub fn choice(
        &mut self,
        key: &'static str,
        choices: &[&'static str],
    ) -> Result<Option<&'static str>, OptionError> {
        let Some(value) = self.string(key)? else {
            return Ok(None);
        };
        match choices.iter().find(|c| **c == value) {
            Some(c) => Ok(Some(c)),
            None => Err(self.bad(key, &value, &format!("one of {}", choices.join(", ")))),
        }
    }

    /// A [`OptionError::BadValue`] for `key`.
    pub fn bad(&self, key: &str, value: &str, expected: &str) -> OptionError {
        OptionError::BadValue {
            kind: self.kind.clone(),
            key: key.into(),
            value: value.into(),
            expected: expected.into(),
        }
    }

    /// A [`OptionError::Conflict`] for this kind.
    pub fn conflict(&self, problem: impl Into<String>) -> OptionError {
        OptionError::Conflict {
            kind: self.kind.clone(),
            problem: problem.into(),
        }
    }

    /// Fails on the first key no taker asked for.
    pub fn finish(self) -> Result<(), OptionError> {
        match self.pairs.into_iter().next() {
            None => Ok(()),
            Some((key, _)) => {
                let mut known = self.known;
                known.sort_unstable();
                known.dedup();
                Err(OptionError::UnknownKey {
                    kind: self.kind,
                    key,
                    known: if known.is_empty() {
                        "none".into()
                    } else {
                        known.join(", ")
                    },
                })
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kind_keys_and_flags() {
        let mut kv = KeyValues::parse("dev,a=1,flag,size=4M").unwrap();
        assert_eq!(kv.kind(), "dev");
        assert_eq!(kv.number("a", 0u32..=9).unwrap(), Some(1));
        assert!(kv.flag("flag").unwrap());
        assert_eq!(kv.size("size", 1).unwrap(), Some(4 << 20));
        assert_eq!(kv.string("absent").unwrap(), None);
        kv.finish().unwrap();
    }

    #[test]
    fn every_kind_refuses_the_same_mistakes() {
        assert_eq!(KeyValues::parse("").unwrap_err(), OptionError::Empty);
        assert!(matches!(
            KeyValues::parse("d,a=1,a=2").unwrap_err(),
            OptionError::Duplicate { key, .. } if key == "a"
        ));
        let mut kv = KeyValues::parse("d,a=1,colour=red").unwrap();
        kv.string("a").unwrap();
        assert_eq!(
            kv.finish().unwrap_err().to_string(),
            "d: unknown key `colour` (have: a)"
        );
        let mut kv = KeyValues::parse("d,a").unwrap();
        assert!(matches!(
            kv.string("a"),
            Err(OptionError::MissingValue { .. })
        ));
        let mut kv = KeyValues::parse("d,f=1").unwrap();
        assert!(matches!(
            kv.flag("f"),
            Err(OptionError::UnexpectedValue { .. })
        ));
        let mut kv = KeyValues::parse("d,n=0").unwrap();
        assert_eq!(
            kv.number("n", 1u32..=8).unwrap_err().to_string(),
            "d: n=\"0\": a number from 1 to 8"
        );
        let mut kv = KeyValues::parse("d,s=4Q,o=maybe").unwrap();
        assert!(matches!(kv.size("s", 1), Err(OptionError::BadValue { .. })));
        assert!(matches!(kv.switch("o"), Err(OptionError::BadValue { .. })));
        let mut kv = KeyValues::parse("d").unwrap();
        assert!(matches!(
            kv.required("socket"),
            Err(OptionError::Required { .. })
        ));
    }

    #[test]
    fn keys_without_a_kind_word() {
        let mut kv = KeyValues::parse_keys("memory", "size=1G,shared=on").unwrap();
        assert_eq!(kv.size("size", 1 << 20).unwrap(), Some(1 << 30));
        assert_eq!(kv.switch("shared").unwrap(), Some(true));
        kv.finish().unwrap();
    }
}
