//! A linearizability checker for histories of a compare-and-swap register per key (the
//! admin API's `/metadata/{key}`: reads return `(version, value)`, writes name the version they
//! expect and the version they write), after Wing & Gong with Lowe's memoization, one key at a
//! time.
//!
//! Operations whose outcome is unknown (a timed-out write) never return: they may take effect
//! at any point after their call, or never.

use std::collections::{BTreeMap, HashSet};

/// The register: version 0 is "absent".
#[derive(Debug, Clone, PartialEq, Eq, Hash, Default)]
pub struct Register {
    pub version: u32,
    pub value: String,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Op {
    Read,
    /// Write `value` as `version` if the current version is `expected` (0: absent).
    Cas {
        expected: u32,
        version: u32,
        value: String,
    },
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    /// What a read returned (`None`: absent).
    Read(Option<Register>),
    Written,
    /// The precondition did not hold.
    Refused,
    /// No answer, or an error that leaves the outcome open.
    Unknown,
}

/// One operation: when it was called and when it returned (nanoseconds on one clock).
#[derive(Debug, Clone)]
pub struct Event {
    pub key: String,
    pub op: Op,
    pub outcome: Outcome,
    pub call: u64,
    pub ret: u64,
}

/// The verdict for a whole history.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Verdict {
    Linearizable,
    /// The key whose history has no linearization, with a few of its operations around the
    /// point where the search got stuck.
    Violation {
        key: String,
        detail: String,
    },
    /// The search budget ran out (the history is too concurrent to decide).
    Inconclusive {
        key: String,
    },
}

/// Checks every key's history separately.
pub fn check(events: &[Event], budget_per_key: u64) -> Verdict {
    let mut by_key: BTreeMap<&str, Vec<&Event>> = BTreeMap::new();
    for event in events {
        by_key.entry(&event.key).or_default().push(event);
    }
    for (key, history) in by_key {
        match check_key(&history, budget_per_key) {
            KeyVerdict::Ok => {}
            KeyVerdict::Stuck(detail) => {
                return Verdict::Violation {
                    key: key.to_owned(),
                    detail,
                };
            }
            KeyVerdict::OutOfBudget => return Verdict::Inconclusive { key: key.to_owned() },
        }
    }
    Verdict::Linearizable
}

enum KeyVerdict {
    Ok,
    Stuck(String),
    OutOfBudget,
}

/// The next state if `op` with `outcome` can take effect in `state`.
fn step(state: &Register, op: &Op, outcome: &Outcome) -> Option<Register> {
    match (op, outcome) {
        (Op::Read, Outcome::Read(seen)) => {
            let current = (state.version != 0).then_some(state);
            (current == seen.as_ref()).then(|| state.clone())
        }
        (Op::Read, _) => Some(state.clone()),
        (
            Op::Cas {
                expected,
                version,
                value,
            },
            Outcome::Written | Outcome::Unknown,
        ) => (state.version == *expected).then(|| Register {
            version: *version,
            value: value.clone(),
        }),
        (Op::Cas { expected, .. }, Outcome::Refused) => (state.version != *expected).then(|| state.clone()),
        (Op::Cas { .. }, Outcome::Read(_)) => None,
    }
}

/// Lowe's list-based search: the entries are call and return events in time order; an
/// operation is linearized by lifting both of its entries out of the list.
fn check_key(history: &[&Event], budget: u64) -> KeyVerdict {
    // Reads that failed say nothing; unknown writes never return.
    let ops: Vec<&Event> = history
        .iter()
        .copied()
        .filter(|e| !(e.op == Op::Read && e.outcome == Outcome::Unknown))
        .collect();
    let n = ops.len();
    // Entries: (time, is_return, op index). Calls sort before returns at equal times.
    let mut entries: Vec<(u64, bool, usize)> = Vec::with_capacity(2 * n);
    for (i, e) in ops.iter().enumerate() {
        entries.push((e.call, false, i));
        if e.outcome != Outcome::Unknown {
            entries.push((e.ret.max(e.call), true, i));
        }
    }
    entries.sort();
    // A doubly linked list over the entries, with a head sentinel at index `len`.
    let len = entries.len();
    let head = len;
    // head → 0 → 1 → … → len-1 → end (usize::MAX).
    let mut next: Vec<usize> = (1..len)
        .chain([usize::MAX, if len == 0 { usize::MAX } else { 0 }])
        .collect();
    let mut prev: Vec<usize> = std::iter::once(head).chain(0..len).collect();
    let mut call_entry = vec![usize::MAX; n];
    let mut return_entry = vec![usize::MAX; n];
    for (index, (_, is_return, op)) in entries.iter().enumerate() {
        if *is_return {
            return_entry[*op] = index;
        } else {
            call_entry[*op] = index;
        }
    }
    let required = ops.iter().filter(|e| e.outcome != Outcome::Unknown).count();

    let unlink = |next: &mut Vec<usize>, prev: &mut Vec<usize>, entry: usize| {
        let (p, q) = (prev[entry], next[entry]);
        next[p] = q;
        if q != usize::MAX {
            prev[q] = p;
        }
    };
    let relink = |next: &mut Vec<usize>, prev: &mut Vec<usize>, entry: usize| {
        let (p, q) = (prev[entry], next[entry]);
        next[p] = entry;
        if q != usize::MAX {
            prev[q] = entry;
        }
    };

    let mut linearized = vec![0u64; n.div_ceil(64).max(1)];
    let mut done_required = 0usize;
    let mut state = Register::default();
    let mut stack: Vec<(usize, Register)> = Vec::new();
    let mut seen: HashSet<(Vec<u64>, Register)> = HashSet::new();
    let mut steps = 0u64;
    let mut cursor = next[head];
    let mut deepest = 0usize;
    loop {
        if done_required == required {
            return KeyVerdict::Ok;
        }
        steps += 1;
        if steps > budget {
            return KeyVerdict::OutOfBudget;
        }
        if cursor == usize::MAX {
            // Only unknown writes are left in the list and none applies: done if nothing
            // required is left (checked above), else backtrack.
            match stack.pop() {
                Some((op, previous)) => {
                    undo(op, previous, &mut state, &mut linearized, &mut done_required, &ops);
                    relink_op(op, &call_entry, &return_entry, &mut next, &mut prev, relink);
                    cursor = next[call_entry[op]];
                    continue;
                }
                None => return KeyVerdict::Stuck(describe(&ops, deepest)),
            }
        }
        let (_, is_return, op) = entries[cursor];
        if !is_return {
            if let Some(after) = step(&state, &ops[op].op, &ops[op].outcome) {
                let mut marked = linearized.clone();
                marked[op / 64] |= 1 << (op % 64);
                if seen.insert((marked.clone(), after.clone())) {
                    stack.push((op, std::mem::replace(&mut state, after)));
                    linearized = marked;
                    if ops[op].outcome != Outcome::Unknown {
                        done_required += 1;
                    }
                    deepest = deepest.max(stack.len());
                    unlink(&mut next, &mut prev, call_entry[op]);
                    if return_entry[op] != usize::MAX {
                        unlink(&mut next, &mut prev, return_entry[op]);
                    }
                    cursor = next[head];
                    continue;
                }
            }
            cursor = next[cursor];
        } else {
            // An operation returned before it could be linearized: backtrack.
            match stack.pop() {
                Some((op, previous)) => {
                    undo(op, previous, &mut state, &mut linearized, &mut done_required, &ops);
                    relink_op(op, &call_entry, &return_entry, &mut next, &mut prev, relink);
                    cursor = next[call_entry[op]];
                }
                None => return KeyVerdict::Stuck(describe(&ops, deepest)),
            }
        }
    }
}

/// Takes back the last linearized operation.
fn undo(
    op: usize,
    previous: Register,
    state: &mut Register,
    linearized: &mut [u64],
    done_required: &mut usize,
    ops: &[&Event],
) {
    *state = previous;
    linearized[op / 64] &= !(1 << (op % 64));
    if ops[op].outcome != Outcome::Unknown {
        *done_required -= 1;
    }
}

fn relink_op(
    op: usize,
    call_entry: &[usize],
    return_entry: &[usize],
    next: &mut Vec<usize>,
    prev: &mut Vec<usize>,
    relink: impl Fn(&mut Vec<usize>, &mut Vec<usize>, usize),
) {
    if return_entry[op] != usize::MAX {
        relink(next, prev, return_entry[op]);
    }
    relink(next, prev, call_entry[op]);
}

fn describe(ops: &[&Event], deepest: usize) -> String {
    let from = deepest.saturating_sub(3);
    let shown: Vec<String> = ops
        .iter()
        .skip(from)
        .take(8)
        .map(|e| format!("{:?} → {:?} [{}..{}]", e.op, e.outcome, e.call, e.ret))
        .collect();
    format!(
        "no linearization of {} operations (at most {deepest} ordered); around there: {}",
        ops.len(),
        shown.join("; ")
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn read(call: u64, ret: u64, seen: Option<(u32, &str)>) -> Event {
        Event {
            key: "k".into(),
            op: Op::Read,
            outcome: Outcome::Read(seen.map(|(version, value)| Register {
                version,
                value: value.into(),
            })),
            call,
            ret,
        }
    }

    fn cas(call: u64, ret: u64, expected: u32, value: &str, outcome: Outcome) -> Event {
        Event {
            key: "k".into(),
            op: Op::Cas {
                expected,
                version: expected + 1,
                value: value.into(),
            },
            outcome,
            call,
            ret,
        }
    }

    #[test]
    fn sequential_and_concurrent_histories_that_linearize() {
        let history = vec![
            read(0, 1, None),
            cas(2, 3, 0, "a", Outcome::Written),
            read(4, 5, Some((1, "a"))),
            // Two writers race for version 2; one wins.
            cas(6, 10, 1, "b", Outcome::Written),
            cas(7, 9, 1, "c", Outcome::Refused),
            // A read concurrent with the winning write may see either.
            read(8, 11, Some((1, "a"))),
            read(12, 13, Some((2, "b"))),
        ];
        assert_eq!(check(&history, 100_000), Verdict::Linearizable);
    }

    #[test]
    fn a_stale_read_is_a_violation() {
        let history = vec![
            cas(0, 1, 0, "a", Outcome::Written),
            cas(2, 3, 1, "b", Outcome::Written),
            // Called after "b" was acknowledged, yet sees "a": a stale leader answered.
            read(4, 5, Some((1, "a"))),
        ];
        assert!(matches!(check(&history, 100_000), Verdict::Violation { .. }));
    }

    #[test]
    fn a_lost_acknowledged_write_is_a_violation() {
        let history = vec![cas(0, 1, 0, "a", Outcome::Written), read(2, 3, None)];
        assert!(matches!(check(&history, 100_000), Verdict::Violation { .. }));
    }

    #[test]
    fn unknown_writes_may_apply_late_or_never() {
        let applied_late = vec![
            cas(0, 1, 0, "a", Outcome::Written),
            cas(2, 3, 1, "b", Outcome::Unknown),
            read(4, 5, Some((1, "a"))),
            read(6, 7, Some((2, "b"))),
        ];
        assert_eq!(check(&applied_late, 100_000), Verdict::Linearizable);
        let never = vec![
            cas(0, 1, 0, "a", Outcome::Written),
            cas(2, 3, 1, "b", Outcome::Unknown),
            read(4, 5, Some((1, "a"))),
            cas(6, 7, 1, "c", Outcome::Written),
        ];
        assert_eq!(check(&never, 100_000), Verdict::Linearizable);
        // But not both: "b" applied (read) and then "c" succeeding on version 1 is impossible.
        let both = vec![
            cas(0, 1, 0, "a", Outcome::Written),
            cas(2, 3, 1, "b", Outcome::Unknown),
            read(4, 5, Some((2, "b"))),
            cas(6, 7, 1, "c", Outcome::Written),
        ];
        assert!(matches!(check(&both, 100_000), Verdict::Violation { .. }));
    }

    #[test]
    fn a_refusal_needs_a_reason() {
        // Refused although the version matched and nothing else wrote.
        let history = vec![
            cas(0, 1, 0, "a", Outcome::Written),
            cas(2, 3, 1, "b", Outcome::Refused),
            read(4, 5, Some((1, "a"))),
        ];
        assert!(matches!(check(&history, 100_000), Verdict::Violation { .. }));
    }

    #[test]
    fn many_concurrent_clients_stay_within_budget() {
        // Three clients in lock step, each write racing the others, 600 operations.
        let mut history = Vec::new();
        for version in 0..200u32 {
            let value = format!("w{version}");
            let time = u64::from(version) * 10;
            history.push(cas(time, time + 5, version, &value, Outcome::Written));
            history.push(cas(time + 1, time + 4, version, "loser", Outcome::Refused));
            history.push(read(time + 2, time + 6, Some((version + 1, &value))));
        }
        assert_eq!(check(&history, 1_000_000), Verdict::Linearizable);
    }
}
