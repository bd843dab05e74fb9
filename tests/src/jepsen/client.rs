//! The workload: clients that run random `state.get`, `state.set` and
//! `state.cas` on a few keys over each node's IPC socket and record every
//! operation in the shared [`History`], with its invocation and answer in
//! the test host's one real-time order.
//!
//! How an answer becomes an end (what the checker may assume):
//! - an answer: done, exactly as it says (a failed compare-and-set says
//!   what the key held);
//! - `NO_QUORUM`, `NOT_A_MEMBER`, or no connection at all: certainly not
//!   done (nothing was proposed), left out of the history;
//! - `UNKNOWN_OUTCOME`, a timeout or a broken connection after a write was
//!   sent, any other error of a write: unknown, in flight for ever; the
//!   client then takes a new history thread (one operation in flight per
//!   thread) and a new connection;
//! - a read that failed or timed out: not done (a read changes nothing).

use crate::history::{value_to_int, End, History, Op, Ret};
use serde_json::{json, Value};
use std::collections::HashMap;
use std::io::{BufRead, BufReader, Write};
use std::os::unix::net::UnixStream;
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// How long a client waits for one answer: longer than the daemon's own
/// bound on a forwarded write (5 s), so that the daemon says
/// UNKNOWN_OUTCOME itself when it can.
pub const OP_TIMEOUT: Duration = Duration::from_secs(8);

/// Key `i` of generation `generation`. The workload moves to fresh keys
/// every [`Client::key_lifetime`] (as Jepsen's independent keys do): a
/// write whose outcome is unknown stays concurrent with everything after
/// it on its key, so one key's history must stay short for the checker to
/// search it; many short histories check in linear time overall.
pub fn key(generation: u64, i: usize) -> String {
    format!("jepsen.g{generation}.k{i}")
}

/// One client of one node.
pub struct Client {
    pub node: String,
    pub socket: PathBuf,
    pub history: Arc<History>,
    pub keys: usize,
    /// When the history began, and how long one generation of keys lives.
    pub started: Instant,
    pub key_lifetime: Duration,
    /// Every written value is unique in the run.
    pub values: Arc<AtomicU64>,
    pub rng: fastrand::Rng,
    /// The pause between two operations (a few per second per client keep
    /// the histories small enough for an exhaustive check).
    pub think: Duration,
}

/// An open connection that answers by id.
struct Connection {
    reader: BufReader<UnixStream>,
    next_id: u64,
}

/// Why a request got no answer.
enum Failure {
    /// Nothing was sent (no connection).
    NotSent(String),
    /// Sent, and no answer came (timeout, broken connection).
    NoAnswer(String),
}

impl Connection {
    fn open(socket: &PathBuf) -> Result<Connection, String> {
        let stream = UnixStream::connect(socket).map_err(|e| e.to_string())?;
        stream
            .set_read_timeout(Some(OP_TIMEOUT))
            .and_then(|()| stream.set_write_timeout(Some(OP_TIMEOUT)))
            .map_err(|e| e.to_string())?;
        Ok(Connection {
            reader: BufReader::new(stream),
            next_id: 1,
        })
    }

    fn call(&mut self, method: &str, params: Value) -> Result<Value, Failure> {
        let id = self.next_id;
        self.next_id += 1;
        let mut line = json!({"id": id, "method": method, "params": params}).to_string();
        line.push('\n');
        self.reader
            .get_mut()
            .write_all(line.as_bytes())
            .map_err(|e| Failure::NotSent(e.to_string()))?;
        let mut answer = String::new();
        match self.reader.read_line(&mut answer) {
            Ok(0) => return Err(Failure::NoAnswer("connection closed".into())),
            Ok(_) => {}
            Err(e) => return Err(Failure::NoAnswer(e.to_string())),
        }
        let answer: Value =
            serde_json::from_str(&answer).map_err(|e| Failure::NoAnswer(e.to_string()))?;
        if answer["id"] != json!(id) {
            return Err(Failure::NoAnswer(format!(
                "answer to another request: {answer}"
            )));
        }
        Ok(answer)
    }
}

/// A value's JSON as the workload's integer (`None`: absent).
fn int(v: &Value) -> Option<u64> {
    (!v.is_null()).then(|| value_to_int(v))
}

/// What a failed compare-and-set found, from its message
/// ("KEY holds VALUE, not the expected value"; VALUE is JSON or "absent").
fn cas_current(key: &str, message: &str) -> Option<Option<u64>> {
    let rest = message.strip_prefix(&format!("{key} holds "))?;
    let current = rest.strip_suffix(", not the expected value")?;
    if current == "absent" {
        return Some(None);
    }
    serde_json::from_str::<Value>(current).ok().map(|v| int(&v))
}

impl Client {
    /// Runs operations until `until`.
    pub fn run(mut self, until: Instant) {
        let mut thread = self.history.new_thread();
        let mut connection: Option<Connection> = None;
        // What this client last saw in each key: the next cas expects it.
        let mut known: HashMap<String, Option<u64>> = HashMap::new();
        while Instant::now() < until {
            let generation =
                (self.started.elapsed().as_millis() / self.key_lifetime.as_millis().max(1)) as u64;
            let k = key(generation, self.rng.usize(0..self.keys));
            let roll = self.rng.u8(0..100);
            let op = if roll < 45 {
                Op::Get(k.clone())
            } else if roll < 75 {
                let expected = known.get(&k).copied().unwrap_or(None);
                Op::Cas(
                    k.clone(),
                    expected,
                    self.values.fetch_add(1, Ordering::SeqCst),
                )
            } else {
                Op::Set(k.clone(), self.values.fetch_add(1, Ordering::SeqCst))
            };
            let index = self.history.invoke(thread, &self.node, op.clone());
            if connection.is_none() {
                connection = Connection::open(&self.socket).ok();
            }
            let end = match connection.as_mut() {
                None => End::NotDone("no connection".into()),
                Some(c) => self.execute(c, &op),
            };
            match &end {
                End::Done(Ret::Value(v)) => {
                    known.insert(k, *v);
                }
                End::Done(Ret::Written { .. }) => {
                    if let Op::Set(_, v) | Op::Cas(_, _, v) = op {
                        known.insert(k, Some(v));
                    }
                }
                End::Done(Ret::CasFailed { current }) => {
                    known.insert(k, *current);
                }
                _ => {}
            }
            let lost_connection = !matches!(end, End::Done(_))
                && !matches!(&end, End::NotDone(why) if why.starts_with("NO_QUORUM") || why.starts_with("NOT_A_MEMBER"));
            let unknown = matches!(end, End::Unknown(_));
            self.history.complete(index, end);
            if unknown {
                thread = self.history.new_thread();
            }
            if lost_connection {
                connection = None;
            }
            std::thread::sleep(self.think);
        }
    }

    /// Runs one operation on an open connection and says how it ended.
    pub fn execute_once(&self, op: &Op) -> End {
        match Connection::open(&self.socket) {
            Ok(mut c) => self.execute(&mut c, op),
            Err(e) => End::NotDone(format!("no connection: {e}")),
        }
    }

    fn execute(&self, c: &mut Connection, op: &Op) -> End {
        let is_read = matches!(op, Op::Get(_));
        let (method, params) = match op {
            Op::Get(k) => ("state.get", json!({"key": k})),
            Op::Set(k, v) => (
                "state.set",
                json!({"key": k, "value": v, "request_id": uuid::Uuid::new_v4().to_string()}),
            ),
            Op::Cas(k, e, v) => (
                "state.cas",
                json!({"key": k, "expected": e, "value": v, "request_id": uuid::Uuid::new_v4().to_string()}),
            ),
            Op::Delete(k) => ("state.delete", json!({"key": k})),
        };
        let answer = match c.call(method, params) {
            Ok(answer) => answer,
            Err(Failure::NotSent(why)) => return End::NotDone(format!("not sent: {why}")),
            Err(Failure::NoAnswer(why)) if is_read => {
                return End::NotDone(format!("no answer: {why}"))
            }
            Err(Failure::NoAnswer(why)) => return End::Unknown(format!("no answer: {why}")),
        };
        if let Some(code) = answer["error"]["code"].as_str() {
            let message = answer["error"]["message"].as_str().unwrap_or("");
            return match code {
                "NO_QUORUM" | "NOT_A_MEMBER" => End::NotDone(format!("{code}: {message}")),
                "CAS_FAILED" => match cas_current(op.key(), message) {
                    Some(current) => End::Done(Ret::CasFailed { current }),
                    // It did nothing, but what it found cannot be told.
                    None => End::NotDone(format!("{code}: {message}")),
                },
                _ if is_read => End::NotDone(format!("{code}: {message}")),
                _ => End::Unknown(format!("{code}: {message}")),
            };
        }
        let result = &answer["result"];
        match op {
            Op::Get(_) => End::Done(Ret::Value(if result["found"] == json!(true) {
                int(&result["value"])
            } else {
                None
            })),
            Op::Delete(_) => End::Done(Ret::Deleted {
                previous: int(&result["previous"]),
            }),
            Op::Set(..) | Op::Cas(..) => End::Done(Ret::Written {
                previous: int(&result["previous"]),
            }),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_failed_compare_and_set_says_what_it_found() {
        assert_eq!(
            cas_current("jepsen.k1", "jepsen.k1 holds 42, not the expected value"),
            Some(Some(42))
        );
        assert_eq!(
            cas_current(
                "jepsen.k1",
                "jepsen.k1 holds absent, not the expected value"
            ),
            Some(None)
        );
        assert_eq!(cas_current("jepsen.k1", "something else"), None);
    }
}
