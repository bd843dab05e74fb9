//! Asks every daemon of a cluster who is coordinator, all along a test, and
//! checks the whole history with the shared checker
//! (`steep_repl_consensus::claims`): distributed behaviour is tested at
//! every instant, not only at the end.
//!
//! One thread per node asks `status.get` over IPC every few milliseconds and
//! keeps each answer with the instants it was asked and answered. A node
//! that does not answer (frozen, killed, restarting) leaves no answer: a
//! claim is only what a client was told.

use crate::ipc::IpcClient;
use anyhow::{bail, Result};
use serde_json::{json, Value};
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};
use steep_repl_consensus::claims::{self, Answer, Summary};

/// How often each node is asked.
const EVERY: Duration = Duration::from_millis(20);

pub struct ClaimPoller {
    answers: Arc<Mutex<Vec<Answer>>>,
    stop: Arc<AtomicBool>,
    threads: Vec<JoinHandle<()>>,
}

impl ClaimPoller {
    /// Starts asking each `(node_id, socket)`.
    pub fn start(nodes: Vec<(String, PathBuf)>) -> ClaimPoller {
        let answers = Arc::new(Mutex::new(Vec::new()));
        let stop = Arc::new(AtomicBool::new(false));
        let threads = nodes
            .into_iter()
            .map(|(node, socket)| {
                let answers = answers.clone();
                let stop = stop.clone();
                std::thread::spawn(move || poll(node, socket, answers, stop))
            })
            .collect();
        ClaimPoller {
            answers,
            stop,
            threads,
        }
    }

    /// Starts asking each container (by name) with `docker exec
    /// CONTAINER steep-repl status --json` (slower than a socket: an answer
    /// every ~100 ms per node, each with its own invoke and completion).
    pub fn start_containers(nodes: Vec<(String, String)>) -> ClaimPoller {
        let answers = Arc::new(Mutex::new(Vec::new()));
        let stop = Arc::new(AtomicBool::new(false));
        let threads = nodes
            .into_iter()
            .map(|(node, container)| {
                let answers = answers.clone();
                let stop = stop.clone();
                std::thread::spawn(move || poll_container(node, container, answers, stop))
            })
            .collect();
        ClaimPoller {
            answers,
            stop,
            threads,
        }
    }

    /// The answers so far.
    pub fn answers(&self) -> Vec<Answer> {
        self.answers.lock().map(|a| a.clone()).unwrap_or_default()
    }

    /// Stops asking and checks the whole history.
    pub fn finish(self) -> Result<Summary> {
        self.stop.store(true, Ordering::SeqCst);
        for t in self.threads {
            let _ = t.join();
        }
        let answers = self.answers.lock().map(|a| a.clone()).unwrap_or_default();
        match claims::check(&answers) {
            Ok(summary) => Ok(summary),
            Err(e) => bail!("the history of {} answers fails: {e}", answers.len()),
        }
    }
}

fn poll(node: String, socket: PathBuf, answers: Arc<Mutex<Vec<Answer>>>, stop: Arc<AtomicBool>) {
    let mut client: Option<IpcClient> = None;
    while !stop.load(Ordering::SeqCst) {
        if client.is_none() {
            client = IpcClient::connect(&socket).ok();
        }
        if let Some(c) = client.as_mut() {
            let invoked = Instant::now();
            match c.call("status.get", json!({})) {
                Ok(status) => {
                    let completed = Instant::now();
                    if let Ok(mut all) = answers.lock() {
                        all.push(answer_of(&node, &status, invoked, completed));
                    }
                }
                Err(_) => client = None,
            }
        }
        std::thread::sleep(EVERY);
    }
}

fn poll_container(
    node: String,
    container: String,
    answers: Arc<Mutex<Vec<Answer>>>,
    stop: Arc<AtomicBool>,
) {
    while !stop.load(Ordering::SeqCst) {
        let invoked = Instant::now();
        let out = std::process::Command::new("docker")
            .args(["exec", &container, "steep-repl", "status", "--json"])
            .stdin(std::process::Stdio::null())
            .output();
        let completed = Instant::now();
        if let Some(out) = out.ok().filter(|o| o.status.success()) {
            if let Ok(status) = serde_json::from_slice::<Value>(&out.stdout) {
                if let Ok(mut all) = answers.lock() {
                    all.push(answer_of(&node, &status, invoked, completed));
                }
            }
        }
        std::thread::sleep(EVERY);
    }
}

/// One `status.get` result as a checker answer.
pub fn answer_of(node: &str, status: &Value, invoked: Instant, completed: Instant) -> Answer {
    let n = &status["node"];
    Answer {
        node: node.to_string(),
        invoked,
        completed,
        holder: n["coordinator_id"].as_str().map(str::to_string),
        epoch: n["epoch"].as_u64(),
        is_self: n["is_coordinator"].as_bool().unwrap_or(false),
    }
}
