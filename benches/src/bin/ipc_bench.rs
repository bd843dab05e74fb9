//! `ipc_bench`: the IPC benchmark of docs/BENCHMARKS.md in one run.
//!
//! Starts a throwaway PostgreSQL 18 with the extension, a real daemon
//! (`$STEEP_DAEMON_BIN`, by default target/release/steep-repl) and the reference
//! JSON-line echo server (`ipc_echo`, a separate process), then measures
//! `status.get` round trips against the daemon and echo round trips
//! against the reference, alternating, from this process, with 1 and 8
//! connections; plus `nodes.list`, which goes to PostgreSQL, for scale
//! (the lone daemon is no cluster member, so its registry is empty: since
//! the registry became the projection of the Raft membership, `nodes.get`
//! of its own id answers NODE_NOT_FOUND).
//! Prints each run and a Markdown table of the medians over the rounds.
//! `--hold` starts everything, prints the two socket paths and waits for
//! Ctrl-C (then cleans up), for measuring by hand with `ipc_load`.

use anyhow::{bail, Context, Result};
use serde_json::Value;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};
use steep_repl_benches::ipc_load::{self, LoadReport};
use steep_repl_tests::daemon::{Daemon, DaemonOptions};
use steep_repl_tests::ext::server_with_extension;
use steep_repl_tests::paths::repo_root;

/// Rounds of every scenario; the table shows the median round and the best
/// one, since a shared 2-core machine adds noise that only the best escapes.
const ROUNDS: usize = 5;
const STATUS: &str = r#"{"id":1,"method":"status.get"}"#;
const NODES_LIST: &str = r#"{"id":1,"method":"nodes.list"}"#;

struct Scenario {
    name: &'static str,
    target: Target,
    line: &'static str,
    requests: usize,
    connections: usize,
}

#[derive(Clone, Copy, PartialEq)]
enum Target {
    Daemon,
    Echo,
}

/// Kills the echo server when the benchmark ends, however it ends.
struct Echo(Child);

impl Drop for Echo {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn start_echo(socket: &Path) -> Result<Echo> {
    let exe = std::env::current_exe()?.with_file_name("ipc_echo");
    let child = Command::new(&exe)
        .arg(socket)
        .stdin(Stdio::null())
        .spawn()
        .with_context(|| {
            format!(
                "starting {} (cargo build --release -p steep-repl-benches)",
                exe.display()
            )
        })?;
    let echo = Echo(child);
    let deadline = Instant::now() + Duration::from_secs(10);
    while std::os::unix::net::UnixStream::connect(socket).is_err() {
        if Instant::now() > deadline {
            bail!("the echo server never listened on {}", socket.display());
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    Ok(echo)
}

fn check_answer(line: &str) -> Result<()> {
    let answer: Value = serde_json::from_str(line).with_context(|| format!("not JSON: {line}"))?;
    if !answer["error"].is_null() {
        bail!("the daemon answered an error: {line}");
    }
    Ok(())
}

fn median_by(reports: &mut [LoadReport], key: impl Fn(&LoadReport) -> Duration) -> &LoadReport {
    reports.sort_by_key(|r| key(r));
    &reports[reports.len() / 2]
}

fn us(d: Duration) -> f64 {
    d.as_secs_f64() * 1e6
}

#[tokio::main(flavor = "current_thread")]
async fn main() -> Result<()> {
    if std::env::var_os("STEEP_DAEMON_BIN").is_none() {
        // The harness would take the debug build; measure the release one.
        std::env::set_var(
            "STEEP_DAEMON_BIN",
            repo_root().join("target/release/steep-repl"),
        );
    }
    let (pg, _conn) = server_with_extension().await?;
    let mut options = DaemonOptions::for_server("bench", &pg);
    options.log_level = "info";
    let daemon = Daemon::start(&options)?;
    let mut ipc = daemon.wait_for_postgresql(Duration::from_secs(30))?;
    let status_answer = ipc.call("status.get", serde_json::json!({}))?;
    let socket: PathBuf = daemon.home.socket_path();
    let echo_dir = tempfile::tempdir()?;
    let echo_socket = echo_dir.path().join("echo.sock");
    let _echo = start_echo(&echo_socket)?;

    if std::env::args().any(|a| a == "--hold") {
        println!("daemon socket {}", socket.display());
        println!("echo socket {}", echo_socket.display());
        println!("holding until Ctrl-C (run ipc_load against either socket)");
        tokio::signal::ctrl_c().await?;
        return Ok(());
    }
    println!(
        "machine: {} cores, load average {}; daemon {}",
        std::thread::available_parallelism()?,
        load_average(),
        daemon_binary()
    );
    println!(
        "request {} bytes; status.get answer {} bytes; echo answer {} bytes",
        STATUS.len() + 1,
        serde_json::to_string(
            &serde_json::json!({"id": 1, "result": status_answer, "error": null})
        )?
        .len()
            + 1,
        STATUS.len() + 1
    );

    let scenarios = [
        Scenario {
            name: "reference echo, 1 connection",
            target: Target::Echo,
            line: STATUS,
            requests: 50_000,
            connections: 1,
        },
        Scenario {
            name: "status.get, 1 connection",
            target: Target::Daemon,
            line: STATUS,
            requests: 50_000,
            connections: 1,
        },
        Scenario {
            name: "reference echo, 8 connections",
            target: Target::Echo,
            line: STATUS,
            requests: 80_000,
            connections: 8,
        },
        Scenario {
            name: "status.get, 8 connections",
            target: Target::Daemon,
            line: STATUS,
            requests: 80_000,
            connections: 8,
        },
        Scenario {
            name: "nodes.list (PostgreSQL), 1 connection",
            target: Target::Daemon,
            line: NODES_LIST,
            requests: 5_000,
            connections: 1,
        },
    ];
    let mut results: Vec<Vec<LoadReport>> = scenarios.iter().map(|_| Vec::new()).collect();
    for round in 1..=ROUNDS {
        for (scenario, reports) in scenarios.iter().zip(&mut results) {
            let (path, check): (&Path, fn(&str) -> Result<()>) = match scenario.target {
                Target::Daemon => (&socket, check_answer),
                Target::Echo => (&echo_socket, |_| Ok(())),
            };
            let report = ipc_load::run(
                path,
                scenario.line,
                scenario.requests,
                scenario.connections,
                500,
                check,
            )?;
            println!("round {round}  {:<38} {}", scenario.name, report.summary());
            reports.push(report);
        }
    }

    println!();
    println!("load average at the end: {}", load_average());
    println!();
    println!("| scenario | p50 µs | p99 µs | p99.9 µs | req/s | best p50 µs | best p99 µs | best p99 / reference |");
    println!("|---|---:|---:|---:|---:|---:|---:|---:|");
    let mut reference = None;
    for (scenario, reports) in scenarios.iter().zip(&mut results) {
        let median = median_by(reports, |r| r.quantile(0.99)).clone();
        let best = reports
            .iter()
            .min_by_key(|r| r.quantile(0.99))
            .cloned()
            .unwrap_or_else(|| median.clone());
        let best_p99 = best.quantile(0.99);
        let ratio = match scenario.target {
            Target::Echo => {
                reference = Some(best_p99);
                "1.00".to_string()
            }
            Target::Daemon if scenario.line == STATUS => reference
                .map(|r| format!("{:.2}", us(best_p99) / us(r)))
                .unwrap_or_default(),
            Target::Daemon => "-".to_string(),
        };
        println!(
            "| {} | {:.1} | {:.1} | {:.1} | {:.0} | {:.1} | {:.1} | {} |",
            scenario.name,
            us(median.quantile(0.5)),
            us(median.quantile(0.99)),
            us(median.quantile(0.999)),
            median.throughput(),
            us(best.quantile(0.5)),
            us(best_p99),
            ratio
        );
    }
    drop(ipc);
    drop(daemon);
    Ok(())
}

/// `/proc/loadavg`'s first three fields: how busy the machine was.
fn load_average() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .map(|l| l.split_whitespace().take(3).collect::<Vec<_>>().join(" "))
        .unwrap_or_else(|_| "unknown".to_string())
}

fn daemon_binary() -> String {
    std::env::var("STEEP_DAEMON_BIN").unwrap_or_default()
}
