use std::collections::BTreeMap;
use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// How many copies to keep, and across which failure domains.
///
/// Written as a plain number (`2`, copies on distinct nodes) or per scope
/// (`"{zone: 2, node: 3}"`): at least 2 zones and 3 nodes in total.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReplicationProperty {
    /// Copies per scope; always contains `node`.
    per_scope: BTreeMap<Scope, u8>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
enum Scope {
    Node,
    Zone,
    Region,
}

impl Scope {
    fn name(self) -> &'static str {
        match self {
            Scope::Node => "node",
            Scope::Zone => "zone",
            Scope::Region => "region",
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error(
    "invalid replication `{input}`: {reason}; expected a number such as 2 or a map such as \"{{zone: 2, node: 3}}\""
)]
pub struct ReplicationPropertyError {
    input: String,
    reason: String,
}

impl ReplicationProperty {
    pub fn new(copies: u8) -> Result<Self, ReplicationPropertyError> {
        if copies == 0 {
            return Err(ReplicationPropertyError {
                input: copies.to_string(),
                reason: "at least one copy is needed".into(),
            });
        }
        Ok(Self {
            per_scope: BTreeMap::from([(Scope::Node, copies)]),
        })
    }

    /// Number of distinct nodes that must hold a copy.
    pub fn num_copies(&self) -> u8 {
        self.per_scope.values().copied().max().unwrap_or(1)
    }
}

impl Default for ReplicationProperty {
    fn default() -> Self {
        Self {
            per_scope: BTreeMap::from([(Scope::Node, 1)]),
        }
    }
}

impl fmt::Display for ReplicationProperty {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("{")?;
        for (i, (scope, copies)) in self.per_scope.iter().rev().enumerate() {
            if i > 0 {
                f.write_str(", ")?;
            }
            write!(f, "{}: {copies}", scope.name())?;
        }
        f.write_str("}")
    }
}

impl FromStr for ReplicationProperty {
    type Err = ReplicationPropertyError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let fail = |reason: &str| ReplicationPropertyError {
            input: s.to_owned(),
            reason: reason.to_owned(),
        };
        let trimmed = s.trim();
        if let Ok(copies) = trimmed.parse::<u8>() {
            return Self::new(copies).map_err(|_| fail("at least one copy is needed"));
        }
        let inner = trimmed
            .strip_prefix('{')
            .and_then(|rest| rest.strip_suffix('}'))
            .ok_or_else(|| fail("not a number and not a {scope: copies} map"))?;
        let mut per_scope = BTreeMap::new();
        for part in inner.split(',').map(str::trim).filter(|p| !p.is_empty()) {
            let (scope, copies) = part
                .split_once(':')
                .ok_or_else(|| fail("each entry must look like `scope: copies`"))?;
            let scope = match scope.trim() {
                "node" => Scope::Node,
                "zone" => Scope::Zone,
                "region" => Scope::Region,
                _ => return Err(fail("scopes are node, zone and region")),
            };
            let copies: u8 = copies
                .trim()
                .parse()
                .map_err(|_| fail("copies must be a number from 1 to 255"))?;
            if copies == 0 {
                return Err(fail("copies must be at least 1"));
            }
            if per_scope.insert(scope, copies).is_some() {
                return Err(fail("a scope is named twice"));
            }
        }
        if per_scope.is_empty() {
            return Err(fail("the map is empty"));
        }
        // Copies in a wider scope can never exceed those in a narrower one.
        let mut narrower = 0u8;
        for scope in [Scope::Region, Scope::Zone, Scope::Node] {
            if let Some(&copies) = per_scope.get(&scope) {
                if copies < narrower {
                    return Err(fail("a narrower scope needs at least as many copies as a wider one"));
                }
                narrower = copies;
            }
        }
        let max = per_scope.values().copied().max().unwrap_or(1);
        per_scope.entry(Scope::Node).or_insert(max);
        Ok(Self { per_scope })
    }
}

impl Serialize for ReplicationProperty {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        if self.per_scope.len() == 1 {
            serializer.serialize_u8(self.num_copies())
        } else {
            serializer.serialize_str(&self.to_string())
        }
    }
}

impl<'de> Deserialize<'de> for ReplicationProperty {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct Visitor;
        impl serde::de::Visitor<'_> for Visitor {
            type Value = ReplicationProperty;

            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a number of copies such as 2, or a string such as \"{zone: 2, node: 3}\"")
            }

            fn visit_u64<E: serde::de::Error>(self, v: u64) -> Result<Self::Value, E> {
                let copies = u8::try_from(v)
                    .map_err(|_| E::custom(format!("replication {v} is too large: at most 255 copies")))?;
                ReplicationProperty::new(copies).map_err(E::custom)
            }

            fn visit_i64<E: serde::de::Error>(self, v: i64) -> Result<Self::Value, E> {
                let v = u64::try_from(v).map_err(|_| E::custom(format!("replication {v} must be positive")))?;
                self.visit_u64(v)
            }

            fn visit_str<E: serde::de::Error>(self, v: &str) -> Result<Self::Value, E> {
                v.parse().map_err(E::custom)
            }
        }
        deserializer.deserialize_any(Visitor)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_numbers_and_maps() {
        assert_eq!("2".parse::<ReplicationProperty>().unwrap().num_copies(), 2);
        let scoped: ReplicationProperty = "{zone: 2, node: 3}".parse().unwrap();
        assert_eq!(scoped.num_copies(), 3);
        assert_eq!(scoped.to_string(), "{zone: 2, node: 3}");
        assert_eq!(ReplicationProperty::new(2).unwrap().to_string(), "{node: 2}");
    }

    #[test]
    fn rejects_nonsense_with_the_reason() {
        let err = "{rack: 2}".parse::<ReplicationProperty>().unwrap_err().to_string();
        assert!(err.contains("node, zone and region"), "{err}");
        assert!("0".parse::<ReplicationProperty>().is_err());
        assert!("{zone: 3, node: 2}".parse::<ReplicationProperty>().is_err());
    }
}
