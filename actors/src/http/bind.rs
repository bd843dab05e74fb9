//! The HTTP listening socket, bound before anything else starts.
//!
//! The daemon binds `http.bind:http.port` synchronously, before the actor
//! system exists, so that a port in use (or an address this host does not
//! have) stops the start with one clear line instead of a daemon that runs
//! without its probes. The bound socket travels to the HttpActor inside
//! [`HttpSettings`](super::HttpSettings), which takes it out once: after the
//! server stops, no forgotten copy keeps the port accepting connections.

use socket2::{Domain, Protocol, Socket, Type};
use std::io;
use std::net::{SocketAddr, TcpListener};
use std::sync::{Arc, Mutex};

/// Connections the kernel queues while every worker is busy. Probes and
/// scrapes are few, but a benchmark or a burst of load-balancer checks
/// opens many at once; Linux caps this at `net.core.somaxconn` anyway.
const BACKLOG: i32 = 1024;

/// What went wrong with the HTTP face, in words for an operator.
#[derive(Debug, thiserror::Error)]
pub enum HttpError {
    #[error("cannot listen for HTTP on {addr} (http.bind {ip}, http.port {port}): {reason}")]
    Bind {
        addr: SocketAddr,
        ip: std::net::IpAddr,
        port: u16,
        reason: String,
    },
    #[error("the HTTP server could not start on {addr}: {source}")]
    Start {
        addr: SocketAddr,
        #[source]
        source: io::Error,
    },
    #[error("the metrics registry refused a metric: {0}")]
    Metrics(#[from] prometheus::Error),
}

impl HttpError {
    fn bind(addr: SocketAddr, e: &io::Error) -> Self {
        let reason = match e.kind() {
            io::ErrorKind::AddrInUse => format!(
                "port {} is already in use by another process; stop it or choose another http.port",
                addr.port()
            ),
            io::ErrorKind::AddrNotAvailable => {
                format!("{} is not an address of this host; check http.bind", addr.ip())
            }
            io::ErrorKind::PermissionDenied => format!(
                "permission denied (ports below 1024 need privileges); choose another http.port ({e})"
            ),
            _ => e.to_string(),
        };
        HttpError::Bind {
            addr,
            ip: addr.ip(),
            port: addr.port(),
            reason,
        }
    }
}

/// A bound, listening TCP socket for the HTTP server. Clones share one
/// socket, which the server takes out once.
#[derive(Debug, Clone)]
pub struct HttpListener {
    socket: Arc<Mutex<Option<TcpListener>>>,
    addr: SocketAddr,
}

impl HttpListener {
    /// Binds and listens on `addr` (port 0 picks a free port, for tests).
    pub fn bind(addr: SocketAddr) -> Result<Self, HttpError> {
        let socket = Self::open(addr).map_err(|e| HttpError::bind(addr, &e))?;
        // The real port when `addr` asked for port 0.
        let addr = socket.local_addr().map_err(|e| HttpError::bind(addr, &e))?;
        Ok(HttpListener {
            socket: Arc::new(Mutex::new(Some(socket))),
            addr,
        })
    }

    fn open(addr: SocketAddr) -> io::Result<TcpListener> {
        let socket = Socket::new(Domain::for_address(addr), Type::STREAM, Some(Protocol::TCP))?;
        // Lets a restarted daemon bind while old connections sit in
        // TIME_WAIT; it does not let two listeners share the port on Linux.
        socket.set_reuse_address(true)?;
        socket.bind(&addr.into())?;
        socket.listen(BACKLOG)?;
        Ok(socket.into())
    }

    /// Where it listens (with the real port).
    pub fn local_addr(&self) -> SocketAddr {
        self.addr
    }

    /// The socket, for the server to own; `None` once taken.
    pub(crate) fn take(&self) -> Option<TcpListener> {
        // A poisoned lock only means another thread panicked mid-take; the
        // slot itself is still a plain Option.
        match self.socket.lock() {
            Ok(mut slot) => slot.take(),
            Err(poisoned) => poisoned.into_inner().take(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_port_in_use_is_refused_with_the_address_and_port_named() {
        let first = HttpListener::bind("127.0.0.1:0".parse().unwrap()).unwrap();
        let taken = first.local_addr();
        let err = HttpListener::bind(taken).unwrap_err().to_string();
        assert!(
            err.contains(&format!("cannot listen for HTTP on {taken}")),
            "{err}"
        );
        assert!(
            err.contains(&format!("http.port {}", taken.port())),
            "{err}"
        );
        assert!(err.contains("already in use"), "{err}");
    }

    #[test]
    fn an_address_of_another_host_is_named() {
        // TEST-NET-1 (RFC 5737) is never assigned to a local interface.
        let err = HttpListener::bind("192.0.2.1:0".parse().unwrap())
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("192.0.2.1 is not an address of this host"),
            "{err}"
        );
    }

    #[test]
    fn port_zero_reports_the_port_the_kernel_chose() {
        let listener = HttpListener::bind("127.0.0.1:0".parse().unwrap()).unwrap();
        assert_ne!(listener.local_addr().port(), 0);
        assert!(std::net::TcpStream::connect(listener.local_addr()).is_ok());
    }
}
