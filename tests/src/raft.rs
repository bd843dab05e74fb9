//! Clusters whose members agree through Raft, on loopback: each node has
//! its own PostgreSQL 18 with the extension, its own daemon with mutual TLS
//! (certificates made by `steep-repl tls`), its Raft log in its own folder,
//! and short Raft timings. Nodes start empty; [`RaftCluster::form`] runs
//! `cluster init` on the first and `cluster add` from it for the others,
//! through the real CLI, as an operator would.
//!
//! When a test panics while a cluster is alive, the end of every daemon's
//! log is printed, so a failure always shows what the daemons saw.

use crate::cluster::{grpc_yaml, Certificates};
use crate::daemon::{run_cli, Daemon, DaemonHome, DaemonOptions};
use crate::ipc::IpcClient;
use crate::pg::PgServer;
use crate::ports::free_port;
use anyhow::{anyhow, bail, Context, Result};
use serde_json::{json, Value};
use std::time::{Duration, Instant};

/// Raft timings for tests (`repl.raft`): elections within a second on
/// loopback, still several heartbeats per election timeout.
pub const TEST_RAFT_TIMINGS: &str = "    heartbeat_interval: 100ms\n    \
     election_timeout_min: 400ms\n    election_timeout_max: 800ms\n";

/// How long a node may take to start answering IPC.
pub const START_TIMEOUT: Duration = Duration::from_secs(30);

/// One node: PostgreSQL, daemon, and where its gRPC listens.
pub struct RaftNode {
    pub node_id: String,
    pub pg: PgServer,
    pub daemon: Daemon,
    pub grpc_port: u16,
    pub options: DaemonOptions,
}

impl RaftNode {
    /// `127.0.0.1:PORT`, what `cluster add --grpc` is given.
    pub fn grpc_address(&self) -> String {
        format!("127.0.0.1:{}", self.grpc_port)
    }
}

pub struct RaftCluster {
    pub certs: Certificates,
    pub nodes: Vec<RaftNode>,
}

impl RaftCluster {
    /// Starts `n` empty nodes named n1..nN (no cluster yet), each answering
    /// IPC. No grpc.peers: they learn of each other only by `cluster add`.
    pub async fn start(n: usize) -> Result<RaftCluster> {
        RaftCluster::start_prepared(n, |_| vec!["CREATE EXTENSION steep_repl".to_string()]).await
    }

    /// The same, with `prepare(i)` as the SQL run in node `i`'s database
    /// before its daemon starts (instead of `CREATE EXTENSION steep_repl`).
    pub async fn start_prepared(
        n: usize,
        prepare: impl Fn(usize) -> Vec<String>,
    ) -> Result<RaftCluster> {
        let ids: Vec<String> = (1..=n).map(|i| format!("n{i}")).collect();
        let id_refs: Vec<&str> = ids.iter().map(String::as_str).collect();
        let certs = Certificates::new(&id_refs)?;
        // initdb is the slow part: run them side by side.
        let servers: Vec<_> = ids
            .iter()
            .map(|_| std::thread::spawn(PgServer::start))
            .collect();
        let mut nodes = Vec::new();
        for (i, (id, server)) in ids.iter().zip(servers).enumerate() {
            let pg = server
                .join()
                .map_err(|_| anyhow!("starting PostgreSQL panicked"))??;
            let mut conn = pg.connect().await?;
            for sql in prepare(i) {
                sqlx::raw_sql(sqlx::AssertSqlSafe(sql.clone()))
                    .execute(&mut conn)
                    .await
                    .with_context(|| format!("{sql} (did deploy/extension.sh run?)"))?;
            }
            let grpc_port = free_port();
            let mut options = DaemonOptions::for_server(id, &pg).with_http();
            options.grpc = grpc_yaml(grpc_port, &[], &certs.tls_yaml(id));
            options.raft_extra = TEST_RAFT_TIMINGS.to_string();
            let home = DaemonHome::new()?;
            home.write_config(&options)?;
            let daemon = Daemon::start_in(home)?;
            nodes.push(RaftNode {
                node_id: id.clone(),
                pg,
                daemon,
                grpc_port,
                options,
            });
        }
        let cluster = RaftCluster { certs, nodes };
        for node in &cluster.nodes {
            node.daemon.wait_for_ipc(START_TIMEOUT)?;
        }
        Ok(cluster)
    }

    /// Starts `n` nodes and forms a cluster of all of them.
    pub async fn start_formed(n: usize) -> Result<RaftCluster> {
        let cluster = RaftCluster::start(n).await?;
        if let Err(e) = cluster.form().await {
            bail!("{e:#}\ndaemon logs:\n{}", cluster.log_tails(40));
        }
        Ok(cluster)
    }

    /// `cluster init` on the first node, then `cluster add` of every other
    /// from it; waits until every node sees all of them as voters and the
    /// same leader.
    pub async fn form(&self) -> Result<()> {
        self.form_first(self.nodes.len()).await
    }

    /// The same with the first `k` nodes only; the others stay empty.
    pub async fn form_first(&self, k: usize) -> Result<()> {
        let (code, out, err) = self.cli(0, &["cluster", "init", "--json"])?;
        if code != 0 {
            bail!("cluster init on n1 failed ({code}): {out}{err}");
        }
        for i in 1..k {
            self.add(0, i)?;
        }
        let members: Vec<usize> = (0..k).collect();
        self.wait_for_agreement(&members, k, Duration::from_secs(15))
            .await
    }

    /// `cluster add <node i> --grpc ...` run on node `from`; fails unless
    /// the CLI exits 0.
    pub fn add(&self, from: usize, i: usize) -> Result<Value> {
        let node = &self.nodes[i];
        let address = node.grpc_address();
        let args = [
            "cluster",
            "add",
            &node.node_id,
            "--grpc",
            &address,
            "--json",
        ];
        // Exit 7 (NO_QUORUM: nothing was done) can happen on a loaded
        // machine while the leader misses its quorum acknowledgements.
        let deadline = Instant::now() + Duration::from_secs(20);
        let (mut code, mut out, mut err) = self.cli(from, &args)?;
        while code == 7 && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(200));
            (code, out, err) = self.cli(from, &args)?;
        }
        if code != 0 {
            bail!(
                "cluster add {} on {} failed ({code}): {out}{err}",
                node.node_id,
                self.nodes[from].node_id
            );
        }
        serde_json::from_str(&out).with_context(|| format!("cluster add printed {out:?}"))
    }

    /// Runs the CLI against node `i`'s daemon: `(exit code, stdout, stderr)`.
    pub fn cli(&self, i: usize, args: &[&str]) -> Result<(i32, String, String)> {
        run_cli(args, Some(&self.nodes[i].daemon.home.config_path()))
    }

    /// A new IPC connection to node `i`.
    pub fn ipc(&self, i: usize) -> Result<IpcClient> {
        self.nodes[i].daemon.ipc()
    }

    /// `cluster.status` of node `i`, over IPC.
    pub fn status(&self, i: usize) -> Result<Value> {
        self.ipc(i)?.call("cluster.status", json!({}))
    }

    /// The index of the node that node `i` names as leader, if any.
    pub fn leader_seen_by(&self, i: usize) -> Option<usize> {
        let status = self.status(i).ok()?;
        let leader = status["leader"].as_str()?;
        self.nodes.iter().position(|n| n.node_id == leader)
    }

    /// Waits until every node in `among` is in the same cluster, sees
    /// `voters` voters and names the same leader (one of `among`).
    pub async fn wait_for_agreement(
        &self,
        among: &[usize],
        voters: usize,
        timeout: Duration,
    ) -> Result<()> {
        self.wait_until("the nodes to agree on members and leader", timeout, || {
            let statuses: Vec<Value> = among
                .iter()
                .map(|&i| self.status(i))
                .collect::<Result<_>>()?;
            let first = &statuses[0];
            let leader = first["leader"].as_str();
            let leader_among =
                leader.is_some_and(|l| among.iter().any(|&i| self.nodes[i].node_id == l));
            Ok(leader_among
                && statuses.iter().all(|s| {
                    s["cluster_id"] == first["cluster_id"]
                        && !s["cluster_id"].is_null()
                        && s["leader"].as_str() == leader
                        && voter_count(s) == voters
                }))
        })
        .await
    }

    /// Waits until `check` holds, polling every 100 ms; on timeout the
    /// error carries every node's cluster status.
    pub async fn wait_until<F>(&self, what: &str, timeout: Duration, mut check: F) -> Result<()>
    where
        F: FnMut() -> Result<bool>,
    {
        let deadline = Instant::now() + timeout;
        let mut last_error = None;
        loop {
            match check() {
                Ok(true) => return Ok(()),
                Ok(false) => {}
                Err(e) => last_error = Some(e),
            }
            if Instant::now() > deadline {
                bail!(
                    "timed out after {timeout:?} waiting for {what} (last error: {last_error:?}); views:\n{}",
                    self.views()
                );
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// Every node's cluster status, one line each (for failure messages).
    pub fn views(&self) -> String {
        self.nodes
            .iter()
            .enumerate()
            .map(|(i, n)| match self.status(i) {
                Ok(s) => format!("  {}: {s}", n.node_id),
                Err(e) => format!("  {}: {e:#}", n.node_id),
            })
            .collect::<Vec<_>>()
            .join("\n")
    }

    /// The last lines of every daemon's log.
    pub fn log_tails(&self, lines: usize) -> String {
        self.nodes
            .iter()
            .map(|n| {
                format!(
                    "----- {} ({}) -----\n{}",
                    n.node_id,
                    n.daemon.home.log_path().display(),
                    crate::tail(&n.daemon.log(), lines)
                )
            })
            .collect::<Vec<_>>()
            .join("\n")
    }
}

impl Drop for RaftCluster {
    fn drop(&mut self) {
        if std::thread::panicking() {
            eprintln!("daemon logs of the failed test:\n{}", self.log_tails(60));
        }
    }
}

/// How many voters a `cluster.status` lists.
pub fn voter_count(status: &Value) -> usize {
    status["members"]
        .as_array()
        .map(|m| m.iter().filter(|m| m["voter"] == json!(true)).count())
        .unwrap_or(0)
}

/// The Raft id (hex) that a `cluster.status` gives `node_id`.
pub fn member_raft_id(status: &Value, node_id: &str) -> Option<String> {
    status["members"]
        .as_array()?
        .iter()
        .find(|m| m["node_id"] == json!(node_id))?["raft_id"]
        .as_str()
        .map(str::to_string)
}

// ---------------------------------------------------------------------------
// Requests to a cluster meant to be healthy
// ---------------------------------------------------------------------------

/// How long a request refused with NO_QUORUM is retried while the
/// cluster is meant to be healthy: on a loaded 2-core machine a leader may
/// briefly miss its quorum acknowledgements (QUORUM_ACK_LIMIT, 1.5 s), and
/// NO_QUORUM means nothing was done, so a client may simply ask again.
pub const HEALTHY_RETRY: Duration = Duration::from_secs(20);

/// An IPC call on node `i` that must succeed, asked again while it answers
/// NO_QUORUM (see [`HEALTHY_RETRY`]).
pub fn call_ok(c: &RaftCluster, i: usize, method: &str, params: Value) -> Value {
    let deadline = Instant::now() + HEALTHY_RETRY;
    loop {
        let answer = c
            .ipc(i)
            .and_then(|mut ipc| ipc.request(method, params.clone()))
            .unwrap_or_else(|e| panic!("{method} {params} on node {i}: {e:#}"));
        if answer["error"].is_null() {
            return answer["result"].clone();
        }
        if answer["error"]["code"] != json!("NO_QUORUM") || Instant::now() > deadline {
            panic!("{method} {params} on node {i}: {answer}");
        }
        eprintln!("{method} on node {i}: NO_QUORUM, asking again");
        std::thread::sleep(Duration::from_millis(200));
    }
}

/// A write over IPC on node `i` that must succeed; returns its result.
pub fn write(c: &RaftCluster, i: usize, method: &str, params: Value) -> Value {
    call_ok(c, i, method, params)
}

/// A linearizable `state.get` on node `i`: `Some(value)` or `None` (absent).
pub fn get(c: &RaftCluster, i: usize, key: &str) -> Option<Value> {
    let r = call_ok(c, i, "state.get", json!({"key": key}));
    assert_eq!(r["key"], json!(key), "{r}");
    (r["found"] == json!(true)).then(|| r["value"].clone())
}

/// Sets `key` on node `i`, retrying with the same request id while the
/// cluster has no leader; `Ok` once acknowledged.
pub async fn set_acknowledged(c: &RaftCluster, i: usize, key: &str, value: &Value) -> Result<()> {
    let request_id = format!("req-{key}");
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let answer = c.ipc(i)?.request(
            "state.set",
            json!({"key": key, "value": value, "request_id": request_id}),
        )?;
        if answer["error"].is_null() {
            return Ok(());
        }
        let code = answer["error"]["code"].as_str().unwrap_or("");
        if !["NO_QUORUM", "UNKNOWN_OUTCOME"].contains(&code) || Instant::now() > deadline {
            bail!("state.set {key} on node {i}: {answer}");
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}
