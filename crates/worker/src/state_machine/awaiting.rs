//! Whether a suspended invocation can resume: what it waits for is in its journal.
//!
//! V5/V6 SDKs list ids of which any one resumes. V7 SDKs send a future tree with combinators
//! (all of, first of, first success, all successes or first failure); it is evaluated here
//! against the journal, leaf by leaf, so an invocation waiting for several results is not
//! resumed (and suspended again) for each one that arrives.

use prost::Message as _;
use restate_partition_store::Txn;
use restate_service_protocol::proto;
use restate_types::InvocationId;

use crate::model::Phase;
use crate::state_machine::{ApplyResult, completion_key, decode_entry, journal_key, named_signal_key, signal_key};

/// How deep a future tree may nest before it is treated as resolved (resuming early only
/// costs a replay).
const MAX_DEPTH: usize = 64;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    Pending,
    Succeeded,
    Failed,
}

/// The result field every notification carries a failure in (`failure = 6`).
#[derive(Clone, PartialEq, prost::Message)]
struct FailureProbe {
    #[prost(message, optional, tag = "6")]
    failure: Option<proto::Failure>,
}

/// Whether a suspended invocation's awaited notifications are in the journal.
pub(crate) fn resolved(txn: &Txn<'_>, id: &InvocationId, phase: &Phase) -> ApplyResult<bool> {
    let Phase::Suspended {
        completions,
        signals,
        named_signals,
        future,
    } = phase
    else {
        return Ok(false);
    };
    if let Some(future) = future.as_deref().and_then(|bytes| proto::Future::decode(bytes).ok()) {
        return Ok(evaluate(txn, id, &future, 0)? != State::Pending);
    }
    for completion in completions {
        if txn.contains(&completion_key(id, *completion))? {
            return Ok(true);
        }
    }
    for signal in signals {
        if txn.contains(&signal_key(id, *signal))? {
            return Ok(true);
        }
    }
    for name in named_signals {
        if txn.contains(&named_signal_key(id, name))? {
            return Ok(true);
        }
    }
    Ok(false)
}

fn leaf(txn: &Txn<'_>, id: &InvocationId, key: restate_partition_store::Key) -> ApplyResult<State> {
    let Some(index) = txn.get::<u32>(&key)? else {
        return Ok(State::Pending);
    };
    let failed = txn
        .get_raw(journal_key(id, index).as_bytes())?
        .and_then(|entry| decode_entry(&entry))
        .and_then(|(_, payload)| FailureProbe::decode(payload).ok())
        .is_some_and(|probe| probe.failure.is_some());
    Ok(if failed { State::Failed } else { State::Succeeded })
}

fn evaluate(txn: &Txn<'_>, id: &InvocationId, future: &proto::Future, depth: usize) -> ApplyResult<State> {
    if depth > MAX_DEPTH {
        return Ok(State::Succeeded);
    }
    let mut children = Vec::new();
    for completion in &future.waiting_completions {
        children.push(leaf(txn, id, completion_key(id, *completion))?);
    }
    for signal in &future.waiting_signals {
        children.push(leaf(txn, id, signal_key(id, *signal))?);
    }
    for name in &future.waiting_named_signals {
        children.push(leaf(txn, id, named_signal_key(id, name))?);
    }
    for nested in &future.nested_futures {
        children.push(evaluate(txn, id, nested, depth + 1)?);
    }
    let done = |s: &State| *s != State::Pending;
    let any = |state: State| children.contains(&state);
    let all_done = children.iter().all(done);
    use proto::future::CombinatorType as C;
    let combinator = C::try_from(future.combinator_type).unwrap_or(C::Unknown);
    Ok(match combinator {
        C::Unknown | C::FirstCompleted => match children.iter().find(|s| done(s)) {
            Some(state) => *state,
            None => State::Pending,
        },
        C::AllCompleted if all_done => match any(State::Failed) {
            true => State::Failed,
            false => State::Succeeded,
        },
        C::FirstSucceededOrAllFailed if any(State::Succeeded) => State::Succeeded,
        C::FirstSucceededOrAllFailed if all_done => State::Failed,
        C::AllSucceededOrFirstFailed if any(State::Failed) => State::Failed,
        C::AllSucceededOrFirstFailed if all_done => State::Succeeded,
        _ => State::Pending,
    })
}
