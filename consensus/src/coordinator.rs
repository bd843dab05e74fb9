//! The coordinator record in the replicated state: who holds the role, under
//! which epoch, how many renewals it has had, and whether it was asked to
//! hand the role over. Pure rules of how the coordinator commands change it;
//! the timing (leases on CLOCK_BOOTTIME) lives in `lease`, the behaviour of
//! the holder and of the leader in `lease_keeper`.
//!
//! Every change is conditional on what the proposer saw, so that a command
//! decided on an old view changes nothing:
//! - a grant names the next epoch and the renewal count it saw: a renewal
//!   applied between the leader's decision and its grant voids the grant;
//! - a renewal, a handover request and a release name the epoch they are
//!   about: one that arrives after a newer grant is refused.

use serde::{Deserialize, Serialize};

/// The coordinator as the replicated state holds it.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct CoordinatorRecord {
    /// The node_id holding the role (`None`: nobody; released or never granted).
    pub holder: Option<String>,
    /// Grows by one at every grant; never goes back.
    pub epoch: u64,
    /// Renewals accepted in this epoch.
    pub renewals: u64,
    /// Set when the leader asked the holder to step down (priority
    /// failback, removal): renewals are refused from then on.
    pub handover: Option<Handover>,
}

/// A request to the holder to release the role.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Handover {
    /// Who should get it next (`None`: whoever is best then).
    pub to: Option<String>,
    /// Why, in words for the log and the audit row.
    pub reason: String,
}

/// A change to the coordinator record.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum CoordinatorCommand {
    /// The leader grants the role: accepted when `epoch` is the record's
    /// epoch plus one and `renewals` is the count the leader saw.
    Grant {
        holder: String,
        epoch: u64,
        renewals: u64,
    },
    /// The holder extends its lease.
    Renew { holder: String, epoch: u64 },
    /// The leader asks the holder of `epoch` to step down.
    Handover {
        epoch: u64,
        to: Option<String>,
        reason: String,
    },
    /// The holder gives the role up (it stopped claiming first).
    Release { holder: String, epoch: u64 },
}

impl CoordinatorCommand {
    /// The method name, as the audit row and the log say it.
    pub fn method(&self) -> &'static str {
        match self {
            CoordinatorCommand::Grant { .. } => "coordinator.grant",
            CoordinatorCommand::Renew { .. } => "coordinator.renew",
            CoordinatorCommand::Handover { .. } => "coordinator.handover",
            CoordinatorCommand::Release { .. } => "coordinator.release",
        }
    }
}

impl CoordinatorRecord {
    /// Applies one command: whether it was accepted (a refused command
    /// changes nothing).
    pub fn apply(&mut self, command: &CoordinatorCommand) -> bool {
        match command {
            CoordinatorCommand::Grant {
                holder,
                epoch,
                renewals,
            } => {
                if *epoch != self.epoch.saturating_add(1) || *renewals != self.renewals {
                    return false;
                }
                *self = CoordinatorRecord {
                    holder: Some(holder.clone()),
                    epoch: *epoch,
                    renewals: 0,
                    handover: None,
                };
                true
            }
            CoordinatorCommand::Renew { holder, epoch } => {
                if !self.is_held_by(holder, *epoch) || self.handover.is_some() {
                    return false;
                }
                self.renewals = self.renewals.saturating_add(1);
                true
            }
            CoordinatorCommand::Handover { epoch, to, reason } => {
                if self.holder.is_none() || *epoch != self.epoch || self.handover.is_some() {
                    return false;
                }
                self.handover = Some(Handover {
                    to: to.clone(),
                    reason: reason.clone(),
                });
                true
            }
            CoordinatorCommand::Release { holder, epoch } => {
                if !self.is_held_by(holder, *epoch) {
                    return false;
                }
                // The handover stays: the leader reads whom it was meant for.
                self.holder = None;
                true
            }
        }
    }

    /// Whether `node_id` holds the role under `epoch`.
    pub fn is_held_by(&self, node_id: &str, epoch: u64) -> bool {
        self.holder.as_deref() == Some(node_id) && self.epoch == epoch
    }

    /// For older snapshots and states: the epoch is a counter from zero.
    pub fn is_never_granted(&self) -> bool {
        self.epoch == 0 && self.holder.is_none()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn grant(holder: &str, epoch: u64, renewals: u64) -> CoordinatorCommand {
        CoordinatorCommand::Grant {
            holder: holder.into(),
            epoch,
            renewals,
        }
    }

    fn renew(holder: &str, epoch: u64) -> CoordinatorCommand {
        CoordinatorCommand::Renew {
            holder: holder.into(),
            epoch,
        }
    }

    #[test]
    fn a_grant_takes_the_next_epoch_only() {
        let mut r = CoordinatorRecord::default();
        assert!(r.is_never_granted());
        assert!(!r.apply(&grant("n1", 2, 0)), "an epoch may not be skipped");
        assert!(r.apply(&grant("n1", 1, 0)));
        assert_eq!(r.holder.as_deref(), Some("n1"));
        assert_eq!(r.epoch, 1);
        assert!(!r.apply(&grant("n2", 1, 0)), "an epoch is granted once");
        assert!(r.apply(&grant("n2", 2, 0)));
        assert_eq!(r.epoch, 2);
    }

    #[test]
    fn a_renewal_between_the_decision_and_the_grant_voids_the_grant() {
        let mut r = CoordinatorRecord::default();
        assert!(r.apply(&grant("n1", 1, 0)));
        // The leader decided "expired" having seen 0 renewals...
        assert!(r.apply(&renew("n1", 1)));
        // ...but a renewal landed first: the grant changes nothing.
        assert!(!r.apply(&grant("n2", 2, 0)));
        assert_eq!(r.holder.as_deref(), Some("n1"));
        assert!(r.apply(&grant("n2", 2, 1)));
    }

    #[test]
    fn renewals_of_an_old_epoch_or_another_holder_are_refused() {
        let mut r = CoordinatorRecord::default();
        assert!(r.apply(&grant("n1", 1, 0)));
        assert!(r.apply(&grant("n2", 2, 0)));
        assert!(!r.apply(&renew("n1", 1)));
        assert!(!r.apply(&renew("n1", 2)));
        assert!(r.apply(&renew("n2", 2)));
        assert_eq!(r.renewals, 1);
    }

    #[test]
    fn after_a_handover_request_the_holder_can_only_release() {
        let mut r = CoordinatorRecord::default();
        assert!(r.apply(&grant("n1", 1, 0)));
        let handover = CoordinatorCommand::Handover {
            epoch: 1,
            to: Some("n2".into()),
            reason: "failback".into(),
        };
        assert!(r.apply(&handover));
        assert!(!r.apply(&handover), "asked once");
        assert!(!r.apply(&renew("n1", 1)));
        let release = CoordinatorCommand::Release {
            holder: "n1".into(),
            epoch: 1,
        };
        assert!(r.apply(&release));
        assert_eq!(r.holder, None);
        assert_eq!(
            r.handover.as_ref().and_then(|h| h.to.as_deref()),
            Some("n2")
        );
        assert!(!r.apply(&release), "released once");
        assert!(r.apply(&grant("n2", 2, 0)));
        assert_eq!(r.handover, None);
    }

    #[test]
    fn a_stale_release_does_not_free_a_newer_grant() {
        let mut r = CoordinatorRecord::default();
        assert!(r.apply(&grant("n1", 1, 0)));
        assert!(r.apply(&grant("n1", 2, 0)));
        let old = CoordinatorCommand::Release {
            holder: "n1".into(),
            epoch: 1,
        };
        assert!(!r.apply(&old));
        assert_eq!(r.holder.as_deref(), Some("n1"));
    }
}
