//! What every face of the daemon (the IPC socket, the HTTP probes, the
//! gRPC peers' port) is to the SystemActor: one shape for all three.
//!
//! A listener actor is built with a [`ListenerReport`], which marks it
//! pending in the shared health at once (so the daemon is not "running"
//! before it listens), and through which it says it is up, has failed (and
//! why), or is down; the first up-or-failed also tells the parent, which
//! declares the daemon running once every listener has reported. On
//! [`StopAccepting`] the listener stops taking connections and drains the
//! ones it has until the deadline.

use crate::health_state::{HealthSnapshot, ListenerHealth, SharedHealth};
use actix::{Message, Recipient};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Instant;

/// Stop accepting new connections, let in-flight requests finish until
/// `deadline`, then answer. Sent first in a graceful shutdown.
#[derive(Debug, Clone, Copy, Message)]
#[rtype(result = "()")]
pub struct StopAccepting {
    pub deadline: Instant,
}

/// Which listener.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Face {
    Ipc,
    Http,
    Grpc,
}

impl Face {
    pub fn as_str(self) -> &'static str {
        match self {
            Face::Ipc => "ipc",
            Face::Http => "http",
            Face::Grpc => "grpc",
        }
    }

    fn slot(self, s: &mut HealthSnapshot) -> &mut ListenerHealth {
        match self {
            Face::Ipc => &mut s.ipc,
            Face::Http => &mut s.http,
            Face::Grpc => &mut s.grpc,
        }
    }
}

/// Sent to the parent the first time a listener is up or has failed.
#[derive(Debug, Clone, Message)]
#[rtype(result = "()")]
pub struct ListenerStarted {
    pub face: Face,
    /// Why it does not listen; `None`: it listens.
    pub error: Option<String>,
}

/// A listener's voice: its state in the shared health, and its first
/// outcome to the parent.
#[derive(Clone)]
pub struct ListenerReport {
    face: Face,
    health: SharedHealth,
    parent: Option<Recipient<ListenerStarted>>,
    told: Arc<AtomicBool>,
}

impl ListenerReport {
    /// Marks the listener pending (enabled, not listening yet) at
    /// `address`. `parent` hears its first outcome.
    pub fn pending(
        face: Face,
        health: SharedHealth,
        parent: Option<Recipient<ListenerStarted>>,
        port: Option<u16>,
        address: impl Into<String>,
        tls: bool,
    ) -> Self {
        let address = address.into();
        health.update(|s| *face.slot(s) = ListenerHealth::pending(port, address.clone(), tls));
        ListenerReport {
            face,
            health,
            parent,
            told: Arc::new(AtomicBool::new(false)),
        }
    }

    /// Listening (on `port` / `address` when they are known only now).
    pub fn up(&self, port: Option<u16>, address: Option<String>) {
        let face = self.face;
        self.health.update(|s| {
            let slot = face.slot(s);
            slot.listening = true;
            slot.error = None;
            if port.is_some() {
                slot.port = port;
            }
            if address.is_some() {
                slot.address = address.clone();
            }
        });
        self.tell(None);
    }

    /// Not listening, for `reason` (a failed bind, a server that ended).
    pub fn failed(&self, reason: &str) {
        let face = self.face;
        self.health.update(|s| {
            let slot = face.slot(s);
            slot.listening = false;
            slot.error = Some(reason.to_string());
        });
        self.tell(Some(reason.to_string()));
    }

    /// Stopped on purpose (shutdown): not listening, no error.
    pub fn down(&self) {
        let face = self.face;
        self.health.update(|s| face.slot(s).listening = false);
    }

    fn tell(&self, error: Option<String>) {
        if self.told.swap(true, Ordering::Relaxed) {
            return;
        }
        if let Some(parent) = &self.parent {
            parent.do_send(ListenerStarted {
                face: self.face,
                error,
            });
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::health_state::PostgresHealth;
    use std::time::Duration;

    fn health() -> SharedHealth {
        SharedHealth::new(
            HealthSnapshot::starting("0.1.0", "a", "A", PostgresHealth::new("db", 5432, "p")),
            Duration::from_secs(3),
        )
    }

    #[test]
    fn a_report_walks_its_own_slot_from_pending_to_up_to_failed_to_down() {
        let health = health();
        let report = ListenerReport::pending(
            Face::Http,
            health.clone(),
            None,
            Some(8080),
            "0.0.0.0:8080",
            false,
        );
        let s = health.load_stored();
        assert!(s.http.enabled && !s.http.listening && !s.http.ok());
        assert!(!s.ipc.enabled && !s.grpc.enabled, "other slots untouched");
        report.up(Some(8081), Some("127.0.0.1:8081".into()));
        let s = health.load_stored();
        assert!(s.http.listening && s.http.ok());
        assert_eq!(
            (s.http.port, s.http.address.as_deref()),
            (Some(8081), Some("127.0.0.1:8081"))
        );
        report.failed("the HTTP server failed: boom");
        let s = health.load_stored();
        assert!(!s.http.listening);
        assert_eq!(
            s.http.error.as_deref(),
            Some("the HTTP server failed: boom")
        );
        report.up(None, None);
        report.down();
        let s = health.load_stored();
        assert!(!s.http.listening && s.http.error.is_none());
    }

    /// Collects what a listener tells its parent.
    #[derive(Default)]
    struct Parent(Vec<ListenerStarted>);

    impl actix::Actor for Parent {
        type Context = actix::Context<Self>;
    }

    impl actix::Handler<ListenerStarted> for Parent {
        type Result = ();
        fn handle(&mut self, msg: ListenerStarted, _: &mut actix::Context<Self>) {
            self.0.push(msg);
        }
    }

    /// Everything heard so far (the mailbox is FIFO: earlier messages are
    /// handled before this one).
    #[derive(actix::Message)]
    #[rtype(result = "Vec<(Face, Option<String>)>")]
    struct Heard;

    impl actix::Handler<Heard> for Parent {
        type Result = actix::MessageResult<Heard>;
        fn handle(&mut self, _: Heard, _: &mut actix::Context<Self>) -> Self::Result {
            actix::MessageResult(self.0.iter().map(|m| (m.face, m.error.clone())).collect())
        }
    }

    #[actix_rt::test]
    async fn the_parent_hears_the_first_outcome_once() {
        use actix::Actor;
        let parent = Parent::default().start();
        let report = ListenerReport::pending(
            Face::Ipc,
            health(),
            Some(parent.clone().recipient()),
            None,
            "/run/x.sock",
            false,
        );
        report.failed("cannot listen: busy");
        report.clone().up(None, None);
        report.failed("again");
        let heard = parent.send(Heard).await.unwrap();
        assert_eq!(
            heard,
            vec![(Face::Ipc, Some("cannot listen: busy".to_string()))]
        );
    }
}
