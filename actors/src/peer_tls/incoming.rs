//! The accept side of peer gRPC: TCP connections in, verified streams out.
//!
//! [`PeerIncoming`] owns the listening socket and every TLS handshake in
//! progress. It is a `Stream` of [`PeerStream`]s for
//! `tonic::transport::Server::serve_with_incoming(_shutdown)`. Handshakes run
//! concurrently and each is bounded by a timeout, so a client that opens TCP
//! and sends nothing delays nobody. A failed handshake never reaches tonic:
//! it is passed, with the peer's socket address and a reason an operator can
//! read, to the callback the caller gave (which typically logs it and audits
//! `peer.auth_failed`). Dropping the stream (tonic does so on shutdown)
//! closes the listening socket and abandons the handshakes in progress.
//!
//! Handlers find the connection's [`PeerInfo`] (peer address and, under
//! mTLS, the certificate identity) in the request extensions:
//! `PeerInfo::from_request(&request)`.

use std::future::Future;
use std::io;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use futures_util::stream::{FuturesUnordered, Stream, StreamExt};
use rustls::{CertificateError, PeerIncompatible};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio_rustls::TlsAcceptor;
use tonic::transport::server::Connected;

use super::identity::{identity_matches, PeerIdentity};
use super::live::LiveTls;

/// How the accept side behaves. The defaults suit a daemon's peer port.
#[derive(Clone, Debug)]
pub struct IncomingOptions {
    /// How long one TLS handshake may take, from TCP accept to verified
    /// client certificate. A peer that is slower is dropped and reported.
    pub handshake_timeout: Duration,
    /// How many handshakes may be in progress at once. Beyond that, new
    /// connections wait in the kernel's accept queue: this bounds the memory
    /// a flood of idle TCP connections can take.
    pub max_concurrent_handshakes: usize,
    /// Disable Nagle on accepted sockets: gRPC sends small frames whose
    /// latency matters more than packet count.
    pub nodelay: bool,
}

impl Default for IncomingOptions {
    fn default() -> Self {
        IncomingOptions {
            handshake_timeout: Duration::from_secs(10),
            max_concurrent_handshakes: 256,
            nodelay: true,
        }
    }
}

/// Why a peer's connection was refused before any request was read.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum HandshakeFailureReason {
    #[error("no client certificate")]
    NoClientCertificate,
    #[error("certificate signed by an unknown CA")]
    UnknownCa,
    #[error("certificate expired")]
    CertificateExpired,
    #[error("certificate not yet valid")]
    CertificateNotYetValid,
    #[error("certificate not valid for TLS client authentication (extended key usage)")]
    CertificateWrongPurpose,
    #[error("bad certificate: {0}")]
    BadCertificate(String),
    #[error("the peer does not offer TLS 1.3")]
    NoTls13,
    #[error("the peer's TLS settings are incompatible: {0}")]
    Incompatible(String),
    #[error("not a TLS client ({0}); is the peer running with grpc.tls.insecure: true?")]
    NotTls(String),
    #[error(
        "the peer aborted the handshake with alert {0} (does it trust this node's certificate?)"
    )]
    PeerAlert(String),
    #[error("no TLS handshake within {0:?}")]
    Timeout(Duration),
    #[error("connection closed during the handshake")]
    ClosedDuringHandshake,
    #[error("peer certificate unreadable: {0}")]
    UnreadableCertificate(String),
    #[error("TLS error: {0}")]
    Tls(String),
    #[error("I/O error during the handshake: {0}")]
    Io(String),
}

impl HandshakeFailureReason {
    /// A stable short name of the kind of failure (for rate limiting and
    /// metrics labels).
    pub fn kind(&self) -> &'static str {
        match self {
            HandshakeFailureReason::NoClientCertificate => "no_client_certificate",
            HandshakeFailureReason::UnknownCa => "unknown_ca",
            HandshakeFailureReason::CertificateExpired => "certificate_expired",
            HandshakeFailureReason::CertificateNotYetValid => "certificate_not_yet_valid",
            HandshakeFailureReason::CertificateWrongPurpose => "certificate_wrong_purpose",
            HandshakeFailureReason::BadCertificate(_) => "bad_certificate",
            HandshakeFailureReason::NoTls13 => "no_tls13",
            HandshakeFailureReason::Incompatible(_) => "incompatible",
            HandshakeFailureReason::NotTls(_) => "not_tls",
            HandshakeFailureReason::PeerAlert(_) => "peer_alert",
            HandshakeFailureReason::Timeout(_) => "timeout",
            HandshakeFailureReason::ClosedDuringHandshake => "closed",
            HandshakeFailureReason::UnreadableCertificate(_) => "unreadable_certificate",
            HandshakeFailureReason::Tls(_) => "tls",
            HandshakeFailureReason::Io(_) => "io",
        }
    }
}

/// One refused connection: who and why.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("TLS handshake with {peer_addr} failed: {reason}")]
pub struct HandshakeFailure {
    /// The peer's socket address, as accepted.
    pub peer_addr: SocketAddr,
    /// What went wrong.
    pub reason: HandshakeFailureReason,
}

/// What a handler knows about the connection a request came on. tonic puts
/// it in every request's extensions.
#[derive(Clone, Debug)]
pub struct PeerInfo {
    /// The peer's socket address.
    pub remote_addr: SocketAddr,
    /// Our side of the connection.
    pub local_addr: Option<SocketAddr>,
    /// The names in the peer's verified certificate; `None` on a plaintext
    /// connection.
    pub identity: Option<Arc<PeerIdentity>>,
}

/// A peer claimed a node_id its certificate does not carry.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("peer {peer_addr} claims node_id {claimed:?} but its certificate is {identity}")]
pub struct IdentityMismatch {
    pub peer_addr: SocketAddr,
    pub claimed: String,
    pub identity: String,
}

impl From<IdentityMismatch> for tonic::Status {
    fn from(e: IdentityMismatch) -> Self {
        tonic::Status::permission_denied(e.to_string())
    }
}

impl PeerInfo {
    /// The connection info of a request served through [`PeerIncoming`];
    /// `None` if the server was fed by another incoming stream.
    pub fn from_request<T>(request: &tonic::Request<T>) -> Option<&PeerInfo> {
        request.extensions().get::<PeerInfo>()
    }

    /// Checks that the peer may speak for `claimed_node_id`: under mTLS its
    /// certificate's CN or a SAN must equal it. On a plaintext connection
    /// there is no identity to check, and any claim passes (that is what
    /// `grpc.tls.insecure` means).
    pub fn verify_claim(&self, claimed_node_id: &str) -> Result<(), IdentityMismatch> {
        match &self.identity {
            None => Ok(()),
            Some(identity) if identity_matches(identity, claimed_node_id) => Ok(()),
            Some(identity) => Err(IdentityMismatch {
                peer_addr: self.remote_addr,
                claimed: claimed_node_id.to_owned(),
                identity: identity.to_string(),
            }),
        }
    }
}

/// An accepted connection: TLS-wrapped under mTLS, bare TCP in plaintext
/// mode, with what we know about the peer.
pub struct PeerStream {
    io: PeerIo,
    info: PeerInfo,
}

enum PeerIo {
    // Boxed: a rustls connection is large and this enum is moved around.
    Tls(Box<tokio_rustls::server::TlsStream<TcpStream>>),
    Plain(TcpStream),
}

impl PeerStream {
    /// What we know about the peer.
    pub fn info(&self) -> &PeerInfo {
        &self.info
    }
}

impl Connected for PeerStream {
    type ConnectInfo = PeerInfo;

    fn connect_info(&self) -> PeerInfo {
        self.info.clone()
    }
}

impl AsyncRead for PeerStream {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        match &mut self.get_mut().io {
            PeerIo::Tls(s) => Pin::new(s.as_mut()).poll_read(cx, buf),
            PeerIo::Plain(s) => Pin::new(s).poll_read(cx, buf),
        }
    }
}

impl AsyncWrite for PeerStream {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        match &mut self.get_mut().io {
            PeerIo::Tls(s) => Pin::new(s.as_mut()).poll_write(cx, buf),
            PeerIo::Plain(s) => Pin::new(s).poll_write(cx, buf),
        }
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        match &mut self.get_mut().io {
            PeerIo::Tls(s) => Pin::new(s.as_mut()).poll_write_vectored(cx, bufs),
            PeerIo::Plain(s) => Pin::new(s).poll_write_vectored(cx, bufs),
        }
    }

    fn is_write_vectored(&self) -> bool {
        match &self.io {
            PeerIo::Tls(s) => s.is_write_vectored(),
            PeerIo::Plain(s) => s.is_write_vectored(),
        }
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match &mut self.get_mut().io {
            PeerIo::Tls(s) => Pin::new(s.as_mut()).poll_flush(cx),
            PeerIo::Plain(s) => Pin::new(s).poll_flush(cx),
        }
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match &mut self.get_mut().io {
            PeerIo::Tls(s) => Pin::new(s.as_mut()).poll_shutdown(cx),
            PeerIo::Plain(s) => Pin::new(s).poll_shutdown(cx),
        }
    }
}

type Handshake = Pin<Box<dyn Future<Output = Result<PeerStream, HandshakeFailure>> + Send>>;
type FailureCallback = Arc<dyn Fn(HandshakeFailure) + Send + Sync>;

/// How long to stop accepting after an accept error that is not about one
/// connection (out of file descriptors, out of memory): retrying at once
/// would spin.
const ACCEPT_ERROR_PAUSE: Duration = Duration::from_millis(100);

/// The listening socket plus the handshakes in progress; a `Stream` of
/// verified connections for tonic. See the module docs.
pub struct PeerIncoming {
    listener: TcpListener,
    /// The server configuration, read at each handshake so that a reload
    /// applies to the next connection; `None` for plaintext.
    tls: Option<Arc<LiveTls>>,
    options: IncomingOptions,
    handshakes: FuturesUnordered<Handshake>,
    on_failure: FailureCallback,
    paused: Option<Pin<Box<tokio::time::Sleep>>>,
}

impl PeerIncoming {
    /// Wraps a bound listener. `tls` is `None` for plaintext. Usually
    /// built through `PeerTransport::incoming`.
    ///
    /// `on_failure` runs inside the accept loop's poll, once per refused
    /// connection: it must be quick and must not block (log, send on a
    /// channel, `do_send` to an actor).
    pub fn new<F>(
        listener: TcpListener,
        tls: Option<Arc<LiveTls>>,
        options: IncomingOptions,
        on_failure: F,
    ) -> Self
    where
        F: Fn(HandshakeFailure) + Send + Sync + 'static,
    {
        PeerIncoming {
            listener,
            tls,
            options,
            handshakes: FuturesUnordered::new(),
            on_failure: Arc::new(on_failure),
            paused: None,
        }
    }

    /// The address the listener is bound to (useful after binding port 0).
    pub fn local_addr(&self) -> io::Result<SocketAddr> {
        self.listener.local_addr()
    }

    /// How many handshakes are in progress now.
    pub fn handshakes_in_progress(&self) -> usize {
        self.handshakes.len()
    }

    /// Accepts every connection the kernel has ready, up to the handshake
    /// limit, and starts its handshake. Returns an accept error that tonic
    /// should see (it logs and keeps polling).
    fn accept_ready(&mut self, cx: &mut Context<'_>) -> Option<io::Error> {
        loop {
            if let Some(pause) = &mut self.paused {
                if pause.as_mut().poll(cx).is_pending() {
                    return None;
                }
                self.paused = None;
            }
            if self.handshakes.len() >= self.options.max_concurrent_handshakes.max(1) {
                // Woken again when a handshake finishes (its waker is ours).
                return None;
            }
            match self.listener.poll_accept(cx) {
                Poll::Ready(Ok((tcp, peer_addr))) => self.start_handshake(tcp, peer_addr),
                // The connection died before we took it: nothing to report.
                Poll::Ready(Err(e)) if is_connection_error(&e) => continue,
                Poll::Ready(Err(e)) => {
                    self.paused = Some(Box::pin(tokio::time::sleep(ACCEPT_ERROR_PAUSE)));
                    return Some(e);
                }
                Poll::Pending => return None,
            }
        }
    }

    fn start_handshake(&mut self, tcp: TcpStream, peer_addr: SocketAddr) {
        if self.options.nodelay {
            // Best effort: a socket that refuses the option still works.
            let _ = tcp.set_nodelay(true);
        }
        let acceptor = self
            .tls
            .as_ref()
            .map(|tls| TlsAcceptor::from(tls.server_config()));
        let timeout = self.options.handshake_timeout;
        self.handshakes
            .push(Box::pin(handshake(acceptor, tcp, peer_addr, timeout)));
    }
}

impl Stream for PeerIncoming {
    type Item = Result<PeerStream, io::Error>;

    fn poll_next(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        let this = self.get_mut();
        loop {
            if let Some(e) = this.accept_ready(cx) {
                return Poll::Ready(Some(Err(e)));
            }
            match this.handshakes.poll_next_unpin(cx) {
                Poll::Ready(Some(Ok(stream))) => return Poll::Ready(Some(Ok(stream))),
                Poll::Ready(Some(Err(failure))) => {
                    (this.on_failure)(failure);
                    // A slot freed up: go round to accept again.
                }
                // Nothing finished (or nothing in progress): the listener's
                // and the handshakes' wakers are registered.
                Poll::Ready(None) | Poll::Pending => return Poll::Pending,
            }
        }
    }
}

async fn handshake(
    acceptor: Option<TlsAcceptor>,
    tcp: TcpStream,
    peer_addr: SocketAddr,
    timeout: Duration,
) -> Result<PeerStream, HandshakeFailure> {
    let local_addr = tcp.local_addr().ok();
    let fail = |reason| HandshakeFailure { peer_addr, reason };
    let Some(acceptor) = acceptor else {
        return Ok(PeerStream {
            io: PeerIo::Plain(tcp),
            info: PeerInfo {
                remote_addr: peer_addr,
                local_addr,
                identity: None,
            },
        });
    };
    let tls = match tokio::time::timeout(timeout, acceptor.accept(tcp)).await {
        Err(_elapsed) => return Err(fail(HandshakeFailureReason::Timeout(timeout))),
        Ok(Err(e)) => return Err(fail(classify(&e))),
        Ok(Ok(tls)) => tls,
    };
    // Client authentication is mandatory in our ServerConfig, so a completed
    // handshake always has a verified chain; an empty one is still handled.
    let chain = tls.get_ref().1.peer_certificates().unwrap_or(&[]);
    let identity = PeerIdentity::from_chain(chain)
        .map_err(|e| fail(HandshakeFailureReason::UnreadableCertificate(e.to_string())))?;
    Ok(PeerStream {
        io: PeerIo::Tls(Box::new(tls)),
        info: PeerInfo {
            remote_addr: peer_addr,
            local_addr,
            identity: Some(Arc::new(identity)),
        },
    })
}

/// Turns a handshake error into words. tokio-rustls wraps the rustls error
/// in the `io::Error`; anything else is a socket problem.
fn classify(err: &io::Error) -> HandshakeFailureReason {
    use HandshakeFailureReason as R;
    if let Some(tls) = err
        .get_ref()
        .and_then(|inner| inner.downcast_ref::<rustls::Error>())
    {
        return match tls {
            rustls::Error::NoCertificatesPresented => R::NoClientCertificate,
            rustls::Error::InvalidCertificate(cert) => match cert {
                // One trusted CA: a certificate naming it as issuer whose
                // signature does not verify was not signed by it either
                // (e.g. another cluster's CA with the same name).
                CertificateError::UnknownIssuer | CertificateError::BadSignature => R::UnknownCa,
                CertificateError::Expired | CertificateError::ExpiredContext { .. } => {
                    R::CertificateExpired
                }
                CertificateError::NotValidYet | CertificateError::NotValidYetContext { .. } => {
                    R::CertificateNotYetValid
                }
                CertificateError::InvalidPurpose
                | CertificateError::InvalidPurposeContext { .. } => R::CertificateWrongPurpose,
                _ => R::BadCertificate(tls.to_string()),
            },
            rustls::Error::PeerIncompatible(
                PeerIncompatible::SupportedVersionsExtensionRequired
                | PeerIncompatible::Tls12NotOffered
                | PeerIncompatible::Tls12NotOfferedOrEnabled,
            ) => R::NoTls13,
            rustls::Error::PeerIncompatible(p) => R::Incompatible(format!("{p:?}")),
            rustls::Error::InvalidMessage(_) => R::NotTls(tls.to_string()),
            rustls::Error::AlertReceived(alert) => R::PeerAlert(format!("{alert:?}")),
            other => R::Tls(other.to_string()),
        };
    }
    match err.kind() {
        io::ErrorKind::UnexpectedEof
        | io::ErrorKind::ConnectionReset
        | io::ErrorKind::ConnectionAborted
        | io::ErrorKind::BrokenPipe => R::ClosedDuringHandshake,
        _ => R::Io(err.to_string()),
    }
}

/// Accept errors that concern one connection only (it was reset before we
/// took it); the listener itself is fine.
fn is_connection_error(e: &io::Error) -> bool {
    matches!(
        e.kind(),
        io::ErrorKind::ConnectionRefused
            | io::ErrorKind::ConnectionAborted
            | io::ErrorKind::ConnectionReset
            | io::ErrorKind::Interrupted
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn wrap(e: rustls::Error) -> io::Error {
        io::Error::new(io::ErrorKind::InvalidData, e)
    }

    #[test]
    fn rustls_errors_become_operator_words() {
        let cases = [
            (
                rustls::Error::NoCertificatesPresented,
                "no client certificate",
            ),
            (
                rustls::Error::InvalidCertificate(CertificateError::UnknownIssuer),
                "certificate signed by an unknown CA",
            ),
            (
                rustls::Error::InvalidCertificate(CertificateError::Expired),
                "certificate expired",
            ),
            (
                rustls::Error::PeerIncompatible(
                    PeerIncompatible::SupportedVersionsExtensionRequired,
                ),
                "the peer does not offer TLS 1.3",
            ),
        ];
        for (error, words) in cases {
            assert_eq!(classify(&wrap(error)).to_string(), words);
        }
    }

    #[test]
    fn socket_errors_are_not_tls_errors() {
        let eof = io::Error::new(io::ErrorKind::UnexpectedEof, "tls handshake eof");
        assert_eq!(
            classify(&eof),
            HandshakeFailureReason::ClosedDuringHandshake
        );
        let other = io::Error::other("boom");
        assert!(matches!(classify(&other), HandshakeFailureReason::Io(_)));
    }

    #[test]
    fn a_failure_names_the_peer_address() {
        let failure = HandshakeFailure {
            peer_addr: "10.0.0.9:41000".parse().unwrap(),
            reason: HandshakeFailureReason::UnknownCa,
        };
        assert_eq!(
            failure.to_string(),
            "TLS handshake with 10.0.0.9:41000 failed: certificate signed by an unknown CA"
        );
    }

    #[test]
    fn a_claim_is_checked_only_when_there_is_an_identity() {
        let plain = PeerInfo {
            remote_addr: "127.0.0.1:1".parse().unwrap(),
            local_addr: None,
            identity: None,
        };
        assert!(plain.verify_claim("anyone").is_ok());
        let tls = PeerInfo {
            identity: Some(Arc::new(PeerIdentity {
                common_name: Some("node-a".into()),
                ..Default::default()
            })),
            ..plain
        };
        assert!(tls.verify_claim("node-a").is_ok());
        let err = tls.verify_claim("node-b").unwrap_err();
        assert_eq!(
            err.to_string(),
            "peer 127.0.0.1:1 claims node_id \"node-b\" but its certificate is CN=node-a, SAN=[]"
        );
        assert_eq!(
            tonic::Status::from(err).code(),
            tonic::Code::PermissionDenied
        );
    }
}
