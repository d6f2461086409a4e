//! The AWS configuration of `[metadata-client]` for the DynamoDB and S3 back-ends (see
//! `restate-aws`).

use restate_config::MetadataClientOptions;

use crate::ProviderError;

pub(crate) use restate_aws::{Fate, describe_sdk_error, fate, without_retries};

/// The `aws-*` keys of `[metadata-client]`.
pub(crate) fn settings(options: &MetadataClientOptions) -> restate_aws::AwsSettings<'_> {
    restate_aws::AwsSettings {
        section: "[metadata-client]",
        profile: options.aws_profile.as_deref(),
        region: options.aws_region.as_deref(),
        access_key_id: options.aws_access_key_id.as_deref(),
        secret_access_key: options.aws_secret_access_key.as_ref().map(|s| s.expose()),
        session_token: options.aws_session_token.as_ref().map(|s| s.expose()),
        endpoint_url: options.aws_endpoint_url.as_deref(),
        allow_http: options.aws_allow_http,
    }
}

/// Builds the SDK configuration of `[metadata-client]`.
pub(crate) async fn sdk_config(options: &MetadataClientOptions) -> Result<aws_config::SdkConfig, ProviderError> {
    restate_aws::sdk_config(&settings(options))
        .await
        .map_err(ProviderError::Config)
}
