//! Cluster agreement for steep-repl (docs/protocol.md, docs/operations.md), on openraft 0.9.
//!
//! This crate owns what the consensus engine needs and nothing of the
//! daemon: the Raft type configuration and a member's data (`types`), the
//! commands that travel in the log and their outcomes (`command`), the
//! replicated state map they are applied to (`kv`), the durable store in
//! local files (`store` opens it: `store_identity`, `log_store`,
//! `state_machine`, with `durable` for atomic file writes) and the rule that
//! decides whether a Raft message may be accepted (`admission`), openraft's
//! network over any request/response transport (`network`) and the client
//! side that forwards writes and read-index requests to the leader (`client`).
//! The daemon (`steep-repl-actors`) supplies the transport (gRPC over mutual
//! TLS), the projection into PostgreSQL (from `state_machine::SharedState`)
//! and the faces (IPC, CLI).

pub mod admission;
pub mod boottime;
pub mod claims;
pub mod client;
pub mod command;
pub mod coordinator;
pub mod durable;
pub mod force_new;
pub mod kv;
pub mod lease;
pub mod lease_keeper;
pub mod log_flusher;
pub mod log_store;
pub mod network;
pub mod preallocate;
pub mod state_machine;
pub mod store;
pub mod store_identity;
pub mod types;

/// The engine, re-exported so that the daemon uses the same version.
pub use openraft;

pub use command::{Command, Outcome, Proposal, Requester};
pub use log_store::{LogStats, LogStore, TornTail};
pub use state_machine::{Applied, AppliedEvent, Gap, SharedState, StateMachineStore, StateView};
pub use store::{open, StoreError};
pub use store_identity::StoreIdentity;
pub use types::{Member, RaftId, Role, TypeConfig};
