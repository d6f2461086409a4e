//! The failure detector: every `gossip-interval` each node sends a heartbeat to every other
//! node of the nodes configuration; both sides record the other's state in their
//! [`ClusterView`]. A peer is suspect after `gossip-suspect-after` of silence and dead after
//! `gossip-dead-after`.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
use std::time::Instant;

use restate_proto::node_ctl::node_ctl_svc_client::NodeCtlSvcClient;
use restate_proto::node_ctl::{GossipMessage, PartitionDurability, RoleState};
use restate_types::metadata::{NODES_CONFIG_KEY, NodesConfiguration};
use restate_types::{GenerationalNodeId, Heartbeat, PlainNodeId};
use tokio::sync::watch;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;
use tonic::transport::Channel;

use crate::context::NodeContext;

/// This node's state as sent in heartbeats.
pub(crate) fn own_message(ctx: &NodeContext) -> GossipMessage {
    let state = ctx.health.snapshot();
    GossipMessage {
        cluster_name: ctx.config.cluster_name.clone(),
        node_id: state.node_id.map_or(0, |id| id.id.0),
        generation: state.node_id.map_or(0, |id| id.generation),
        uptime_s: ctx.health.age_seconds(),
        status: state.status.to_string(),
        role_states: state
            .roles
            .iter()
            .map(|(role, s)| RoleState {
                role: role.to_string(),
                status: s.status.to_string(),
                detail: s.detail.clone(),
            })
            .collect(),
        nodes_config_version: state.nodes_config_version,
        leading_partitions: ctx.worker.get().map_or_else(Vec::new, |worker| {
            worker
                .partitions()
                .iter()
                .filter(|p| p.is_leader)
                .map(|p| u32::from(p.partition_id))
                .collect()
        }),
        partition_durability: ctx.worker.get().map_or_else(Vec::new, |worker| {
            worker
                .partitions()
                .iter()
                .map(|p| PartitionDurability {
                    partition_id: u32::from(p.partition_id),
                    durable_lsn: p.durable_lsn,
                })
                .collect()
        }),
    }
}

/// Records a heartbeat (sent or answered by a peer) in the view.
pub(crate) fn record(ctx: &NodeContext, message: &GossipMessage) {
    if message.node_id == 0 {
        return;
    }
    let role_status: BTreeMap<String, String> = message
        .role_states
        .iter()
        .map(|r| (r.role.clone(), r.status.clone()))
        .collect();
    ctx.view.heard_from(
        PlainNodeId(message.node_id).with_generation(message.generation),
        Heartbeat {
            uptime_s: message.uptime_s,
            status: message.status.clone(),
            role_status,
            leading_partitions: message
                .leading_partitions
                .iter()
                .filter_map(|p| u16::try_from(*p).ok())
                .collect(),
            durable_lsns: message
                .partition_durability
                .iter()
                .filter_map(|p| Some((u16::try_from(p.partition_id).ok()?, p.durable_lsn)))
                .collect(),
        },
    );
}

/// Runs the detector until `shutdown`: heartbeats on every tick, and the membership kept
/// current from the nodes configuration by a task of its own, so a slow metadata read (its
/// leader just died) never delays a heartbeat and makes healthy peers look silent.
pub(crate) fn spawn(ctx: Arc<NodeContext>, me: GenerationalNodeId, shutdown: CancellationToken) -> JoinHandle<()> {
    ctx.view.set_own(me.id);
    let (members_tx, members) = watch::channel(Vec::new());
    tokio::spawn(refresh_members(ctx.clone(), me, members_tx, shutdown.clone()));
    tokio::spawn(async move {
        let mut channels: HashMap<String, Channel> = HashMap::new();
        let mut tick = ticker(ctx.config.gossip_interval);
        while next_tick(&mut tick, &shutdown).await {
            let members = members.borrow().clone();
            let message = own_message(&ctx);
            record(&ctx, &message);
            let timeout = ctx.config.gossip_suspect_after;
            for (peer, address) in &members {
                let channel = match channels.get(address) {
                    Some(channel) => channel.clone(),
                    None => match restate_net::channel(address, ctx.config.networking.connect_timeout, timeout) {
                        Ok(channel) => {
                            channels.insert(address.clone(), channel.clone());
                            channel
                        }
                        Err(_) => continue,
                    },
                };
                let ctx = ctx.clone();
                let message = message.clone();
                let peer = *peer;
                tokio::spawn(async move {
                    let answer = tokio::time::timeout(timeout, NodeCtlSvcClient::new(channel).gossip(message)).await;
                    match answer {
                        Ok(Ok(answer)) => {
                            let answer = answer.into_inner();
                            ctx.health.set_nodes_config_version(answer.nodes_config_version);
                            record(&ctx, &answer);
                        }
                        // Nothing listens there: the node is gone now, not after the silence.
                        Ok(Err(status)) if restate_metadata_store::proto_conv::never_reached_a_process(&status) => {
                            ctx.view.connection_refused(peer);
                        }
                        _ => {}
                    }
                });
            }
        }
    })
}

/// Keeps the view's membership (and the heartbeat targets) current from the nodes
/// configuration: every `metadata-update-interval`, and at once when a peer reports a newer one.
async fn refresh_members(
    ctx: Arc<NodeContext>,
    me: GenerationalNodeId,
    members: watch::Sender<Vec<(PlainNodeId, String)>>,
    shutdown: CancellationToken,
) {
    let mut known_version = 0u32;
    let refresh_every = ctx.config.metadata_update_interval;
    let mut refreshed = Instant::now() - refresh_every;
    let mut tick = ticker(ctx.config.gossip_interval);
    while next_tick(&mut tick, &shutdown).await {
        let newest_seen = ctx.health.snapshot().nodes_config_version;
        if refreshed.elapsed() < refresh_every && newest_seen <= known_version {
            continue;
        }
        if let Ok(Some((version, nodes))) = ctx.metadata.get_json::<NodesConfiguration>(NODES_CONFIG_KEY).await {
            known_version = version.0;
            if let (Some(server), Some(own)) = (&ctx.log_server, nodes.nodes.get(&me.id)) {
                server.apply_state(own.log_server_state);
            }
            ctx.health.set_nodes_config_version(version.0);
            ctx.view.set_members(
                nodes
                    .nodes
                    .values()
                    .map(|n| (n.generational_id(), n.name.clone(), n.address.clone(), n.roles.clone())),
            );
            // This node is in the view from now on: record its own state at once.
            record(&ctx, &own_message(&ctx));
            members.send_replace(
                nodes
                    .nodes
                    .values()
                    .filter(|n| n.id != me.id)
                    .map(|n| (n.id, n.address.clone()))
                    .collect(),
            );
        }
        refreshed = Instant::now();
    }
}

/// An interval that skips ticks missed while the node was busy instead of bursting.
fn ticker(period: std::time::Duration) -> tokio::time::Interval {
    let mut tick = tokio::time::interval(period);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    tick
}

/// Waits for the next tick; `false` once `shutdown` is cancelled.
async fn next_tick(tick: &mut tokio::time::Interval, shutdown: &CancellationToken) -> bool {
    tokio::select! {
        _ = shutdown.cancelled() => false,
        _ = tick.tick() => true,
    }
}
