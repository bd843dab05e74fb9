//! The daemon's life cycle as the actors see it: the message every listener
//! actor (IPC, HTTP, gRPC) answers, so that the SystemActor can run the
//! ordered shutdown without knowing their types, and the [`ServiceNotifier`]
//! through which the SystemActor and the HealthActor keep the service manager
//! informed.

use actix::Message;
use std::time::Instant;

/// Stop accepting new connections, let in-flight requests finish until
/// `deadline`, then answer. Sent first in a graceful shutdown.
#[derive(Debug, Clone, Copy, Message)]
#[rtype(result = "()")]
pub struct StopAccepting {
    pub deadline: Instant,
}

/// Tells the service manager how the daemon is doing (systemd's sd_notify:
/// READY, STOPPING, WATCHDOG). The daemon provides the platform one.
pub trait ServiceNotifier: Send + Sync {
    /// Fully started: listeners up.
    fn ready(&self);
    /// Graceful stop begun.
    fn stopping(&self);
    /// The main loop turned (called every health interval).
    fn watchdog(&self);
}
