//! AWS client configuration shared by the DynamoDB and S3 back-ends: region, credentials
//! (profile, explicit keys or the environment) and endpoint, from `[metadata-client]`.

use aws_config::BehaviorVersion;
use aws_credential_types::Credentials;
use restate_config::MetadataClientOptions;

use crate::ProviderError;

/// The provider's error code and message, never the request (which may carry secrets).
pub(crate) fn describe_sdk_error<E, R>(error: &aws_smithy_runtime_api::client::result::SdkError<E, R>) -> String
where
    E: aws_smithy_types::error::metadata::ProvideErrorMetadata + std::error::Error,
{
    use aws_smithy_runtime_api::client::result::SdkError;
    match error {
        SdkError::ServiceError(service) => {
            let err = service.err();
            format!(
                "{}: {}",
                err.code().unwrap_or("service error"),
                err.message().unwrap_or("no message")
            )
        }
        SdkError::TimeoutError(_) => "timed out".into(),
        SdkError::DispatchFailure(failure) => format!("cannot send the request: {failure:?}"),
        other => other.to_string(),
    }
}

/// Builds the SDK configuration. Secrets stay inside the SDK; they are never logged.
pub(crate) async fn sdk_config(options: &MetadataClientOptions) -> Result<aws_config::SdkConfig, ProviderError> {
    if options.aws_profile.is_some() && options.aws_access_key_id.is_some() {
        return Err(ProviderError::Config(
            "`aws-profile` and `aws-access-key-id` are mutually exclusive in [metadata-client]; keep one".into(),
        ));
    }
    if options.aws_access_key_id.is_some() != options.aws_secret_access_key.is_some() {
        return Err(ProviderError::Config(
            "`aws-access-key-id` and `aws-secret-access-key` must be given together in [metadata-client]".into(),
        ));
    }
    let http_client = aws_smithy_http_client::Builder::new()
        .tls_provider(aws_smithy_http_client::tls::Provider::Rustls(
            aws_smithy_http_client::tls::rustls_provider::CryptoMode::Ring,
        ))
        .build_https();
    let mut loader = aws_config::defaults(BehaviorVersion::latest()).http_client(http_client);
    // Without an explicit region the loader's own chain (environment, profile) decides.
    if let Some(region) = &options.aws_region {
        loader = loader.region(aws_config::Region::new(region.clone()));
    }
    if let Some(profile) = &options.aws_profile {
        loader = loader.profile_name(profile);
    }
    if let (Some(key_id), Some(secret)) = (&options.aws_access_key_id, &options.aws_secret_access_key) {
        loader = loader.credentials_provider(Credentials::new(
            key_id,
            secret.expose(),
            options.aws_session_token.as_ref().map(|t| t.expose().to_owned()),
            None,
            "restate-config",
        ));
    }
    if let Some(endpoint) = &options.aws_endpoint_url {
        loader = loader.endpoint_url(endpoint);
    }
    Ok(loader.load().await)
}
