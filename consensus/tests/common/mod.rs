//! An in-process cluster for the consensus tests: real openraft nodes on
//! the real file store (one temporary directory each), joined by a `Router`
//! the test can cut, split and pause at any moment, concurrent clients that
//! record what they asked and what they were told, and a linearizability
//! check of that record with stateright's `LinearizabilityTester`.
//!
//! Faults are simulated in the router, the only way messages travel:
//! - a cut link `A -> B` drops what A sends to B: the sender is told
//!   `Unreachable` at once, or waits out its timeout and is told `Timeout`
//!   (a coin chooses, so both of the client's paths are exercised); when
//!   only the way back `B -> A` is cut, the message is delivered and acted
//!   on but its answer is lost (`Timeout` after the wait);
//! - a paused node's messages, both ways, are held until it resumes (then
//!   delivered late, like after a long GC pause) or until the sender's
//!   timeout passes (then dropped, `Timeout`); its clients stall;
//! - a node that was shut down is `Unreachable`.

#![allow(dead_code)] // each test binary uses a part of the harness

use openraft::error::Fatal;
use openraft::SnapshotPolicy;
use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};
use std::path::PathBuf;
pub use steep_repl_tests::history::*;

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use steep_repl_consensus::client::{ClientError, ClusterClient, Consistency};
use steep_repl_consensus::network::{serve, Network, RaftTransport, RpcKind, TransportError};
use steep_repl_consensus::types::Raft;
use steep_repl_consensus::{Command, Member, Proposal, RaftId, Requester, Role};
use tokio::sync::watch;

// ---------------------------------------------------------------------------
// Seeds
// ---------------------------------------------------------------------------

/// The seed of a test: `STEEP_TEST_SEED` when set (to replay a failure's
/// schedule of faults and operations), a fresh one otherwise. Printed.
pub fn seed(test: &str) -> u64 {
    let seed = match std::env::var("STEEP_TEST_SEED") {
        Ok(s) => s
            .trim()
            .parse()
            .expect("STEEP_TEST_SEED must be an unsigned integer"),
        Err(_) => fastrand::u64(..),
    };
    eprintln!("[{test}] seed {seed} (replay with STEEP_TEST_SEED={seed})");
    seed
}

// ---------------------------------------------------------------------------
// The network
// ---------------------------------------------------------------------------

/// What the router knows and what the test has broken.
struct NetState {
    /// The running nodes, by Raft id.
    rafts: HashMap<RaftId, Raft>,
    /// Node names for messages, by Raft id.
    names: HashMap<RaftId, String>,
    /// Directed links that drop everything: (from, to).
    cut: HashSet<(RaftId, RaftId)>,
    paused: HashSet<RaftId>,
    /// Chooses between `Unreachable` and `Timeout` for a dropped message.
    coin: fastrand::Rng,
    /// Messages `serve` could not read: a bug, reported by `Cluster::check`.
    errors: Vec<String>,
    /// How many messages were dropped, answered late, or lost on the way back.
    dropped_unreachable: u64,
    dropped_timeout: u64,
    answers_lost: u64,
    held: u64,
}

/// The shared network; every node's `Router` points at it.
pub struct Net {
    state: Mutex<NetState>,
    /// Bumped at every change of cuts or pauses: held messages wait on it.
    changed: watch::Sender<u64>,
}

impl Net {
    fn new(seed: u64) -> Arc<Net> {
        Arc::new(Net {
            state: Mutex::new(NetState {
                rafts: HashMap::new(),
                names: HashMap::new(),
                cut: HashSet::new(),
                paused: HashSet::new(),
                coin: fastrand::Rng::with_seed(seed),
                errors: Vec::new(),
                dropped_unreachable: 0,
                dropped_timeout: 0,
                answers_lost: 0,
                held: 0,
            }),
            changed: watch::channel(0).0,
        })
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, NetState> {
        // A panic while holding the lock is a test failure already.
        self.state.lock().unwrap()
    }

    fn bump(&self) {
        self.changed.send_modify(|v| *v += 1);
    }

    /// Drops everything `from` sends to `to` (one direction only).
    pub fn cut(&self, from: RaftId, to: RaftId) {
        self.lock().cut.insert((from, to));
        self.bump();
    }

    /// Cuts every link between nodes of different groups, both ways.
    pub fn partition(&self, groups: &[Vec<RaftId>]) {
        {
            let mut st = self.lock();
            for (i, a) in groups.iter().enumerate() {
                for (j, b) in groups.iter().enumerate() {
                    if i != j {
                        for x in a {
                            for y in b {
                                st.cut.insert((*x, *y));
                            }
                        }
                    }
                }
            }
        }
        self.bump();
    }

    /// Cuts `node` from everyone in `others`, both ways.
    pub fn isolate(&self, node: RaftId, others: &[RaftId]) {
        let rest: Vec<RaftId> = others.iter().copied().filter(|o| *o != node).collect();
        self.partition(&[vec![node], rest]);
    }

    pub fn pause(&self, node: RaftId) {
        self.lock().paused.insert(node);
        self.bump();
    }

    pub fn resume(&self, node: RaftId) {
        self.lock().paused.remove(&node);
        self.bump();
    }

    pub fn is_paused(&self, node: RaftId) -> bool {
        self.lock().paused.contains(&node)
    }

    /// Restores every link and resumes every node.
    pub fn heal(&self) {
        {
            let mut st = self.lock();
            st.cut.clear();
            st.paused.clear();
        }
        self.bump();
    }

    /// A one-line account of what the network did.
    pub fn summary(&self) -> String {
        let st = self.lock();
        format!(
            "network: {} dropped as unreachable, {} dropped after a timeout, {} answers lost on the way back, {} held by a pause",
            st.dropped_unreachable, st.dropped_timeout, st.answers_lost, st.held
        )
    }

    pub fn errors(&self) -> Vec<String> {
        self.lock().errors.clone()
    }

    fn register(&self, id: RaftId, name: &str, raft: Raft) {
        let mut st = self.lock();
        st.rafts.insert(id, raft);
        st.names.insert(id, name.to_string());
    }

    fn unregister(&self, id: RaftId) {
        self.lock().rafts.remove(&id);
    }

    /// Waits while `a` or `b` is paused; false when `deadline` came first.
    async fn wait_unpaused(&self, a: RaftId, b: RaftId, deadline: tokio::time::Instant) -> bool {
        let mut rx = self.changed.subscribe();
        let mut counted = false;
        loop {
            {
                let mut st = self.lock();
                if !st.paused.contains(&a) && !st.paused.contains(&b) {
                    return true;
                }
                if !counted {
                    st.held += 1;
                    counted = true;
                }
            }
            match tokio::time::timeout_at(deadline, rx.changed()).await {
                Ok(Ok(())) => continue,
                // The sender lives as long as `self`; a timeout ends the wait.
                _ => return false,
            }
        }
    }
}

/// One node's way to the others (openraft's transport and the client's).
#[derive(Clone)]
pub struct Router {
    from: RaftId,
    net: Arc<Net>,
}

impl Router {
    /// A dropped message: `Unreachable` now, or `Timeout` at the deadline.
    async fn drop_message(
        &self,
        deadline: tokio::time::Instant,
        timeout: Duration,
    ) -> TransportError {
        let unreachable = {
            let mut st = self.net.lock();
            let unreachable = st.coin.bool();
            if unreachable {
                st.dropped_unreachable += 1;
            } else {
                st.dropped_timeout += 1;
            }
            unreachable
        };
        if unreachable {
            TransportError::Unreachable("connection refused (test network cut)".into())
        } else {
            tokio::time::sleep_until(deadline).await;
            TransportError::Timeout(timeout)
        }
    }
}

impl RaftTransport for Router {
    async fn call(
        &self,
        target: RaftId,
        _member: &Member,
        kind: RpcKind,
        payload: Vec<u8>,
        timeout: Duration,
    ) -> Result<Vec<u8>, TransportError> {
        let deadline = tokio::time::Instant::now() + timeout;
        if !self.net.wait_unpaused(self.from, target, deadline).await {
            return Err(TransportError::Timeout(timeout));
        }
        let raft = {
            let st = self.net.lock();
            if st.cut.contains(&(self.from, target)) {
                None
            } else {
                st.rafts.get(&target).cloned()
            }
        };
        let Some(raft) = raft else {
            return Err(self.drop_message(deadline, timeout).await);
        };
        let reply = match tokio::time::timeout_at(deadline, serve(&raft, kind, &payload)).await {
            Ok(Ok(bytes)) => bytes,
            Ok(Err(malformed)) => {
                let what = malformed.to_string();
                self.net.lock().errors.push(what.clone());
                return Err(TransportError::Refused(what));
            }
            Err(_) => return Err(TransportError::Timeout(timeout)),
        };
        // The answer travels back: it is lost when that way is cut now, and
        // held while either end is paused.
        if !self.net.wait_unpaused(self.from, target, deadline).await {
            return Err(TransportError::Timeout(timeout));
        }
        let back_cut = self.net.lock().cut.contains(&(target, self.from));
        if back_cut {
            self.net.lock().answers_lost += 1;
            tokio::time::sleep_until(deadline).await;
            return Err(TransportError::Timeout(timeout));
        }
        Ok(reply)
    }
}

// ---------------------------------------------------------------------------
// The cluster
// ---------------------------------------------------------------------------

/// Raft timings short enough for tests: heartbeat 100 ms, elections after
/// 400-800 ms; snapshots every 150 entries keeping 30 behind them, so a
/// follower cut off for a while is brought back by a snapshot.
pub fn raft_config() -> Arc<openraft::Config> {
    let config = openraft::Config {
        cluster_name: "steep-test".into(),
        heartbeat_interval: 100,
        election_timeout_min: 400,
        election_timeout_max: 800,
        snapshot_policy: SnapshotPolicy::LogsSinceLast(150),
        max_in_snapshot_log_to_keep: 30,
        purge_batch_size: 16,
        ..Default::default()
    };
    Arc::new(config.validate().expect("the test Raft config is valid"))
}

/// One member: its Raft, its client, its store directory.
#[derive(Clone)]
pub struct Node {
    pub name: String,
    pub id: RaftId,
    pub raft: Raft,
    pub client: ClusterClient<Router>,
    pub state: steep_repl_consensus::state_machine::SharedState,
    /// When a coordinator renewal was last appended to this node's log.
    pub stamp: steep_repl_consensus::lease::RenewalStamp,
    pub dir: PathBuf,
}

impl Node {
    /// The value of `key` in this node's applied state (a local read).
    pub fn local_get(&self, key: &str) -> Option<u64> {
        self.state.read(|view| view.kv().get(key).map(value_to_int))
    }

    /// This node's whole applied map and applied log index.
    pub fn local_snapshot(&self) -> (BTreeMap<String, u64>, Option<u64>) {
        let map = self.state.read(|view| {
            view.kv()
                .entries()
                .iter()
                .map(|(k, v)| (k.clone(), value_to_int(v)))
                .collect()
        });
        let applied = self.raft.metrics().borrow().last_applied.map(|l| l.index);
        (map, applied)
    }
}

pub struct Cluster {
    pub net: Arc<Net>,
    pub nodes: Vec<Node>,
    members: BTreeMap<RaftId, Member>,
    /// Kept so the directories live as long as the cluster.
    _dirs: Vec<tempfile::TempDir>,
    config: Arc<openraft::Config>,
}

fn member(name: &str) -> Member {
    Member {
        node_id: name.to_string(),
        grpc: format!("{name}.test:50051"),
        priority: 50,
        role: Role::Data,
    }
}

async fn start_node(
    net: &Arc<Net>,
    config: &Arc<openraft::Config>,
    name: &str,
    dir: PathBuf,
) -> Node {
    let (identity, log, sm) = steep_repl_consensus::store::open(&dir)
        .unwrap_or_else(|e| panic!("cannot open the store of {name}: {e}"));
    let state = sm.shared();
    let stamp = log.renewal_stamp();
    let id = identity.raft_id;
    let router = Router {
        from: id,
        net: net.clone(),
    };
    let raft = Raft::new(id, config.clone(), Network::new(router.clone()), log, sm)
        .await
        .unwrap_or_else(|e: Fatal<RaftId>| panic!("cannot start the Raft of {name}: {e}"));
    net.register(id, name, raft.clone());
    Node {
        name: name.to_string(),
        id,
        client: ClusterClient::new(raft.clone(), router),
        raft,
        state,
        stamp,
        dir,
    }
}

impl Cluster {
    /// Starts `n` members `n1..=nN` and initialises the cluster on `n1`.
    pub async fn start(n: usize, seed: u64) -> Cluster {
        Cluster::start_with_priorities(&vec![50; n], seed).await
    }

    /// Starts one member per priority, `n1` with the first.
    pub async fn start_with_priorities(priorities: &[u8], seed: u64) -> Cluster {
        let n = priorities.len();
        let net = Net::new(seed);
        let config = raft_config();
        let mut dirs = Vec::new();
        let mut nodes = Vec::new();
        for i in 1..=n {
            let dir = tempfile::Builder::new()
                .prefix(&format!("steep-raft-n{i}-"))
                .tempdir()
                .expect("a temporary directory");
            let store = dir.path().join("raft");
            nodes.push(start_node(&net, &config, &format!("n{i}"), store).await);
            dirs.push(dir);
        }
        let members: BTreeMap<RaftId, Member> = nodes
            .iter()
            .zip(priorities)
            .map(|(n, p)| {
                let mut m = member(&n.name);
                m.priority = *p;
                (n.id, m)
            })
            .collect();
        nodes[0]
            .raft
            .initialize(members.clone())
            .await
            .expect("n1 initialises the cluster");
        let cluster = Cluster {
            net,
            nodes,
            members,
            _dirs: dirs,
            config,
        };
        cluster.wait_for_everyone(Duration::from_secs(10)).await;
        cluster
    }

    /// Waits until every node knows the membership and follows one leader
    /// (before that, a node answers `NotAMember`).
    pub async fn wait_for_everyone(&self, within: Duration) {
        let leader = self.wait_for_leader(within).await;
        let deadline = Instant::now() + within;
        while !self.nodes.iter().all(|n| {
            let m = n.raft.metrics().borrow().clone();
            m.current_leader == Some(leader)
                && m.membership_config.membership().get_node(&n.id).is_some()
        }) {
            assert!(
                Instant::now() < deadline,
                "not every node knows the cluster within {within:?}: {}",
                self.describe()
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    pub fn ids(&self) -> Vec<RaftId> {
        self.nodes.iter().map(|n| n.id).collect()
    }

    pub fn name_of(&self, id: RaftId) -> &str {
        self.nodes
            .iter()
            .find(|n| n.id == id)
            .map(|n| n.name.as_str())
            .unwrap_or("?")
    }

    /// The leader a majority of the nodes currently agree on, if any.
    pub fn leader(&self) -> Option<RaftId> {
        let mut votes: HashMap<RaftId, usize> = HashMap::new();
        for n in &self.nodes {
            if let Some(l) = n.raft.metrics().borrow().current_leader {
                *votes.entry(l).or_default() += 1;
            }
        }
        votes
            .into_iter()
            .find(|(_, c)| *c > self.nodes.len() / 2)
            .map(|(l, _)| l)
    }

    /// Waits until a majority agrees on a leader that believes it leads.
    pub async fn wait_for_leader(&self, within: Duration) -> RaftId {
        let deadline = Instant::now() + within;
        loop {
            if let Some(l) = self.leader() {
                let node = self.nodes.iter().find(|n| n.id == l).unwrap();
                if node.raft.metrics().borrow().current_leader == Some(l) {
                    return l;
                }
            }
            assert!(
                Instant::now() < deadline,
                "no leader within {within:?}: {}",
                self.describe()
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// Each node's view: state, term, leader, applied index.
    pub fn describe(&self) -> String {
        self.nodes
            .iter()
            .map(|n| {
                let m = n.raft.metrics().borrow().clone();
                format!(
                    "{}: {:?} term {} leader {} applied {:?}",
                    n.name,
                    m.state,
                    m.current_term,
                    m.current_leader.map(|l| self.name_of(l)).unwrap_or("-"),
                    m.last_applied.map(|l| l.index)
                )
            })
            .collect::<Vec<_>>()
            .join("; ")
    }

    /// Why each node whose Raft core has stopped did so: killed by the test,
    /// or a fatal error of its own (openraft keeps the error and answers
    /// every later call with it).
    pub async fn stopped_cores(&self) -> String {
        let mut out = String::new();
        for n in &self.nodes {
            if let Err(fatal) = n.raft.with_raft_state(|_| ()).await {
                out.push_str(&format!("; {} stopped: {fatal}", n.name));
            }
        }
        out
    }

    /// Shuts every node down (openraft's `shutdown`), then starts each
    /// again on its own directory: same Raft ids, state from the files.
    pub async fn restart_all(&mut self) {
        for n in &self.nodes {
            self.net.unregister(n.id);
            n.raft
                .shutdown()
                .await
                .unwrap_or_else(|e| panic!("{} did not shut down: {e}", n.name));
        }
        let old: Vec<(String, RaftId, PathBuf)> = self
            .nodes
            .drain(..)
            .map(|n| (n.name, n.id, n.dir))
            .collect();
        for (name, id, dir) in old {
            let node = start_node(&self.net, &self.config, &name, dir).await;
            assert_eq!(node.id, id, "{name} came back with another Raft id");
            self.nodes.push(node);
        }
    }

    /// Heals the network, waits for a leader and for every node to have
    /// applied the same index, and asserts that every node holds the same
    /// map: the state machines are deterministic and caught up.
    pub async fn converge(&self, within: Duration) {
        self.net.heal();
        self.wait_for_leader(within).await;
        let deadline = Instant::now() + within;
        loop {
            let snaps: Vec<_> = self.nodes.iter().map(|n| n.local_snapshot()).collect();
            let leader_last = self
                .nodes
                .iter()
                .filter_map(|n| n.raft.metrics().borrow().last_log_index)
                .max();
            let same_index = snaps.iter().all(|s| s.1 == snaps[0].1) && snaps[0].1 == leader_last;
            if same_index {
                for (n, s) in self.nodes.iter().zip(&snaps) {
                    assert_eq!(
                        s.0, snaps[0].0,
                        "{} and {} applied the same index {:?} but hold different maps",
                        n.name, self.nodes[0].name, s.1
                    );
                }
                return;
            }
            if Instant::now() >= deadline {
                panic!(
                    "the nodes did not converge within {within:?}: {}{}",
                    self.describe(),
                    self.stopped_cores().await
                );
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// Stops one node for good, as a kill would: it answers nothing more.
    pub async fn kill(&self, index: usize) {
        let n = &self.nodes[index];
        self.net.unregister(n.id);
        let _ = n.raft.shutdown().await;
    }

    pub fn members(&self) -> &BTreeMap<RaftId, Member> {
        &self.members
    }

    /// Shuts every node down (at the end of a test).
    pub async fn shutdown(self) {
        for n in &self.nodes {
            self.net.unregister(n.id);
            let _ = n.raft.shutdown().await;
        }
    }
}

// ---------------------------------------------------------------------------
// Clients
// ---------------------------------------------------------------------------

/// How long a client waits for one answer.
pub const OP_TIMEOUT: Duration = Duration::from_secs(3);

/// Runs one operation through `node` and says how it ended.
pub async fn execute(node: &Node, op: &Op, request_id: String) -> End {
    let command = match op {
        Op::Get(key) => {
            return match node
                .client
                .read_barrier(Consistency::Linearizable, OP_TIMEOUT)
                .await
            {
                Ok(()) => End::Done(Ret::Value(node.local_get(key))),
                Err(e) => End::NotDone(e.to_string()),
            };
        }
        Op::Set(key, v) => Command::Set {
            key: key.clone(),
            value: (*v).into(),
        },
        Op::Cas(key, expected, v) => Command::Cas {
            key: key.clone(),
            expected: expected.map(Into::into),
            value: (*v).into(),
        },
        Op::Delete(key) => Command::Delete { key: key.clone() },
    };
    let proposal = Proposal {
        command,
        request_id: Some(request_id),
        requester: Requester {
            actor: "test@localhost".into(),
            client_addr: None,
            node_id: node.name.clone(),
        },
    };
    match node.client.write(proposal, OP_TIMEOUT).await {
        Ok((_, outcome)) => End::Done(Ret::from_outcome(&outcome)),
        // Certainly never proposed (see ClusterClient::write): NoQuorum is
        // answered only before a proposal or after attempts that were not
        // delivered; NotAMember before anything is sent.
        Err(e @ (ClientError::NoQuorum(_) | ClientError::NotAMember)) => {
            End::NotDone(e.to_string())
        }
        Err(e @ ClientError::UnknownOutcome(_)) => End::Unknown(e.to_string()),
        // Not expected here; counted as unknown, which claims nothing.
        Err(e) => End::Unknown(format!("failed: {e}")),
    }
}

/// What the clients of a run do.
#[derive(Clone, Debug)]
pub struct Workload {
    /// Keys in use at a time.
    pub keys: usize,
    /// Clients move to fresh keys this often, so that each key's history
    /// stays small enough for the checker's search.
    pub key_period: Duration,
    /// Values are `0..values`.
    pub values: u64,
    pub clients_per_node: usize,
}

impl Default for Workload {
    fn default() -> Self {
        Workload {
            keys: 3,
            key_period: Duration::from_secs(1),
            values: 5,
            clients_per_node: 1,
        }
    }
}

/// Chooses the next operation of a client.
fn next_op(rng: &mut fastrand::Rng, w: &Workload, key: String, seen: Option<Option<u64>>) -> Op {
    let value = rng.u64(0..w.values);
    match rng.u32(0..100) {
        0..=34 => Op::Get(key),
        35..=54 => Op::Set(key, value),
        55..=89 => {
            // Mostly the value this client last saw, so that some succeed.
            let expected = match seen {
                Some(v) if rng.u32(0..3) > 0 => v,
                _ if rng.u32(0..4) == 0 => None,
                _ => Some(rng.u64(0..w.values)),
            };
            Op::Cas(key, expected, value)
        }
        _ => Op::Delete(key),
    }
}

/// Runs the clients of every node until `run_for` has passed, each asking
/// its own node; clients of a paused node stall. Returns when all are done.
pub async fn run_clients(
    cluster: &Cluster,
    history: &Arc<History>,
    workload: &Workload,
    seed: u64,
    run_for: Duration,
) {
    let started = Instant::now();
    let stop = started + run_for;
    let mut tasks = Vec::new();
    let mut client_no = 0u64;
    for node in &cluster.nodes {
        for _ in 0..workload.clients_per_node {
            client_no += 1;
            let mut rng =
                fastrand::Rng::with_seed(seed ^ (client_no.wrapping_mul(0x9E37_79B9_7F4A_7C15)));
            let history = history.clone();
            let workload = workload.clone();
            let net = cluster.net.clone();
            let node = node.clone();
            tasks.push(tokio::spawn(async move {
                let mut thread = history.new_thread();
                let mut seen: HashMap<String, Option<u64>> = HashMap::new();
                let mut n = 0u64;
                while Instant::now() < stop {
                    if net.is_paused(node.id) {
                        tokio::time::sleep(Duration::from_millis(20)).await;
                        continue;
                    }
                    let generation =
                        started.elapsed().as_millis() / workload.key_period.as_millis();
                    let key = format!("g{generation}.k{}", rng.usize(0..workload.keys));
                    let op = next_op(&mut rng, &workload, key.clone(), seen.get(&key).copied());
                    n += 1;
                    let index = history.invoke(thread, &node.name, op.clone());
                    let end = execute(&node, &op, format!("c{client_no}-{n}")).await;
                    match &end {
                        End::Done(Ret::Value(v)) => {
                            seen.insert(key, *v);
                        }
                        End::Done(Ret::Written { .. }) => {
                            if let Op::Set(_, v) | Op::Cas(_, _, v) = op {
                                seen.insert(key, Some(v));
                            }
                        }
                        End::Done(Ret::CasFailed { current }) => {
                            seen.insert(key, *current);
                        }
                        End::Done(Ret::Deleted { .. }) => {
                            seen.insert(key, None);
                        }
                        End::Unknown(_) => {
                            seen.remove(&key);
                        }
                        End::NotDone(_) => {}
                    }
                    let unknown = matches!(end, End::Unknown(_));
                    let refused = matches!(end, End::NotDone(_));
                    history.complete(index, end);
                    if unknown {
                        // This thread's operation stays in flight for ever.
                        thread = history.new_thread();
                    }
                    if refused {
                        // A minority refuses at once: do not spin on it.
                        tokio::time::sleep(Duration::from_millis(25)).await;
                    }
                }
            }));
        }
    }
    for t in tasks {
        t.await.expect("a client task panicked");
    }
}

/// After the faults: a linearizable read of every key the run used, from
/// every node, recorded in the history (they see all that was acknowledged).
pub async fn final_reads(cluster: &Cluster, history: &History) {
    let keys: BTreeSet<String> = history
        .records()
        .iter()
        .map(|r| r.op.key().to_string())
        .collect();
    for node in &cluster.nodes {
        let thread = history.new_thread();
        for key in &keys {
            let deadline = Instant::now() + Duration::from_secs(10);
            loop {
                let op = Op::Get(key.clone());
                let index = history.invoke(thread, &node.name, op.clone());
                let end = execute(node, &op, String::new()).await;
                let done = matches!(end, End::Done(_));
                history.complete(index, end.clone());
                if done {
                    break;
                }
                assert!(
                    Instant::now() < deadline,
                    "{} could not read {key} linearizably after the heal: {end:?}; {}",
                    node.name,
                    cluster.describe()
                );
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        }
    }
}
