//! Test harness for steep-repl's integration tests.
//!
//! It starts throwaway PostgreSQL servers on free ports (as an unprivileged
//! account when the tests run as root, since initdb refuses root) and finds
//! the project's PostgreSQL 18 through `deploy/pg18.sh`. Tests talk to what
//! they start only through public faces: SQL, and later IPC, gRPC, HTTP and
//! the CLI.

pub mod claims;
pub mod cluster;
pub mod cluster_script;
pub mod containers;
pub mod daemon;
pub mod ext;
pub mod haproxy;
pub mod history;
pub mod http;
pub mod ipc;
pub mod jepsen;
pub mod paths;
pub mod pg;
pub mod ports;
pub mod prometheus;
pub mod raft;
pub mod small_disk;

/// The last `n` lines of `text` (for failure messages that quote a log).
pub fn tail(text: &str, n: usize) -> String {
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(n)..].join("\n")
}
