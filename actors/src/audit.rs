//! AuditActor: the one path every daemon audit event takes.
//!
//! An event is appended to the durable local spool first, then written to
//! `steep_repl.audit_log` in batches through the DbActor. While PostgreSQL is
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
use crate::db::{DbActor, DbConnected, DbError, InsertAuditBatch, PruneAudit, SubscribeConnected};
use crate::health_state::SharedHealth;
use actix::prelude::*;
use serde::Serialize;
use slog::{error, info, warn, Logger};
use spool::Spool;
use std::collections::VecDeque;
use std::path::PathBuf;
use std::sync::Arc;
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
    pub last_error: Option<String>,
}

#[derive(Message)]
#[rtype(result = "()")]
struct SendBatch;

// --- the actor -------------------------------------------------------------

pub struct AuditActor {
    settings: AuditSettings,
    db: Addr<DbActor>,
    health: SharedHealth,
    log: Logger,
    spool: Option<Spool>,
    pending: VecDeque<AuditEvent>,
    /// Events at the front of `pending` that are being written now.
    in_flight: usize,
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
    /// The DbActor reported a connection at least once: before that there is
    /// no point in trying (and no outage to report).
    db_seen: bool,
    last_drop_log: Option<Instant>,
    /// Waiting `Flush` requests: told true when the queue empties, false
    /// when PostgreSQL is unavailable (the events stay in the spool).
    flush_waiters: Vec<tokio::sync::oneshot::Sender<bool>>,
}

impl AuditActor {
    pub fn new(
        settings: AuditSettings,
        db: Addr<DbActor>,
        health: SharedHealth,
        log: Logger,
    ) -> Self {
        AuditActor {
            settings,
            db,
            health,
            log,
            spool: None,
            pending: VecDeque::new(),
            in_flight: 0,
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
            if let Err(e) = spool.append(&events) {
                // Keep the events in memory: they are still written when
                // PostgreSQL is up, only a crash before that would lose them.
                error!(self.log, "audit.spool_write_failed"; "error" => %e);
                self.last_error = Some(e.to_string());
            }
        }
        self.pending.extend(events);
        if self.db_seen && self.in_flight == 0 && self.pending.len() >= self.settings.batch_size {
            ctx.notify(SendBatch);
        }
    }

    fn after_write(&mut self, written: usize, ctx: &mut Context<Self>) {
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
        } else {
            ctx.notify(SendBatch);
        }
    }
}

impl Actor for AuditActor {
    type Context = Context<Self>;

    fn started(&mut self, ctx: &mut Context<Self>) {
        // Everything the spool holds is owed to PostgreSQL: a fresh start, or
        // a restart by the supervisor, begins by reading it back.
        self.pending.clear();
        self.in_flight = 0;
        match Spool::open(&self.settings.spool_path) {
            Ok((spool, recovered)) => {
                self.recovered_at_start = recovered.events.len() as u64;
                self.corrupt_lines_at_start = recovered.corrupt_lines;
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
        self.db
            .do_send(SubscribeConnected(ctx.address().recipient()));
        ctx.run_interval(self.settings.flush_interval, |act, ctx| {
            if act.db_seen && act.in_flight == 0 && !act.pending.is_empty() {
                ctx.notify(SendBatch);
            }
            act.publish();
        });
        ctx.run_interval(self.settings.prune_interval, |act, ctx| {
            let older_than = act.settings.retention;
            act.db
                .send(PruneAudit { older_than })
                .into_actor(act)
                .map(move |result, act, _| match result {
                    Ok(Ok(deleted)) => {
                        act.prunes += 1;
                        info!(act.log, "audit.pruned"; "deleted" => deleted,
                              "retention_seconds" => older_than.as_secs());
                    }
                    Ok(Err(DbError::NotConnected(_))) => {}
                    Ok(Err(e)) => warn!(act.log, "audit.prune_failed"; "error" => %e),
                    Err(e) => warn!(act.log, "audit.prune_failed"; "error" => %e),
                })
                .spawn(ctx);
        });
    }
}

impl actix::Supervised for AuditActor {
    fn restarting(&mut self, _: &mut Context<Self>) {
        warn!(self.log, "actor.restarting"; "actor" => "audit");
        self.health
            .update(|s| *s.restarts.entry("audit".to_string()).or_insert(0) += 1);
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
        if self.in_flight == 0 {
            ctx.notify(SendBatch);
        }
    }
}

impl Handler<SendBatch> for AuditActor {
    type Result = ();

    fn handle(&mut self, _: SendBatch, ctx: &mut Context<Self>) {
        if self.in_flight > 0 || self.pending.is_empty() {
            return;
        }
        let size = if self.isolate > 0 {
            1
        } else {
            self.settings.batch_size.min(self.pending.len())
        };
        let batch: Vec<AuditEvent> = self.pending.iter().take(size).cloned().collect();
        self.in_flight = size;
        self.db
            .send(InsertAuditBatch {
                events: Arc::new(batch),
            })
            .into_actor(self)
            .map(move |result, act, ctx| {
                act.in_flight = 0;
                match result {
                    Ok(Ok(_)) => {
                        if act.waiting_for_db {
                            info!(act.log, "audit.resumed"; "queued" => act.pending.len());
                        }
                        act.waiting_for_db = false;
                        act.isolate = act.isolate.saturating_sub(1);
                        act.after_write(size, ctx);
                    }
                    Ok(Err(DbError::NotConnected(reason))) => {
                        for waiter in act.flush_waiters.drain(..) {
                            let _ = waiter.send(false);
                        }
                        if !act.waiting_for_db {
                            info!(act.log, "audit.spooling"; "reason" => reason,
                                  "queued" => act.pending.len());
                        }
                        act.waiting_for_db = true;
                    }
                    Ok(Err(DbError::Query(reason))) if size > 1 => {
                        warn!(act.log, "audit.batch_refused"; "error" => &reason, "events" => size,
                              "action" => "retrying one event at a time");
                        act.isolate = size;
                        act.last_error = Some(reason);
                        ctx.notify(SendBatch);
                    }
                    Ok(Err(DbError::Query(reason))) => {
                        if let Some(event) = act.pending.front() {
                            error!(act.log, "audit.event_dropped"; "error" => &reason,
                                   "event_action" => &event.action, "event_id" => %event.event_id);
                        }
                        act.dropped_total += 1;
                        act.last_error = Some(reason);
                        act.isolate = act.isolate.saturating_sub(1);
                        act.written_total = act.written_total.saturating_sub(1);
                        act.after_write(1, ctx);
                    }
                    Err(e) => {
                        warn!(act.log, "audit.batch_failed"; "error" => %e);
                    }
                }
            })
            .spawn(ctx);
    }
}

impl Handler<Flush> for AuditActor {
    type Result = ResponseActFuture<Self, bool>;

    fn handle(&mut self, msg: Flush, ctx: &mut Context<Self>) -> Self::Result {
        if let Some(spool) = self.spool.as_ref() {
            let _ = spool.sync();
        }
        if self.pending.is_empty() {
            return Box::pin(fut::ready(true));
        }
        if !self.db_seen {
            // Never connected: nothing can be written now; the spool keeps it.
            return Box::pin(fut::ready(false));
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
