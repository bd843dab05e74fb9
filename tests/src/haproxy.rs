//! A real HAProxy (Debian's, installed by deploy/test.sh) in front of test
//! servers, health-checking them through the daemons' HTTP ports.
//!
//! It runs in the foreground (`-db`) as a child process with a generated
//! configuration in a temporary folder, on free ports, and is read through
//! its stats socket (`show stat`), the way an operator would.

use crate::ports::free_port;
use anyhow::{bail, Context, Result};
use std::collections::BTreeMap;
use std::io::{Read, Write};
use std::net::SocketAddr;
use std::os::unix::net::UnixStream;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};
use tempfile::TempDir;

/// One backend server: where traffic goes, and the daemon HTTP port that
/// decides whether it may.
#[derive(Debug, Clone)]
pub struct Backend {
    pub name: String,
    pub traffic: SocketAddr,
    pub check_port: u16,
}

/// A running HAProxy.
pub struct Haproxy {
    dir: TempDir,
    child: Child,
    /// Where clients connect.
    pub frontend: SocketAddr,
}

fn haproxy_bin() -> Result<PathBuf> {
    for path in [
        "/usr/sbin/haproxy",
        "/usr/bin/haproxy",
        "/usr/local/sbin/haproxy",
    ] {
        if std::path::Path::new(path).exists() {
            return Ok(PathBuf::from(path));
        }
    }
    bail!("haproxy is not installed; deploy/test.sh installs Debian's haproxy")
}

impl Haproxy {
    /// A TCP frontend balancing round-robin over `backends`, each checked
    /// with HAProxy's default HTTP check (`option httpchk`: `OPTIONS /`) on
    /// its `check_port` every 200 ms; two results in a row flip a server.
    pub fn start(backends: &[Backend]) -> Result<Haproxy> {
        let dir = tempfile::Builder::new()
            .prefix("steep-haproxy-")
            .tempdir()?;
        let frontend = SocketAddr::from(([127, 0, 0, 1], free_port()));
        let mut config = format!(
            "global\n    stats socket {sock} mode 600 level admin\n\n\
             defaults\n    mode tcp\n    timeout connect 2s\n    timeout client 30s\n    timeout server 30s\n    \
             timeout check 2s\n\n\
             frontend db\n    bind {frontend}\n    default_backend nodes\n\n\
             backend nodes\n    balance roundrobin\n    option httpchk\n    \
             default-server inter 200ms fall 2 rise 2\n",
            sock = dir.path().join("admin.sock").display(),
        );
        for b in backends {
            config.push_str(&format!(
                "    server {} {} check port {}\n",
                b.name, b.traffic, b.check_port
            ));
        }
        let config_path = dir.path().join("haproxy.cfg");
        std::fs::write(&config_path, config)?;
        let log = std::fs::File::create(dir.path().join("haproxy.log"))?;
        let child = Command::new(haproxy_bin()?)
            .arg("-db")
            .arg("-f")
            .arg(&config_path)
            .stdin(Stdio::null())
            .stdout(log.try_clone()?)
            .stderr(log)
            .spawn()
            .context("starting haproxy")?;
        let mut haproxy = Haproxy {
            dir,
            child,
            frontend,
        };
        let deadline = Instant::now() + Duration::from_secs(10);
        while haproxy.server_states().is_err() {
            if let Some(status) = haproxy.child.try_wait()? {
                bail!("haproxy exited ({status}): {}", haproxy.log());
            }
            if Instant::now() > deadline {
                bail!(
                    "haproxy's stats socket did not answer; log: {}",
                    haproxy.log()
                );
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        Ok(haproxy)
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("haproxy.log")).unwrap_or_default()
    }

    /// Runs one command on the stats socket.
    pub fn command(&self, command: &str) -> Result<String> {
        let mut stream = UnixStream::connect(self.dir.path().join("admin.sock"))?;
        stream.set_read_timeout(Some(Duration::from_secs(5)))?;
        stream.write_all(format!("{command}\n").as_bytes())?;
        let mut out = String::new();
        stream.read_to_string(&mut out)?;
        Ok(out)
    }

    /// Each backend server's status as HAProxy sees it (`UP`, `DOWN`, ...,
    /// including transitions such as `UP 1/2`).
    pub fn server_states(&self) -> Result<BTreeMap<String, String>> {
        let csv = self.command("show stat")?;
        let mut lines = csv.lines();
        let header = lines.next().context("empty show stat")?;
        let columns: Vec<&str> = header.trim_start_matches("# ").split(',').collect();
        let col = |name: &str| {
            columns
                .iter()
                .position(|c| *c == name)
                .context("show stat column missing")
        };
        let (px, sv, status) = (col("pxname")?, col("svname")?, col("status")?);
        let mut states = BTreeMap::new();
        for line in lines {
            let fields: Vec<&str> = line.split(',').collect();
            if fields.len() > status
                && fields[px] == "nodes"
                && !["BACKEND", "FRONTEND"].contains(&fields[sv])
            {
                states.insert(fields[sv].to_string(), fields[status].to_string());
            }
        }
        Ok(states)
    }

    /// Waits until the servers' states are exactly `expected`.
    pub fn wait_for_states(&self, expected: &[(&str, &str)], timeout: Duration) -> Result<()> {
        let expected: BTreeMap<String, String> = expected
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        let deadline = Instant::now() + timeout;
        loop {
            let states = self.server_states()?;
            if states == expected {
                return Ok(());
            }
            if Instant::now() > deadline {
                bail!(
                    "HAProxy saw {states:?}, expected {expected:?} within {timeout:?}; log: {}",
                    self.log()
                );
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

impl Drop for Haproxy {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
