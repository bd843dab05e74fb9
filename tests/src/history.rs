//! A history of operations on the replicated key/value map, as clients saw
//! them (each with its invocation and answer in one real-time order), and
//! its check for linearizability by stateright's `LinearizabilityTester`
//! against a map of registers. Used by the in-process consensus tests and by
//! the Jepsen-style run on containers (`jepsen`).
//!
//! A write whose outcome is unknown stays in flight for ever (it may take
//! effect at any time after its invocation, or never); an operation that
//! certainly did nothing (NO_QUORUM, a failed read) is left out.

use serde::{Deserialize, Serialize};
use stateright::semantics::{ConsistencyTester, LinearizabilityTester, SequentialSpec};
use std::collections::BTreeMap;
use std::fmt;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;
use std::time::{Duration, Instant};
use steep_repl_consensus::Outcome;

/// A value of the test's map: small integers; anything else is a bug made
/// visible (it can equal nothing the test wrote).
pub fn value_to_int(v: &serde_json::Value) -> u64 {
    v.as_u64().unwrap_or(u64::MAX)
}

// ---------------------------------------------------------------------------
// The sequential specification
// ---------------------------------------------------------------------------

/// An operation on the replicated map, as the clients ask it.
#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum Op {
    Get(String),
    Set(String, u64),
    Cas(String, Option<u64>, u64),
    Delete(String),
}

impl Op {
    pub fn key(&self) -> &str {
        match self {
            Op::Get(k) | Op::Set(k, _) | Op::Cas(k, _, _) | Op::Delete(k) => k,
        }
    }

    pub fn kind(&self) -> &'static str {
        match self {
            Op::Get(_) => "get",
            Op::Set(..) => "set",
            Op::Cas(..) => "cas",
            Op::Delete(_) => "delete",
        }
    }
}

impl fmt::Display for Op {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Op::Get(k) => write!(f, "get {k}"),
            Op::Set(k, v) => write!(f, "set {k}={v}"),
            Op::Cas(k, e, v) => write!(f, "cas {k} {}->{v}", show(e)),
            Op::Delete(k) => write!(f, "delete {k}"),
        }
    }
}

fn show(v: &Option<u64>) -> String {
    v.map(|v| v.to_string()).unwrap_or_else(|| "absent".into())
}

/// What an operation answered: the value read, the value a write replaced,
/// or the value that made a compare-and-set fail.
#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum Ret {
    Value(Option<u64>),
    Written { previous: Option<u64> },
    CasFailed { current: Option<u64> },
    Deleted { previous: Option<u64> },
}

impl fmt::Display for Ret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Ret::Value(v) => write!(f, "{}", show(v)),
            Ret::Written { previous } => write!(f, "ok (was {})", show(previous)),
            Ret::CasFailed { current } => write!(f, "cas failed (is {})", show(current)),
            Ret::Deleted { previous } => write!(f, "deleted (was {})", show(previous)),
        }
    }
}

impl Ret {
    /// The answer of the state machine to a write, in the test's terms.
    pub fn from_outcome(outcome: &Outcome) -> Ret {
        let int = |v: &Option<serde_json::Value>| v.as_ref().map(value_to_int);
        match outcome {
            Outcome::Written { previous } => Ret::Written {
                previous: int(previous),
            },
            Outcome::CasFailed { current } => Ret::CasFailed {
                current: int(current),
            },
            Outcome::Deleted { previous } => Ret::Deleted {
                previous: int(previous),
            },
            // A proposal of the map always has one of the outcomes above:
            // these equal no spec answer.
            Outcome::Nothing | Outcome::Coordinator { .. } => Ret::Value(Some(u64::MAX)),
        }
    }
}

/// The reference object: a map of registers, one per key.
#[derive(Clone, Debug, Default, PartialEq, Eq, Hash)]
pub struct KvSpec(BTreeMap<String, u64>);

impl SequentialSpec for KvSpec {
    type Op = Op;
    type Ret = Ret;

    fn invoke(&mut self, op: &Op) -> Ret {
        match op {
            Op::Get(k) => Ret::Value(self.0.get(k).copied()),
            Op::Set(k, v) => Ret::Written {
                previous: self.0.insert(k.clone(), *v),
            },
            Op::Cas(k, expected, v) => {
                let current = self.0.get(k).copied();
                if current == *expected {
                    Ret::Written {
                        previous: self.0.insert(k.clone(), *v),
                    }
                } else {
                    Ret::CasFailed { current }
                }
            }
            Op::Delete(k) => Ret::Deleted {
                previous: self.0.remove(k),
            },
        }
    }
}

// ---------------------------------------------------------------------------
// The history
// ---------------------------------------------------------------------------

/// How an operation ended, for the checker.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub enum End {
    /// Answered: it took effect (or read) exactly as `Ret` says.
    Done(Ret),
    /// `UnknownOutcome` (or any other failure of a write that may have been
    /// proposed): it may take effect at any time from its invocation on, or
    /// never. Left in flight for ever; its thread invokes nothing more.
    Unknown(String),
    /// `NoQuorum` for a write (never proposed) or any failed read (a read
    /// changes nothing): certainly without effect; left out of the history
    /// as if never invoked.
    NotDone(String),
}

/// One operation of one client.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Record {
    /// The tester's thread: a client takes a new one after an unknown end.
    pub thread: u64,
    pub node: String,
    pub op: Op,
    /// Positions in one global order of invocations and answers.
    pub invoked: u64,
    pub answered: Option<u64>,
    pub end: Option<End>,
    /// Milliseconds since the history began, for people reading it.
    pub at_ms: u128,
    pub took_ms: u128,
}

/// Every operation of a run, in one real-time order.
pub struct History {
    clock: AtomicU64,
    threads: AtomicU64,
    records: Mutex<Vec<Record>>,
    started: Instant,
}

impl Default for History {
    fn default() -> Self {
        History {
            clock: AtomicU64::new(0),
            threads: AtomicU64::new(0),
            records: Mutex::new(Vec::new()),
            started: Instant::now(),
        }
    }
}

/// Counts of operations by kind and end.
#[derive(Debug, Default, Clone)]
pub struct Counts {
    pub by_kind: BTreeMap<&'static str, [u64; 3]>,
    pub ok: u64,
    pub unknown: u64,
    pub not_done: u64,
    pub cas_applied: u64,
    pub cas_failed: u64,
}

impl fmt::Display for Counts {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{} ok, {} unknown, {} no quorum/failed read;",
            self.ok, self.unknown, self.not_done
        )?;
        for (kind, [ok, unknown, not_done]) in &self.by_kind {
            write!(f, " {kind}: {ok}/{unknown}/{not_done}")?;
        }
        write!(
            f,
            " (ok/unknown/no quorum); cas applied {}, cas refused {}",
            self.cas_applied, self.cas_failed
        )
    }
}

impl History {
    pub fn new_thread(&self) -> u64 {
        self.threads.fetch_add(1, Ordering::SeqCst)
    }

    fn tick(&self) -> u64 {
        self.clock.fetch_add(1, Ordering::SeqCst)
    }

    /// Records an invocation; the returned index completes it.
    pub fn invoke(&self, thread: u64, node: &str, op: Op) -> usize {
        let mut records = self.records.lock().unwrap();
        let invoked = self.tick();
        records.push(Record {
            thread,
            node: node.to_string(),
            op,
            invoked,
            answered: None,
            end: None,
            at_ms: self.started.elapsed().as_millis(),
            took_ms: 0,
        });
        records.len() - 1
    }

    pub fn complete(&self, index: usize, end: End) {
        let mut records = self.records.lock().unwrap();
        let answered = self.tick();
        let now = self.started.elapsed().as_millis();
        let r = &mut records[index];
        r.answered = Some(answered);
        r.took_ms = now - r.at_ms;
        r.end = Some(end);
    }

    pub fn records(&self) -> Vec<Record> {
        self.records.lock().unwrap().clone()
    }

    pub fn counts(&self) -> Counts {
        let mut c = Counts::default();
        for r in self.records.lock().unwrap().iter() {
            let slot = c.by_kind.entry(r.op.kind()).or_default();
            match &r.end {
                Some(End::Done(ret)) => {
                    c.ok += 1;
                    slot[0] += 1;
                    if let Op::Cas(..) = r.op {
                        match ret {
                            Ret::CasFailed { .. } => c.cas_failed += 1,
                            _ => c.cas_applied += 1,
                        }
                    }
                }
                Some(End::Unknown(_)) | None => {
                    c.unknown += 1;
                    slot[1] += 1;
                }
                Some(End::NotDone(_)) => {
                    c.not_done += 1;
                    slot[2] += 1;
                }
            }
        }
        c
    }

    /// When the history began (`Record::at_ms` counts from it).
    pub fn started(&self) -> Instant {
        self.started
    }

    /// Checks the history key by key (linearizability is local: a history
    /// is linearizable when each object's is, Herlihy & Wing), giving each
    /// key's search at most `limit` (it is exponential in the worst case).
    pub fn check(&self, limit: Duration) -> BTreeMap<String, KeyVerdict> {
        let mut by_key: BTreeMap<String, Vec<Record>> = BTreeMap::new();
        for r in self.records() {
            by_key.entry(r.op.key().to_string()).or_default().push(r);
        }
        by_key
            .into_iter()
            .map(|(key, records)| {
                let (tx, rx) = std::sync::mpsc::channel();
                let for_check = records.clone();
                let started = Instant::now();
                // stateright's search recurses once per operation: a long
                // history needs far more than a thread's default 2 MiB.
                let spawned = std::thread::Builder::new()
                    .name(format!("check-{key}"))
                    .stack_size(CHECK_STACK)
                    .spawn(move || {
                        let _ = tx.send(check_linearizable(&for_check));
                    });
                if let Err(e) = spawned {
                    return (
                        key,
                        KeyVerdict::Undecided {
                            history: format!("the checker could not start: {e}"),
                        },
                    );
                }
                let verdict = match rx.recv_timeout(limit) {
                    Ok(Ok(())) => KeyVerdict::Linearizable {
                        took: started.elapsed(),
                    },
                    Ok(Err(why)) => KeyVerdict::NotLinearizable {
                        why,
                        history: render(&records),
                    },
                    Err(_) => KeyVerdict::Undecided {
                        history: render(&records),
                    },
                };
                (key, verdict)
            })
            .collect()
    }

    /// The same, panicking with the seed and the offending key's history
    /// when a key is not linearizable or cannot be decided within 30 s.
    pub fn assert_linearizable(&self, seed: u64) {
        for (key, verdict) in self.check(Duration::from_secs(30)) {
            match verdict {
                KeyVerdict::Linearizable { .. } => {}
                KeyVerdict::NotLinearizable { why, history } => panic!(
                    "the history of key {key} is NOT linearizable ({why}); seed {seed} \
                     (replay with STEEP_TEST_SEED={seed})\n{history}"
                ),
                KeyVerdict::Undecided { history } => panic!(
                    "the checker could not decide key {key} within 30 s; seed {seed}\n{history}"
                ),
            }
        }
    }
}

/// The stack of a checker thread (reserved, not committed, until used).
const CHECK_STACK: usize = 1 << 30;

/// What the checker said of one key's history.
#[derive(Debug, Clone)]
pub enum KeyVerdict {
    Linearizable {
        took: Duration,
    },
    NotLinearizable {
        why: String,
        history: String,
    },
    /// The search did not end within its time limit.
    Undecided {
        history: String,
    },
}

impl KeyVerdict {
    pub fn is_linearizable(&self) -> bool {
        matches!(self, KeyVerdict::Linearizable { .. })
    }
}

/// Feeds one key's records to stateright's tester in real-time order.
///
/// A write whose outcome is unknown and whose value no answer ever shows
/// (no read, no `previous`, no failed compare-and-set's `current`, no
/// compare-and-set expecting it) is left out. Values are unique in a run, so
/// any operation placed right after such a write would have shown its value:
/// it can only be placed last, or nowhere, and the verdict is the same
/// without it. Each one left in multiplies the search (it may take effect at
/// any point after its invocation), so a long run needs this.
pub fn check_linearizable(records: &[Record]) -> Result<(), String> {
    let mut observed: std::collections::HashSet<u64> = std::collections::HashSet::new();
    for r in records {
        if let Op::Cas(_, Some(expected), _) = &r.op {
            observed.insert(*expected);
        }
        if let Some(End::Done(ret)) = &r.end {
            let seen = match ret {
                Ret::Value(v) => v,
                Ret::Written { previous } | Ret::Deleted { previous } => previous,
                Ret::CasFailed { current } => current,
            };
            observed.extend(seen.iter().copied());
        }
    }
    let unseen_unknown_write = |r: &Record| {
        matches!(r.end, Some(End::Unknown(_)) | None)
            && match r.op {
                Op::Set(_, v) | Op::Cas(_, _, v) => !observed.contains(&v),
                Op::Get(_) | Op::Delete(_) => false,
            }
    };
    let mut tester = LinearizabilityTester::new(KvSpec::default());
    let mut events: Vec<(u64, bool, &Record)> = Vec::new();
    for r in records.iter().filter(|r| !unseen_unknown_write(r)) {
        match &r.end {
            // Never proposed (or a read that read nothing): not in the history.
            Some(End::NotDone(_)) => {}
            Some(End::Done(_)) => {
                events.push((r.invoked, true, r));
                events.push((r.answered.expect("an answered record"), false, r));
            }
            // In flight for ever.
            Some(End::Unknown(_)) | None => events.push((r.invoked, true, r)),
        }
    }
    events.sort_by_key(|e| e.0);
    for (_, is_invoke, r) in events {
        if is_invoke {
            tester.on_invoke(r.thread, r.op.clone())?;
        } else if let Some(End::Done(ret)) = &r.end {
            tester.on_return(r.thread, ret.clone())?;
        }
    }
    if tester.is_consistent() {
        Ok(())
    } else {
        Err("no order of the operations explains every answer".into())
    }
}

/// One line per operation, in invocation order.
pub fn render(records: &[Record]) -> String {
    let mut rs: Vec<&Record> = records.iter().collect();
    rs.sort_by_key(|r| r.invoked);
    rs.iter()
        .map(|r| {
            let end = match &r.end {
                Some(End::Done(ret)) => ret.to_string(),
                Some(End::Unknown(e)) => format!("UNKNOWN ({e})"),
                Some(End::NotDone(e)) => format!("not done ({e})"),
                None => "no answer".into(),
            };
            format!(
                "  [{:>6} ms +{:>4}] t{:<3} {:<3} #{:<5}-{:<5} {:<18} -> {end}",
                r.at_ms,
                r.took_ms,
                r.thread,
                r.node,
                r.invoked,
                r.answered
                    .map(|a| a.to_string())
                    .unwrap_or_else(|| "?".into()),
                r.op.to_string(),
            )
        })
        .collect::<Vec<_>>()
        .join("\n")
}
