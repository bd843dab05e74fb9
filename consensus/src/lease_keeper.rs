//! The coordinator's lease at run time, on every member: the holder renews
//! and releases, the leader grants and asks for handovers, and every node
//! answers "who is coordinator" only from what it may say at that instant.
//!
//! One task per node (`spawn`) does all of it in a loop; the faces read the
//! answer through a `CoordinatorHandle`, built at the moment they ask:
//! - this node answers that it is coordinator only while its own lease is
//!   valid (`lease` explains the timing);
//! - it names another holder only once it has caught up with a leader
//!   since it started (a read index confirmed by a majority), while it
//!   knows a leader;
//! - it never names an epoch lower than one it named before.

use crate::boottime::BootTime;
use crate::client::{ClusterClient, Consistency};
use crate::command::{Command, Outcome, Proposal, Requester};
use crate::coordinator::{CoordinatorCommand, CoordinatorRecord};
use crate::lease::{best, ranks_before, LeaseSettings, RenewalStamp};
use crate::network::{leader_with_quorum, RaftTransport};
use crate::state_machine::SharedState;
use crate::types::{Member, Raft};
use std::collections::HashMap;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;
use tokio::sync::watch;

/// How this node sees the members as candidates for the role: given by the
/// daemon (its peer observations and its own PostgreSQL), or by a test.
pub trait Fitness: Send + Sync + 'static {
    /// Whether `member` is fit now as this node sees it: reachable and, for
    /// a data node, with its PostgreSQL up. Asked about this node itself,
    /// whether its own PostgreSQL is up (a witness: always).
    fn is_fit(&self, member: &Member) -> bool;
}

/// What a node answers about the coordinator at one instant.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct CoordinatorReport {
    /// The coordinator's node_id (`None`: none known at this instant).
    pub holder: Option<String>,
    pub epoch: Option<u64>,
    /// This node is the coordinator (its lease is valid now).
    pub is_self: bool,
    /// For this node as holder: how long its lease has left.
    pub lease_remaining: Option<Duration>,
    /// Caught up with a leader since it started.
    pub caught_up: bool,
}

/// This node's own lease.
#[derive(Debug, Clone, Copy)]
struct OwnLease {
    epoch: u64,
    valid_until: BootTime,
}

#[derive(Debug, Default)]
struct Claims {
    own: Option<OwnLease>,
    caught_up: bool,
    /// The (epoch, renewals) of the record last seen applied here, and
    /// when it was first seen: another holder is named only while its
    /// lease is seen renewed.
    seen: Option<((u64, u64), BootTime)>,
    /// Set by a clean stop: nothing is claimed from then on.
    stepping_down: bool,
    highest_reported: u64,
}

/// Reads the coordinator as this node may answer it; cheap to clone.
#[derive(Clone)]
pub struct CoordinatorHandle {
    node_id: String,
    claims: Arc<Mutex<Claims>>,
    shared: SharedState,
    raft: Raft,
    /// Told true once a stepping-down holder has released (or held nothing).
    released: watch::Receiver<bool>,
    /// How long another holder is named after its last renewal seen here.
    naming_window: Duration,
}

impl CoordinatorHandle {
    fn lock(&self) -> std::sync::MutexGuard<'_, Claims> {
        self.claims.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// The answer at this instant.
    pub fn report(&self) -> CoordinatorReport {
        let record = self.shared.read(|v| v.kv().coordinator().clone());
        let leader_known = self.raft.metrics().borrow().current_leader.is_some();
        let now = BootTime::now();
        let mut claims = self.lock();
        let caught_up = claims.caught_up;
        let mut report = CoordinatorReport {
            caught_up,
            ..Default::default()
        };
        let own = claims
            .own
            .filter(|own| !claims.stepping_down && now < own.valid_until)
            // A newer grant applied here means the lease was lost.
            .filter(|own| record.epoch <= own.epoch);
        if let Some(own) = own {
            report.holder = Some(self.node_id.clone());
            report.epoch = Some(own.epoch);
            report.is_self = true;
            report.lease_remaining = Some(own.valid_until.saturating_since(now));
        } else if caught_up && leader_known {
            // Seen renewed within a lease: a node cut off from the cluster
            // stops naming a holder it no longer hears of.
            let key = (record.epoch, record.renewals);
            if claims.seen.is_none_or(|(seen, _)| seen != key) {
                claims.seen = Some((key, now));
            }
            let renewed = claims
                .seen
                .is_some_and(|(_, at)| now.saturating_since(at) < self.naming_window);
            if let Some(holder) = record
                .holder
                .as_ref()
                .filter(|h| **h != self.node_id && renewed)
            {
                report.holder = Some(holder.clone());
                report.epoch = Some(record.epoch);
            }
        }
        match report.epoch {
            Some(epoch) if epoch < claims.highest_reported => {
                // Never an epoch lower than one said before.
                report.holder = None;
                report.epoch = None;
                report.is_self = false;
                report.lease_remaining = None;
            }
            Some(epoch) => claims.highest_reported = epoch,
            None => {}
        }
        report
    }

    /// The highest epoch this node applied (possibly stale; for metrics).
    pub fn applied_record(&self) -> CoordinatorRecord {
        self.shared.read(|v| v.kv().coordinator().clone())
    }

    /// Stops claiming at once and, when this node holds the role, commits
    /// a release so that nobody waits out the lease (a clean stop). Waits
    /// at most `timeout` for the release.
    pub async fn step_down(&self, timeout: Duration) {
        self.lock().stepping_down = true;
        let mut released = self.released.clone();
        let _ = tokio::time::timeout(timeout, released.wait_for(|r| *r)).await;
    }
}

/// What the keeper needs.
pub struct KeeperConfig {
    /// This node's node_id.
    pub node_id: String,
    pub settings: LeaseSettings,
}

/// Starts the keeper on the current tokio runtime (Raft's own).
pub fn spawn<T: RaftTransport>(
    client: ClusterClient<T>,
    shared: SharedState,
    stamp: RenewalStamp,
    config: KeeperConfig,
    fitness: Arc<dyn Fitness>,
) -> (CoordinatorHandle, tokio::task::JoinHandle<()>) {
    let claims = Arc::new(Mutex::new(Claims::default()));
    let (released_tx, released) = watch::channel(false);
    let handle = CoordinatorHandle {
        node_id: config.node_id.clone(),
        claims: claims.clone(),
        shared: shared.clone(),
        raft: client.raft().clone(),
        released,
        naming_window: config.settings.grant_wait(),
    };
    let keeper = Keeper {
        client,
        shared,
        stamp,
        node_id: config.node_id,
        settings: config.settings,
        fitness,
        claims,
        released: released_tx,
        last_renewal_sent: None,
        fit_since: HashMap::new(),
        suspects: HashMap::new(),
    };
    let task = tokio::spawn(keeper.run());
    (handle, task)
}

/// How often the keeper looks at the state when nothing wakes it.
const TICK: Duration = Duration::from_millis(50);

struct Keeper<T> {
    client: ClusterClient<T>,
    shared: SharedState,
    stamp: RenewalStamp,
    node_id: String,
    settings: LeaseSettings,
    fitness: Arc<dyn Fitness>,
    claims: Arc<Mutex<Claims>>,
    released: watch::Sender<bool>,
    last_renewal_sent: Option<BootTime>,
    /// Since when the leader has seen each member fit without a break.
    fit_since: HashMap<String, BootTime>,
    /// Holders whose lease ran out without a renewal, since when: not
    /// fit, whatever the peer statuses say yet (a dead node looks fit until
    /// `unreachable_after`), until this node's own observation has seen
    /// them unfit once, or `failback_after` has passed.
    suspects: HashMap<String, BootTime>,
}

impl<T: RaftTransport> Keeper<T> {
    fn lock(&self) -> std::sync::MutexGuard<'_, Claims> {
        self.claims.lock().unwrap_or_else(PoisonError::into_inner)
    }

    async fn run(mut self) {
        let mut applied = self.shared.subscribe();
        loop {
            tokio::select! {
                _ = tokio::time::sleep(TICK) => {}
                changed = applied.changed() => {
                    if changed.is_err() {
                        return;
                    }
                }
            }
            self.step().await;
        }
    }

    fn requester(&self) -> Requester {
        Requester {
            actor: format!("steep-repl@{}", self.node_id),
            client_addr: None,
            node_id: self.node_id.clone(),
        }
    }

    async fn propose(
        &self,
        command: CoordinatorCommand,
        timeout: Duration,
    ) -> Option<(bool, CoordinatorRecord)> {
        let proposal = Proposal {
            command: Command::Coordinator(command),
            request_id: None,
            requester: self.requester(),
        };
        match self.client.write(proposal, timeout).await {
            Ok((_, Outcome::Coordinator { accepted, record })) => Some((accepted, record)),
            _ => None,
        }
    }

    async fn step(&mut self) {
        let record = self.shared.read(|v| v.kv().coordinator().clone());
        {
            let now = BootTime::now();
            let mut claims = self.lock();
            let key = (record.epoch, record.renewals);
            if claims.seen.is_none_or(|(seen, _)| seen != key) {
                claims.seen = Some((key, now));
            }
        }
        if !self.lock().caught_up {
            let timeout = self.settings.renew_every();
            if self
                .client
                .read_barrier(Consistency::Linearizable, timeout)
                .await
                .is_ok()
            {
                self.lock().caught_up = true;
            }
        }
        self.hold().await;
        self.lead().await;
    }

    /// This node's duties as holder (or former holder).
    async fn hold(&mut self) {
        let record = self.shared.read(|v| v.kv().coordinator().clone());
        let me = self.member(&self.node_id);
        let stepping_down = self.lock().stepping_down;
        let mine = record.holder.as_deref() == Some(self.node_id.as_str());
        if !mine {
            // Released, or granted elsewhere after the lease ran out: the
            // local record only moves forward.
            self.lock().own = None;
            if stepping_down {
                self.released.send_replace(true);
            }
            return;
        }
        let unfit = me.as_ref().is_none_or(|m| !self.fitness.is_fit(m));
        if stepping_down || record.handover.is_some() || unfit {
            // Stop claiming first, then commit the release.
            self.lock().own = None;
            let release = CoordinatorCommand::Release {
                holder: self.node_id.clone(),
                epoch: record.epoch,
            };
            if let Some((accepted, after)) = self.propose(release, self.settings.lease).await {
                if accepted || !after.is_held_by(&self.node_id, record.epoch) {
                    self.released.send_replace(true);
                }
            }
            return;
        }
        let now = BootTime::now();
        let own = self.lock().own;
        let due = match (own, self.last_renewal_sent) {
            (Some(own), Some(sent)) if own.epoch == record.epoch => {
                now.saturating_since(sent) >= self.settings.renew_every()
            }
            _ => true,
        };
        if !due {
            return;
        }
        let sent = BootTime::now();
        self.last_renewal_sent = Some(sent);
        let renew = CoordinatorCommand::Renew {
            holder: self.node_id.clone(),
            epoch: record.epoch,
        };
        match self.propose(renew, self.settings.renew_every()).await {
            Some((true, _)) => {
                let mut claims = self.lock();
                if !claims.stepping_down {
                    claims.own = Some(OwnLease {
                        epoch: record.epoch,
                        valid_until: sent + self.settings.holder_validity(),
                    });
                }
            }
            // Refused: the record moved on (a newer grant, a handover).
            Some((false, _)) => self.lock().own = None,
            // No answer: the lease runs out unless a later renewal lands.
            None => {}
        }
    }

    fn member(&self, node_id: &str) -> Option<Member> {
        let metrics = self.client.raft().metrics().borrow().clone();
        let found = metrics
            .membership_config
            .membership()
            .nodes()
            .find(|(_, m)| m.node_id == node_id)
            .map(|(_, m)| m.clone());
        found
    }

    /// The leader's duties: grant when the role is free or its lease ran
    /// out, ask for a handover when a better member has been fit long enough.
    async fn lead(&mut self) {
        let raft = self.client.raft().clone();
        if leader_with_quorum(&raft).is_err() {
            self.fit_since.clear();
            return;
        }
        let metrics = raft.metrics().borrow().clone();
        let membership = metrics.membership_config.membership().clone();
        let voters: Vec<Member> = membership
            .voter_ids()
            .filter_map(|id| membership.get_node(&id).cloned())
            .collect();
        let now = BootTime::now();
        let failback_after = self.settings.failback_after;
        let fitness = self.fitness.clone();
        self.suspects.retain(|id, since| {
            let seen_unfit = voters
                .iter()
                .find(|m| &m.node_id == id)
                .is_none_or(|m| !fitness.is_fit(m));
            !seen_unfit && now.saturating_since(*since) < failback_after
        });
        for m in &voters {
            if self.fitness.is_fit(m) && !self.suspects.contains_key(&m.node_id) {
                self.fit_since.entry(m.node_id.clone()).or_insert(now);
            } else {
                self.fit_since.remove(&m.node_id);
            }
        }
        self.fit_since
            .retain(|id, _| voters.iter().any(|m| &m.node_id == id));
        let fit_for = |id: &str| {
            self.fit_since
                .get(id)
                .map(|since| now.saturating_since(*since))
        };
        let eligible: Vec<&Member> = voters
            .iter()
            .filter(|m| fit_for(&m.node_id).is_some_and(|d| d >= self.settings.settle))
            .collect();
        let record = self.shared.read(|v| v.kv().coordinator().clone());
        let expired = now.saturating_since(self.stamp.get()) >= self.settings.grant_wait();
        match &record.holder {
            None => {
                let wanted = record
                    .handover
                    .as_ref()
                    .and_then(|h| h.to.as_deref())
                    .and_then(|to| eligible.iter().find(|m| m.node_id == to).copied());
                if let Some(target) = wanted.or_else(|| best(eligible.iter().copied())) {
                    self.grant(&record, target).await;
                }
            }
            Some(holder) if expired => {
                // A holder whose lease ran out without a renewal is not
                // working, whatever the peer statuses say yet (a dead node
                // looks fit until unreachable_after): another fit member
                // first, the same one only when it is the only choice.
                let others = eligible.iter().copied().filter(|m| &m.node_id != holder);
                if let Some(target) = best(others).or_else(|| best(eligible.iter().copied())) {
                    let holder = holder.clone();
                    if target.node_id != holder {
                        self.fit_since.remove(&holder);
                        self.suspects.insert(holder, now);
                    }
                    self.grant(&record, target).await;
                }
            }
            Some(holder) if record.handover.is_none() => {
                // Failback: every member fit for failback_after, and a
                // better one than the holder among them.
                let all_settled = voters.iter().all(|m| {
                    fit_for(&m.node_id).is_some_and(|d| d >= self.settings.failback_after)
                });
                let holder_member = voters.iter().find(|m| &m.node_id == holder);
                let Some(better) = best(eligible.iter().copied()) else {
                    return;
                };
                let outranks = holder_member.is_none_or(|h| ranks_before(better, h));
                if all_settled && outranks {
                    let handover = CoordinatorCommand::Handover {
                        epoch: record.epoch,
                        to: Some(better.node_id.clone()),
                        reason: format!(
                            "failback: {} (priority {}) has been fit for {:?}",
                            better.node_id, better.priority, self.settings.failback_after
                        ),
                    };
                    self.propose(handover, self.settings.lease).await;
                }
            }
            Some(_) => {}
        }
    }

    async fn grant(&self, record: &CoordinatorRecord, target: &Member) {
        let grant = CoordinatorCommand::Grant {
            holder: target.node_id.clone(),
            epoch: record.epoch.saturating_add(1),
            renewals: record.renewals,
        };
        self.propose(grant, self.settings.lease).await;
    }
}
