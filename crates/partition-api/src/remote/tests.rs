//! The fabric client and server against a real tonic server on loopback.

use std::sync::atomic::{AtomicUsize, Ordering};

use restate_types::manifest::{HandlerType, ServiceType};
use restate_types::{GenerationalNodeId, Heartbeat, LivenessThresholds};
use tokio_util::sync::CancellationToken;

use super::*;
use crate::model::{InvocationTarget, Retention};
use crate::router::LocalPartition;

/// A replica that answers every call with its argument and counts the calls; with `hang`,
/// calls never finish (as on a node that was paused while it held them).
#[derive(Default)]
struct Echo {
    calls: AtomicUsize,
    hang: bool,
}

#[async_trait::async_trait]
impl PartitionApi for Echo {
    fn partition_id(&self) -> u16 {
        0
    }
    async fn call(&self, request: InvokeRequest) -> Result<(InvocationId, Arc<InvocationResult>), SubmitError> {
        self.calls.fetch_add(1, Ordering::SeqCst);
        if self.hang {
            std::future::pending::<()>().await;
        }
        Ok((request.id, Arc::new(InvocationResult::Success(request.argument))))
    }
    async fn send(&self, _: InvokeRequest) -> Result<bool, SubmitError> {
        Err(SubmitError::Failed {
            partition: 0,
            reason: "held at a record".into(),
        })
    }
    async fn signal(&self, _: InvocationId, _: u32, _: SignalResult) -> Result<(), SubmitError> {
        Ok(())
    }
    async fn manage(&self, _: InvocationId, _: Management) -> Result<Managed, SubmitError> {
        Ok(Managed::Refused("it has not started yet".into()))
    }
    async fn restart_as_new(&self, _: InvocationId) -> Result<Restarted, SubmitError> {
        Ok(Restarted::Workflow)
    }
    async fn patch_state(
        &self,
        _: String,
        _: String,
        _: Vec<(Vec<u8>, Vec<u8>)>,
        _: Option<String>,
    ) -> Result<(), SubmitError> {
        Ok(())
    }
    async fn terminate(&self, _: InvocationId, _: bool) -> Result<Terminated, SubmitError> {
        Ok(Terminated::Requested)
    }
    async fn attach(&self, _: InvocationId) -> Result<Option<Arc<InvocationResult>>, SubmitError> {
        Ok(None)
    }
    async fn output(&self, _: InvocationId) -> Result<Output, SubmitError> {
        Ok(Output::NotReady)
    }
}

fn request(argument: &[u8]) -> InvokeRequest {
    InvokeRequest {
        id: InvocationId::generate(7),
        target: InvocationTarget {
            service: "Greeter".into(),
            handler: "greet".into(),
            key: None,
            service_type: ServiceType::Service,
            handler_type: HandlerType::Shared,
        },
        argument: argument.to_vec(),
        headers: vec![("x-trace".into(), "1".into())],
        execution_time: None,
        response_sink: None,
        idempotency_key: None,
        retention: Retention::default(),
        restarted_from: None,
        invoked_by: None,
        submit_notification: None,
    }
}

const SILENCE: Duration = Duration::from_secs(1);

fn view() -> ClusterView {
    ClusterView::new(LivenessThresholds {
        suspect_after: Duration::from_millis(500),
        dead_after: Duration::from_secs(2),
    })
}

fn member(id: u32, address: &str) -> (GenerationalNodeId, String, String, Vec<Role>) {
    (
        PlainNodeId::new(id).with_generation(1),
        format!("node-{id}"),
        address.to_owned(),
        vec![Role::Worker],
    )
}

fn heard(view: &ClusterView, id: u32, leading: Vec<u16>) {
    view.heard_from(
        PlainNodeId::new(id).with_generation(1),
        Heartbeat {
            leading_partitions: leading,
            ..Heartbeat::default()
        },
    );
}

/// Serves `partitions` on a loopback port, as a node's fabric does; returns its address.
async fn serve(partitions: Partitions, shutdown: CancellationToken) -> String {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let address = format!("http://{}/", listener.local_addr().unwrap());
    let router = tonic::service::Routes::from(axum::Router::new())
        .add_service(PartitionServer::new(partitions).into_service(1 << 20))
        .into_axum_router();
    tokio::spawn(restate_net::serve(listener, router, shutdown));
    address
}

#[test]
fn the_leader_is_asked_first_then_live_nodes_and_never_dead_ones_or_this_node() {
    let view = view();
    view.set_members([
        member(1, "http://127.0.0.1:1/"),
        member(2, "http://127.0.0.1:2/"),
        member(3, "http://127.0.0.1:3/"),
        member(4, "http://127.0.0.1:4/"),
    ]);
    for id in 1..=4 {
        heard(&view, id, if id == 3 { vec![5] } else { vec![] });
    }
    view.connection_refused(PlainNodeId::new(2));
    let fabric = Fabric::new(view, "127.0.0.1:1", 1 << 20, SILENCE);
    let order: Vec<u32> = fabric.candidates(5).into_iter().map(|(id, _)| id.0).collect();
    assert_eq!(order, vec![3, 4]);
    let order: Vec<u32> = fabric.candidates(6).into_iter().map(|(id, _)| id.0).collect();
    assert_eq!(order, vec![3, 4]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn requests_reach_the_replica_on_another_node_and_its_answers_come_back() {
    let shutdown = CancellationToken::new();
    let echo = Arc::new(Echo::default());
    let far = Partitions::local_only();
    far.serve_locally(vec![LocalPartition {
        partition_id: 0,
        keys: 0..=u64::MAX,
        api: echo.clone(),
        reader: Arc::new(NoReader),
    }]);
    // A node that runs no replica answers "not here", and the next one is asked.
    let empty = serve(Partitions::local_only(), shutdown.clone()).await;
    let address = serve(far, shutdown.clone()).await;
    let view = view();
    view.set_members([member(1, &empty), member(2, &address)]);
    heard(&view, 1, vec![0]);
    heard(&view, 2, vec![]);
    let remote = RemotePartition::new(0, Fabric::new(view, "127.0.0.1:9", 1 << 20, SILENCE));

    let sent = request(b"\"Sam\"");
    let (id, result) = remote.call(sent.clone()).await.unwrap();
    assert_eq!(
        (id, &*result),
        (sent.id, &InvocationResult::Success(b"\"Sam\"".to_vec()))
    );
    assert_eq!(echo.calls.load(Ordering::SeqCst), 1);
    // Errors cross as they are, so the caller still knows whether a retry is safe.
    assert_eq!(
        remote.send(sent.clone()).await,
        Err(SubmitError::Failed {
            partition: 0,
            reason: "held at a record".into()
        })
    );
    assert_eq!(
        remote.manage(sent.id, Management::Pause).await,
        Ok(Managed::Refused("it has not started yet".into()))
    );
    assert_eq!(remote.terminate(sent.id, false).await, Ok(Terminated::Requested));
    assert_eq!(remote.output(sent.id).await, Ok(Output::NotReady));
    assert_eq!(remote.attach(sent.id).await, Ok(None));

    // Reads of its tables, as the query engine makes them (blocking, off the runtime).
    let fabric = remote.fabric.clone();
    let (journal, state) = tokio::task::spawn_blocking(move || {
        let reader = RemoteReader::new(0, fabric);
        let scope = KeyScope::default();
        let page = Page { after: None, limit: 10 };
        (
            reader.journal(&sent.id),
            reader.state(scope, page).map(|p| p.rows.len()),
        )
    })
    .await
    .unwrap();
    let journal = journal.unwrap();
    assert_eq!(journal.len(), 1);
    assert_eq!(
        (journal[0].message_type, &journal[0].payload[..]),
        (0x0400, &b"input"[..])
    );
    assert_eq!(journal[0].appended_at, Some(17));
    assert_eq!(state.unwrap_err().0, "not read in these tests");
    shutdown.cancel();
}

#[tokio::test]
async fn without_a_node_that_answers_the_request_is_refused_as_safe_to_retry() {
    // A port nothing listens on: the connection is refused, so the request never left.
    let closed = {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        format!("http://{}/", listener.local_addr().unwrap())
    };
    let view = view();
    view.set_members([member(1, &closed)]);
    heard(&view, 1, vec![0]);
    let remote = RemotePartition::new(0, Fabric::new(view, "127.0.0.1:9", 1 << 20, SILENCE));
    let error = remote.call(request(b"1")).await.unwrap_err();
    assert!(matches!(error, SubmitError::Unreachable(_)), "{error}");
    assert!(error.retry_is_safe());
    assert!(error.to_string().contains("N1"), "{error}");

    let nobody = RemotePartition::new(0, Fabric::new(self::view(), "127.0.0.1:9", 1 << 20, SILENCE));
    let error = nobody.call(request(b"1")).await.unwrap_err();
    assert!(error.to_string().contains("knows no live worker node"), "{error}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_request_held_by_a_node_that_falls_silent_is_given_up_and_silent_nodes_are_not_asked() {
    let shutdown = CancellationToken::new();
    let stuck = Partitions::local_only();
    let echo = Arc::new(Echo {
        hang: true,
        ..Echo::default()
    });
    stuck.serve_locally(vec![LocalPartition {
        partition_id: 0,
        keys: 0..=u64::MAX,
        api: echo.clone(),
        reader: Arc::new(NoReader),
    }]);
    let address = serve(stuck, shutdown.clone()).await;
    let view = view();
    view.set_members([member(1, &address)]);
    // Its last heartbeat: it falls silent while it holds the call.
    heard(&view, 1, vec![0]);
    let remote = RemotePartition::new(0, Fabric::new(view, "127.0.0.1:9", 1 << 20, SILENCE));
    let error = tokio::time::timeout(Duration::from_secs(60), remote.call(request(b"1")))
        .await
        .expect("the call is given up once the node is silent, not waited on")
        .unwrap_err();
    assert_eq!(echo.calls.load(Ordering::SeqCst), 1, "the node held the call");
    assert!(matches!(error, SubmitError::Unknown { .. }), "{error}");
    assert!(!error.retry_is_safe(), "the silent node may still apply it");
    assert!(error.to_string().contains("stopped answering heartbeats"), "{error}");
    // Once silent, it is not asked at all.
    let error = remote.attach(InvocationId::generate(7)).await.unwrap_err();
    assert!(error.to_string().contains("knows no live worker node"), "{error}");
    assert_eq!(echo.calls.load(Ordering::SeqCst), 1);
    shutdown.cancel();
}

struct NoReader;

impl crate::PartitionReader for NoReader {
    fn snapshot(&self) -> crate::PartitionSnapshot {
        crate::PartitionSnapshot::default()
    }
    fn attempts(&self) -> HashMap<InvocationId, crate::AttemptInfo> {
        HashMap::new()
    }
    fn invocation_status(&self, _: &InvocationId) -> Result<Option<crate::model::InvocationStatus>, crate::ReadError> {
        Ok(None)
    }
    fn invocation_statuses(
        &self,
        _: crate::introspect::Page<'_>,
    ) -> Result<crate::introspect::Paged<(InvocationId, crate::model::InvocationStatus)>, crate::ReadError> {
        Ok(crate::introspect::Paged {
            rows: Vec::new(),
            more: None,
        })
    }
    fn journal(&self, _: &InvocationId) -> Result<Vec<crate::introspect::JournalRow>, crate::ReadError> {
        Ok(vec![crate::introspect::JournalRow {
            index: 0,
            message_type: 0x0400,
            payload: bytes::Bytes::from_static(b"input"),
            appended_at: Some(17),
        }])
    }
    fn state(
        &self,
        _: crate::introspect::KeyScope<'_>,
        _: crate::introspect::Page<'_>,
    ) -> Result<crate::introspect::Paged<crate::introspect::StateRow>, crate::ReadError> {
        Err(crate::ReadError("not read in these tests".into()))
    }
    fn inbox(
        &self,
        _: crate::introspect::KeyScope<'_>,
        _: crate::introspect::Page<'_>,
    ) -> Result<crate::introspect::Paged<crate::introspect::InboxRow>, crate::ReadError> {
        Err(crate::ReadError("not read in these tests".into()))
    }
    fn locks(
        &self,
        _: crate::introspect::KeyScope<'_>,
        _: crate::introspect::Page<'_>,
    ) -> Result<crate::introspect::Paged<crate::introspect::LockRow>, crate::ReadError> {
        Err(crate::ReadError("not read in these tests".into()))
    }
    fn promises(
        &self,
        _: crate::introspect::KeyScope<'_>,
        _: crate::introspect::Page<'_>,
    ) -> Result<crate::introspect::Paged<crate::introspect::PromiseRow>, crate::ReadError> {
        Err(crate::ReadError("not read in these tests".into()))
    }
}
