//! A record the processor cannot apply: it holds the batch (the partition reports itself
//! failed meanwhile), retries after a store error, and moves on once an operator skipped a
//! record that can never be applied (`restatectl partitions skip-record`).

use super::*;

impl Processor {
    pub(super) fn hold(&mut self, batch: Vec<(Lsn, Vec<u8>)>, failure: ApplyFailure) {
        let reason = match (failure.permanent, failure.lsn) {
            (true, Some(lsn)) if !failure.skippable => format!(
                "log {} cannot be applied at record {lsn}: {}; this replica stays at LSN {} instead of \
                 diverging from the others",
                self.log_id, failure.reason, self.applied
            ),
            (true, Some(lsn)) => format!(
                "record {lsn} of log {} cannot be applied: {}; the partition stays at LSN {} until the record \
                 is skipped (`restatectl partitions skip-record {} {lsn}`, which loses what the record did)",
                self.log_id, failure.reason, self.applied, self.partition_id
            ),
            _ => format!("cannot write the partition store ({}); retrying", failure.reason),
        };
        tracing::error!(partition = self.partition_id, "{reason}");
        self.fail(reason);
        let delay = if failure.permanent {
            SKIP_POLL_INTERVAL
        } else {
            Duration::from_millis(100)
        };
        self.held = Some(Held {
            batch,
            failure,
            retries: 0,
            retry_at: Instant::now() + delay,
        });
    }

    /// Tries held records again: after a store error, or once an operator skipped the bad one.
    pub(super) async fn retry_held(&mut self) {
        let Some(mut held) = self.held.take() else {
            return;
        };
        if held.failure.permanent {
            self.refresh_skipped().await;
            if !held.failure.lsn.is_some_and(|lsn| self.skipped.contains(&lsn)) {
                held.retry_at = Instant::now() + SKIP_POLL_INTERVAL;
                self.held = Some(held);
                return;
            }
        }
        match self.apply_batch(&held.batch) {
            Ok(()) => self.recovered(),
            Err(failure) if failure.permanent && failure.lsn != held.failure.lsn => {
                self.apply_or_hold(held.batch);
                if self.held.is_none() {
                    self.recovered();
                }
            }
            Err(failure) => {
                held.retries += 1;
                let backoff = Duration::from_millis(100).saturating_mul(1 << held.retries.min(6));
                held.retry_at = Instant::now()
                    + match failure.permanent {
                        true => SKIP_POLL_INTERVAL,
                        false => backoff.min(MAX_STORE_RETRY_DELAY),
                    };
                if !failure.permanent {
                    self.handle.state.update(|s| {
                        s.failure = Some(format!(
                            "cannot write the partition store ({}); retrying",
                            failure.reason
                        ))
                    });
                }
                held.failure = failure;
                self.held = Some(held);
            }
        }
    }

    /// Reads the records an operator asked to skip.
    pub(super) async fn refresh_skipped(&mut self) {
        match self
            .ctx
            .metadata
            .get_json::<SkippedRecords>(&skipped_records_key(self.partition_id))
            .await
        {
            Ok(Some((_, skipped))) => self.skipped = skipped.lsns,
            Ok(None) => self.skipped.clear(),
            Err(error) => tracing::debug!(partition = self.partition_id, %error, "cannot read the skipped records"),
        }
    }
}
