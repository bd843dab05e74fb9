//! Free TCP ports for the servers a test starts.

use std::net::TcpListener;
use std::sync::atomic::{AtomicU16, Ordering};

/// Returns a loopback TCP port that was free a moment ago.
///
/// Ports are taken from a per-process window offset by the pid, below
/// Linux's default ephemeral range (32768-60999, where outgoing connections
/// and Docker's published ports get theirs), and each candidate is probed
/// by binding it, so parallel test processes rarely collide; a collision
/// surfaces as a clear "port in use" start failure.
pub fn free_port() -> u16 {
    static NEXT: AtomicU16 = AtomicU16::new(0);
    let base = 20_000 + (std::process::id() % 127) as u16 * 100;
    loop {
        let offset = NEXT.fetch_add(1, Ordering::Relaxed) % 100;
        let port = base + offset;
        if TcpListener::bind(("127.0.0.1", port)).is_ok() {
            return port;
        }
        if offset == 99 {
            // The whole window is busy: let the kernel choose.
            if let Ok(listener) = TcpListener::bind(("127.0.0.1", 0)) {
                if let Ok(addr) = listener.local_addr() {
                    return addr.port();
                }
            }
        }
    }
}
