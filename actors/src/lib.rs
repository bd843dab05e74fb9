//! The steep-repl actor system. Each actor lives in its own module with its
//! messages beside it; the daemon crate wires them together. Building blocks
//! the actors share (peer transport security) live beside them.

pub mod peer_tls;

pub use steep_repl_proto::PACKAGE as PROTO_PACKAGE;
