use std::fmt;

/// Why an append or read did not complete.
#[derive(Debug, Clone, thiserror::Error)]
pub enum BifrostError {
    /// Nothing was written; trying again (after a reconfiguration) is safe.
    #[error("{0}")]
    NotAppended(NotAppended),
    /// The records may or may not be in the log (e.g. they reached some log-servers before
    /// the segment was sealed); the caller decides whether to append them again.
    #[error("outcome unknown: {0}")]
    UnknownOutcome(String),
    /// The log cannot take records now, with the reason (e.g. too few log-servers).
    #[error("{0}")]
    Unavailable(String),
    #[error("{0}")]
    Invalid(String),
}

/// Why nothing was written.
#[derive(Debug, Clone)]
pub enum NotAppended {
    /// The segment is sealed; the chain needs (or already has) a new segment.
    Sealed,
    /// The segment's sequencer is gone (its node restarted or cannot be reached).
    SequencerGone(String),
    /// A transient failure; retry.
    Transient(String),
}

impl fmt::Display for NotAppended {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            NotAppended::Sealed => f.write_str("the log segment is sealed"),
            NotAppended::SequencerGone(reason) => write!(f, "the segment's sequencer is gone: {reason}"),
            NotAppended::Transient(reason) => f.write_str(reason),
        }
    }
}

impl BifrostError {
    pub fn sealed() -> Self {
        BifrostError::NotAppended(NotAppended::Sealed)
    }

    pub fn transient(reason: impl Into<String>) -> Self {
        BifrostError::NotAppended(NotAppended::Transient(reason.into()))
    }

    pub fn sequencer_gone(reason: impl Into<String>) -> Self {
        BifrostError::NotAppended(NotAppended::SequencerGone(reason.into()))
    }
}
