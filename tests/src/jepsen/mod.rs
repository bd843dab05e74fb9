//! A Jepsen-style test of the cluster agreement on real nodes in
//! containers: clients on every node run random reads, writes and
//! compare-and-sets on a few keys of the replicated state while a nemesis
//! partitions, cuts, freezes, kills, restarts and loses packets; every node
//! is asked all along who is coordinator. At the end the faults are healed,
//! every key is read from every node, and the whole history is checked:
//! - linearizability of the key/value history, by stateright's
//!   `LinearizabilityTester` (a write whose outcome is unknown may or may not
//!   have happened);
//! - the coordinator answers, by `steep_repl_consensus::claims` (no two
//!   nodes claim one epoch, no claim after a newer epoch was seen, epochs
//!   only grow on every node);
//! - every acknowledged write is still there after the final heal, and every
//!   node reads the same final state.
//!
//! `run` writes a report (report.rs) to the folder the spec names. The
//! bounded run is in tests/tests/jepsen.rs, the long one in
//! benches/src/bin/jepsen.rs.

pub mod client;
pub mod nemesis;
pub mod report;

use crate::containers::cluster::ContainerCluster;
use crate::containers::node::NodeOptions;
use crate::history::{End, History, KeyVerdict, Op, Record, Ret};
use crate::ipc::IpcClient;
use anyhow::{Context, Result};
use nemesis::{FaultKind, Nemesis};
use report::{ClaimPoint, Summary, Verdict};
use serde_json::json;
use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::atomic::AtomicU64;
use std::sync::Arc;
use std::time::{Duration, Instant};

/// What to run.
#[derive(Debug, Clone)]
pub struct RunSpec {
    pub name: String,
    pub seed: u64,
    /// Nodes in all (the last one a witness when `witness`).
    pub nodes: usize,
    pub witness: bool,
    /// How long the workload and the faults last.
    pub duration: Duration,
    pub faults: Vec<FaultKind>,
    /// Keys in use at a time; fresh ones every `key_lifetime`.
    pub keys: usize,
    pub key_lifetime: Duration,
    pub clients_per_node: usize,
    /// Where the report goes.
    pub report_dir: PathBuf,
    /// How long the checker may search one key's history.
    pub check_limit: Duration,
}

/// The seed of a run: `STEEP_JEPSEN_SEED` when set (to replay a run's
/// schedule of faults and operations, not its exact timing), else `default`.
pub fn seed_or(default: u64) -> u64 {
    std::env::var("STEEP_JEPSEN_SEED")
        .ok()
        .and_then(|s| s.trim().parse().ok())
        .unwrap_or(default)
}

/// Priorities of the nodes: node-2 preferred, so that failback moves the
/// role after faults too.
fn priorities(n: usize) -> Vec<u8> {
    (0..n)
        .map(|i| [50, 70, 60, 55, 65, 45, 40][i % 7])
        .collect()
}

/// Runs `spec` on containers of `image`; the summary says whether every
/// checker passed (the report is written either way).
pub async fn run(image: &str, spec: &RunSpec) -> Result<Summary> {
    let started = Instant::now();
    let sockets_dir = tempfile::Builder::new()
        .prefix("steep-jepsen-")
        .tempdir()
        .context("a folder for the nodes' sockets")?;
    let ipc_dirs: Vec<PathBuf> = (0..spec.nodes)
        .map(|i| sockets_dir.path().join(format!("node-{}", i + 1)))
        .collect();
    for d in &ipc_dirs {
        std::fs::create_dir_all(d)?;
    }
    let witness = |i: usize| spec.witness && i == spec.nodes - 1;
    let cluster = ContainerCluster::start_with(image, &priorities(spec.nodes), |i| NodeOptions {
        env: vec![
            ("STEEP_RESTART_DELAY".into(), "1".into()),
            // A snapshot every 100 entries (the default is 10 000, more than
            // a bounded run writes): snapshots are built, the log purged and
            // restarted or cut-off nodes catch up from a snapshot under the
            // faults, not only from the log.
            ("STEEP_REPL_RAFT__SNAPSHOT_EVERY".into(), "100".into()),
        ],
        ipc_dir: Some(ipc_dirs[i].clone()),
        witness: witness(i),
    })
    .await?;
    let sockets: Vec<PathBuf> = cluster.nodes.iter().filter_map(|n| n.socket()).collect();
    let names: Vec<String> = cluster
        .nodes
        .iter()
        .map(|n| n.node_id().to_string())
        .collect();
    wait_for_one_coordinator(&cluster, &sockets, Duration::from_secs(90)).await?;
    crate::containers::announce(&format!(
        "[{}] seed {} (replay with STEEP_JEPSEN_SEED={}): {} nodes up in {:.0} s; {} s of workload and faults",
        spec.name,
        spec.seed,
        spec.seed,
        spec.nodes,
        started.elapsed().as_secs_f64(),
        spec.duration.as_secs()
    ));

    let poller = crate::claims::ClaimPoller::start(
        names.iter().cloned().zip(sockets.iter().cloned()).collect(),
    );
    let history = Arc::new(History::default());
    let t0 = history.started();
    let until = Instant::now() + spec.duration;
    let values = Arc::new(AtomicU64::new(1));
    let mut rng = fastrand::Rng::with_seed(spec.seed);
    let mut clients = Vec::new();
    for (i, socket) in sockets.iter().enumerate() {
        for _ in 0..spec.clients_per_node {
            let client = client::Client {
                node: names[i].clone(),
                socket: socket.clone(),
                history: history.clone(),
                keys: spec.keys,
                started: history.started(),
                key_lifetime: spec.key_lifetime,
                values: values.clone(),
                rng: fastrand::Rng::with_seed(rng.u64(..)),
                think: Duration::from_millis(rng.u64(40..80)),
            };
            clients.push(std::thread::spawn(move || client.run(until)));
        }
    }
    let nemesis = Nemesis {
        cluster: &cluster,
        sockets: sockets.clone(),
        kinds: spec.faults.clone(),
        rng: fastrand::Rng::with_seed(rng.u64(..)),
        t0,
        data_nodes: (0..spec.nodes).filter(|&i| !witness(i)).collect(),
    };
    let faults = nemesis.run(until).await;
    // Heal whatever a failed fault left behind before anything else.
    for node in &cluster.nodes {
        let _ = node.unpause().await;
        let _ = node.heal_drops();
    }
    let faults = faults?;
    for c in clients {
        let _ = tokio::task::spawn_blocking(move || c.join()).await;
    }
    let workload_s = t0.elapsed().as_secs_f64();

    // After the heal: the cluster settles, then every key is read from
    // every node (those reads belong to the history too).
    wait_for_one_coordinator(&cluster, &sockets, Duration::from_secs(90)).await?;
    // Every key the workload used, of every generation.
    let used: Vec<String> = history
        .records()
        .iter()
        .map(|r| r.op.key().to_string())
        .collect::<std::collections::BTreeSet<_>>()
        .into_iter()
        .collect();
    let final_reads = final_reads(&history, &names, &sockets, &used, &values).await;

    let answers = poller.answers();
    let claims_verdict = poller.finish();
    let claims: Vec<ClaimPoint> = answers
        .iter()
        .map(|a| ClaimPoint {
            node: a.node.clone(),
            invoked_ms: a.invoked.saturating_duration_since(t0).as_millis(),
            completed_ms: a.completed.saturating_duration_since(t0).as_millis(),
            holder: a.holder.clone(),
            epoch: a.epoch,
            is_self: a.is_self,
        })
        .collect();

    let records = history.records();
    let mut verdicts = Vec::new();
    let keys = history.check(spec.check_limit);
    let not_linearizable: Vec<String> = keys
        .iter()
        .filter(|(_, v)| !v.is_linearizable())
        .map(|(k, v)| match v {
            KeyVerdict::NotLinearizable { why, history } => {
                format!("{k}: NOT linearizable ({why})\n{history}")
            }
            KeyVerdict::Undecided { history } => {
                format!("{k}: undecided within {:?}\n{history}", spec.check_limit)
            }
            KeyVerdict::Linearizable { .. } => String::new(),
        })
        .collect();
    verdicts.push(Verdict {
        checker: "linearizability of the key/value history (stateright LinearizabilityTester, key by key)".into(),
        passed: not_linearizable.is_empty(),
        detail: if not_linearizable.is_empty() {
            format!(
                "{} keys, each linearizable (slowest search {:.1} s)",
                keys.len(),
                keys.values()
                    .filter_map(|v| match v {
                        KeyVerdict::Linearizable { took } => Some(took.as_secs_f64()),
                        _ => None,
                    })
                    .fold(0.0, f64::max)
            )
        } else {
            not_linearizable.join("\n")
        },
    });
    let epochs_claimed = match &claims_verdict {
        Ok(s) => s.claimants.len(),
        Err(_) => 0,
    };
    verdicts.push(Verdict {
        checker: "coordinator answers (steep_repl_consensus::claims: one claimant per epoch, claims in epoch order, epochs never go down on a node)".into(),
        passed: claims_verdict.is_ok(),
        detail: match &claims_verdict {
            Ok(s) => format!(
                "{} answers, {} claims, epochs and their holders: {:?}",
                s.answers, s.claims, s.claimants
            ),
            Err(e) => format!("{e:#}"),
        },
    });
    let durability = check_acknowledged(&records, &final_reads);
    verdicts.push(Verdict {
        checker: "every acknowledged write still there after the final heal; every node reads the same final state".into(),
        passed: durability.is_ok(),
        detail: durability.unwrap_or_else(|e| e),
    });

    let counts = history.counts();
    let summary = Summary {
        name: spec.name.clone(),
        seed: spec.seed,
        nodes: names.clone(),
        seconds: workload_s,
        operations: records.len(),
        by_kind: counts
            .by_kind
            .iter()
            .map(|(k, [a, b, c])| (k.to_string(), [*a as usize, *b as usize, *c as usize]))
            .collect(),
        faults: faults.len(),
        by_fault: report::fault_costs(&records, &faults),
        epochs_claimed,
        claims_answers: answers.len(),
        verdicts,
    };
    report::write(&spec.report_dir, &summary, &records, &claims, &faults)?;
    crate::containers::announce(&format!(
        "[{}] {}: {} operations, {} faults, {} epochs claimed; report in {} ({:.0} s in all)",
        spec.name,
        if summary.passed() { "passed" } else { "FAILED" },
        summary.operations,
        summary.faults,
        summary.epochs_claimed,
        spec.report_dir.display(),
        started.elapsed().as_secs_f64()
    ));
    Ok(summary)
}

/// Every node names the same coordinator under the same epoch.
async fn wait_for_one_coordinator(
    cluster: &ContainerCluster,
    sockets: &[PathBuf],
    within: Duration,
) -> Result<()> {
    let deadline = Instant::now() + within;
    loop {
        let s = sockets.to_vec();
        let agreed = tokio::task::spawn_blocking(move || {
            let views: Vec<Option<(String, u64)>> = s
                .iter()
                .map(|socket| {
                    let st = IpcClient::connect(socket)
                        .and_then(|mut c| c.call("status.get", json!({})))
                        .ok()?;
                    Some((
                        st["node"]["coordinator_id"].as_str()?.to_string(),
                        st["node"]["epoch"].as_u64()?,
                    ))
                })
                .collect();
            views.iter().all(|v| v.is_some() && *v == views[0])
        })
        .await
        .unwrap_or(false);
        if agreed {
            return Ok(());
        }
        if Instant::now() > deadline {
            anyhow::bail!(
                "the nodes did not agree on one coordinator within {within:?}\n{}",
                cluster.views().await
            );
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
}

/// Reads every key from every node once the cluster has settled; each
/// read is a record of the history. Returns node -> key -> value.
async fn final_reads(
    history: &Arc<History>,
    names: &[String],
    sockets: &[PathBuf],
    keys: &[String],
    values: &Arc<AtomicU64>,
) -> BTreeMap<String, BTreeMap<String, Option<u64>>> {
    let mut out = BTreeMap::new();
    for (node, socket) in names.iter().zip(sockets) {
        let client = client::Client {
            node: node.clone(),
            socket: socket.clone(),
            history: history.clone(),
            keys: 0,
            started: history.started(),
            key_lifetime: Duration::MAX,
            values: values.clone(),
            rng: fastrand::Rng::with_seed(0),
            think: Duration::ZERO,
        };
        let keys = keys.to_vec();
        let history = history.clone();
        let name = node.clone();
        let node = node.clone();
        let read = tokio::task::spawn_blocking(move || {
            let mut seen = BTreeMap::new();
            for key in keys {
                // A read may meet a leader that is still settling: ask again.
                for _ in 0..20 {
                    let thread = history.new_thread();
                    let op = Op::Get(key.clone());
                    let index = history.invoke(thread, &node, op.clone());
                    let end = client.execute_once(&op);
                    let done = match &end {
                        End::Done(Ret::Value(v)) => Some(*v),
                        _ => None,
                    };
                    history.complete(index, end);
                    if let Some(v) = done {
                        seen.insert(key.clone(), v);
                        break;
                    }
                    std::thread::sleep(Duration::from_millis(500));
                }
            }
            seen
        })
        .await
        .unwrap_or_default();
        out.insert(name, read);
    }
    out
}

/// Every acknowledged write is still there: for each key, the final value
/// is the last acknowledged write's, or that of a write that may have come
/// after it (acknowledged or unknown, answered after the last acknowledged
/// one was invoked); and every node read the same.
fn check_acknowledged(
    records: &[Record],
    finals: &BTreeMap<String, BTreeMap<String, Option<u64>>>,
) -> Result<String, String> {
    let mut by_key: BTreeMap<&str, Vec<&Record>> = BTreeMap::new();
    for r in records.iter().filter(|r| r.op.kind() != "get") {
        by_key.entry(r.op.key()).or_default().push(r);
    }
    let mut final_of: BTreeMap<String, Option<u64>> = BTreeMap::new();
    for (node, reads) in finals {
        for (key, value) in reads {
            match final_of.get(key) {
                Some(v) if v != value => {
                    return Err(format!(
                        "{key}: {node} read {value:?}, another node read {v:?}"
                    ))
                }
                _ => {
                    final_of.insert(key.clone(), *value);
                }
            }
        }
    }
    let mut checked = 0;
    for (key, writes) in &by_key {
        let written = |r: &Record| match r.op {
            Op::Set(_, v) | Op::Cas(_, _, v) => Some(v),
            _ => None,
        };
        let acked: Vec<&&Record> = writes
            .iter()
            .filter(|r| matches!(r.end, Some(End::Done(Ret::Written { .. }))))
            .collect();
        let Some(last) = acked.iter().max_by_key(|r| r.answered) else {
            continue;
        };
        let Some(value) = final_of.get(*key) else {
            return Err(format!("{key}: no node could read it after the heal"));
        };
        let allowed: Vec<u64> = writes
            .iter()
            .filter(|r| {
                std::ptr::eq(**r, **last)
                    || match &r.end {
                        Some(End::Done(Ret::Written { .. })) => r.answered > Some(last.invoked),
                        Some(End::Unknown(_)) | None => true,
                        _ => false,
                    }
            })
            .filter_map(|r| written(r))
            .collect();
        if !value.is_some_and(|v| allowed.contains(&v)) {
            return Err(format!(
                "{key}: the last acknowledged write ({}) is lost: the final value {value:?} is none of {allowed:?}",
                last.op
            ));
        }
        checked += 1;
    }
    Ok(format!(
        "{checked} keys with acknowledged writes, each holding its last acknowledged write or a later one; {} nodes read the same final state",
        finals.len()
    ))
}
