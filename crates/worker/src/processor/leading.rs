//! Leading a partition: claiming the next leader epoch in metadata, announcing it through the
//! log, and the tasks that run only while this processor leads (shuffle, cleaner, starter,
//! timers) started and stopped together.

use super::*;
use crate::leadership::claim::spawn_claim;
use crate::leadership::election::{Claim, ViewPeers, lease};

impl Processor {
    /// Claims leadership (an epoch in metadata, announced through the log); the processor
    /// leads once it applies its own announcement.
    pub(super) fn claim_leadership(&mut self, why: Claim) {
        tracing::info!(partition = self.partition_id, leader = ?self.election.leader(), "claiming leadership: {}", why.describe());
        self.election.claim_started(Instant::now());
        spawn_claim(
            self.ctx.clone(),
            self.appender.clone(),
            self.control_tx.clone(),
            self.partition_id,
        );
    }

    /// Claims leadership if the election says this replica should; stops leading when this
    /// node is cut off from the other workers (its lease ran out), before they replace it.
    pub(super) fn elect(&mut self) {
        let replicas = self
            .ctx
            .placement
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .replicas_of(self.partition_id)
            .map(|set| set.iter().map(|n| n.0).collect());
        let peers = ViewPeers {
            view: &self.ctx.view,
            silence: self.ctx.failover_silence,
            lease: lease(self.ctx.failover_silence),
            replicas,
        };
        if !self.leading && self.appender.is_failed() {
            // A follower's appender carries only records that stand alone (its stepped-down
            // leadership's stragglers are fenced): it never stays closed after a failure.
            self.appender.clear_failure();
        }
        if self.leading && self.election.cut_off(&peers) {
            tracing::warn!(
                partition = self.partition_id,
                "this node has heard from no other worker node for {:?}: it stops leading, so no invocation runs here \
                 while another node takes over",
                lease(self.ctx.failover_silence)
            );
            self.step_down();
            return;
        }
        if let Some(why) = self.election.decide(Instant::now(), self.leading, &peers) {
            self.claim_leadership(why);
        }
    }

    /// An append of this partition failed (`failures` so far): a leader claims a new epoch
    /// (its later proposals must not reach the log after a gap); a follower clears the failure,
    /// since its records (from the ingress and admin API) stand alone.
    pub(super) fn on_append_failure(&mut self, failures: u64) {
        if !self.leading {
            self.appender.clear_failure();
        } else if failures > self.append_failures_seen {
            tracing::warn!(
                partition = self.partition_id,
                "an append failed: re-establishing leadership"
            );
            self.step_down();
            self.claim_leadership(Claim::WasLeader);
        }
    }

    pub(super) fn become_leader(&mut self) {
        if self.leading {
            // A second leadership of this processor: the first one's tasks end first.
            self.step_down();
        }
        tracing::info!(partition = self.partition_id, epoch = ?self.my_epoch, "leading the partition");
        self.leading = true;
        self.led_epoch = self.my_epoch;
        // A failure since the claim reset the appender hit no proposal of this leadership
        // (none was made yet): it must not keep the new leader's appender closed.
        self.append_failures_seen = *self.appender.failures().borrow();
        self.appender.clear_failure();
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
        // index of running invocations in bounded steps as permits free up. Taken over from a
        // leader that still answers, they wait a lease first: that leader stops its attempts
        // when it applies this announcement, and a `ctx.run` its SDK was running finishes
        // meanwhile instead of running beside the new attempt's.
        let handover = self.handover_grace();
        let (starter_tx, starter_rx) = mpsc::unbounded_channel();
        self.starter = Some(starter_tx);
        self.queued.clear();
        tokio::spawn(starter(
            handover,
            self.store.clone(),
            self.ctx.concurrency.clone(),
            starter_rx,
            self.control_tx.clone(),
            self.leader_cancel.clone(),
        ));
        self.publish_state();
    }

    /// How long running invocations wait before this new leader resumes them: a lease when
    /// the leader it replaced is another node that still answers, else nothing.
    fn handover_grace(&self) -> Duration {
        match self.replaced_leader {
            Some(node)
                if node != self.ctx.node_id
                    && self
                        .ctx
                        .view
                        .responsive(restate_types::PlainNodeId(node), self.ctx.failover_silence) =>
            {
                lease(self.ctx.failover_silence)
            }
            _ => Duration::ZERO,
        }
    }

    pub(super) fn step_down(&mut self) {
        self.leading = false;
        if let Some(epoch) = self.led_epoch.take() {
            // Proposals its attempts still make are refused, so nothing of this leadership
            // lands after a failed append.
            self.appender.fence(epoch + 1);
        }
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
