use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

/// A node's id inside its cluster, stable across restarts (`N1`, `N2`, …). Id 0 is reserved.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(transparent)]
pub struct PlainNodeId(pub u32);

impl PlainNodeId {
    pub const fn new(id: u32) -> Self {
        Self(id)
    }

    pub fn with_generation(self, generation: u32) -> GenerationalNodeId {
        GenerationalNodeId { id: self, generation }
    }
}

impl fmt::Display for PlainNodeId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "N{}", self.0)
    }
}

impl FromStr for PlainNodeId {
    type Err = String;

    /// Accepts `N3` and `3`, as operators type both.
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let digits = s.strip_prefix(['N', 'n']).unwrap_or(s);
        match digits.parse::<u32>() {
            Ok(0) => Err(format!("node id `{s}` is invalid: 0 is reserved")),
            Ok(id) => Ok(Self(id)),
            Err(_) => Err(format!("node id `{s}` is invalid: expected N<number> or <number>")),
        }
    }
}

/// A node id plus the generation of the process currently holding it (`N1:3`).
///
/// The generation is bumped on every restart, so messages from an older incarnation
/// of a node can be told apart and fenced.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct GenerationalNodeId {
    pub id: PlainNodeId,
    pub generation: u32,
}

impl fmt::Display for GenerationalNodeId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}", self.id, self.generation)
    }
}

impl FromStr for GenerationalNodeId {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let (id, generation) = s
            .split_once(':')
            .ok_or_else(|| format!("`{s}` is not a generational node id: expected N<id>:<generation>"))?;
        let id: PlainNodeId = id.parse()?;
        let generation = generation
            .parse()
            .map_err(|_| format!("`{s}` has an invalid generation: expected a number after `:`"))?;
        Ok(Self { id, generation })
    }
}

/// Random non-zero number chosen at provisioning; every cluster RPC carries it, so
/// nodes of two clusters that happen to share a name can never mix.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(transparent)]
pub struct ClusterFingerprint(pub u64);

const BASE62: &[u8; 62] = b"0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz";

impl ClusterFingerprint {
    pub fn generate() -> Self {
        loop {
            let value: u64 = rand::random();
            if value != 0 {
                return Self(value);
            }
        }
    }
}

impl fmt::Display for ClusterFingerprint {
    /// 11 base62 characters, as operators see it in `restatectl status`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut value = self.0;
        let mut out = [b'0'; 11];
        for slot in out.iter_mut().rev() {
            *slot = BASE62[(value % 62) as usize];
            value /= 62;
        }
        f.write_str(std::str::from_utf8(&out).map_err(|_| fmt::Error)?)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn node_ids_round_trip_through_text() {
        let id: GenerationalNodeId = "N3:7".parse().unwrap();
        assert_eq!(id, PlainNodeId(3).with_generation(7));
        assert_eq!(id.to_string(), "N3:7");
        assert_eq!("4".parse::<PlainNodeId>().unwrap(), PlainNodeId(4));
        assert!("N0".parse::<PlainNodeId>().is_err());
        assert!("N1".parse::<GenerationalNodeId>().is_err());
    }

    #[test]
    fn fingerprint_prints_as_eleven_base62_chars() {
        assert_eq!(ClusterFingerprint(1).to_string(), "00000000001");
        assert_eq!(ClusterFingerprint(u64::MAX).to_string().len(), 11);
    }
}
