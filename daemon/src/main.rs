//! steep-repl: the node daemon. The command line arrives with the daemon
//! core; for now the binary reports its version.

// Used by the CLI and the actors, which arrive separately.
#[allow(dead_code, unused_imports)]
mod config;

fn main() {
    println!("steep-repl {}", env!("CARGO_PKG_VERSION"));
    let _ = steep_repl_actors::PROTO_PACKAGE;
}
