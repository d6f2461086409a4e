//! `restate-bench log --verify`: every record carries (run, appender, sequence); after the run
//! the whole log is read back and checked against what was acknowledged. The last line
//! printed is JSON with the counts, so scripts (the chaos run, CI) can judge it.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use restate_proto::bifrost::ReadRequest;
use restate_proto::bifrost::bifrost_svc_client::BifrostSvcClient;
use restate_proto::bifrost::log_entry::Entry;
use tonic::transport::Channel;

/// Identity of one record: (appender, sequence number within the appender).
pub(crate) type RecordId = (u32, u64);

/// What an appender learnt about its appends.
#[derive(Debug, Default)]
pub(crate) struct History {
    /// Acknowledged records with the LSN the acknowledgement named.
    pub(crate) acknowledged: HashMap<RecordId, u64>,
    /// Records whose append failed with "outcome unknown": may appear at most once.
    pub(crate) uncertain: Vec<RecordId>,
    /// Records whose append was certainly not appended: must not appear.
    pub(crate) not_appended: Vec<RecordId>,
}

impl History {
    pub(crate) fn merge(&mut self, other: History) {
        self.acknowledged.extend(other.acknowledged);
        self.uncertain.extend(other.uncertain);
        self.not_appended.extend(other.not_appended);
    }
}

/// The payload of a record: a header the checker parses, padded to `size` bytes.
pub(crate) fn payload(run: u64, id: RecordId, size: usize) -> Vec<u8> {
    let mut bytes = format!("verify {run} {} {} ", id.0, id.1).into_bytes();
    if bytes.len() < size {
        bytes.resize(size, b'.');
    }
    bytes
}

fn parse(run: u64, payload: &[u8]) -> Option<RecordId> {
    let text = std::str::from_utf8(payload.get(..payload.len().min(64))?).ok()?;
    let mut words = text.split(' ');
    if words.next()? != "verify" || words.next()?.parse::<u64>().ok()? != run {
        return None;
    }
    Some((words.next()?.parse().ok()?, words.next()?.parse().ok()?))
}

/// The checker's verdict; `ok` when nothing acknowledged is lost, misplaced, duplicated or
/// out of order, and no refused record appeared.
#[derive(Debug, Default, PartialEq, Eq)]
pub(crate) struct Verdict {
    pub(crate) acknowledged: usize,
    pub(crate) lost: usize,
    pub(crate) duplicated: usize,
    /// Acknowledged records that follow a record their appender issued after them: the
    /// acknowledgement came before the later append began, so it must come first in the log.
    pub(crate) out_of_order: usize,
    /// Records of unknown outcome that landed after records their appender issued later.
    /// Allowed: an append nobody heard back from may take effect any time after it began
    /// (e.g. a forwarded append held up by a network partition).
    pub(crate) landed_late: usize,
    /// Acknowledged records found at another LSN than their acknowledgement said.
    pub(crate) misplaced: usize,
    pub(crate) unknown_outcome: usize,
    pub(crate) unknown_present: usize,
    /// Records reported "not appended" that are in the log anyway.
    pub(crate) phantom: usize,
    /// LSNs skipped without a trim gap.
    pub(crate) holes: usize,
    pub(crate) records_read: usize,
    /// Acknowledged records below the trim point (trimmed while the run went on).
    pub(crate) trimmed: usize,
    /// A few of the violations, as `kind (appender, sequence) at LSN`, to start a diagnosis.
    pub(crate) examples: Vec<String>,
}

/// How many violations the verdict names.
const MAX_EXAMPLES: usize = 10;

impl Verdict {
    pub(crate) fn ok(&self) -> bool {
        self.lost + self.duplicated + self.out_of_order + self.misplaced + self.phantom + self.holes == 0
    }

    pub(crate) fn json(&self) -> serde_json::Value {
        serde_json::json!({
            "verdict": if self.ok() { "ok" } else { "violations" },
            "acknowledged": self.acknowledged,
            "lost": self.lost,
            "duplicated": self.duplicated,
            "out_of_order": self.out_of_order,
            "landed_late": self.landed_late,
            "misplaced": self.misplaced,
            "unknown_outcome": self.unknown_outcome,
            "unknown_present": self.unknown_present,
            "phantom": self.phantom,
            "holes": self.holes,
            "records_read": self.records_read,
            "trimmed": self.trimmed,
            "examples": self.examples,
        })
    }
}

/// The log as read back: this run's records in read order, LSNs skipped without a trim gap,
/// and the trim point (records below it are gone on purpose).
#[derive(Debug, Default)]
pub(crate) struct ReadBack {
    pub(crate) records: Vec<(u64, RecordId)>,
    pub(crate) holes: usize,
    pub(crate) trim_point: u64,
}

/// Checks the log read back against the history.
pub(crate) fn check(history: &History, read: &ReadBack) -> Verdict {
    let log = &read.records;
    let mut seen: HashMap<RecordId, Vec<u64>> = HashMap::new();
    // Per appender, the highest sequence read so far and where.
    let mut highest: HashMap<u32, (u64, u64)> = HashMap::new();
    let mut examples = Vec::new();
    let mut note = |example: String| {
        if examples.len() < MAX_EXAMPLES {
            examples.push(example);
        }
    };
    let (mut out_of_order, mut landed_late) = (0, 0);
    for (lsn, id) in log {
        seen.entry(*id).or_default().push(*lsn);
        // Each appender appends one batch at a time. An acknowledged record was acknowledged
        // before any later record was issued, so nothing issued later may come before it.
        match highest.get(&id.0).copied() {
            Some((sequence, at)) if sequence >= id.1 => {
                if history.acknowledged.contains_key(id) {
                    out_of_order += 1;
                    note(format!(
                        "out of order: {id:?} at LSN {lsn} after ({}, {sequence}) at LSN {at}",
                        id.0
                    ));
                } else {
                    landed_late += 1;
                }
            }
            _ => {
                highest.insert(id.0, (id.1, *lsn));
            }
        }
    }
    let mut verdict = Verdict {
        acknowledged: history.acknowledged.len(),
        unknown_outcome: history.uncertain.len(),
        holes: read.holes,
        records_read: log.len(),
        out_of_order,
        landed_late,
        ..Verdict::default()
    };
    for (id, lsns) in &seen {
        if lsns.len() > 1 {
            verdict.duplicated += 1;
            note(format!("duplicated: {id:?} at LSNs {lsns:?}"));
        }
    }
    for (id, lsn) in &history.acknowledged {
        match seen.get(id) {
            None if *lsn < read.trim_point => verdict.trimmed += 1,
            None => {
                verdict.lost += 1;
                note(format!("lost: {id:?} acknowledged at LSN {lsn}"));
            }
            Some(lsns) if !lsns.contains(lsn) => {
                verdict.misplaced += 1;
                note(format!(
                    "misplaced: {id:?} acknowledged at LSN {lsn}, found at {lsns:?}"
                ));
            }
            Some(_) => {}
        }
    }
    verdict.unknown_present = history.uncertain.iter().filter(|id| seen.contains_key(id)).count();
    for id in history.not_appended.iter().filter(|id| seen.contains_key(id)) {
        verdict.phantom += 1;
        note(format!("phantom: {id:?} was refused but is at LSNs {:?}", seen[id]));
    }
    verdict.examples = examples;
    verdict
}

/// How long the read-back keeps trying (nodes may still be restarting after faults).
const READ_BACK_PATIENCE: Duration = Duration::from_secs(60);

/// Reads the whole log through any of the nodes (moving to the next one when a read fails).
pub(crate) async fn read_back(
    mut clients: Vec<BifrostSvcClient<Channel>>,
    log_id: u32,
    run: u64,
) -> anyhow::Result<ReadBack> {
    let mut read = ReadBack::default();
    let mut from = 1u64;
    let mut current = 0;
    let deadline = Instant::now() + READ_BACK_PATIENCE;
    loop {
        let request = ReadRequest {
            log_id,
            from_lsn: from,
            max_records: 1000,
        };
        let response = match tokio::time::timeout(Duration::from_secs(10), clients[current].read(request)).await {
            Ok(Ok(response)) => response.into_inner(),
            outcome => {
                let reason = match outcome {
                    Ok(Err(status)) => status.message().to_owned(),
                    _ => "no answer".to_owned(),
                };
                if Instant::now() > deadline {
                    anyhow::bail!("reading log {log_id} back from LSN {from} failed: {reason}");
                }
                current = (current + 1) % clients.len();
                tokio::time::sleep(Duration::from_millis(200)).await;
                continue;
            }
        };
        if response.entries.is_empty() {
            if from >= response.tail_lsn {
                return Ok(read);
            }
            anyhow::bail!(
                "log {log_id}: no entry at LSN {from} below the tail {}",
                response.tail_lsn
            );
        }
        for entry in response.entries {
            match entry.entry {
                Some(Entry::Record(record)) => {
                    if record.lsn != from {
                        read.holes += usize::try_from(record.lsn.saturating_sub(from)).unwrap_or(usize::MAX);
                    }
                    if let Some(id) = parse(run, &record.payload) {
                        read.records.push((record.lsn, id));
                    }
                    from = record.lsn + 1;
                }
                Some(Entry::TrimGap(gap)) => {
                    read.trim_point = read.trim_point.max(gap.to_lsn);
                    from = gap.to_lsn;
                }
                None => anyhow::bail!("log {log_id}: an empty entry after LSN {from}"),
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn payloads_round_trip_and_other_runs_are_ignored() {
        let bytes = payload(42, (3, 17), 128);
        assert_eq!(bytes.len(), 128);
        assert_eq!(parse(42, &bytes), Some((3, 17)));
        assert_eq!(parse(41, &bytes), None);
        assert_eq!(parse(42, b"something else"), None);
    }

    #[test]
    fn the_checker_counts_every_kind_of_violation() {
        let mut history = History::default();
        history.acknowledged.insert((0, 0), 1);
        history.acknowledged.insert((0, 1), 2);
        history.acknowledged.insert((0, 2), 3); // lost
        history.acknowledged.insert((1, 0), 9); // misplaced (found at 4)
        history.uncertain.push((1, 1)); // present once: fine
        history.not_appended.push((1, 2)); // present: phantom
        let log = vec![
            (1, (0, 0)),
            (2, (0, 1)),
            (4, (1, 0)),
            (5, (1, 1)),
            (6, (1, 2)),
            (7, (0, 1)), // duplicate, and out of order for appender 0
        ];
        let read = ReadBack {
            records: log.clone(),
            holes: 1,
            trim_point: 0,
        };
        let mut verdict = check(&history, &read);
        // One line per violation: lost, duplicated, out of order, misplaced, phantom.
        assert_eq!(std::mem::take(&mut verdict.examples).len(), 5, "{verdict:?}");
        assert_eq!(
            verdict,
            Verdict {
                acknowledged: 4,
                lost: 1,
                duplicated: 1,
                out_of_order: 1,
                misplaced: 1,
                unknown_outcome: 1,
                unknown_present: 1,
                phantom: 1,
                holes: 1,
                records_read: 6,
                trimmed: 0,
                landed_late: 0,
                examples: Vec::new(),
            }
        );
        assert!(!verdict.ok());
        let prefix = ReadBack {
            records: log[..2].to_vec(),
            ..ReadBack::default()
        };
        let clean = check(&history, &prefix);
        assert_eq!((clean.lost, clean.duplicated, clean.out_of_order), (2, 0, 0));
        // Records below the trim point are trimmed, not lost.
        let trimmed = ReadBack {
            records: log[1..2].to_vec(),
            trim_point: 2,
            ..ReadBack::default()
        };
        let verdict = check(&history, &trimmed);
        assert_eq!((verdict.trimmed, verdict.lost), (1, 2));
    }

    #[test]
    fn a_record_of_unknown_outcome_may_land_late_but_an_acknowledged_one_may_not() {
        let mut history = History::default();
        // Appender 0: its first append's outcome was unknown; it landed after the second.
        history.uncertain.push((0, 0));
        history.acknowledged.insert((0, 1), 10);
        // Appender 1: an acknowledged record after one issued later (of unknown outcome).
        history.acknowledged.insert((1, 0), 13);
        history.uncertain.push((1, 1));
        let read = ReadBack {
            records: vec![(10, (0, 1)), (11, (0, 0)), (12, (1, 1)), (13, (1, 0))],
            ..ReadBack::default()
        };
        let verdict = check(&history, &read);
        assert_eq!((verdict.landed_late, verdict.out_of_order), (1, 1), "{verdict:?}");
        assert_eq!(
            verdict.examples,
            vec!["out of order: (1, 0) at LSN 13 after (1, 1) at LSN 12".to_owned()]
        );
        assert!(!verdict.ok());
    }
}
