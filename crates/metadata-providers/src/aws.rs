//! The AWS configuration of `[metadata-client]` for the DynamoDB and S3 back-ends (see
//! `restate-aws`).

use restate_config::MetadataClientOptions;

use crate::ProviderError;

pub(crate) use restate_aws::{Fate, describe_sdk_error, fate, without_retries};

/// The `aws-*` keys of `[metadata-client]`.
pub(crate) fn settings(options: &MetadataClientOptions) -> restate_aws::AwsSettings<'_> {
    restate_aws::aws_settings!(options, "[metadata-client]")
}

/// Builds the SDK configuration of `[metadata-client]`.
pub(crate) async fn sdk_config(options: &MetadataClientOptions) -> Result<aws_config::SdkConfig, ProviderError> {
    restate_aws::sdk_config(&settings(options))
        .await
        .map_err(ProviderError::Config)
}
