//! `ipc_load SOCKET [REQUESTS] [CONNECTIONS] [REQUEST_JSON]`: round trips
//! of one JSON line request against a Unix socket (the daemon's IPC socket
//! or the reference echo), reporting p50/p90/p99/p99.9/max and throughput.
//! Defaults: 20000 requests, 1 connection, `status.get`.

use std::path::PathBuf;

fn main() -> anyhow::Result<()> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let Some(socket) = args.first().map(PathBuf::from) else {
        anyhow::bail!("usage: ipc_load SOCKET [REQUESTS] [CONNECTIONS] [REQUEST_JSON]");
    };
    let requests = args
        .get(1)
        .map(|s| s.parse())
        .transpose()?
        .unwrap_or(20_000);
    let connections = args.get(2).map(|s| s.parse()).transpose()?.unwrap_or(1);
    let line = args
        .get(3)
        .cloned()
        .unwrap_or_else(|| r#"{"id":1,"method":"status.get"}"#.to_string());
    let report =
        steep_repl_benches::ipc_load::run(&socket, &line, requests, connections, 200, |_| Ok(()))?;
    println!("{}", report.summary());
    Ok(())
}
