//! One conformance suite, run against every metadata store: the replicated store (1 and 3
//! nodes, real processes), etcd, DynamoDB and S3 (real local servers started here).

use std::sync::Arc;
use std::time::Duration;

use restate_cluster_tests::servers::{Etcd, Moto};
use restate_cluster_tests::{Cluster, NodeSpec, Ports, TestDir, TestNode, example_config};
use restate_config::{MetadataClientKind, MetadataClientOptions, SecretString};
use restate_metadata_store::{MetadataClient, MetadataStore, ReplicatedStoreClient, WriteError};
use restate_types::metadata::{Precondition, Version, VersionedValue};

const START_TIMEOUT: Duration = Duration::from_secs(60);
const MESSAGE_LIMIT: usize = 32 * 1024 * 1024;

fn value(version: u32, bytes: &[u8]) -> VersionedValue {
    VersionedValue::new(Version(version), bytes.to_vec())
}

/// The behaviour every store must show.
async fn conformance(store: Arc<dyn MetadataStore>) -> anyhow::Result<()> {
    let kind = store.kind();
    let client = MetadataClient::new(store.clone(), MESSAGE_LIMIT);

    // A missing key.
    assert_eq!(client.get("missing").await?, None, "{kind}");
    assert_eq!(client.get_version("missing").await?, None, "{kind}");

    // Round trip, and each precondition's success and failure.
    client.put("k", value(1, b"one"), Precondition::DoesNotExist).await?;
    assert_eq!(client.get("k").await?, Some(value(1, b"one")), "{kind}");
    assert_eq!(client.get_version("k").await?, Some(Version(1)), "{kind}");
    let err = client
        .put("k", value(2, b"again"), Precondition::DoesNotExist)
        .await
        .expect_err("DoesNotExist on an existing key");
    assert!(err.is_precondition_failure(), "{kind}: {err}");
    client
        .put("k", value(2, b"two"), Precondition::MatchesVersion(Version(1)))
        .await?;
    match client
        .put("k", value(3, b"stale"), Precondition::MatchesVersion(Version(1)))
        .await
    {
        Err(WriteError::FailedPrecondition { actual, .. }) => assert_eq!(actual, Some(Version(2)), "{kind}"),
        other => panic!("{kind}: a stale version must fail its precondition, got {other:?}"),
    }
    match client
        .put("absent", value(2, b"x"), Precondition::MatchesVersion(Version(1)))
        .await
    {
        Err(WriteError::FailedPrecondition { actual: None, .. }) => {}
        other => panic!("{kind}: MatchesVersion on a missing key must fail, got {other:?}"),
    }
    client.put("k", value(3, b"three"), Precondition::None).await?;
    assert_eq!(client.get("k").await?, Some(value(3, b"three")), "{kind}");
    assert_eq!(
        client.get("absent").await?,
        None,
        "{kind}: a failed write must write nothing"
    );

    // Delete.
    let err = client
        .delete("k", Precondition::MatchesVersion(Version(2)))
        .await
        .expect_err("delete with a stale version");
    assert!(err.is_precondition_failure(), "{kind}: {err}");
    client.delete("k", Precondition::MatchesVersion(Version(3))).await?;
    assert_eq!(client.get("k").await?, None, "{kind}");
    client
        .put("k", value(1, b"recreated"), Precondition::DoesNotExist)
        .await?;
    assert_eq!(client.get("k").await?, Some(value(1, b"recreated")), "{kind}");

    // Values up to the limit, and a clear error above it.
    let max = client.max_value_size();
    let big: Vec<u8> = (0..max).map(|i| (i % 251) as u8).collect();
    client
        .put(
            "big",
            VersionedValue::new(Version(1), big.clone()),
            Precondition::DoesNotExist,
        )
        .await
        .unwrap_or_else(|e| panic!("{kind}: a value of {max} bytes must be accepted: {e}"));
    assert_eq!(client.get("big").await?.map(|v| v.value.len()), Some(max), "{kind}");
    assert_eq!(client.get("big").await?.map(|v| v.value == big), Some(true), "{kind}");
    match client
        .put(
            "bigger",
            VersionedValue::new(Version(1), vec![0; max + 1]),
            Precondition::None,
        )
        .await
    {
        Err(WriteError::TooLarge { .. }) => {}
        other => panic!("{kind}: a value above the limit must be refused, got {other:?}"),
    }

    // Contention: 8 writers doing read-modify-write increments of one counter.
    let writers = 8;
    let increments = 10u64;
    client
        .put_json("counter", Version(1), &0u64, Precondition::DoesNotExist)
        .await?;
    let handles: Vec<_> = (0..writers)
        .map(|_| {
            let client = client.clone();
            tokio::spawn(async move {
                let mut acknowledged = 0u64;
                for _ in 0..increments {
                    loop {
                        let (version, count) = client
                            .get_json::<u64>("counter")
                            .await?
                            .ok_or_else(|| anyhow::anyhow!("the counter vanished"))?;
                        match client
                            .put_json(
                                "counter",
                                version.next(),
                                &(count + 1),
                                Precondition::MatchesVersion(version),
                            )
                            .await
                        {
                            Ok(()) => {
                                acknowledged += 1;
                                break;
                            }
                            Err(error) if error.is_precondition_failure() => continue,
                            Err(error) => return Err(anyhow::anyhow!(error)),
                        }
                    }
                }
                anyhow::Ok(acknowledged)
            })
        })
        .collect();
    let mut acknowledged = 0;
    for handle in handles {
        acknowledged += handle.await??;
    }
    let (version, count) = client.get_json::<u64>("counter").await?.expect("the counter");
    assert_eq!(acknowledged, writers * increments, "{kind}");
    assert_eq!(count, acknowledged, "{kind}: lost or doubled increments");
    assert_eq!(u64::from(version.0), acknowledged + 1, "{kind}");

    // Listing.
    let mut keys = store.keys().await?;
    keys.sort();
    for expected in ["big", "counter", "k"] {
        assert!(
            keys.iter().any(|k| k == expected),
            "{kind}: `{expected}` missing from {keys:?}"
        );
    }
    assert!(!keys.iter().any(|k| k == "bigger" || k == "absent"), "{kind}: {keys:?}");
    Ok(())
}

fn external_options(kind: MetadataClientKind) -> MetadataClientOptions {
    MetadataClientOptions {
        kind,
        aws_region: Some("us-east-1".into()),
        aws_access_key_id: Some("test".into()),
        aws_secret_access_key: Some(SecretString::new("test")),
        ..Default::default()
    }
}

async fn connect(options: &MetadataClientOptions) -> anyhow::Result<Arc<dyn MetadataStore>> {
    restate_metadata_providers::connect(options)
        .await?
        .ok_or_else(|| anyhow::anyhow!("no external store for {:?}", options.kind))
}

#[tokio::test]
async fn replicated_single_node() -> anyhow::Result<()> {
    let dir = TestDir::new();
    let spec = NodeSpec::new("solo").config_file(example_config("single-node.toml"));
    let mut node = TestNode::start(dir.path(), spec, Ports::free());
    node.wait_alive(START_TIMEOUT).await?;
    let client = ReplicatedStoreClient::new(
        "restate-single",
        vec![node.fabric_url()],
        Duration::from_secs(3),
        Duration::from_secs(30),
    );
    conformance(Arc::new(client)).await
}

#[tokio::test]
async fn replicated_three_nodes() -> anyhow::Result<()> {
    let mut cluster = Cluster::start(3, Some(example_config("cluster-3/n1.toml")), |_, spec| {
        spec.env("RESTATE_AUTO_PROVISION", "true")
    });
    cluster.wait_all_alive(START_TIMEOUT).await?;
    let addresses = cluster.nodes.iter().map(TestNode::fabric_url).collect();
    let client = ReplicatedStoreClient::new(
        "restate-cluster",
        addresses,
        Duration::from_secs(3),
        Duration::from_secs(30),
    );
    conformance(Arc::new(client)).await
}

#[tokio::test]
async fn etcd() -> anyhow::Result<()> {
    let dir = TestDir::new();
    let etcd = Etcd::start(dir.path(), 1);
    let options = MetadataClientOptions {
        kind: MetadataClientKind::Etcd,
        addresses: etcd.endpoints.clone(),
        key_prefix: Some("conformance/".into()),
        ..Default::default()
    };
    conformance(connect(&options).await?).await
}

#[tokio::test]
async fn dynamodb() -> anyhow::Result<()> {
    let dir = TestDir::new();
    let moto = Moto::start(dir.path());
    moto.create_table("restate-metadata");
    let options = MetadataClientOptions {
        table: Some("restate-metadata".into()),
        key_prefix: Some("conformance/".into()),
        aws_endpoint_url: Some(moto.endpoint.clone()),
        ..external_options(MetadataClientKind::DynamoDb)
    };
    conformance(connect(&options).await?).await
}

#[tokio::test]
async fn s3_object_store() -> anyhow::Result<()> {
    let dir = TestDir::new();
    let moto = Moto::start(dir.path());
    moto.create_bucket("restate-metadata");
    let options = MetadataClientOptions {
        path: Some("s3://restate-metadata/conformance".into()),
        aws_endpoint_url: Some(moto.endpoint.clone()),
        aws_allow_http: Some(true),
        ..external_options(MetadataClientKind::ObjectStore)
    };
    conformance(connect(&options).await?).await
}
