//! The dialling side of peer gRPC: a tonic `Channel` to `host:port`.
//!
//! This module owns the tower connector tonic calls for every (re)connect:
//! TCP to the peer, then, under mTLS, a rustls handshake with our
//! `ClientConfig` in which the server name is the host we dialled (so the
//! peer's certificate must carry that name or IP as a SAN). The endpoint URI
//! says `http://` on purpose: TLS is ours, and tonic must not try its own
//! (with any tonic TLS feature enabled elsewhere in the build, an `https://`
//! URI without tonic's TLS config would be refused). The origin, which sets
//! the `:scheme` of requests, says `https://` when TLS is on.

use std::future::Future;
use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use http::Uri;
use hyper_util::rt::TokioIo;
use rustls::pki_types::ServerName;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::TcpStream;
use tokio_rustls::TlsConnector;
use tonic::transport::{Channel, Endpoint};

use super::live::LiveTls;
use super::PeerTlsError;

/// How channels to peers connect.
#[derive(Clone, Debug)]
pub struct ConnectOptions {
    /// Bound on TCP connect plus TLS handshake.
    pub connect_timeout: Duration,
    /// Bound on each request on the channel; `None` leaves it to the caller
    /// (tonic's per-request `set_timeout`).
    pub request_timeout: Option<Duration>,
    /// TCP keepalive on the connection, so a silently vanished peer is
    /// noticed even between heartbeats.
    pub tcp_keepalive: Option<Duration>,
}

impl Default for ConnectOptions {
    fn default() -> Self {
        ConnectOptions {
            connect_timeout: Duration::from_secs(3),
            request_timeout: None,
            tcp_keepalive: Some(Duration::from_secs(30)),
        }
    }
}

/// Connects now; see `PeerTransport::connect`.
pub(super) async fn connect(
    tls: Option<Arc<LiveTls>>,
    host: &str,
    port: u16,
    options: &ConnectOptions,
) -> Result<Channel, PeerTlsError> {
    let (endpoint, connector, address) = prepare(tls, host, port, options)?;
    endpoint
        .connect_with_connector(connector)
        .await
        .map_err(|e| PeerTlsError::Connect {
            address,
            detail: error_chain(&e),
        })
}

/// Connects on first use; see `PeerTransport::connect_lazy`. Must be called
/// inside a tokio runtime (tonic spawns the channel's worker task).
pub(super) fn connect_lazy(
    tls: Option<Arc<LiveTls>>,
    host: &str,
    port: u16,
    options: &ConnectOptions,
) -> Result<Channel, PeerTlsError> {
    let (endpoint, connector, _) = prepare(tls, host, port, options)?;
    Ok(endpoint.connect_with_connector_lazy(connector))
}

fn prepare(
    tls: Option<Arc<LiveTls>>,
    host: &str,
    port: u16,
    options: &ConnectOptions,
) -> Result<(Endpoint, PeerConnector, String), PeerTlsError> {
    // Accept "[::1]" as well as "::1".
    let host = host.trim_start_matches('[').trim_end_matches(']');
    let authority = if host.contains(':') {
        format!("[{host}]:{port}")
    } else {
        format!("{host}:{port}")
    };
    let bad = |detail: String| PeerTlsError::BadAddress {
        address: authority.clone(),
        detail,
    };
    if host.is_empty() {
        return Err(bad("empty host".into()));
    }
    if port == 0 {
        return Err(bad("port 0".into()));
    }
    if tls.is_some() {
        // Fail now rather than at every reconnect.
        server_name(host).map_err(|e| bad(e.to_string()))?;
    }
    let mut endpoint = Endpoint::from_shared(format!("http://{authority}"))
        .map_err(|e| bad(error_chain(&e)))?
        .connect_timeout(options.connect_timeout)
        .tcp_nodelay(true)
        .tcp_keepalive(options.tcp_keepalive);
    if tls.is_some() {
        let origin: Uri = format!("https://{authority}")
            .parse()
            .map_err(|e: http::uri::InvalidUri| bad(e.to_string()))?;
        endpoint = endpoint.origin(origin);
    }
    if let Some(timeout) = options.request_timeout {
        endpoint = endpoint.timeout(timeout);
    }
    let connector = PeerConnector {
        tls,
        keepalive: options.tcp_keepalive,
    };
    Ok((endpoint, connector, authority))
}

fn server_name(host: &str) -> io::Result<ServerName<'static>> {
    ServerName::try_from(host.to_owned()).map_err(|_| {
        io::Error::new(
            io::ErrorKind::InvalidInput,
            format!(
                "{host:?} is neither a DNS name nor an IP address, so no certificate can match it"
            ),
        )
    })
}

/// "transport error: connect: invalid peer certificate: UnknownIssuer":
/// tonic's errors say little at the top; the cause is at the bottom.
fn error_chain(e: &(dyn std::error::Error + 'static)) -> String {
    let mut text = e.to_string();
    let mut source = e.source();
    while let Some(cause) = source {
        let cause_text = cause.to_string();
        if !text.ends_with(&cause_text) {
            text.push_str(": ");
            text.push_str(&cause_text);
        }
        source = cause.source();
    }
    text
}

/// What the connector hands to hyper: a TCP or TLS stream.
trait PeerIo: AsyncRead + AsyncWrite + Send + Unpin {}
impl<T: AsyncRead + AsyncWrite + Send + Unpin> PeerIo for T {}

/// The tower service tonic calls to open a connection.
#[derive(Clone)]
struct PeerConnector {
    /// The client configuration is read at each connect, so that a reload
    /// applies to the next (re)connection of every channel.
    tls: Option<Arc<LiveTls>>,
    keepalive: Option<Duration>,
}

impl tower_service::Service<Uri> for PeerConnector {
    type Response = TokioIo<Box<dyn PeerIo>>;
    type Error = io::Error;
    type Future = Pin<Box<dyn Future<Output = io::Result<Self::Response>> + Send>>;

    fn poll_ready(&mut self, _cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, uri: Uri) -> Self::Future {
        let tls = self
            .tls
            .as_ref()
            .map(|tls| TlsConnector::from(tls.client_config()));
        let keepalive = self.keepalive;
        Box::pin(async move {
            let host = uri
                .host()
                .map(|h| h.trim_start_matches('[').trim_end_matches(']').to_owned())
                .ok_or_else(|| io::Error::new(io::ErrorKind::InvalidInput, "no host in URI"))?;
            let port = uri
                .port_u16()
                .ok_or_else(|| io::Error::new(io::ErrorKind::InvalidInput, "no port in URI"))?;
            let tcp = TcpStream::connect((host.as_str(), port)).await?;
            // Small gRPC frames: latency over packet count. Best effort.
            let _ = tcp.set_nodelay(true);
            if let Some(idle) = keepalive {
                let _ = socket2::SockRef::from(&tcp)
                    .set_tcp_keepalive(&socket2::TcpKeepalive::new().with_time(idle));
            }
            let io: Box<dyn PeerIo> = match tls {
                None => Box::new(tcp),
                Some(connector) => Box::new(connector.connect(server_name(&host)?, tcp).await?),
            };
            Ok(TokioIo::new(io))
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn bad_addresses_are_refused_before_dialling() {
        let options = ConnectOptions::default();
        let err = connect_lazy(None, "", 5433, &options).unwrap_err();
        assert!(err.to_string().contains("empty host"), "{err}");
        let err = connect_lazy(None, "node-a", 0, &options).unwrap_err();
        assert!(err.to_string().contains("port 0"), "{err}");
    }

    #[tokio::test]
    async fn ipv6_hosts_are_bracketed() {
        let (endpoint, _, address) =
            prepare(None, "::1", 5433, &ConnectOptions::default()).unwrap();
        assert_eq!(address, "[::1]:5433");
        assert_eq!(endpoint.uri().to_string(), "http://[::1]:5433/");
        let (_, _, address) = prepare(None, "[::1]", 5433, &ConnectOptions::default()).unwrap();
        assert_eq!(address, "[::1]:5433");
    }

    #[tokio::test]
    async fn nothing_listening_is_a_connect_error_naming_the_address() {
        // Bind then drop to get a port that is (very likely) closed.
        let port = {
            let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
            l.local_addr().unwrap().port()
        };
        let err = connect(None, "127.0.0.1", port, &ConnectOptions::default())
            .await
            .unwrap_err();
        let msg = err.to_string();
        assert!(msg.contains(&format!("127.0.0.1:{port}")), "{msg}");
        assert!(msg.to_lowercase().contains("refused"), "{msg}");
    }
}
