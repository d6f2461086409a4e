//! Helpers for the providers' tests against real local servers (`restate-test-servers`: etcd
//! and moto): client options, and a TCP proxy that loses requests or answers on demand.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use restate_config::{MetadataClientKind, MetadataClientOptions, SecretString};
use restate_metadata_store::{MetadataStore, WriteError};
pub(crate) use restate_test_servers::{Etcd, Moto};
use restate_types::metadata::{Precondition, Version, VersionedValue};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// `[metadata-client]` options for this etcd, keys under `prefix`.
pub(crate) fn etcd_options(etcd: &Etcd, prefix: Option<&str>) -> MetadataClientOptions {
    MetadataClientOptions {
        kind: MetadataClientKind::Etcd,
        addresses: etcd.endpoints.clone(),
        key_prefix: prefix.map(str::to_owned),
        ..Default::default()
    }
}

/// `[metadata-client]` options for an AWS-compatible `endpoint` with test credentials.
pub(crate) fn aws_options(kind: MetadataClientKind, endpoint: &str) -> MetadataClientOptions {
    MetadataClientOptions {
        kind,
        aws_region: Some("us-east-1".into()),
        aws_access_key_id: Some("test".into()),
        aws_secret_access_key: Some(SecretString::new("test")),
        aws_endpoint_url: Some(endpoint.to_owned()),
        aws_allow_http: Some(true),
        ..Default::default()
    }
}

pub(crate) fn value(version: u32, bytes: &[u8]) -> VersionedValue {
    VersionedValue::new(Version(version), bytes.to_vec())
}

/// Writes land but their answers are lost (`put_marker`/`delete_marker` name the requests):
/// the store must settle each as applied, never report a precondition failure.
pub(crate) async fn lost_answers_are_resolved(
    store: &impl MetadataStore,
    proxy: &LossyProxy,
    put_marker: &'static str,
    delete_marker: &'static str,
) {
    proxy.lose_next_answer(put_marker);
    store
        .put("k", value(1, b"one"), Precondition::DoesNotExist)
        .await
        .unwrap();
    assert_eq!(store.get("k").await.unwrap(), Some(value(1, b"one")));

    proxy.lose_next_answer(put_marker);
    store
        .put("k", value(2, b"two"), Precondition::MatchesVersion(Version(1)))
        .await
        .unwrap();
    assert_eq!(store.get("k").await.unwrap(), Some(value(2, b"two")));

    proxy.lose_next_answer(delete_marker);
    store
        .delete("k", Precondition::MatchesVersion(Version(2)))
        .await
        .unwrap();
    assert_eq!(store.get("k").await.unwrap(), None);
    assert_eq!(proxy.lost(), 3, "every answer above was lost");
}

/// Requests never reach the server: the read-back shows they did not apply, a plain
/// "unavailable" (callers may retry), not a precondition failure; a real conflict is still
/// a precondition failure on the first try.
pub(crate) async fn lost_requests_did_not_apply(
    store: &impl MetadataStore,
    proxy: &LossyProxy,
    put_marker: &'static str,
    delete_marker: &'static str,
) {
    proxy.lose_next_request(put_marker);
    match store.put("k", value(1, b"one"), Precondition::DoesNotExist).await {
        Err(WriteError::Unavailable(reason)) => assert!(reason.contains("not applied"), "{reason}"),
        other => panic!("{other:?}"),
    }
    assert_eq!(store.get("k").await.unwrap(), None);
    store
        .put("k", value(1, b"one"), Precondition::DoesNotExist)
        .await
        .unwrap();

    proxy.lose_next_request(delete_marker);
    match store.delete("k", Precondition::MatchesVersion(Version(1))).await {
        Err(WriteError::Unavailable(reason)) => assert!(reason.contains("not applied"), "{reason}"),
        other => panic!("{other:?}"),
    }
    assert_eq!(store.get("k").await.unwrap(), Some(value(1, b"one")));
    assert_eq!(proxy.lost(), 2);

    let err = store
        .put("k", value(2, b"x"), Precondition::MatchesVersion(Version(7)))
        .await
        .unwrap_err();
    assert!(err.is_precondition_failure(), "{err}");
}

/// Rewrites the first chunk of a request on its way to the server.
pub(crate) type RequestFilter = fn(&[u8]) -> Vec<u8>;

/// A TCP proxy in front of a server that can lose the next request of a kind (the
/// connection breaks before it reaches the server) or the answer to it (the server handles
/// the request, the connection breaks before the answer reaches the client). Requests are
/// recognised by a marker in their first bytes, e.g. `"PUT "` or `".PutItem"`.
pub(crate) struct LossyProxy {
    pub endpoint: String,
    faults: Arc<Faults>,
    accept: tokio::task::JoinHandle<()>,
}

#[derive(Default)]
struct Faults {
    lose_request: Mutex<Option<&'static str>>,
    lose_answer_to: Mutex<Option<&'static str>>,
    lost: AtomicUsize,
}

impl Faults {
    /// Takes the planned fault if `chunk` holds the marker it is planned for.
    fn take(plan: &Mutex<Option<&'static str>>, chunk: &[u8]) -> bool {
        let mut plan = plan.lock().unwrap_or_else(|p| p.into_inner());
        match *plan {
            Some(marker) if chunk.windows(marker.len()).any(|window| window == marker.as_bytes()) => {
                *plan = None;
                true
            }
            _ => false,
        }
    }
}

impl LossyProxy {
    pub async fn start(upstream: SocketAddr, filter: Option<RequestFilter>) -> Self {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .unwrap_or_else(|e| panic!("cannot bind the proxy: {e}"));
        let port = listener.local_addr().map(|a| a.port()).unwrap_or_default();
        let faults = Arc::new(Faults::default());
        let shared = faults.clone();
        let accept = tokio::spawn(async move {
            while let Ok((client, _)) = listener.accept().await {
                let Ok(server) = tokio::net::TcpStream::connect(upstream).await else {
                    continue;
                };
                tokio::spawn(relay(client, server, filter, shared.clone()));
            }
        });
        Self {
            endpoint: format!("http://127.0.0.1:{port}"),
            faults,
            accept,
        }
    }

    /// Loses the next request with `marker`.
    pub fn lose_next_request(&self, marker: &'static str) {
        *self.faults.lose_request.lock().unwrap_or_else(|p| p.into_inner()) = Some(marker);
    }

    /// Lets the next request with `marker` through, and loses its answer.
    pub fn lose_next_answer(&self, marker: &'static str) {
        *self.faults.lose_answer_to.lock().unwrap_or_else(|p| p.into_inner()) = Some(marker);
    }

    /// How many requests and answers were lost so far.
    pub fn lost(&self) -> usize {
        self.faults.lost.load(Ordering::SeqCst)
    }

    /// Stops accepting connections: new ones are refused.
    pub fn stop(&self) {
        self.accept.abort();
    }
}

impl Drop for LossyProxy {
    fn drop(&mut self) {
        self.accept.abort();
    }
}

async fn relay(
    client: tokio::net::TcpStream,
    server: tokio::net::TcpStream,
    filter: Option<RequestFilter>,
    faults: Arc<Faults>,
) {
    let (mut client_read, mut client_write) = client.into_split();
    let (mut server_read, mut server_write) = server.into_split();
    let lose_answer = Arc::new(AtomicBool::new(false));
    let (upstream_faults, upstream_lose_answer) = (faults.clone(), lose_answer.clone());
    let upstream = tokio::spawn(async move {
        let mut buffer = vec![0; 64 * 1024];
        loop {
            let n = match client_read.read(&mut buffer).await {
                Ok(0) | Err(_) => break,
                Ok(n) => n,
            };
            if Faults::take(&upstream_faults.lose_request, &buffer[..n]) {
                upstream_faults.lost.fetch_add(1, Ordering::SeqCst);
                return;
            }
            if Faults::take(&upstream_faults.lose_answer_to, &buffer[..n]) {
                upstream_lose_answer.store(true, Ordering::SeqCst);
            }
            let chunk = filter.map_or_else(|| buffer[..n].to_vec(), |filter| filter(&buffer[..n]));
            if server_write.write_all(&chunk).await.is_err() {
                break;
            }
        }
        let _ = server_write.shutdown().await;
    });
    let mut buffer = vec![0; 64 * 1024];
    loop {
        let n = match server_read.read(&mut buffer).await {
            Ok(0) | Err(_) => break,
            Ok(n) => n,
        };
        if lose_answer.swap(false, Ordering::SeqCst) {
            faults.lost.fetch_add(1, Ordering::SeqCst);
            break;
        }
        if client_write.write_all(&buffer[..n]).await.is_err() {
            break;
        }
    }
    // Closes both directions of the client's connection.
    upstream.abort();
    let _ = upstream.await;
}
