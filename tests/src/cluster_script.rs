//! A cluster started by `deploy/cluster.sh`, the README's main job, for
//! tests that need what an operator runs (the monitoring test scrapes it).
//!
//! Each one has its own folder and its own port ranges, and uses the debug
//! build the tests run with (`STEEP_CLUSTER_PROFILE=debug`). `cluster.sh down`
//! runs when the value is dropped, so a failing test stops its daemons and
//! PostgreSQL servers too; a run killed outright leaves them on the fixed
//! ports, which [`ClusterScript::up`] then reports by name.

use anyhow::{bail, Context, Result};
use std::net::{SocketAddr, TcpListener};
use std::os::unix::fs::PermissionsExt;
use std::path::PathBuf;
use std::process::{Command, Stdio};
use tempfile::TempDir;

/// Base ports: node `i` (from 1) listens on base + `i`.
#[derive(Debug, Clone, Copy)]
pub struct Ports {
    pub postgresql: u16,
    pub grpc: u16,
    pub http: u16,
}

/// A running `deploy/cluster.sh` cluster.
pub struct ClusterScript {
    /// `None` only after a failed `down` at drop: then the folder is kept
    /// for whoever stops what still runs in it.
    dir: Option<TempDir>,
    ports: Ports,
    nodes: u16,
    /// Set once `down` succeeded, so that drop does not run it again.
    down: bool,
}

impl ClusterScript {
    /// `deploy/cluster.sh up <nodes>` in a new folder; returns once every
    /// node names the same coordinator (the script waits for that).
    pub fn up(nodes: u16, ports: Ports) -> Result<ClusterScript> {
        for i in 1..=nodes {
            for port in [ports.postgresql + i, ports.grpc + i, ports.http + i] {
                if TcpListener::bind(("127.0.0.1", port)).is_err() {
                    bail!(
                        "port {port} is in use: a cluster of an interrupted run may still \
                         be running (STEEP_CLUSTER_DIR=/tmp/steep-cluster-test-... \
                         deploy/cluster.sh down stops it)"
                    );
                }
            }
        }
        let dir = tempfile::Builder::new()
            .prefix("steep-cluster-test-")
            .tempdir()?;
        // PostgreSQL runs as the unprivileged account, which must reach
        // its data folder below this one (deploy/test.sh does the same).
        std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o755))?;
        let cluster = ClusterScript {
            dir: Some(dir),
            ports,
            nodes,
            down: false,
        };
        // From here on, dropping `cluster` runs `down`: a half-started
        // cluster is stopped too.
        cluster.run(&["up", &nodes.to_string()])?;
        Ok(cluster)
    }

    /// Runs `deploy/cluster.sh args...` for this cluster, its output
    /// appended to `cluster-sh.log` in the cluster's folder (a file, not a
    /// pipe: the daemons it starts must not hold our end open).
    fn run(&self, args: &[&str]) -> Result<()> {
        let log_path = self.path().join("cluster-sh.log");
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&log_path)?;
        let script = crate::paths::repo_root().join("deploy/cluster.sh");
        let status = Command::new(&script)
            .args(args)
            .env("STEEP_CLUSTER_DIR", self.path())
            .env("STEEP_CLUSTER_PROFILE", "debug")
            // deploy/test.sh installed the extension before the tests, as
            // every test here assumes; installing it again would rewrite
            // its files under the other tests' servers.
            .env("STEEP_EXTENSION_INSTALLED", "1")
            .env("STEEP_CLUSTER_BASE_PORT", self.ports.postgresql.to_string())
            .env("STEEP_CLUSTER_GRPC_BASE", self.ports.grpc.to_string())
            .env("STEEP_CLUSTER_HTTP_BASE", self.ports.http.to_string())
            .stdin(Stdio::null())
            .stdout(log.try_clone()?)
            .stderr(log)
            .status()
            .with_context(|| format!("running {}", script.display()))?;
        if !status.success() {
            let log = std::fs::read_to_string(&log_path).unwrap_or_default();
            bail!(
                "deploy/cluster.sh {} failed ({status}):\n{}",
                args.join(" "),
                crate::tail(&log, 40)
            );
        }
        Ok(())
    }

    /// The cluster's folder (`STEEP_CLUSTER_DIR`).
    pub fn path(&self) -> PathBuf {
        match &self.dir {
            Some(dir) => dir.path().to_path_buf(),
            None => PathBuf::new(),
        }
    }

    pub fn nodes(&self) -> u16 {
        self.nodes
    }

    /// Where node `i` serves HTTP (`/metrics`).
    pub fn http_addr(&self, i: u16) -> SocketAddr {
        SocketAddr::from(([127, 0, 0, 1], self.ports.http + i))
    }

    pub fn node_dir(&self, i: u16) -> PathBuf {
        self.path().join(format!("node{i}"))
    }

    /// The daemon's log, for failure messages.
    pub fn daemon_log(&self, i: u16) -> String {
        std::fs::read_to_string(self.node_dir(i).join("daemon.log")).unwrap_or_default()
    }

    /// Kills node `i`'s daemon with SIGKILL (its PostgreSQL keeps running).
    pub fn kill_daemon(&self, i: u16) -> Result<()> {
        let pid_file = self.node_dir(i).join("daemon.pid");
        let pid: i32 = std::fs::read_to_string(&pid_file)
            .with_context(|| format!("reading {}", pid_file.display()))?
            .trim()
            .parse()
            .with_context(|| format!("{} holds no pid", pid_file.display()))?;
        // SAFETY: kill has no memory preconditions; the pid is the daemon
        // cluster.sh started for this test's own folder.
        if unsafe { libc::kill(pid, libc::SIGKILL) } != 0 {
            bail!(
                "kill -9 {pid} (node{i}'s daemon): {}",
                std::io::Error::last_os_error()
            );
        }
        Ok(())
    }

    /// `deploy/cluster.sh down`.
    pub fn down(&mut self) -> Result<()> {
        self.run(&["down"])?;
        self.down = true;
        Ok(())
    }
}

impl Drop for ClusterScript {
    fn drop(&mut self) {
        if !self.down {
            if let Err(e) = self.down() {
                let kept = self.dir.take().map(TempDir::keep);
                eprintln!("stopping the test cluster failed, its folder {kept:?} is kept: {e:#}");
            }
        }
    }
}
