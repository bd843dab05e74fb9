//! A cluster of node containers on a private network made for one test:
//! certificates from `steep-repl tls` (each with the node's container name
//! as a SAN), every node given the others as gRPC peers, and a cleanup
//! that removes the containers and the network even when the test fails.

use super::docker;
use super::node::{describe, tail, ContainerNode, NodeOptions, NodeSpec, Registry};
use crate::cluster::issue_certificates;
use anyhow::{bail, Context, Result};
use std::path::Path;
use std::time::{Duration, Instant};
use tempfile::TempDir;

pub struct ContainerCluster {
    /// The test network's name (also the prefix of every container name).
    pub network: String,
    pub nodes: Vec<ContainerNode>,
    /// The cluster CA and node certificates (copied into the containers).
    pub certs: TempDir,
}

/// Makes the cluster CA and one certificate per node, with the node's
/// container name as a host, through the real CLI.
pub fn certificates(specs: &[NodeSpec]) -> Result<TempDir> {
    let hosts: Vec<[&str; 1]> = specs.iter().map(|s| [s.host.as_str()]).collect();
    let nodes: Vec<(&str, &[&str])> = specs
        .iter()
        .zip(&hosts)
        .map(|(spec, host)| (spec.node_id.as_str(), &host[..]))
        .collect();
    issue_certificates("steep-ctls-", &nodes)
}

/// A name no other test (or test run) uses at the same time.
pub fn unique_prefix(test: &str) -> String {
    let short: String = test
        .chars()
        .filter(char::is_ascii_alphanumeric)
        .take(12)
        .collect();
    let id = uuid::Uuid::new_v4().simple().to_string();
    format!("steep-{short}-{}", &id[..8])
}

impl ContainerCluster {
    /// Starts nodes node-1.. with `priorities` from `image`, each on the
    /// test network as `<network>-node-<i>`, and waits until every one
    /// answers its HTTP probe.
    pub async fn start(image: &str, priorities: &[u8]) -> Result<ContainerCluster> {
        Self::start_with(image, priorities, |_| NodeOptions::default()).await
    }

    /// The same, node `i` started with `options(i)`.
    pub async fn start_with(
        image: &str,
        priorities: &[u8],
        options: impl Fn(usize) -> NodeOptions,
    ) -> Result<ContainerCluster> {
        let network = unique_prefix(&super::current_test());
        let specs: Vec<NodeSpec> = priorities
            .iter()
            .enumerate()
            .map(|(i, &priority)| NodeSpec {
                node_id: format!("node-{}", i + 1),
                priority,
                host: format!("{network}-node-{}", i + 1),
            })
            .collect();
        let certs = certificates(&specs)?;
        docker::create_network(&network)?;
        let mut cluster = ContainerCluster {
            network,
            nodes: Vec::new(),
            certs,
        };
        for (i, spec) in specs.iter().enumerate() {
            let node = ContainerNode::start_with(
                image,
                &cluster.network,
                spec,
                &specs,
                cluster.certs.path(),
                &options(i),
            )
            .await?;
            cluster.nodes.push(node);
        }
        for i in 0..cluster.nodes.len() {
            cluster
                .wait_for_http(i, "/health", 200, Duration::from_secs(60))
                .await?;
        }
        let witnesses: Vec<bool> = cluster.nodes.iter().map(|n| n.options.witness).collect();
        cluster.form(&specs, &witnesses).await?;
        Ok(cluster)
    }

    /// `cluster init` in node-1, then `cluster add` of every other node
    /// from it, through the CLI inside the container, as an operator would
    /// (exit 7, NO_QUORUM, changed nothing and is retried).
    async fn form(&self, specs: &[NodeSpec], witnesses: &[bool]) -> Result<()> {
        let init = self.nodes[0]
            .exec(&["steep-repl", "cluster", "init"])
            .await?;
        if init.code != 0 {
            bail!(
                "cluster init in node-1 exited {}: {}{}",
                init.code,
                init.stdout,
                init.stderr
            );
        }
        for (spec, &witness) in specs.iter().zip(witnesses).skip(1) {
            let grpc = format!("{}:5433", spec.host);
            let priority = spec.priority.to_string();
            let mut args = vec![
                "steep-repl",
                "cluster",
                "add",
                &spec.node_id,
                "--grpc",
                &grpc,
                "--priority",
                &priority,
            ];
            if witness {
                args.push("--witness");
            }
            let deadline = Instant::now() + Duration::from_secs(30);
            loop {
                let out = self.nodes[0].exec(&args).await?;
                match out.code {
                    0 => break,
                    7 if Instant::now() < deadline => {
                        tokio::time::sleep(Duration::from_millis(300)).await
                    }
                    code => bail!(
                        "cluster add {} exited {code}: {}{}",
                        spec.node_id,
                        out.stdout,
                        out.stderr
                    ),
                }
            }
        }
        Ok(())
    }

    pub fn tls_dir(&self) -> &Path {
        self.certs.path()
    }

    /// Node `i`'s registry.
    pub async fn registry(&self, i: usize) -> Result<Registry> {
        self.nodes[i].registry().await
    }

    /// Node `i`'s probe at `path` answers `status`.
    pub async fn wait_for_http(
        &self,
        i: usize,
        path: &str,
        status: u16,
        timeout: Duration,
    ) -> Result<crate::http::Response> {
        let deadline = Instant::now() + timeout;
        loop {
            let res = self.nodes[i].http_get(path).await;
            match res {
                Ok(r) if r.status == status => return Ok(r),
                _ if Instant::now() > deadline => bail!(
                    "{} did not answer {status} on {path} within {timeout:?}; last: {}\n--- its log (last lines):\n{}",
                    self.nodes[i].node_id(),
                    describe(&res),
                    tail(&self.nodes[i].logs().await, 30)
                ),
                _ => tokio::time::sleep(Duration::from_millis(200)).await,
            }
        }
    }

    /// Waits until `check` holds, polling every 250 ms; on timeout the
    /// error shows every node's registry (those that answer) and log tail.
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
        let started = Instant::now();
        let mut last_error = String::new();
        loop {
            match check().await {
                Ok(true) => {
                    super::announce(&format!(
                        "  {what}: after {:.1} s",
                        started.elapsed().as_secs_f64()
                    ));
                    return Ok(());
                }
                Ok(false) => last_error.clear(),
                Err(e) => last_error = format!(" (last check failed: {e:#})"),
            }
            if started.elapsed() > timeout {
                bail!(
                    "timed out after {timeout:?} waiting for {what}{last_error}\n{}",
                    self.views().await
                );
            }
            tokio::time::sleep(Duration::from_millis(250)).await;
        }
    }

    /// Every node's view and log tail, for failure messages.
    pub async fn views(&self) -> String {
        let mut out = String::new();
        for node in &self.nodes {
            let view = match tokio::time::timeout(Duration::from_secs(5), node.registry()).await {
                Ok(Ok(r)) => format!("{:?} coordinator {:?}", r.statuses, r.coordinator),
                Ok(Err(e)) => format!("unreadable: {e:#}"),
                Err(_) => "unreadable: no answer within 5 s (paused?)".to_string(),
            };
            out.push_str(&format!(
                "--- {} ({}): {view}\n{}\n",
                node.node_id(),
                node.host(),
                tail(&node.logs().await, 15)
            ));
        }
        out
    }

    /// The coordinator node `i` names now, with its epoch.
    pub async fn coordinator_epoch(&self, i: usize) -> Result<(Option<String>, Option<u64>)> {
        let out = self.nodes[i]
            .exec(&["steep-repl", "status", "--json"])
            .await?;
        let status: serde_json::Value = serde_json::from_str(&out.stdout)
            .with_context(|| format!("steep-repl status --json said {:?}", out.stdout))?;
        Ok((
            status["node"]["coordinator_id"]
                .as_str()
                .map(str::to_string),
            status["node"]["epoch"].as_u64(),
        ))
    }

    /// True when every node in `among` names `coordinator` (None: none).
    pub async fn agree(&self, among: &[usize], coordinator: Option<&str>) -> Result<bool> {
        for &i in among {
            if self.registry(i).await?.coordinator.as_deref() != coordinator {
                return Ok(false);
            }
        }
        Ok(true)
    }

    /// True when every node in `among` shows every node of `expected` with
    /// that status.
    pub async fn all_see(&self, among: &[usize], expected: &[(&str, &str)]) -> Result<bool> {
        for &i in among {
            if !self.registry(i).await?.shows(expected) {
                return Ok(false);
            }
        }
        Ok(true)
    }
}

impl Drop for ContainerCluster {
    fn drop(&mut self) {
        // A paused container cannot be removed; one still paused after a
        // failed test is thawed first. Errors mean "was not paused".
        for node in &self.nodes {
            let _ = docker::docker(&["unpause", node.host()]);
        }
        // Removed here, synchronously: testcontainers removes a dropped
        // container from a task of the runtime, which a test that ends
        // (or panics) right after may not let finish; and the network can
        // only go once its containers are gone.
        for node in &self.nodes {
            let _ = docker::docker(&["rm", "-f", "-v", node.host()]);
        }
        self.nodes.clear();
        docker::remove_network(&self.network);
    }
}
