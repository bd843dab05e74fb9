//! DbActor: the keeper of the PostgreSQL connection.
//!
//! It connects, checks what it connected to, pings it for the health
//! snapshot, and notices a loss (its own ping, or a query of a [`Db`]
//! handle that met a connection error). While the connection is usable it
//! publishes the pool in a slot the handles read; it never runs a query for
//! anyone.
//!
//! Reconnects back off from 100 ms to 5 s with jitter. So that a server
//! coming back is noticed within a second even deep into the backoff, a
//! cheap TCP knock runs every 200 ms while the last failure was a refused or
//! timed-out connection, and a successful knock starts an attempt at once.
//! Each state change is pushed into the shared health snapshot.
//!
//! [`Db`]: super::Db

use super::cause::{describe_connect_error, is_connection_error};
use super::queries::{EXTENSION_STATE, MIN_SERVER_VERSION_NUM, PING, SERVER_VERSION};
use super::{DbSettings, WITNESS};
use crate::backoff::Backoff;
use crate::health_state::{DbPhase, PostgresHealth, SharedHealth};
use actix::prelude::*;
use arc_swap::ArcSwapOption;
use slog::{debug, error, info, warn, Logger};
use sqlx::postgres::{PgPool, PgPoolOptions};
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

/// The pool while the connection is usable, read by every [`super::Db`].
pub(super) type PoolSlot = Arc<ArcSwapOption<PgPool>>;

// --- messages --------------------------------------------------------------

/// Refresh the PostgreSQL health: a `SELECT 1` round trip when connected.
/// Sent by the HealthActor every refresh interval.
#[derive(Message)]
#[rtype(result = "()")]
pub(super) struct Ping;

/// Subscribes to "PostgreSQL became usable" notifications.
#[derive(Message)]
#[rtype(result = "()")]
pub(super) struct SubscribeConnected(pub(super) Recipient<DbConnected>);

/// Sent to subscribers each time the keeper reaches `Connected`.
#[derive(Message, Clone)]
#[rtype(result = "()")]
pub struct DbConnected;

/// The keeper's observable state.
#[derive(Message)]
#[rtype(result = "DbStatus")]
pub(super) struct GetDbStatus;

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
pub(super) struct Close;

/// A query met a connection error: the connection is gone.
#[derive(Message)]
#[rtype(result = "()")]
pub(super) struct ConnectionLost(pub(super) String);

#[derive(Message)]
#[rtype(result = "()")]
struct Connect;

// --- the actor -------------------------------------------------------------

/// Where the keeper is: one state, from which the health phase follows.
enum State {
    /// A witness (`postgresql.enabled: false`): never connects.
    Disabled,
    /// Between attempts; `phase` is what the last one found (connecting,
    /// unsupported version, extension missing).
    Waiting { phase: DbPhase, knock: Knock },
    /// An attempt runs; health still shows the phase before it.
    Attempting { phase: DbPhase },
    /// Usable; the pool is published.
    Connected { pool: PgPool },
    /// Closed by shutdown: no reconnects.
    Closed,
}

/// The TCP knock while waiting after a refused or timed-out connection.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Knock {
    /// The last failure was not one a knock can see end.
    Off,
    Idle,
    InFlight,
}

impl State {
    fn phase(&self) -> DbPhase {
        match self {
            State::Disabled => DbPhase::Disabled,
            State::Waiting { phase, .. } | State::Attempting { phase } => *phase,
            State::Connected { .. } => DbPhase::Connected,
            State::Closed => DbPhase::Stopped,
        }
    }
}

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
    state: State,
    /// Where the pool is published for the handles.
    published: PoolSlot,
    backoff: Backoff,
    retry: Option<SpawnHandle>,
    last_logged: Option<(String, Instant)>,
    failures_since_log: u32,
    subscribers: Vec<Recipient<DbConnected>>,
    attempts: u64,
    /// Times a connection became usable (more than one: reconnects).
    connections: u64,
    losses: u64,
    last_error: Option<String>,
    /// Pings in a row that got no answer while the port was open.
    slow_pings: u32,
}

impl DbActor {
    pub(super) fn new(
        settings: Arc<DbSettings>,
        health: SharedHealth,
        published: PoolSlot,
        log: Logger,
    ) -> Self {
        DbActor {
            settings,
            health,
            log,
            state: State::Waiting {
                phase: DbPhase::Connecting,
                knock: Knock::Off,
            },
            published,
            backoff: Backoff::reconnect(),
            retry: None,
            last_logged: None,
            failures_since_log: 0,
            subscribers: Vec::new(),
            attempts: 0,
            connections: 0,
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

    /// Moves to `state`, publishing its phase (and the pool, if any).
    fn enter(&mut self, state: State, error: Option<String>, update: impl Fn(&mut PostgresHealth)) {
        self.published.store(match &state {
            State::Connected { pool } => Some(Arc::new(pool.clone())),
            _ => None,
        });
        let phase = state.phase();
        self.state = state;
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
        let State::Connected { pool } = &self.state else {
            return;
        };
        let pool = pool.clone();
        warn!(self.log, "postgresql.connection_lost"; "error" => &reason);
        self.losses += 1;
        self.slow_pings = 0;
        actix::spawn(async move { pool.close().await });
        self.backoff.reset();
        let waiting = State::Waiting {
            phase: DbPhase::Connecting,
            knock: Knock::Idle,
        };
        self.enter(waiting, Some(reason), |pg| {
            pg.latency = None;
            pg.registered = false;
        });
        let delay = self.backoff.next_delay();
        self.schedule_connect(delay, ctx);
    }

    /// Acts on the outcome of an attempt.
    fn attempted(&mut self, outcome: Attempt, ctx: &mut Context<Self>) {
        let State::Attempting { phase: before } = self.state else {
            // Closed meanwhile.
            if let Attempt::Ready { pool, .. } = outcome {
                actix::spawn(async move { pool.close().await });
            }
            return;
        };
        match outcome {
            Attempt::Ready {
                pool,
                version,
                extension,
            } => {
                self.backoff.reset();
                self.last_logged = None;
                let reconnect = self.connections > 0;
                self.connections += 1;
                info!(self.log, "postgresql.connected";
                      "server_version" => &version, "extension_version" => &extension,
                      "host" => &self.settings.host, "port" => self.settings.port,
                      "reconnect" => reconnect);
                self.enter(State::Connected { pool }, None, |pg| {
                    pg.server_version = Some(version.clone());
                    pg.extension_version = Some(extension.clone());
                    pg.registered = true;
                    if reconnect {
                        pg.reconnects += 1;
                    }
                });
                for subscriber in &self.subscribers {
                    subscriber.do_send(DbConnected);
                }
                ctx.notify(Ping);
            }
            Attempt::Unsupported { version } => {
                let reason = format!(
                    "PostgreSQL {version} is not supported: steep-repl needs PostgreSQL 18 or later \
                     (nothing is written to this server)"
                );
                if before != DbPhase::UnsupportedVersion {
                    error!(self.log, "postgresql.unsupported_version"; "server_version" => &version, "error" => &reason);
                }
                let waiting = State::Waiting {
                    phase: DbPhase::UnsupportedVersion,
                    knock: Knock::Off,
                };
                self.enter(waiting, Some(reason), |pg| {
                    pg.server_version = Some(version.clone());
                    pg.registered = false;
                });
                self.schedule_connect(VERSION_RECHECK, ctx);
            }
            Attempt::ExtensionMissing { version, available } => {
                let database = &self.settings.database;
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
                if before != DbPhase::ExtensionMissing {
                    error!(self.log, "postgresql.extension_missing"; "error" => &reason);
                }
                let waiting = State::Waiting {
                    phase: DbPhase::ExtensionMissing,
                    knock: Knock::Off,
                };
                self.enter(waiting, Some(reason), |pg| {
                    pg.server_version = Some(version.clone());
                    pg.extension_version = None;
                    pg.registered = false;
                });
                let delay = self.backoff.next_delay();
                self.schedule_connect(delay, ctx);
            }
            Attempt::Failed { reason, knockable } => {
                self.log_failure(&reason);
                let knock = if knockable { Knock::Idle } else { Knock::Off };
                let waiting = State::Waiting {
                    phase: DbPhase::Connecting,
                    knock,
                };
                self.enter(waiting, Some(reason), |pg| {
                    pg.latency = None;
                    pg.registered = false;
                });
                let delay = self.backoff.next_delay();
                self.schedule_connect(delay, ctx);
            }
        }
    }

    /// One TCP knock, while waiting after a refused or timed-out connection
    /// (never on a Unix socket path).
    fn knock(&mut self, ctx: &mut Context<Self>) {
        let State::Waiting {
            phase: DbPhase::Connecting,
            knock: knock @ Knock::Idle,
        } = &mut self.state
        else {
            return;
        };
        if self.settings.host.starts_with('/') {
            return;
        }
        *knock = Knock::InFlight;
        let addr = format!("{}:{}", self.settings.host, self.settings.port);
        let knock = async move {
            matches!(
                tokio::time::timeout(KNOCK_INTERVAL, tokio::net::TcpStream::connect(addr)).await,
                Ok(Ok(_))
            )
        };
        ctx.spawn(knock.into_actor(self).map(|open, act, ctx| {
            // Only the knock still awaited counts: an attempt may have
            // started (and ended) meanwhile.
            if let State::Waiting {
                knock: knock @ Knock::InFlight,
                ..
            } = &mut act.state
            {
                *knock = Knock::Idle;
                if open {
                    debug!(act.log, "postgresql.port_open"; "action" => "connecting now");
                    act.schedule_connect(Duration::ZERO, ctx);
                }
            }
        }));
    }
}

/// One full attempt: connect, check version and extension, register.
async fn attempt(settings: Arc<DbSettings>) -> Attempt {
    let fail = |e: sqlx::Error| {
        let knockable = matches!(&e, sqlx::Error::Io(io) if matches!(io.kind(),
            std::io::ErrorKind::ConnectionRefused | std::io::ErrorKind::TimedOut))
            || matches!(e, sqlx::Error::PoolTimedOut);
        Attempt::Failed {
            reason: describe_connect_error(&e, &settings.target()),
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
            self.enter(State::Disabled, None, |_| {});
            info!(self.log, "postgresql.disabled"; "note" => WITNESS);
            return;
        }
        ctx.notify(Connect);
        ctx.run_interval(KNOCK_INTERVAL, |act, ctx| act.knock(ctx));
    }
}

impl Handler<Connect> for DbActor {
    type Result = ();

    fn handle(&mut self, _: Connect, ctx: &mut Context<Self>) {
        self.retry = None;
        let State::Waiting { phase, .. } = self.state else {
            // Connected, attempting, closed, or a witness.
            return;
        };
        self.state = State::Attempting { phase };
        self.attempts += 1;
        let settings = self.settings.clone();
        ctx.spawn(
            attempt(settings)
                .into_actor(self)
                .map(|outcome, act, ctx| act.attempted(outcome, ctx)),
        );
    }
}

impl Handler<GetDbStatus> for DbActor {
    type Result = MessageResult<GetDbStatus>;

    fn handle(&mut self, _: GetDbStatus, _: &mut Context<Self>) -> Self::Result {
        MessageResult(DbStatus {
            phase: self.state.phase(),
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
        let State::Connected { pool } = &self.state else {
            return;
        };
        let pool = pool.clone();
        let timeout = self.settings.ping_timeout;
        let settings = self.settings.clone();
        let knock_at = (!self.settings.host.starts_with('/'))
            .then(|| format!("{}:{}", self.settings.host, self.settings.port));
        let ping = async move {
            let started = Instant::now();
            match tokio::time::timeout(timeout, sqlx::query(PING).execute(&pool)).await {
                Ok(Ok(_)) => PingOutcome::Answered(started.elapsed()),
                Ok(Err(e)) if is_connection_error(&e) => {
                    PingOutcome::Lost(describe_connect_error(&e, &settings.target()))
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
        if matches!(self.state, State::Connected { .. }) {
            msg.0.do_send(DbConnected);
        }
        self.subscribers.push(msg.0);
    }
}

impl Handler<Close> for DbActor {
    type Result = ResponseFuture<()>;

    fn handle(&mut self, _: Close, ctx: &mut Context<Self>) -> Self::Result {
        if let Some(handle) = self.retry.take() {
            ctx.cancel_future(handle);
        }
        let pool = match std::mem::replace(&mut self.state, State::Closed) {
            State::Connected { pool } => Some(pool),
            _ => None,
        };
        self.enter(
            State::Closed,
            Some("daemon is stopping".to_string()),
            |_| {},
        );
        Box::pin(async move {
            if let Some(pool) = pool {
                pool.close().await;
            }
        })
    }
}
