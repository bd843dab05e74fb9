//! The coordinator lease on real openraft nodes and the real file store
//! (docs/protocol.md, "The coordinator lease"), under cuts, held messages,
//! kills, unfit holders and failback.
//!
//! Every node's answer is polled all along the run (every few ms, each with
//! its invoke and completion instants) and the whole record is checked, not
//! only the end:
//! - no two nodes claim one epoch;
//! - no claim starts after an answer naming a newer epoch completed
//!   (anywhere): the real-time order of claims agrees with the epochs;
//! - no node ever names an epoch lower than one it named before.

mod common;

use common::{seed, Cluster};
use std::collections::{BTreeMap, BTreeSet};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use steep_repl_consensus::claims;
use steep_repl_consensus::lease::LeaseSettings;
use steep_repl_consensus::lease_keeper::{
    self, CoordinatorHandle, CoordinatorReport, Fitness, KeeperConfig,
};
use steep_repl_consensus::{AppliedEvent, Member};

/// The test's leases: 1 s (the Raft timing of `common` is 100 ms heartbeats
/// and 400-800 ms elections).
fn settings() -> LeaseSettings {
    let mut s = LeaseSettings::new(Duration::from_secs(1), 0.01, Duration::from_secs(2));
    s.settle = Duration::from_millis(500);
    s
}

/// Which members the nodes see unfit (PostgreSQL down), by node_id.
#[derive(Default)]
struct TestFitness {
    unfit: Mutex<BTreeSet<String>>,
}

impl TestFitness {
    fn set_fit(&self, node_id: &str, fit: bool) {
        let mut unfit = self.unfit.lock().unwrap();
        if fit {
            unfit.remove(node_id);
        } else {
            unfit.insert(node_id.to_string());
        }
    }
}

impl Fitness for TestFitness {
    fn is_fit(&self, member: &Member) -> bool {
        !self.unfit.lock().unwrap().contains(&member.node_id)
    }
}

/// One answer as a client saw it.
#[derive(Debug, Clone)]
struct Answer {
    node: String,
    invoked: Instant,
    completed: Instant,
    report: CoordinatorReport,
}

struct Run {
    cluster: Cluster,
    fitness: Arc<TestFitness>,
    handles: Vec<Option<CoordinatorHandle>>,
    tasks: Vec<tokio::task::JoinHandle<()>>,
    answers: Arc<Mutex<Vec<Answer>>>,
    poller: Option<tokio::task::JoinHandle<()>>,
    stop: Arc<std::sync::atomic::AtomicBool>,
    seed: u64,
}

impl Run {
    async fn start(name: &str, priorities: &[u8]) -> Run {
        let seed = seed(name);
        let cluster = Cluster::start_with_priorities(priorities, seed).await;
        let fitness = Arc::new(TestFitness::default());
        let mut handles = Vec::new();
        let mut tasks = Vec::new();
        for node in &cluster.nodes {
            let (handle, task) = lease_keeper::spawn(
                node.client.clone(),
                node.state.clone(),
                node.stamp.clone(),
                KeeperConfig {
                    node_id: node.name.clone(),
                    settings: settings(),
                },
                fitness.clone(),
            );
            handles.push(Some(handle));
            tasks.push(task);
        }
        let answers = Arc::new(Mutex::new(Vec::new()));
        let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
        let poller = {
            let handles: Vec<(String, CoordinatorHandle)> = cluster
                .nodes
                .iter()
                .zip(&handles)
                .filter_map(|(n, h)| h.clone().map(|h| (n.name.clone(), h)))
                .collect();
            let answers = answers.clone();
            let stop = stop.clone();
            tokio::spawn(async move {
                while !stop.load(std::sync::atomic::Ordering::SeqCst) {
                    for (name, handle) in &handles {
                        let invoked = Instant::now();
                        let report = handle.report();
                        let completed = Instant::now();
                        answers.lock().unwrap().push(Answer {
                            node: name.clone(),
                            invoked,
                            completed,
                            report,
                        });
                    }
                    tokio::time::sleep(Duration::from_millis(5)).await;
                }
            })
        };
        Run {
            cluster,
            fitness,
            handles,
            tasks,
            answers,
            poller: Some(poller),
            stop,
            seed,
        }
    }

    fn index_of(&self, node_id: &str) -> usize {
        self.cluster
            .nodes
            .iter()
            .position(|n| n.name == node_id)
            .expect("a node of the run")
    }

    /// The holder every live node names, once they all agree.
    async fn agreed_holder(&self, within: Duration) -> (String, u64) {
        let deadline = Instant::now() + within;
        loop {
            let reports: Vec<CoordinatorReport> =
                self.handles.iter().flatten().map(|h| h.report()).collect();
            let first = reports[0].clone();
            let claims = reports.iter().filter(|r| r.is_self).count();
            if first.holder.is_some()
                && claims == 1
                && reports
                    .iter()
                    .all(|r| r.holder == first.holder && r.epoch == first.epoch)
            {
                return (first.holder.unwrap_or_default(), first.epoch.unwrap_or(0));
            }
            assert!(
                Instant::now() < deadline,
                "the nodes did not agree on a coordinator within {within:?}: {reports:?}; {}",
                self.cluster.describe()
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// Waits until `node` answers that it is coordinator.
    async fn claimed_by(&self, node: &str, within: Duration) -> u64 {
        let handle = self.handles[self.index_of(node)].clone().expect("alive");
        let deadline = Instant::now() + within;
        loop {
            let r = handle.report();
            if r.is_self {
                return r.epoch.unwrap_or(0);
            }
            assert!(
                Instant::now() < deadline,
                "{node} did not become coordinator within {within:?}: {r:?}; {}",
                self.cluster.describe()
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// Kills node `i`: its keeper and its Raft stop answering.
    async fn kill(&mut self, i: usize) {
        // The survivors see it unreachable.
        self.fitness.set_fit(&self.cluster.nodes[i].name, false);
        self.tasks[i].abort();
        self.handles[i] = None;
        self.cluster.kill(i).await;
    }

    /// Stops polling and checks the whole record.
    async fn finish(mut self) -> Vec<Answer> {
        self.stop.store(true, std::sync::atomic::Ordering::SeqCst);
        if let Some(p) = self.poller.take() {
            let _ = p.await;
        }
        let answers = self.answers.lock().unwrap().clone();
        if let Err(e) = check_claims(&answers) {
            panic!("seed {}: {e}", self.seed);
        }
        let claims = answers.iter().filter(|a| a.report.is_self).count();
        eprintln!(
            "seed {}: {} answers checked, {} of them claims",
            self.seed,
            answers.len(),
            claims
        );
        for t in &self.tasks {
            t.abort();
        }
        self.cluster.shutdown().await;
        answers
    }
}

/// The shared checker over the whole record of answers.
fn check_claims(answers: &[Answer]) -> Result<(), String> {
    let history: Vec<claims::Answer> = answers
        .iter()
        .map(|a| claims::Answer {
            node: a.node.clone(),
            invoked: a.invoked,
            completed: a.completed,
            holder: a.report.holder.clone(),
            epoch: a.report.epoch,
            is_self: a.report.is_self,
        })
        .collect();
    claims::check(&history).map(|_| ())
}

fn claimants(answers: &[Answer]) -> BTreeMap<u64, String> {
    answers
        .iter()
        .filter(|a| a.report.is_self)
        .filter_map(|a| a.report.epoch.map(|e| (e, a.node.clone())))
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_coordinator_under_cuts_held_messages_and_isolation() {
    let run = Run::start("lease-cuts", &[50, 50, 50]).await;
    let (first, epoch) = run.agreed_holder(Duration::from_secs(10)).await;
    assert!(epoch >= 1);
    let ids = run.cluster.ids();
    let id = |name: &str| run.cluster.nodes[run.index_of(name)].id;

    // Asymmetric: the two others cannot reach each other, both reach the
    // holder.
    let others: Vec<String> = run
        .cluster
        .nodes
        .iter()
        .map(|n| n.name.clone())
        .filter(|n| *n != first)
        .collect();
    run.cluster.net.cut(id(&others[0]), id(&others[1]));
    run.cluster.net.cut(id(&others[1]), id(&others[0]));
    tokio::time::sleep(Duration::from_secs(3)).await;
    run.cluster.net.heal();
    let (holder, _) = run.agreed_holder(Duration::from_secs(10)).await;

    // The holder's messages held (as a frozen process's would be) for
    // longer than the lease, then delivered late.
    run.cluster.net.pause(id(&holder));
    tokio::time::sleep(Duration::from_secs(3)).await;
    let during = run.handles[run.index_of(&holder)]
        .as_ref()
        .expect("alive")
        .report();
    assert!(
        !during.is_self,
        "{holder} still claims with its messages held for 3 s: {during:?}"
    );
    run.cluster.net.resume(id(&holder));
    let (holder, _) = run.agreed_holder(Duration::from_secs(10)).await;

    // The holder isolated: a minority of one stops claiming within its
    // lease; the majority names a new one.
    run.cluster.net.isolate(id(&holder), &ids);
    tokio::time::sleep(settings().lease + Duration::from_millis(300)).await;
    let isolated = run.handles[run.index_of(&holder)]
        .as_ref()
        .expect("alive")
        .report();
    assert!(
        !isolated.is_self,
        "{holder} still claims {:?} after its lease, cut off from the majority",
        isolated
    );
    tokio::time::sleep(Duration::from_secs(3)).await;
    run.cluster.net.heal();
    let (_, last_epoch) = run.agreed_holder(Duration::from_secs(10)).await;
    assert!(
        last_epoch > epoch,
        "the isolation of {holder} moved nothing"
    );
    let answers = run.finish().await;
    assert!(
        claimants(&answers).len() >= 2,
        "only one epoch was ever claimed"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_killed_coordinator_is_replaced_and_an_unfit_one_hands_over() {
    let mut run = Run::start("lease-kill", &[50, 50, 50]).await;
    let (first, epoch) = run.agreed_holder(Duration::from_secs(10)).await;
    let killed_at = Instant::now();
    let victim = run.index_of(&first);
    run.kill(victim).await;
    let (second, second_epoch) = run.agreed_holder(Duration::from_secs(10)).await;
    eprintln!(
        "{first} killed: {second} named by every survivor after {:?}",
        killed_at.elapsed()
    );
    assert_ne!(second, first);
    assert!(second_epoch > epoch);

    // PostgreSQL lost under the holder: it stops claiming and releases;
    // the other survivor takes over without waiting out the lease.
    run.fitness.set_fit(&second, false);
    let third = run
        .cluster
        .nodes
        .iter()
        .map(|n| n.name.clone())
        .find(|n| *n != first && *n != second)
        .expect("a third node");
    let third_epoch = run.claimed_by(&third, Duration::from_secs(10)).await;
    assert!(third_epoch > second_epoch);
    let events = run.cluster.nodes[run.index_of(&third)]
        .state
        .events_after(None)
        .unwrap_or_default();
    assert!(
        events.iter().any(|a| matches!(
            &a.event,
            AppliedEvent::Coordinator { method: "coordinator.release", previous, .. }
                if previous.holder.as_deref() == Some(second.as_str())
        )),
        "{second} lost its PostgreSQL but never released the role"
    );
    run.finish().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_highest_priority_member_gets_the_role_back_by_release() {
    // n1 has the highest priority.
    let run = Run::start("lease-failback", &[90, 50, 10]).await;
    let (first, _) = run.agreed_holder(Duration::from_secs(10)).await;
    assert_eq!(first, "n1", "the highest priority is chosen first");
    run.fitness.set_fit("n1", false);
    let epoch = run.claimed_by("n2", Duration::from_secs(10)).await;
    run.fitness.set_fit("n1", true);
    // Back once every member has been fit for failback_after (2 s here).
    let back = run.claimed_by("n1", Duration::from_secs(15)).await;
    assert!(back > epoch);
    let events = run.cluster.nodes[0]
        .state
        .events_after(None)
        .unwrap_or_default();
    let handover = events.iter().position(|a| {
        matches!(
            &a.event,
            AppliedEvent::Coordinator { method: "coordinator.handover", record, .. }
                if record.holder.as_deref() == Some("n2")
        )
    });
    let release = events.iter().position(|a| {
        matches!(
            &a.event,
            AppliedEvent::Coordinator { method: "coordinator.release", previous, .. }
                if previous.holder.as_deref() == Some("n2")
        )
    });
    assert!(
        matches!((handover, release), (Some(h), Some(r)) if h < r),
        "n2 did not hand the role over by release: handover at {handover:?}, release at {release:?}"
    );
    let answers = run.finish().await;
    let by_epoch = claimants(&answers);
    assert_eq!(by_epoch.values().last().map(String::as_str), Some("n1"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_clean_stop_releases_the_role_at_once() {
    let run = Run::start("lease-stop", &[50, 50, 50]).await;
    let (first, epoch) = run.agreed_holder(Duration::from_secs(10)).await;
    let handle = run.handles[run.index_of(&first)].clone().expect("alive");
    handle.step_down(Duration::from_secs(2)).await;
    assert!(!handle.report().is_self);
    let record = handle.applied_record();
    assert!(
        !record.is_held_by(&first, epoch),
        "{first} stepped down but the record still names it: {record:?}"
    );
    let answers = run.finish().await;
    assert!(!answers.is_empty());
}
