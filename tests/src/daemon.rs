//! Real `steep-repl` processes for integration tests.
//!
//! Each [`Daemon`] gets its own folder with a generated configuration file,
//! socket, lock, audit spool and log (stderr), and is driven only through
//! its public faces: signals, exit codes, its log, its IPC socket, and what
//! it writes to PostgreSQL (later also HTTP and gRPC).

use crate::ipc::IpcClient;
use crate::pg::{PgServer, DAEMON_PASSWORD, DAEMON_USER};
use anyhow::{bail, Context, Result};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};
use tempfile::TempDir;

/// The `steep-repl` binary built by `cargo build` (deploy/test.sh builds it
/// before the tests), or `$STEEP_DAEMON_BIN`.
pub fn steep_repl_bin() -> Result<PathBuf> {
    if let Ok(path) = std::env::var("STEEP_DAEMON_BIN") {
        return Ok(PathBuf::from(path));
    }
    let target = std::env::var("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|_| crate::paths::repo_root().join("target"));
    let bin = target.join("debug/steep-repl");
    if !bin.exists() {
        bail!(
            "{} is missing: run `cargo build` (deploy/test.sh does) before the tests",
            bin.display()
        );
    }
    Ok(bin)
}

/// What a test daemon connects to and how it is configured.
#[derive(Debug, Clone)]
pub struct DaemonOptions {
    pub node_id: String,
    pub pg_port: u16,
    /// `postgresql.user`: [`DAEMON_USER`], a member of `steep_repl_daemon`.
    pub db_user: String,
    /// `postgresql.password`; none is written when empty.
    pub pg_password: String,
    pub pg_database: String,
    /// Extra YAML lines placed inside `repl:` (indented by the caller by two spaces).
    pub extra: String,
    /// The body of the `grpc:` section (lines indented by four spaces).
    pub grpc: String,
    /// `http.port` (on 127.0.0.1) written to the config, if any.
    pub http_port: Option<u16>,
    /// `http.enabled`.
    pub http_enabled: bool,
    /// Extra YAML lines placed inside `repl.ipc:` (indented by the caller by four spaces).
    pub ipc_extra: String,
    /// Extra YAML lines placed inside `repl.raft:` (indented by the caller by
    /// four spaces), e.g. short Raft timings. `raft.dir` is always the
    /// daemon's own folder (`raft/` in its home), so that daemons of
    /// parallel tests with the same node_id never share a Raft log.
    pub raft_extra: String,
    /// Extra YAML lines placed inside `repl.postgresql:` (indented by the
    /// caller by four spaces), e.g. `enabled: false` for a witness.
    pub pg_extra: String,
    /// `log.level`: `debug` for tests (a failing test's log says what the
    /// daemon and its dependencies did); benchmarks run the product's
    /// default, `info` (at `debug`, openraft, tonic and h2 log every
    /// message, which costs more CPU than the writes being measured).
    pub log_level: &'static str,
}

impl DaemonOptions {
    /// A daemon for `pg`, with every listener not yet tested turned off,
    /// connecting as [`DAEMON_USER`] (created on `pg` here when missing).
    pub fn for_server(node_id: &str, pg: &PgServer) -> Self {
        pg.create_daemon_login()
            .expect("creating the test daemon's login role");
        Self::for_port(node_id, pg.port)
    }

    /// The same for a PostgreSQL port that may have no server behind it.
    pub fn for_port(node_id: &str, pg_port: u16) -> Self {
        DaemonOptions {
            node_id: node_id.to_string(),
            pg_port,
            db_user: DAEMON_USER.to_string(),
            pg_password: DAEMON_PASSWORD.to_string(),
            pg_database: "postgres".to_string(),
            extra: String::new(),
            grpc: "    enabled: false\n".to_string(),
            http_port: None,
            http_enabled: false,
            ipc_extra: String::new(),
            raft_extra: String::new(),
            pg_extra: String::new(),
            log_level: "debug",
        }
    }

    /// Turns HTTP on, on a free loopback port.
    pub fn with_http(mut self) -> Self {
        self.http_port = Some(crate::ports::free_port());
        self.http_enabled = true;
        self
    }

    /// Where the daemon answers HTTP, when it does.
    pub fn http_addr(&self) -> Option<std::net::SocketAddr> {
        self.http_port
            .map(|port| std::net::SocketAddr::from(([127, 0, 0, 1], port)))
    }
}

/// A folder holding one daemon's files.
pub struct DaemonHome {
    pub dir: TempDir,
}

impl DaemonHome {
    pub fn new() -> Result<Self> {
        Ok(DaemonHome {
            dir: tempfile::Builder::new().prefix("steep-d-").tempdir()?,
        })
    }
    pub fn config_path(&self) -> PathBuf {
        self.dir.path().join("config.yaml")
    }
    pub fn socket_path(&self) -> PathBuf {
        self.dir.path().join("ipc.sock")
    }
    pub fn lock_path(&self) -> PathBuf {
        self.dir.path().join("ipc.sock.lock")
    }
    pub fn spool_path(&self) -> PathBuf {
        self.dir.path().join("audit.spool")
    }
    pub fn log_path(&self) -> PathBuf {
        self.dir.path().join("daemon.log")
    }
    /// `raft.dir`: the Raft log, vote, snapshots and store identity.
    pub fn raft_dir(&self) -> PathBuf {
        self.dir.path().join("raft")
    }

    /// Writes the configuration file for `options`.
    pub fn write_config(&self, options: &DaemonOptions) -> Result<()> {
        let quote = |s: &str| serde_json::to_string(s).expect("strings serialize");
        let yaml = format!(
            "repl:\n  node_id: {node}\n  node_name: {name}\n  advertise_host: 127.0.0.1\n  \
             postgresql:\n    host: 127.0.0.1\n    port: {port}\n    database: {db}\n    user: {user}\n{pw}{pg_extra}  \
             grpc:\n{grpc}  {http}\n  \
             ipc:\n    path: {sock}\n{ipc_extra}  audit:\n    spool_path: {spool}\n  \
             raft:\n    dir: {raft}\n{raft_extra}  \
             log:\n    level: {level}\n    target: terminal\n{extra}",
            level = options.log_level,
            node = quote(&options.node_id),
            name = quote(&format!("Node {}", options.node_id)),
            port = options.pg_port,
            db = quote(&options.pg_database),
            user = quote(&options.db_user),
            // None at all when empty (`pg_extra` may give a password_command).
            pw = if options.pg_password.is_empty() {
                String::new()
            } else {
                format!("    password: {}\n", quote(&options.pg_password))
            },
            sock = quote(&self.socket_path().display().to_string()),
            spool = quote(&self.spool_path().display().to_string()),
            raft = quote(&self.raft_dir().display().to_string()),
            raft_extra = options.raft_extra,
            pg_extra = options.pg_extra,
            extra = options.extra,
            ipc_extra = options.ipc_extra,
            grpc = options.grpc,
            http = match options.http_port {
                Some(port) => format!(
                    "http:\n    enabled: {}\n    bind: 127.0.0.1\n    port: {port}",
                    options.http_enabled
                ),
                None => format!("http:\n    enabled: {}", options.http_enabled),
            },
        );
        std::fs::write(self.config_path(), yaml).context("writing the daemon config")?;
        // It holds a password: private, as the daemon recommends.
        std::fs::set_permissions(
            self.config_path(),
            std::os::unix::fs::PermissionsExt::from_mode(0o600),
        )
        .context("chmod of the daemon config")
    }
}

/// A running daemon process.
pub struct Daemon {
    pub home: DaemonHome,
    child: Option<Child>,
}

impl Daemon {
    /// Writes the config and starts `steep-repl run` in the background.
    pub fn start(options: &DaemonOptions) -> Result<Daemon> {
        let home = DaemonHome::new()?;
        home.write_config(options)?;
        Daemon::start_in(home)
    }

    /// Starts (again) with the configuration already in `home`.
    pub fn start_in(home: DaemonHome) -> Result<Daemon> {
        let child = spawn_run(&home, &[])?;
        Ok(Daemon {
            home,
            child: Some(child),
        })
    }

    /// Starts with at most `nofile` open descriptors (soft and hard limit).
    pub fn start_limited(options: &DaemonOptions, nofile: u64) -> Result<Daemon> {
        let home = DaemonHome::new()?;
        home.write_config(options)?;
        let child = spawn_run_limited(&home, &[], Some(nofile))?;
        Ok(Daemon {
            home,
            child: Some(child),
        })
    }

    /// Starts with extra environment variables (e.g. NOTIFY_SOCKET).
    pub fn start_with_env(options: &DaemonOptions, env: &[(&str, &str)]) -> Result<Daemon> {
        let home = DaemonHome::new()?;
        home.write_config(options)?;
        let child = spawn_run(&home, env)?;
        Ok(Daemon {
            home,
            child: Some(child),
        })
    }

    /// Starts the daemon again after it exited, keeping its files.
    pub fn restart(&mut self) -> Result<()> {
        if self.child.is_some() {
            bail!("the daemon is still running");
        }
        self.child = Some(spawn_run(&self.home, &[])?);
        Ok(())
    }

    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(Child::id)
    }

    /// Everything the daemon logged so far.
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.home.log_path()).unwrap_or_default()
    }

    /// Waits until the log contains `needle`.
    pub fn wait_for_log(&self, needle: &str, timeout: Duration) -> Result<()> {
        let deadline = Instant::now() + timeout;
        loop {
            if self.log().contains(needle) {
                return Ok(());
            }
            if Instant::now() > deadline {
                bail!(
                    "the daemon did not log {needle:?} within {timeout:?}; log:\n{}",
                    self.log()
                );
            }
            std::thread::sleep(Duration::from_millis(25));
        }
    }

    /// A new connection to the daemon's IPC socket.
    pub fn ipc(&self) -> Result<IpcClient> {
        IpcClient::connect(&self.home.socket_path())
    }

    /// Waits until the IPC socket answers `status.get`, then returns that connection.
    pub fn wait_for_ipc(&self, timeout: Duration) -> Result<IpcClient> {
        let deadline = Instant::now() + timeout;
        loop {
            if let Ok(mut client) = self.ipc() {
                if client.call("status.get", serde_json::json!({})).is_ok() {
                    return Ok(client);
                }
            }
            if Instant::now() > deadline {
                bail!(
                    "IPC did not answer within {timeout:?}; log:\n{}",
                    self.log()
                );
            }
            std::thread::sleep(Duration::from_millis(25));
        }
    }

    /// Waits until `health.check` reports PostgreSQL usable (connected,
    /// extension present, fresh); returns an IPC connection.
    pub fn wait_for_postgresql(&self, timeout: Duration) -> Result<IpcClient> {
        let deadline = Instant::now() + timeout;
        let mut client = self.wait_for_ipc(timeout)?;
        loop {
            let health = client.call("health.check", serde_json::json!({}))?;
            if health["components"]["postgresql"]["healthy"] == true {
                return Ok(client);
            }
            if Instant::now() > deadline {
                bail!(
                    "PostgreSQL never became usable: {health}; log:\n{}",
                    self.log()
                );
            }
            std::thread::sleep(Duration::from_millis(25));
        }
    }

    /// Sends a signal (e.g. `libc::SIGTERM`).
    pub fn signal(&self, signal: i32) -> Result<()> {
        let pid = self.pid().context("the daemon is not running")?;
        // SAFETY: kill has no memory effects; the pid is our child's.
        let rc = unsafe { libc::kill(pid as i32, signal) };
        if rc != 0 {
            bail!(
                "kill({pid}, {signal}) failed: {}",
                std::io::Error::last_os_error()
            );
        }
        Ok(())
    }

    /// How the process ended, if it has (without waiting).
    pub fn exited(&mut self) -> Result<Option<ExitStatus>> {
        let child = self.child.as_mut().context("the daemon is not running")?;
        let status = child.try_wait()?;
        if status.is_some() {
            self.child = None;
        }
        Ok(status)
    }

    /// Waits for the process to exit.
    pub fn wait_exit(&mut self, timeout: Duration) -> Result<ExitStatus> {
        let child = self.child.as_mut().context("the daemon is not running")?;
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(status) = child.try_wait()? {
                self.child = None;
                return Ok(status);
            }
            if Instant::now() > deadline {
                bail!(
                    "the daemon did not exit within {timeout:?}; log:\n{}",
                    self.log()
                );
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// SIGTERM and wait for a clean exit.
    pub fn stop(&mut self) -> Result<ExitStatus> {
        self.signal(libc::SIGTERM)?;
        self.wait_exit(Duration::from_secs(20))
    }

    /// `kill -9`, as a crash.
    pub fn kill9(&mut self) -> Result<()> {
        self.signal(libc::SIGKILL)?;
        self.wait_exit(Duration::from_secs(10))?;
        Ok(())
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        if let Some(child) = self.child.as_mut() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

fn spawn_run(home: &DaemonHome, env: &[(&str, &str)]) -> Result<Child> {
    spawn_run_limited(home, env, None)
}

/// `spawn_run` with a limit on open descriptors (soft and hard), as a
/// service manager may impose.
fn spawn_run_limited(
    home: &DaemonHome,
    env: &[(&str, &str)],
    nofile: Option<u64>,
) -> Result<Child> {
    let log = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(home.log_path())?;
    let mut cmd = Command::new(steep_repl_bin()?);
    if let Some(limit) = nofile {
        use std::os::unix::process::CommandExt;
        // SAFETY: setrlimit is async-signal-safe; nothing else runs here.
        unsafe {
            cmd.pre_exec(move || {
                let rlim = libc::rlimit {
                    rlim_cur: limit,
                    rlim_max: limit,
                };
                if libc::setrlimit(libc::RLIMIT_NOFILE, &rlim) != 0 {
                    return Err(std::io::Error::last_os_error());
                }
                Ok(())
            });
        }
    }
    cmd.arg("run")
        .arg("--config")
        .arg(home.config_path())
        .stdin(Stdio::null())
        .stdout(log.try_clone()?)
        .stderr(log)
        .env_remove("JOURNAL_STREAM")
        .env_remove("NOTIFY_SOCKET")
        .envs(env.iter().copied())
        .spawn()
        .context("starting steep-repl run")
}

/// Runs the CLI to completion: `(exit code, stdout, stderr)`.
pub fn run_cli(args: &[&str], config: Option<&Path>) -> Result<(i32, String, String)> {
    run_cli_env(args, config, &[])
}

/// Like [`run_cli`], with extra environment variables.
pub fn run_cli_env(
    args: &[&str],
    config: Option<&Path>,
    env: &[(&str, &str)],
) -> Result<(i32, String, String)> {
    let mut cmd = Command::new(steep_repl_bin()?);
    cmd.envs(env.iter().copied());
    if let Some(config) = config {
        cmd.arg("--config").arg(config);
    }
    let output = cmd.args(args).stdin(Stdio::null()).output()?;
    Ok((
        output.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&output.stdout).into_owned(),
        String::from_utf8_lossy(&output.stderr).into_owned(),
    ))
}
