//! HttpActor: owns the actix-web server that answers load balancers,
//! Kubernetes and Prometheus (`/health`, `/ready`, `/live`, `/metrics`).
//!
//! The SystemActor starts it when `http.enabled`, after the actors whose
//! state it shows. The server runs on its own worker threads and reads the
//! cached health directly (see `routes`); this actor only starts it, reports
//! its state through its [`ListenerReport`] and stops it gracefully on
//! [`StopAccepting`]. The socket is normally bound by the daemon before the
//! actor system starts (see `bind`), so a port in use never gets this far.

mod bind;
pub mod metrics;
pub mod routes;

pub use bind::{HttpError, HttpListener};

use crate::health_state::SharedHealth;
use crate::listener::{Face, ListenerReport, ListenerStarted, StopAccepting};
use actix::prelude::*;
use actix_web::dev::{Server, ServerHandle};
use actix_web::HttpServer;
use slog::{error, info, warn, Logger};
use std::net::{IpAddr, SocketAddr};
use std::time::{Duration, Instant};

// Messages: the HttpActor answers `listener::StopAccepting` (stop the
// server gracefully by the deadline), like every listener.

/// A client must send its request head within this time after connecting
/// (and after each keep-alive request): an idle or trickling connection is
/// closed instead of holding a slot.
const CLIENT_REQUEST_TIMEOUT: Duration = Duration::from_secs(5);
/// An idle keep-alive connection is closed after this. Long enough for a
/// Prometheus scrape interval's connection reuse to matter little, short
/// enough that forgotten connections do not pile up.
const KEEP_ALIVE: Duration = Duration::from_secs(15);
/// Time a closing connection gets to shut down cleanly.
const CLIENT_DISCONNECT_TIMEOUT: Duration = Duration::from_secs(1);
/// actix-web's own bound on a graceful stop (whole seconds); the
/// `StopAccepting` deadline is enforced on top of it.
const SERVER_SHUTDOWN_SECS: u64 = 5;
/// `/live` fails once the daemon's loop has not turned for this many
/// health refresh intervals.
const LIVE_AFTER_INTERVALS: u32 = 5;

/// Where and how to serve HTTP, built by the daemon from `http.*`.
#[derive(Debug, Clone)]
pub struct HttpSettings {
    pub bind: IpAddr,
    pub port: u16,
    /// The socket bound before the actor system started (what the daemon
    /// does, so that a port in use stops the start). `None`: the actor binds
    /// `bind:port` itself and reports a failure into health.
    pub listener: Option<HttpListener>,
    /// The daemon's one registry (IPC and gRPC register theirs in it too),
    /// served as `/metrics`.
    pub metrics: crate::metrics::MetricsRegistry,
    /// `http.details`: error texts in `/health`, peer addresses in
    /// `/metrics` (off: the port is reachable from the network).
    pub details: bool,
}

impl HttpSettings {
    pub fn addr(&self) -> SocketAddr {
        SocketAddr::new(self.bind, self.port)
    }
}

pub struct HttpActor {
    settings: HttpSettings,
    health: SharedHealth,
    report: ListenerReport,
    live_after: Duration,
    log: Logger,
    server: Option<ServerHandle>,
    /// Set by StopAccepting: the server's end is expected from then on.
    stopping: bool,
}

impl HttpActor {
    /// Announces the listener as pending in health at once (the daemon is
    /// not "running" before it serves); `parent` hears whether it started.
    /// `/live` fails once the daemon's loop has not turned for
    /// `LIVE_AFTER_INTERVALS` times `health_interval`.
    pub fn new(
        settings: HttpSettings,
        health: SharedHealth,
        health_interval: Duration,
        parent: Option<Recipient<ListenerStarted>>,
        log: Logger,
    ) -> Self {
        let addr = settings
            .listener
            .as_ref()
            .map_or(settings.addr(), HttpListener::local_addr);
        let report = ListenerReport::pending(
            Face::Http,
            health.clone(),
            parent,
            Some(addr.port()),
            addr.to_string(),
            false,
        );
        HttpActor {
            settings,
            health,
            report,
            live_after: health_interval * LIVE_AFTER_INTERVALS,
            log,
            server: None,
            stopping: false,
        }
    }

    /// Builds and starts the server on the bound socket.
    fn serve(&self) -> Result<(Server, SocketAddr), HttpError> {
        let listener = match &self.settings.listener {
            Some(listener) => listener.clone(),
            None => HttpListener::bind(self.settings.addr())?,
        };
        let addr = listener.local_addr();
        let socket = match listener.take() {
            Some(socket) => socket,
            // Taken by an earlier start of this actor: bind anew.
            None => HttpListener::bind(addr)?
                .take()
                .ok_or_else(|| HttpError::Start {
                    addr,
                    source: std::io::Error::other("the listening socket was already taken"),
                })?,
        };
        let probes = routes::Probes::new(
            self.health.clone(),
            self.live_after,
            self.settings.details,
            self.settings.metrics.clone(),
        )?;
        let workers = std::thread::available_parallelism()
            .map_or(2, |n| n.get())
            .max(2);
        let server = HttpServer::new(move || routes::app(probes.clone()))
            .workers(workers)
            // Connections are async tasks, not threads: idle ones cost
            // memory and a descriptor, and the request timeout reaps them;
            // the cap keeps descriptors for everything else.
            .max_connections(crate::fd_limit::http_connections_per_worker(
                crate::fd_limit::open_files_limit(),
                workers,
            ))
            .client_request_timeout(CLIENT_REQUEST_TIMEOUT)
            .keep_alive(KEEP_ALIVE)
            .client_disconnect_timeout(CLIENT_DISCONNECT_TIMEOUT)
            .shutdown_timeout(SERVER_SHUTDOWN_SECS)
            // The SystemActor owns the signals and the order of shutdown.
            .disable_signals()
            .listen(socket)
            .map_err(|source| HttpError::Start { addr, source })?
            .run();
        Ok((server, addr))
    }

    fn server_ended(&mut self, result: std::io::Result<()>) {
        self.server = None;
        if self.stopping {
            return;
        }
        let reason = match result {
            Ok(()) => "the HTTP server stopped unexpectedly".to_string(),
            Err(e) => format!("the HTTP server failed: {e}"),
        };
        error!(self.log, "http.stopped"; "error" => &reason);
        self.report.failed(&reason);
    }
}

impl Actor for HttpActor {
    type Context = Context<Self>;

    fn started(&mut self, ctx: &mut Context<Self>) {
        match self.serve() {
            Ok((server, addr)) => {
                self.server = Some(server.handle());
                self.report.up(Some(addr.port()), Some(addr.to_string()));
                info!(self.log, "http.listening"; "address" => %addr);
                ctx.spawn(
                    server
                        .into_actor(self)
                        .map(|result, act, _| act.server_ended(result)),
                );
            }
            Err(e) => {
                let reason = e.to_string();
                error!(self.log, "http.failed"; "error" => &reason);
                self.report.failed(&reason);
            }
        }
    }
}

impl Handler<StopAccepting> for HttpActor {
    type Result = ResponseFuture<()>;

    fn handle(&mut self, msg: StopAccepting, _: &mut Context<Self>) -> Self::Result {
        self.stopping = true;
        self.report.down();
        let Some(server) = self.server.take() else {
            return Box::pin(async {});
        };
        let log = self.log.clone();
        Box::pin(async move {
            let left = msg.deadline.saturating_duration_since(Instant::now());
            // Graceful: stop accepting, let in-flight requests finish (idle
            // keep-alive connections are closed at once).
            if tokio::time::timeout(left, server.stop(true)).await.is_err() {
                warn!(log, "http.stop_forced"; "note" => "requests still running at the deadline were dropped");
                server.stop(false).await;
            }
            info!(log, "http.stopped");
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::health_state::{HealthSnapshot, PostgresHealth};
    use std::io::{Read, Write};

    fn shared() -> SharedHealth {
        let s = HealthSnapshot::starting(
            "0.1.0",
            "a",
            "A",
            PostgresHealth::new("db", 5432, "postgres"),
        );
        SharedHealth::new(s, Duration::from_secs(3))
    }

    fn get(addr: SocketAddr, path: &str) -> std::io::Result<String> {
        let mut stream = std::net::TcpStream::connect(addr)?;
        stream.set_read_timeout(Some(Duration::from_secs(10)))?;
        write!(
            stream,
            "GET {path} HTTP/1.1\r\nHost: test\r\nConnection: close\r\n\r\n"
        )?;
        let mut out = String::new();
        stream.read_to_string(&mut out)?;
        Ok(out)
    }

    async fn wait_until(what: impl Fn() -> bool) {
        let deadline = Instant::now() + Duration::from_secs(10);
        while !what() {
            assert!(Instant::now() < deadline, "timed out");
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }

    #[actix_rt::test]
    async fn the_actor_serves_on_the_bound_socket_and_stops_gracefully() {
        let health = shared();
        health.touch_loop();
        let listener = HttpListener::bind("127.0.0.1:0".parse().unwrap()).unwrap();
        let addr = listener.local_addr();
        let settings = HttpSettings {
            bind: addr.ip(),
            port: addr.port(),
            listener: Some(listener),
            metrics: crate::metrics::MetricsRegistry::new(),
            details: false,
        };
        let log = Logger::root(slog::Discard, slog::o!());
        let stop =
            HttpActor::new(settings, health.clone(), Duration::from_secs(1), None, log).start();
        wait_until(|| health.load().http.listening).await;
        assert_eq!(health.load().http.port, Some(addr.port()));

        let answer = tokio::task::spawn_blocking(move || get(addr, "/live"))
            .await
            .unwrap()
            .unwrap();
        assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
        assert!(answer.ends_with("{\"alive\":true}"), "{answer}");

        stop.send(StopAccepting {
            deadline: Instant::now() + Duration::from_secs(5),
        })
        .await
        .unwrap();
        assert!(!health.load().http.listening);
        let after = tokio::task::spawn_blocking(move || get(addr, "/live"))
            .await
            .unwrap();
        assert!(
            after.is_err(),
            "still answering after StopAccepting: {after:?}"
        );
    }

    #[actix_rt::test]
    async fn a_bind_failure_inside_the_actor_is_reported_into_health() {
        let health = shared();
        let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = taken.local_addr().unwrap();
        let settings = HttpSettings {
            bind: addr.ip(),
            port: addr.port(),
            listener: None,
            metrics: crate::metrics::MetricsRegistry::new(),
            details: false,
        };
        let log = Logger::root(slog::Discard, slog::o!());
        let _stop =
            HttpActor::new(settings, health.clone(), Duration::from_secs(1), None, log).start();
        wait_until(|| health.load().http.error.is_some()).await;
        let s = health.load();
        assert!(!s.http.listening && !s.http.ok());
        assert!(
            s.http.error.as_deref().unwrap().contains("already in use"),
            "{:?}",
            s.http.error
        );
    }
}
