//! `restatectl nodes set-storage-state`: operator changes of log-servers' storage state.
//!
//! Without `force`, a change is refused when it would leave fewer read-write log-servers than
//! the default log replication needs (new segments could not be placed), or when it makes a
//! transition only nodes themselves should make (`provisioning`, `data-loss`, and leaving
//! `data-loss` for `read-write`).

use std::collections::BTreeSet;

use restate_metadata_store::{MetadataClient, ReadModifyWrite, WriteError};
use restate_proto::cluster_ctrl::{SetStorageStateRequest, StorageStateChange};
use restate_types::metadata::{
    BIFROST_CONFIG_KEY, LogsConfiguration, NODES_CONFIG_KEY, NodesConfiguration, StorageState,
};
use restate_types::{PlainNodeId, Role};
use tonic::Status;

/// Applies the request atomically to every named node; returns each node's before and after.
pub(crate) async fn set(
    metadata: &MetadataClient,
    request: &SetStorageStateRequest,
) -> Result<Vec<StorageStateChange>, Status> {
    let target: StorageState = request.storage_state.parse().map_err(Status::invalid_argument)?;
    if request.node_ids.is_empty() {
        return Err(Status::invalid_argument("name at least one node (--nodes)"));
    }
    let targets: BTreeSet<PlainNodeId> = request.node_ids.iter().map(|id| PlainNodeId(*id)).collect();
    let needed = match metadata.get_json::<LogsConfiguration>(BIFROST_CONFIG_KEY).await {
        Ok(logs) => logs
            .and_then(|(_, logs)| logs.default_provider.replication().map(|r| usize::from(r.num_copies())))
            .unwrap_or(0),
        Err(error) => return Err(Status::unavailable(format!("reading `{BIFROST_CONFIG_KEY}`: {error}"))),
    };
    let mut changes = Vec::new();
    let outcome = metadata
        .read_modify_write(NODES_CONFIG_KEY, |current: Option<&NodesConfiguration>| {
            changes.clear();
            let mut nodes = current
                .cloned()
                .ok_or_else(|| WriteError::Rejected("the cluster is not provisioned".into()))?;
            for id in &targets {
                let node = nodes
                    .nodes
                    .get_mut(id)
                    .ok_or_else(|| WriteError::Rejected(format!("{id} is not in the nodes configuration")))?;
                if !node.roles.contains(&Role::LogServer) {
                    return Err(WriteError::Rejected(format!(
                        "{id} ({}) does not have the log-server role",
                        node.name
                    )));
                }
                if !request.force {
                    check_transition(*id, node.log_server_state, target)?;
                }
                changes.push(StorageStateChange {
                    node_id: id.0,
                    before: node.log_server_state.to_string(),
                    after: target.to_string(),
                });
                node.log_server_state = target;
            }
            if !request.force {
                let writable = |nodes: &NodesConfiguration| {
                    nodes
                        .with_role(Role::LogServer)
                        .filter(|n| n.log_server_state == StorageState::ReadWrite)
                        .count()
                };
                let (before, after) = (current.map_or(0, writable), writable(&nodes));
                if after < needed && after < before {
                    return Err(WriteError::Rejected(format!(
                        "this leaves {after} read-write log-server(s), but the default log replication needs \
                         {needed}: new log segments could not be placed. Add log-servers first, or pass --force"
                    )));
                }
            }
            match changes.iter().all(|c| c.before == c.after) {
                true => Ok(ReadModifyWrite::Keep),
                false => Ok(ReadModifyWrite::Write(nodes)),
            }
        })
        .await;
    match outcome {
        Ok(_) => Ok(changes),
        Err(WriteError::Rejected(reason)) => Err(Status::failed_precondition(reason)),
        Err(error) => Err(Status::unavailable(format!("updating `{NODES_CONFIG_KEY}`: {error}"))),
    }
}

/// Refuses the transitions that only a node itself should make.
fn check_transition(node: PlainNodeId, from: StorageState, to: StorageState) -> Result<(), WriteError> {
    let refusal = match (from, to) {
        (_, StorageState::Provisioning | StorageState::DataLoss) => {
            format!("{to} is set by the node itself")
        }
        (StorageState::DataLoss, StorageState::ReadWrite) => {
            format!("{node} lost records it had acknowledged; take it to read-only first")
        }
        _ => return Ok(()),
    };
    Err(WriteError::Rejected(format!("{refusal}; pass --force to do it anyway")))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn node_owned_transitions_need_force() {
        let node = PlainNodeId(2);
        assert!(check_transition(node, StorageState::ReadWrite, StorageState::ReadOnly).is_ok());
        assert!(check_transition(node, StorageState::ReadOnly, StorageState::ReadWrite).is_ok());
        assert!(check_transition(node, StorageState::DataLoss, StorageState::ReadOnly).is_ok());
        assert!(check_transition(node, StorageState::ReadWrite, StorageState::Gone).is_ok());
        let error = check_transition(node, StorageState::DataLoss, StorageState::ReadWrite).unwrap_err();
        assert!(error.to_string().contains("--force"), "{error}");
        assert!(check_transition(node, StorageState::ReadWrite, StorageState::Provisioning).is_err());
        assert!(check_transition(node, StorageState::ReadOnly, StorageState::DataLoss).is_err());
    }

    #[test]
    fn storage_states_parse_from_their_names() {
        for state in StorageState::ALL {
            assert_eq!(state.as_str().parse::<StorageState>(), Ok(state));
        }
        let error = "readonly".parse::<StorageState>().unwrap_err();
        assert!(error.contains("read-only"), "{error}");
    }
}
