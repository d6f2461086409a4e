use std::fmt;

use serde::{Deserialize, Serialize};

/// Version of a metadata value. 0 is invalid; the first version is 1 and versions only grow.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(transparent)]
pub struct Version(pub u32);

impl Version {
    pub const INVALID: Version = Version(0);
    pub const MIN: Version = Version(1);

    pub fn next(self) -> Version {
        Version(self.0.saturating_add(1))
    }
}

impl fmt::Display for Version {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "v{}", self.0)
    }
}

/// A value with its version, as the metadata store keeps it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct VersionedValue {
    pub version: Version,
    #[serde(with = "serde_bytes_compat")]
    pub value: Vec<u8>,
}

impl VersionedValue {
    pub fn new(version: Version, value: impl Into<Vec<u8>>) -> Self {
        Self {
            version,
            value: value.into(),
        }
    }
}

/// What must hold for a write to apply; checked atomically with the write.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum Precondition {
    /// Write unconditionally.
    None,
    /// The key must not exist.
    DoesNotExist,
    /// The key must exist with exactly this version.
    MatchesVersion(Version),
}

impl fmt::Display for Precondition {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Precondition::None => f.write_str("none"),
            Precondition::DoesNotExist => f.write_str("does not exist"),
            Precondition::MatchesVersion(version) => write!(f, "version {}", version.0),
        }
    }
}

impl Precondition {
    /// Checks the precondition against the current version of the key (`None` = absent).
    pub fn check(&self, current: Option<Version>) -> Result<(), String> {
        match (self, current) {
            (Precondition::None, _) | (Precondition::DoesNotExist, None) => Ok(()),
            (Precondition::DoesNotExist, Some(actual)) => Err(format!(
                "expected the key to not exist, but it exists with version {}",
                actual.0
            )),
            (Precondition::MatchesVersion(expected), Some(actual)) if *expected == actual => Ok(()),
            (Precondition::MatchesVersion(expected), Some(actual)) => Err(format!(
                "expected version {}, but the stored version is {}",
                expected.0, actual.0
            )),
            (Precondition::MatchesVersion(expected), None) => {
                Err(format!("expected version {}, but the key does not exist", expected.0))
            }
        }
    }
}

/// Bytes as a compact byte string in binary formats (not a sequence of numbers).
mod serde_bytes_compat {
    use serde::{Deserializer, Serializer};

    pub fn serialize<S: Serializer>(bytes: &[u8], serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_bytes(bytes)
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(deserializer: D) -> Result<Vec<u8>, D::Error> {
        struct Visitor;
        impl<'de> serde::de::Visitor<'de> for Visitor {
            type Value = Vec<u8>;

            fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str("bytes")
            }

            fn visit_bytes<E: serde::de::Error>(self, v: &[u8]) -> Result<Self::Value, E> {
                Ok(v.to_vec())
            }

            fn visit_byte_buf<E: serde::de::Error>(self, v: Vec<u8>) -> Result<Self::Value, E> {
                Ok(v)
            }

            fn visit_seq<A: serde::de::SeqAccess<'de>>(self, mut seq: A) -> Result<Self::Value, A::Error> {
                let mut out = Vec::with_capacity(seq.size_hint().unwrap_or(0));
                while let Some(byte) = seq.next_element::<u8>()? {
                    out.push(byte);
                }
                Ok(out)
            }
        }
        deserializer.deserialize_bytes(Visitor)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn preconditions_explain_mismatches() {
        assert!(Precondition::None.check(Some(Version(3))).is_ok());
        assert!(Precondition::DoesNotExist.check(None).is_ok());
        assert!(Precondition::MatchesVersion(Version(2)).check(Some(Version(2))).is_ok());
        let err = Precondition::MatchesVersion(Version(2))
            .check(Some(Version(3)))
            .unwrap_err();
        assert!(
            err.contains("expected version 2") && err.contains("stored version is 3"),
            "{err}"
        );
        assert!(Precondition::DoesNotExist.check(Some(Version(1))).is_err());
        assert!(Precondition::MatchesVersion(Version(1)).check(None).is_err());
    }
}
