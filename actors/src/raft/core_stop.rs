//! Noticing the Raft core stop when nobody asked it to.
//!
//! openraft stops its core for good on a fatal error: a storage error (the
//! log store refuses every write after a failed write or fsync, a full disk
//! among them, until it is reopened) or a panic inside the core. The member
//! then neither votes nor writes, yet the process, its probes and its IPC
//! stay up. Only a fresh process reopens the store, so the daemon is told
//! why and exits for the service manager to start it again.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use steep_repl_consensus::openraft::ServerState;
use steep_repl_consensus::types::Raft;

/// Called once with openraft's fatal error when the core stops by itself.
pub type OnCoreStopped = Box<dyn FnOnce(String) + Send>;

/// Waits until the core reports `Shutdown` (or its metrics end, which is
/// the same), then calls `on_stop` with the reason unless `requested` says
/// the daemon stopped it.
pub(crate) async fn watch(raft: Raft, requested: Arc<AtomicBool>, on_stop: OnCoreStopped) {
    let mut metrics = raft.metrics();
    loop {
        if metrics.borrow_and_update().state == ServerState::Shutdown {
            break;
        }
        if metrics.changed().await.is_err() {
            break;
        }
    }
    if requested.load(Ordering::SeqCst) {
        return;
    }
    // openraft keeps the fatal error and answers every later call with it.
    let reason = match raft.with_raft_state(|_| ()).await {
        Err(fatal) => fatal.to_string(),
        Ok(()) => "the Raft core reported Shutdown".to_string(),
    };
    if requested.load(Ordering::SeqCst) {
        return;
    }
    on_stop(reason);
}
