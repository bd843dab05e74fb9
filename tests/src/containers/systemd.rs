//! A node whose daemon runs as a systemd service: the systemd variant of
//! the image (`deploy/image.sh systemd`, PostgreSQL as a unit, the daemon
//! not installed) with systemd as PID 1, a configuration file and the
//! certificates copied in. A test installs the service with the real
//! `steep-repl install` and restarts the container like a machine reboot.
//!
//! What systemd needs from this engine: a tmpfs on /run and /run/lock and,
//! on a cgroup v1 host, the host's /sys/fs/cgroup mounted read-only (the
//! controllers below it stay writable for the container's own cgroup).
//! It does not need --privileged.

use super::cluster::{certificates, unique_prefix};
use super::docker;
use super::node::{self, describe, exec, tail, ExecOutput, NodeSpec};
use crate::http::Response;
use anyhow::{bail, Context, Result};
use std::time::{Duration, Instant};
use tempfile::TempDir;
use testcontainers::core::{AccessMode, CgroupnsMode, Mount};
use testcontainers::runners::AsyncRunner;
use testcontainers::{ContainerAsync, CopyTargetOptions, GenericImage, ImageExt};

pub struct SystemdNode {
    pub spec: NodeSpec,
    pub network: String,
    pub container: ContainerAsync<GenericImage>,
    pub certs: TempDir,
}

/// The daemon's configuration file in the container (what a DBA writes):
/// local PostgreSQL over its socket, mutual TLS with the copied files.
fn config_yaml(spec: &NodeSpec) -> String {
    format!(
        "repl:\n  node_id: {id}\n  priority: {priority}\n  advertise_host: {host}\n  \
         postgresql:\n    host: /run/postgresql\n    user: steep_daemon\n    database: postgres\n  \
         grpc:\n    tls:\n      ca_file: {tls}/ca.crt\n      cert_file: {tls}/{id}.crt\n      key_file: {tls}/{id}.key\n",
        id = spec.node_id,
        priority = spec.priority,
        host = spec.host,
        tls = node::TLS_DIR,
    )
}

fn cgroup_v2() -> bool {
    std::path::Path::new("/sys/fs/cgroup/cgroup.controllers").exists()
}

impl SystemdNode {
    /// Starts the container (systemd boots; PostgreSQL starts as a unit).
    pub async fn start(image: &str) -> Result<SystemdNode> {
        Self::start_with(image, true, &[]).await
    }

    /// The same, with the configuration file only when `config` (a test
    /// of the packages lets the package bring it) and `files` copied in
    /// (container path, host file), mode 0644.
    pub async fn start_with(
        image: &str,
        config: bool,
        files: &[(String, std::path::PathBuf)],
    ) -> Result<SystemdNode> {
        let network = unique_prefix(&super::current_test());
        let spec = NodeSpec {
            node_id: "node-1".to_string(),
            priority: 50,
            host: format!("{network}-node-1"),
        };
        let certs = certificates(std::slice::from_ref(&spec))?;
        docker::create_network(&network)?;
        let mut request = node::with_certificates(
            node::request(image, &spec.host, &network)?,
            certs.path(),
            &spec.node_id,
        );
        if config {
            request = request.with_copy_to(
                CopyTargetOptions::new("/etc/steep/config.yaml").with_mode(0o600),
                config_yaml(&spec).into_bytes(),
            );
        }
        for (target, source) in files {
            request = request.with_copy_to(
                CopyTargetOptions::new(target.clone()).with_mode(0o644),
                source.clone(),
            );
        }
        let mut request = request
            .with_mount(Mount::tmpfs_mount("/run"))
            .with_mount(Mount::tmpfs_mount("/run/lock"));
        request = if cgroup_v2() {
            // Not exercised on the engine these tests were written on
            // (cgroup v1): a private cgroup namespace is what systemd
            // images use on cgroup v2 engines.
            request.with_cgroupns_mode(CgroupnsMode::Private)
        } else {
            request.with_mount(
                Mount::bind_mount("/sys/fs/cgroup", "/sys/fs/cgroup")
                    .with_access_mode(AccessMode::ReadOnly),
            )
        };
        let container = match request.start().await {
            Ok(c) => c,
            Err(e) => {
                docker::remove_network(&network);
                return Err(e).with_context(|| format!("starting a container of {image}"));
            }
        };
        Ok(SystemdNode {
            spec,
            network,
            container,
            certs,
        })
    }

    pub async fn exec(&self, cmd: &[&str]) -> Result<ExecOutput> {
        exec(&self.container, cmd).await
    }

    /// Runs `cmd` and fails unless it exits 0.
    pub async fn run(&self, cmd: &[&str]) -> Result<ExecOutput> {
        let out = self.exec(cmd).await?;
        if out.code != 0 {
            bail!("{cmd:?} exited {}:\n{}{}", out.code, out.stdout, out.stderr);
        }
        Ok(out)
    }

    pub async fn sql(&self, query: &str) -> Result<String> {
        node::sql(&self.container, query).await
    }

    /// Waits until systemd reports the boot finished (`running`, or
    /// `degraded` when some unit failed: the caller checks its own units).
    pub async fn wait_for_boot(&self, timeout: Duration) -> Result<String> {
        let deadline = Instant::now() + timeout;
        let mut last = String::new();
        loop {
            if let Ok(out) = self.exec(&["systemctl", "is-system-running"]).await {
                last = out.stdout.trim().to_string();
                if last == "running" || last == "degraded" {
                    return Ok(last);
                }
            }
            if Instant::now() > deadline {
                bail!(
                    "systemd did not finish booting within {timeout:?} (last state {last:?})\n{}",
                    self.diagnostics().await
                );
            }
            tokio::time::sleep(Duration::from_millis(250)).await;
        }
    }

    /// `systemctl is-active UNIT`.
    pub async fn unit_state(&self, unit: &str) -> Result<String> {
        Ok(self
            .exec(&["systemctl", "is-active", unit])
            .await?
            .stdout
            .trim()
            .to_string())
    }

    /// `GET path` on the daemon's probe port at the container's address.
    pub async fn http_get(&self, path: &str) -> Result<Response> {
        node::http_get(docker::address_on(&self.spec.host, &self.network)?, path).await
    }

    /// Waits until `/health` answers `status`.
    pub async fn wait_for_health(&self, status: u16, timeout: Duration) -> Result<Response> {
        let deadline = Instant::now() + timeout;
        loop {
            let res = self.http_get("/health").await;
            match res {
                Ok(r) if r.status == status => return Ok(r),
                _ if Instant::now() > deadline => bail!(
                    "/health did not answer {status} within {timeout:?}; last: {}\n{}",
                    describe(&res),
                    self.diagnostics().await
                ),
                _ => tokio::time::sleep(Duration::from_millis(250)).await,
            }
        }
    }

    /// The units' states and the journal's last lines, for failures.
    pub async fn diagnostics(&self) -> String {
        let mut out = String::new();
        for cmd in [
            &["systemctl", "--no-pager", "--failed"][..],
            &[
                "systemctl",
                "--no-pager",
                "status",
                "postgresql",
                "steep-repl",
            ][..],
            &["journalctl", "--no-pager", "-n", "40"][..],
        ] {
            match self.exec(cmd).await {
                Ok(o) => out.push_str(&format!(
                    "--- {}\n{}{}\n",
                    cmd.join(" "),
                    o.stdout,
                    o.stderr
                )),
                Err(e) => out.push_str(&format!("--- {}: {e:#}\n", cmd.join(" "))),
            }
        }
        out.push_str(&format!(
            "--- container log\n{}",
            tail(&node::logs(&self.container).await, 20)
        ));
        out
    }
}

impl Drop for SystemdNode {
    fn drop(&mut self) {
        // The container goes first (testcontainers' Drop runs after this
        // body, so remove it here), then its network.
        let _ = docker::docker(&["rm", "-f", "-v", &self.spec.host]);
        docker::remove_network(&self.network);
    }
}
