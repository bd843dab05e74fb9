//! Messages every listener actor (IPC, HTTP, gRPC) answers, so that the
//! SystemActor can run the ordered shutdown without knowing their types.

use actix::Message;
use std::time::Instant;

/// Stop accepting new connections, let in-flight requests finish until
/// `deadline`, then answer. Sent first in a graceful shutdown.
#[derive(Debug, Clone, Copy, Message)]
#[rtype(result = "()")]
pub struct StopAccepting {
    pub deadline: Instant,
}
