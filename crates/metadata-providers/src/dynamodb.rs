//! DynamoDB back-end: one item per key, `pk` (string, key prefix + key), `version` (number),
//! `data` (binary) and `token` (string, random per write; items written before tokens have
//! none and still read). Reads are strongly consistent; writes are conditional puts/deletes.
//!
//! Writes go through a client without SDK retries: a conditional write that applied but whose
//! answer was lost would, resent by the SDK, fail its own condition. A write whose outcome is
//! unknown is resolved by reading the item back and comparing its token (`crate::outcome`).

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
use crate::aws::{Fate, describe_sdk_error, fate};
use crate::outcome::{self, Stored};

pub struct DynamoDbStore {
    /// Reads, with the SDK's retries.
    client: Client,
    /// Conditional puts and deletes, without SDK retries.
    write_client: Client,
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
        let write_client = Client::from_conf(
            aws_sdk_dynamodb::config::Builder::from(&config)
                .retry_config(crate::aws::without_retries())
                .build(),
        );
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
            write_client,
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

fn decode(key: &str, item: &HashMap<String, AttributeValue>) -> Result<(VersionedValue, Option<String>), ReadError> {
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
    let token = match item.get("token") {
        Some(AttributeValue::S(token)) => Some(token.clone()),
        _ => None,
    };
    Ok((VersionedValue::new(Version(version), data), token))
}

#[async_trait]
impl MetadataStore for DynamoDbStore {
    async fn get(&self, key: &str) -> Result<Option<VersionedValue>, ReadError> {
        Ok(self.read(key).await?.map(|(value, _)| value))
    }

    async fn get_version(&self, key: &str) -> Result<Option<Version>, ReadError> {
        Ok(self.read(key).await?.map(|(value, _)| value.version))
    }

    async fn put(&self, key: &str, value: VersionedValue, precondition: Precondition) -> Result<(), WriteError> {
        let token = outcome::new_token();
        let written = value.version;
        let request = self
            .write_client
            .put_item()
            .table_name(&self.table)
            .item("pk", self.pk(key))
            .item("version", AttributeValue::N(value.version.0.to_string()))
            .item("data", AttributeValue::B(Blob::new(value.value)))
            .item("token", AttributeValue::S(token.clone()));
        let (expression, values) = condition(precondition);
        match request
            .set_condition_expression(expression)
            .set_expression_attribute_values(values)
            .send()
            .await
        {
            Ok(_) => Ok(()),
            Err(error) if is_conditional_failure(&error) => Err(self.precondition_failure(key, precondition).await),
            Err(error) => match write_failure(&error) {
                WriteError::UnknownOutcome(reason) => {
                    outcome::settle_put(key, reason, &token, written, precondition, || self.stored(key)).await
                }
                certain => Err(certain),
            },
        }
    }

    async fn delete(&self, key: &str, precondition: Precondition) -> Result<(), WriteError> {
        let request = self
            .write_client
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
            Err(error) => match write_failure(&error) {
                WriteError::UnknownOutcome(reason) => {
                    outcome::settle_delete(key, reason, precondition, None, || self.stored(key)).await
                }
                certain => Err(certain),
            },
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
    /// The item's value and write token, read strongly consistently.
    async fn read(&self, key: &str) -> Result<Option<(VersionedValue, Option<String>)>, ReadError> {
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

    /// The version and token of the item, to resolve a write with an unknown outcome.
    async fn stored(&self, key: &str) -> Result<Option<Stored>, ReadError> {
        Ok(self
            .read(key)
            .await?
            .map(|(value, token)| Stored::new(value.version, token)))
    }

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

/// What a failed write request means for the write: only failures that certainly changed
/// nothing are `Unavailable` or `Rejected`; the rest are `UnknownOutcome`, to be resolved by
/// reading the item back.
fn write_failure<E: ProvideErrorMetadata + std::error::Error, R>(error: &SdkError<E, R>) -> WriteError {
    let reason = format!("DynamoDB: {}", describe_sdk_error(error));
    match fate(error) {
        Fate::NotSent => WriteError::Unavailable(reason),
        Fate::Unknown => WriteError::UnknownOutcome(reason),
        Fate::Answered => match error.code() {
            // The request was turned away before it was processed.
            Some(
                "ProvisionedThroughputExceededException"
                | "ThrottlingException"
                | "RequestLimitExceeded"
                | "TransactionConflictException",
            ) => WriteError::Unavailable(reason),
            Some(code)
                if code.contains("AccessDenied")
                    || code.contains("Unrecognized")
                    || code.contains("Signature")
                    || code == "ValidationException"
                    || code == "ResourceNotFoundException" =>
            {
                WriteError::Rejected(reason)
            }
            // E.g. `InternalServerError`: the request may have been processed.
            _ => WriteError::UnknownOutcome(reason),
        },
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use aws_sdk_dynamodb::operation::put_item::PutItemError;
    use aws_sdk_dynamodb::types::{AttributeDefinition, BillingMode, KeySchemaElement, ScalarAttributeType};
    use aws_smithy_runtime_api::client::result::ConnectorError;
    use aws_smithy_runtime_api::http::{Response, StatusCode};
    use aws_smithy_types::body::SdkBody;
    use aws_smithy_types::error::ErrorMetadata;
    use restate_config::MetadataClientKind;

    use super::*;
    use crate::test_servers::{
        LossyProxy, Moto, aws_options, lost_answers_are_resolved, lost_requests_did_not_apply, value,
    };

    fn service_error(status: u16, code: &str) -> SdkError<PutItemError, Response> {
        SdkError::service_error(
            PutItemError::generic(ErrorMetadata::builder().code(code).message("test").build()),
            Response::new(StatusCode::try_from(status).unwrap(), SdkBody::empty()),
        )
    }

    #[test]
    fn write_failures_are_unknown_unless_certainly_not_applied() {
        let lost: SdkError<PutItemError, Response> = SdkError::dispatch_failure(ConnectorError::other(
            "connection closed before message completed".into(),
            None,
        ));
        assert!(matches!(write_failure(&lost), WriteError::UnknownOutcome(_)));
        let timeout: SdkError<PutItemError, Response> = SdkError::timeout_error("timed out");
        assert!(matches!(write_failure(&timeout), WriteError::UnknownOutcome(_)));
        let unread: SdkError<PutItemError, Response> = SdkError::response_error(
            "truncated",
            Response::new(StatusCode::try_from(200).unwrap(), SdkBody::empty()),
        );
        assert!(matches!(write_failure(&unread), WriteError::UnknownOutcome(_)));
        assert!(matches!(
            write_failure(&service_error(500, "InternalServerError")),
            WriteError::UnknownOutcome(_)
        ));
        for code in ["ThrottlingException", "ProvisionedThroughputExceededException"] {
            assert!(
                matches!(write_failure(&service_error(400, code)), WriteError::Unavailable(_)),
                "{code}"
            );
        }
        for code in [
            "ValidationException",
            "AccessDeniedException",
            "ResourceNotFoundException",
        ] {
            assert!(
                matches!(write_failure(&service_error(400, code)), WriteError::Rejected(_)),
                "{code}"
            );
        }
        let not_sent: SdkError<PutItemError, Response> =
            SdkError::dispatch_failure(ConnectorError::io("client error (Connect)".into()));
        assert!(matches!(write_failure(&not_sent), WriteError::Unavailable(_)));
    }

    #[test]
    fn items_without_a_token_still_read() {
        let item = HashMap::from([
            ("pk".to_owned(), AttributeValue::S("k".into())),
            ("version".to_owned(), AttributeValue::N("3".into())),
            ("data".to_owned(), AttributeValue::B(Blob::new(b"old".to_vec()))),
        ]);
        assert_eq!(
            decode("k", &item).unwrap(),
            (VersionedValue::new(Version(3), b"old".to_vec()), None)
        );
        let mut item = item;
        item.insert("token".into(), AttributeValue::S("t".into()));
        assert_eq!(decode("k", &item).unwrap().1.as_deref(), Some("t"));
    }

    async fn moto_with_table(moto: &Moto) {
        let options = aws_options(MetadataClientKind::DynamoDb, &format!("http://{}", moto.address));
        let client = Client::new(&crate::aws::sdk_config(&options).await.unwrap());
        client
            .create_table()
            .table_name("restate-metadata")
            .attribute_definitions(
                AttributeDefinition::builder()
                    .attribute_name("pk")
                    .attribute_type(ScalarAttributeType::S)
                    .build()
                    .unwrap(),
            )
            .key_schema(
                KeySchemaElement::builder()
                    .attribute_name("pk")
                    .key_type(KeyType::Hash)
                    .build()
                    .unwrap(),
            )
            .billing_mode(BillingMode::PayPerRequest)
            .send()
            .await
            .unwrap();
    }

    async fn store(proxy: &LossyProxy) -> DynamoDbStore {
        let options = MetadataClientOptions {
            table: Some("restate-metadata".into()),
            key_prefix: Some("test/".into()),
            ..aws_options(MetadataClientKind::DynamoDb, &proxy.endpoint)
        };
        DynamoDbStore::connect(&options).await.unwrap()
    }

    /// The write lands, its answer is lost. With SDK retries the resent conditional write
    /// failed its own condition and came back as a precondition failure; now the token read
    /// back shows that it applied.
    #[tokio::test]
    async fn conditional_writes_whose_answer_is_lost_are_resolved_by_their_token() {
        let moto = Moto::start_in_temp_dir();
        moto_with_table(&moto).await;
        let proxy = LossyProxy::start(moto.address, None).await;
        let store = store(&proxy).await;
        lost_answers_are_resolved(&store, &proxy, ".PutItem", ".DeleteItem").await;
    }

    /// The request never reaches the server: the read-back shows it did not apply, which is
    /// a plain "unavailable" (callers may retry), not a precondition failure.
    #[tokio::test]
    async fn writes_lost_on_the_way_did_not_apply() {
        let moto = Moto::start_in_temp_dir();
        moto_with_table(&moto).await;
        let proxy = LossyProxy::start(moto.address, None).await;
        let store = store(&proxy).await;
        lost_requests_did_not_apply(&store, &proxy, ".PutItem", ".DeleteItem").await;
    }

    /// A refused connection proves the request was not sent: unavailable, without a read-back.
    #[tokio::test]
    async fn a_refused_connection_did_not_apply() {
        let moto = Moto::start_in_temp_dir();
        moto_with_table(&moto).await;
        let proxy = LossyProxy::start(moto.address, None).await;
        let store = store(&proxy).await;
        proxy.stop();
        tokio::time::sleep(Duration::from_millis(100)).await;
        match store.put("k", value(1, b"one"), Precondition::DoesNotExist).await {
            Err(WriteError::Unavailable(reason)) => assert!(reason.contains("cannot connect"), "{reason}"),
            other => panic!("{other:?}"),
        }
    }
}
