//! Resource ids in Restate's text formats (`inv_1…`, `dp_1…`, `sign_1…`) and the partition
//! keys they carry, byte for byte as the reference server prints and parses them: SDKs, the
//! `restate` CLI and users' scripts pass these strings around, so they must round-trip.
//!
//! Text form: `<prefix>_1<payload>` (`1` is the id-scheme version). Integers are base62
//! (`0-9a-zA-Z`), left-padded with `0` to 11 characters (u64) or 22 (u128); the value encoded
//! is the integer with its bytes swapped (the reference encodes `to_be()` of the number on a
//! little-endian host).

use std::fmt;
use std::str::FromStr;

use base64::Engine;
use base64::engine::general_purpose::{URL_SAFE, URL_SAFE_NO_PAD};
use sha2::{Digest, Sha256};

/// Hash of a target's key: decides the partition of an invocation.
pub type PartitionKey = u64;

const ALPHABET: &[u8; 62] = b"0123456789abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ";
const U64_CHARS: usize = 11;
const U128_CHARS: usize = 22;
const SCHEME_VERSION: char = '1';

/// Why an id string was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum IdParseError {
    #[error("`{id}` is not a {kind} id: it must start with `{prefix}_1`")]
    Prefix {
        id: String,
        kind: &'static str,
        prefix: &'static str,
    },
    #[error("`{id}` is not a {kind} id: expected {expected} characters, got {actual}")]
    Length {
        id: String,
        kind: &'static str,
        expected: usize,
        actual: usize,
    },
    #[error("`{id}` is not a {kind} id: `{character}` is not a base62 digit")]
    Digit {
        id: String,
        kind: &'static str,
        character: char,
    },
    #[error("`{id}` is not a {kind} id: the number it encodes is out of range")]
    Overflow { id: String, kind: &'static str },
    #[error("`{id}` is not a {kind} id: {reason}")]
    Payload {
        id: String,
        kind: &'static str,
        reason: String,
    },
}

fn base62(mut value: u128, width: usize, out: &mut String) {
    let mut digits = vec![b'0'; width];
    for slot in digits.iter_mut().rev() {
        *slot = ALPHABET[(value % 62) as usize];
        value /= 62;
    }
    // `value` is 0 here: 62^11 > 2^64 and 62^22 > 2^128.
    out.extend(digits.into_iter().map(char::from));
}

fn parse_base62(text: &str, bits: u32) -> Result<u128, Result<char, ()>> {
    let mut value: u128 = 0;
    for character in text.chars() {
        let digit = match character {
            '0'..='9' => character as u128 - '0' as u128,
            'a'..='z' => character as u128 - 'a' as u128 + 10,
            'A'..='Z' => character as u128 - 'A' as u128 + 36,
            other => return Err(Ok(other)),
        };
        value = value
            .checked_mul(62)
            .and_then(|v| v.checked_add(digit))
            .ok_or(Err(()))?;
    }
    if bits < 128 && value >> bits != 0 {
        return Err(Err(()));
    }
    Ok(value)
}

fn encode_u64(value: u64, out: &mut String) {
    base62(u128::from(value.swap_bytes()), U64_CHARS, out);
}

fn encode_u128(value: u128, out: &mut String) {
    base62(value.swap_bytes(), U128_CHARS, out);
}

/// Splits `<prefix>_1<payload>` and checks the payload length.
fn payload<'a>(id: &'a str, kind: &'static str, prefix: &'static str, length: usize) -> Result<&'a str, IdParseError> {
    let rest = id
        .strip_prefix(prefix)
        .and_then(|r| r.strip_prefix('_'))
        .and_then(|r| r.strip_prefix(SCHEME_VERSION))
        .ok_or_else(|| IdParseError::Prefix {
            id: id.to_owned(),
            kind,
            prefix,
        })?;
    if rest.len() != length {
        return Err(IdParseError::Length {
            id: id.to_owned(),
            kind,
            expected: prefix.len() + 2 + length,
            actual: id.len(),
        });
    }
    Ok(rest)
}

fn decode_number(id: &str, kind: &'static str, digits: &str, bits: u32) -> Result<u128, IdParseError> {
    parse_base62(digits, bits).map_err(|error| match error {
        Ok(character) => IdParseError::Digit {
            id: id.to_owned(),
            kind,
            character,
        },
        Err(()) => IdParseError::Overflow {
            id: id.to_owned(),
            kind,
        },
    })
}

/// The partition key of a keyed target (virtual object, workflow): XXH3-64 of the key followed
/// by one `0xFF` byte.
pub fn partition_key_of(key: &[u8]) -> PartitionKey {
    let mut hasher = xxhash_rust::xxh3::Xxh3Default::new();
    hasher.update(key);
    hasher.update(&[0xFF]);
    hasher.digest()
}

/// An invocation: the partition key of its target and a 128-bit id within it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, serde::Serialize, serde::Deserialize)]
pub struct InvocationId {
    pub partition_key: PartitionKey,
    pub uuid: u128,
}

/// What a deterministic invocation uuid is derived from.
pub enum InvocationSeed<'a> {
    /// The `run` of a workflow instance: one invocation per workflow key.
    Workflow {
        scope: Option<&'a str>,
        service: &'a str,
        key: &'a str,
    },
    /// A call with an idempotency key: the same key gives the same invocation.
    Idempotent {
        scope: Option<&'a str>,
        service: &'a str,
        key: Option<&'a str>,
        handler: &'a str,
        idempotency_key: &'a str,
    },
}

impl InvocationId {
    pub const PREFIX: &'static str = "inv";
    /// Raw form: partition key then uuid, both big-endian.
    pub const RAW_LEN: usize = 24;

    /// A new invocation with a time-ordered random uuid (a ULID).
    pub fn generate(partition_key: PartitionKey) -> Self {
        Self {
            partition_key,
            uuid: ulid_now(),
        }
    }

    /// The invocation whose uuid is derived from `seed` (first 16 bytes of a SHA-256).
    pub fn deterministic(partition_key: PartitionKey, seed: &InvocationSeed<'_>) -> Self {
        let mut hasher = Sha256::new();
        let mut part = |bytes: &[u8], first: bool| {
            if !first {
                hasher.update(b",");
            }
            hasher.update(bytes);
        };
        match seed {
            InvocationSeed::Workflow { scope, service, key } => {
                part(b"wf", true);
                if let Some(scope) = scope {
                    part(scope.as_bytes(), false);
                }
                part(service.as_bytes(), false);
                part(key.as_bytes(), false);
            }
            InvocationSeed::Idempotent {
                scope,
                service,
                key,
                handler,
                idempotency_key,
            } => {
                part(b"ik", true);
                if let Some(scope) = scope {
                    part(scope.as_bytes(), false);
                }
                part(service.as_bytes(), false);
                if let Some(key) = key {
                    part(key.as_bytes(), false);
                }
                part(handler.as_bytes(), false);
                part(idempotency_key.as_bytes(), false);
            }
        }
        let digest = hasher.finalize();
        let mut first = [0u8; 16];
        first.copy_from_slice(&digest[..16]);
        Self {
            partition_key,
            uuid: u128::from_be_bytes(first),
        }
    }

    pub fn to_raw(&self) -> [u8; Self::RAW_LEN] {
        let mut raw = [0u8; Self::RAW_LEN];
        raw[..8].copy_from_slice(&self.partition_key.to_be_bytes());
        raw[8..].copy_from_slice(&self.uuid.to_be_bytes());
        raw
    }

    pub fn from_raw(raw: &[u8]) -> Option<Self> {
        let partition_key = u64::from_be_bytes(raw.get(..8)?.try_into().ok()?);
        let uuid = u128::from_be_bytes(raw.get(8..Self::RAW_LEN)?.try_into().ok()?);
        (raw.len() == Self::RAW_LEN).then_some(Self { partition_key, uuid })
    }
}

impl fmt::Display for InvocationId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut text = String::with_capacity(38);
        text.push_str(Self::PREFIX);
        text.push('_');
        text.push(SCHEME_VERSION);
        encode_u64(self.partition_key, &mut text);
        encode_u128(self.uuid, &mut text);
        f.write_str(&text)
    }
}

impl FromStr for InvocationId {
    type Err = IdParseError;

    fn from_str(id: &str) -> Result<Self, Self::Err> {
        const KIND: &str = "invocation";
        let digits = payload(id, KIND, Self::PREFIX, U64_CHARS + U128_CHARS)?;
        let (key, uuid) = digits.split_at(U64_CHARS);
        let partition_key = (decode_number(id, KIND, key, 64)? as u64).swap_bytes();
        let uuid = decode_number(id, KIND, uuid, 128)?.swap_bytes();
        Ok(Self { partition_key, uuid })
    }
}

/// A registered deployment: a ULID minted at registration.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct DeploymentId(pub u128);

impl DeploymentId {
    pub const PREFIX: &'static str = "dp";

    pub fn generate() -> Self {
        Self(ulid_now())
    }

    /// Milliseconds since the Unix epoch at which the id was minted.
    pub fn timestamp_millis(&self) -> u64 {
        (self.0 >> 80) as u64
    }
}

impl fmt::Display for DeploymentId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut text = String::with_capacity(26);
        text.push_str(Self::PREFIX);
        text.push('_');
        text.push(SCHEME_VERSION);
        encode_u128(self.0, &mut text);
        f.write_str(&text)
    }
}

impl FromStr for DeploymentId {
    type Err = IdParseError;

    fn from_str(id: &str) -> Result<Self, Self::Err> {
        const KIND: &str = "deployment";
        let digits = payload(id, KIND, Self::PREFIX, U128_CHARS)?;
        Ok(Self(decode_number(id, KIND, digits, 128)?.swap_bytes()))
    }
}

/// Stored and exchanged in its text form (`dp_1…`), so JSON metadata stays readable.
impl serde::Serialize for DeploymentId {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_str(self)
    }
}

impl<'de> serde::Deserialize<'de> for DeploymentId {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let text = String::deserialize(deserializer)?;
        text.parse().map_err(serde::de::Error::custom)
    }
}

/// An awakeable (a signal of an invocation, from service protocol V4 on): the invocation and
/// the signal index, as `sign_1` + unpadded base64url of the raw invocation id and the index
/// (big-endian u32).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct AwakeableId {
    pub invocation: InvocationId,
    pub signal_index: u32,
}

impl AwakeableId {
    pub const PREFIX: &'static str = "sign";
    /// The lowest signal index of an awakeable: 1 is cancel and 2–16 are reserved, so an id
    /// naming one of those would let whoever holds it signal the invocation in other ways.
    pub const FIRST_SIGNAL_INDEX: u32 = 17;
}

impl fmt::Display for AwakeableId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut raw = Vec::with_capacity(InvocationId::RAW_LEN + 4);
        raw.extend_from_slice(&self.invocation.to_raw());
        raw.extend_from_slice(&self.signal_index.to_be_bytes());
        write!(f, "{}_{SCHEME_VERSION}{}", Self::PREFIX, URL_SAFE_NO_PAD.encode(raw))
    }
}

impl FromStr for AwakeableId {
    type Err = IdParseError;

    fn from_str(id: &str) -> Result<Self, Self::Err> {
        const KIND: &str = "awakeable";
        let text = id.strip_prefix("sign_1").ok_or_else(|| IdParseError::Prefix {
            id: id.to_owned(),
            kind: KIND,
            prefix: Self::PREFIX,
        })?;
        let invalid = |reason: String| IdParseError::Payload {
            id: id.to_owned(),
            kind: KIND,
            reason,
        };
        // Padding is accepted on input.
        let raw = match text.ends_with('=') {
            true => URL_SAFE.decode(text),
            false => URL_SAFE_NO_PAD.decode(text),
        }
        .map_err(|e| invalid(format!("not base64url: {e}")))?;
        if raw.len() != InvocationId::RAW_LEN + 4 {
            return Err(invalid(format!("{} bytes instead of 28", raw.len())));
        }
        let invocation =
            InvocationId::from_raw(&raw[..InvocationId::RAW_LEN]).ok_or_else(|| invalid("bad invocation id".into()))?;
        let mut index = [0u8; 4];
        index.copy_from_slice(&raw[InvocationId::RAW_LEN..]);
        let signal_index = u32::from_be_bytes(index);
        if signal_index < Self::FIRST_SIGNAL_INDEX {
            return Err(invalid(format!(
                "signal index {signal_index} is reserved; awakeables use {} and up",
                Self::FIRST_SIGNAL_INDEX
            )));
        }
        Ok(Self {
            invocation,
            signal_index,
        })
    }
}

/// A ULID as a u128: 48 bits of Unix milliseconds, then 80 random bits.
fn ulid_now() -> u128 {
    let millis = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
        & ((1 << 48) - 1);
    let random: u128 = rand::random::<u128>() & ((1u128 << 80) - 1);
    (u128::from(millis) << 80) | random
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn partition_keys_match_the_reference() {
        assert_eq!(partition_key_of(b"key1"), 0xf35c_8969_f46f_05de);
    }

    #[test]
    fn an_anchor_invocation_id_round_trips_and_names_its_partition_key() {
        let text = "inv_1j3OsqQPRzR97ms55EYVgziYOU2byMLXnf";
        let id: InvocationId = text.parse().unwrap();
        assert_eq!(id.partition_key, partition_key_of(b"key1"));
        assert_eq!(id.to_string(), text);
        assert_eq!(InvocationId::from_raw(&id.to_raw()), Some(id));
    }

    #[test]
    fn idempotent_invocation_ids_are_derived_like_the_reference() {
        let seed = InvocationSeed::Idempotent {
            scope: None,
            service: "counter",
            key: Some("key2"),
            handler: "add",
            idempotency_key: "abc",
        };
        let id = InvocationId::deterministic(partition_key_of(b"key2"), &seed);
        assert_eq!(id.to_string(), "inv_12jEIreh2T2c1deJ9frclQ4XcZwYJeoaia");
    }

    #[test]
    fn generated_ids_round_trip() {
        let id = InvocationId::generate(partition_key_of(b"alice"));
        assert_eq!(id.to_string().len(), 38);
        assert_eq!(id.to_string().parse::<InvocationId>(), Ok(id));
        let deployment = DeploymentId::generate();
        let text = deployment.to_string();
        assert_eq!(text.len(), 26);
        assert_eq!(text.parse::<DeploymentId>(), Ok(deployment));
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_millis() as u64;
        assert!(now.abs_diff(deployment.timestamp_millis()) < 60_000);
        let awakeable = AwakeableId {
            invocation: id,
            signal_index: 17,
        };
        let text = awakeable.to_string();
        assert_eq!(text.len(), 44);
        assert_eq!(text.parse::<AwakeableId>(), Ok(awakeable));
        // Padding is accepted on input.
        assert_eq!(format!("{text}==").parse::<AwakeableId>(), Ok(awakeable));
        // Cancel (1) and the reserved indices are not awakeables.
        for reserved in [0, 1, 5, 16] {
            let text = AwakeableId {
                invocation: id,
                signal_index: reserved,
            }
            .to_string();
            let error = text.parse::<AwakeableId>().unwrap_err();
            assert!(error.to_string().contains("is reserved"), "{error}");
        }
    }

    #[test]
    fn malformed_ids_are_refused_with_the_reason() {
        let error = "dp_1abc".parse::<InvocationId>().unwrap_err();
        assert!(error.to_string().contains("must start with `inv_1`"), "{error}");
        let error = "inv_1abc".parse::<InvocationId>().unwrap_err();
        assert!(error.to_string().contains("expected 38 characters, got 8"), "{error}");
        let error = "inv_1j3OsqQPRzR97ms55EYVgziYOU2byMLXn!"
            .parse::<InvocationId>()
            .unwrap_err();
        assert!(error.to_string().contains("`!` is not a base62 digit"), "{error}");
        let error = "inv_1zzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzz"
            .parse::<InvocationId>()
            .unwrap_err();
        assert!(error.to_string().contains("out of range"), "{error}");
        let error = "sign_1%%%".parse::<AwakeableId>().unwrap_err();
        assert!(error.to_string().contains("not base64url"), "{error}");
    }
}
