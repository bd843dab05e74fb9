//! `steep-repl run`: load and check everything that can fail before the
//! daemon starts anything (configuration, password, the instance lock), then
//! build the actor system and run it until a signal stops it.

use crate::config::{Config, LogLevel, LogTarget, SslMode};
use crate::exit::Exit;
use crate::lock::{InstanceLock, LockError};
use crate::logging::{self, Sink};
use slog::{info, warn};
use sqlx::postgres::{PgConnectOptions, PgSslMode};
use std::collections::BTreeMap;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;
use steep_repl_actors::audit::AuditSettings;
use steep_repl_actors::db::DbSettings;
use steep_repl_actors::grpc::limits::GrpcLimits;
use steep_repl_actors::grpc::GrpcSettings;
use steep_repl_actors::health_state::{CoordinatorSource, CoordinatorView};
use steep_repl_actors::health_state::{HealthSnapshot, PostgresHealth, SharedHealth};
use steep_repl_actors::http::{HttpError, HttpListener, HttpSettings};
use steep_repl_actors::ipc::IpcSettings;
use steep_repl_actors::peer_tls::{PeerTransport, TlsPaths};
use steep_repl_actors::raft::fitness::HealthFitness;
use steep_repl_actors::raft::LeaseSettings;
use steep_repl_actors::raft::{ClusterNode, RaftSettings};
use steep_repl_actors::system::{ConfigChange, ReloadHook, Shutdown, SystemActor, SystemSettings};

/// How often cached health is refreshed.
const HEALTH_INTERVAL: Duration = Duration::from_secs(1);
/// A cached PostgreSQL result older than this counts as unhealthy.
const STALE_AFTER: Duration = Duration::from_secs(3);
/// Upper bound of a graceful stop.
const SHUTDOWN_TIMEOUT: Duration = Duration::from_secs(10);

pub fn run(config_path: Option<&Path>, debug: bool) -> Exit {
    run_until(config_path, debug, None)
}

/// `run`, plus an outside stop request (the Windows service control
/// manager's Stop): a message on `stop` starts the same graceful shutdown
/// as SIGTERM.
pub fn run_until(
    config_path: Option<&Path>,
    debug: bool,
    stop: Option<std::sync::mpsc::Receiver<()>>,
) -> Exit {
    let config = match Config::load(config_path) {
        Ok(config) => config,
        Err(e) => {
            eprintln!("steep-repl: {e}");
            return Exit::Config;
        }
    };
    let password = match config.resolve_password() {
        Ok(password) => password,
        Err(e) => {
            eprintln!("steep-repl: {e}");
            return Exit::Config;
        }
    };
    // Before any side effect: one daemon per configuration.
    let lock = match InstanceLock::acquire(&config.lock_path()) {
        Ok(lock) => lock,
        Err(e @ LockError::Held { .. }) => {
            eprintln!("steep-repl: {e}");
            return Exit::AlreadyRunning;
        }
        Err(e) => {
            eprintln!("steep-repl: {e}");
            return Exit::Error;
        }
    };
    // Also before the actor system: a port in use stops the start here, with
    // the address named, instead of a daemon that runs without its probes.
    let http = match bind_http(&config) {
        Ok(http) => http,
        Err(e) => {
            eprintln!("steep-repl: {e}");
            return Exit::Error;
        }
    };

    let mut grpc = match grpc_settings(&config) {
        Ok(grpc) => grpc,
        Err((exit, message)) => {
            eprintln!("steep-repl: {message}");
            return exit;
        }
    };

    let level = if debug {
        slog::Level::Debug
    } else {
        slog_level(config.log.level)
    };
    let (log, log_guard, level_handle) =
        logging::build(sink(config.log.target), level, &config.node_id);
    exit_on_panic(log.clone());
    info!(log, "config.loaded"; "file" => %config.source.display(), "lock" => %lock.path().display());
    if let Some(dir) = crate::lock::shared_directory(&config.ipc.path) {
        warn!(log, "ipc.shared_directory"; "path" => %config.ipc.path.display(), "directory" => %dir.display(),
              "warning" => "other users can create files in this directory: one could bind the socket path or hold the lock before the daemon starts; set ipc.path in a directory of the daemon's own (the default)");
    }
    // Every connection and file shares one limit: take all the hard limit
    // allows (service managers often start daemons with a soft 1024).
    use steep_repl_actors::fd_limit::{ensure_open_files, OpenFiles};
    match ensure_open_files(u64::MAX) {
        Ok(OpenFiles::Raised(from, to)) => {
            info!(log, "open_files.raised"; "from" => from, "to" => to)
        }
        Ok(OpenFiles::Capped(to)) => info!(log, "open_files.raised"; "to" => to),
        Ok(OpenFiles::Enough) => {}
        Err(e) => warn!(log, "open_files.not_raised"; "error" => %e),
    }
    for warning in config.warnings() {
        warn!(log, "config.warning"; "warning" => warning);
    }
    if let Some(warning) = grpc
        .as_ref()
        .and_then(|grpc| advertise_host_warning(&config, &grpc.transport))
    {
        warn!(log, "tls.advertise_host_not_in_certificate"; "warning" => warning);
    }
    let pg = PostgresHealth::new(
        &config.postgresql.host,
        config.postgresql.port,
        &config.postgresql.database,
    );
    let snapshot = HealthSnapshot::starting(
        env!("CARGO_PKG_VERSION"),
        &config.node_id,
        &config.node_name,
        pg,
    );
    let health = SharedHealth::new(snapshot, STALE_AFTER);
    health.update(|s| s.node.witness = !config.postgresql.enabled);
    // The cluster member: its store is opened before anything starts, so a
    // damaged or unreadable Raft directory stops the daemon with its path.
    let cluster = match grpc.as_ref() {
        Some(grpc) => match ClusterNode::start(
            raft_settings(&config),
            grpc.transport.clone(),
            Arc::new(HealthFitness {
                health: health.clone(),
                node_id: config.node_id.clone(),
            }),
            log.new(slog::o!("actor" => "raft")),
        ) {
            Ok(node) => {
                health.set_coordinator_source(coordinator_source(node.clone()));
                let metrics_node = node.clone();
                health.set_cluster_metrics_source(Arc::new(move || metrics_node.metrics()));
                Some(node)
            }
            Err(e) => {
                eprintln!("steep-repl: {}: {e}", config.raft.dir.display());
                drop(log_guard);
                return Exit::Error;
            }
        },
        None => None,
    };
    if let Some(grpc) = grpc.as_mut() {
        grpc.cluster = cluster.clone();
    }

    let mut settings = system_settings(&config, password.as_ref().map(|p| p.expose().to_string()));
    settings.reload = Some(reload_hook(config.clone(), level_handle, debug));
    settings.grpc = grpc;
    if let Some(ipc) = settings.ipc.as_mut() {
        ipc.cluster = cluster.clone();
    }
    settings.cluster = cluster.clone();
    // One registry for `/metrics`: the IPC and gRPC servers' counters join
    // the HTTP server's own and the health snapshot's families there.
    if let Some(http) = &http {
        let registered = [
            settings
                .ipc
                .as_ref()
                .map(|ipc| ipc.metrics.register(&http.metrics)),
            settings
                .grpc
                .as_ref()
                .map(|grpc| grpc.limit_metrics.register(&http.metrics)),
        ];
        for failed in registered.into_iter().flatten().filter_map(Result::err) {
            warn!(log, "metrics.register_failed"; "error" => %failed);
        }
    }
    settings.http = http;

    let system = actix::System::new();
    let actor_log = log.clone();
    let root = system.block_on(async move {
        actix::Actor::start(SystemActor::new(settings, health, actor_log))
    });
    // Set when the Raft core stopped by itself: the exit code says so.
    let core_stopped: Arc<std::sync::OnceLock<String>> = Arc::default();
    if let Some(cluster) = &cluster {
        cluster.on_unrequested_stop(exit_on_core_stop(
            root.clone(),
            core_stopped.clone(),
            log.clone(),
        ));
    }
    if let Some(stop) = stop {
        std::thread::spawn(move || {
            if stop.recv().is_ok() {
                root.do_send(Shutdown {
                    reason: "service stop".to_string(),
                });
            }
        });
    }
    let result = system.run();
    if let Some(cluster) = &cluster {
        if core_stopped.get().is_none() {
            release_coordinator(cluster, &log);
        }
        cluster.stop();
    }
    drop(lock);
    if let Some(reason) = core_stopped.get() {
        slog::crit!(log, "daemon.exit"; "code" => Exit::RaftStopped as u8, "error" => reason);
        drop(log_guard);
        return Exit::RaftStopped;
    }
    match result {
        Ok(()) => {
            info!(log, "daemon.exit"; "code" => 0);
            drop(log_guard);
            Exit::Ok
        }
        Err(e) => {
            warn!(log, "daemon.exit"; "error" => %e);
            drop(log_guard);
            Exit::Error
        }
    }
}

/// A panic anywhere ends the daemon with exit code 70. Without this, actix
/// drops the panicking actor and the rest runs on without it (no audit
/// trail, or a listener silently gone): a whole, fresh daemon started by the
/// service manager is the only restart that restores everything. The
/// default hook prints the panic to stderr first (the journal keeps it).
fn exit_on_panic(log: slog::Logger) {
    let print = std::panic::take_hook();
    std::panic::set_hook(Box::new(move |info| {
        print(info);
        slog::crit!(log, "daemon.panicked"; "error" => %info,
                    "action" => "exiting with code 70; the service manager restarts the daemon");
        std::process::exit(Exit::Panicked as i32);
    }));
}

/// A Raft core that stopped by itself (a storage error: a full disk, a
/// failed fsync; or a panic inside openraft) leaves a member that can
/// neither vote nor write while its process looks alive. Its store refuses
/// writes until reopened, which only a fresh process does: stop cleanly
/// (listeners drained, audit flushed) and exit with code 10 for the service
/// manager to start the daemon again.
fn exit_on_core_stop(
    root: actix::Addr<SystemActor>,
    stopped: Arc<std::sync::OnceLock<String>>,
    log: slog::Logger,
) -> steep_repl_actors::raft::core_stop::OnCoreStopped {
    Box::new(move |reason: String| {
        slog::crit!(log, "raft.core_stopped"; "error" => &reason,
                    "action" => "stopping; exit code 10, the service manager restarts the daemon, which reopens the Raft store");
        let _ = stopped.set(reason.clone());
        root.do_send(Shutdown {
            reason: format!("the Raft core stopped: {reason}"),
        });
    })
}

/// SIGHUP: re-read the same file. A valid new configuration is compared
/// with the one in effect; the log level applies at once, other changes at
/// the next restart. An invalid one is refused and the running one stays.
fn reload_hook(config: Config, level: logging::LevelHandle, debug: bool) -> ReloadHook {
    let current = std::sync::Mutex::new(config);
    std::sync::Arc::new(move || {
        let mut current = current
            .lock()
            .map_err(|_| "reload state poisoned".to_string())?;
        let next = Config::load(Some(&current.source)).map_err(|e| e.to_string())?;
        let mut changes = diff_config(&current, &next);
        for change in &mut changes {
            if change.key == "repl.log.level" && !debug {
                level.set(slog_level(next.log.level));
                change.applied = true;
            }
        }
        *current = next;
        Ok(changes)
    })
}

/// Key-by-key differences between two configurations, secrets masked
/// (the serialized form masks them). Where each value came from is not a
/// change of the configuration itself.
fn diff_config(old: &Config, new: &Config) -> Vec<ConfigChange> {
    fn flatten(
        prefix: &str,
        value: &serde_json::Value,
        out: &mut BTreeMap<String, serde_json::Value>,
    ) {
        match value {
            serde_json::Value::Object(map) => {
                for (k, v) in map {
                    if prefix.is_empty() && (k == "origins" || k == "source") {
                        continue;
                    }
                    let path = if prefix.is_empty() {
                        format!("repl.{k}")
                    } else {
                        format!("{prefix}.{k}")
                    };
                    flatten(&path, v, out);
                }
            }
            other => {
                out.insert(prefix.to_string(), other.clone());
            }
        }
    }
    let flat = |c: &Config| {
        let mut out = BTreeMap::new();
        flatten("", &serde_json::to_value(c).unwrap_or_default(), &mut out);
        out
    };
    let (old, new) = (flat(old), flat(new));
    let keys: std::collections::BTreeSet<&String> = old.keys().chain(new.keys()).collect();
    keys.into_iter()
        .filter(|k| old.get(*k) != new.get(*k))
        .map(|k| ConfigChange {
            key: k.clone(),
            old: old.get(k).cloned().unwrap_or(serde_json::Value::Null),
            new: new.get(k).cloned().unwrap_or(serde_json::Value::Null),
            applied: false,
        })
        .collect()
}

fn slog_level(level: LogLevel) -> slog::Level {
    match level {
        LogLevel::Error => slog::Level::Error,
        LogLevel::Warn => slog::Level::Warning,
        LogLevel::Info => slog::Level::Info,
        LogLevel::Debug => slog::Level::Debug,
        LogLevel::Trace => slog::Level::Trace,
    }
}

fn sink(target: LogTarget) -> Sink {
    match target {
        LogTarget::Terminal => Sink::Terminal,
        LogTarget::Journald => Sink::Journald,
        LogTarget::Syslog => Sink::Syslog,
        #[cfg(windows)]
        LogTarget::EventLog => Sink::EventLog,
        #[cfg(target_os = "macos")]
        LogTarget::OsLog => Sink::OsLog,
        // The loader accepts these only on their platforms.
        #[allow(unreachable_patterns)]
        LogTarget::EventLog | LogTarget::OsLog => Sink::Terminal,
        LogTarget::Auto => logging::auto_sink(),
    }
}

/// Peers reach this node at `advertise_host` and check it against this
/// node's certificate: a host the certificate does not name fails every
/// peer's handshake with a TLS error, so it is said at start, with the names
/// the certificate does carry: the names of the certificate the transport
/// loaded (none in plaintext).
fn advertise_host_warning(config: &Config, transport: &PeerTransport) -> Option<String> {
    let identity = transport.identity()?;
    let path = transport.certificates()?.cert_file;
    let host = &config.advertise_host;
    if identity.serves_host(host) {
        return None;
    }
    let names: Vec<String> = identity
        .dns_names
        .iter()
        .cloned()
        .chain(identity.ip_addresses.iter().map(|ip| ip.to_string()))
        .collect();
    Some(format!(
        "repl.advertise_host {host} is not among the names of {} ({}): peers will fail to \
         reach this node with a TLS error; issue its certificate with `steep-repl tls issue {} \
         --host {host}`, or set repl.advertise_host to one of its names",
        path.display(),
        if names.is_empty() {
            "none".to_string()
        } else {
            names.join(", ")
        },
        config.node_id
    ))
}

/// The peer side: the transport (mutual TLS unless `grpc.tls.insecure`)
/// and the listening socket, bound now so that a bad certificate or a port
/// in use stops the daemon before it starts anything.
fn grpc_settings(config: &Config) -> Result<Option<GrpcSettings>, (Exit, String)> {
    let grpc = &config.grpc;
    if !grpc.enabled {
        return Ok(None);
    }
    let transport = if grpc.tls.insecure {
        PeerTransport::plaintext()
    } else {
        let (Some(cert_file), Some(key_file), Some(ca_file)) = (
            grpc.tls.cert_file.clone(),
            grpc.tls.key_file.clone(),
            grpc.tls.ca_file.clone(),
        ) else {
            return Err((Exit::Config, "gRPC uses mutual TLS but repl.grpc.tls.{cert_file,key_file,ca_file} are not all set".into()));
        };
        PeerTransport::mtls_from_files(&TlsPaths {
            cert_file,
            key_file,
            ca_file,
        })
        .map_err(|e| (Exit::Config, format!("{}: {e}", config.source.display())))?
    };
    let address = std::net::SocketAddr::new(grpc.bind, grpc.port);
    let listener = std::net::TcpListener::bind(address).map_err(|e| {
        (
            Exit::Error,
            format!(
                "cannot listen for gRPC on {address}: {e}; stop what uses that port or change repl.grpc.port"
            ),
        )
    })?;
    Ok(Some(GrpcSettings {
        listener: std::sync::Arc::new(std::sync::Mutex::new(Some(listener))),
        port: grpc.port,
        transport,
        seeds: grpc
            .peers
            .iter()
            .map(|p| (p.host.clone(), p.port))
            .collect(),
        heartbeat_interval: grpc.heartbeat_interval,
        degraded_rtt: grpc.degraded_rtt,
        unreachable_after: grpc.unreachable_after,
        node_id: config.node_id.clone(),
        cluster: None,
        certificate_warning: grpc.tls.expiry_warning,
        limits: GrpcLimits {
            request_timeout: grpc.request_timeout,
            max_concurrent_requests: grpc.max_concurrent_requests,
            peer_rate_limit: grpc.peer_rate_limit,
        },
        limit_metrics: Default::default(),
    }))
}

/// A clean stop: this node stops claiming the coordinator role and, when it
/// holds it, commits a release so that nobody waits out its lease.
fn release_coordinator(cluster: &ClusterNode, log: &slog::Logger) {
    let held = cluster.coordinator().is_self;
    match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime.block_on(cluster.step_down(RELEASE_TIMEOUT)),
        Err(e) => warn!(log, "coordinator.release_failed"; "error" => %e),
    }
    if held {
        info!(log, "coordinator.released"; "note" => "clean stop");
    }
}

/// How long a clean stop waits for its release to commit.
const RELEASE_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(2);

/// What every answer names as coordinator: the member's answer at that
/// instant (see `SharedHealth::load`).
fn coordinator_source(node: ClusterNode) -> CoordinatorSource {
    Arc::new(move || {
        let report = node.coordinator();
        // One read of the membership per answer (this runs at every load
        // of the health snapshot, probes included).
        let (members, member) = node.membership_size(node.identity().raft_id);
        CoordinatorView {
            holder: report.holder,
            epoch: report.epoch,
            lease_remaining: report.lease_remaining,
            members,
            member,
            caught_up: report.caught_up,
        }
    })
}

/// The Raft member's settings (`raft.*`), with the address peers reach
/// this daemon at.
fn raft_settings(config: &Config) -> RaftSettings {
    let host = &config.advertise_host;
    let grpc_address = if host.contains(':') {
        format!("[{host}]:{}", config.grpc.port)
    } else {
        format!("{host}:{}", config.grpc.port)
    };
    RaftSettings {
        dir: config.raft.dir.clone(),
        node_id: config.node_id.clone(),
        grpc_address,
        priority: config.priority,
        witness: !config.postgresql.enabled,
        heartbeat_interval: config.raft.heartbeat_interval,
        election_timeout_min: config.raft.election_timeout_min,
        election_timeout_max: config.raft.election_timeout_max,
        snapshot_every: config.raft.snapshot_every,
        lease: LeaseSettings::new(
            config.coordinator.lease,
            config.coordinator.clock_error,
            config.coordinator.failback_after,
        ),
    }
}

/// The service manager's notifier (systemd's NOTIFY_SOCKET), if any.
fn notifier() -> Option<std::sync::Arc<dyn steep_repl_actors::lifecycle::ServiceNotifier>> {
    #[cfg(target_os = "linux")]
    {
        crate::service::notify::SystemdNotifier::from_env().map(|n| {
            std::sync::Arc::new(n)
                as std::sync::Arc<dyn steep_repl_actors::lifecycle::ServiceNotifier>
        })
    }
    #[cfg(not(target_os = "linux"))]
    {
        None
    }
}

fn connect_options(config: &Config, password: Option<String>) -> PgConnectOptions {
    let pg = &config.postgresql;
    let mut options = PgConnectOptions::new_without_pgpass()
        .port(pg.port)
        .username(&pg.user)
        .database(&pg.database)
        .application_name("steep-repl")
        .ssl_mode(match pg.sslmode {
            SslMode::Disable => PgSslMode::Disable,
            SslMode::Allow => PgSslMode::Allow,
            SslMode::Prefer => PgSslMode::Prefer,
            SslMode::Require => PgSslMode::Require,
            SslMode::VerifyCa => PgSslMode::VerifyCa,
            SslMode::VerifyFull => PgSslMode::VerifyFull,
        })
        // Every change this daemon makes is audited under its own name.
        .options([("steep_repl.actor", format!("steep-repl@{}", config.node_id))]);
    options = if pg.host.starts_with('/') {
        options.socket(&pg.host)
    } else {
        options.host(&pg.host)
    };
    if let Some(password) = password {
        options = options.password(&password);
    }
    options
}

fn system_settings(config: &Config, password: Option<String>) -> SystemSettings {
    let pg = &config.postgresql;
    let db = DbSettings {
        enabled: config.postgresql.enabled,
        connect: connect_options(config, password),
        host: pg.host.clone(),
        port: pg.port,
        user: pg.user.clone(),
        database: pg.database.clone(),
        pool_size: pg.pool_size,
        connect_timeout: pg.connect_timeout,
        ping_timeout: HEALTH_INTERVAL.min(pg.connect_timeout),
        node_id: config.node_id.clone(),
        password_source: config.password_source(),
    };
    let mut audit = AuditSettings::new(
        config.audit.spool_path.clone(),
        config.audit.retention,
        config.audit.prune_interval,
    );
    audit.enabled = config.postgresql.enabled;
    audit.spool_max_events = config.audit.spool_max_events;
    SystemSettings {
        node_id: config.node_id.clone(),
        version: env!("CARGO_PKG_VERSION").to_string(),
        db,
        audit,
        health_interval: HEALTH_INTERVAL,
        shutdown_timeout: SHUTDOWN_TIMEOUT,
        reload: None,
        notifier: notifier(),
        grpc: None,
        // Bound by `bind_http` in `run`, before the actor system starts.
        http: None,
        ipc: ipc_settings(config),
        cluster: None,
    }
}

/// The local socket, unless `ipc.enabled` is false. IPC clients get at
/// most half the pool, so the daemon's own queries always find a connection.
fn ipc_settings(config: &Config) -> Option<IpcSettings> {
    let ipc = &config.ipc;
    ipc.enabled.then(|| {
        let mut settings = IpcSettings::new(&ipc.path, ipc.mode, ipc.group.clone());
        settings.db_concurrency = (config.postgresql.pool_size as usize / 2).max(1);
        settings
    })
}

/// Binds the HTTP port when `http.enabled`; `None` opens no port at all.
fn bind_http(config: &Config) -> Result<Option<HttpSettings>, HttpError> {
    if !config.http.enabled {
        return Ok(None);
    }
    let (bind, port) = (config.http.bind, config.http.port);
    let listener = HttpListener::bind(std::net::SocketAddr::new(bind, port))?;
    Ok(Some(HttpSettings {
        bind,
        port,
        listener: Some(listener),
        metrics: steep_repl_actors::metrics::MetricsRegistry::new(),
        details: config.http.details,
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_reload_diff_lists_changed_keys_only() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("c.yaml");
        let env = std::collections::HashMap::new();
        std::fs::write(
            &path,
            "repl:\n  node_id: a\n  grpc: {tls: {insecure: true}}\n",
        )
        .unwrap();
        let old = Config::load_from(&path, &env).unwrap();
        std::fs::write(
            &path,
            "repl:\n  node_id: a\n  log: {level: debug}\n  grpc: {tls: {insecure: true}, peers: [\"b:5433\"]}\n",
        )
        .unwrap();
        let new = Config::load_from(&path, &env).unwrap();
        let changes = diff_config(&old, &new);
        let keys: Vec<&str> = changes.iter().map(|c| c.key.as_str()).collect();
        assert_eq!(keys, ["repl.grpc.peers", "repl.log.level"]);
        assert_eq!(changes[1].old, serde_json::json!("info"));
        assert_eq!(changes[1].new, serde_json::json!("debug"));
    }
}
