//! The Raft timers of the metadata store and what follows from them: how long a follower
//! waits before campaigning, how long a leader may miss its majority before it says so.

use std::time::Duration;

use crate::raft_types::Raft;

/// How long a leader may go without acknowledgements from a majority before it reports the
/// quorum lost: long enough for a large entry in flight, short enough to fail fast.
pub(crate) fn quorum_silence_limit(raft: &Raft) -> u64 {
    (raft.config().election_timeout_max * 4).max(2000)
}

/// Time past the other followers' leader lease before a campaign: their last heartbeat may
/// have arrived a little after ours.
pub(crate) const LEASE_MARGIN: Duration = Duration::from_millis(30);

/// Raft timers in milliseconds, from the `[metadata-server]` tick options.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct RaftTiming {
    /// Heartbeat interval; openraft also uses it as the append-entries timeout.
    pub heartbeat_ms: u64,
    pub election_min_ms: u64,
    /// Also openraft's leader lease: followers refuse votes for this long after hearing from
    /// the leader.
    pub election_max_ms: u64,
}

impl RaftTiming {
    pub fn from_options(options: &restate_config::MetadataServerOptions) -> Self {
        let tick = (options.raft_tick_interval.as_millis() as u64).max(1);
        let heartbeat_ms = tick * u64::from(options.raft_heartbeat_tick.max(1));
        // openraft's validation refuses an election timeout not above the heartbeat interval.
        let election_min_ms = tick * u64::from(options.raft_election_tick.max(2));
        Self {
            heartbeat_ms,
            election_min_ms,
            election_max_ms: election_min_ms * 2,
        }
    }

    /// Longest time from a leader's last heartbeat until a follower may campaign:
    /// openraft waits for the leader lease plus a random election timeout, and checks on
    /// ticks (every 1.5 heartbeat intervals).
    #[cfg(test)]
    pub fn worst_case_failover_ms(&self) -> u64 {
        self.election_max_ms + self.election_max_ms + self.heartbeat_ms * 3 / 2
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The default timings survive 50 ms fsync stalls and still replace a dead leader well
    /// under 1.5 s.
    #[test]
    fn default_raft_timings_tolerate_fsync_stalls_and_fail_over_quickly() {
        let timing = RaftTiming::from_options(&restate_config::MetadataServerOptions::default());
        let fsync_stall_ms = 50;
        // The heartbeat interval is openraft's append-entries timeout.
        assert!(timing.heartbeat_ms >= 2 * fsync_stall_ms, "{timing:?}");
        // Followers refuse votes for the lease after a heartbeat: several heartbeat rounds
        // (openraft sends them every 1.5 intervals) must fit in it, stalls included.
        assert!(
            timing.election_max_ms >= 2 * (timing.heartbeat_ms * 3 / 2 + fsync_stall_ms),
            "{timing:?}"
        );
        assert!(timing.worst_case_failover_ms() <= 1_000, "{timing:?}");
        let config = openraft::Config {
            heartbeat_interval: timing.heartbeat_ms,
            election_timeout_min: timing.election_min_ms,
            election_timeout_max: timing.election_max_ms,
            ..Default::default()
        };
        assert!(config.validate().is_ok());
    }
}
