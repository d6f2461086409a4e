//! AWS client configuration shared by everything that talks to AWS (the DynamoDB and S3
//! metadata back-ends, the S3 snapshot repository): region, credentials (profile, explicit keys
//! or the environment) and endpoint from a configuration section, and errors described without
//! the request (which may carry secrets).

use aws_config::BehaviorVersion;
use aws_credential_types::Credentials;
use aws_smithy_runtime_api::client::result::{ConnectorError, SdkError};
use aws_smithy_types::error::display::DisplayErrorContext;
use aws_smithy_types::retry::RetryConfig;

/// The [`AwsSettings`] of a configuration section's options: any struct with the `aws_*` fields
/// of `[metadata-client]` and `[worker.snapshots]`, so the sections cannot drift apart.
/// `aws_settings!(options, "[worker.snapshots]")`.
#[macro_export]
macro_rules! aws_settings {
    ($options:expr, $section:expr) => {
        $crate::AwsSettings {
            section: $section,
            profile: $options.aws_profile.as_deref(),
            region: $options.aws_region.as_deref(),
            access_key_id: $options.aws_access_key_id.as_deref(),
            secret_access_key: $options.aws_secret_access_key.as_ref().map(|s| s.expose()),
            session_token: $options.aws_session_token.as_ref().map(|s| s.expose()),
            endpoint_url: $options.aws_endpoint_url.as_deref(),
            allow_http: $options.aws_allow_http,
        }
    };
}

/// The `aws-*` keys of one configuration section (`[metadata-client]`, `[worker.snapshots]`).
#[derive(Debug, Clone, Copy)]
pub struct AwsSettings<'a> {
    /// The section, for error messages, e.g. `[worker.snapshots]`.
    pub section: &'a str,
    pub profile: Option<&'a str>,
    pub region: Option<&'a str>,
    pub access_key_id: Option<&'a str>,
    pub secret_access_key: Option<&'a str>,
    pub session_token: Option<&'a str>,
    pub endpoint_url: Option<&'a str>,
    pub allow_http: Option<bool>,
}

/// The provider's error code and message, never the request (which may carry secrets).
pub fn describe_sdk_error<E, R>(error: &SdkError<E, R>) -> String
where
    E: aws_smithy_types::error::metadata::ProvideErrorMetadata + std::error::Error,
{
    match error {
        SdkError::ServiceError(service) => {
            let err = service.err();
            format!(
                "{}: {}",
                err.code().unwrap_or("service error"),
                err.message().unwrap_or("no message")
            )
        }
        SdkError::TimeoutError(_) => "timed out (the request may have been sent)".into(),
        SdkError::DispatchFailure(failure) => match failure.as_connector_error() {
            Some(connector) if never_connected(connector) => {
                format!("cannot connect: {}", DisplayErrorContext(connector))
            }
            Some(connector) => format!(
                "the connection failed (the request may have been sent): {}",
                DisplayErrorContext(connector)
            ),
            None => "the connection failed (the request may have been sent)".into(),
        },
        SdkError::ResponseError(_) => "the response could not be read (the request was sent)".into(),
        other => other.to_string(),
    }
}

/// What a failed request may have done to the stored data.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Fate {
    /// It never left this process (it could not be built, or no connection could be opened):
    /// nothing changed.
    NotSent,
    /// It was sent, or may have been, and no answer says what happened. The SDK documents
    /// dispatch failures and timeouts as "the request may have been sent"; an unreadable
    /// response belongs to a request that reached the service.
    Unknown,
    /// The service answered with an error; its code tells whether anything changed.
    Answered,
}

/// Classifies a failed request by whether it may have changed anything.
pub fn fate<E, R>(error: &SdkError<E, R>) -> Fate {
    match error {
        SdkError::ConstructionFailure(_) => Fate::NotSent,
        SdkError::DispatchFailure(failure) if failure.as_connector_error().is_some_and(never_connected) => {
            Fate::NotSent
        }
        SdkError::ServiceError(_) => Fate::Answered,
        // Dispatch failures on an open connection, timeouts, unreadable responses, and kinds
        // later SDK versions may add.
        _ => Fate::Unknown,
    }
}

/// Phrases of the HTTP client's errors raised while a connection is being opened (DNS, TCP
/// connect, TLS handshake, the connect timeout), before any byte of the request is written:
/// hyper-util's `client error (Connect)` wraps them all, and the connect timeout of
/// aws-smithy-http-client says `HTTP connect timeout occurred after …`. The connector does not
/// expose this as a type we could match, so the error chain is searched for them; a miss only
/// costs a read-back of the key, never a wrong answer.
const CONNECT_PHRASES: [&str; 2] = ["client error (Connect)", "HTTP connect timeout"];

/// Whether the connector failed before a connection was open, so the request was not sent.
fn never_connected(error: &ConnectorError) -> bool {
    let mut next: Option<&(dyn std::error::Error + 'static)> = Some(error);
    while let Some(current) = next {
        let text = current.to_string();
        if CONNECT_PHRASES.iter().any(|phrase| text.contains(phrase)) {
            return true;
        }
        next = current.source();
    }
    false
}

/// Client configuration for writes: the SDK must not resend a write on its own. A conditional
/// write that applied but whose answer was lost would, resent, fail its own condition and be
/// reported as a precondition failure; instead the first failure is resolved by reading the
/// key back (see `crate::outcome`).
pub fn without_retries() -> RetryConfig {
    RetryConfig::disabled()
}

/// Refuses a plain-HTTP endpoint unless `aws-allow-http = true` (object stores carry data that
/// should not cross a network in the clear by accident).
pub fn refuse_plain_http(settings: &AwsSettings<'_>) -> Result<(), String> {
    match settings.endpoint_url {
        Some(endpoint) if endpoint.starts_with("http://") && settings.allow_http != Some(true) => Err(format!(
            "`aws-endpoint-url = \"{endpoint}\"` is plain HTTP; set `aws-allow-http = true` in {} to allow it",
            settings.section
        )),
        _ => Ok(()),
    }
}

/// Builds the SDK configuration. Secrets stay inside the SDK; they are never logged. The error
/// names the section's keys to change.
pub async fn sdk_config(settings: &AwsSettings<'_>) -> Result<aws_config::SdkConfig, String> {
    let section = settings.section;
    if settings.profile.is_some() && settings.access_key_id.is_some() {
        return Err(format!(
            "`aws-profile` and `aws-access-key-id` are mutually exclusive in {section}; keep one"
        ));
    }
    if settings.access_key_id.is_some() != settings.secret_access_key.is_some() {
        return Err(format!(
            "`aws-access-key-id` and `aws-secret-access-key` must be given together in {section}"
        ));
    }
    let http_client = aws_smithy_http_client::Builder::new()
        .tls_provider(aws_smithy_http_client::tls::Provider::Rustls(
            aws_smithy_http_client::tls::rustls_provider::CryptoMode::Ring,
        ))
        .build_https();
    let mut loader = aws_config::defaults(BehaviorVersion::latest()).http_client(http_client);
    // Without an explicit region the loader's own chain (environment, profile) decides.
    if let Some(region) = settings.region {
        loader = loader.region(aws_config::Region::new(region.to_owned()));
    }
    if let Some(profile) = settings.profile {
        loader = loader.profile_name(profile);
    }
    if let (Some(key_id), Some(secret)) = (settings.access_key_id, settings.secret_access_key) {
        loader = loader.credentials_provider(Credentials::new(
            key_id,
            secret,
            settings.session_token.map(str::to_owned),
            None,
            "restate-config",
        ));
    }
    if let Some(endpoint) = settings.endpoint_url {
        loader = loader.endpoint_url(endpoint);
    }
    Ok(loader.load().await)
}

#[cfg(test)]
mod tests {
    use std::fmt;

    use aws_smithy_runtime_api::client::result::SdkError;
    use aws_smithy_runtime_api::http::{Response, StatusCode};
    use aws_smithy_types::body::SdkBody;

    use super::*;

    /// An error with a message and an optional cause, like the HTTP client's.
    #[derive(Debug)]
    struct Chain(&'static str, Option<Box<Chain>>);

    impl fmt::Display for Chain {
        fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
            f.write_str(self.0)
        }
    }

    impl std::error::Error for Chain {
        fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
            self.1.as_deref().map(|e| e as _)
        }
    }

    fn chain(outer: &'static str, inner: &'static str) -> Box<Chain> {
        Box::new(Chain(outer, Some(Box::new(Chain(inner, None)))))
    }

    type Error = SdkError<Chain, Response>;

    fn dispatch(connector: ConnectorError) -> Error {
        SdkError::dispatch_failure(connector)
    }

    #[test]
    fn failures_before_a_connection_is_open_were_not_sent() {
        let cases: Vec<(&str, Error)> = vec![
            (
                "construction",
                SdkError::construction_failure(Chain("no credentials", None)),
            ),
            (
                "connection refused",
                dispatch(ConnectorError::io(chain(
                    "client error (Connect)",
                    "tcp connect error: Connection refused (os error 111)",
                ))),
            ),
            (
                "connect timeout",
                dispatch(ConnectorError::timeout(chain(
                    "client error (Connect)",
                    "HTTP connect timeout occurred after 3.1s",
                ))),
            ),
            (
                "connect timeout, bare",
                dispatch(ConnectorError::timeout(Box::new(Chain(
                    "HTTP connect timeout occurred after 3.1s",
                    None,
                )))),
            ),
        ];
        for (what, error) in cases {
            assert_eq!(fate(&error), Fate::NotSent, "{what}");
        }
    }

    #[test]
    fn failures_after_the_request_may_have_left_are_unknown() {
        let cases: Vec<(&str, Error)> = vec![
            (
                "connection closed",
                dispatch(ConnectorError::other(
                    chain(
                        "client error (SendRequest)",
                        "connection closed before message completed",
                    ),
                    None,
                )),
            ),
            (
                "connection reset",
                dispatch(ConnectorError::io(chain(
                    "client error (SendRequest)",
                    "Connection reset by peer (os error 104)",
                ))),
            ),
            (
                "read timeout",
                dispatch(ConnectorError::timeout(Box::new(Chain(
                    "HTTP read timeout occurred after 5s",
                    None,
                )))),
            ),
            ("operation timeout", SdkError::timeout_error(Chain("timed out", None))),
            (
                "unreadable response",
                SdkError::response_error(
                    Chain("bad XML", None),
                    Response::new(StatusCode::try_from(200).unwrap(), SdkBody::empty()),
                ),
            ),
        ];
        for (what, error) in cases {
            assert_eq!(fate(&error), Fate::Unknown, "{what}");
        }
    }

    #[test]
    fn service_errors_are_answers() {
        let error: Error = SdkError::service_error(
            Chain("InternalServerError", None),
            Response::new(StatusCode::try_from(500).unwrap(), SdkBody::empty()),
        );
        assert_eq!(fate(&error), Fate::Answered);
    }
}
