//! Which members this node sees fit for the coordinator role, from its own
//! observations: its PostgreSQL for itself, the peers' heartbeats for the
//! others (reachable, PostgreSQL up). The lease keeper asks; the leader's
//! answers decide grants and failback.

use crate::health_state::{PgVerdict, SharedHealth};
use std::time::Instant;
use steep_repl_consensus::lease_keeper::Fitness;
use steep_repl_consensus::{Member, Role};

pub struct HealthFitness {
    pub health: SharedHealth,
    pub node_id: String,
}

impl Fitness for HealthFitness {
    fn is_fit(&self, member: &Member) -> bool {
        // The stored snapshot: asking the member for the coordinator here
        // would call back into the keeper that is asking.
        let s = self.health.load_stored();
        if member.node_id == self.node_id {
            return member.role == Role::Witness
                || s.postgres_verdict(Instant::now(), self.health.stale_after)
                    == PgVerdict::Usable;
        }
        s.peers
            .iter()
            .find(|p| p.node_id.as_deref() == Some(member.node_id.as_str()))
            .is_some_and(|p| {
                p.status.answering()
                    && (member.role == Role::Witness || p.postgresql_up == Some(true))
            })
    }
}
