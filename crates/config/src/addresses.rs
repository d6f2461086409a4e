use std::fmt;
use std::net::SocketAddr;

use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// Parses a listener address such as `0.0.0.0:5122`, `[::]:5122` or `127.0.0.1:9070`.
pub fn parse_bind_address(text: &str) -> Result<SocketAddr, String> {
    text.trim().parse().map_err(|_| {
        format!("invalid address `{text}`: expected IP:PORT, for example 0.0.0.0:5122, [::]:5122 or 127.0.0.1:5122")
    })
}

pub(crate) mod bind_address {
    use super::*;

    pub fn serialize<S: Serializer>(addr: &SocketAddr, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(&addr.to_string())
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(deserializer: D) -> Result<SocketAddr, D::Error> {
        let text = String::deserialize(deserializer)?;
        parse_bind_address(&text).map_err(serde::de::Error::custom)
    }
}

/// The URL other nodes and clients use to reach a listener, e.g. `http://node-1:5122/`.
#[derive(Clone, PartialEq, Eq, Hash)]
pub struct AdvertisedAddress {
    url: String,
}

impl AdvertisedAddress {
    pub fn parse(text: &str) -> Result<Self, String> {
        let trimmed = text.trim();
        let expected = "expected a URL such as http://node-1:5122/";
        let rest = trimmed
            .strip_prefix("http://")
            .or_else(|| trimmed.strip_prefix("https://"))
            .ok_or_else(|| format!("invalid address `{text}`: {expected} (http:// or https://)"))?;
        let authority = rest.split('/').next().unwrap_or_default();
        let uri: http::Uri = trimmed
            .parse()
            .map_err(|e| format!("invalid address `{text}`: {e}; {expected}"))?;
        if authority.is_empty() || uri.host().is_none_or(str::is_empty) {
            return Err(format!("invalid address `{text}`: the host is missing; {expected}"));
        }
        let mut url = trimmed.to_owned();
        if !url.ends_with('/') {
            url.push('/');
        }
        Ok(Self { url })
    }

    /// Derives the address from a bind address; an unspecified IP (`0.0.0.0`, `[::]`)
    /// becomes the given host.
    pub fn from_bind_address(bind: SocketAddr, fallback_host: &str) -> Self {
        let host = if bind.ip().is_unspecified() {
            fallback_host.to_owned()
        } else if bind.is_ipv6() {
            format!("[{}]", bind.ip())
        } else {
            bind.ip().to_string()
        };
        Self {
            url: format!("http://{host}:{}/", bind.port()),
        }
    }

    pub fn as_str(&self) -> &str {
        &self.url
    }
}

impl fmt::Display for AdvertisedAddress {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.url)
    }
}

impl fmt::Debug for AdvertisedAddress {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:?}", self.url)
    }
}

impl Serialize for AdvertisedAddress {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(&self.url)
    }
}

impl<'de> Deserialize<'de> for AdvertisedAddress {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let text = String::deserialize(deserializer)?;
        Self::parse(&text).map_err(serde::de::Error::custom)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn advertised_addresses_are_validated_and_normalised() {
        assert_eq!(
            AdvertisedAddress::parse("http://n1:5122").unwrap().as_str(),
            "http://n1:5122/"
        );
        assert!(AdvertisedAddress::parse("n1:5122").is_err());
        assert!(AdvertisedAddress::parse("http://").is_err());
        let derived = AdvertisedAddress::from_bind_address("[::]:5122".parse().unwrap(), "10.0.0.1");
        assert_eq!(derived.as_str(), "http://10.0.0.1:5122/");
    }

    #[test]
    fn bind_addresses_explain_the_expected_form() {
        assert!(parse_bind_address("127.0.0.1:1").is_ok());
        let err = parse_bind_address("localhost").unwrap_err();
        assert!(err.contains("IP:PORT"), "{err}");
    }
}
