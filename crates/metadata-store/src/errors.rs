use restate_types::metadata::Version;

/// A read that did not produce an answer.
#[derive(Debug, Clone, thiserror::Error)]
pub enum ReadError {
    /// No store member answered in time; trying again later may work.
    #[error("metadata store unavailable: {0}")]
    Unavailable(String),
    /// The store refused the request (e.g. another cluster); retrying will not help.
    #[error("metadata store refused the request: {0}")]
    Rejected(String),
    /// The stored bytes are not what the reader expected.
    #[error("metadata value of `{key}` cannot be decoded: {reason}")]
    Codec { key: String, reason: String },
}

impl ReadError {
    pub fn is_retryable(&self) -> bool {
        matches!(self, ReadError::Unavailable(_))
    }
}

/// A write that was not applied (or whose outcome is unknown).
#[derive(Debug, Clone, thiserror::Error)]
pub enum WriteError {
    /// The precondition did not hold; nothing was written.
    #[error("precondition failed for `{key}`: {reason}")]
    FailedPrecondition {
        key: String,
        /// The stored version when the write was checked, if the store reported it.
        actual: Option<Version>,
        reason: String,
    },
    /// The value exceeds the store's size limit; nothing was written.
    #[error("value of `{key}` is {size} bytes, above the metadata store's limit of {limit} bytes")]
    TooLarge { key: String, size: usize, limit: usize },
    /// No store member answered; the write was not applied.
    #[error("metadata store unavailable: {0}")]
    Unavailable(String),
    /// The write may or may not have been applied (e.g. the leader failed mid-way);
    /// read the key to find out.
    #[error("outcome unknown: {0}; read the key to see whether the write was applied")]
    UnknownOutcome(String),
    /// The store refused the request; retrying will not help.
    #[error("metadata store refused the request: {0}")]
    Rejected(String),
    #[error("metadata value of `{key}` cannot be encoded: {reason}")]
    Codec { key: String, reason: String },
}

impl WriteError {
    /// Whether repeating the same write later may succeed.
    pub fn is_retryable(&self) -> bool {
        matches!(self, WriteError::Unavailable(_) | WriteError::UnknownOutcome(_))
    }

    pub fn is_precondition_failure(&self) -> bool {
        matches!(self, WriteError::FailedPrecondition { .. })
    }
}

impl From<ReadError> for WriteError {
    fn from(error: ReadError) -> Self {
        match error {
            ReadError::Unavailable(reason) => WriteError::Unavailable(reason),
            ReadError::Rejected(reason) => WriteError::Rejected(reason),
            ReadError::Codec { key, reason } => WriteError::Codec { key, reason },
        }
    }
}

/// Provisioning the cluster's metadata failed.
#[derive(Debug, Clone, thiserror::Error)]
pub enum ProvisionError {
    #[error("{0}")]
    NotSupported(String),
    #[error(transparent)]
    Write(#[from] WriteError),
}
