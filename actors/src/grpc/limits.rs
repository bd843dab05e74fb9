//! Bounds on what peers may ask of the gRPC server, as one tower layer in
//! front of the Coordinator and the standard health services:
//!
//! - a per-peer rate limit (`grpc.peer_rate_limit`): a token bucket per
//!   certificate identity under mutual TLS, per source address (an IPv6
//!   /64 counting as one) on plaintext gRPC; a peer over its rate is
//!   answered RESOURCE_EXHAUSTED while the others are still served;
//! - a concurrency limit (`grpc.max_concurrent_requests`): beyond it a
//!   request is answered UNAVAILABLE at once instead of queueing;
//! - a request timeout (`grpc.request_timeout`): a handler that has not
//!   answered by then is dropped (its database work carries the same
//!   bound as a `statement_timeout`) and the caller gets DEADLINE_EXCEEDED.
//!
//! The Raft service (`steep.repl.v1.Raft`) passes untouched. It is the
//! cluster's own traffic, each message admitted only from a member whose
//! certificate names it; its volume follows the client load (a follower
//! forwards every write it takes), so a rate or concurrency bound would turn
//! load into failed writes and elections; and each of its handlers bounds
//! its own wait (a write 5 s, a read index 2 s, a new member's catch-up
//! 30 s, which a shorter request timeout would cut).
//!
//! Refusals are counted for `/metrics` and logged at most once per reason
//! per `LOG_WINDOW`, with the count held back since the last line.

pub mod rate;

use super::auth_failures::Source;
use crate::peer_tls::PeerInfo;
use futures_util::future::BoxFuture;
use rate::Buckets;
use slog::{warn, Logger};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};
use tokio::sync::Semaphore;
use tonic::Status;

/// Requests to this service are not limited (see the module comment).
pub const RAFT_PATH_PREFIX: &str = "/steep.repl.v1.Raft/";

/// One log line per refusal reason per window at most.
pub const LOG_WINDOW: Duration = Duration::from_secs(10);

/// The three bounds, from `grpc.*` in the configuration.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct GrpcLimits {
    /// How long a request may take before it is dropped.
    pub request_timeout: Duration,
    /// Requests served at once, all peers together.
    pub max_concurrent_requests: usize,
    /// Requests a second one peer may send (also its burst).
    pub peer_rate_limit: u32,
}

impl GrpcLimits {
    pub const DEFAULT_REQUEST_TIMEOUT: Duration = Duration::from_secs(10);
    pub const DEFAULT_MAX_CONCURRENT_REQUESTS: usize = 256;
    pub const DEFAULT_PEER_RATE_LIMIT: u32 = 200;
}

impl Default for GrpcLimits {
    /// A peer sends about two requests a second (a heartbeat, now and then
    /// a health check or a node list): the defaults leave a hundred times
    /// that, and more concurrent requests than the database pool can
    /// serve anyway.
    fn default() -> Self {
        GrpcLimits {
            request_timeout: Self::DEFAULT_REQUEST_TIMEOUT,
            max_concurrent_requests: Self::DEFAULT_MAX_CONCURRENT_REQUESTS,
            peer_rate_limit: Self::DEFAULT_PEER_RATE_LIMIT,
        }
    }
}

/// Why a request was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refusal {
    /// The peer is over `grpc.peer_rate_limit`.
    RateLimited,
    /// `grpc.max_concurrent_requests` are in flight.
    Overloaded,
    /// No answer within `grpc.request_timeout`.
    TimedOut,
}

impl Refusal {
    pub const ALL: [Refusal; 3] = [Refusal::RateLimited, Refusal::Overloaded, Refusal::TimedOut];

    /// The `reason` label and log field.
    pub fn label(self) -> &'static str {
        match self {
            Refusal::RateLimited => "rate_limited",
            Refusal::Overloaded => "overloaded",
            Refusal::TimedOut => "timeout",
        }
    }

    fn index(self) -> usize {
        self as usize
    }

    fn status(self, limits: &GrpcLimits) -> Status {
        match self {
            Refusal::RateLimited => Status::resource_exhausted(format!(
                "too many requests from this peer: at most {} a second (grpc.peer_rate_limit)",
                limits.peer_rate_limit
            )),
            Refusal::Overloaded => Status::unavailable(format!(
                "this node is serving {} requests already (grpc.max_concurrent_requests); try again",
                limits.max_concurrent_requests
            )),
            Refusal::TimedOut => Status::deadline_exceeded(format!(
                "no answer within {} ms (grpc.request_timeout)",
                limits.request_timeout.as_millis()
            )),
        }
    }
}

/// Refusals since start, by reason; registered in the daemon's registry
/// for `/metrics`.
#[derive(Debug)]
pub struct LimitMetrics {
    family: prometheus::IntCounterVec,
    /// One handle per reason, in `Refusal::ALL` order.
    refused: Vec<prometheus::IntCounter>,
}

impl Default for LimitMetrics {
    fn default() -> Self {
        // A constant name, help and label, which the crate accepts (the
        // tests build it): its constructor fails only on invalid ones.
        let family = prometheus::IntCounterVec::new(
            prometheus::Opts::new(
                "steep_repl_grpc_requests_refused_total",
                "gRPC requests refused by the server's limits, by reason \
                 (rate_limited, overloaded, timeout)",
            ),
            &["reason"],
        )
        .expect("constant metric options are valid");
        let refused = Refusal::ALL
            .iter()
            .map(|reason| family.with_label_values(&[reason.label()]))
            .collect();
        LimitMetrics { family, refused }
    }
}

impl LimitMetrics {
    pub fn refused(&self, reason: Refusal) -> u64 {
        self.refused[reason.index()].get()
    }

    fn count(&self, reason: Refusal) {
        self.refused[reason.index()].inc();
    }

    /// Adds the `steep_repl_grpc_requests_refused_total` family to the
    /// daemon's registry.
    pub fn register(&self, registry: &crate::metrics::MetricsRegistry) -> prometheus::Result<()> {
        registry.register(self.family.clone())
    }
}

/// Who a request is counted against.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
enum PeerKey {
    /// The verified certificate's first name (its CN, else its first SAN).
    Certificate(String),
    /// A plaintext peer, by address.
    Address(Source),
    /// A request without connection info (not served through the peer
    /// port's own listener): all such share one bucket.
    Unknown,
}

impl PeerKey {
    fn of(info: Option<&PeerInfo>) -> PeerKey {
        let Some(info) = info else {
            return PeerKey::Unknown;
        };
        match info.identity.as_ref().and_then(|id| id.names().next()) {
            Some(name) => PeerKey::Certificate(name),
            None => PeerKey::Address(Source::of(info.remote_addr.ip())),
        }
    }
}

/// One reason's log window: when its last line was written and how many
/// refusals were held back since.
#[derive(Default, Clone, Copy)]
struct LogWindow {
    last: Option<Instant>,
    held_back: u64,
}

struct Shared {
    limits: GrpcLimits,
    permits: Arc<Semaphore>,
    buckets: Mutex<Buckets<PeerKey>>,
    metrics: Arc<LimitMetrics>,
    windows: Mutex<[LogWindow; 3]>,
    log: Logger,
}

impl Shared {
    /// Counts a refusal, logs it when its window allows, and builds the
    /// answer.
    fn refuse(&self, reason: Refusal, info: Option<&PeerInfo>, path: &str) -> Status {
        self.metrics.count(reason);
        let held_back = self.windows.lock().ok().and_then(|mut windows| {
            let w = &mut windows[reason.index()];
            let now = Instant::now();
            if w.last.is_some_and(|at| now.duration_since(at) < LOG_WINDOW) {
                w.held_back += 1;
                return None;
            }
            w.last = Some(now);
            Some(std::mem::take(&mut w.held_back))
        });
        if let Some(held_back) = held_back {
            let peer = info.map_or_else(|| "-".to_string(), describe_peer);
            warn!(self.log, "grpc.request_refused"; "reason" => reason.label(), "peer" => peer,
                  "path" => path, "held_back_since_last_report" => held_back);
        }
        reason.status(&self.limits)
    }
}

/// `node-2 (127.0.0.1:51234)` or the address alone on plaintext gRPC.
fn describe_peer(info: &PeerInfo) -> String {
    match info.identity.as_ref().and_then(|id| id.names().next()) {
        Some(name) => format!("{name} ({})", info.remote_addr),
        None => info.remote_addr.to_string(),
    }
}

/// The layer for `tonic::transport::Server::builder().layer(..)`.
#[derive(Clone)]
pub struct LimitsLayer {
    shared: Arc<Shared>,
}

impl LimitsLayer {
    pub fn new(limits: GrpcLimits, metrics: Arc<LimitMetrics>, log: Logger) -> Self {
        LimitsLayer {
            shared: Arc::new(Shared {
                limits,
                permits: Arc::new(Semaphore::new(limits.max_concurrent_requests.max(1))),
                buckets: Mutex::new(Buckets::new(limits.peer_rate_limit)),
                metrics,
                windows: Mutex::new([LogWindow::default(); 3]),
                log,
            }),
        }
    }
}

impl<S> tower_layer::Layer<S> for LimitsLayer {
    type Service = Limited<S>;

    fn layer(&self, inner: S) -> Limited<S> {
        Limited {
            inner,
            shared: self.shared.clone(),
        }
    }
}

/// The services behind [`LimitsLayer`].
#[derive(Clone)]
pub struct Limited<S> {
    inner: S,
    shared: Arc<Shared>,
}

type HttpResponse = http::Response<tonic::body::Body>;

impl<S, B> tower_service::Service<http::Request<B>> for Limited<S>
where
    S: tower_service::Service<http::Request<B>, Response = HttpResponse> + Clone + Send + 'static,
    S::Future: Send + 'static,
    S::Error: Send + 'static,
    B: Send + 'static,
{
    type Response = HttpResponse;
    type Error = S::Error;
    type Future = BoxFuture<'static, Result<HttpResponse, S::Error>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, request: http::Request<B>) -> Self::Future {
        // The clone is the one left for the next call: `self.inner` is the
        // one `poll_ready` readied.
        let clone = self.inner.clone();
        let mut inner = std::mem::replace(&mut self.inner, clone);
        let path = request.uri().path().to_string();
        if path.starts_with(RAFT_PATH_PREFIX) {
            return Box::pin(inner.call(request));
        }
        let shared = self.shared.clone();
        let info = request.extensions().get::<PeerInfo>().cloned();
        let admitted = shared.buckets.lock().map_or(true, |mut b| {
            b.admit(PeerKey::of(info.as_ref()), Instant::now())
        });
        if !admitted {
            let status = shared.refuse(Refusal::RateLimited, info.as_ref(), &path);
            return Box::pin(async move { Ok(status.into_http()) });
        }
        let Ok(permit) = shared.permits.clone().try_acquire_owned() else {
            let status = shared.refuse(Refusal::Overloaded, info.as_ref(), &path);
            return Box::pin(async move { Ok(status.into_http()) });
        };
        let answer = inner.call(request);
        Box::pin(async move {
            let answered = tokio::time::timeout(shared.limits.request_timeout, answer).await;
            drop(permit);
            match answered {
                Ok(response) => response,
                // The handler's future was dropped with the timeout: its
                // work stops at its next await.
                Err(_) => Ok(shared
                    .refuse(Refusal::TimedOut, info.as_ref(), &path)
                    .into_http()),
            }
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_metric_family_lists_every_reason() {
        let metrics = LimitMetrics::default();
        metrics.count(Refusal::RateLimited);
        metrics.count(Refusal::RateLimited);
        metrics.count(Refusal::TimedOut);
        let registry = crate::metrics::MetricsRegistry::new();
        metrics.register(&registry).unwrap();
        let out = registry.render();
        assert!(out.contains("# TYPE steep_repl_grpc_requests_refused_total counter"));
        assert!(out.contains("steep_repl_grpc_requests_refused_total{reason=\"rate_limited\"} 2"));
        assert!(out.contains("steep_repl_grpc_requests_refused_total{reason=\"overloaded\"} 0"));
        assert!(out.contains("steep_repl_grpc_requests_refused_total{reason=\"timeout\"} 1"));
    }

    #[test]
    fn refusals_carry_the_codes_clients_retry_on() {
        let limits = GrpcLimits::default();
        assert_eq!(
            Refusal::RateLimited.status(&limits).code(),
            tonic::Code::ResourceExhausted
        );
        assert_eq!(
            Refusal::Overloaded.status(&limits).code(),
            tonic::Code::Unavailable
        );
        assert_eq!(
            Refusal::TimedOut.status(&limits).code(),
            tonic::Code::DeadlineExceeded
        );
    }
}
