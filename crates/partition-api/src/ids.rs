//! How a new invocation's id is chosen: the ingress derives it before it knows which node
//! runs the partition, so every node derives the same one.

use restate_types::{InvocationId, partition_key_of};

use crate::model::InvocationTarget;

/// The id of a new invocation of `target`: derived from the idempotency key when there is
/// one (the same key names the same invocation), else time-ordered and random. Keyed targets
/// live in their key's partition; idempotent calls of plain services in the key's.
pub fn invocation_id_of(target: &InvocationTarget, idempotency_key: Option<&str>) -> InvocationId {
    let partition_key = match (&target.key, idempotency_key) {
        (Some(key), _) => partition_key_of(key.as_bytes()),
        (None, Some(idempotency_key)) => partition_key_of(idempotency_key.as_bytes()),
        (None, None) => rand::random(),
    };
    if target.handler_type == restate_types::manifest::HandlerType::Workflow {
        // One `run` per workflow key: its id names the workflow instance.
        return InvocationId::deterministic(
            partition_key,
            &restate_types::InvocationSeed::Workflow {
                scope: None,
                service: &target.service,
                key: target.key.as_deref().unwrap_or_default(),
            },
        );
    }
    match idempotency_key {
        Some(idempotency_key) => InvocationId::deterministic(
            partition_key,
            &restate_types::InvocationSeed::Idempotent {
                scope: None,
                service: &target.service,
                key: target.key.as_deref(),
                handler: &target.handler,
                idempotency_key,
            },
        ),
        None => InvocationId::generate(partition_key),
    }
}
