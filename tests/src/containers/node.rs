//! One node container: how it is started (environment, certificates copied
//! in, no ports published on the host) and how a test talks to it (SQL
//! through `psql` inside, HTTP at its address on the test network) or
//! hurts it (pause, restart, PostgreSQL stopped inside, cut off the
//! network).

use super::docker;
use crate::http::{self, Response};
use anyhow::{bail, Context, Result};
use std::collections::BTreeMap;
use std::net::{IpAddr, SocketAddr};
use std::path::Path;
use std::time::Duration;
use testcontainers::core::ExecCommand;
use testcontainers::runners::AsyncRunner;
use testcontainers::{ContainerAsync, ContainerRequest, CopyTargetOptions, GenericImage, ImageExt};

/// Ports inside every node container.
pub const GRPC_PORT: u16 = 5433;
pub const HTTP_PORT: u16 = 8080;
/// Where a node's certificates are copied to.
pub const TLS_DIR: &str = "/etc/steep/tls";

/// What one node is: its id, priority, and its name on the network.
#[derive(Debug, Clone)]
pub struct NodeSpec {
    pub node_id: String,
    pub priority: u8,
    /// Container name, host name and network alias; the peers reach it by
    /// this name and its certificate carries it.
    pub host: String,
}

/// How a node differs from the default one.
#[derive(Debug, Clone, Default)]
pub struct NodeOptions {
    /// More `STEEP_REPL_*` (or other) environment variables.
    pub env: Vec<(String, String)>,
    /// A host folder mounted as the daemon's IPC folder, so that a test
    /// talks to its socket directly (`<dir>/steep-repl.sock`).
    pub ipc_dir: Option<std::path::PathBuf>,
    /// No PostgreSQL (`postgresql.enabled: false`); added with `--witness`.
    pub witness: bool,
}

/// Where [`NodeOptions::ipc_dir`] is mounted inside the container.
pub const IPC_DIR: &str = "/run/steep-ipc";

/// A running node container.
pub struct ContainerNode {
    pub spec: NodeSpec,
    pub options: NodeOptions,
    /// The test network it was started on.
    pub network: String,
    pub container: ContainerAsync<GenericImage>,
}

/// The output of a command run inside a container.
#[derive(Debug)]
pub struct ExecOutput {
    pub code: i64,
    pub stdout: String,
    pub stderr: String,
}

/// A node's registry as its own PostgreSQL holds it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Registry {
    /// node_id -> status.
    pub statuses: BTreeMap<String, String>,
    pub coordinator: Option<String>,
}

impl Registry {
    /// Every node in `expected` has that status here.
    pub fn shows(&self, expected: &[(&str, &str)]) -> bool {
        expected
            .iter()
            .all(|(id, status)| self.statuses.get(*id).map(String::as_str) == Some(*status))
    }
}

/// The request for an image: labelled as a test container, named, on
/// `network`, and with no port published on the host (the test reaches
/// the container at its own address; publishing would open ports on every
/// interface of the machine).
pub fn request(image: &str, name: &str, network: &str) -> Result<ContainerRequest<GenericImage>> {
    let (repo, tag) = image
        .rsplit_once(':')
        .with_context(|| format!("image {image:?} has no tag"))?;
    Ok(GenericImage::new(repo, tag)
        .with_container_name(name)
        .with_hostname(name)
        .with_network(network)
        .with_label(super::TEST_LABEL, "1")
        .with_startup_timeout(Duration::from_secs(60))
        .with_host_config_modifier(|host| {
            host.publish_all_ports = Some(false);
            host.port_bindings = None;
        }))
}

/// The certificate files of `node_id` in `tls_dir`, copied to [`TLS_DIR`].
pub fn with_certificates(
    request: ContainerRequest<GenericImage>,
    tls_dir: &Path,
    node_id: &str,
) -> ContainerRequest<GenericImage> {
    let file = |name: &str| CopyTargetOptions::new(format!("{TLS_DIR}/{name}")).with_mode(0o600);
    request
        .with_copy_to(file("ca.crt"), tls_dir.join("ca.crt"))
        .with_copy_to(
            file(&format!("{node_id}.crt")),
            tls_dir.join(format!("{node_id}.crt")),
        )
        .with_copy_to(
            file(&format!("{node_id}.key")),
            tls_dir.join(format!("{node_id}.key")),
        )
}

impl ContainerNode {
    /// Starts `spec` from `image` on `network`, configured through the
    /// environment only (docs/configuration.md, "Containers"), with every
    /// other node of `peers` as a gRPC peer.
    pub async fn start(
        image: &str,
        network: &str,
        spec: &NodeSpec,
        peers: &[NodeSpec],
        tls_dir: &Path,
    ) -> Result<ContainerNode> {
        Self::start_with(
            image,
            network,
            spec,
            peers,
            tls_dir,
            &NodeOptions::default(),
        )
        .await
    }

    /// The same with `options`.
    pub async fn start_with(
        image: &str,
        network: &str,
        spec: &NodeSpec,
        peers: &[NodeSpec],
        tls_dir: &Path,
        options: &NodeOptions,
    ) -> Result<ContainerNode> {
        let peer_list: Vec<String> = peers
            .iter()
            .filter(|p| p.node_id != spec.node_id)
            .map(|p| format!("{}:{GRPC_PORT}", p.host))
            .collect();
        let id = &spec.node_id;
        let mut request = with_certificates(request(image, &spec.host, network)?, tls_dir, id)
            .with_env_var("STEEP_REPL_NODE_ID", id)
            .with_env_var("STEEP_REPL_PRIORITY", spec.priority.to_string())
            .with_env_var("STEEP_REPL_ADVERTISE_HOST", &spec.host)
            .with_env_var("STEEP_REPL_GRPC__PEERS", peer_list.join(","))
            // Failback in 3 s, not 30: the role returns to node-2 soon
            // after a test heals it.
            .with_env_var("STEEP_REPL_COORDINATOR__FAILBACK_AFTER", "3s")
            .with_env_var("STEEP_REPL_GRPC__TLS__CA_FILE", format!("{TLS_DIR}/ca.crt"))
            .with_env_var(
                "STEEP_REPL_GRPC__TLS__CERT_FILE",
                format!("{TLS_DIR}/{id}.crt"),
            )
            .with_env_var(
                "STEEP_REPL_GRPC__TLS__KEY_FILE",
                format!("{TLS_DIR}/{id}.key"),
            );
        for (name, value) in &options.env {
            request = request.with_env_var(name, value);
        }
        if options.witness {
            request = request.with_env_var("STEEP_REPL_POSTGRESQL__ENABLED", "false");
        }
        if let Some(dir) = &options.ipc_dir {
            request = request
                .with_mount(testcontainers::core::Mount::bind_mount(
                    dir.display().to_string(),
                    IPC_DIR,
                ))
                .with_env_var("STEEP_REPL_IPC__PATH", format!("{IPC_DIR}/steep-repl.sock"));
        }
        let container = request
            .start()
            .await
            .with_context(|| format!("starting the container of {id} from {image}"))?;
        Ok(ContainerNode {
            spec: spec.clone(),
            options: options.clone(),
            network: network.to_string(),
            container,
        })
    }

    pub fn node_id(&self) -> &str {
        &self.spec.node_id
    }

    /// The container's name (also its host name and network alias).
    pub fn host(&self) -> &str {
        &self.spec.host
    }

    /// Runs `cmd` inside the container and waits for it to finish.
    pub async fn exec(&self, cmd: &[&str]) -> Result<ExecOutput> {
        exec(&self.container, cmd).await
    }

    /// Runs one SQL statement through `psql` inside the container; its
    /// output (unaligned, tuples only).
    pub async fn sql(&self, query: &str) -> Result<String> {
        sql(&self.container, query).await
    }

    /// This node's registry (statuses and coordinator).
    pub async fn registry(&self) -> Result<Registry> {
        registry(&self.container).await
    }

    /// `steep-repl nodes --json` inside the container: the registry as the
    /// daemon serves it over its local socket (IPC).
    pub async fn cli_nodes(&self) -> Result<serde_json::Value> {
        let out = self.exec(&["steep-repl", "nodes", "--json"]).await?;
        if out.code != 0 {
            bail!(
                "steep-repl nodes --json on {} exited {}: {}",
                self.node_id(),
                out.code,
                out.stderr.trim()
            );
        }
        serde_json::from_str(&out.stdout)
            .with_context(|| format!("steep-repl nodes --json said {:?}", out.stdout))
    }

    /// The node's address on its test network (changes after a restart or
    /// a reconnection, so it is read each time).
    pub fn address(&self) -> Result<IpAddr> {
        docker::address_on(self.host(), &self.network)
    }

    /// `GET path` on the node's HTTP probe port, at its address.
    pub async fn http_get(&self, path: &str) -> Result<Response> {
        http_get(self.address()?, path).await
    }

    /// Everything the container wrote to stdout and stderr so far.
    pub async fn logs(&self) -> String {
        logs(&self.container).await
    }

    /// `docker pause`: every process of the node frozen, its address kept.
    pub async fn pause(&self) -> Result<()> {
        self.container.pause().await.context("docker pause")
    }

    pub async fn unpause(&self) -> Result<()> {
        self.container.unpause().await.context("docker unpause")
    }

    /// Drops, inside this container's network namespace, every packet that
    /// comes from `from` (one direction: this node still sends to it, and
    /// `from` still hears this node's answers... which never come back).
    /// Run from the host with nsenter and the host's iptables.
    pub fn drop_from(&self, from: IpAddr) -> Result<()> {
        self.iptables(&["-I", "INPUT", "-s", &from.to_string(), "-j", "DROP"])
    }

    /// Removes every rule `drop_from` added.
    pub fn heal_drops(&self) -> Result<()> {
        self.iptables(&["-F", "INPUT"])
    }

    fn iptables(&self, args: &[&str]) -> Result<()> {
        let pid = docker::docker(&["inspect", "-f", "{{.State.Pid}}", self.host()])?;
        let mut cmd = std::process::Command::new("nsenter");
        cmd.args(["-t", &pid, "-n", "iptables"]).args(args);
        let out = cmd.output().context("running nsenter ... iptables")?;
        if !out.status.success() {
            bail!(
                "iptables {} in {} failed: {}",
                args.join(" "),
                self.host(),
                String::from_utf8_lossy(&out.stderr).trim()
            );
        }
        Ok(())
    }

    /// The daemon's IPC socket on the host, when [`NodeOptions::ipc_dir`]
    /// was given.
    pub fn socket(&self) -> Option<std::path::PathBuf> {
        self.options
            .ipc_dir
            .as_ref()
            .map(|d| d.join("steep-repl.sock"))
    }

    /// Drops, in this container's namespace, a share (0..1) of the packets
    /// that arrive on the peers' port (iptables' `statistic` match; the
    /// kernel here has no netem). Removed by [`Self::heal_drops`].
    pub fn lose_packets(&self, probability: f64) -> Result<()> {
        self.iptables(&[
            "-I",
            "INPUT",
            "-p",
            "tcp",
            "--dport",
            &GRPC_PORT.to_string(),
            "-m",
            "statistic",
            "--mode",
            "random",
            "--probability",
            &format!("{probability:.2}"),
            "-j",
            "DROP",
        ])
    }

    /// `kill -9` of the daemon inside the container (the entrypoint
    /// restarts it when the node runs with `STEEP_RESTART_DELAY`).
    pub async fn kill_daemon(&self) -> Result<()> {
        let out = self
            .exec(&["sh", "-c", "kill -9 $(pidof steep-repl)"])
            .await?;
        if out.code != 0 {
            bail!(
                "kill -9 of the daemon in {} exited {}: {}{}",
                self.node_id(),
                out.code,
                out.stdout,
                out.stderr
            );
        }
        Ok(())
    }

    /// Cuts the node off its network.
    pub fn disconnect(&self) -> Result<()> {
        docker::disconnect(&self.network, self.host())
    }

    /// Connects the node again, under the same alias.
    pub fn reconnect(&self) -> Result<()> {
        docker::connect(&self.network, self.host(), self.host())
    }

    /// `docker restart`: the entrypoint stops the daemon, then PostgreSQL,
    /// and starts both again on the same filesystem.
    pub fn restart(&self) -> Result<()> {
        docker::restart(self.host(), 30)
    }

    /// Stops or starts the node's PostgreSQL from inside the container.
    pub async fn postgresql(&self, action: &str) -> Result<()> {
        let out = self.exec(&["steep-pg", action]).await?;
        if out.code != 0 {
            bail!(
                "steep-pg {action} on {} exited {}: {}{}",
                self.node_id(),
                out.code,
                out.stdout,
                out.stderr
            );
        }
        Ok(())
    }
}

/// `GET path` on a node's HTTP probe port at `address` (blocking client,
/// off the runtime's thread).
pub async fn http_get(address: IpAddr, path: &str) -> Result<Response> {
    let addr = SocketAddr::new(address, HTTP_PORT);
    let path = path.to_string();
    tokio::task::spawn_blocking(move || http::request(addr, "GET", &path, Duration::from_secs(3)))
        .await
        .context("the HTTP request task failed")?
}

/// Runs `cmd` in `container`; its exit code and output.
pub async fn exec(container: &ContainerAsync<GenericImage>, cmd: &[&str]) -> Result<ExecOutput> {
    let mut result = container
        .exec(ExecCommand::new(cmd.iter().copied()))
        .await
        .with_context(|| format!("docker exec {cmd:?}"))?;
    let stdout = String::from_utf8_lossy(&result.stdout_to_vec().await?).into_owned();
    let stderr = String::from_utf8_lossy(&result.stderr_to_vec().await?).into_owned();
    // The streams end when the command exits; the engine may record the
    // exit code a moment later.
    for _ in 0..100 {
        if let Some(code) = result.exit_code().await? {
            return Ok(ExecOutput {
                code,
                stdout,
                stderr,
            });
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    bail!("docker exec {cmd:?}: no exit code after its output ended")
}

/// One SQL statement through `psql` in `container` (PG* variables of the
/// image point it at the local server).
pub async fn sql(container: &ContainerAsync<GenericImage>, query: &str) -> Result<String> {
    let out = exec(
        container,
        &[
            "psql",
            "-X",
            "-q",
            "-A",
            "-t",
            "-v",
            "ON_ERROR_STOP=1",
            "-c",
            query,
        ],
    )
    .await?;
    if out.code != 0 {
        bail!("psql exited {}: {}", out.code, out.stderr.trim());
    }
    Ok(out.stdout.trim().to_string())
}

/// The registry of the node in `container` (its statuses, read in one
/// statement) and the coordinator its daemon names now (`steep-repl status`
/// over its local socket: the live answer, not the projected column).
pub async fn registry(container: &ContainerAsync<GenericImage>) -> Result<Registry> {
    let json = sql(
        container,
        "SELECT json_build_object(\
           'statuses', coalesce((SELECT json_object_agg(node_id, status) FROM steep_repl.nodes), '{}'))",
    )
    .await?;
    let status = exec(container, &["steep-repl", "status", "--json"]).await?;
    if status.code != 0 {
        bail!(
            "steep-repl status --json exited {}: {}",
            status.code,
            status.stderr.trim()
        );
    }
    let status: serde_json::Value = serde_json::from_str(&status.stdout)
        .with_context(|| format!("steep-repl status --json said {:?}", status.stdout))?;
    let value: serde_json::Value =
        serde_json::from_str(&json).with_context(|| format!("registry query said {json:?}"))?;
    let statuses = value["statuses"]
        .as_object()
        .context("no statuses")?
        .iter()
        .map(|(id, status)| (id.clone(), status.as_str().unwrap_or_default().to_string()))
        .collect();
    Ok(Registry {
        statuses,
        coordinator: status["node"]["coordinator_id"]
            .as_str()
            .map(str::to_string),
    })
}

/// The container's stdout and stderr so far.
pub async fn logs(container: &ContainerAsync<GenericImage>) -> String {
    let out = container.stdout_to_vec().await.unwrap_or_default();
    let err = container.stderr_to_vec().await.unwrap_or_default();
    format!(
        "{}{}",
        String::from_utf8_lossy(&out),
        String::from_utf8_lossy(&err)
    )
}

pub use crate::tail;

/// `http::Response` status, or the error, in a few words (for messages).
pub fn describe(res: &Result<Response>) -> String {
    match res {
        Ok(r) => format!("{} {}", r.status, r.text()),
        Err(e) => format!("{e:#}"),
    }
}
