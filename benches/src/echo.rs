//! The reference server for the IPC benchmark: a bare Unix-socket
//! JSON-line echo on a single-threaded tokio runtime (the actix runtime the
//! daemon serves IPC on is single-threaded too). It does no decoding and no
//! routing: the gap between it and the daemon is the daemon's own cost.

use anyhow::{Context, Result};
use std::path::Path;
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::net::UnixListener;

/// Serves until the process is stopped.
pub fn serve(socket: &Path) -> Result<()> {
    let _ = std::fs::remove_file(socket);
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    let local = tokio::task::LocalSet::new();
    local.block_on(&runtime, async {
        let listener =
            UnixListener::bind(socket).with_context(|| format!("binding {}", socket.display()))?;
        loop {
            let (stream, _) = listener.accept().await?;
            tokio::task::spawn_local(async move {
                let (read, mut write) = stream.into_split();
                let mut lines = BufReader::new(read);
                let mut line = Vec::with_capacity(512);
                loop {
                    line.clear();
                    match lines.read_until(b'\n', &mut line).await {
                        Ok(0) | Err(_) => return,
                        Ok(_) => {}
                    }
                    if write.write_all(&line).await.is_err() {
                        return;
                    }
                }
            });
        }
    })
}
