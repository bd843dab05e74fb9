//! The faults of a run, drawn from the run's seed and applied to real
//! containers, each healed before the next: partitions made with iptables
//! in the nodes' network namespaces (both ways between two groups), an
//! asymmetric cut (one way), `docker pause` of the coordinator for longer
//! than its lease, `kill -9` of a daemon (the entrypoint restarts it),
//! `docker restart` of a container, packet loss on the peers' port
//! (iptables' `statistic` match: this kernel has no netem), and the loss
//! of a data node (cut off its network for a while).

use crate::containers::cluster::ContainerCluster;
use crate::ipc::IpcClient;
use anyhow::{Context, Result};
use serde::Serialize;
use serde_json::json;
use std::path::PathBuf;
use std::time::{Duration, Instant};

/// A kind of fault.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum FaultKind {
    /// The nodes split in two groups, the smaller one without a majority
    /// (2|1 of three, 3|2 of five).
    Partition,
    /// The coordinator alone on one side.
    IsolateCoordinator,
    /// One node drops what another sends it; the other still hears it.
    AsymmetricCut,
    /// The coordinator's container frozen for longer than its lease.
    PauseCoordinator,
    /// kill -9 of a daemon; restarted by the container's entrypoint.
    KillDaemon,
    /// docker restart of a whole container (daemon and PostgreSQL).
    RestartContainer,
    /// A share of the packets to every node's peers' port dropped.
    PacketLoss,
    /// A data node gone (cut off its network), then back.
    LoseDataNode,
}

impl FaultKind {
    pub const ALL: [FaultKind; 8] = [
        FaultKind::Partition,
        FaultKind::IsolateCoordinator,
        FaultKind::AsymmetricCut,
        FaultKind::PauseCoordinator,
        FaultKind::KillDaemon,
        FaultKind::RestartContainer,
        FaultKind::PacketLoss,
        FaultKind::LoseDataNode,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            FaultKind::Partition => "partition",
            FaultKind::IsolateCoordinator => "isolate_coordinator",
            FaultKind::AsymmetricCut => "asymmetric_cut",
            FaultKind::PauseCoordinator => "pause_coordinator",
            FaultKind::KillDaemon => "kill_daemon",
            FaultKind::RestartContainer => "restart_container",
            FaultKind::PacketLoss => "packet_loss",
            FaultKind::LoseDataNode => "lose_data_node",
        }
    }
}

/// One fault as it happened, in milliseconds since the history began.
#[derive(Debug, Clone, Serialize)]
pub struct FaultSpan {
    pub kind: FaultKind,
    pub what: String,
    pub nodes: Vec<String>,
    pub start_ms: u128,
    /// When it was healed (for a kill: when the daemon answered again).
    pub end_ms: u128,
}

/// Applies faults of `kinds` from `rng` until `until`, each for a few
/// seconds, with quiet time between them; every fault is healed before
/// it returns. `t0` is the history's start.
pub struct Nemesis<'a> {
    pub cluster: &'a ContainerCluster,
    /// Each node's IPC socket on the host (to find the coordinator and to
    /// see a restarted daemon answer).
    pub sockets: Vec<PathBuf>,
    pub kinds: Vec<FaultKind>,
    pub rng: fastrand::Rng,
    pub t0: Instant,
    /// The nodes that are data nodes (a witness is never coordinator).
    pub data_nodes: Vec<usize>,
}

fn ms(rng: &mut fastrand::Rng, range: std::ops::Range<u64>) -> Duration {
    Duration::from_millis(rng.u64(range))
}

impl Nemesis<'_> {
    pub async fn run(mut self, until: Instant) -> Result<Vec<FaultSpan>> {
        let mut spans = Vec::new();
        // Every kind once per round, in an order drawn from the seed, so
        // that a short run still meets each of them.
        let mut round: Vec<FaultKind> = Vec::new();
        tokio::time::sleep(ms(&mut self.rng, 3000..5000)).await;
        while Instant::now() + Duration::from_secs(8) < until {
            if round.is_empty() {
                round = self.kinds.clone();
                self.rng.shuffle(&mut round);
            }
            let kind = round.remove(0);
            let span = self.inflict(kind).await.with_context(|| kind.as_str())?;
            crate::containers::announce(&format!(
                "  [{:>6.1} s] {} ({}), {:.1} s",
                span.start_ms as f64 / 1000.0,
                span.what,
                kind.as_str(),
                (span.end_ms - span.start_ms) as f64 / 1000.0
            ));
            spans.push(span);
            tokio::time::sleep(ms(&mut self.rng, 3000..6000)).await;
        }
        Ok(spans)
    }

    fn now_ms(&self) -> u128 {
        self.t0.elapsed().as_millis()
    }

    fn node_id(&self, i: usize) -> String {
        self.cluster.nodes[i].node_id().to_string()
    }

    /// The node that answers it is coordinator now (any data node if none).
    async fn coordinator(&mut self) -> usize {
        let sockets = self.sockets.clone();
        let found = tokio::task::spawn_blocking(move || {
            sockets.iter().position(|s| {
                IpcClient::connect(s)
                    .and_then(|mut c| c.call("status.get", json!({})))
                    .is_ok_and(|st| st["node"]["is_coordinator"] == json!(true))
            })
        })
        .await
        .ok()
        .flatten();
        found.unwrap_or_else(|| self.data_nodes[self.rng.usize(0..self.data_nodes.len())])
    }

    fn any(&mut self) -> usize {
        self.rng.usize(0..self.cluster.nodes.len())
    }

    /// Drops every packet between the two groups, both ways.
    fn split(&self, a: &[usize], b: &[usize]) -> Result<()> {
        for &i in a {
            for &j in b {
                let (ni, nj) = (&self.cluster.nodes[i], &self.cluster.nodes[j]);
                ni.drop_from(nj.address()?)?;
                nj.drop_from(ni.address()?)?;
            }
        }
        Ok(())
    }

    fn heal_network(&self, nodes: &[usize]) -> Result<()> {
        for &i in nodes {
            self.cluster.nodes[i].heal_drops()?;
        }
        Ok(())
    }

    /// Waits until node `i`'s daemon answers on its socket again.
    async fn answers(&self, i: usize, within: Duration) -> Result<()> {
        let socket = self.sockets[i].clone();
        let deadline = Instant::now() + within;
        loop {
            let s = socket.clone();
            let ok = tokio::task::spawn_blocking(move || {
                IpcClient::connect(&s)
                    .and_then(|mut c| c.call("status.get", json!({})))
                    .is_ok()
            })
            .await
            .unwrap_or(false);
            if ok {
                return Ok(());
            }
            if Instant::now() > deadline {
                anyhow::bail!(
                    "{} did not answer on its socket within {within:?}",
                    self.node_id(i)
                );
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }

    async fn inflict(&mut self, kind: FaultKind) -> Result<FaultSpan> {
        let n = self.cluster.nodes.len();
        let all: Vec<usize> = (0..n).collect();
        let hold = ms(&mut self.rng, 4000..10000);
        let start_ms;
        let (what, nodes) = match kind {
            FaultKind::Partition | FaultKind::IsolateCoordinator => {
                let minority: Vec<usize> = if kind == FaultKind::IsolateCoordinator {
                    vec![self.coordinator().await]
                } else {
                    let mut shuffled = all.clone();
                    self.rng.shuffle(&mut shuffled);
                    shuffled[..(n - 1) / 2].to_vec()
                };
                let majority: Vec<usize> = all
                    .iter()
                    .copied()
                    .filter(|i| !minority.contains(i))
                    .collect();
                start_ms = self.now_ms();
                self.split(&minority, &majority)?;
                tokio::time::sleep(hold).await;
                self.heal_network(&all)?;
                let names = |g: &[usize]| {
                    g.iter()
                        .map(|&i| self.node_id(i))
                        .collect::<Vec<_>>()
                        .join(",")
                };
                (
                    format!("partition {} | {}", names(&minority), names(&majority)),
                    minority.iter().map(|&i| self.node_id(i)).collect(),
                )
            }
            FaultKind::AsymmetricCut => {
                let a = self.any();
                let b = (a + 1 + self.rng.usize(0..n - 1)) % n;
                start_ms = self.now_ms();
                let (na, nb) = (&self.cluster.nodes[a], &self.cluster.nodes[b]);
                na.drop_from(nb.address()?)?;
                tokio::time::sleep(hold).await;
                self.heal_network(&[a])?;
                (
                    format!("{} drops what {} sends", self.node_id(a), self.node_id(b)),
                    vec![self.node_id(a), self.node_id(b)],
                )
            }
            FaultKind::PauseCoordinator => {
                let c = self.coordinator().await;
                start_ms = self.now_ms();
                self.cluster.nodes[c].pause().await?;
                // Longer than the lease (2 s by default).
                tokio::time::sleep(ms(&mut self.rng, 3000..8000)).await;
                self.cluster.nodes[c].unpause().await?;
                (
                    format!("pause of the coordinator {}", self.node_id(c)),
                    vec![self.node_id(c)],
                )
            }
            FaultKind::KillDaemon => {
                let i = if self.rng.bool() {
                    self.coordinator().await
                } else {
                    self.any()
                };
                start_ms = self.now_ms();
                self.cluster.nodes[i].kill_daemon().await?;
                tokio::time::sleep(Duration::from_millis(500)).await;
                self.answers(i, Duration::from_secs(60)).await?;
                (
                    format!("kill -9 of {}'s daemon", self.node_id(i)),
                    vec![self.node_id(i)],
                )
            }
            FaultKind::RestartContainer => {
                let i = self.any();
                start_ms = self.now_ms();
                let node = &self.cluster.nodes[i];
                let host = node.host().to_string();
                tokio::task::spawn_blocking(move || crate::containers::docker::restart(&host, 30))
                    .await??;
                self.answers(i, Duration::from_secs(90)).await?;
                (
                    format!("docker restart of {}", self.node_id(i)),
                    vec![self.node_id(i)],
                )
            }
            FaultKind::PacketLoss => {
                let p = 0.2 + self.rng.f64() * 0.2;
                start_ms = self.now_ms();
                for node in &self.cluster.nodes {
                    node.lose_packets(p)?;
                }
                tokio::time::sleep(hold).await;
                self.heal_network(&all)?;
                (
                    format!("{:.0} % of the peer packets lost on every node", p * 100.0),
                    all.iter().map(|&i| self.node_id(i)).collect(),
                )
            }
            FaultKind::LoseDataNode => {
                let i = if self.rng.bool() {
                    self.coordinator().await
                } else {
                    self.data_nodes[self.rng.usize(0..self.data_nodes.len())]
                };
                start_ms = self.now_ms();
                let others: Vec<usize> = all.iter().copied().filter(|&j| j != i).collect();
                self.split(&[i], &others)?;
                tokio::time::sleep(hold + Duration::from_secs(2)).await;
                self.heal_network(&all)?;
                (
                    format!("data node {} lost, then back", self.node_id(i)),
                    vec![self.node_id(i)],
                )
            }
        };
        Ok(FaultSpan {
            kind,
            what,
            nodes,
            start_ms,
            end_ms: self.now_ms(),
        })
    }
}
