//! Operations on a replicated loglet from any node: sealing (with tail repair), reading
//! records from the nodeset, and trimming.

use std::collections::{BTreeMap, HashMap};
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

/// Seals the loglet on an f-majority of its nodeset (enough members that every committed
/// record is on at least one of them), repairs the records between the highest known
/// global tail and the highest local tail so each has `replication` copies, and returns the
/// offset where the segment ends. A record missing on every sealed member was never
/// committed, and neither was anything after it (commits are in order): the segment ends
/// there.
pub(crate) async fn seal(
    peers: &Peers,
    params: &ReplicatedParams,
    addresses: &HashMap<PlainNodeId, String>,
) -> Result<u32, BifrostError> {
    let copies = usize::from(params.replication.num_copies());
    let f_majority = params.nodeset.len().saturating_sub(copies) + 1;
    let deadline = Instant::now() + SEAL_DEADLINE;
    let mut sealed: BTreeMap<PlainNodeId, LogletInfo> = BTreeMap::new();
    let mut errors: BTreeMap<PlainNodeId, String> = BTreeMap::new();
    while sealed.len() < f_majority {
        let mut calls: FuturesUnordered<_> = params
            .nodeset
            .iter()
            .filter(|node| !sealed.contains_key(node))
            .map(|node| async move {
                let outcome = async {
                    let address = addresses.get(node).ok_or_else(|| "no known address".to_owned())?;
                    let mut client = peers.log_server(address).map_err(|e| e.to_string())?;
                    let request = SealRequest {
                        identity: peers.identity(node.0),
                        loglet_id: params.loglet_id,
                    };
                    match tokio::time::timeout(peers.rpc_timeout, client.seal(request)).await {
                        Ok(Ok(info)) => Ok(info.into_inner()),
                        Ok(Err(status)) => Err(status.message().to_owned()),
                        Err(_) => Err("no answer".to_owned()),
                    }
                }
                .await;
                (*node, outcome)
            })
            .collect();
        while let Some((node, outcome)) = calls.next().await {
            match outcome {
                Ok(info) => {
                    sealed.insert(node, info);
                }
                Err(error) => {
                    errors.insert(node, error);
                }
            }
        }
        if sealed.len() >= f_majority {
            break;
        }
        if Instant::now() > deadline {
            let reasons: Vec<String> = errors.iter().map(|(n, e)| format!("{n}: {e}")).collect();
            return Err(BifrostError::Unavailable(format!(
                "cannot seal loglet {}: {} of the {f_majority} log-servers needed answered ({})",
                display_loglet_id(params.loglet_id),
                sealed.len(),
                reasons.join("; ")
            )));
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let global = sealed.values().map(|i| i.known_global_tail).max().unwrap_or(0);
    let highest = sealed.values().map(|i| i.local_tail).max().unwrap_or(0);
    let mut end = highest;
    let mut from = global;
    while from < highest {
        let to = highest.min(from + FETCH_BATCH);
        let holders = fetch_holders(peers, params.loglet_id, addresses, sealed.keys().copied(), from, to).await;
        for offset in from..to {
            let Some((payload, have)) = holders.get(&offset) else {
                end = offset;
                break;
            };
            if have.len() < copies {
                repair(peers, params, addresses, offset, payload, have, copies).await;
            }
        }
        if end < highest {
            break;
        }
        from = to;
    }
    tracing::info!(
        loglet = %display_loglet_id(params.loglet_id),
        end,
        global_tail = global,
        highest_local_tail = highest,
        "sealed a replicated loglet"
    );
    Ok(end)
}

/// For each offset in `[from, to)`: the payload and which members hold it.
async fn fetch_holders(
    peers: &Peers,
    loglet_id: u64,
    addresses: &HashMap<PlainNodeId, String>,
    members: impl Iterator<Item = PlainNodeId>,
    from: u32,
    to: u32,
) -> BTreeMap<u32, (Vec<u8>, Vec<PlainNodeId>)> {
    let mut holders: BTreeMap<u32, (Vec<u8>, Vec<PlainNodeId>)> = BTreeMap::new();
    for node in members {
        let Ok(records) = get_records(peers, addresses, node, loglet_id, from, to).await else {
            continue;
        };
        for (offset, payload) in records {
            holders
                .entry(offset)
                .or_insert_with(|| (payload, Vec::new()))
                .1
                .push(node);
        }
    }
    holders
}

async fn repair(
    peers: &Peers,
    params: &ReplicatedParams,
    addresses: &HashMap<PlainNodeId, String>,
    offset: u32,
    payload: &[u8],
    have: &[PlainNodeId],
    copies: usize,
) {
    let mut count = have.len();
    for node in params.nodeset.iter().filter(|n| !have.contains(n)) {
        if count >= copies {
            return;
        }
        let Some(address) = addresses.get(node) else { continue };
        let Ok(mut client) = peers.log_server(address) else {
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
            payloads: vec![payload.to_vec()],
            known_global_tail: 0,
            repair: true,
        };
        if let Ok(Ok(response)) = tokio::time::timeout(peers.rpc_timeout, client.store(request)).await
            && response.into_inner().status == StoreStatus::Stored as i32
        {
            count += 1;
        }
    }
}

/// The records one member holds in `[from, to)`.
pub(crate) async fn get_records(
    peers: &Peers,
    addresses: &HashMap<PlainNodeId, String>,
    node: PlainNodeId,
    loglet_id: u64,
    from: u32,
    to: u32,
) -> Result<Vec<(u32, Vec<u8>)>, String> {
    let address = addresses
        .get(&node)
        .ok_or_else(|| format!("{node}: no known address"))?;
    let mut client = peers.log_server(address).map_err(|e| e.to_string())?;
    let request = GetRecordsRequest {
        identity: peers.identity(node.0),
        loglet_id,
        from_offset: from,
        to_offset: to,
        max_records: to.saturating_sub(from).max(1),
    };
    let response = tokio::time::timeout(peers.rpc_timeout, client.get_records(request))
        .await
        .map_err(|_| format!("{node}: no answer"))?
        .map_err(|status| format!("{node}: {}", status.message()))?
        .into_inner();
    if !response.corrupt_offsets.is_empty() {
        tracing::error!(
            %node,
            loglet = %display_loglet_id(loglet_id),
            offsets = ?response.corrupt_offsets,
            "a log-server holds corrupt records; reading them from other copies"
        );
    }
    Ok(response.records.into_iter().map(|r| (r.offset, r.payload)).collect())
}

/// Records `[from, to)` of the loglet, each from any member that has it. Fails naming the
/// missing offsets if a committed record is on no reachable member.
pub(crate) async fn read(
    peers: &Peers,
    params: &ReplicatedParams,
    addresses: &HashMap<PlainNodeId, String>,
    from: u32,
    to: u32,
) -> Result<Vec<(u32, Vec<u8>)>, BifrostError> {
    let mut found: BTreeMap<u32, Vec<u8>> = BTreeMap::new();
    let mut errors = Vec::new();
    for node in &params.nodeset {
        match get_records(peers, addresses, *node, params.loglet_id, from, to).await {
            Ok(records) => found.extend(records),
            Err(error) => errors.push(error),
        }
        if found.len() as u32 == to - from {
            break;
        }
    }
    if let Some(missing) = (from..to).find(|offset| !found.contains_key(offset)) {
        return Err(BifrostError::Unavailable(format!(
            "record {missing} of loglet {} is on no reachable log-server ({})",
            display_loglet_id(params.loglet_id),
            errors.join("; ")
        )));
    }
    Ok(found.into_iter().collect())
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
        let Ok(mut client) = peers.log_server(address) else {
            continue;
        };
        let request = restate_proto::log_server::GetLogletInfoRequest {
            identity: peers.identity(node.0),
            loglet_id: params.loglet_id,
        };
        if let Ok(Ok(info)) = tokio::time::timeout(peers.rpc_timeout, client.get_loglet_info(request)).await {
            tail = tail.max(info.into_inner().known_global_tail);
        }
    }
    tail
}

/// Asks every member to drop the records below `trim_point` (best effort).
pub(crate) async fn trim(
    peers: &Peers,
    params: &ReplicatedParams,
    addresses: &HashMap<PlainNodeId, String>,
    trim_point: u32,
) {
    for node in &params.nodeset {
        let Some(address) = addresses.get(node) else { continue };
        let Ok(mut client) = peers.log_server(address) else {
            continue;
        };
        let request = TrimRequest {
            identity: peers.identity(node.0),
            loglet_id: params.loglet_id,
            trim_point,
        };
        if let Ok(Err(status)) = tokio::time::timeout(peers.rpc_timeout, client.trim(request)).await {
            tracing::debug!(%node, reason = status.message(), "trimming a log-server failed");
        }
    }
}
