//! Leading a partition: claiming the next leader epoch in metadata, announcing it through the
//! log, and the tasks that run only while this processor leads (shuffle, cleaner, starter,
//! timers) started and stopped together.

use super::*;

impl Processor {
    /// Claims the next epoch (compare-and-swap in metadata) and announces it through the log; the
    /// processor leads once it applies its own announcement.
    pub(super) fn spawn_leadership(&self) {
        let (ctx, appender, control, partition) = (
            self.ctx.clone(),
            self.appender.clone(),
            self.control_tx.clone(),
            self.partition_id,
        );
        tokio::spawn(async move {
            let key = format!("pp_epoch_{partition}");
            let node = ctx.node_id;
            let epoch = ctx
                .metadata
                .read_modify_write::<EpochMetadata, _>(&key, |current| {
                    Ok(ReadModifyWrite::Write(EpochMetadata {
                        epoch: current.map_or(1, |c| c.epoch + 1),
                        node,
                    }))
                })
                .await;
            let epoch = match epoch {
                Ok((_, stored)) => stored.epoch,
                Err(error) => {
                    tracing::warn!(partition, %error, "cannot obtain a leader epoch; trying again");
                    tokio::time::sleep(Duration::from_secs(1)).await;
                    let _ = control.send(Control::LeadershipFailed);
                    return;
                }
            };
            appender.reset(epoch);
            let announce = Envelope {
                timestamp: now_ms(),
                leader_epoch: None,
                dedup: None,
                command: Command::AnnounceLeader { epoch, node },
            };
            match appender.append(&announce).await {
                Ok(_) => {
                    let _ = control.send(Control::Epoch(epoch));
                }
                Err(error) => {
                    tracing::warn!(partition, %error, "cannot announce leadership; trying again");
                    tokio::time::sleep(Duration::from_secs(1)).await;
                    let _ = control.send(Control::LeadershipFailed);
                }
            }
        });
    }

    pub(super) fn become_leader(&mut self) {
        if self.leading {
            // A second leadership of this processor: the first one's tasks end first.
            self.step_down();
        }
        tracing::info!(partition = self.partition_id, epoch = ?self.my_epoch, "leading the partition");
        self.leading = true;
        self.append_failures_seen = *self.appender.failures().borrow();
        self.leader_cancel = CancellationToken::new();
        if let Err(error) = self.timers.load(&self.store) {
            tracing::error!(partition = self.partition_id, %error, "cannot read the timers; they fire once this partition is led again");
        }
        let epoch = self.my_epoch.unwrap_or_default();
        let (shuffle_tx, shuffle_rx) = mpsc::unbounded_channel();
        let _ = shuffle_tx.send(());
        self.shuffle = Some(shuffle_tx);
        tokio::spawn(shuffle(
            self.ctx.clone(),
            self.store.clone(),
            self.appender.clone(),
            self.partition_id,
            epoch,
            shuffle_rx,
            self.control_tx.clone(),
            self.leader_cancel.clone(),
        ));
        tokio::spawn(cleaner(
            self.store.clone(),
            self.appender.clone(),
            epoch,
            self.ctx.settings.cleanup_interval,
            self.leader_cancel.clone(),
        ));
        // Invocations that were running resume through the starter, which reads them from the
        // index of running invocations in bounded steps as permits free up.
        let (starter_tx, starter_rx) = mpsc::unbounded_channel();
        self.starter = Some(starter_tx);
        self.queued.clear();
        tokio::spawn(starter(
            self.store.clone(),
            self.ctx.concurrency.clone(),
            starter_rx,
            self.control_tx.clone(),
            self.leader_cancel.clone(),
        ));
        self.publish_state();
    }

    pub(super) fn step_down(&mut self) {
        self.leading = false;
        self.leader_cancel.cancel();
        for (_, running) in self.running.drain() {
            running.cancel.cancel();
        }
        self.shuffle = None;
        self.starter = None;
        self.queued.clear();
        self.timers.clear();
        self.pending_retries.clear();
        self.retries.clear();
        self.backing_off.clear();
        self.timers_paused_until = None;
        self.handle.state.clear_attempts();
        self.handle.state.update(|s| s.outbox_problem = None);
        self.publish_state();
    }
}
