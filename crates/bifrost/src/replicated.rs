//! Operations on a replicated loglet from any node: sealing (with tail repair), reading
//! records from the nodeset, and trimming.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::time::{Duration, Instant};

use futures::StreamExt;
use futures::stream::FuturesUnordered;
use restate_proto::log_server::{
    GetRecordsRequest, LogletInfo, SealRequest, SequencerId, StoreRequest, StoreStatus, TrimRequest,
};
use restate_types::PlainNodeId;
use restate_types::metadata::{ReplicatedParams, display_loglet_id};

use crate::BifrostError;
use crate::peers::Peers;

const SEAL_DEADLINE: Duration = Duration::from_secs(10);
/// Records fetched per request while reading or repairing.
const FETCH_BATCH: u32 = 1000;
/// Pause between rounds of a seal that is still missing answers.
const SEAL_RETRY_PAUSE: Duration = Duration::from_millis(100);

/// What one member answered for a range of offsets.
#[derive(Debug, Default)]
struct MemberRange {
    records: BTreeMap<u32, Vec<u8>>,
    /// Offsets the member holds but whose bytes fail their checksum.
    corrupt: BTreeSet<u32>,
    /// Offsets below this were trimmed on the member: committed, not missing.
    trim_point: u32,
}

impl MemberRange {
    /// Whether the member answered that it does not hold `offset` at all.
    fn lacks(&self, offset: u32) -> bool {
        offset >= self.trim_point && !self.records.contains_key(&offset) && !self.corrupt.contains(&offset)
    }
}

/// The decision about one offset while sealing.
#[derive(Debug, PartialEq, Eq)]
enum Verdict {
    /// At least one intact copy exists: part of the log (repaired to enough copies).
    Present,
    /// An f-majority of sealed members answered and none holds it: never committed, and
    /// neither is anything after it.
    Absent,
    /// Not enough answers (failed fetches, only corrupt copies): ask again.
    Undecided,
}

fn verdict(
    offset: u32,
    answers: &BTreeMap<PlainNodeId, MemberRange>,
    sealed: &BTreeMap<PlainNodeId, LogletInfo>,
    f_majority: usize,
) -> Verdict {
    if answers
        .values()
        .any(|a| offset < a.trim_point || a.records.contains_key(&offset))
    {
        return Verdict::Present;
    }
    let lacking = answers
        .iter()
        .filter(|(node, answer)| sealed.contains_key(node) && answer.lacks(offset))
        .count();
    if lacking >= f_majority {
        Verdict::Absent
    } else {
        Verdict::Undecided
    }
}

/// Seals the loglet on an f-majority of its nodeset (enough members that every committed
/// record is on at least one of them), repairs the records between the highest known
/// global tail and the highest local tail so each has `replication` copies, and returns the
/// offset where the segment ends.
///
/// A record is cut only when an f-majority of sealed members *answered* and none of them
/// holds it (a failed or timed-out fetch proves nothing, a corrupt copy is a copy), and the
/// segment never ends below `trimmed_below` (the chain's trim point within this segment) or
/// a member's trim point: trimmed offsets were committed. Members in `excluded` (their
/// storage was lost) never count toward the f-majority.
pub(crate) async fn seal(
    peers: &Peers,
    params: &ReplicatedParams,
    addresses: &HashMap<PlainNodeId, String>,
    excluded: &BTreeSet<PlainNodeId>,
    trimmed_below: u32,
) -> Result<u32, BifrostError> {
    seal_within(peers, params, addresses, excluded, trimmed_below, SEAL_DEADLINE).await
}

pub(crate) async fn seal_within(
    peers: &Peers,
    params: &ReplicatedParams,
    addresses: &HashMap<PlainNodeId, String>,
    excluded: &BTreeSet<PlainNodeId>,
    trimmed_below: u32,
    within: Duration,
) -> Result<u32, BifrostError> {
    let loglet = display_loglet_id(params.loglet_id);
    let copies = usize::from(params.replication.num_copies());
    let f_majority = params.nodeset.len().saturating_sub(copies) + 1;
    let eligible: Vec<PlainNodeId> = params
        .nodeset
        .iter()
        .copied()
        .filter(|n| !excluded.contains(n))
        .collect();
    if eligible.len() < f_majority {
        return Err(BifrostError::Unavailable(format!(
            "cannot seal loglet {loglet}: {f_majority} log-servers of its nodeset must answer, but only {} of them \
             have their storage ({} lost theirs)",
            eligible.len(),
            excluded.iter().map(ToString::to_string).collect::<Vec<_>>().join(", ")
        )));
    }
    let deadline = Instant::now() + within;
    let mut sealed: BTreeMap<PlainNodeId, LogletInfo> = BTreeMap::new();
    let mut errors: BTreeMap<PlainNodeId, String> = BTreeMap::new();
    loop {
        seal_members(
            peers,
            params,
            addresses,
            &eligible,
            &mut sealed,
            &mut errors,
            Some(f_majority),
        )
        .await;
        if sealed.len() >= f_majority {
            break;
        }
        if Instant::now() > deadline {
            return Err(BifrostError::Unavailable(format!(
                "cannot seal loglet {loglet}: {} of the {f_majority} log-servers needed answered ({})",
                sealed.len(),
                describe(&errors)
            )));
        }
        tokio::time::sleep(SEAL_RETRY_PAUSE).await;
    }
    let global = sealed.values().map(|i| i.known_global_tail).max().unwrap_or(0);
    let member_trim = sealed.values().map(|i| i.trim_point).max().unwrap_or(0);
    let highest = sealed.values().map(|i| i.local_tail).max().unwrap_or(0);
    // Everything below the known global tail or any trim point is committed.
    let start = global.max(member_trim).max(trimmed_below);
    let mut end = start.max(highest);
    let mut from = start;
    'scan: while from < highest {
        let to = highest.min(from.saturating_add(FETCH_BATCH));
        let mut answers: BTreeMap<PlainNodeId, MemberRange> = BTreeMap::new();
        let mut round = 0u32;
        let mut offset = from;
        while offset < to {
            match verdict(offset, &answers, &sealed, f_majority) {
                Verdict::Present => {
                    repair(peers, params, addresses, offset, &answers, copies).await;
                    offset += 1;
                }
                Verdict::Absent => {
                    end = offset;
                    break 'scan;
                }
                Verdict::Undecided if Instant::now() > deadline => {
                    return Err(BifrostError::Unavailable(format!(
                        "cannot seal loglet {loglet}: whether record {offset} was committed is unknown: {} of the \
                         {f_majority} sealed log-servers needed answered without it, none holds an intact copy ({})",
                        answers
                            .iter()
                            .filter(|(n, a)| sealed.contains_key(n) && a.lacks(offset))
                            .count(),
                        describe(&errors)
                    )));
                }
                Verdict::Undecided => {
                    // First the sealed members; after that everyone not answered yet, and
                    // members not sealed yet may be reachable now (one sealed in this round
                    // is read again: it may have taken stores until its seal).
                    let candidates: Vec<PlainNodeId> = if round == 0 {
                        sealed.keys().copied().collect()
                    } else {
                        tokio::time::sleep(SEAL_RETRY_PAUSE).await;
                        let newly_sealed =
                            seal_members(peers, params, addresses, &eligible, &mut sealed, &mut errors, None).await;
                        for node in newly_sealed {
                            answers.remove(&node);
                        }
                        eligible.clone()
                    };
                    round += 1;
                    let missing: Vec<PlainNodeId> =
                        candidates.into_iter().filter(|n| !answers.contains_key(n)).collect();
                    fetch_ranges(
                        peers,
                        params.loglet_id,
                        addresses,
                        &missing,
                        from,
                        to,
                        &mut answers,
                        &mut errors,
                    )
                    .await;
                }
            }
        }
        from = to;
    }
    tracing::info!(
        loglet = %loglet,
        end,
        global_tail = global,
        highest_local_tail = highest,
        trimmed_below = start,
        "sealed a replicated loglet"
    );
    Ok(end)
}

fn describe(errors: &BTreeMap<PlainNodeId, String>) -> String {
    errors
        .iter()
        .map(|(n, e)| format!("{n}: {e}"))
        .collect::<Vec<_>>()
        .join("; ")
}

/// Sends a seal to every eligible member not sealed yet; returns the ones that sealed now.
/// With `enough`, stops waiting for slow members once that many are sealed.
async fn seal_members(
    peers: &Peers,
    params: &ReplicatedParams,
    addresses: &HashMap<PlainNodeId, String>,
    eligible: &[PlainNodeId],
    sealed: &mut BTreeMap<PlainNodeId, LogletInfo>,
    errors: &mut BTreeMap<PlainNodeId, String>,
    enough: Option<usize>,
) -> Vec<PlainNodeId> {
    let mut calls: FuturesUnordered<_> = eligible
        .iter()
        .filter(|node| !sealed.contains_key(node))
        .filter(|node| {
            // A member that stopped answering heartbeats counts as not answering now.
            let silent = peers.silent(**node);
            if silent {
                errors.insert(**node, "stopped answering heartbeats".into());
            }
            !silent
        })
        .map(|node| async move {
            let outcome = async {
                let address = addresses.get(node).ok_or_else(|| "no known address".to_owned())?;
                let request = SealRequest {
                    identity: peers.identity(node.0),
                    loglet_id: params.loglet_id,
                };
                match tokio::time::timeout(peers.rpc_timeout, peers.log_servers.seal(*node, address, request)).await {
                    Ok(Ok(info)) => Ok(info),
                    Ok(Err(status)) => Err(status.message().to_owned()),
                    Err(_) => Err("no answer to the seal".to_owned()),
                }
            }
            .await;
            (*node, outcome)
        })
        .collect();
    let mut newly = Vec::new();
    while let Some((node, outcome)) = calls.next().await {
        match outcome {
            Ok(info) => {
                errors.remove(&node);
                sealed.insert(node, info);
                newly.push(node);
                if enough.is_some_and(|enough| sealed.len() >= enough) {
                    break;
                }
            }
            Err(error) => {
                errors.insert(node, error);
            }
        }
    }
    newly
}

/// Reads `[from, to)` from each of `members` in parallel into `answers`; failures go to
/// `errors` (and the member stays unanswered).
#[allow(clippy::too_many_arguments)]
async fn fetch_ranges(
    peers: &Peers,
    loglet_id: u64,
    addresses: &HashMap<PlainNodeId, String>,
    members: &[PlainNodeId],
    from: u32,
    to: u32,
    answers: &mut BTreeMap<PlainNodeId, MemberRange>,
    errors: &mut BTreeMap<PlainNodeId, String>,
) {
    let mut calls: FuturesUnordered<_> = members
        .iter()
        .filter(|node| {
            // A member that stopped answering heartbeats counts as not answering now.
            let silent = peers.silent(**node);
            if silent {
                errors.insert(**node, "stopped answering heartbeats".into());
            }
            !silent
        })
        .map(|node| async move { (*node, get_range(peers, addresses, *node, loglet_id, from, to).await) })
        .collect();
    while let Some((node, outcome)) = calls.next().await {
        match outcome {
            Ok(range) => {
                answers.insert(node, range);
            }
            Err(error) => {
                errors.insert(node, error);
            }
        }
    }
}

/// Stores the record on members that lack it (or hold a corrupt copy) until it has
/// `copies` intact copies. A record left with fewer copies is reported, not hidden.
async fn repair(
    peers: &Peers,
    params: &ReplicatedParams,
    addresses: &HashMap<PlainNodeId, String>,
    offset: u32,
    answers: &BTreeMap<PlainNodeId, MemberRange>,
    copies: usize,
) {
    let holders: Vec<PlainNodeId> = answers
        .iter()
        .filter(|(_, a)| offset < a.trim_point || a.records.contains_key(&offset))
        .map(|(n, _)| *n)
        .collect();
    let Some(payload) = answers.values().find_map(|a| a.records.get(&offset)) else {
        // Only trimmed copies: the record is below a trim point and needs no repair.
        return;
    };
    let mut count = holders.len();
    let mut failures = Vec::new();
    // Members holding a corrupt copy first: their copy is replaced by an intact one.
    let mut targets: Vec<&PlainNodeId> = params.nodeset.iter().filter(|n| !holders.contains(n)).collect();
    targets.sort_by_key(|n| !answers.get(n).is_some_and(|a| a.corrupt.contains(&offset)));
    for node in targets {
        if count >= copies {
            return;
        }
        if peers.silent(*node) {
            // Waiting out its RPC deadline would hold up the seal (and every log behind it).
            failures.push(format!("{node}: stopped answering heartbeats"));
            continue;
        }
        let Some(address) = addresses.get(node) else {
            failures.push(format!("{node}: no known address"));
            continue;
        };
        let request = StoreRequest {
            identity: peers.identity(node.0),
            loglet_id: params.loglet_id,
            sequencer: Some(SequencerId {
                node_id: params.sequencer.id.0,
                generation: params.sequencer.generation,
            }),
            first_offset: offset,
            payloads: vec![payload.clone()],
            known_global_tail: 0,
            repair: true,
        };
        match tokio::time::timeout(peers.rpc_timeout, peers.log_servers.store(*node, address, request)).await {
            Ok(Ok(response)) if response.status == StoreStatus::Stored as i32 => count += 1,
            Ok(Ok(response)) => failures.push(format!("{node}: {}", response.detail)),
            Ok(Err(status)) => failures.push(format!("{node}: {}", status.message())),
            Err(_) => failures.push(format!("{node}: no answer")),
        }
    }
    if count < copies {
        tracing::warn!(
            loglet = %display_loglet_id(params.loglet_id),
            offset,
            copies = count,
            wanted = copies,
            failures = %failures.join("; "),
            "a record kept fewer copies than the replication after sealing"
        );
    }
}

/// What one member holds in `[from, to)`, with its trim point.
async fn get_range(
    peers: &Peers,
    addresses: &HashMap<PlainNodeId, String>,
    node: PlainNodeId,
    loglet_id: u64,
    from: u32,
    to: u32,
) -> Result<MemberRange, String> {
    let address = addresses
        .get(&node)
        .ok_or_else(|| format!("{node}: no known address"))?;
    let request = GetRecordsRequest {
        identity: peers.identity(node.0),
        loglet_id,
        from_offset: from,
        to_offset: to,
        max_records: to.saturating_sub(from).max(1),
    };
    let response = peers
        .within_deadline(node, peers.log_servers.get_records(node, address, request))
        .await?;
    if !response.corrupt_offsets.is_empty() {
        tracing::error!(
            %node,
            loglet = %display_loglet_id(loglet_id),
            offsets = ?response.corrupt_offsets,
            "a log-server holds corrupt records; reading them from other copies"
        );
    }
    Ok(MemberRange {
        records: response.records.into_iter().map(|r| (r.offset, r.payload)).collect(),
        corrupt: response.corrupt_offsets.into_iter().collect(),
        trim_point: response.info.map_or(0, |i| i.trim_point),
    })
}

/// Records of a range read from the nodeset.
#[derive(Debug)]
pub(crate) struct RangeRead {
    /// Offsets below this were trimmed (at least `from`): the reader gets a trim gap.
    pub(crate) trimmed_to: u32,
    pub(crate) records: Vec<(u32, Vec<u8>)>,
}

/// Records `[from, to)` of the loglet, each from any member that has it. Offsets a member
/// reports as trimmed are returned as `trimmed_to` (the chain this node cached may not know
/// of the trim yet). Fails naming the missing offsets if a committed record is on no
/// reachable member.
pub(crate) async fn read(
    peers: &Peers,
    params: &ReplicatedParams,
    addresses: &HashMap<PlainNodeId, String>,
    from: u32,
    to: u32,
) -> Result<RangeRead, BifrostError> {
    let mut found: BTreeMap<u32, Vec<u8>> = BTreeMap::new();
    let mut trimmed_to = from;
    let mut errors = Vec::new();
    // Members that answer heartbeats first: a silent one is asked only if they lack a record.
    let mut members = params.nodeset.clone();
    members.sort_by_key(|node| peers.silent(*node));
    for node in &members {
        match get_range(peers, addresses, *node, params.loglet_id, from, to).await {
            Ok(range) => {
                trimmed_to = trimmed_to.max(range.trim_point.min(to));
                found.extend(range.records);
            }
            Err(error) => errors.push(error),
        }
        if (trimmed_to..to).all(|offset| found.contains_key(&offset)) {
            break;
        }
    }
    if let Some(missing) = (trimmed_to..to).find(|offset| !found.contains_key(offset)) {
        return Err(BifrostError::Unavailable(format!(
            "record {missing} of loglet {} is on no reachable log-server ({})",
            display_loglet_id(params.loglet_id),
            errors.join("; ")
        )));
    }
    Ok(RangeRead {
        trimmed_to,
        records: found.split_off(&trimmed_to).into_iter().collect(),
    })
}

/// The highest global tail any member knows (a lower bound of the committed tail).
pub(crate) async fn known_global_tail(
    peers: &Peers,
    params: &ReplicatedParams,
    addresses: &HashMap<PlainNodeId, String>,
) -> u32 {
    let mut tail = 0;
    for node in &params.nodeset {
        let Some(address) = addresses.get(node) else { continue };
        let request = restate_proto::log_server::GetLogletInfoRequest {
            identity: peers.identity(node.0),
            loglet_id: params.loglet_id,
        };
        if let Ok(info) = peers
            .within_deadline(*node, peers.log_servers.get_loglet_info(*node, address, request))
            .await
        {
            tail = tail.max(info.known_global_tail);
        }
    }
    tail
}

/// Asks every member to drop the records below `trim_point` (best effort: a member that
/// misses it still holds records the chain no longer serves, and is trimmed next time).
pub(crate) async fn trim(
    peers: &Peers,
    params: &ReplicatedParams,
    addresses: &HashMap<PlainNodeId, String>,
    trim_point: u32,
) {
    // At once on every log-server: one that is down costs the others nothing. A miss is made
    // good by the next trim, so it is only worth a debug line.
    futures::future::join_all(params.nodeset.iter().filter_map(|node| {
        let address = addresses.get(node)?;
        let request = TrimRequest {
            identity: peers.identity(node.0),
            loglet_id: params.loglet_id,
            trim_point,
        };
        Some(async move {
            match tokio::time::timeout(peers.rpc_timeout, peers.log_servers.trim(*node, address, request)).await {
                Ok(Ok(_)) => {}
                Ok(Err(status)) => tracing::debug!(%node, reason = status.message(), "trimming a log-server failed"),
                Err(_) => tracing::debug!(%node, "trimming a log-server failed: no answer"),
            }
        })
    }))
    .await;
}
