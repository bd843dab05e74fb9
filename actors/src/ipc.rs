//! IpcActor: the daemon's local face, for the `steep-repl` CLI and the
//! Steep TUI. It owns the listener on a Unix socket (a named pipe on
//! Windows); each accepted connection is a task on the actix runtime that
//! decodes JSON lines into typed requests (`protocol`), answers status and
//! health from the cached snapshot and everything else through the `Db` handle
//! (`dispatch`), one request after the other (`connection`).
//!
//! The actor reports listening / not listening and why into the shared
//! health (`ipc`), retries a failed bind with backoff, counts requests per
//! method in a shared [`IpcMetrics`], and on `StopAccepting` stops
//! accepting, removes the socket, and lets in-flight requests finish until
//! the deadline. At most `max_connections` clients are served at once;
//! beyond that a new client gets one error line and is closed.

pub mod metrics;
pub mod protocol;

mod connection;
mod dispatch;
mod listener;

pub use connection::{Limits, DEFAULT_IDLE_TIMEOUT, DEFAULT_WRITE_TIMEOUT};
pub use metrics::{IpcMetrics, IpcMetricsSnapshot};

use crate::backoff::Backoff;
use crate::db::Db;
use crate::fd_limit::{self, OpenFiles};
use crate::health_state::SharedHealth;
use crate::listener::{Face, ListenerReport, ListenerStarted, StopAccepting};
use actix::prelude::*;
use connection::Shutdown;
use dispatch::Dispatcher;
use interprocess::local_socket::tokio::{prelude::*, Stream};
use protocol::{encode_error, ErrorBody, ErrorCode};
use serde::Serialize;
use slog::{debug, error, info, warn, Logger};
use std::path::PathBuf;
use std::rc::Rc;
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::io::AsyncWriteExt;
use tokio::sync::{watch, Semaphore};

/// Clients served at once unless configured otherwise.
pub const DEFAULT_MAX_CONNECTIONS: usize = 1024;
/// Database requests from IPC clients in flight at once (the pool holds 10
/// connections by default).
pub const DEFAULT_DB_CONCURRENCY: usize = 4;
/// Bound on one database request made for a client.
pub const DEFAULT_DB_TIMEOUT: Duration = Duration::from_secs(10);
/// Pause after a failed accept (typically out of file descriptors), so the
/// loop does not spin while the condition lasts.
const ACCEPT_ERROR_PAUSE: Duration = Duration::from_millis(100);
/// Descriptors kept for everything but IPC clients (pool, spool, logs,
/// other listeners).
const FD_HEADROOM: u64 = 256;
/// At most one warning per this period about clients over the limit.
const REJECTION_LOG_EVERY: Duration = Duration::from_secs(10);
/// How long a turned-away client is given to take its error line.
const TURN_AWAY_TIMEOUT: Duration = Duration::from_secs(1);

// --- messages --------------------------------------------------------------

/// The listener's state and counters (for tests and admin views).
#[derive(Message)]
#[rtype(result = "IpcStatus")]
pub struct GetStatus;

/// Answer to [`GetStatus`].
#[derive(Debug, Clone, Serialize)]
pub struct IpcStatus {
    pub listening: bool,
    pub path: PathBuf,
    pub max_connections: usize,
    /// Why the last bind failed, while it keeps failing.
    pub last_error: Option<String>,
    pub metrics: IpcMetricsSnapshot,
}

/// Tries to bind again after a failure (self-sent).
#[derive(Message)]
#[rtype(result = "()")]
struct Bind;

// --- settings and errors ---------------------------------------------------

/// What the IpcActor needs; built by the daemon from `ipc.*`.
#[derive(Clone)]
pub struct IpcSettings {
    /// Socket path, or `\\.\pipe\NAME` on Windows.
    pub path: PathBuf,
    /// File mode of the socket (Unix); only the permission bits are used.
    pub mode: u32,
    /// Group the socket is given to (Unix), a name or a numeric gid.
    pub group: Option<String>,
    pub max_connections: usize,
    pub limits: Limits,
    pub db_timeout: Duration,
    /// Database requests (`nodes.*`, `audit.query`) in flight at once; keep
    /// it below the pool size so the daemon's own queries find a connection.
    pub db_concurrency: usize,
    /// Shared with whoever reports the counters (HTTP `/metrics`).
    pub metrics: Arc<IpcMetrics>,
    /// This node's member of the cluster; `None` without gRPC.
    pub cluster: Option<crate::raft::ClusterNode>,
}

impl IpcSettings {
    /// Settings with the default limits and fresh counters.
    pub fn new(path: impl Into<PathBuf>, mode: u32, group: Option<String>) -> Self {
        IpcSettings {
            path: path.into(),
            mode,
            group,
            max_connections: DEFAULT_MAX_CONNECTIONS,
            limits: Limits::default(),
            db_timeout: DEFAULT_DB_TIMEOUT,
            db_concurrency: DEFAULT_DB_CONCURRENCY,
            metrics: Arc::new(IpcMetrics::new()),
            cluster: None,
        }
    }
}

/// Why the IPC socket could not be set up, in an operator's words.
#[derive(Debug, thiserror::Error)]
pub enum IpcError {
    #[error(
        "another process answers on the IPC socket {path}: stop it, or set a different ipc.path"
    )]
    InUse { path: PathBuf },
    #[error("{path} exists and is not a socket: remove it, or set a different ipc.path")]
    NotASocket { path: PathBuf },
    #[error("cannot check the existing IPC socket {path}: {source}")]
    Inspect {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("cannot remove the stale IPC socket {path}: {source}")]
    RemoveStale {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("cannot listen on the IPC socket {path}: {source}")]
    Bind {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("ipc.group \"{group}\" does not exist on this system")]
    UnknownGroup { group: String },
    #[error("cannot look up ipc.group \"{group}\": {source}")]
    GroupLookup {
        group: String,
        source: std::io::Error,
    },
    #[error(
        "cannot give the IPC socket {path} to group \"{group}\": {source} \
         (the daemon must run as root or as a member of that group)"
    )]
    Chown {
        path: PathBuf,
        group: String,
        source: std::io::Error,
    },
    #[error("cannot set mode {mode:04o} on the IPC socket {path}: {source}")]
    Chmod {
        path: PathBuf,
        mode: u32,
        source: std::io::Error,
    },
}

// --- the actor -------------------------------------------------------------

/// A listener that is up.
struct Running {
    /// `true` tells the accept loop and every connection to wind down.
    stop: watch::Sender<bool>,
    accept: tokio::task::JoinHandle<()>,
    /// One permit per connection: the limit, and (all permits back) the
    /// sign that every connection has ended.
    slots: Arc<Semaphore>,
}

pub struct IpcActor {
    settings: IpcSettings,
    db: Db,
    health: SharedHealth,
    report: ListenerReport,
    log: Logger,
    running: Option<Running>,
    backoff: Backoff,
    retry: Option<SpawnHandle>,
    last_error: Option<String>,
    stopping: bool,
}

impl IpcActor {
    /// Announces the listener as pending in health at once, so that the
    /// daemon is not reported "running" before the socket is bound;
    /// `parent` hears whether the first bind worked.
    pub fn new(
        settings: IpcSettings,
        db: Db,
        health: SharedHealth,
        parent: Option<Recipient<ListenerStarted>>,
        log: Logger,
    ) -> Self {
        let address = settings.path.display().to_string();
        let report =
            ListenerReport::pending(Face::Ipc, health.clone(), parent, None, address, false);
        IpcActor {
            settings,
            db,
            health,
            report,
            log,
            running: None,
            backoff: Backoff::reconnect(),
            retry: None,
            last_error: None,
            stopping: false,
        }
    }

    fn bind(&mut self, ctx: &mut Context<Self>) {
        self.retry = None;
        if self.stopping || self.running.is_some() {
            return;
        }
        let settings = &self.settings;
        let path = settings.path.clone();
        // Every connection is a descriptor; keep room for the rest of the daemon.
        let wanted = settings.max_connections as u64 + FD_HEADROOM;
        match fd_limit::ensure_open_files(wanted) {
            Ok(OpenFiles::Enough) => {}
            Ok(OpenFiles::Raised(from, to)) => {
                info!(self.log, "ipc.open_files_raised"; "from" => from, "to" => to)
            }
            Ok(OpenFiles::Capped(to)) => {
                warn!(self.log, "ipc.open_files_capped"; "limit" => to, "wanted" => wanted,
                "note" => "the hard limit is lower; clients may be refused before max_connections")
            }
            Err(e) => warn!(self.log, "ipc.open_files_unknown"; "error" => %e),
        }
        let bound = match listener::bind(&path, settings.mode, settings.group.as_deref()) {
            Ok(bound) => bound,
            Err(e) => {
                let reason = e.to_string();
                if self.last_error.as_deref() != Some(reason.as_str()) {
                    error!(self.log, "ipc.listen_failed"; "path" => %path.display(), "error" => &reason);
                }
                self.report.failed(&reason);
                self.last_error = Some(reason);
                let delay = self.backoff.next_delay();
                self.retry = Some(ctx.notify_later(Bind, delay));
                return;
            }
        };
        if bound.removed_stale {
            warn!(self.log, "ipc.stale_socket_removed"; "path" => %path.display(),
                  "note" => "left by a daemon that did not stop cleanly");
        }
        let (stop, stop_rx) = watch::channel(false);
        let slots = Arc::new(Semaphore::new(settings.max_connections));
        let dispatcher = Rc::new(Dispatcher {
            health: self.health.clone(),
            db: self.db.clone(),
            metrics: settings.metrics.clone(),
            db_timeout: settings.db_timeout,
            db_slots: tokio::sync::Semaphore::new(settings.db_concurrency.max(1)),
            cluster: settings.cluster.clone(),
        });
        let accept = actix::spawn(accept_loop(
            bound.listener,
            slots.clone(),
            stop_rx,
            dispatcher,
            settings.limits,
            self.log.clone(),
        ));
        self.running = Some(Running {
            stop,
            accept,
            slots,
        });
        self.backoff.reset();
        self.last_error = None;
        self.report.up(None, None);
        info!(self.log, "ipc.listening"; "path" => %path.display(),
              "mode" => format!("{:04o}", settings.mode & 0o777),
              "group" => settings.group.as_deref().unwrap_or("-"),
              "max_connections" => settings.max_connections);
    }
}

/// Accepts until told to stop, one task per connection. Dropping the
/// listener at the end removes the socket file.
async fn accept_loop(
    listener: interprocess::local_socket::tokio::Listener,
    slots: Arc<Semaphore>,
    stop: watch::Receiver<bool>,
    dispatcher: Rc<Dispatcher>,
    limits: Limits,
    log: Logger,
) {
    let mut shutdown = Shutdown::new(stop.clone());
    let max = slots.available_permits();
    let (mut last_warning, mut rejected_since_warning) = (None, 0u64);
    loop {
        let accepted = tokio::select! {
            biased;
            _ = shutdown.recv() => break,
            accepted = listener.accept() => accepted,
        };
        let stream = match accepted {
            Ok(stream) => stream,
            Err(e) => {
                warn!(log, "ipc.accept_failed"; "error" => %e);
                tokio::time::sleep(ACCEPT_ERROR_PAUSE).await;
                continue;
            }
        };
        let Ok(permit) = slots.clone().try_acquire_owned() else {
            dispatcher.metrics.connection_rejected();
            rejected_since_warning += 1;
            // One line per burst, not one per client: a client retrying in
            // a loop must not flood the log.
            if last_warning.is_none_or(|at: Instant| at.elapsed() >= REJECTION_LOG_EVERY) {
                warn!(log, "ipc.connection_rejected"; "reason" => "connection limit reached",
                      "limit" => max, "rejected" => rejected_since_warning);
                last_warning = Some(Instant::now());
                rejected_since_warning = 0;
            }
            actix::spawn(turn_away(stream, max));
            continue;
        };
        let (dispatcher, log, shutdown) =
            (dispatcher.clone(), log.clone(), Shutdown::new(stop.clone()));
        actix::spawn(async move {
            let metrics = dispatcher.metrics.clone();
            let (end, lifetime) =
                connection::run(&stream, &stream, &*dispatcher, shutdown, limits, &metrics).await;
            let seconds = lifetime.as_secs_f64();
            match end {
                Ok(end) => {
                    debug!(log, "ipc.connection_closed"; "reason" => end.as_str(), "seconds" => seconds)
                }
                Err(e) => debug!(log, "ipc.connection_failed"; "error" => %e, "seconds" => seconds),
            }
            drop(permit);
        });
    }
    drop(listener);
}

/// Tells a client over the limit why it is closed.
async fn turn_away(stream: Stream, max: usize) {
    let mut line = Vec::new();
    let error = ErrorBody::new(
        ErrorCode::InternalError,
        format!("too many IPC connections (limit {max}); try again later"),
    );
    encode_error(&serde_json::Value::Null, &error, &mut line);
    let _ = tokio::time::timeout(TURN_AWAY_TIMEOUT, (&stream).write_all(&line)).await;
}

impl Actor for IpcActor {
    type Context = Context<Self>;

    fn started(&mut self, ctx: &mut Context<Self>) {
        self.bind(ctx);
    }

    fn stopped(&mut self, _: &mut Context<Self>) {
        if let Some(running) = self.running.take() {
            running.stop.send_replace(true);
        }
    }
}

impl Handler<Bind> for IpcActor {
    type Result = ();

    fn handle(&mut self, _: Bind, ctx: &mut Context<Self>) {
        self.bind(ctx);
    }
}

impl Handler<GetStatus> for IpcActor {
    type Result = MessageResult<GetStatus>;

    fn handle(&mut self, _: GetStatus, _: &mut Context<Self>) -> Self::Result {
        MessageResult(IpcStatus {
            listening: self.running.is_some(),
            path: self.settings.path.clone(),
            max_connections: self.settings.max_connections,
            last_error: self.last_error.clone(),
            metrics: self.settings.metrics.snapshot(),
        })
    }
}

impl Handler<StopAccepting> for IpcActor {
    type Result = ResponseFuture<()>;

    fn handle(&mut self, msg: StopAccepting, ctx: &mut Context<Self>) -> Self::Result {
        self.stopping = true;
        if let Some(retry) = self.retry.take() {
            ctx.cancel_future(retry);
        }
        let Some(running) = self.running.take() else {
            return Box::pin(async {});
        };
        let (report, log, max) = (
            self.report.clone(),
            self.log.clone(),
            self.settings.max_connections,
        );
        running.stop.send_replace(true);
        Box::pin(async move {
            // The accept loop ends at once; its end drops the listener and
            // so removes the socket file.
            if let Err(e) = running.accept.await {
                warn!(log, "ipc.accept_loop_failed"; "error" => %e);
            }
            report.down();
            let open = max - running.slots.available_permits();
            let left = msg.deadline.saturating_duration_since(Instant::now());
            // Every permit back means every connection has ended.
            let all = u32::try_from(max).unwrap_or(u32::MAX);
            match tokio::time::timeout(left, running.slots.acquire_many(all)).await {
                Ok(_) => info!(log, "ipc.stopped"; "connections_drained" => open),
                Err(_) => warn!(log, "ipc.stop_deadline_reached";
                                "connections_cut" => max - running.slots.available_permits()),
            }
            // `running.stop` is dropped here: connections still open see it
            // as the final signal.
        })
    }
}

#[cfg(all(test, unix))]
mod tests;
