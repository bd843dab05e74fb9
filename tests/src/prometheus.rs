//! A real Prometheus and its `promtool`, both from Debian's `prometheus`
//! package (installed by deploy/test.sh), for the monitoring tests.
//!
//! Prometheus runs in the foreground as a child process, on a free loopback
//! port, with its configuration and storage in a temporary folder: never the
//! package's system service, which would listen on 9090. Tests read it only
//! through its HTTP API (`/api/v1/...`), the way Grafana and Alertmanager do.

use crate::http::{get, Response};
use crate::ports::free_port;
use anyhow::{bail, Context, Result};
use serde_json::Value;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};
use tempfile::TempDir;

/// Where Debian's package puts a program of `prometheus`.
fn packaged(name: &str) -> Result<PathBuf> {
    let path = Path::new("/usr/bin").join(name);
    if !path.exists() {
        bail!(
            "{} is missing; deploy/test.sh installs Debian's prometheus package, \
             which has both prometheus and promtool (apt-get install prometheus)",
            path.display()
        );
    }
    Ok(path)
}

/// `promtool`.
pub fn promtool_bin() -> Result<PathBuf> {
    packaged("promtool")
}

/// `prometheus`, the server.
pub fn prometheus_bin() -> Result<PathBuf> {
    packaged("prometheus")
}

/// Runs `promtool args...` in `dir`; its output when it exits 0, an error
/// quoting everything it printed otherwise.
pub fn promtool(dir: &Path, args: &[&str]) -> Result<String> {
    let output = Command::new(promtool_bin()?)
        .args(args)
        .current_dir(dir)
        .output()
        .context("running promtool")?;
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    if !output.status.success() {
        bail!(
            "promtool {} failed ({}):\n{text}",
            args.join(" "),
            output.status
        );
    }
    Ok(text)
}

/// Percent-encodes a query string value (everything but RFC 3986's
/// unreserved characters), for PromQL in a URL.
pub fn url_encode(value: &str) -> String {
    value
        .bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => {
                (b as char).to_string()
            }
            _ => format!("%{b:02X}"),
        })
        .collect()
}

/// A running Prometheus.
pub struct Prometheus {
    dir: TempDir,
    child: Child,
    pub addr: SocketAddr,
}

impl Prometheus {
    /// Starts Prometheus with `config` as its prometheus.yml and `files`
    /// (name, content: rule files the config names) beside it, and waits
    /// until it says it is ready.
    pub fn start(config: &str, files: &[(&str, &str)]) -> Result<Prometheus> {
        let dir = tempfile::Builder::new()
            .prefix("steep-prometheus-")
            .tempdir()?;
        for (name, content) in files {
            std::fs::write(dir.path().join(name), content)?;
        }
        let config_path = dir.path().join("prometheus.yml");
        std::fs::write(&config_path, config)?;
        let addr = SocketAddr::from(([127, 0, 0, 1], free_port()));
        let log = std::fs::File::create(dir.path().join("prometheus.log"))?;
        let child = Command::new(prometheus_bin()?)
            .arg(format!("--config.file={}", config_path.display()))
            .arg(format!(
                "--storage.tsdb.path={}",
                dir.path().join("data").display()
            ))
            .arg(format!("--web.listen-address={addr}"))
            .current_dir(dir.path())
            .stdin(Stdio::null())
            .stdout(log.try_clone()?)
            .stderr(log)
            .spawn()
            .context("starting prometheus")?;
        let mut prometheus = Prometheus { dir, child, addr };
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            if matches!(get(addr, "/-/ready"), Ok(res) if res.status == 200) {
                return Ok(prometheus);
            }
            if let Some(status) = prometheus.child.try_wait()? {
                bail!("prometheus exited ({status}):\n{}", prometheus.log());
            }
            if Instant::now() > deadline {
                bail!(
                    "prometheus was not ready within 30 s:\n{}",
                    crate::tail(&prometheus.log(), 30)
                );
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("prometheus.log")).unwrap_or_default()
    }

    /// `GET /api/v1/<path>`: the `data` of a successful answer, an error
    /// with Prometheus's own `error` otherwise.
    pub fn api(&self, path: &str) -> Result<Value> {
        let res: Response = get(self.addr, &format!("/api/v1/{path}"))?;
        let body: Value = serde_json::from_slice(&res.dechunked()?)
            .with_context(|| format!("/api/v1/{path} answered {}: not JSON", res.status))?;
        if body["status"] != "success" {
            bail!(
                "/api/v1/{path} answered {} {}: {}",
                res.status,
                body["errorType"],
                body["error"]
            );
        }
        Ok(body["data"].clone())
    }

    /// The instant vector `expr` evaluates to now: one JSON object per
    /// series, with `metric` (its labels) and `value` ([time, "value"]).
    pub fn query(&self, expr: &str) -> Result<Vec<Value>> {
        let data = self.api(&format!("query?query={}", url_encode(expr)))?;
        match data["resultType"].as_str() {
            Some("vector") => Ok(data["result"].as_array().cloned().unwrap_or_default()),
            // A scalar or string answer still proves the query ran.
            Some(_) => Ok(Vec::new()),
            None => bail!("query {expr:?} answered no resultType: {data}"),
        }
    }

    /// Every alert that is pending or firing, with `labels`,
    /// `annotations` and `state`.
    pub fn alerts(&self) -> Result<Vec<Value>> {
        Ok(self.api("alerts")?["alerts"]
            .as_array()
            .cloned()
            .unwrap_or_default())
    }

    /// Every rule of every loaded group, with `name`, `health` and
    /// `lastError`.
    pub fn rules(&self) -> Result<Vec<Value>> {
        let data = self.api("rules")?;
        let groups = data["groups"].as_array().cloned().unwrap_or_default();
        Ok(groups
            .iter()
            .flat_map(|g| g["rules"].as_array().cloned().unwrap_or_default())
            .collect())
    }

    /// Asks `probe` until it returns `Some` (errors count as "not yet"),
    /// for at most `timeout`; the error names `what` and the last answer.
    pub fn wait_for<T>(
        &self,
        what: &str,
        timeout: Duration,
        mut probe: impl FnMut(&Prometheus) -> Result<Option<T>>,
    ) -> Result<T> {
        let deadline = Instant::now() + timeout;
        loop {
            let last = match probe(self) {
                Ok(Some(found)) => return Ok(found),
                Ok(None) => "not yet".to_string(),
                Err(e) => format!("{e:#}"),
            };
            if Instant::now() > deadline {
                bail!(
                    "Prometheus did not show {what} within {timeout:?} (last: {last});\nits log:\n{}",
                    crate::tail(&self.log(), 20)
                );
            }
            std::thread::sleep(Duration::from_millis(500));
        }
    }
}

impl Drop for Prometheus {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn promql_is_percent_encoded_for_a_url() {
        assert_eq!(
            url_encode(r#"sum(up{job="a b"}) == 0"#),
            "sum%28up%7Bjob%3D%22a%20b%22%7D%29%20%3D%3D%200"
        );
    }
}
