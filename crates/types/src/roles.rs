use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// The roles a node can run; any mix is allowed on one node.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Role {
    MetadataServer,
    LogServer,
    HttpIngress,
    Worker,
    Admin,
}

impl Role {
    /// Every role, in start-up order (see the node's role scheduler).
    pub const ALL: [Role; 5] = [
        Role::MetadataServer,
        Role::LogServer,
        Role::HttpIngress,
        Role::Worker,
        Role::Admin,
    ];

    pub fn as_str(&self) -> &'static str {
        match self {
            Role::MetadataServer => "metadata-server",
            Role::LogServer => "log-server",
            Role::HttpIngress => "http-ingress",
            Role::Worker => "worker",
            Role::Admin => "admin",
        }
    }
}

impl fmt::Display for Role {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("unknown role `{0}`: expected one of metadata-server, log-server, http-ingress, worker, admin")]
pub struct ParseRoleError(pub String);

impl FromStr for Role {
    type Err = ParseRoleError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s.trim() {
            "metadata-server" | "metadata-store" => Ok(Role::MetadataServer),
            "log-server" => Ok(Role::LogServer),
            "http-ingress" | "ingress" => Ok(Role::HttpIngress),
            "worker" => Ok(Role::Worker),
            "admin" => Ok(Role::Admin),
            other => Err(ParseRoleError(other.to_owned())),
        }
    }
}

impl Serialize for Role {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(self.as_str())
    }
}

impl<'de> Deserialize<'de> for Role {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let text = String::deserialize(deserializer)?;
        text.parse().map_err(serde::de::Error::custom)
    }
}
