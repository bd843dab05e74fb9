//! `steep.repl.v1`: the gRPC contract between steep-repl daemons.
//!
//! The protocol definition and its generated code arrive with the peers
//! issue; this crate exists now so the dependency direction
//! `daemon -> actors -> proto` holds from the first commit.

/// The protobuf package every message and service of this crate lives in.
pub const PACKAGE: &str = "steep.repl.v1";
