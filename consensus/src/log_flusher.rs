//! Makes appended log records durable off the Raft core's task, and tells
//! openraft when they are.
//!
//! An append writes its records to the file and returns at once; the
//! flusher thread fsyncs and only then reports the append as done
//! (openraft's `LogFlushed`), so the Raft runtime's one worker thread stays
//! free for the replication streams, the state machine and the network
//! while the disk works. openraft 0.9's core itself awaits that report
//! before its next command (`append_to_log`), so a leader still sends an
//! entry to its followers only after its own fsync, where the Raft
//! dissertation (10.2.1) allows both at once; an fsync done inline
//! instead of here measured the same (docs/BENCHMARKS.md).
//!
//! After a failed fsync the kernel may have dropped the dirty pages, and a
//! later fsync can succeed without them: every append reported after it
//! fails too, and the store refuses writes until it is reopened.

use crate::types::TypeConfig;
use openraft::storage::LogFlushed;
use std::fs::File;
use std::io;
use std::sync::mpsc::{self, Receiver, Sender};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

/// Called with the duration of every fsync of the log file.
pub type FsyncObserver = Arc<dyn Fn(Duration) + Send + Sync>;

/// What the flusher reports back to the store.
#[derive(Default)]
pub struct FlushState {
    /// Why the first failed fsync failed; set once, never cleared.
    pub failed: Option<String>,
    pub observer: Option<FsyncObserver>,
}

/// One append waiting to be durable: the file its records went to (the
/// log file is replaced by a compaction) and whom to tell.
struct Pending {
    file: Arc<File>,
    done: LogFlushed<TypeConfig>,
}

/// The sending side, owned by the store; the thread ends when it is dropped.
pub struct Flusher {
    queue: Sender<Pending>,
    state: Arc<Mutex<FlushState>>,
}

impl Flusher {
    /// Starts the flusher thread of one log.
    pub fn start(name: &str) -> io::Result<Flusher> {
        let (queue, pending) = mpsc::channel();
        let state = Arc::new(Mutex::new(FlushState::default()));
        let shared = state.clone();
        std::thread::Builder::new()
            .name(format!("raft-fsync-{name}"))
            .spawn(move || run(pending, shared))?;
        Ok(Flusher { queue, state })
    }

    /// Reports `done` once everything written to `file` so far is durable.
    pub fn flush(&self, file: Arc<File>, done: LogFlushed<TypeConfig>) {
        if let Err(mpsc::SendError(p)) = self.queue.send(Pending { file, done }) {
            // Only when the thread is gone (it never exits while we live).
            p.done
                .log_io_completed(Err(io::Error::other("the log's fsync thread has stopped")));
        }
    }

    /// Why an fsync failed, once one has.
    pub fn failure(&self) -> Option<String> {
        self.lock().failed.clone()
    }

    pub fn observe(&self, observer: FsyncObserver) {
        self.lock().observer = Some(observer);
    }

    /// Reports an fsync made by the store itself (truncation, open).
    pub fn observed(&self, took: Duration) {
        let observer = self.lock().observer.clone();
        if let Some(observe) = observer {
            observe(took);
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, FlushState> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

fn run(pending: Receiver<Pending>, state: Arc<Mutex<FlushState>>) {
    while let Ok(first) = pending.recv() {
        let mut batch = vec![first];
        batch.extend(pending.try_iter());
        let (failed, observer) = {
            let s = state.lock().unwrap_or_else(PoisonError::into_inner);
            (s.failed.clone(), s.observer.clone())
        };
        let result = match failed {
            Some(reason) => Err(reason),
            None => {
                let started = Instant::now();
                let synced = sync_each(&batch);
                if synced.is_ok() {
                    if let Some(observe) = observer {
                        observe(started.elapsed());
                    }
                }
                synced.map_err(|e| {
                    let reason = format!("fsync failed: {e}");
                    let mut s = state.lock().unwrap_or_else(PoisonError::into_inner);
                    s.failed.get_or_insert(reason.clone());
                    reason
                })
            }
        };
        for p in batch {
            p.done
                .log_io_completed(result.clone().map_err(io::Error::other));
        }
    }
}

/// Fsyncs every distinct file of the batch once (nearly always one).
fn sync_each(batch: &[Pending]) -> io::Result<()> {
    let mut synced: Vec<&Arc<File>> = Vec::new();
    for p in batch.iter().rev() {
        if synced.iter().any(|f| Arc::ptr_eq(f, &p.file)) {
            continue;
        }
        p.file.sync_data()?;
        synced.push(&p.file);
    }
    Ok(())
}
