//! DbActor: the only owner of the PostgreSQL pool.
//!
//! It runs the connection state machine (connecting -> connected -> lost ->
//! connecting), checks what it connected to (PostgreSQL 18 or later, the
//! `steep_repl` extension installed), registers this node, and answers typed
//! messages from the other actors. Nobody else touches SQL.
//!
//! Reconnects back off from 100 ms to 5 s with jitter. So that a server
//! coming back is noticed within a second even deep into the backoff, a
//! cheap TCP knock runs every 200 ms while the last failure was a refused or
//! timed-out connection, and a successful knock starts an attempt at once.
//! Each state change is pushed into the shared health snapshot.

pub mod cause;
pub mod projection;
pub mod queries;

use crate::audit_event::AuditEvent;
use crate::backoff::Backoff;
use crate::health_state::{DbPhase, SharedHealth};
use actix::prelude::*;
use cause::{describe_connect_error, is_connection_error, Target};
use queries::*;
use slog::{debug, error, info, warn, Logger};
use sqlx::postgres::{PgConnectOptions, PgPool, PgPoolOptions};
use sqlx::{Connection, PgConnection};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// How often the TCP knock runs while PostgreSQL is unreachable.
const KNOCK_INTERVAL: Duration = Duration::from_millis(200);
/// How often an unsupported server version is checked again.
const VERSION_RECHECK: Duration = Duration::from_secs(30);
/// Pings without an answer (port open) before the connection is declared
/// lost and rebuilt.
const SLOW_PINGS_BEFORE_LOSS: u32 = 3;
/// A repeated identical failure is logged again after this long.
const REPEAT_LOG_AFTER: Duration = Duration::from_secs(30);

/// What the DbActor needs to know; built by the daemon from its config.
#[derive(Clone)]
pub struct DbSettings {
    /// `postgresql.enabled`: false on a witness, which never connects.
    pub enabled: bool,
    /// This node's node_id (the actor of the audit rows it writes).
    pub node_id: String,
    /// Structured connection options (never a URL), with the
    /// `steep_repl.actor` setting already among the startup options.
    pub connect: PgConnectOptions,
    pub host: String,
    pub port: u16,
    pub user: String,
    pub database: String,
    pub pool_size: u32,
    pub connect_timeout: Duration,
    /// Bound of one health ping. Short: a pool facing a dead server keeps
    /// retrying until its acquire timeout, and a lost server must be noticed
    /// within a couple of refresh intervals.
    pub ping_timeout: Duration,
    /// `password_command`: run again before every connection attempt (its
    /// password replaces the one in `connect`), so that a rotated password
    /// is picked up when the daemon reconnects. The error names what failed,
    /// never what the command printed.
    pub password_source: Option<PasswordSource>,
}

/// Produces the PostgreSQL password for one connection attempt.
pub type PasswordSource = Arc<dyn Fn() -> Result<String, String> + Send + Sync>;

/// Why a request to the DbActor failed.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum DbError {
    #[error("PostgreSQL is not available: {0}")]
    NotConnected(String),
    #[error("PostgreSQL query failed: {0}")]
    Query(String),
}

type DbResult<T> = Result<T, DbError>;

/// Why a witness answers nothing that needs a database.
const WITNESS: &str = "this node is a witness (postgresql.enabled: false): it has no PostgreSQL";

// --- messages --------------------------------------------------------------

/// Refresh the PostgreSQL health: a `SELECT 1` round trip when connected.
/// Sent by the HealthActor every refresh interval.
#[derive(Message)]
#[rtype(result = "()")]
pub struct Ping;

/// All registry rows, optionally only those whose status is in the filter.
#[derive(Message)]
#[rtype(result = "DbResult<Vec<NodeRow>>")]
pub struct ListNodes {
    pub status_filter: Vec<String>,
    /// PostgreSQL cancels the query after this long (the caller's own
    /// bound): a caller that stops waiting must not leave it running.
    pub timeout: std::time::Duration,
}

/// One registry row.
#[derive(Message)]
#[rtype(result = "DbResult<Option<NodeRow>>")]
pub struct GetNode {
    pub node_id: String,
}

/// A page of the audit log, newest first.
#[derive(Message)]
#[rtype(result = "DbResult<AuditPage>")]
pub struct QueryAudit {
    pub limit: i64,
    pub offset: i64,
    /// Action names; `node.*` matches a prefix. Empty: all.
    pub action_filter: Vec<String>,
    pub since: Option<chrono::DateTime<chrono::Utc>>,
    /// PostgreSQL cancels the query after this long: a caller that stops
    /// waiting must not leave it running on a pooled connection.
    pub timeout: std::time::Duration,
}

/// Writes a batch of daemon audit events; returns how many were new.
#[derive(Message)]
#[rtype(result = "DbResult<u64>")]
pub struct InsertAuditBatch {
    pub events: Arc<Vec<AuditEvent>>,
}

/// Deletes audit entries older than the retention; returns the count.
#[derive(Message)]
#[rtype(result = "DbResult<i64>")]
pub struct PruneAudit {
    pub older_than: Duration,
}

/// Subscribes to "PostgreSQL became usable" notifications.
#[derive(Message)]
#[rtype(result = "()")]
pub struct SubscribeConnected(pub Recipient<DbConnected>);

/// Sent to subscribers each time the DbActor reaches `Connected`.
#[derive(Message, Clone)]
#[rtype(result = "()")]
pub struct DbConnected;

/// Writes a peer's status as seen from here; answers whether the peer is in
/// the registry (false: nothing could be written yet).
#[derive(Message)]
#[rtype(result = "DbResult<bool>")]
pub struct SetPeerStatus {
    pub node_id: String,
    pub status: String,
}

/// A peer's heartbeat arrived: bump its last_seen. Answers whether the
/// peer is in the registry.
#[derive(Message)]
#[rtype(result = "DbResult<bool>")]
pub struct TouchPeer {
    pub node_id: String,
    /// PostgreSQL cancels the update after this long (the gRPC request
    /// timeout): a heartbeat that waits on a lock must not wait forever.
    pub timeout: std::time::Duration,
}

/// The DbActor's observable state.
#[derive(Message)]
#[rtype(result = "DbStatus")]
pub struct GetDbStatus;

#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct DbStatus {
    pub phase: DbPhase,
    /// Connection attempts since start.
    pub attempts: u64,
    /// Times the connection was lost after being usable.
    pub losses: u64,
    pub last_error: Option<String>,
}

/// Closes the pool for shutdown; no reconnects afterwards.
#[derive(Message)]
#[rtype(result = "()")]
pub struct Close;

/// The connection failed while answering a request.
#[derive(Message)]
#[rtype(result = "()")]
struct ConnectionLost(String);

#[derive(Message)]
#[rtype(result = "()")]
struct Connect;

// --- the actor -------------------------------------------------------------

/// The outcome of one connection attempt.
enum Attempt {
    /// Usable: supported version, extension present, node registered.
    Ready {
        pool: PgPool,
        version: String,
        extension: String,
    },
    Unsupported {
        version: String,
    },
    ExtensionMissing {
        version: String,
        available: bool,
    },
    Failed {
        reason: String,
        knockable: bool,
    },
}

pub struct DbActor {
    settings: Arc<DbSettings>,
    health: SharedHealth,
    log: Logger,
    pool: Option<PgPool>,
    phase: DbPhase,
    backoff: Backoff,
    attempt_in_flight: bool,
    retry: Option<SpawnHandle>,
    /// The last failure was a refused or timed-out TCP connection.
    knock: bool,
    knock_in_flight: bool,
    ever_connected: bool,
    closed: bool,
    last_logged: Option<(String, Instant)>,
    failures_since_log: u32,
    subscribers: Vec<Recipient<DbConnected>>,
    attempts: u64,
    losses: u64,
    last_error: Option<String>,
    /// Pings in a row that got no answer while the port was open.
    slow_pings: u32,
}

impl DbActor {
    pub fn new(settings: DbSettings, health: SharedHealth, log: Logger) -> Self {
        DbActor {
            settings: Arc::new(settings),
            health,
            log,
            pool: None,
            phase: DbPhase::Connecting,
            backoff: Backoff::reconnect(),
            attempt_in_flight: false,
            retry: None,
            knock: false,
            knock_in_flight: false,
            ever_connected: false,
            closed: false,
            last_logged: None,
            failures_since_log: 0,
            subscribers: Vec::new(),
            attempts: 0,
            losses: 0,
            last_error: None,
            slow_pings: 0,
        }
    }

    /// Logs a failure once per distinct reason, then again only every
    /// REPEAT_LOG_AFTER with the number of attempts in between.
    fn log_failure(&mut self, reason: &str) {
        let now = Instant::now();
        let repeat = match &self.last_logged {
            Some((last, at)) if last == reason => now.duration_since(*at) < REPEAT_LOG_AFTER,
            _ => false,
        };
        if repeat {
            self.failures_since_log += 1;
            debug!(self.log, "postgresql.connect_failed"; "error" => reason);
            return;
        }
        if self.failures_since_log > 0 {
            warn!(self.log, "postgresql.connect_failed"; "error" => reason,
                  "attempts_since_last_report" => self.failures_since_log + 1);
        } else {
            warn!(self.log, "postgresql.connect_failed"; "error" => reason);
        }
        self.last_logged = Some((reason.to_string(), now));
        self.failures_since_log = 0;
    }

    fn publish(
        &mut self,
        phase: DbPhase,
        error: Option<String>,
        update: impl Fn(&mut crate::health_state::PostgresHealth),
    ) {
        if error.is_some() {
            self.last_error = error.clone();
        }
        self.health.update(|s| {
            s.postgresql.phase = phase;
            s.postgresql.error = error.clone();
            s.postgresql.checked_at = Some(Instant::now());
            update(&mut s.postgresql);
        });
    }

    fn schedule_connect(&mut self, delay: Duration, ctx: &mut Context<Self>) {
        if let Some(handle) = self.retry.take() {
            ctx.cancel_future(handle);
        }
        self.retry = Some(ctx.notify_later(Connect, delay));
    }

    fn lose(&mut self, reason: String, ctx: &mut Context<Self>) {
        if self.closed || self.phase != DbPhase::Connected {
            return;
        }
        warn!(self.log, "postgresql.connection_lost"; "error" => &reason);
        self.losses += 1;
        self.slow_pings = 0;
        if let Some(pool) = self.pool.take() {
            actix::spawn(async move { pool.close().await });
        }
        self.phase = DbPhase::Connecting;
        self.knock = true;
        self.backoff.reset();
        self.publish(DbPhase::Connecting, Some(reason), |pg| {
            pg.latency = None;
            pg.registered = false;
        });
        let delay = self.backoff.next_delay();
        self.schedule_connect(delay, ctx);
    }

    fn pool_or_error(&self) -> DbResult<PgPool> {
        match (&self.pool, self.phase) {
            (Some(pool), DbPhase::Connected) => Ok(pool.clone()),
            (_, DbPhase::Disabled) => Err(DbError::NotConnected(WITNESS.to_string())),
            _ => {
                let reason = self
                    .health
                    .load_stored()
                    .postgresql
                    .error
                    .clone()
                    .unwrap_or_else(|| format!("PostgreSQL is {}", self.phase.as_str()));
                Err(DbError::NotConnected(reason))
            }
        }
    }

    /// Runs `query` on the pool; a connection failure also tells the actor
    /// the connection is lost.
    fn run<T, F, Fut>(&self, ctx: &Context<Self>, query: F) -> ResponseFuture<DbResult<T>>
    where
        T: 'static,
        F: FnOnce(PgPool) -> Fut + 'static,
        Fut: std::future::Future<Output = Result<T, sqlx::Error>> + 'static,
    {
        let pool = match self.pool_or_error() {
            Ok(pool) => pool,
            Err(e) => return Box::pin(async move { Err(e) }),
        };
        let me = ctx.address();
        let target = self.target_owned();
        Box::pin(async move {
            match query(pool).await {
                Ok(v) => Ok(v),
                Err(e) if is_connection_error(&e) => {
                    let reason = describe_connect_error(&e, &target.as_target());
                    me.do_send(ConnectionLost(reason.clone()));
                    Err(DbError::NotConnected(reason))
                }
                Err(e) => Err(DbError::Query(e.to_string())),
            }
        })
    }

    fn target_owned(&self) -> OwnedTarget {
        OwnedTarget {
            host: self.settings.host.clone(),
            port: self.settings.port,
            user: self.settings.user.clone(),
            database: self.settings.database.clone(),
        }
    }
}

struct OwnedTarget {
    host: String,
    port: u16,
    user: String,
    database: String,
}

impl OwnedTarget {
    fn as_target(&self) -> Target<'_> {
        Target {
            host: &self.host,
            port: self.port,
            user: &self.user,
            database: &self.database,
        }
    }
}

/// One full attempt: connect, check version and extension, register.
async fn attempt(settings: Arc<DbSettings>) -> Attempt {
    let target = OwnedTarget {
        host: settings.host.clone(),
        port: settings.port,
        user: settings.user.clone(),
        database: settings.database.clone(),
    };
    let fail = |e: sqlx::Error| {
        let knockable = matches!(&e, sqlx::Error::Io(io) if matches!(io.kind(),
            std::io::ErrorKind::ConnectionRefused | std::io::ErrorKind::TimedOut))
            || matches!(e, sqlx::Error::PoolTimedOut);
        Attempt::Failed {
            reason: describe_connect_error(&e, &target.as_target()),
            knockable,
        }
    };
    let connect = match &settings.password_source {
        None => settings.connect.clone(),
        Some(source) => {
            let source = source.clone();
            match tokio::task::spawn_blocking(move || source()).await {
                Ok(Ok(password)) => settings.connect.clone().password(&password),
                Ok(Err(why)) => {
                    return Attempt::Failed {
                        reason: format!("postgresql.password_command: {why}"),
                        knockable: false,
                    }
                }
                Err(e) => {
                    return Attempt::Failed {
                        reason: format!("postgresql.password_command did not finish: {e}"),
                        knockable: false,
                    }
                }
            }
        }
    };
    let connected = tokio::time::timeout(
        settings.connect_timeout,
        PgConnection::connect_with(&connect),
    )
    .await;
    let mut conn = match connected {
        Ok(Ok(conn)) => conn,
        Ok(Err(e)) => return fail(e),
        Err(_) => return fail(sqlx::Error::PoolTimedOut),
    };
    let (version_num, version): (i32, String) =
        match sqlx::query_as(SERVER_VERSION).fetch_one(&mut conn).await {
            Ok(v) => v,
            Err(e) => return fail(e),
        };
    if version_num < MIN_SERVER_VERSION_NUM {
        let _ = conn.close().await;
        return Attempt::Unsupported { version };
    }
    let (extension, available): (Option<String>, bool) =
        match sqlx::query_as(EXTENSION_STATE).fetch_one(&mut conn).await {
            Ok(v) => v,
            Err(e) => return fail(e),
        };
    let Some(extension) = extension else {
        let _ = conn.close().await;
        return Attempt::ExtensionMissing { version, available };
    };
    let _ = conn.close().await;
    let pool = PgPoolOptions::new()
        .max_connections(settings.pool_size)
        .min_connections(1)
        .acquire_timeout(settings.connect_timeout)
        .connect_lazy_with(connect);
    Attempt::Ready {
        pool,
        version,
        extension,
    }
}

impl Actor for DbActor {
    type Context = Context<Self>;

    fn started(&mut self, ctx: &mut Context<Self>) {
        if !self.settings.enabled {
            self.phase = DbPhase::Disabled;
            self.publish(DbPhase::Disabled, None, |_| {});
            info!(self.log, "postgresql.disabled"; "note" => WITNESS);
            return;
        }
        ctx.notify(Connect);
        ctx.run_interval(KNOCK_INTERVAL, |act, ctx| {
            if !act.knock || act.knock_in_flight || act.attempt_in_flight || act.closed {
                return;
            }
            if act.phase != DbPhase::Connecting || act.settings.host.starts_with('/') {
                return;
            }
            act.knock_in_flight = true;
            let addr = format!("{}:{}", act.settings.host, act.settings.port);
            let knock = async move {
                matches!(
                    tokio::time::timeout(KNOCK_INTERVAL, tokio::net::TcpStream::connect(addr))
                        .await,
                    Ok(Ok(_))
                )
            };
            ctx.spawn(knock.into_actor(act).map(|open, act, ctx| {
                act.knock_in_flight = false;
                if open && act.phase == DbPhase::Connecting && !act.attempt_in_flight {
                    debug!(act.log, "postgresql.port_open"; "action" => "connecting now");
                    act.schedule_connect(Duration::ZERO, ctx);
                }
            }));
        });
    }
}

impl Handler<Connect> for DbActor {
    type Result = ();

    fn handle(&mut self, _: Connect, ctx: &mut Context<Self>) {
        self.retry = None;
        if self.attempt_in_flight
            || self.closed
            || matches!(self.phase, DbPhase::Connected | DbPhase::Disabled)
        {
            return;
        }
        self.attempt_in_flight = true;
        self.attempts += 1;
        let settings = self.settings.clone();
        ctx.spawn(attempt(settings).into_actor(self).map(|outcome, act, ctx| {
            act.attempt_in_flight = false;
            if act.closed {
                if let Attempt::Ready { pool, .. } = outcome {
                    actix::spawn(async move { pool.close().await });
                }
                return;
            }
            match outcome {
                Attempt::Ready { pool, version, extension } => {
                    act.pool = Some(pool);
                    act.phase = DbPhase::Connected;
                    act.knock = false;
                    act.backoff.reset();
                    act.last_logged = None;
                    let reconnect = act.ever_connected;
                    act.ever_connected = true;
                    info!(act.log, "postgresql.connected";
                          "server_version" => &version, "extension_version" => &extension,
                          "host" => &act.settings.host, "port" => act.settings.port,
                          "reconnect" => reconnect);
                    act.publish(DbPhase::Connected, None, |pg| {
                        pg.server_version = Some(version.clone());
                        pg.extension_version = Some(extension.clone());
                        pg.registered = true;
                        if reconnect {
                            pg.reconnects += 1;
                        }
                    });
                    for subscriber in &act.subscribers {
                        subscriber.do_send(DbConnected);
                    }
                    ctx.notify(Ping);
                }
                Attempt::Unsupported { version } => {
                    let reason = format!(
                        "PostgreSQL {version} is not supported: steep-repl needs PostgreSQL 18 or later \
                         (nothing is written to this server)"
                    );
                    if act.phase != DbPhase::UnsupportedVersion {
                        error!(act.log, "postgresql.unsupported_version"; "server_version" => &version, "error" => &reason);
                    }
                    act.phase = DbPhase::UnsupportedVersion;
                    act.knock = false;
                    act.publish(DbPhase::UnsupportedVersion, Some(reason), |pg| {
                        pg.server_version = Some(version.clone());
                        pg.registered = false;
                    });
                    act.schedule_connect(VERSION_RECHECK, ctx);
                }
                Attempt::ExtensionMissing { version, available } => {
                    let database = &act.settings.database;
                    let reason = if available {
                        format!(
                            "extension steep_repl is not installed in database \"{database}\": \
                             run CREATE EXTENSION steep_repl; in that database as a superuser"
                        )
                    } else {
                        format!(
                            "extension steep_repl is not available on this server: install it \
                             (deploy/extension.sh), then run CREATE EXTENSION steep_repl; in database \"{database}\""
                        )
                    };
                    if act.phase != DbPhase::ExtensionMissing {
                        error!(act.log, "postgresql.extension_missing"; "error" => &reason);
                    }
                    act.phase = DbPhase::ExtensionMissing;
                    act.knock = false;
                    act.publish(DbPhase::ExtensionMissing, Some(reason), |pg| {
                        pg.server_version = Some(version.clone());
                        pg.extension_version = None;
                        pg.registered = false;
                    });
                    let delay = act.backoff.next_delay();
                    act.schedule_connect(delay, ctx);
                }
                Attempt::Failed { reason, knockable } => {
                    act.log_failure(&reason);
                    act.phase = DbPhase::Connecting;
                    act.knock = knockable;
                    act.publish(DbPhase::Connecting, Some(reason), |pg| {
                        pg.latency = None;
                        pg.registered = false;
                    });
                    let delay = act.backoff.next_delay();
                    act.schedule_connect(delay, ctx);
                }
            }
        }));
    }
}

impl Handler<GetDbStatus> for DbActor {
    type Result = MessageResult<GetDbStatus>;

    fn handle(&mut self, _: GetDbStatus, _: &mut Context<Self>) -> Self::Result {
        MessageResult(DbStatus {
            phase: self.phase,
            attempts: self.attempts,
            losses: self.losses,
            last_error: self.last_error.clone(),
        })
    }
}

/// What one health ping found.
enum PingOutcome {
    Answered(Duration),
    /// The connection is gone (a definite connection error, or a timeout
    /// while the server's port refuses connections).
    Lost(String),
    /// No answer in time, but the server's port is open: busy, not gone.
    Slow(String),
    /// The statement failed for another reason.
    Failed(String),
}

impl Handler<Ping> for DbActor {
    type Result = ();

    fn handle(&mut self, _: Ping, ctx: &mut Context<Self>) {
        let Ok(pool) = self.pool_or_error() else {
            return;
        };
        let timeout = self.settings.ping_timeout;
        let target = self.target_owned();
        let knock_at = (!self.settings.host.starts_with('/'))
            .then(|| format!("{}:{}", self.settings.host, self.settings.port));
        let ping = async move {
            let started = Instant::now();
            match tokio::time::timeout(timeout, sqlx::query(PING).execute(&pool)).await {
                Ok(Ok(_)) => PingOutcome::Answered(started.elapsed()),
                Ok(Err(e)) if is_connection_error(&e) => {
                    PingOutcome::Lost(describe_connect_error(&e, &target.as_target()))
                }
                Ok(Err(e)) => PingOutcome::Failed(e.to_string()),
                Err(_) => {
                    let reason = format!("ping timed out after {}s", timeout.as_secs_f64());
                    // A pool facing a dead server retries until its acquire
                    // timeout; a refused port says it is dead now, while an
                    // open one means the server (or this machine) is busy.
                    let open = match knock_at {
                        Some(addr) => matches!(
                            tokio::time::timeout(
                                KNOCK_INTERVAL,
                                tokio::net::TcpStream::connect(addr)
                            )
                            .await,
                            Ok(Ok(_))
                        ),
                        None => true,
                    };
                    if open {
                        PingOutcome::Slow(reason)
                    } else {
                        PingOutcome::Lost(format!(
                            "{reason}; the server's port refuses connections"
                        ))
                    }
                }
            }
        };
        ctx.spawn(ping.into_actor(self).map(|outcome, act, ctx| match outcome {
            PingOutcome::Answered(latency) => {
                act.slow_pings = 0;
                act.health.update(|s| {
                    if s.postgresql.phase == DbPhase::Connected {
                        s.postgresql.latency = Some(latency);
                        s.postgresql.checked_at = Some(Instant::now());
                    }
                })
            }
            PingOutcome::Lost(reason) => act.lose(reason, ctx),
            PingOutcome::Slow(reason) => {
                act.slow_pings += 1;
                warn!(act.log, "postgresql.ping_slow"; "error" => &reason, "in_a_row" => act.slow_pings);
                // Health turns stale by itself meanwhile (no fresh answer).
                if act.slow_pings >= SLOW_PINGS_BEFORE_LOSS {
                    act.lose(format!("{reason} ({} times in a row)", act.slow_pings), ctx);
                }
            }
            PingOutcome::Failed(reason) => warn!(act.log, "postgresql.ping_failed"; "error" => reason),
        }));
    }
}

impl Handler<ConnectionLost> for DbActor {
    type Result = ();

    fn handle(&mut self, msg: ConnectionLost, ctx: &mut Context<Self>) {
        self.lose(msg.0, ctx);
    }
}

impl Handler<SubscribeConnected> for DbActor {
    type Result = ();

    fn handle(&mut self, msg: SubscribeConnected, _: &mut Context<Self>) {
        if self.phase == DbPhase::Connected {
            msg.0.do_send(DbConnected);
        }
        self.subscribers.push(msg.0);
    }
}

impl Handler<ListNodes> for DbActor {
    type Result = ResponseFuture<DbResult<Vec<NodeRow>>>;

    fn handle(&mut self, msg: ListNodes, ctx: &mut Context<Self>) -> Self::Result {
        self.run(ctx, move |pool| async move {
            let mut tx = begin_bounded(&pool, msg.timeout).await?;
            let rows = sqlx::query_as(LIST_NODES)
                .bind(msg.status_filter)
                .fetch_all(&mut *tx)
                .await?;
            tx.rollback().await?;
            Ok(rows)
        })
    }
}

/// A transaction whose statements PostgreSQL cancels after `timeout`
/// (`SET LOCAL statement_timeout`, which ends with the transaction).
async fn begin_bounded(
    pool: &PgPool,
    timeout: Duration,
) -> Result<sqlx::Transaction<'static, sqlx::Postgres>, sqlx::Error> {
    let mut tx = pool.begin().await?;
    sqlx::query(SET_LOCAL_STATEMENT_TIMEOUT)
        .bind(format!("{}ms", timeout.as_millis().max(1)))
        .execute(&mut *tx)
        .await?;
    Ok(tx)
}

impl Handler<GetNode> for DbActor {
    type Result = ResponseFuture<DbResult<Option<NodeRow>>>;

    fn handle(&mut self, msg: GetNode, ctx: &mut Context<Self>) -> Self::Result {
        self.run(ctx, move |pool| async move {
            sqlx::query_as(GET_NODE)
                .bind(msg.node_id)
                .fetch_optional(&pool)
                .await
        })
    }
}

impl Handler<QueryAudit> for DbActor {
    type Result = ResponseFuture<DbResult<AuditPage>>;

    fn handle(&mut self, msg: QueryAudit, ctx: &mut Context<Self>) -> Self::Result {
        self.run(ctx, move |pool| async move {
            let patterns = action_patterns(&msg.action_filter);
            // Both statements in one read-only transaction whose
            // statement_timeout (SET LOCAL) ends with it.
            let mut tx = begin_bounded(&pool, msg.timeout).await?;
            let entries: Vec<AuditRow> = sqlx::query_as(QUERY_AUDIT)
                .bind(&patterns)
                .bind(msg.since)
                .bind(msg.limit)
                .bind(msg.offset)
                .fetch_all(&mut *tx)
                .await?;
            let total: i64 = sqlx::query_scalar(COUNT_AUDIT)
                .bind(&patterns)
                .bind(msg.since)
                .fetch_one(&mut *tx)
                .await?;
            tx.rollback().await?;
            let has_more = msg.offset + (entries.len() as i64) < total;
            Ok(AuditPage {
                entries,
                total,
                has_more,
            })
        })
    }
}

impl Handler<InsertAuditBatch> for DbActor {
    type Result = ResponseFuture<DbResult<u64>>;

    fn handle(&mut self, msg: InsertAuditBatch, ctx: &mut Context<Self>) -> Self::Result {
        self.run(ctx, move |pool| async move {
            let events = &msg.events;
            let json = |v: &Option<serde_json::Value>| v.as_ref().map(|v| v.to_string());
            let inserted: i64 = sqlx::query_scalar(INSERT_AUDIT_BATCH)
                .bind(events.iter().map(|e| e.event_id).collect::<Vec<_>>())
                .bind(events.iter().map(|e| e.occurred_at).collect::<Vec<_>>())
                .bind(events.iter().map(|e| e.action.clone()).collect::<Vec<_>>())
                .bind(
                    events
                        .iter()
                        .map(|e| e.target_type.clone())
                        .collect::<Vec<_>>(),
                )
                .bind(
                    events
                        .iter()
                        .map(|e| e.target_id.clone())
                        .collect::<Vec<_>>(),
                )
                .bind(
                    events
                        .iter()
                        .map(|e| json(&e.old_value))
                        .collect::<Vec<_>>(),
                )
                .bind(
                    events
                        .iter()
                        .map(|e| json(&e.new_value))
                        .collect::<Vec<_>>(),
                )
                .bind(
                    events
                        .iter()
                        .map(|e| e.client_ip.map(|ip| ip.to_string()))
                        .collect::<Vec<_>>(),
                )
                .bind(events.iter().map(|e| e.success).collect::<Vec<_>>())
                .bind(
                    events
                        .iter()
                        .map(|e| e.error_message.clone())
                        .collect::<Vec<_>>(),
                )
                .fetch_one(&pool)
                .await?;
            // A row count: never negative.
            Ok(u64::try_from(inserted).unwrap_or(0))
        })
    }
}

impl Handler<SetPeerStatus> for DbActor {
    type Result = ResponseFuture<DbResult<bool>>;

    fn handle(&mut self, msg: SetPeerStatus, ctx: &mut Context<Self>) -> Self::Result {
        self.run(ctx, move |pool| async move {
            sqlx::query_scalar(SET_PEER_STATUS)
                .bind(msg.node_id)
                .bind(msg.status)
                .fetch_one(&pool)
                .await
        })
    }
}

impl Handler<TouchPeer> for DbActor {
    type Result = ResponseFuture<DbResult<bool>>;

    fn handle(&mut self, msg: TouchPeer, ctx: &mut Context<Self>) -> Self::Result {
        self.run(ctx, move |pool| async move {
            let mut tx = begin_bounded(&pool, msg.timeout).await?;
            let touched: bool = sqlx::query_scalar(TOUCH_PEER)
                .bind(msg.node_id)
                .fetch_one(&mut *tx)
                .await?;
            tx.commit().await?;
            Ok(touched)
        })
    }
}

impl Handler<PruneAudit> for DbActor {
    type Result = ResponseFuture<DbResult<i64>>;

    fn handle(&mut self, msg: PruneAudit, ctx: &mut Context<Self>) -> Self::Result {
        self.run(ctx, move |pool| async move {
            sqlx::query_scalar(PRUNE_AUDIT)
                .bind(msg.older_than.as_secs_f64())
                .fetch_one(&pool)
                .await
        })
    }
}

impl Handler<Close> for DbActor {
    type Result = ResponseFuture<()>;

    fn handle(&mut self, _: Close, ctx: &mut Context<Self>) -> Self::Result {
        self.closed = true;
        if let Some(handle) = self.retry.take() {
            ctx.cancel_future(handle);
        }
        self.phase = DbPhase::Stopped;
        self.publish(
            DbPhase::Stopped,
            Some("daemon is stopping".to_string()),
            |_| {},
        );
        let pool = self.pool.take();
        Box::pin(async move {
            if let Some(pool) = pool {
                pool.close().await;
            }
        })
    }
}
