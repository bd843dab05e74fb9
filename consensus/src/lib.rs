//! Cluster agreement for steep-repl (SPEC section 7), on openraft 0.9.
//!
//! This crate owns what the consensus engine needs and nothing of the
//! daemon: the Raft type configuration and a member's data (`types`), the
//! commands that travel in the log and their outcomes (`command`), the
//! replicated state map they are applied to (`kv`), the durable store in
//! local files (`log_store`, `state_machine`, `store_identity`), the
//! network adapter over any request/response transport (`network`) and the
//! rule that decides whether a Raft message may be accepted (`admission`).
//! The daemon (`steep-repl-actors`) supplies the transport (gRPC over mutual
//! TLS), the projection into PostgreSQL and the faces (IPC, CLI).

pub mod admission;
pub mod command;
pub mod kv;
pub mod types;

pub use command::{Command, Outcome, Proposal, Requester};
pub use types::{Member, RaftId, Role, TypeConfig};
