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
    pub(crate) out_of_order: usize,
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
}

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
            "misplaced": self.misplaced,
            "unknown_outcome": self.unknown_outcome,
            "unknown_present": self.unknown_present,
            "phantom": self.phantom,
            "holes": self.holes,
            "records_read": self.records_read,
            "trimmed": self.trimmed,
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
    let mut last_sequence: HashMap<u32, u64> = HashMap::new();
    let mut out_of_order = 0;
    for (lsn, id) in log {
        seen.entry(*id).or_default().push(*lsn);
        // Each appender appends one batch at a time: its records are in sequence order.
        if let Some(previous) = last_sequence.insert(id.0, id.1)
            && previous >= id.1
        {
            out_of_order += 1;
        }
    }
    let mut verdict = Verdict {
        acknowledged: history.acknowledged.len(),
        unknown_outcome: history.uncertain.len(),
        holes: read.holes,
        records_read: log.len(),
        out_of_order,
        ..Verdict::default()
    };
    verdict.duplicated = seen.values().filter(|lsns| lsns.len() > 1).count();
    for (id, lsn) in &history.acknowledged {
        match seen.get(id) {
            None if *lsn < read.trim_point => verdict.trimmed += 1,
            None => verdict.lost += 1,
            Some(lsns) if !lsns.contains(lsn) => verdict.misplaced += 1,
            Some(_) => {}
        }
    }
    verdict.unknown_present = history.uncertain.iter().filter(|id| seen.contains_key(id)).count();
    verdict.phantom = history.not_appended.iter().filter(|id| seen.contains_key(id)).count();
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
        let verdict = check(&history, &read);
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
}
