//! Protocol versions, their content types and version negotiation.

use std::fmt;
use std::ops::RangeInclusive;

/// Prefix shared by every invocation content type; the version number follows it.
const CONTENT_TYPE_PREFIX: &str = "application/vnd.restate.invocation.v";

/// A service protocol version this implementation speaks.
///
/// Only the immutable-journal versions (V5+) exist here: new invocations need at least V5, and
/// V1–V4 journals are not supported by this server.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
#[repr(u32)]
pub enum ServiceProtocolVersion {
    /// Immutable journal: commands and notifications.
    V5 = 5,
    /// Adds `StartMessage.random_seed` and `Failure.metadata`; upstream's default.
    V6 = 6,
    /// Adds future trees (`AwaitingOn`, V7 `Suspension`), scopes and limit keys, run-completion acks.
    V7 = 7,
}

impl ServiceProtocolVersion {
    /// Oldest version we speak.
    pub const MIN: ServiceProtocolVersion = ServiceProtocolVersion::V5;
    /// Newest version we speak.
    pub const MAX: ServiceProtocolVersion = ServiceProtocolVersion::V7;
    /// Newest version used unless V7 is explicitly enabled (upstream 1.7 defaults to V6).
    pub const DEFAULT_MAX: ServiceProtocolVersion = ServiceProtocolVersion::V6;
    /// All versions, oldest first.
    pub const ALL: [ServiceProtocolVersion; 3] = [
        ServiceProtocolVersion::V5,
        ServiceProtocolVersion::V6,
        ServiceProtocolVersion::V7,
    ];

    /// The version number as used in discovery manifests and content types.
    pub const fn as_u32(self) -> u32 {
        self as u32
    }

    /// The version with this number, if we speak it.
    pub const fn from_u32(version: u32) -> Option<Self> {
        match version {
            5 => Some(ServiceProtocolVersion::V5),
            6 => Some(ServiceProtocolVersion::V6),
            7 => Some(ServiceProtocolVersion::V7),
            _ => None,
        }
    }

    /// Value of the invoke request's `content-type` and `accept` headers; the SDK must echo it
    /// exactly.
    pub const fn content_type(self) -> &'static str {
        match self {
            ServiceProtocolVersion::V5 => "application/vnd.restate.invocation.v5",
            ServiceProtocolVersion::V6 => "application/vnd.restate.invocation.v6",
            ServiceProtocolVersion::V7 => "application/vnd.restate.invocation.v7",
        }
    }

    /// Parses an invocation content type (surrounding whitespace ignored, otherwise exact).
    ///
    /// Tells a non-protocol content type apart from a protocol version we do not speak, so
    /// callers can report which of the two went wrong.
    pub fn from_content_type(content_type: &str) -> Result<Self, ContentTypeError> {
        let trimmed = content_type.trim();
        let not_protocol = || ContentTypeError::NotServiceProtocol {
            content_type: content_type.to_owned(),
        };
        let digits = trimmed.strip_prefix(CONTENT_TYPE_PREFIX).ok_or_else(not_protocol)?;
        if digits.is_empty() || !digits.bytes().all(|b| b.is_ascii_digit()) {
            return Err(not_protocol());
        }
        let version: u32 = digits.parse().map_err(|_| not_protocol())?;
        Self::from_u32(version).ok_or(ContentTypeError::UnsupportedVersion { version })
    }

    /// Picks the version for a new invocation: the highest one that the deployment, this
    /// server (`supported`) and the optional configured `cap` all allow.
    ///
    /// `deployment` is the raw `minProtocolVersion..=maxProtocolVersion` from discovery; it may
    /// name versions we do not know (the SDK can be newer than us).
    pub fn negotiate(
        deployment: RangeInclusive<u32>,
        supported: RangeInclusive<ServiceProtocolVersion>,
        cap: Option<ServiceProtocolVersion>,
    ) -> Result<Self, NegotiationError> {
        let (dep_min, dep_max) = (*deployment.start(), *deployment.end());
        if dep_min == 0 || dep_min > dep_max || dep_max > i32::MAX as u32 {
            return Err(NegotiationError::InvalidDeploymentRange {
                min: dep_min,
                max: dep_max,
            });
        }
        let (our_min, our_max) = (*supported.start(), *supported.end());
        let overlap = |upper: ServiceProtocolVersion| {
            Self::ALL
                .iter()
                .rev()
                .copied()
                .find(|v| *v >= our_min && *v <= upper && (dep_min..=dep_max).contains(&v.as_u32()))
        };
        let Some(best) = overlap(our_max) else {
            return Err(NegotiationError::NoOverlap {
                deployment_min: dep_min,
                deployment_max: dep_max,
                supported_min: our_min,
                supported_max: our_max,
            });
        };
        match cap {
            Some(cap) if best > cap => overlap(cap).ok_or(NegotiationError::AboveCap {
                deployment_min: dep_min,
                deployment_max: dep_max,
                cap,
            }),
            _ => Ok(best),
        }
    }
}

impl fmt::Display for ServiceProtocolVersion {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "V{}", self.as_u32())
    }
}

impl TryFrom<u32> for ServiceProtocolVersion {
    type Error = u32;

    /// Fails with the number itself when we do not speak that version.
    fn try_from(version: u32) -> Result<Self, Self::Error> {
        Self::from_u32(version).ok_or(version)
    }
}

impl From<ServiceProtocolVersion> for u32 {
    fn from(version: ServiceProtocolVersion) -> Self {
        version.as_u32()
    }
}

/// Why a content type does not name a version we speak.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ContentTypeError {
    /// Not `application/vnd.restate.invocation.v<N>` at all.
    #[error("content type '{content_type}' is not a Restate service protocol content type")]
    NotServiceProtocol { content_type: String },
    /// A service protocol content type, for a version outside V5..=V7.
    #[error("unsupported service protocol version {version} (supported: 5..=7)")]
    UnsupportedVersion { version: u32 },
}

/// Why no protocol version can be used with a deployment.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum NegotiationError {
    /// The deployment's own range is empty or leaves 1..=2^31-1 (the manifest's bounds).
    #[error("invalid service protocol range {min}..={max} advertised by the deployment")]
    InvalidDeploymentRange { min: u32, max: u32 },
    /// The ranges do not intersect at all.
    #[error(
        "the deployment supports service protocol versions {deployment_min}..={deployment_max}, \
         but this server supports {}..={}",
        supported_min.as_u32(),
        supported_max.as_u32()
    )]
    NoOverlap {
        deployment_min: u32,
        deployment_max: u32,
        supported_min: ServiceProtocolVersion,
        supported_max: ServiceProtocolVersion,
    },
    /// The ranges intersect only above the configured maximum (e.g. a V7-only SDK while V7 is
    /// not enabled).
    #[error(
        "the deployment supports service protocol versions {deployment_min}..={deployment_max}, \
         but this server is configured to use at most {cap}"
    )]
    AboveCap {
        deployment_min: u32,
        deployment_max: u32,
        cap: ServiceProtocolVersion,
    },
}

#[cfg(test)]
mod tests {
    use super::*;
    use ServiceProtocolVersion::*;

    #[test]
    fn content_types_round_trip() {
        for v in ServiceProtocolVersion::ALL {
            assert_eq!(ServiceProtocolVersion::from_content_type(v.content_type()), Ok(v));
        }
        assert_eq!(V5.content_type(), "application/vnd.restate.invocation.v5");
        assert_eq!(V6.content_type(), "application/vnd.restate.invocation.v6");
        assert_eq!(V7.content_type(), "application/vnd.restate.invocation.v7");
        assert_eq!(
            ServiceProtocolVersion::from_content_type(" application/vnd.restate.invocation.v6 "),
            Ok(V6)
        );
    }

    #[test]
    fn content_type_errors_say_what_is_wrong() {
        assert_eq!(
            ServiceProtocolVersion::from_content_type("application/vnd.restate.invocation.v8"),
            Err(ContentTypeError::UnsupportedVersion { version: 8 })
        );
        assert_eq!(
            ServiceProtocolVersion::from_content_type("application/vnd.restate.invocation.v4"),
            Err(ContentTypeError::UnsupportedVersion { version: 4 })
        );
        for bad in [
            "application/json",
            "application/vnd.restate.invocation.v",
            "application/vnd.restate.invocation.v6; charset=utf-8",
            "application/vnd.restate.invocation.v+6",
            "application/vnd.restate.endpointmanifest.v4+json",
        ] {
            let err = ServiceProtocolVersion::from_content_type(bad).unwrap_err();
            assert!(
                matches!(err, ContentTypeError::NotServiceProtocol { .. }),
                "{bad}: {err}"
            );
            assert!(err.to_string().contains(bad), "{err}");
        }
        let huge = format!("{CONTENT_TYPE_PREFIX}99999999999999999999");
        assert!(matches!(
            ServiceProtocolVersion::from_content_type(&huge),
            Err(ContentTypeError::NotServiceProtocol { .. })
        ));
    }

    #[test]
    fn numbers_and_display() {
        assert_eq!(V7.as_u32(), 7);
        assert_eq!(ServiceProtocolVersion::try_from(6), Ok(V6));
        assert_eq!(ServiceProtocolVersion::try_from(8), Err(8));
        assert_eq!(V5.to_string(), "V5");
        assert!(V5 < V6 && V6 < V7);
    }

    #[test]
    fn negotiation_picks_highest_common_version() {
        // The anchor's TS deployment (5..=7) on a default server runs V6.
        assert_eq!(ServiceProtocolVersion::negotiate(5..=7, V5..=V7, Some(V6)), Ok(V6));
        assert_eq!(ServiceProtocolVersion::negotiate(5..=7, V5..=V7, None), Ok(V7));
        // The SDK may know newer versions than us.
        assert_eq!(ServiceProtocolVersion::negotiate(5..=8, V5..=V7, None), Ok(V7));
        assert_eq!(ServiceProtocolVersion::negotiate(1..=5, V5..=V7, Some(V6)), Ok(V5));
        assert_eq!(ServiceProtocolVersion::negotiate(6..=6, V5..=V7, Some(V7)), Ok(V6));
        // A narrower own range.
        assert_eq!(ServiceProtocolVersion::negotiate(5..=7, V5..=V6, None), Ok(V6));
    }

    #[test]
    fn negotiation_without_overlap_explains_both_ranges() {
        let err = ServiceProtocolVersion::negotiate(1..=4, V5..=V7, Some(V6)).unwrap_err();
        assert_eq!(
            err,
            NegotiationError::NoOverlap {
                deployment_min: 1,
                deployment_max: 4,
                supported_min: V5,
                supported_max: V7
            }
        );
        assert_eq!(
            err.to_string(),
            "the deployment supports service protocol versions 1..=4, but this server supports 5..=7"
        );
        assert!(ServiceProtocolVersion::negotiate(8..=9, V5..=V7, None).is_err());
    }

    #[test]
    fn negotiation_respects_the_cap() {
        let err = ServiceProtocolVersion::negotiate(7..=8, V5..=V7, Some(V6)).unwrap_err();
        assert_eq!(
            err,
            NegotiationError::AboveCap {
                deployment_min: 7,
                deployment_max: 8,
                cap: V6
            }
        );
        assert_eq!(
            err.to_string(),
            "the deployment supports service protocol versions 7..=8, but this server is configured to use at most V6"
        );
        // A cap above our own range changes nothing.
        assert_eq!(ServiceProtocolVersion::negotiate(5..=7, V5..=V6, Some(V7)), Ok(V6));
    }

    #[test]
    fn negotiation_rejects_invalid_deployment_ranges() {
        assert_eq!(
            ServiceProtocolVersion::negotiate(RangeInclusive::new(7, 5), V5..=V7, None),
            Err(NegotiationError::InvalidDeploymentRange { min: 7, max: 5 })
        );
        assert_eq!(
            ServiceProtocolVersion::negotiate(0..=7, V5..=V7, None),
            Err(NegotiationError::InvalidDeploymentRange { min: 0, max: 7 })
        );
        assert!(ServiceProtocolVersion::negotiate(5..=u32::MAX, V5..=V7, None).is_err());
    }
}
