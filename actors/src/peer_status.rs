//! How this node judges a peer from its heartbeats: the status rules below
//! (docs/protocol.md, "Behaviour"), with hysteresis so that one lost or slow packet does not flap a
//! status (and write an audit row) back and forth.
//!
//! - unknown: never answered, and not for long enough to call it gone;
//! - healthy: answering, fast, its PostgreSQL up;
//! - degraded: answering, but two answers in a row slower than
//!   `degraded_rtt` (until two fast ones in a row), or it reports its
//!   PostgreSQL down;
//! - unreachable: no answer for `unreachable_after`.
//!
//! Pure logic on explicit instants; the GrpcPeerActor feeds it.

pub use crate::node_status::NodeStatus;
use std::time::{Duration, Instant};

/// Answers in a row needed to enter or leave "slow".
const STREAK: u8 = 2;

#[derive(Debug, Clone, Copy)]
pub struct Thresholds {
    pub degraded_rtt: Duration,
    pub unreachable_after: Duration,
}

#[derive(Debug, Clone)]
pub struct PeerTracker {
    thresholds: Thresholds,
    status: NodeStatus,
    since: Instant,
    last_answer: Option<Instant>,
    last_rtt: Option<Duration>,
    slow_streak: u8,
    fast_streak: u8,
    slow: bool,
    postgres_down: bool,
}

impl PeerTracker {
    /// A peer we start talking to at `now`.
    pub fn new(thresholds: Thresholds, now: Instant) -> Self {
        PeerTracker {
            thresholds,
            status: NodeStatus::Unknown,
            since: now,
            last_answer: None,
            last_rtt: None,
            slow_streak: 0,
            fast_streak: 0,
            slow: false,
            postgres_down: false,
        }
    }

    /// Whether it reported its PostgreSQL down last time it told us
    /// (`None`: it has not answered yet).
    pub fn postgres_up(&self) -> Option<bool> {
        self.last_answer.map(|_| !self.postgres_down)
    }

    pub fn status(&self) -> NodeStatus {
        self.status
    }

    pub fn last_rtt(&self) -> Option<Duration> {
        self.last_rtt
    }

    pub fn last_answer(&self) -> Option<Instant> {
        self.last_answer
    }

    /// The peer answered after `rtt`. Returns the new status if it changed.
    pub fn answered(&mut self, now: Instant, rtt: Duration) -> Option<NodeStatus> {
        self.last_answer = Some(now);
        self.last_rtt = Some(rtt);
        if rtt > self.thresholds.degraded_rtt {
            self.slow_streak = self.slow_streak.saturating_add(1);
            self.fast_streak = 0;
        } else {
            self.fast_streak = self.fast_streak.saturating_add(1);
            self.slow_streak = 0;
        }
        if self.slow_streak >= STREAK {
            self.slow = true;
        } else if self.fast_streak >= STREAK {
            self.slow = false;
        }
        self.evaluate(now)
    }

    /// The peer reported whether its PostgreSQL is connected.
    pub fn reported_postgres(&mut self, now: Instant, connected: bool) -> Option<NodeStatus> {
        self.postgres_down = !connected;
        self.evaluate(now)
    }

    /// No answer (error or timeout), or just time passing.
    pub fn tick(&mut self, now: Instant) -> Option<NodeStatus> {
        self.evaluate(now)
    }

    fn evaluate(&mut self, now: Instant) -> Option<NodeStatus> {
        let silent_for = now.saturating_duration_since(self.last_answer.unwrap_or(self.since));
        let next = if silent_for > self.thresholds.unreachable_after {
            NodeStatus::Unreachable
        } else if self.last_answer.is_none() {
            NodeStatus::Unknown
        } else if self.postgres_down || self.slow {
            NodeStatus::Degraded
        } else {
            NodeStatus::Healthy
        };
        if next == self.status {
            return None;
        }
        if next == NodeStatus::Unreachable {
            // Coming back starts a fresh judgement of its speed.
            self.slow = false;
            self.slow_streak = 0;
            self.fast_streak = 0;
        }
        self.status = next;
        Some(next)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MS: Duration = Duration::from_millis(1);

    fn tracker(now: Instant) -> PeerTracker {
        PeerTracker::new(
            Thresholds {
                degraded_rtt: 500 * MS,
                unreachable_after: 3000 * MS,
            },
            now,
        )
    }

    #[test]
    fn a_fast_answer_makes_a_new_peer_healthy() {
        let t0 = Instant::now();
        let mut p = tracker(t0);
        assert_eq!(p.status(), NodeStatus::Unknown);
        assert_eq!(p.answered(t0 + 10 * MS, 2 * MS), Some(NodeStatus::Healthy));
        assert_eq!(p.answered(t0 + 1010 * MS, 2 * MS), None);
    }

    #[test]
    fn a_peer_that_never_answers_becomes_unreachable_after_the_threshold() {
        let t0 = Instant::now();
        let mut p = tracker(t0);
        assert_eq!(p.tick(t0 + 2000 * MS), None);
        assert_eq!(p.tick(t0 + 3001 * MS), Some(NodeStatus::Unreachable));
    }

    #[test]
    fn one_lost_heartbeat_does_not_flap_the_status() {
        let t0 = Instant::now();
        let mut p = tracker(t0);
        p.answered(t0, MS);
        // The heartbeat at 1 s is lost; 2 s answers again.
        assert_eq!(p.tick(t0 + 1000 * MS), None);
        assert_eq!(p.answered(t0 + 2000 * MS, MS), None);
        assert_eq!(p.status(), NodeStatus::Healthy);
    }

    #[test]
    fn silence_longer_than_unreachable_after_then_an_answer_recovers() {
        let t0 = Instant::now();
        let mut p = tracker(t0);
        p.answered(t0, MS);
        assert_eq!(p.tick(t0 + 3500 * MS), Some(NodeStatus::Unreachable));
        assert_eq!(p.answered(t0 + 5000 * MS, MS), Some(NodeStatus::Healthy));
    }

    #[test]
    fn slowness_needs_two_answers_in_a_row_both_ways() {
        let t0 = Instant::now();
        let mut p = tracker(t0);
        p.answered(t0, MS);
        assert_eq!(
            p.answered(t0 + 1000 * MS, 800 * MS),
            None,
            "one slow answer is noise"
        );
        assert_eq!(
            p.answered(t0 + 2000 * MS, 800 * MS),
            Some(NodeStatus::Degraded)
        );
        assert_eq!(
            p.answered(t0 + 3000 * MS, MS),
            None,
            "one fast answer is noise"
        );
        assert_eq!(p.answered(t0 + 4000 * MS, MS), Some(NodeStatus::Healthy));
    }

    #[test]
    fn a_peer_reporting_its_postgresql_down_is_degraded_until_it_is_back() {
        let t0 = Instant::now();
        let mut p = tracker(t0);
        p.answered(t0, MS);
        assert_eq!(
            p.reported_postgres(t0 + 100 * MS, false),
            Some(NodeStatus::Degraded)
        );
        assert_eq!(p.answered(t0 + 1000 * MS, MS), None);
        assert_eq!(
            p.reported_postgres(t0 + 1100 * MS, true),
            Some(NodeStatus::Healthy)
        );
    }
}
