//! AuditActor: the one path every daemon audit event takes.
//!
//! An event is appended to the durable local spool first, then written to
//! `steep_repl.audit_log` in batches through its `Db` handle. While PostgreSQL is
//! away events wait in the spool (bounded by `spool_max_events`); after a
//! reconnect, or after a restart of the daemon, they are written in order.
//! Event ids make a replay idempotent. Retention pruning runs on a timer.
//!
//! A batch refused by PostgreSQL for a reason other than the connection is
//! retried one event at a time; an event that fails on its own can never be
//! written and is dropped with an error log, so one bad event cannot block
//! the queue forever.

pub mod spool;

use crate::audit_event::AuditEvent;
use crate::db::{Db, DbConnected, DbError};
use crate::health_state::SharedHealth;
use actix::prelude::*;
use serde::Serialize;
use slog::{error, info, warn, Logger};
use spool::Spool;
use std::collections::VecDeque;
use std::path::PathBuf;
use std::time::{Duration, Instant};

/// What the AuditActor needs to know.
#[derive(Debug, Clone)]
pub struct AuditSettings {
    pub spool_path: PathBuf,
    pub spool_max_events: u64,
    pub retention: Duration,
    pub prune_interval: Duration,
    /// How often queued events are sent when no batch is full.
    pub flush_interval: Duration,
    /// Events per INSERT.
    pub batch_size: usize,
    /// Batches written concurrently (each on its own pooled connection).
    pub max_in_flight: usize,
    /// False on a witness: it has no PostgreSQL, so events are logged
    /// and not kept (no spool to fill).
    pub enabled: bool,
}

impl AuditSettings {
    /// Defaults for everything but the spool and retention.
    pub fn new(spool_path: PathBuf, retention: Duration, prune_interval: Duration) -> Self {
        AuditSettings {
            spool_path,
            spool_max_events: 1_000_000,
            retention,
            prune_interval,
            flush_interval: Duration::from_millis(20),
            batch_size: 2000,
            max_in_flight: 2,
            enabled: true,
        }
    }
}

// --- messages --------------------------------------------------------------

/// Several events at once (one spool write).
#[derive(Message)]
#[rtype(result = "()")]
pub struct RecordBatch(pub Vec<AuditEvent>);

/// Waits until every queued event is in PostgreSQL, or the timeout passes.
/// Answers true when the queue is empty.
#[derive(Message)]
#[rtype(result = "bool")]
pub struct Flush {
    pub timeout: Duration,
}

/// The audit path's observable state.
#[derive(Message)]
#[rtype(result = "AuditStatus")]
pub struct GetAuditStatus;

#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct AuditStatus {
    pub queue_depth: u64,
    pub spool_lines: u64,
    pub written_total: u64,
    pub dropped_total: u64,
    pub recovered_at_start: u64,
    pub corrupt_lines_at_start: u64,
    pub prunes: u64,
    /// fsyncs of the spool since start (one per group of appended batches).
    pub spool_syncs: u64,
    pub last_error: Option<String>,
}

#[derive(Message)]
#[rtype(result = "()")]
struct SendBatch;

/// Flushes what was appended to the spool to stable storage: one fsync for
/// every batch of events appended since the last one (group commit: the
/// message is handled after the messages already waiting in the mailbox).
#[derive(Message)]
#[rtype(result = "()")]
struct SyncSpool;

/// How a batch ended.
#[derive(Debug)]
enum BatchOutcome {
    Written,
    /// PostgreSQL is not available: keep the events, try again later.
    Unavailable(String),
    /// PostgreSQL refused the statement itself.
    Refused(String),
}

/// A batch being written: the `size` events that follow the batches in
/// flight before it, at the front of the queue.
struct InFlight {
    seq: u64,
    size: usize,
    outcome: Option<BatchOutcome>,
}

// --- the actor -------------------------------------------------------------

pub struct AuditActor {
    settings: AuditSettings,
    db: Db,
    health: SharedHealth,
    log: Logger,
    spool: Option<Spool>,
    pending: VecDeque<AuditEvent>,
    /// Batches being written, in queue order. Inserts are idempotent (event
    /// ids), so when one fails every later one is simply sent again.
    in_flight: VecDeque<InFlight>,
    next_seq: u64,
    /// Events left to send one at a time after a refused batch.
    isolate: usize,
    written_total: u64,
    dropped_total: u64,
    recovered_at_start: u64,
    corrupt_lines_at_start: u64,
    prunes: u64,
    last_error: Option<String>,
    /// PostgreSQL was unavailable at the last attempt (logged once per outage).
    waiting_for_db: bool,
    /// The database keeper reported a connection at least once: before that there is
    /// no point in trying (and no outage to report).
    db_seen: bool,
    last_drop_log: Option<Instant>,
    /// Waiting `Flush` requests: told true when the queue empties, false
    /// when PostgreSQL is unavailable (the events stay in the spool).
    flush_waiters: Vec<tokio::sync::oneshot::Sender<bool>>,
    /// Appended to the spool and not yet fsynced (a SyncSpool is queued).
    spool_unsynced: bool,
}

impl AuditActor {
    pub fn new(settings: AuditSettings, db: Db, health: SharedHealth, log: Logger) -> Self {
        AuditActor {
            settings,
            db,
            health,
            log,
            spool: None,
            pending: VecDeque::new(),
            in_flight: VecDeque::new(),
            next_seq: 0,
            isolate: 0,
            written_total: 0,
            dropped_total: 0,
            recovered_at_start: 0,
            corrupt_lines_at_start: 0,
            prunes: 0,
            last_error: None,
            waiting_for_db: false,
            db_seen: false,
            last_drop_log: None,
            flush_waiters: Vec::new(),
            spool_unsynced: false,
        }
    }

    fn status(&self) -> AuditStatus {
        AuditStatus {
            queue_depth: self.pending.len() as u64,
            spool_lines: self.spool.as_ref().map_or(0, Spool::lines),
            written_total: self.written_total,
            dropped_total: self.dropped_total,
            recovered_at_start: self.recovered_at_start,
            corrupt_lines_at_start: self.corrupt_lines_at_start,
            prunes: self.prunes,
            spool_syncs: self.spool.as_ref().map_or(0, Spool::syncs),
            last_error: self.last_error.clone(),
        }
    }

    fn publish(&self) {
        let (depth, written, dropped, err) = (
            self.pending.len() as u64,
            self.written_total,
            self.dropped_total,
            self.last_error.clone(),
        );
        self.health.update(|s| {
            s.audit.queue_depth = depth;
            s.audit.written_total = written;
            s.audit.dropped_total = dropped;
            s.audit.last_error = err.clone();
        });
    }

    fn record(&mut self, events: Vec<AuditEvent>, ctx: &mut Context<Self>) {
        if !self.settings.enabled {
            for e in &events {
                info!(self.log, "audit.event"; "action" => &e.action,
                      "target" => e.target_id.as_deref().unwrap_or(""), "note" => "witness: not stored");
            }
            return;
        }
        let room = self
            .settings
            .spool_max_events
            .saturating_sub(self.pending.len() as u64) as usize;
        let mut events = events;
        if events.len() > room {
            let dropped = events.len() - room;
            events.truncate(room);
            self.dropped_total += dropped as u64;
            let now = Instant::now();
            if self
                .last_drop_log
                .is_none_or(|at| now.duration_since(at) > Duration::from_secs(10))
            {
                error!(self.log, "audit.spool_full";
                       "dropped" => dropped, "dropped_total" => self.dropped_total,
                       "limit" => self.settings.spool_max_events,
                       "error" => "the audit spool is full; events are dropped until PostgreSQL accepts them again");
                self.last_drop_log = Some(now);
            }
        }
        if events.is_empty() {
            self.publish();
            return;
        }
        if let Some(spool) = self.spool.as_mut() {
            match spool.append(&events) {
                Ok(()) if !self.spool_unsynced => {
                    self.spool_unsynced = true;
                    ctx.notify(SyncSpool);
                }
                Ok(()) => {}
                Err(e) => {
                    // Keep the events in memory: they are still written when
                    // PostgreSQL is up, only a crash before that would lose them.
                    error!(self.log, "audit.spool_write_failed"; "error" => %e);
                    self.last_error = Some(e.to_string());
                }
            }
        }
        self.pending.extend(events);
        if self.db_seen && self.pending.len() >= self.in_flight_events() + self.settings.batch_size
        {
            ctx.notify(SendBatch);
        }
    }

    fn in_flight_events(&self) -> usize {
        self.in_flight.iter().map(|b| b.size).sum()
    }

    /// Records the outcome of batch `seq`, drains what is written from the
    /// front of the queue, and settles a failure once nothing is in flight.
    fn settle(&mut self, seq: u64, outcome: BatchOutcome, ctx: &mut Context<Self>) {
        if let Some(batch) = self.in_flight.iter_mut().find(|b| b.seq == seq) {
            batch.outcome = Some(outcome);
        }
        while matches!(
            self.in_flight.front(),
            Some(InFlight {
                outcome: Some(BatchOutcome::Written),
                ..
            })
        ) {
            if let Some(batch) = self.in_flight.pop_front() {
                if self.waiting_for_db {
                    info!(self.log, "audit.resumed"; "queued" => self.pending.len());
                    self.waiting_for_db = false;
                }
                self.isolate = self.isolate.saturating_sub(batch.size);
                self.after_write(batch.size);
            }
        }
        let failed = self.in_flight.front().is_some_and(|b| b.outcome.is_some());
        let settled = self.in_flight.iter().all(|b| b.outcome.is_some());
        if failed && settled {
            let front = self.in_flight.pop_front();
            self.in_flight.clear();
            match front.and_then(|b| b.outcome.map(|o| (b.size, o))) {
                Some((_, BatchOutcome::Unavailable(reason))) => {
                    for waiter in self.flush_waiters.drain(..) {
                        let _ = waiter.send(false);
                    }
                    if !self.waiting_for_db {
                        info!(self.log, "audit.spooling"; "reason" => reason, "queued" => self.pending.len());
                    }
                    self.waiting_for_db = true;
                    return;
                }
                Some((size, BatchOutcome::Refused(reason))) if size > 1 => {
                    warn!(self.log, "audit.batch_refused"; "error" => &reason, "events" => size,
                          "action" => "retrying one event at a time");
                    self.isolate = size;
                    self.last_error = Some(reason);
                }
                Some((_, BatchOutcome::Refused(reason))) => {
                    if let Some(event) = self.pending.pop_front() {
                        error!(self.log, "audit.event_dropped"; "error" => &reason,
                               "event_action" => &event.action, "event_id" => %event.event_id);
                    }
                    self.dropped_total += 1;
                    self.isolate = self.isolate.saturating_sub(1);
                    self.last_error = Some(reason);
                    self.after_write(0);
                }
                _ => {}
            }
        }
        if self.pending.len() > self.in_flight_events() {
            ctx.notify(SendBatch);
        }
    }

    fn after_write(&mut self, written: usize) {
        self.pending.drain(..written);
        self.written_total += written as u64;
        if let Some(spool) = self.spool.as_mut() {
            let lines = spool.lines();
            let stale = lines.saturating_sub(self.pending.len() as u64);
            // Truncate when empty; otherwise compact once the file is mostly
            // events that are already in PostgreSQL.
            if self.pending.is_empty() || stale > 10_000 && stale > 2 * self.pending.len() as u64 {
                if let Err(e) = spool.rewrite(&self.pending) {
                    error!(self.log, "audit.spool_write_failed"; "error" => %e);
                    self.last_error = Some(e.to_string());
                }
            }
        }
        if self.pending.is_empty() {
            for waiter in self.flush_waiters.drain(..) {
                let _ = waiter.send(true);
            }
        }
    }
}

impl Actor for AuditActor {
    type Context = Context<Self>;

    fn started(&mut self, ctx: &mut Context<Self>) {
        // Everything the spool holds is owed to PostgreSQL: a fresh start, or
        // a restart by the supervisor, begins by reading it back.
        self.pending.clear();
        self.in_flight.clear();
        if !self.settings.enabled {
            self.publish();
            return;
        }
        match Spool::open(&self.settings.spool_path, self.settings.spool_max_events) {
            Ok((spool, recovered)) => {
                self.recovered_at_start = recovered.events.len() as u64;
                self.corrupt_lines_at_start = recovered.corrupt_lines;
                if recovered.over_limit > 0 {
                    self.dropped_total += recovered.over_limit;
                    error!(self.log, "audit.spool_full";
                           "dropped" => recovered.over_limit, "limit" => self.settings.spool_max_events,
                           "error" => "the audit spool held more events than spool_max_events; the newest were dropped");
                }
                if !recovered.events.is_empty() || recovered.corrupt_lines > 0 {
                    info!(self.log, "audit.spool_recovered";
                          "events" => recovered.events.len(), "torn_lines" => recovered.corrupt_lines,
                          "spool" => %self.settings.spool_path.display());
                }
                self.pending = recovered.events;
                self.spool = Some(spool);
            }
            Err(e) => {
                // Without a spool, events still flow to PostgreSQL from
                // memory; the error is visible in status and health.
                error!(self.log, "audit.spool_unavailable"; "error" => %e);
                self.last_error = Some(e.to_string());
            }
        }
        self.publish();
        self.db.subscribe_connected(ctx.address().recipient());
        ctx.run_interval(self.settings.flush_interval, |act, ctx| {
            if act.db_seen && act.pending.len() > act.in_flight_events() {
                ctx.notify(SendBatch);
            }
            act.publish();
        });
        ctx.run_interval(self.settings.prune_interval, |act, ctx| {
            let older_than = act.settings.retention;
            let db = act.db.clone();
            async move { db.prune_audit(older_than).await }
                .into_actor(act)
                .map(move |result, act, _| match result {
                    Ok(deleted) => {
                        act.prunes += 1;
                        info!(act.log, "audit.pruned"; "deleted" => deleted,
                              "retention_seconds" => older_than.as_secs());
                    }
                    Err(DbError::NotConnected(_)) => {}
                    Err(e) => warn!(act.log, "audit.prune_failed"; "error" => %e),
                })
                .spawn(ctx);
        });
    }
}

impl Handler<AuditEvent> for AuditActor {
    type Result = ();

    fn handle(&mut self, event: AuditEvent, ctx: &mut Context<Self>) {
        self.record(vec![event], ctx);
    }
}

impl Handler<RecordBatch> for AuditActor {
    type Result = ();

    fn handle(&mut self, batch: RecordBatch, ctx: &mut Context<Self>) {
        self.record(batch.0, ctx);
    }
}

impl Handler<DbConnected> for AuditActor {
    type Result = ();

    fn handle(&mut self, _: DbConnected, ctx: &mut Context<Self>) {
        self.db_seen = true;
        if self.waiting_for_db && !self.pending.is_empty() {
            info!(self.log, "audit.replaying"; "events" => self.pending.len());
        }
        ctx.notify(SendBatch);
    }
}

impl Handler<SyncSpool> for AuditActor {
    type Result = ();

    fn handle(&mut self, _: SyncSpool, _: &mut Context<Self>) {
        self.spool_unsynced = false;
        if let Some(spool) = self.spool.as_mut() {
            if let Err(e) = spool.sync() {
                error!(self.log, "audit.spool_sync_failed"; "error" => %e,
                       "note" => "the events stay queued for PostgreSQL; a power loss before they are written may lose them");
                self.last_error = Some(e.to_string());
            }
        }
    }
}

impl Handler<SendBatch> for AuditActor {
    type Result = ();

    fn handle(&mut self, _: SendBatch, ctx: &mut Context<Self>) {
        if !self.db_seen || self.in_flight.iter().any(|b| b.outcome.is_some()) {
            // Not connected yet, or a failure is being settled.
            return;
        }
        let limit = if self.isolate > 0 {
            1
        } else {
            self.settings.max_in_flight.max(1)
        };
        while self.in_flight.len() < limit {
            let offset = self.in_flight_events();
            if offset >= self.pending.len() {
                break;
            }
            let size = if self.isolate > 0 {
                1
            } else {
                self.settings.batch_size.min(self.pending.len() - offset)
            };
            let batch: Vec<AuditEvent> =
                self.pending.range(offset..offset + size).cloned().collect();
            let seq = self.next_seq;
            self.next_seq += 1;
            self.in_flight.push_back(InFlight {
                seq,
                size,
                outcome: None,
            });
            let db = self.db.clone();
            async move { db.insert_audit_batch(&batch).await }
                .into_actor(self)
                .map(move |result, act, ctx| {
                    let outcome = match result {
                        Ok(_) => BatchOutcome::Written,
                        Err(DbError::NotConnected(reason)) => BatchOutcome::Unavailable(reason),
                        Err(DbError::Query(reason)) => BatchOutcome::Refused(reason),
                    };
                    act.settle(seq, outcome, ctx);
                })
                .spawn(ctx);
        }
    }
}

impl Handler<Flush> for AuditActor {
    type Result = ResponseActFuture<Self, bool>;

    fn handle(&mut self, msg: Flush, ctx: &mut Context<Self>) -> Self::Result {
        if let Some(spool) = self.spool.as_mut() {
            let _ = spool.sync();
        }
        if self.pending.is_empty() {
            return Box::pin(fut::ready(true));
        }
        if !self.db_seen {
            // The connection notice may still be in the mailbox: health is
            // published before it is sent.
            if self.health.load_stored().postgresql.phase == crate::health_state::DbPhase::Connected
            {
                self.db_seen = true;
            } else {
                // Never connected: nothing can be written now; the spool keeps it.
                return Box::pin(fut::ready(false));
            }
        }
        let (tx, rx) = tokio::sync::oneshot::channel();
        self.flush_waiters.push(tx);
        ctx.notify(SendBatch);
        Box::pin(
            async move { matches!(tokio::time::timeout(msg.timeout, rx).await, Ok(Ok(true))) }
                .into_actor(self)
                .map(|done, act, _| done || act.pending.is_empty()),
        )
    }
}

impl Handler<GetAuditStatus> for AuditActor {
    type Result = MessageResult<GetAuditStatus>;

    fn handle(&mut self, _: GetAuditStatus, _: &mut Context<Self>) -> Self::Result {
        MessageResult(self.status())
    }
}
