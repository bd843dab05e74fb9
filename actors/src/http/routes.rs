//! The HTTP endpoints: `/health` (and `/`), `/ready`, `/live`, `/metrics`.
//!
//! Every answer is computed from the cached [`HealthSnapshot`] (a pointer
//! load) and the current time: no mailbox round trip, never the database,
//! so a probe is as fast and as available as the server itself. Each probe
//! path answers GET with a JSON body and HEAD and OPTIONS with the same
//! status and no body: HAProxy's default check is `OPTIONS /`, which is why
//! `/` means `/health`. Other methods get 405, unknown paths 404.

use super::bind::HttpError;
use super::metrics::{self, RequestMetrics};
use crate::health_report::health_report;
use crate::health_state::{with_coordinator, CoordinatorView, HealthSnapshot, SharedHealth};
use crate::metrics::{HealthCollector, MetricsRegistry, CONTENT_TYPE};
use actix_web::body::MessageBody;
use actix_web::dev::{Service, ServiceFactory, ServiceRequest, ServiceResponse};
use actix_web::http::header::{ContentType, HeaderValue, ALLOW, CACHE_CONTROL};
use actix_web::http::{Method, StatusCode};
use actix_web::web::Bytes;
use actix_web::{web, App, HttpRequest, HttpResponse};
use serde_json::json;
use std::cell::RefCell;
use std::sync::Arc;
use std::time::{Duration, Instant};

/// What the handlers read: the shared health and how to judge it.
#[derive(Clone)]
pub struct Probes {
    health: SharedHealth,
    /// `/live` fails once the daemon's loop has not turned for this long.
    live_after: Duration,
    requests: RequestMetrics,
    /// The daemon's one registry: the `/metrics` page.
    metrics: MetricsRegistry,
    /// Error texts in `/health` (`http.details`).
    details: bool,
}

impl Probes {
    /// Registers the request counters and the health snapshot's families in
    /// `metrics`. `details` (`http.details`): the components' error texts in
    /// `/health` and the peers' addresses in `/metrics` (user names,
    /// database names, pg_hba lines: for a trusted network only).
    pub fn new(
        health: SharedHealth,
        live_after: Duration,
        details: bool,
        metrics: MetricsRegistry,
    ) -> Result<Self, HttpError> {
        let requests = RequestMetrics::register(&metrics)?;
        metrics.register(HealthCollector::new(health.clone(), live_after, details)?)?;
        Ok(Probes {
            health,
            live_after,
            requests,
            metrics,
            details,
        })
    }

    fn live(&self) -> Result<(), String> {
        let age = self.health.loop_age();
        if age < self.live_after {
            Ok(())
        } else {
            Err(format!(
                "the daemon's main loop has not turned for {:.1}s",
                age.as_secs_f64()
            ))
        }
    }
}

/// The probes a path can ask for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Probe {
    Health,
    Ready,
    Live,
    Metrics,
}

/// The application served by every worker.
pub fn app(
    probes: Probes,
) -> App<
    impl ServiceFactory<
        ServiceRequest,
        Config = (),
        Response = ServiceResponse<impl MessageBody>,
        Error = actix_web::Error,
        InitError = (),
    >,
> {
    // Called once per worker thread: each counts into a shard of its own.
    let metrics = probes.requests.shard();
    App::new()
        .app_data(web::Data::new(probes))
        // Counts every answer, 404s and 405s included, by path and code.
        .wrap_fn(move |req, srv| {
            let started = Instant::now();
            let path = metrics::path_index(req.path());
            let answer = srv.call(req);
            let metrics = metrics.clone();
            async move {
                let res = answer.await?;
                metrics.observe(path, res.status(), started.elapsed());
                Ok(res)
            }
        })
        // The most asked path first: the router tries them in order.
        .route(
            "/health",
            web::to(|req: HttpRequest, p: web::Data<Probes>| answer(req, p, Probe::Health)),
        )
        .route(
            "/",
            web::to(|req: HttpRequest, p: web::Data<Probes>| answer(req, p, Probe::Health)),
        )
        .route(
            "/ready",
            web::to(|req: HttpRequest, p: web::Data<Probes>| answer(req, p, Probe::Ready)),
        )
        .route(
            "/live",
            web::to(|req: HttpRequest, p: web::Data<Probes>| answer(req, p, Probe::Live)),
        )
        .route(
            "/metrics",
            web::to(|req: HttpRequest, p: web::Data<Probes>| answer(req, p, Probe::Metrics)),
        )
        .default_service(web::to(not_found))
}

async fn not_found() -> HttpResponse {
    HttpResponse::NotFound().json(json!({
        "error": "no such endpoint",
        "endpoints": ["/health", "/ready", "/live", "/metrics"],
    }))
}

const ALLOWED: &str = "GET, HEAD, OPTIONS";

async fn answer(req: HttpRequest, probes: web::Data<Probes>, probe: Probe) -> HttpResponse {
    let method = req.method();
    let body_wanted = if method == Method::GET {
        true
    } else if method == Method::HEAD || method == Method::OPTIONS {
        false
    } else {
        return HttpResponse::MethodNotAllowed()
            .insert_header((ALLOW, HeaderValue::from_static(ALLOWED)))
            .json(json!({"error": format!("{method} is not allowed here"), "allow": ALLOWED}));
    };
    let now = Instant::now();
    let stale_after = probes.health.stale_after;
    let (status, body) = match probe {
        Probe::Health => health(&probes.health, now, body_wanted, probes.details),
        Probe::Ready => match probes.health.load().readiness(now, stale_after) {
            Ok(()) => (StatusCode::OK, Bytes::from_static(br#"{"ready":true}"#)),
            Err(reason) => (
                StatusCode::SERVICE_UNAVAILABLE,
                Bytes::from(to_json(&json!({"ready": false, "reason": reason}))),
            ),
        },
        Probe::Live => match probes.live() {
            Ok(()) => (StatusCode::OK, Bytes::from_static(br#"{"alive":true}"#)),
            Err(reason) => (
                StatusCode::SERVICE_UNAVAILABLE,
                Bytes::from(to_json(&json!({"alive": false, "reason": reason}))),
            ),
        },
        Probe::Metrics => {
            let mut res = HttpResponse::Ok();
            res.insert_header((CACHE_CONTROL, HeaderValue::from_static("no-store")));
            if !body_wanted {
                return status_only(res, method);
            }
            return res.content_type(CONTENT_TYPE).body(probes.metrics.render());
        }
    };
    let mut res = HttpResponse::build(status);
    // A cached probe answer would hide a state change from the balancer.
    res.insert_header((CACHE_CONTROL, HeaderValue::from_static("no-store")));
    if body_wanted {
        res.content_type(ContentType::json()).body(body)
    } else {
        status_only(res, method)
    }
}

/// Serializing our own report types cannot fail (string keys, no maps
/// with non-string keys); an empty body would still carry the status.
fn to_json<T: serde::Serialize>(value: &T) -> Vec<u8> {
    serde_json::to_vec(value).unwrap_or_default()
}

/// HEAD and OPTIONS: the status and headers, no body.
fn status_only(mut res: actix_web::HttpResponseBuilder, method: &Method) -> HttpResponse {
    if method == Method::OPTIONS {
        res.insert_header((ALLOW, HeaderValue::from_static(ALLOWED)));
    }
    res.finish()
}

/// `/health`: the full report for GET; for HEAD and OPTIONS only the
/// verdict, which costs a few comparisons instead of building the report.
fn health(
    shared: &SharedHealth,
    now: Instant,
    body_wanted: bool,
    details: bool,
) -> (StatusCode, Bytes) {
    let stale_after = shared.stale_after;
    let stored = shared.peek();
    let coordinator = shared.coordinator_view();
    // The verdict reads PostgreSQL and the listeners, which are stored; the
    // coordinator only goes into the body.
    let healthy = stored.is_healthy(now, stale_after);
    let code = if healthy {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    if !body_wanted {
        return (code, Bytes::new());
    }
    if !healthy {
        // Rare and time-dependent (the "stale for N s" message): built fresh.
        return (
            code,
            report_body(&stored, coordinator, now, stale_after, details),
        );
    }
    let body = HealthyBody::get(&stored, coordinator, now, stale_after, details);
    (code, body)
}

/// The `/health` body: the report of the stored snapshot with the
/// coordinator of `view`, serialized.
fn report_body(
    stored: &HealthSnapshot,
    view: Option<CoordinatorView>,
    now: Instant,
    stale_after: Duration,
    details: bool,
) -> Bytes {
    let mut report = match view {
        Some(view) => health_report(&with_coordinator(stored, view), now, stale_after),
        None => health_report(stored, now, stale_after),
    };
    if !details {
        report.hide_errors();
    }
    Bytes::from(to_json(&report))
}

/// The serialized healthy `/health` body, kept per worker thread.
///
/// A healthy report depends only on the stored snapshot, the coordinator
/// this node names (holder and epoch) and the whole seconds of uptime, so
/// it is built once per such key and then served as a shared buffer: a
/// probe costs a verdict, a look at the coordinator and a refcount instead
/// of copying the snapshot and building and serializing the report (the
/// snapshot changes about once a second, at each PostgreSQL ping). Per
/// thread, so workers never contend.
struct HealthyBody {
    /// Held, not only compared, so that its address cannot be reused by a
    /// newer snapshot while cached.
    snapshot: Arc<HealthSnapshot>,
    /// Holder and epoch (`None`: no cluster member runs here).
    coordinator: Option<(Option<String>, Option<u64>)>,
    uptime_seconds: u64,
    body: Bytes,
}

thread_local! {
    static HEALTHY_BODY: RefCell<Option<HealthyBody>> = const { RefCell::new(None) };
}

impl HealthyBody {
    fn get(
        stored: &Arc<HealthSnapshot>,
        view: Option<CoordinatorView>,
        now: Instant,
        stale_after: Duration,
        details: bool,
    ) -> Bytes {
        let uptime_seconds = stored.uptime_seconds(now);
        HEALTHY_BODY.with(|cell| {
            let mut cached = cell.borrow_mut();
            if let Some(c) = cached.as_ref() {
                let same_coordinator = match (&c.coordinator, &view) {
                    (None, None) => true,
                    (Some((holder, epoch)), Some(v)) => *holder == v.holder && *epoch == v.epoch,
                    _ => false,
                };
                if Arc::ptr_eq(&c.snapshot, stored)
                    && c.uptime_seconds == uptime_seconds
                    && same_coordinator
                {
                    return c.body.clone();
                }
            }
            let coordinator = view.as_ref().map(|v| (v.holder.clone(), v.epoch));
            let body = report_body(stored, view, now, stale_after, details);
            *cached = Some(HealthyBody {
                snapshot: Arc::clone(stored),
                coordinator,
                uptime_seconds,
                body: body.clone(),
            });
            body
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::health_state::{DaemonState, DbPhase, PostgresHealth};
    use actix_web::test::{call_service, init_service, read_body, TestRequest};

    const STALE: Duration = Duration::from_secs(3);

    fn probes(healthy: bool, live_after: Duration) -> Probes {
        probes_with(healthy, live_after, false)
    }

    fn probes_with(healthy: bool, live_after: Duration, details: bool) -> Probes {
        let mut s = HealthSnapshot::starting(
            "0.1.0",
            "a",
            "Node A",
            PostgresHealth::new("db", 5432, "postgres"),
        );
        if healthy {
            s.state = DaemonState::Running;
            s.postgresql.phase = DbPhase::Connected;
            s.postgresql.checked_at = Some(Instant::now());
            s.postgresql.registered = true;
        } else {
            s.postgresql.error = Some("connection refused by db:5432".into());
        }
        let health = SharedHealth::new(s, STALE);
        health.touch_loop();
        Probes::new(health, live_after, details, MetricsRegistry::new()).unwrap()
    }

    async fn call(
        p: &Probes,
        method: Method,
        path: &str,
    ) -> (StatusCode, actix_web::http::header::HeaderMap, Vec<u8>) {
        let app = init_service(app(p.clone())).await;
        let res = call_service(
            &app,
            TestRequest::default().method(method).uri(path).to_request(),
        )
        .await;
        let (status, headers) = (res.status(), res.headers().clone());
        (status, headers, read_body(res).await.to_vec())
    }

    fn json_of(body: &[u8]) -> serde_json::Value {
        serde_json::from_slice(body).unwrap()
    }

    #[actix_rt::test]
    async fn head_and_options_answer_the_status_of_get_without_a_body() {
        for healthy in [true, false] {
            let p = probes(healthy, Duration::from_secs(5));
            for path in ["/", "/health", "/ready", "/live", "/metrics"] {
                let (get, _, body) = call(&p, Method::GET, path).await;
                assert!(!body.is_empty(), "GET {path} has a body");
                let (head, _, head_body) = call(&p, Method::HEAD, path).await;
                let (options, headers, options_body) = call(&p, Method::OPTIONS, path).await;
                assert_eq!((head, options), (get, get), "{path} healthy={healthy}");
                assert!(head_body.is_empty() && options_body.is_empty(), "{path}");
                assert_eq!(headers.get(ALLOW).unwrap(), ALLOWED);
            }
        }
    }

    #[actix_rt::test]
    async fn health_is_the_report_with_200_or_503() {
        let (status, headers, body) = call(
            &probes(true, Duration::from_secs(5)),
            Method::GET,
            "/health",
        )
        .await;
        assert_eq!(status, StatusCode::OK);
        assert_eq!(headers.get("content-type").unwrap(), "application/json");
        let body = json_of(&body);
        assert_eq!(body["status"], "healthy");
        assert_eq!(body["node"]["node_id"], "a");
        let (status, _, body) =
            call(&probes(false, Duration::from_secs(5)), Method::GET, "/").await;
        assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE);
        // Over HTTP the error text (user, database, pg_hba) stays on the
        // node unless http.details asks for it.
        let hidden = json_of(&body)["components"]["postgresql"]["error"].clone();
        assert!(
            !hidden.to_string().contains("db:5432"),
            "the error text is hidden by default: {hidden}"
        );
        assert!(hidden.to_string().contains("http.details"), "{hidden}");
        let detailed = probes_with(false, Duration::from_secs(5), true);
        let (status, _, body) = call(&detailed, Method::GET, "/").await;
        assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE);
        assert_eq!(
            json_of(&body)["components"]["postgresql"]["error"],
            "connection refused by db:5432"
        );
    }

    #[actix_rt::test]
    async fn the_cached_healthy_body_follows_every_new_snapshot() {
        let p = probes(true, Duration::from_secs(5));
        let (_, _, first) = call(&p, Method::GET, "/health").await;
        let (_, _, again) = call(&p, Method::GET, "/health").await;
        assert_eq!(first, again);
        p.health.update(|s| s.node.node_name = "Renamed".into());
        let (status, _, body) = call(&p, Method::GET, "/health").await;
        assert_eq!(status, StatusCode::OK);
        assert_eq!(json_of(&body)["node"]["node_name"], "Renamed");
        // Unhealthy now: the verdict is never cached.
        p.health.update(|s| s.postgresql.checked_at = None);
        let (status, _, body) = call(&p, Method::GET, "/health").await;
        assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE);
        assert_eq!(json_of(&body)["status"], "unhealthy");
    }

    /// The snapshot stays the same while the coordinator changes (a lease
    /// granted, lost, a new epoch): the cached body must follow it at once.
    #[actix_rt::test]
    async fn the_cached_healthy_body_follows_the_coordinator() {
        use std::sync::Mutex;
        let p = probes(true, Duration::from_secs(5));
        let named: Arc<Mutex<(Option<String>, Option<u64>)>> =
            Arc::new(Mutex::new((Some("a".into()), Some(4))));
        let source = named.clone();
        p.health.set_coordinator_source(Arc::new(move || {
            let (holder, epoch) = source.lock().unwrap().clone();
            CoordinatorView {
                holder,
                epoch,
                lease_remaining: Some(Duration::from_secs(1)),
                members: 3,
                member: true,
                caught_up: true,
            }
        }));
        let node = |body: &[u8]| json_of(body)["node"].clone();
        let (_, _, body) = call(&p, Method::GET, "/health").await;
        assert_eq!(node(&body)["is_coordinator"], true);
        assert_eq!(node(&body)["epoch"], 4);
        *named.lock().unwrap() = (Some("b".into()), Some(5));
        let (_, _, body) = call(&p, Method::GET, "/health").await;
        assert_eq!(node(&body)["is_coordinator"], false);
        assert_eq!(node(&body)["coordinator_id"], "b");
        assert_eq!(node(&body)["epoch"], 5);
        *named.lock().unwrap() = (None, Some(5));
        let (status, _, body) = call(&p, Method::GET, "/health").await;
        assert_eq!(status, StatusCode::OK);
        assert_eq!(node(&body)["coordinator_id"], serde_json::Value::Null);
    }

    #[actix_rt::test]
    async fn ready_names_the_reason_it_is_not() {
        let (status, _, body) =
            call(&probes(true, Duration::from_secs(5)), Method::GET, "/ready").await;
        assert_eq!(
            (status, json_of(&body)),
            (StatusCode::OK, json!({"ready": true}))
        );
        let (status, _, body) = call(
            &probes(false, Duration::from_secs(5)),
            Method::GET,
            "/ready",
        )
        .await;
        assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE);
        assert_eq!(
            json_of(&body),
            json!({"ready": false, "reason": "daemon is starting"})
        );
    }

    #[actix_rt::test]
    async fn live_ignores_postgres_and_fails_only_when_the_loop_is_stuck() {
        let (status, _, body) =
            call(&probes(false, Duration::from_secs(5)), Method::GET, "/live").await;
        assert_eq!(
            (status, json_of(&body)),
            (StatusCode::OK, json!({"alive": true}))
        );
        // A zero bound: the loop can never be recent enough.
        let (status, _, body) = call(&probes(true, Duration::ZERO), Method::GET, "/live").await;
        assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE);
        let body = json_of(&body);
        assert_eq!(body["alive"], false);
        assert!(
            body["reason"].as_str().unwrap().contains("has not turned"),
            "{body}"
        );
    }

    #[actix_rt::test]
    async fn other_methods_get_405_and_unknown_paths_404() {
        let p = probes(true, Duration::from_secs(5));
        let (status, headers, _) = call(&p, Method::POST, "/health").await;
        assert_eq!(status, StatusCode::METHOD_NOT_ALLOWED);
        assert_eq!(headers.get(ALLOW).unwrap(), ALLOWED);
        let (status, _, _) = call(&p, Method::GET, "/nope").await;
        assert_eq!(status, StatusCode::NOT_FOUND);
    }

    #[actix_rt::test]
    async fn metrics_count_the_requests_served() {
        let p = probes(true, Duration::from_secs(5));
        let app = init_service(app(p.clone())).await;
        for _ in 0..3 {
            call_service(&app, TestRequest::get().uri("/health").to_request()).await;
        }
        let res = call_service(&app, TestRequest::get().uri("/metrics").to_request()).await;
        assert_eq!(res.headers().get("content-type").unwrap(), CONTENT_TYPE);
        let page = String::from_utf8(read_body(res).await.to_vec()).unwrap();
        assert!(
            page.contains("steep_repl_http_requests_total{code=\"200\",path=\"/health\"} 3"),
            "{page}"
        );
        assert!(
            page.contains("steep_repl_up{component=\"postgresql\"} 1"),
            "{page}"
        );
    }
}
