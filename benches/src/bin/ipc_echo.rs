//! `ipc_echo SOCKET`: the reference JSON-line echo server of the IPC
//! benchmark (see docs/BENCHMARKS.md). Runs until killed.

fn main() -> anyhow::Result<()> {
    let Some(socket) = std::env::args_os().nth(1) else {
        anyhow::bail!("usage: ipc_echo SOCKET");
    };
    steep_repl_benches::echo::serve(std::path::Path::new(&socket))
}
