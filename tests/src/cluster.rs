//! A cluster of real nodes on loopback for tests: each node has its own
//! PostgreSQL 18 with the extension and its own daemon, peers talk gRPC with
//! mutual TLS using certificates made by `steep-repl tls`. The nodes form a
//! Raft cluster at start (`cluster init` on the first, `cluster add` with
//! each node's priority from it, through the real CLI); only the first node
//! is a `grpc.peers` seed of the others, the rest they learn as members.

use crate::daemon::{run_cli, Daemon, DaemonOptions};
use crate::ext::server_with_extension;
use crate::pg::PgServer;
use crate::ports::free_port;
use anyhow::{bail, Result};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};
use tempfile::TempDir;

/// The cluster CA and node certificates, made with the real CLI.
pub struct Certificates {
    pub dir: TempDir,
}

impl Certificates {
    pub fn new(node_ids: &[&str]) -> Result<Self> {
        let hosts = ["127.0.0.1", "localhost"];
        let nodes: Vec<(&str, &[&str])> = node_ids.iter().map(|id| (*id, &hosts[..])).collect();
        Ok(Certificates {
            dir: issue_certificates("steep-tls-", &nodes)?,
        })
    }

    pub fn path(&self, file: &str) -> PathBuf {
        self.dir.path().join(file)
    }

    /// The `grpc.tls` lines for `node_id` (8-space indent).
    pub fn tls_yaml(&self, node_id: &str) -> String {
        tls_yaml(self.dir.path(), node_id)
    }
}

/// A new folder (named `prefix`...) with a cluster CA and, for each
/// `(node_id, hosts)`, a node certificate carrying those hosts, all made by
/// the real CLI (`steep-repl tls init` and `tls issue`).
pub fn issue_certificates(prefix: &str, nodes: &[(&str, &[&str])]) -> Result<TempDir> {
    let dir = tempfile::Builder::new().prefix(prefix).tempdir()?;
    let d = dir.path().display().to_string();
    let (code, _, err) = run_cli(&["tls", "init", "--dir", &d], None)?;
    if code != 0 {
        bail!("steep-repl tls init failed: {err}");
    }
    for (id, hosts) in nodes {
        let mut args = vec!["tls", "issue", id, "--dir", &d];
        for host in *hosts {
            args.extend(["--host", host]);
        }
        let (code, _, err) = run_cli(&args, None)?;
        if code != 0 {
            bail!("steep-repl tls issue {id} failed: {err}");
        }
    }
    Ok(dir)
}

pub fn tls_yaml(dir: &Path, node_id: &str) -> String {
    let q = |p: PathBuf| serde_json::to_string(&p.display().to_string()).unwrap_or_default();
    format!(
        "    tls:\n      cert_file: {}\n      key_file: {}\n      ca_file: {}\n",
        q(dir.join(format!("{node_id}.crt"))),
        q(dir.join(format!("{node_id}.key"))),
        q(dir.join("ca.crt")),
    )
}

pub struct ClusterNode {
    pub node_id: String,
    pub pg: PgServer,
    pub daemon: Daemon,
    pub grpc_port: u16,
    pub options: DaemonOptions,
}

pub struct TestCluster {
    pub certs: Certificates,
    pub nodes: Vec<ClusterNode>,
}

/// `coordinator.failback_after` for tests.
pub const FAST_FAILBACK: &str = "  coordinator:\n    failback_after: 3s\n";

/// The gRPC section of a cluster node.
pub fn grpc_yaml(port: u16, seeds: &[u16], tls: &str) -> String {
    let peers: Vec<String> = seeds.iter().map(|p| format!("\"127.0.0.1:{p}\"")).collect();
    format!(
        "    enabled: true\n    bind: 127.0.0.1\n    port: {port}\n    peers: [{}]\n{tls}",
        peers.join(", ")
    )
}

impl TestCluster {
    /// Starts `priorities.len()` nodes named node-1.. with those priorities.
    /// Failback after 3 s (not 30 s): the role reaches the highest
    /// priority soon after the members are added.
    pub async fn start(priorities: &[u8]) -> Result<TestCluster> {
        TestCluster::start_with(priorities, FAST_FAILBACK).await
    }

    /// The same with `extra` added to every node's `repl` section.
    pub async fn start_with(priorities: &[u8], extra: &str) -> Result<TestCluster> {
        TestCluster::start_roles(priorities, &[], extra).await
    }

    /// Starts the nodes, those in `witnesses` as witnesses: no
    /// PostgreSQL in their configuration, added with `--witness`.
    pub async fn start_roles(
        priorities: &[u8],
        witnesses: &[usize],
        extra: &str,
    ) -> Result<TestCluster> {
        let timings = crate::raft::TEST_RAFT_TIMINGS;
        TestCluster::start_logging(priorities, witnesses, timings, extra, "debug").await
    }

    /// The same with `raft_extra` as the `raft:` settings (empty: the
    /// daemon's defaults) and the daemons at the product's default log
    /// level, as a benchmark measures them.
    pub async fn start_for_benchmark(
        priorities: &[u8],
        witnesses: &[usize],
        raft_extra: &str,
        extra: &str,
    ) -> Result<TestCluster> {
        TestCluster::start_logging(priorities, witnesses, raft_extra, extra, "info").await
    }

    /// Starts the nodes with the daemons logging at `log_level`.
    async fn start_logging(
        priorities: &[u8],
        witnesses: &[usize],
        raft_extra: &str,
        extra: &str,
        log_level: &'static str,
    ) -> Result<TestCluster> {
        let ids: Vec<String> = (1..=priorities.len())
            .map(|i| format!("node-{i}"))
            .collect();
        let id_refs: Vec<&str> = ids.iter().map(String::as_str).collect();
        let certs = Certificates::new(&id_refs)?;
        let ports: Vec<u16> = ids.iter().map(|_| free_port()).collect();
        let mut nodes = Vec::new();
        for (i, id) in ids.iter().enumerate() {
            let (pg, _conn) = server_with_extension().await?;
            let mut options = DaemonOptions::for_server(id, &pg);
            let seeds: Vec<u16> = if i == 0 { Vec::new() } else { vec![ports[0]] };
            options.grpc = grpc_yaml(ports[i], &seeds, &certs.tls_yaml(id));
            options.extra = format!("  priority: {}\n{extra}", priorities[i]);
            options.raft_extra = raft_extra.to_string();
            options.log_level = log_level;
            if witnesses.contains(&i) {
                options.pg_extra = "    enabled: false\n".to_string();
            }
            let daemon = Daemon::start(&options)?;
            nodes.push(ClusterNode {
                node_id: id.clone(),
                pg,
                daemon,
                grpc_port: ports[i],
                options,
            });
        }
        let cluster = TestCluster { certs, nodes };
        for node in &cluster.nodes {
            node.daemon.wait_for_ipc(crate::raft::START_TIMEOUT)?;
        }
        cluster.form(priorities, witnesses)?;
        Ok(cluster)
    }

    /// `cluster init` on node-1, then `cluster add` of every other node
    /// with its priority, run on node-1 (retried while the leader has no
    /// quorum yet: exit 7 changed nothing).
    fn form(&self, priorities: &[u8], witnesses: &[usize]) -> Result<()> {
        let (code, out, err) = self.cli(0, &["cluster", "init", "--json"])?;
        if code != 0 {
            bail!("cluster init on node-1 failed ({code}): {out}{err}");
        }
        for (i, node) in self.nodes.iter().enumerate().skip(1) {
            let address = format!("127.0.0.1:{}", node.grpc_port);
            let priority = priorities[i].to_string();
            let mut args = vec![
                "cluster",
                "add",
                &node.node_id,
                "--grpc",
                &address,
                "--priority",
                &priority,
                "--json",
            ];
            if witnesses.contains(&i) {
                args.push("--witness");
            }
            let deadline = Instant::now() + Duration::from_secs(20);
            let (mut code, mut out, mut err) = self.cli(0, &args)?;
            while code == 7 && Instant::now() < deadline {
                std::thread::sleep(Duration::from_millis(200));
                (code, out, err) = self.cli(0, &args)?;
            }
            if code != 0 {
                bail!("cluster add {} failed ({code}): {out}{err}", node.node_id);
            }
        }
        Ok(())
    }

    /// Runs the CLI against node `i`'s daemon: `(exit code, stdout, stderr)`.
    pub fn cli(&self, i: usize, args: &[&str]) -> Result<(i32, String, String)> {
        run_cli(args, Some(&self.nodes[i].daemon.home.config_path()))
    }

    /// Node `i`'s `status.get` over IPC.
    pub fn status(&self, i: usize) -> Result<serde_json::Value> {
        self.nodes[i]
            .daemon
            .ipc()?
            .call("status.get", serde_json::json!({}))
    }

    /// `(node_id, IPC socket)` of every node, for a `ClaimPoller`.
    pub fn sockets(&self) -> Vec<(String, PathBuf)> {
        self.nodes
            .iter()
            .map(|n| (n.node_id.clone(), n.daemon.home.socket_path()))
            .collect()
    }

    /// node_id -> status in node `i`'s registry.
    pub async fn statuses(&self, i: usize) -> Result<BTreeMap<String, String>> {
        let mut conn = self.nodes[i].pg.connect().await?;
        let rows: Vec<(String, String)> =
            sqlx::query_as("SELECT node_id, status FROM steep_repl.nodes ORDER BY node_id")
                .fetch_all(&mut conn)
                .await?;
        Ok(rows.into_iter().collect())
    }

    /// The coordinator node `i` names now, with its epoch (IPC status.get).
    pub async fn coordinator_epoch(&self, i: usize) -> Result<(Option<String>, Option<u64>)> {
        let status = self.status(i)?;
        let node = &status["node"];
        Ok((
            node["coordinator_id"].as_str().map(str::to_string),
            node["epoch"].as_u64(),
        ))
    }

    /// The coordinator node `i` names now.
    pub async fn coordinator(&self, i: usize) -> Result<Option<String>> {
        Ok(self.coordinator_epoch(i).await?.0)
    }

    /// Waits until `check` holds, polling every 100 ms.
    pub async fn wait_until<F, Fut>(
        &self,
        what: &str,
        timeout: Duration,
        mut check: F,
    ) -> Result<()>
    where
        F: FnMut() -> Fut,
        Fut: std::future::Future<Output = Result<bool>>,
    {
        let deadline = Instant::now() + timeout;
        loop {
            if let Ok(true) = check().await {
                return Ok(());
            }
            if Instant::now() > deadline {
                let mut views = String::new();
                for i in 0..self.nodes.len() {
                    views.push_str(&format!(
                        "\n  {}: {:?} coordinator {:?}",
                        self.nodes[i].node_id,
                        self.statuses(i).await.ok(),
                        self.coordinator(i).await.ok()
                    ));
                }
                bail!("timed out waiting for {what}; registries:{views}");
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// True when node `i` sees every node in `expected` with that status.
    pub async fn sees(&self, i: usize, expected: &[(&str, &str)]) -> Result<bool> {
        let statuses = self.statuses(i).await?;
        Ok(expected
            .iter()
            .all(|(id, status)| statuses.get(*id).map(String::as_str) == Some(*status)))
    }
}
