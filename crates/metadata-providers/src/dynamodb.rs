//! DynamoDB back-end: one item per key, `pk` (string, key prefix + key), `version` (number)
//! and `data` (binary). Reads are strongly consistent; writes are conditional puts/deletes.

use std::collections::HashMap;

use async_trait::async_trait;
use aws_sdk_dynamodb::Client;
use aws_sdk_dynamodb::error::{ProvideErrorMetadata, SdkError};
use aws_sdk_dynamodb::primitives::Blob;
use aws_sdk_dynamodb::types::{AttributeValue, KeyType};
use restate_config::MetadataClientOptions;
use restate_metadata_store::{MetadataStore, ReadError, WriteError};
use restate_types::metadata::{Precondition, Version, VersionedValue};

use crate::ProviderError;
use crate::aws::describe_sdk_error;

pub struct DynamoDbStore {
    client: Client,
    table: String,
    prefix: String,
}

/// The command that creates a table this back-end can use.
fn create_table_command(table: &str) -> String {
    format!(
        "aws dynamodb create-table --table-name {table} --attribute-definitions AttributeName=pk,AttributeType=S \
         --key-schema AttributeName=pk,KeyType=HASH --billing-mode PAY_PER_REQUEST"
    )
}

impl DynamoDbStore {
    /// Connects and checks that the table exists with the `pk` hash key.
    pub async fn connect(options: &MetadataClientOptions) -> Result<Self, ProviderError> {
        let table = options.table.clone().ok_or_else(|| {
            ProviderError::Config("`[metadata-client] table` is required for type = \"dynamo-db\"".into())
        })?;
        let config = crate::aws::sdk_config(options).await?;
        let client = Client::new(&config);
        let endpoint = options
            .aws_endpoint_url
            .clone()
            .unwrap_or_else(|| "AWS DynamoDB".into());
        let described = tokio::time::timeout(
            options.connect_timeout,
            client.describe_table().table_name(&table).send(),
        )
        .await
        .map_err(|_| ProviderError::Unreachable {
            store: "DynamoDB",
            address: endpoint.clone(),
            reason: format!("no answer within {:?}", options.connect_timeout),
        })?;
        let described = match described {
            Ok(described) => described,
            Err(error) if error.code() == Some("ResourceNotFoundException") => {
                return Err(ProviderError::Missing(format!(
                    "DynamoDB table `{table}` does not exist at {endpoint}; create it with:\n  {}",
                    create_table_command(&table)
                )));
            }
            Err(error) => {
                return Err(ProviderError::Unreachable {
                    store: "DynamoDB",
                    address: endpoint,
                    reason: describe_sdk_error(&error),
                });
            }
        };
        let hash_key = described
            .table()
            .map(|t| t.key_schema())
            .unwrap_or_default()
            .iter()
            .find(|k| k.key_type() == &KeyType::Hash)
            .map(|k| k.attribute_name().to_owned());
        if hash_key.as_deref() != Some("pk") {
            return Err(ProviderError::Missing(format!(
                "DynamoDB table `{table}` has hash key {hash_key:?}, but it must be `pk` (string); create a table with:\n  {}",
                create_table_command(&table)
            )));
        }
        Ok(Self {
            client,
            table,
            prefix: options.key_prefix.clone().unwrap_or_default(),
        })
    }

    fn pk(&self, key: &str) -> AttributeValue {
        AttributeValue::S(format!("{}{key}", self.prefix))
    }
}

/// The condition expression (and its value) that implements a precondition.
fn condition(precondition: Precondition) -> (Option<String>, Option<HashMap<String, AttributeValue>>) {
    match precondition {
        Precondition::None => (None, None),
        Precondition::DoesNotExist => (Some("attribute_not_exists(pk)".into()), None),
        Precondition::MatchesVersion(version) => (
            Some("version = :v".into()),
            Some(HashMap::from([(
                ":v".to_owned(),
                AttributeValue::N(version.0.to_string()),
            )])),
        ),
    }
}

fn is_conditional_failure<E: ProvideErrorMetadata, R>(error: &SdkError<E, R>) -> bool {
    error.code() == Some("ConditionalCheckFailedException")
}

fn decode(key: &str, item: &HashMap<String, AttributeValue>) -> Result<VersionedValue, ReadError> {
    let codec = |reason: &str| ReadError::Codec {
        key: key.to_owned(),
        reason: reason.to_owned(),
    };
    let version = match item.get("version") {
        Some(AttributeValue::N(n)) => n.parse::<u32>().map_err(|_| codec("`version` is not a u32"))?,
        _ => return Err(codec("the item has no numeric `version`")),
    };
    let data = match item.get("data") {
        Some(AttributeValue::B(blob)) => blob.as_ref().to_vec(),
        _ => return Err(codec("the item has no binary `data`")),
    };
    Ok(VersionedValue::new(Version(version), data))
}

#[async_trait]
impl MetadataStore for DynamoDbStore {
    async fn get(&self, key: &str) -> Result<Option<VersionedValue>, ReadError> {
        let output = self
            .client
            .get_item()
            .table_name(&self.table)
            .key("pk", self.pk(key))
            .consistent_read(true)
            .send()
            .await
            .map_err(|e| ReadError::Unavailable(format!("DynamoDB: {}", describe_sdk_error(&e))))?;
        output.item().map(|item| decode(key, item)).transpose()
    }

    async fn get_version(&self, key: &str) -> Result<Option<Version>, ReadError> {
        Ok(self.get(key).await?.map(|v| v.version))
    }

    async fn put(&self, key: &str, value: VersionedValue, precondition: Precondition) -> Result<(), WriteError> {
        let request = self
            .client
            .put_item()
            .table_name(&self.table)
            .item("pk", self.pk(key))
            .item("version", AttributeValue::N(value.version.0.to_string()))
            .item("data", AttributeValue::B(Blob::new(value.value)));
        let (expression, values) = condition(precondition);
        match request
            .set_condition_expression(expression)
            .set_expression_attribute_values(values)
            .send()
            .await
        {
            Ok(_) => Ok(()),
            Err(error) if is_conditional_failure(&error) => Err(self.precondition_failure(key, precondition).await),
            Err(error) => Err(write_failure(&error)),
        }
    }

    async fn delete(&self, key: &str, precondition: Precondition) -> Result<(), WriteError> {
        let request = self
            .client
            .delete_item()
            .table_name(&self.table)
            .key("pk", self.pk(key));
        let (expression, values) = condition(precondition);
        match request
            .set_condition_expression(expression)
            .set_expression_attribute_values(values)
            .send()
            .await
        {
            Ok(_) => Ok(()),
            Err(error) if is_conditional_failure(&error) => Err(self.precondition_failure(key, precondition).await),
            Err(error) => Err(write_failure(&error)),
        }
    }

    async fn keys(&self) -> Result<Vec<String>, ReadError> {
        let mut keys = Vec::new();
        let mut start: Option<HashMap<String, AttributeValue>> = None;
        loop {
            let mut request = self
                .client
                .scan()
                .table_name(&self.table)
                .projection_expression("pk")
                .consistent_read(true);
            if !self.prefix.is_empty() {
                request = request
                    .filter_expression("begins_with(pk, :prefix)")
                    .expression_attribute_values(":prefix", AttributeValue::S(self.prefix.clone()));
            }
            if let Some(start) = start.take() {
                request = request.set_exclusive_start_key(Some(start));
            }
            let output = request
                .send()
                .await
                .map_err(|e| ReadError::Unavailable(format!("DynamoDB: {}", describe_sdk_error(&e))))?;
            for item in output.items() {
                if let Some(AttributeValue::S(pk)) = item.get("pk")
                    && let Some(key) = pk.strip_prefix(&self.prefix)
                {
                    keys.push(key.to_owned());
                }
            }
            match output.last_evaluated_key() {
                Some(last) if !last.is_empty() => start = Some(last.clone()),
                _ => break,
            }
        }
        Ok(keys)
    }

    fn kind(&self) -> &'static str {
        "dynamo-db"
    }

    /// DynamoDB items are at most 400 KB, key and attribute names included; some compatible
    /// servers count binary attributes base64-encoded, so stay at three quarters of that.
    fn max_value_size(&self) -> Option<usize> {
        Some(300 * 1024)
    }
}

impl DynamoDbStore {
    async fn precondition_failure(&self, key: &str, precondition: Precondition) -> WriteError {
        let actual = self.get_version(key).await.ok().flatten();
        WriteError::FailedPrecondition {
            key: key.to_owned(),
            actual,
            reason: precondition
                .check(actual)
                .err()
                .unwrap_or_else(|| format!("the key changed concurrently (precondition {precondition})")),
        }
    }
}

fn write_failure<E: ProvideErrorMetadata + std::error::Error, R>(error: &SdkError<E, R>) -> WriteError {
    let reason = format!("DynamoDB: {}", describe_sdk_error(error));
    match error {
        SdkError::ConstructionFailure(_) | SdkError::DispatchFailure(_) => WriteError::Unavailable(reason),
        SdkError::ServiceError(_) => match error.code() {
            Some("ProvisionedThroughputExceededException" | "ThrottlingException" | "RequestLimitExceeded") => {
                WriteError::Unavailable(reason)
            }
            Some(code)
                if code.contains("AccessDenied")
                    || code.contains("Unrecognized")
                    || code.contains("Signature")
                    || code == "ValidationException" =>
            {
                WriteError::Rejected(reason)
            }
            _ => WriteError::UnknownOutcome(reason),
        },
        _ => WriteError::UnknownOutcome(reason),
    }
}
