//! The timing of the coordinator's lease, on CLOCK_BOOTTIME
//! (docs/protocol.md, "The coordinator lease").
//!
//! With `lease` L and allowed clock-rate error e:
//! - the holder counts its role valid until the send time of its last
//!   acknowledged renewal plus L·(1−e);
//! - the leader grants the role elsewhere only once L·(1+e) has passed
//!   since the last renewal appended to its log (`RenewalStamp`).
//!
//! Why that is enough: a renewal the holder counts was committed, so it is
//! in the log of every later leader (Raft's leader completeness), appended
//! there after the holder sent it. A leader that waits L·(1+e) on its own
//! clock from that append has waited longer than the holder's L·(1−e) from
//! the send as long as the two clocks' rates differ by less than e. A
//! renewal appended after the leader decided lands either before its grant
//! in the log (the grant names the renewal count it saw and is refused) or
//! after it (the renewal names the old epoch and is refused).

use crate::boottime::BootTime;
use crate::types::{Member, Role};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

/// The coordinator's timing settings.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct LeaseSettings {
    /// `coordinator.lease`.
    pub lease: Duration,
    /// `coordinator.clock_error`, a fraction (0.01 for 1%).
    pub clock_error: f64,
    /// `coordinator.failback_after`.
    pub failback_after: Duration,
    /// How long the leader must have seen a member fit before granting it
    /// the role (one lease: a member that just came back is not chosen on
    /// its first answer).
    pub settle: Duration,
}

impl Default for LeaseSettings {
    fn default() -> Self {
        LeaseSettings::new(Duration::from_secs(2), 0.01, Duration::from_secs(30))
    }
}

impl LeaseSettings {
    pub fn new(lease: Duration, clock_error: f64, failback_after: Duration) -> Self {
        LeaseSettings {
            lease,
            clock_error: clock_error.clamp(0.0, 0.5),
            failback_after,
            settle: lease,
        }
    }

    /// How long after sending an acknowledged renewal the holder claims.
    pub fn holder_validity(&self) -> Duration {
        self.lease.mul_f64(1.0 - self.clock_error)
    }

    /// How long after the last renewal it appended the leader waits before
    /// granting the role elsewhere.
    pub fn grant_wait(&self) -> Duration {
        self.lease.mul_f64(1.0 + self.clock_error)
    }

    /// How often the holder renews: three times within a lease.
    pub fn renew_every(&self) -> Duration {
        self.lease / 3
    }
}

/// When a coordinator renewal was last appended to this node's log (or
/// its store opened, or a snapshot was installed). Only moves forward.
#[derive(Debug, Clone)]
pub struct RenewalStamp(Arc<AtomicU64>);

impl RenewalStamp {
    /// A stamp at the current instant.
    pub fn starting_now() -> Self {
        RenewalStamp(Arc::new(AtomicU64::new(BootTime::now().as_nanos())))
    }

    /// Moves the stamp to now.
    pub fn observe(&self) {
        self.0
            .fetch_max(BootTime::now().as_nanos(), Ordering::SeqCst);
    }

    pub fn get(&self) -> BootTime {
        BootTime::from_nanos(self.0.load(Ordering::SeqCst))
    }
}

/// Orders members for the role: the highest priority first, ties broken by
/// the smallest node_id.
pub fn ranks_before(a: &Member, b: &Member) -> bool {
    (std::cmp::Reverse(a.priority), &a.node_id) < (std::cmp::Reverse(b.priority), &b.node_id)
}

/// The best of `candidates` for the role: data nodes only.
pub fn best<'a>(candidates: impl IntoIterator<Item = &'a Member>) -> Option<&'a Member> {
    candidates
        .into_iter()
        .filter(|m| m.role == Role::Data)
        .fold(None, |best: Option<&Member>, m| match best {
            Some(b) if !ranks_before(m, b) => Some(b),
            _ => Some(m),
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn member(node_id: &str, priority: u8, role: Role) -> Member {
        Member {
            node_id: node_id.into(),
            grpc: String::new(),
            priority,
            role,
        }
    }

    #[test]
    fn the_holder_stops_before_the_leader_may_grant_again() {
        let s = LeaseSettings::default();
        assert_eq!(s.holder_validity(), Duration::from_millis(1980));
        assert_eq!(s.grant_wait(), Duration::from_millis(2020));
        assert!(s.holder_validity() < s.grant_wait());
        // Three renewals fit in the holder's validity.
        assert!(s.renew_every() * 3 <= s.lease);
    }

    #[test]
    fn a_clock_error_out_of_reason_is_clamped() {
        let s = LeaseSettings::new(Duration::from_secs(2), 3.0, Duration::ZERO);
        assert!(s.holder_validity() > Duration::ZERO);
    }

    #[test]
    fn the_stamp_only_moves_forward() {
        let stamp = RenewalStamp::starting_now();
        let first = stamp.get();
        std::thread::sleep(Duration::from_millis(2));
        stamp.observe();
        assert!(stamp.get() > first);
        let copy = stamp.clone();
        copy.observe();
        assert!(stamp.get() >= first);
    }

    #[test]
    fn the_best_member_has_the_highest_priority_then_the_smallest_node_id() {
        let members = [
            member("n3", 50, Role::Data),
            member("n1", 50, Role::Data),
            member("w", 100, Role::Witness),
            member("n2", 10, Role::Data),
        ];
        assert_eq!(best(&members).map(|m| m.node_id.as_str()), Some("n1"));
        let only_witness = [member("w", 100, Role::Witness)];
        assert_eq!(best(&only_witness), None);
        let higher = [member("n9", 90, Role::Data), member("n1", 50, Role::Data)];
        assert_eq!(best(&higher).map(|m| m.node_id.as_str()), Some("n9"));
    }
}
