//! SystemActor: the root of the actor tree.
//!
//! It starts the children in dependency order (Db, Audit, Health, then the
//! listeners), records `daemon.started`, and owns the ordered shutdown on
//! SIGTERM/SIGINT: stop accepting, let in-flight work finish within a
//! deadline, record `daemon.stopped`, flush the audit spool, close the pool,
//! stop the actix System.

use crate::audit::{AuditActor, AuditSettings, Flush};
use crate::audit_event::{AuditAction, AuditEvent};
use crate::db::{Db, DbSettings};
use crate::health::HealthActor;
use crate::health_state::{DaemonState, SharedHealth};
use crate::http::HttpActor;
use crate::ipc::{IpcActor, IpcSettings};
use crate::lifecycle::ServiceNotifier;
use crate::listener::{Face, ListenerStarted, StopAccepting};
use actix::prelude::*;
use serde_json::json;
use slog::{info, warn, Logger};
use std::collections::HashSet;
use std::time::{Duration, Instant};

/// The daemon is declared running after this long even if a listener has
/// not reported (health then says which one is not listening).
const LISTENERS_WAIT: Duration = Duration::from_secs(5);

/// One configuration key whose value changed on reload.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct ConfigChange {
    pub key: String,
    pub old: serde_json::Value,
    pub new: serde_json::Value,
    /// Took effect without a restart.
    pub applied: bool,
}

/// Re-reads the configuration (on SIGHUP): the changes, or why the new
/// configuration was refused (the running one stays).
pub type ReloadHook = std::sync::Arc<dyn Fn() -> Result<Vec<ConfigChange>, String> + Send + Sync>;

/// Everything the actor tree needs, built by the daemon from its config.
#[derive(Clone)]
pub struct SystemSettings {
    pub node_id: String,
    pub version: String,
    pub db: DbSettings,
    pub audit: AuditSettings,
    /// How often health is refreshed (PostgreSQL ping, loop tick).
    pub health_interval: Duration,
    /// Upper bound for the whole graceful shutdown.
    pub shutdown_timeout: Duration,
    /// What SIGHUP does; `None` ignores it.
    pub reload: Option<ReloadHook>,
    /// The service manager to keep informed, when there is one.
    pub notifier: Option<std::sync::Arc<dyn ServiceNotifier>>,
    /// The peer side (gRPC server and heartbeats), when enabled.
    pub grpc: Option<crate::grpc::GrpcSettings>,
    /// The HTTP probes and metrics; `None` when `http.enabled` is false.
    pub http: Option<crate::http::HttpSettings>,
    /// The local socket; `None` when `ipc.enabled` is false.
    pub ipc: Option<IpcSettings>,
    /// This node's member of the cluster (started by the daemon before the
    /// actors, on a runtime of its own); its state map is projected into
    /// PostgreSQL from here.
    pub cluster: Option<crate::raft::ClusterNode>,
}

/// Addresses of the running children.
#[derive(Clone)]
pub struct Children {
    pub db: Db,
    pub audit: Addr<AuditActor>,
    pub health: Addr<HealthActor>,
    /// Everything that accepts connections, stopped first at shutdown.
    pub listeners: Vec<Recipient<StopAccepting>>,
    /// The owner of the peer TLS certificates, reloaded on SIGHUP.
    pub certificates: Option<Recipient<crate::grpc::ReloadCertificates>>,
}

/// Starts the graceful shutdown (also sent by the signal handler).
#[derive(Message)]
#[rtype(result = "()")]
pub struct Shutdown {
    pub reason: String,
}

/// Re-reads the configuration and audits the outcome as `config.changed`.
#[derive(Message)]
#[rtype(result = "()")]
pub struct Reload;

pub struct SystemActor {
    settings: SystemSettings,
    health: SharedHealth,
    log: Logger,
    children: Option<Children>,
    stopping: bool,
    /// When the children were started.
    started: Instant,
    /// Listeners that have not reported their first outcome yet.
    awaiting: HashSet<Face>,
    /// Listeners whose first outcome was a failure.
    failed: Vec<Face>,
}

impl SystemActor {
    /// After `cluster force-new`: the audit row of what it did, once (the
    /// marker the command left is removed when the event is spooled).
    fn audit_forced_new(&self, audit: &Addr<AuditActor>) {
        use steep_repl_consensus::force_new;
        let Some(cluster) = &self.settings.cluster else {
            return;
        };
        let dir = cluster.settings().dir.clone();
        let Some(forced) = force_new::read_marker(&dir) else {
            return;
        };
        warn!(self.log, "cluster.forced_new";
            "old_cluster_id" => &forced.old_cluster_id,
            "new_cluster_id" => &forced.new_cluster_id,
            "recovered_index" => forced.recovered_index,
            "epoch_floor" => forced.epoch_floor,
            "backup" => forced.backup.display().to_string());
        let event = AuditEvent::new(AuditAction::ClusterForcedNew)
            .target("node", &forced.node_id)
            .old_value(json!({"cluster_id": forced.old_cluster_id, "epoch": forced.old_epoch}))
            .new_value(json!(forced));
        let audit = audit.clone();
        let log = self.log.clone();
        actix::spawn(async move {
            if audit.send(event).await.is_ok() {
                if let Err(e) = force_new::clear_marker(&dir) {
                    warn!(log, "cluster.forced_new_marker"; "error" => %e, "note" => "it will be audited again at the next start");
                }
            }
        });
    }

    pub fn new(settings: SystemSettings, health: SharedHealth, log: Logger) -> Self {
        SystemActor {
            settings,
            health,
            log,
            children: None,
            stopping: false,
            started: Instant::now(),
            awaiting: HashSet::new(),
            failed: Vec::new(),
        }
    }

    fn start_children(&mut self, ctx: &mut Context<Self>) -> Children {
        let (db_settings, health, log) = (
            self.settings.db.clone(),
            self.health.clone(),
            self.log.clone(),
        );
        let db = Db::start(
            db_settings,
            health.clone(),
            log.new(slog::o!("actor" => "db")),
        );

        let (audit_settings, db_for_audit) = (self.settings.audit.clone(), db.clone());
        let audit_log = log.new(slog::o!("actor" => "audit"));
        let audit_health = health.clone();
        let audit = AuditActor::new(audit_settings, db_for_audit, audit_health, audit_log).start();

        let (db_for_health, interval, health_shared) =
            (db.clone(), self.settings.health_interval, health.clone());
        let notifier = self.settings.notifier.clone();
        let health_actor =
            HealthActor::new(health_shared, db_for_health, interval, notifier).start();
        // A witness has no PostgreSQL to project into.
        if let Some(cluster) = self
            .settings
            .cluster
            .clone()
            .filter(|_| self.settings.db.enabled)
        {
            crate::raft::projector::start(
                cluster,
                db.clone(),
                log.new(slog::o!("actor" => "projector")),
            );
        }
        let mut children = Children {
            db,
            audit,
            health: health_actor,
            listeners: Vec::new(),
            certificates: None,
        };
        self.start_listeners(&mut children, ctx);
        children
    }

    /// Starts the listeners (IPC, HTTP, gRPC) after the actors they serve,
    /// the same way: each marks itself pending in health, reports its first
    /// outcome here (`ListenerStarted`) and drains on `StopAccepting`.
    fn start_listeners(&mut self, children: &mut Children, ctx: &mut Context<Self>) {
        let parent = Some(ctx.address().recipient::<ListenerStarted>());
        let health = &self.health;
        if let Some(ipc) = self.settings.ipc.clone() {
            let log = self.log.new(slog::o!("actor" => "ipc"));
            let db = children.db.clone();
            let ipc = IpcActor::new(ipc, db, health.clone(), parent.clone(), log).start();
            self.awaiting.insert(Face::Ipc);
            children.listeners.push(ipc.recipient());
        }
        if let Some(http) = self.settings.http.clone() {
            let log = self.log.new(slog::o!("actor" => "http"));
            let interval = self.settings.health_interval;
            let http = HttpActor::new(http, health.clone(), interval, parent.clone(), log).start();
            self.awaiting.insert(Face::Http);
            children.listeners.push(http.recipient());
        }
        if let Some(grpc) = self.settings.grpc.clone() {
            let grpc = crate::grpc::GrpcPeerActor::new(
                grpc,
                health.clone(),
                children.db.clone(),
                children.audit.clone(),
                parent,
                self.log.new(slog::o!("actor" => "grpc")),
            )
            .start();
            self.awaiting.insert(Face::Grpc);
            children.certificates = Some(grpc.clone().recipient());
            children.listeners.push(grpc.recipient());
        }
    }

    /// Marks the daemon running once every enabled listener has reported
    /// (or after LISTENERS_WAIT), so that a listener that failed to bind is
    /// reported by health instead of keeping the daemon "starting" forever.
    fn declare_running(&mut self) {
        let s = self.health.load_stored();
        if self.stopping || s.state != DaemonState::Starting {
            return;
        }
        self.health.update(|s| s.state = DaemonState::Running);
        if let Some(notifier) = &self.settings.notifier {
            notifier.ready();
        }
        let not_up: Vec<&str> = self
            .awaiting
            .iter()
            .chain(&self.failed)
            .map(|face| face.as_str())
            .collect();
        info!(self.log, "daemon.running"; "listeners_up" => not_up.is_empty(),
              "listeners_not_up" => not_up.join(","),
              "startup_ms" => self.started.elapsed().as_millis() as u64);
    }

    fn watch_signals(&self, ctx: &mut Context<Self>) {
        let me = ctx.address();
        let log = self.log.clone();
        actix::spawn(async move {
            #[cfg(unix)]
            {
                use tokio::signal::unix::{signal, SignalKind};
                let (Ok(mut term), Ok(mut int), Ok(mut hup)) = (
                    signal(SignalKind::terminate()),
                    signal(SignalKind::interrupt()),
                    signal(SignalKind::hangup()),
                ) else {
                    warn!(log, "signals.unavailable"; "error" => "cannot install SIGTERM/SIGINT/SIGHUP handlers");
                    return;
                };
                loop {
                    let name = tokio::select! {
                        _ = term.recv() => "SIGTERM",
                        _ = int.recv() => "SIGINT",
                        _ = hup.recv() => {
                            me.do_send(Reload);
                            continue;
                        }
                    };
                    me.do_send(Shutdown {
                        reason: name.to_string(),
                    });
                    break;
                }
            }
            #[cfg(not(unix))]
            {
                if tokio::signal::ctrl_c().await.is_ok() {
                    me.do_send(Shutdown {
                        reason: "Ctrl-C".to_string(),
                    });
                }
                let _ = log;
            }
        });
    }
}

impl Actor for SystemActor {
    type Context = Context<Self>;

    fn started(&mut self, ctx: &mut Context<Self>) {
        self.watch_signals(ctx);
        self.started = Instant::now();
        let children = self.start_children(ctx);
        children.audit.do_send(
            AuditEvent::new(AuditAction::DaemonStarted)
                .target("daemon", &self.settings.node_id)
                .new_value(json!({"version": self.settings.version, "pid": std::process::id()})),
        );
        self.audit_forced_new(&children.audit);
        self.children = Some(children);
        info!(self.log, "daemon.started"; "version" => &self.settings.version, "pid" => std::process::id());
        if self.awaiting.is_empty() {
            self.declare_running();
        } else {
            ctx.run_later(LISTENERS_WAIT, |act, _| act.declare_running());
        }
    }
}

impl Handler<ListenerStarted> for SystemActor {
    type Result = ();

    fn handle(&mut self, msg: ListenerStarted, _: &mut Context<Self>) {
        self.awaiting.remove(&msg.face);
        // The listener has logged why; health shows it.
        if msg.error.is_some() {
            self.failed.push(msg.face);
        }
        if self.awaiting.is_empty() {
            self.declare_running();
        }
    }
}

impl Handler<Reload> for SystemActor {
    type Result = ();

    fn handle(&mut self, _: Reload, _: &mut Context<Self>) {
        // The certificate files are read again whatever the configuration
        // file holds: a rotation changes the files, not the configuration.
        if let Some(certificates) = self.children.as_ref().and_then(|c| c.certificates.as_ref()) {
            certificates.do_send(crate::grpc::ReloadCertificates);
        }
        let (Some(hook), Some(children)) = (self.settings.reload.clone(), self.children.as_ref())
        else {
            return;
        };
        let event =
            AuditEvent::new(AuditAction::ConfigChanged).target("daemon", &self.settings.node_id);
        let event = match hook() {
            Ok(changes) => {
                for change in &changes {
                    info!(self.log, "config.changed"; "key" => &change.key, "applied" => change.applied,
                          "note" => if change.applied { "in effect now" } else { "takes effect after a restart" });
                }
                if changes.is_empty() {
                    info!(self.log, "config.unchanged");
                    return;
                }
                event.new_value(json!({ "changes": changes }))
            }
            Err(reason) => {
                warn!(self.log, "config.reload_refused"; "error" => &reason,
                      "note" => "the running configuration stays in effect");
                event.failed(reason)
            }
        };
        children.audit.do_send(event);
    }
}

impl Handler<Shutdown> for SystemActor {
    type Result = ();

    fn handle(&mut self, msg: Shutdown, ctx: &mut Context<Self>) {
        if self.stopping {
            return;
        }
        self.stopping = true;
        self.health.update(|s| s.state = DaemonState::Stopping);
        if let Some(notifier) = &self.settings.notifier {
            notifier.stopping();
        }
        info!(self.log, "daemon.stopping"; "reason" => &msg.reason);
        let Some(children) = self.children.clone() else {
            System::current().stop();
            return;
        };
        let deadline = Instant::now() + self.settings.shutdown_timeout;
        let node_id = self.settings.node_id.clone();
        let log = self.log.clone();
        let reason = msg.reason;
        let shutdown = async move {
            // The listeners drain concurrently: one slow connection delays
            // only its own listener's answer.
            let stops = children
                .listeners
                .iter()
                .map(|listener| listener.send(StopAccepting { deadline }));
            for stopped in futures_util::future::join_all(stops).await {
                if let Err(e) = stopped {
                    warn!(log, "listener.stop_failed"; "error" => %e);
                }
            }
            children.audit.do_send(
                AuditEvent::new(AuditAction::DaemonStopped)
                    .target("daemon", &node_id)
                    .new_value(json!({"reason": reason})),
            );
            let left = deadline.saturating_duration_since(Instant::now());
            let flushed = children
                .audit
                .send(Flush { timeout: left })
                .await
                .unwrap_or(false);
            if !flushed {
                warn!(log, "audit.flush_incomplete";
                      "note" => "queued events stay in the spool and are written at the next start");
            }
            children.db.close().await;
            info!(log, "daemon.stopped"; "audit_flushed" => flushed);
        };
        ctx.wait(
            shutdown
                .into_actor(self)
                .map(|_, _, _| System::current().stop()),
        );
    }
}
