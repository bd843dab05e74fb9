//! steep-repl: the node daemon. The command line arrives with the daemon
//! core; for now the binary reports its version.

// Used by the `tls` commands once the CLI lands; until then only its tests
// exercise it.
#[allow(dead_code)]
mod certs;

fn main() {
    println!("steep-repl {}", env!("CARGO_PKG_VERSION"));
    let _ = steep_repl_actors::PROTO_PACKAGE;
}
