//! Seal, read, repair and sequencer paths against in-process log-servers (real stores in
//! temporary directories) behind a transport that injects faults per node and call: hangs,
//! errors, corrupt answers, stores that land but are never answered.

use std::collections::{BTreeSet, HashMap};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use restate_log_server::{LogServerService, LogStore};
use restate_proto::log_server as pb;
use restate_proto::log_server::log_server_svc_server::LogServerSvc;
use restate_types::metadata::ReplicatedParams;
use restate_types::{GenerationalNodeId, PlainNodeId, ReplicationProperty};
use tonic::{Request, Status};

use crate::peers::{LogServerRpc, Peers};
use crate::replicated;
use crate::sequencer::Sequencer;
use crate::{BifrostError, NotAppended};

const CLUSTER: &str = "test-cluster";
const LOGLET: u64 = 7;
const RPC_TIMEOUT: Duration = Duration::from_millis(200);

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
enum Call {
    Store,
    Seal,
    GetRecords,
    Trim,
}

#[derive(Debug, Clone, Copy)]
enum Fault {
    /// Never answers (the caller's deadline runs out); the call is not executed.
    Hang,
    /// Executes the call, then never answers.
    LandThenHang,
    /// Fails this many calls with an error, then behaves.
    FailTimes(u32),
    /// Answers reads with every stored record reported corrupt.
    Corrupt,
}

struct Member {
    store: LogStore,
    service: LogServerService,
    activated: Arc<AtomicBool>,
    _dir: tempfile::TempDir,
}

fn member(activated: bool) -> Member {
    let dir = tempfile::tempdir().expect("temp dir");
    let (store, _) = LogStore::open(dir.path()).expect("open the log store");
    let activated = Arc::new(AtomicBool::new(activated));
    let service = LogServerService::new(
        store.clone(),
        CLUSTER.into(),
        Arc::new(AtomicBool::new(true)),
        activated.clone(),
    );
    Member {
        store,
        service,
        activated,
        _dir: dir,
    }
}

/// In-process log-servers with injected faults.
#[derive(Default)]
struct FaultyLogServers {
    members: Mutex<HashMap<PlainNodeId, Arc<Member>>>,
    faults: Mutex<HashMap<(PlainNodeId, Call), Fault>>,
    /// Repair stores received: (node, offset).
    repairs: Mutex<Vec<(PlainNodeId, u32)>>,
}

impl FaultyLogServers {
    fn with_members(count: u32) -> Arc<Self> {
        let servers = Arc::new(Self::default());
        for id in 1..=count {
            servers.replace(PlainNodeId(id), member(true));
        }
        servers
    }

    fn replace(&self, node: PlainNodeId, member: Member) {
        self.members
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert(node, Arc::new(member));
    }

    fn member(&self, node: PlainNodeId) -> Arc<Member> {
        self.members.lock().unwrap_or_else(|p| p.into_inner())[&node].clone()
    }

    fn inject(&self, node: u32, call: Call, fault: Fault) {
        self.faults
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert((PlainNodeId(node), call), fault);
    }

    fn heal(&self, node: u32, call: Call) {
        self.faults
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .remove(&(PlainNodeId(node), call));
    }

    fn peek(&self, node: PlainNodeId, call: Call) -> Option<Fault> {
        self.faults
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .get(&(node, call))
            .copied()
    }

    /// The fault to apply to this call (counting down `FailTimes`).
    fn fault(&self, node: PlainNodeId, call: Call) -> Option<Fault> {
        let mut faults = self.faults.lock().unwrap_or_else(|p| p.into_inner());
        let fault = faults.get_mut(&(node, call))?;
        match fault {
            Fault::FailTimes(0) => None,
            Fault::FailTimes(n) => {
                *n -= 1;
                Some(Fault::FailTimes(*n + 1))
            }
            other => Some(*other),
        }
    }

    /// Runs `call` on the member with the node's fault applied.
    async fn run<T: Send>(
        &self,
        node: PlainNodeId,
        call: Call,
        execute: impl AsyncFnOnce(Arc<Member>) -> Result<T, Status>,
    ) -> Result<T, Status> {
        let member = self.member(node);
        match self.fault(node, call) {
            None | Some(Fault::Corrupt) => execute(member).await,
            Some(Fault::Hang) => std::future::pending().await,
            Some(Fault::LandThenHang) => {
                let _ = execute(member).await;
                std::future::pending().await
            }
            Some(Fault::FailTimes(_)) => Err(Status::unavailable("injected failure")),
        }
    }
}

#[tonic::async_trait]
impl LogServerRpc for FaultyLogServers {
    async fn store(&self, node: PlainNodeId, _: &str, request: pb::StoreRequest) -> Result<pb::StoreResponse, Status> {
        if request.repair {
            self.repairs
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .push((node, request.first_offset));
        }
        self.run(node, Call::Store, async move |m: Arc<Member>| {
            Ok(m.service.store(Request::new(request)).await?.into_inner())
        })
        .await
    }

    async fn seal(&self, node: PlainNodeId, _: &str, request: pb::SealRequest) -> Result<pb::LogletInfo, Status> {
        self.run(node, Call::Seal, async move |m: Arc<Member>| {
            Ok(m.service.seal(Request::new(request)).await?.into_inner())
        })
        .await
    }

    async fn get_records(
        &self,
        node: PlainNodeId,
        _: &str,
        request: pb::GetRecordsRequest,
    ) -> Result<pb::GetRecordsResponse, Status> {
        let corrupt = matches!(self.peek(node, Call::GetRecords), Some(Fault::Corrupt));
        let mut response = self
            .run(node, Call::GetRecords, async move |m: Arc<Member>| {
                Ok(m.service.get_records(Request::new(request)).await?.into_inner())
            })
            .await?;
        if corrupt {
            response
                .corrupt_offsets
                .extend(response.records.drain(..).map(|r| r.offset));
        }
        Ok(response)
    }

    async fn get_loglet_info(
        &self,
        node: PlainNodeId,
        _: &str,
        request: pb::GetLogletInfoRequest,
    ) -> Result<pb::LogletInfo, Status> {
        let member = self.member(node);
        Ok(member
            .service
            .get_loglet_info(Request::new(request))
            .await?
            .into_inner())
    }

    async fn trim(&self, node: PlainNodeId, _: &str, request: pb::TrimRequest) -> Result<pb::LogletInfo, Status> {
        self.run(node, Call::Trim, async move |m: Arc<Member>| {
            Ok(m.service.trim(Request::new(request)).await?.into_inner())
        })
        .await
    }
}

fn params(nodeset: &[u32], copies: u8) -> ReplicatedParams {
    ReplicatedParams {
        loglet_id: LOGLET,
        sequencer: GenerationalNodeId {
            id: PlainNodeId(1),
            generation: 1,
        },
        replication: ReplicationProperty::new(copies).expect("replication"),
        nodeset: nodeset.iter().map(|n| PlainNodeId(*n)).collect(),
    }
}

fn addresses(nodeset: &[u32]) -> HashMap<PlainNodeId, String> {
    nodeset
        .iter()
        .map(|n| (PlainNodeId(*n), format!("http://127.0.0.1:{n}")))
        .collect()
}

fn peers(servers: &Arc<FaultyLogServers>, store_deadline: Duration) -> Arc<Peers> {
    Arc::new(Peers::with_log_servers(
        CLUSTER,
        RPC_TIMEOUT,
        store_deadline,
        servers.clone(),
    ))
}

fn payload(offset: u32) -> Vec<u8> {
    format!("record {offset}").into_bytes()
}

/// Stores records `[from, to)` on the given members directly, as the sequencer would.
async fn put(servers: &FaultyLogServers, members: &[u32], from: u32, to: u32, known_global_tail: u32) {
    let payloads: Vec<Vec<u8>> = (from..to).map(payload).collect();
    for node in members {
        let stored = servers
            .member(PlainNodeId(*node))
            .store
            .store(LOGLET, (1, 1), from, &payloads, known_global_tail, false)
            .await
            .expect("store");
        assert!(stored.is_ok(), "N{node} refused the store: {stored:?}");
    }
}

async fn offsets_on(servers: &FaultyLogServers, node: u32) -> Vec<u32> {
    let range = servers
        .member(PlainNodeId(node))
        .store
        .read(LOGLET, 0, u32::MAX, 100_000)
        .expect("read");
    range.records.into_iter().map(|(offset, _)| offset).collect()
}

/// A failure detector's view of `nodes` as log-servers, quick to call a node suspect and slow
/// to call it dead, for tests that make members silent.
fn log_server_view(nodes: &[u32]) -> restate_types::ClusterView {
    use restate_types::{ClusterView, LivenessThresholds, Role};
    let view = ClusterView::new(LivenessThresholds {
        suspect_after: Duration::from_millis(20),
        dead_after: Duration::from_secs(60),
    });
    view.set_members(nodes.iter().map(|n| {
        (
            PlainNodeId(*n).with_generation(1),
            format!("n{n}"),
            format!("http://n{n}/"),
            vec![Role::LogServer],
        )
    }));
    view
}

fn no_exclusions() -> BTreeSet<PlainNodeId> {
    BTreeSet::new()
}

/// Item: a seal scanned from the known global tail and treated trimmed offsets as missing,
/// ending the segment below acknowledged (and trimmed) records.
#[tokio::test]
async fn seal_counts_trimmed_offsets_as_present() {
    let servers = FaultyLogServers::with_members(3);
    let nodes = [1, 2, 3];
    put(&servers, &[1, 2], 0, 10, 6).await;
    // The log was trimmed just below its tail, on every member.
    for node in nodes {
        servers
            .member(PlainNodeId(node))
            .store
            .trim(LOGLET, 9)
            .await
            .expect("trim");
    }
    let peers = peers(&servers, Duration::from_secs(1));
    let end = replicated::seal(&peers, &params(&nodes, 2), &addresses(&nodes), &no_exclusions(), 9)
        .await
        .expect("seal");
    assert_eq!(end, 10, "the segment ends after the last acknowledged record");
}

/// Item: trim points of the members bound the segment's end from below even when the
/// chain's trim point is not passed in (a node that cached an older chain).
#[tokio::test]
async fn seal_respects_member_trim_points() {
    let servers = FaultyLogServers::with_members(3);
    let nodes = [1, 2, 3];
    put(&servers, &[1, 2], 0, 10, 2).await;
    for node in nodes {
        servers
            .member(PlainNodeId(node))
            .store
            .trim(LOGLET, 8)
            .await
            .expect("trim");
    }
    let peers = peers(&servers, Duration::from_secs(1));
    let end = replicated::seal(&peers, &params(&nodes, 2), &addresses(&nodes), &no_exclusions(), 0)
        .await
        .expect("seal");
    assert_eq!(end, 10);
}

/// Item: moving a paused node's logs repaired each log's last records onto the paused member
/// and waited out the RPC deadline for every one of them, one log after another.
#[tokio::test]
async fn a_seal_does_not_wait_for_a_member_that_stopped_answering() {
    let servers = FaultyLogServers::with_members(3);
    let nodes = [1, 2, 3];
    // Records 0..10 have one copy (on 1); member 2 cannot take the repairs, member 3 is paused.
    put(&servers, &[1], 0, 10, 0).await;
    servers.inject(2, Call::Store, Fault::FailTimes(u32::MAX));
    for call in [Call::Store, Call::Seal, Call::GetRecords] {
        servers.inject(3, call, Fault::Hang);
    }
    let view = log_server_view(&nodes);
    view.connection_refused(PlainNodeId(3));
    // An RPC deadline far above the test's bound: any call waited on member 3 shows.
    let peers = Peers::with_log_servers(
        CLUSTER,
        Duration::from_secs(60),
        Duration::from_secs(60),
        servers.clone(),
    )
    .with_liveness(view, Duration::from_millis(50), PlainNodeId(99));
    let (params, addresses, exclusions) = (params(&nodes, 2), addresses(&nodes), no_exclusions());
    let seal = replicated::seal(&peers, &params, &addresses, &exclusions, 0);
    let end = tokio::time::timeout(Duration::from_secs(10), seal)
        .await
        .expect("the seal does not wait for the silent member")
        .expect("seal");
    assert_eq!(end, 10, "the records with one copy are kept");
}

/// Item: a range read waited out its RPC deadline on a member that was paused (connection
/// open, nothing answered) before it asked the others, so a new leader replayed its log
/// seconds late.
#[tokio::test]
async fn a_read_does_not_wait_for_a_member_that_falls_silent() {
    let servers = FaultyLogServers::with_members(3);
    let nodes = [1, 2, 3];
    put(&servers, &[1, 2], 0, 10, 0).await;
    servers.inject(1, Call::GetRecords, Fault::Hang);
    let view = log_server_view(&nodes);
    let heard = |node: u32| {
        view.heard_from(
            PlainNodeId(node).with_generation(1),
            restate_types::Heartbeat::default(),
        )
    };
    // Member 1 answered a heartbeat just now, so it is asked first; then it falls silent
    // while it holds the read. Members 2 and 3 keep answering.
    nodes.iter().for_each(|n| heard(*n));
    let beating = {
        let view = view.clone();
        tokio::spawn(async move {
            loop {
                for node in [2, 3] {
                    view.heard_from(
                        PlainNodeId(node).with_generation(1),
                        restate_types::Heartbeat::default(),
                    );
                }
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
        })
    };
    // An RPC deadline far above the test's bound: a read waited on member 1 shows.
    let peers = Peers::with_log_servers(
        CLUSTER,
        Duration::from_secs(60),
        Duration::from_secs(60),
        servers.clone(),
    )
    .with_liveness(view, Duration::from_millis(100), PlainNodeId(99));
    let (params, addresses) = (params(&nodes, 2), addresses(&nodes));
    let read = replicated::read(&peers, &params, &addresses, 0, 10);
    let range = tokio::time::timeout(Duration::from_secs(10), read)
        .await
        .expect("the read does not wait for the member that fell silent")
        .expect("read");
    beating.abort();
    let offsets: Vec<u32> = range.records.iter().map(|(offset, _)| *offset).collect();
    assert_eq!(offsets, (0..10).collect::<Vec<_>>());
}

/// Item: a member whose read failed was treated as not holding the records: with the
/// record on {2, 3}, member 3 slow to seal and member 2's read failing once, the records
/// were cut.
#[tokio::test]
async fn a_failed_read_is_not_a_missing_record() {
    let servers = FaultyLogServers::with_members(3);
    let nodes = [1, 2, 3];
    put(&servers, &[2, 3], 0, 10, 0).await;
    servers.inject(3, Call::Seal, Fault::FailTimes(1));
    servers.inject(2, Call::GetRecords, Fault::FailTimes(1));
    let peers = peers(&servers, Duration::from_secs(1));
    let end = replicated::seal(&peers, &params(&nodes, 2), &addresses(&nodes), &no_exclusions(), 0)
        .await
        .expect("seal");
    assert_eq!(end, 10, "no acknowledged record may be cut");
}

/// Item: corrupt copies were dropped as if absent. With the only reachable copy corrupt the
/// seal must fail (and be retried), not cut; once an intact copy is reachable it succeeds
/// and the corrupt copy is repaired.
#[tokio::test]
async fn a_corrupt_copy_is_present_and_gets_repaired() {
    let servers = FaultyLogServers::with_members(3);
    let nodes = [1, 2, 3];
    put(&servers, &[2, 3], 0, 10, 0).await;
    servers.inject(2, Call::GetRecords, Fault::Corrupt);
    servers.inject(3, Call::Seal, Fault::Hang);
    servers.inject(3, Call::GetRecords, Fault::Hang);
    let peers = peers(&servers, Duration::from_secs(1));
    let outcome = replicated::seal_within(
        &peers,
        &params(&nodes, 2),
        &addresses(&nodes),
        &no_exclusions(),
        0,
        Duration::from_millis(800),
    )
    .await;
    assert!(
        matches!(&outcome, Err(BifrostError::Unavailable(reason)) if reason.contains("record 0")),
        "the seal must fail rather than cut: {outcome:?}"
    );
    servers.heal(3, Call::Seal);
    servers.heal(3, Call::GetRecords);
    // Member 1 answers late, so the f-majority read is {2, 3}.
    servers.inject(1, Call::Seal, Fault::FailTimes(1));
    let end = replicated::seal(&peers, &params(&nodes, 2), &addresses(&nodes), &no_exclusions(), 0)
        .await
        .expect("seal");
    assert_eq!(end, 10);
    // The member with the corrupt copies is repaired first.
    let repaired: Vec<u32> = servers
        .repairs
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .iter()
        .filter(|(node, _)| *node == PlainNodeId(2))
        .map(|(_, offset)| *offset)
        .collect();
    assert_eq!(repaired, (0..10).collect::<Vec<_>>());
}

/// Item: a log-server that has not checked its storage (starting, or wiped) answers nothing;
/// a member whose storage was lost never counts toward the f-majority.
#[tokio::test]
async fn wiped_or_unactivated_members_do_not_decide_a_seal() {
    let servers = FaultyLogServers::with_members(3);
    let nodes = [1, 2, 3];
    put(&servers, &[2, 3], 0, 10, 0).await;
    // Member 3 loses its disk and comes back empty; member 2 is unreachable.
    servers.replace(PlainNodeId(3), member(false));
    servers.inject(2, Call::Seal, Fault::Hang);
    servers.inject(2, Call::GetRecords, Fault::Hang);
    let peers = peers(&servers, Duration::from_secs(1));
    let seal = |excluded: BTreeSet<PlainNodeId>| {
        let peers = peers.clone();
        async move {
            replicated::seal_within(
                &peers,
                &params(&nodes, 2),
                &addresses(&nodes),
                &excluded,
                0,
                Duration::from_millis(600),
            )
            .await
        }
    };
    // Not activated: it answers no seal, so no f-majority.
    let outcome = seal(no_exclusions()).await;
    assert!(matches!(outcome, Err(BifrostError::Unavailable(_))), "{outcome:?}");
    // Marked data-loss (but answering from its empty store): excluded, still no f-majority.
    servers.member(PlainNodeId(3)).activated.store(true, Ordering::Release);
    let lost: BTreeSet<PlainNodeId> = [PlainNodeId(3)].into();
    let outcome = seal(lost.clone()).await;
    assert!(
        matches!(&outcome, Err(BifrostError::Unavailable(reason)) if reason.contains("N2")),
        "{outcome:?}"
    );
    servers.heal(2, Call::Seal);
    servers.heal(2, Call::GetRecords);
    assert_eq!(seal(lost).await.expect("seal"), 10);
}

/// Item: a dropped append (caller gone after the offsets were reserved) wedged every later
/// append of the sequencer.
#[tokio::test]
async fn a_dropped_append_does_not_wedge_the_sequencer() {
    let servers = FaultyLogServers::with_members(2);
    let nodes = [1, 2];
    let sequencer = Arc::new(Sequencer::new(
        params(&nodes, 2),
        addresses(&nodes),
        peers(&servers, Duration::from_secs(2)),
    ));
    servers.inject(2, Call::Store, Fault::FailTimes(3));
    let dropped = tokio::time::timeout(Duration::from_millis(10), sequencer.append(vec![payload(0)])).await;
    assert!(dropped.is_err(), "the first append is abandoned by its caller");
    let second = tokio::time::timeout(Duration::from_secs(5), sequencer.append(vec![payload(1)]))
        .await
        .expect("the next append completes");
    assert_eq!(second.expect("appended"), 1);
    assert_eq!(sequencer.committed_tail(), 2);
}

/// Item: a store waited out the whole store deadline for a member paused with SIGSTOP (its
/// connection stays open, nothing answers), so appends stalled seconds before the log could be
/// moved to live members. A member the failure detector finds silent is given up at once.
#[tokio::test]
async fn a_store_stops_waiting_for_a_member_that_went_silent() {
    use restate_types::Heartbeat;
    let servers = FaultyLogServers::with_members(2);
    let nodes = [1, 2];
    let view = log_server_view(&nodes);
    let silence = Duration::from_millis(50);
    // An RPC deadline far above the test's bound: a store waited on member 2 shows.
    let peers = Arc::new(
        Peers::with_log_servers(
            CLUSTER,
            Duration::from_secs(60),
            Duration::from_secs(30),
            servers.clone(),
        )
        .with_liveness(view.clone(), silence, PlainNodeId(99)),
    );
    let sequencer = Arc::new(Sequencer::new(params(&nodes, 2), addresses(&nodes), peers));
    servers.inject(2, Call::Store, Fault::Hang);
    // Node 1 keeps answering heartbeats; node 2 answers until the append started, then falls
    // silent while its store hangs.
    let node2_beats = Arc::new(AtomicBool::new(true));
    let beating = tokio::spawn({
        let (view, node2_beats) = (view.clone(), node2_beats.clone());
        async move {
            loop {
                view.heard_from(PlainNodeId(1).with_generation(1), Heartbeat::default());
                if node2_beats.load(Ordering::Relaxed) {
                    view.heard_from(PlainNodeId(2).with_generation(1), Heartbeat::default());
                }
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
        }
    });
    tokio::time::sleep(Duration::from_millis(20)).await;
    let append = tokio::spawn({
        let sequencer = sequencer.clone();
        async move { sequencer.append(vec![payload(0)]).await }
    });
    tokio::time::sleep(Duration::from_millis(20)).await;
    node2_beats.store(false, Ordering::Relaxed);
    let outcome = tokio::time::timeout(Duration::from_secs(10), append)
        .await
        .expect("the append gives up on the silent member well before the store deadline")
        .expect("the append task ends");
    assert!(
        matches!(&outcome, Err(BifrostError::UnknownOutcome(reason)) if reason.contains("stopped answering")),
        "{outcome:?}"
    );

    // With the member silent already, a new segment's sequencer stores nothing at all: the
    // records certainly did not land, so the caller may append them elsewhere.
    let fresh = Arc::new(Sequencer::new(
        params(&nodes, 2),
        addresses(&nodes),
        Arc::new(
            Peers::with_log_servers(CLUSTER, RPC_TIMEOUT, Duration::from_secs(30), servers.clone()).with_liveness(
                view.clone(),
                silence,
                PlainNodeId(99),
            ),
        ),
    ));
    let outcome = fresh.append(vec![payload(1)]).await;
    beating.abort();
    assert!(
        matches!(&outcome, Err(BifrostError::NotAppended(NotAppended::Transient(reason))) if reason.contains("answer")),
        "{outcome:?}"
    );
}

/// Item: stores that timed out may have landed; reporting "not appended" made callers
/// append the same records again after a seal kept them.
#[tokio::test]
async fn timed_out_stores_are_an_unknown_outcome() {
    let servers = FaultyLogServers::with_members(2);
    let nodes = [1, 2];
    let sequencer = Arc::new(Sequencer::new(
        params(&nodes, 2),
        addresses(&nodes),
        peers(&servers, Duration::from_millis(500)),
    ));
    servers.inject(1, Call::Store, Fault::LandThenHang);
    servers.inject(2, Call::Store, Fault::Hang);
    let outcome = sequencer.append(vec![payload(0)]).await;
    assert!(matches!(outcome, Err(BifrostError::UnknownOutcome(_))), "{outcome:?}");
    assert_eq!(offsets_on(&servers, 1).await, vec![0], "the record did land on N1");

    // A store refused by a sealed member and unanswered by the other: still unknown.
    let servers = FaultyLogServers::with_members(2);
    let sequencer = Arc::new(Sequencer::new(
        params(&nodes, 2),
        addresses(&nodes),
        peers(&servers, Duration::from_millis(500)),
    ));
    servers.member(PlainNodeId(1)).store.seal(LOGLET).await.expect("seal");
    servers.inject(2, Call::Store, Fault::LandThenHang);
    let outcome = sequencer.append(vec![payload(0)]).await;
    assert!(matches!(outcome, Err(BifrostError::UnknownOutcome(_))), "{outcome:?}");

    // Every member certainly refused: nothing was appended, a retry is safe.
    let servers = FaultyLogServers::with_members(2);
    let sequencer = Arc::new(Sequencer::new(
        params(&nodes, 2),
        addresses(&nodes),
        peers(&servers, Duration::from_millis(500)),
    ));
    for node in nodes {
        servers
            .member(PlainNodeId(node))
            .store
            .seal(LOGLET)
            .await
            .expect("seal");
    }
    let outcome = sequencer.append(vec![payload(0)]).await;
    assert!(
        matches!(outcome, Err(BifrostError::NotAppended(NotAppended::Sealed))),
        "{outcome:?}"
    );
}

/// Item: a node whose cached chain missed another node's trim read "record missing"
/// forever; the members' trim points now turn into a trim gap.
#[tokio::test]
async fn reads_below_a_member_trim_point_are_a_trim_gap() {
    let servers = FaultyLogServers::with_members(2);
    let nodes = [1, 2];
    put(&servers, &[1, 2], 0, 10, 10).await;
    for node in nodes {
        servers
            .member(PlainNodeId(node))
            .store
            .trim(LOGLET, 5)
            .await
            .expect("trim");
    }
    let peers = peers(&servers, Duration::from_secs(1));
    let range = replicated::read(&peers, &params(&nodes, 2), &addresses(&nodes), 2, 10)
        .await
        .expect("read");
    assert_eq!(range.trimmed_to, 5);
    let offsets: Vec<u32> = range.records.iter().map(|(offset, _)| *offset).collect();
    assert_eq!(offsets, (5..10).collect::<Vec<_>>());
}

/// Item: an append that landed on one member only before the seal is kept by the seal
/// (repaired to enough copies), never half-present.
#[tokio::test]
async fn seal_repairs_records_with_too_few_copies() {
    let servers = FaultyLogServers::with_members(3);
    let nodes = [1, 2, 3];
    put(&servers, &[1, 2], 0, 5, 5).await;
    put(&servers, &[3], 5, 8, 5).await;
    // Member 1 seals late, so the seal's f-majority is {2, 3} and it sees offsets 5..8.
    servers.inject(1, Call::Seal, Fault::FailTimes(1));
    let peers = peers(&servers, Duration::from_secs(1));
    let end = replicated::seal(&peers, &params(&nodes, 2), &addresses(&nodes), &no_exclusions(), 0)
        .await
        .expect("seal");
    assert_eq!(end, 8);
    let mut copies = 0;
    for node in nodes {
        if offsets_on(&servers, node).await.contains(&7) {
            copies += 1;
        }
    }
    assert_eq!(copies, 2);
}
