//! Throwaway PostgreSQL servers for tests.
//!
//! Each [`PgServer`] owns a temporary data folder and a server on a free
//! loopback port. Local (socket) connections are trusted; TCP connections
//! need the superuser's password, so the daemon's real authentication path is
//! exercised. When the tests run as root, initdb and the server run as the
//! unprivileged account `$STEEP_PG_USER` (default `steep`, created by
//! deploy/test.sh).

use crate::ports::free_port;
use anyhow::{bail, Context, Result};
use sqlx::postgres::{PgConnectOptions, PgConnection};
use sqlx::Connection;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};
use tempfile::TempDir;

/// The superuser every test server is created with.
pub const SUPERUSER: &str = "postgres";
/// Its password for TCP connections.
pub const SUPERUSER_PASSWORD: &str = "steep test p@ss:word/'\"";

/// The login role test daemons connect as: a member of the extension's
/// `steep_repl_daemon` role and nothing else, never a superuser (tests use
/// [`SUPERUSER`] only to set up and to check).
pub const DAEMON_USER: &str = "steep_daemon";
/// Its password (TCP connections need one, as for the superuser).
pub const DAEMON_PASSWORD: &str = "steep daemon p@ss:word/'\"";

/// A running (or stopped) throwaway PostgreSQL server.
pub struct PgServer {
    bindir: PathBuf,
    /// Holds the data folder, socket folder and log; removed on drop.
    root: TempDir,
    pub port: u16,
    running: bool,
}

/// True when the tests run as root (CI does).
pub fn is_root() -> bool {
    // SAFETY: geteuid has no preconditions and cannot fail.
    unsafe { libc::geteuid() == 0 }
}

/// The unprivileged account servers run as when the tests run as root.
pub fn pg_user() -> String {
    std::env::var("STEEP_PG_USER").unwrap_or_else(|_| "steep".to_string())
}

/// Builds a command that runs as the unprivileged account when we are root.
fn command_as_pg_user(program: &Path) -> Command {
    if is_root() {
        let mut cmd = Command::new("runuser");
        cmd.arg("-u").arg(pg_user()).arg("--").arg(program);
        cmd
    } else {
        Command::new(program)
    }
}

fn check(output: Output, what: &str) -> Result<Output> {
    if !output.status.success() {
        bail!(
            "{what} failed ({}): {}{}",
            output.status,
            String::from_utf8_lossy(&output.stdout),
            String::from_utf8_lossy(&output.stderr)
        );
    }
    Ok(output)
}

impl PgServer {
    /// Starts a fresh PostgreSQL 18 server (the project's).
    pub fn start() -> Result<Self> {
        Self::start_with(&crate::paths::pg18_bindir()?)
    }

    /// Starts a fresh server from the PostgreSQL installation in `bindir`.
    pub fn start_with(bindir: &Path) -> Result<Self> {
        let root = tempfile::Builder::new()
            .prefix("steep-pg-")
            .tempdir()
            .context("creating a temporary folder for PostgreSQL")?;
        let server = PgServer {
            bindir: bindir.to_path_buf(),
            root,
            port: free_port(),
            running: false,
        };
        server.initdb()?;
        let mut server = server;
        // The port was free when chosen, but another test's process (or an
        // outgoing connection) may take it before the server binds it: then
        // start on another one rather than fail the test.
        let mut attempts = 1;
        loop {
            match server.start_again() {
                Ok(()) => return Ok(server),
                Err(e) if attempts < 4 && server.log_tail().contains("could not bind") => {
                    attempts += 1;
                    server.port = free_port();
                    eprintln!(
                        "PostgreSQL could not bind its port ({e:#}); trying port {}",
                        server.port
                    );
                }
                Err(e) => return Err(e),
            }
        }
    }

    /// The last lines of the server's log (empty when there is none).
    pub fn log_tail(&self) -> String {
        crate::tail(
            &std::fs::read_to_string(self.log_file()).unwrap_or_default(),
            20,
        )
    }

    fn data_dir(&self) -> PathBuf {
        self.root.path().join("data")
    }

    /// The folder holding the server's Unix socket.
    pub fn socket_dir(&self) -> PathBuf {
        self.root.path().to_path_buf()
    }

    /// The server's log file.
    pub fn log_file(&self) -> PathBuf {
        self.root.path().join("postgres.log")
    }

    fn initdb(&self) -> Result<()> {
        if is_root() {
            let user = pg_user();
            check(
                Command::new("chown")
                    .arg(format!("{user}:"))
                    .arg(self.root.path())
                    .output()?,
                &format!(
                    "chown of the test folder to {user} (deploy/test.sh creates that account)"
                ),
            )?;
        }
        let pwfile = self.root.path().join("pwfile");
        std::fs::write(&pwfile, format!("{SUPERUSER_PASSWORD}\n"))?;
        if is_root() {
            Command::new("chown")
                .arg(format!("{}:", pg_user()))
                .arg(&pwfile)
                .status()?;
        }
        check(
            command_as_pg_user(&self.bindir.join("initdb"))
                .arg("-D")
                .arg(self.data_dir())
                .args(["-U", SUPERUSER, "-E", "UTF8", "--locale=C", "--no-sync"])
                .args(["--auth-local=trust", "--auth-host=scram-sha-256"])
                .arg(format!("--pwfile={}", pwfile.display()))
                .output()
                .context("running initdb")?,
            "initdb",
        )?;
        std::fs::remove_file(&pwfile)?;
        Ok(())
    }

    /// Starts the server again on the same port and data (after [`stop`](Self::stop)).
    pub fn start_again(&mut self) -> Result<()> {
        let options = format!(
            "-p {} -k {} -c listen_addresses=127.0.0.1 -c fsync=off -c max_connections=200",
            self.port,
            self.socket_dir().display()
        );
        check(
            command_as_pg_user(&self.bindir.join("pg_ctl"))
                .arg("-D")
                .arg(self.data_dir())
                .arg("-l")
                .arg(self.log_file())
                .arg("-o")
                .arg(options)
                .args(["-w", "-t", "60", "start"])
                .stdin(Stdio::null())
                .output()
                .context("running pg_ctl start")?,
            &format!("pg_ctl start (log: {})", self.log_file().display()),
        )
        .map_err(|e| e.context(format!("PostgreSQL's log ends with:\n{}", self.log_tail())))?;
        self.running = true;
        Ok(())
    }

    /// Stops the server (fast shutdown), keeping its data.
    pub fn stop(&mut self) -> Result<()> {
        check(
            command_as_pg_user(&self.bindir.join("pg_ctl"))
                .arg("-D")
                .arg(self.data_dir())
                .args(["-m", "fast", "-w", "stop"])
                .output()?,
            "pg_ctl stop",
        )?;
        self.running = false;
        Ok(())
    }

    /// Sends `signal` to the postmaster and every process it started
    /// (SIGSTOP: every query hangs, as under a stuck disk; SIGCONT: back).
    pub fn signal_all(&self, signal: i32) -> Result<()> {
        let pid_file = std::fs::read_to_string(self.data_dir().join("postmaster.pid"))?;
        let postmaster: i32 = pid_file
            .lines()
            .next()
            .and_then(|l| l.trim().parse().ok())
            .context("postmaster.pid has no pid")?;
        let mut pids = vec![postmaster];
        for entry in std::fs::read_dir("/proc")?.flatten() {
            let Ok(pid) = entry.file_name().to_string_lossy().parse::<i32>() else {
                continue;
            };
            let Ok(stat) = std::fs::read_to_string(entry.path().join("stat")) else {
                continue;
            };
            // "pid (comm) state ppid ...": comm may hold spaces; read after ')'.
            let ppid = stat
                .rsplit_once(')')
                .and_then(|(_, rest)| rest.split_whitespace().nth(1))
                .and_then(|p| p.parse::<i32>().ok());
            if ppid == Some(postmaster) {
                pids.push(pid);
            }
        }
        for pid in pids {
            // SAFETY: kill has no memory effects; these are our server's processes.
            unsafe { libc::kill(pid, signal) };
        }
        Ok(())
    }

    /// Connection options for the superuser over TCP (password required).
    pub fn tcp_options(&self, database: &str) -> PgConnectOptions {
        PgConnectOptions::new()
            .host("127.0.0.1")
            .port(self.port)
            .username(SUPERUSER)
            .password(SUPERUSER_PASSWORD)
            .database(database)
    }

    /// Connection options for the daemon's login role [`DAEMON_USER`] over
    /// TCP, as a daemon connects (after [`PgServer::create_daemon_login`]).
    pub fn daemon_tcp_options(&self, database: &str) -> PgConnectOptions {
        PgConnectOptions::new()
            .host("127.0.0.1")
            .port(self.port)
            .username(DAEMON_USER)
            .password(DAEMON_PASSWORD)
            .database(database)
    }

    /// Connection options for `user` over the Unix socket (trusted).
    pub fn socket_options(&self, user: &str, database: &str) -> PgConnectOptions {
        PgConnectOptions::new()
            .socket(self.socket_dir())
            .port(self.port)
            .username(user)
            .database(database)
    }

    /// Connects as the superuser over TCP to `postgres`.
    pub async fn connect(&self) -> Result<PgConnection> {
        self.connect_to("postgres").await
    }

    /// Connects as the superuser over TCP to `database`, retrying briefly
    /// while the server finishes starting.
    pub async fn connect_to(&self, database: &str) -> Result<PgConnection> {
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            match PgConnection::connect_with(&self.tcp_options(database)).await {
                Ok(conn) => return Ok(conn),
                Err(e) if Instant::now() < deadline => {
                    let _ = e;
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
                Err(e) => return Err(e).context(format!("connecting to port {}", self.port)),
            }
        }
    }

    /// Creates [`DAEMON_USER`] (LOGIN, [`DAEMON_PASSWORD`]) as a member of
    /// `steep_repl_daemon`, creating that role first when no extension did
    /// yet (a later `CREATE EXTENSION steep_repl` uses it as it is, as it
    /// does with a role a DBA made beforehand). Roles belong to the whole
    /// server; idempotent, and safe when daemons of one test race to it.
    pub fn create_daemon_login(&self) -> Result<()> {
        let sql = format!(
            "DO $login$
             BEGIN
                 BEGIN
                     CREATE ROLE steep_repl_daemon NOLOGIN;
                 EXCEPTION WHEN duplicate_object OR unique_violation THEN NULL;
                 END;
                 BEGIN
                     CREATE ROLE {DAEMON_USER} LOGIN PASSWORD $pw${DAEMON_PASSWORD}$pw$;
                 EXCEPTION WHEN duplicate_object OR unique_violation THEN NULL;
                 END;
                 IF NOT pg_has_role('{DAEMON_USER}', 'steep_repl_daemon', 'MEMBER') THEN
                     GRANT steep_repl_daemon TO {DAEMON_USER};
                 END IF;
             END
             $login$"
        );
        self.run_tool(
            "psql",
            &[
                "-X",
                "-q",
                "-v",
                "ON_ERROR_STOP=1",
                "-d",
                "postgres",
                "-c",
                &sql,
            ],
        )
        .map(|_| ())
        .with_context(|| format!("creating the daemon's login role {DAEMON_USER}"))
    }

    /// Runs a program of this installation's bin folder (pg_dump, psql, ...)
    /// as the unprivileged account, against this server's socket.
    pub fn run_tool(&self, tool: &str, args: &[&str]) -> Result<Output> {
        let output = command_as_pg_user(&self.bindir.join(tool))
            .arg("-h")
            .arg(self.socket_dir())
            .arg("-p")
            .arg(self.port.to_string())
            .arg("-U")
            .arg(SUPERUSER)
            .args(args)
            .output()
            .with_context(|| format!("running {tool}"))?;
        check(output, tool)
    }
}

impl Drop for PgServer {
    fn drop(&mut self) {
        if self.running {
            let _ = command_as_pg_user(&self.bindir.join("pg_ctl"))
                .arg("-D")
                .arg(self.data_dir())
                .args(["-m", "immediate", "-w", "stop"])
                .output();
        }
    }
}
