//! The daemon's side of the cluster agreement (docs/operations.md, "The cluster").
//!
//! `node` owns the member (`ClusterNode`: openraft on its own runtime, the
//! store's identity, cluster and state requests); `core_stop` notices its
//! Raft core stopping on a fatal error; `transport` sends Raft messages
//! over gRPC with mutual TLS and the identity envelope; `service` answers
//! them (admission checked, refusals audited); `projector` writes the
//! replicated state map into this node's PostgreSQL.

pub mod core_stop;
pub mod fitness;
pub mod node;
pub mod projection_status;
pub mod projector;
pub mod service;
pub mod transport;

pub use node::{ClusterError, ClusterNode, ClusterStatus, RaftSettings, RaftStartError};
pub use steep_repl_consensus::lease::LeaseSettings;
