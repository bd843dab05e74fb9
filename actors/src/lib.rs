//! The steep-repl actor system.
//!
//! `SystemActor` (root, shutdown) supervises `DbActor` (the keeper of the
//! PostgreSQL connection, which publishes its pool to the cloneable `Db`
//! handle every query goes through), `AuditActor` (durable spool + batched inserts) and
//! `HealthActor` (keeps the cached health fresh); the listeners (`IpcActor`:
//! the local socket; `HttpActor`: `/health`, `/ready`, `/live`, `/metrics`)
//! read the cached health directly. Building blocks the actors share (peer
//! transport security) live beside them. Each actor lives in its own module
//! with its messages beside it. This crate knows nothing of the CLI, the
//! config file or service managers: the daemon builds the settings and
//! wires it.

pub mod audit;
pub mod audit_event;
pub mod backoff;
pub mod db;
pub mod fd_limit;
pub mod grpc;
pub mod health;
pub mod health_report;
pub mod health_state;
pub mod http;
pub mod ipc;
pub mod lifecycle;
pub mod listener;
pub mod metrics;
pub mod node_status;
pub mod peer_status;
pub mod peer_tls;
pub mod pki;
pub mod proc_stats;
pub mod raft;
pub mod system;

pub use steep_repl_proto::PACKAGE as PROTO_PACKAGE;
