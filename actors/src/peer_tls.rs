//! Transport security between daemons: mutual TLS for gRPC peers.
//!
//! This module owns everything between a node's PEM files and a tonic server
//! or channel: loading the node certificate, its key and the cluster CA with
//! errors that name the file ([`NodeTlsMaterial::load`]); the rustls
//! configurations (TLS 1.3 only, client certificates required and verified
//! against the cluster CA, ALPN h2); the accept path that performs
//! handshakes concurrently and reports every failed one with the peer's
//! address ([`incoming::PeerIncoming`]); the identity a peer certificate
//! carries ([`identity`]); and the client connector
//! ([`PeerTransport::connect`]), whose check of the peer's certificate
//! names the host dialled and the certificate's names when they differ
//! ([`server_name`]); the configuration in use and its reload on SIGHUP
//! ([`live`]); the certificates' expiry ([`expiry`]). [`PeerTransport`] is
//! the one interface the peer actor uses, whether the cluster runs mTLS
//! or, with `grpc.tls.insecure: true`, plaintext.
//!
//! Every configuration is built with an explicit ring `CryptoProvider`, so
//! nothing here depends on a process-wide default provider being installed.

pub mod connector;
pub mod expiry;
pub mod identity;
pub mod incoming;
pub mod live;
pub mod server_name;

use std::path::{Path, PathBuf};
use std::sync::Arc;

use rustls::client::WebPkiServerVerifier;
use rustls::crypto::CryptoProvider;
use rustls::pki_types::pem::{self, PemObject, SectionKind};
use rustls::pki_types::{CertificateDer, PrivateKeyDer, UnixTime};
use rustls::server::WebPkiClientVerifier;
use rustls::{ClientConfig, RootCertStore, ServerConfig};
use x509_parser::prelude::{FromDer, X509Certificate};

pub use connector::ConnectOptions;
pub use expiry::{CertificateInfo, ExpiryFinding, WhichCertificate};
pub use identity::{identity_matches, IdentityError, PeerIdentity};
pub use incoming::{
    HandshakeFailure, HandshakeFailureReason, IncomingOptions, PeerIncoming, PeerInfo, PeerStream,
};
pub use live::{LiveTls, TlsReloaded};
pub use server_name::HostNotInCertificate;

/// The ALPN protocol gRPC runs over.
const ALPN_H2: &[u8] = b"h2";

/// Which of the three PEM files an error is about. Shown to operators with
/// the config key that names the file.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum TlsFile {
    /// The node certificate (`grpc.tls.cert_file`).
    Certificate,
    /// The node private key (`grpc.tls.key_file`).
    PrivateKey,
    /// The cluster CA certificate (`grpc.tls.ca_file`).
    CaCertificate,
}

impl std::fmt::Display for TlsFile {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            TlsFile::Certificate => "node certificate (grpc.tls.cert_file)",
            TlsFile::PrivateKey => "node private key (grpc.tls.key_file)",
            TlsFile::CaCertificate => "cluster CA certificate (grpc.tls.ca_file)",
        })
    }
}

/// Everything that can go wrong between PEM files and a TLS connection.
/// Each message names the file or the address and says what is wrong.
#[derive(Debug, thiserror::Error)]
pub enum PeerTlsError {
    #[error("{what} {path}: file does not exist")]
    Missing { what: TlsFile, path: PathBuf },

    #[error("{what} {path}: cannot read the file: {source}")]
    Unreadable {
        what: TlsFile,
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },

    #[error("{what} {path}: not a PEM file (no \"-----BEGIN\" line)")]
    NotPem { what: TlsFile, path: PathBuf },

    #[error("{what} {path}: malformed PEM: {detail}")]
    BadPem {
        what: TlsFile,
        path: PathBuf,
        detail: String,
    },

    #[error("{what} {path}: holds no CERTIFICATE block (found: {found})")]
    NoCertificate {
        what: TlsFile,
        path: PathBuf,
        found: String,
    },

    #[error("{what} {path}: holds no private key block (found: {found})")]
    NoPrivateKey {
        what: TlsFile,
        path: PathBuf,
        found: String,
    },

    #[error(
        "{what} {path}: the key is encrypted; steep-repl needs an unencrypted key \
         (protect it with file mode 0600 instead)"
    )]
    EncryptedKey { what: TlsFile, path: PathBuf },

    #[error(
        "{what} {path}: other users may read it (mode {mode:04o}); whoever reads it can \
         speak for this node: chmod 600 {path} (0640 when a group must read it)"
    )]
    KeyReadableByOthers {
        what: TlsFile,
        path: PathBuf,
        mode: u32,
    },

    #[error("{what} {path}: holds {count} private keys, expected exactly one")]
    SeveralKeys {
        what: TlsFile,
        path: PathBuf,
        count: usize,
    },

    #[error("{what} {path}: the key cannot be used: {detail}")]
    UnusableKey {
        what: TlsFile,
        path: PathBuf,
        detail: String,
    },

    #[error("private key {key_path} does not match the certificate {cert_path}")]
    KeyMismatch {
        cert_path: PathBuf,
        key_path: PathBuf,
    },

    #[error("{what} {path}: not a usable certificate: {detail}")]
    BadCertificate {
        what: TlsFile,
        path: PathBuf,
        detail: String,
    },

    #[error(
        "node certificate {cert_path} is not accepted by the cluster CA {ca_path}: {detail} \
         (was it issued by this cluster's `steep-repl tls issue`?)"
    )]
    NotIssuedByCa {
        cert_path: PathBuf,
        ca_path: PathBuf,
        detail: String,
    },

    #[error(
        "node certificate {path}: its extended key usage lacks {missing}; peers use the same \
         certificate as TLS server and client, so it needs serverAuth and clientAuth"
    )]
    MissingKeyUsage {
        path: PathBuf,
        missing: &'static str,
    },

    #[error("cannot build the TLS configuration: {0}")]
    Config(String),

    #[error("peer address {address}: {detail}")]
    BadAddress { address: String, detail: String },

    #[error("cannot connect to peer {address}: {detail}")]
    Connect { address: String, detail: String },
}

/// Where a node's TLS material lives (the `grpc.tls` section of the config).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TlsPaths {
    /// The node certificate (may be followed by intermediates), PEM.
    pub cert_file: PathBuf,
    /// The node private key (PKCS#8, SEC1 or PKCS#1), PEM, unencrypted.
    pub key_file: PathBuf,
    /// The cluster CA certificate(s), PEM.
    pub ca_file: PathBuf,
}

/// A node's certificate chain, key and cluster CA, loaded and checked.
///
/// Loading checks more than the files' syntax: the key must match the
/// certificate, the certificate must be accepted by the CA as a client
/// certificate (which catches a certificate from another cluster or an
/// expired one at start, rather than at the first peer), and it must allow
/// both serverAuth and clientAuth.
pub struct NodeTlsMaterial {
    paths: TlsPaths,
    certificates: CertificateInfo,
    cert_chain: Vec<CertificateDer<'static>>,
    key: PrivateKeyDer<'static>,
    ca_certs: Vec<CertificateDer<'static>>,
    identity: PeerIdentity,
    provider: Arc<CryptoProvider>,
}

impl std::fmt::Debug for NodeTlsMaterial {
    // Never prints the key.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("NodeTlsMaterial")
            .field("identity", &self.identity.to_string())
            .field("chain_len", &self.cert_chain.len())
            .field("ca_certs", &self.ca_certs.len())
            .finish_non_exhaustive()
    }
}

impl NodeTlsMaterial {
    /// Loads and checks the three PEM files.
    pub fn load(paths: &TlsPaths) -> Result<Self, PeerTlsError> {
        let cert_pem = read_file(TlsFile::Certificate, &paths.cert_file)?;
        let key_pem = read_file(TlsFile::PrivateKey, &paths.key_file)?;
        let ca_pem = read_file(TlsFile::CaCertificate, &paths.ca_file)?;
        let material = Self::from_pem(paths, &cert_pem, &key_pem, &ca_pem)?;
        // After the contents: a file that holds no key needs no protection,
        // and its own error says more.
        check_key_permissions(&paths.key_file)?;
        Ok(material)
    }

    /// Builds the material from PEM held in memory. `paths` only names the
    /// sources in error messages.
    pub fn from_pem(
        paths: &TlsPaths,
        cert_pem: &[u8],
        key_pem: &[u8],
        ca_pem: &[u8],
    ) -> Result<Self, PeerTlsError> {
        let cert_chain = parse_certificates(TlsFile::Certificate, &paths.cert_file, cert_pem)?;
        let key = parse_private_key(TlsFile::PrivateKey, &paths.key_file, key_pem)?;
        let ca_certs = parse_certificates(TlsFile::CaCertificate, &paths.ca_file, ca_pem)?;
        let provider = Arc::new(rustls::crypto::ring::default_provider());

        check_key_matches(paths, &cert_chain, &key, &provider)?;
        let roots = root_store(&paths.ca_file, &ca_certs)?;
        check_issued_by_ca(paths, &cert_chain, &roots, &provider)?;
        let identity = check_certificate(&paths.cert_file, &cert_chain[0])?;
        let certificates = certificate_info(paths, &cert_chain[0], &ca_certs, &identity)?;

        Ok(NodeTlsMaterial {
            paths: paths.clone(),
            certificates,
            cert_chain,
            key,
            ca_certs,
            identity,
            provider,
        })
    }

    /// The names of this node's own certificate.
    pub fn identity(&self) -> &PeerIdentity {
        &self.identity
    }

    /// The files this material was read from.
    pub fn paths(&self) -> &TlsPaths {
        &self.paths
    }

    /// Serial and validity of the node certificate and the CA.
    pub fn certificates(&self) -> &CertificateInfo {
        &self.certificates
    }

    /// The server side: TLS 1.3 only, a client certificate is required and
    /// must chain to the cluster CA, ALPN h2.
    pub fn server_config(&self) -> Result<Arc<ServerConfig>, PeerTlsError> {
        let roots = Arc::new(self.roots()?);
        let verifier = WebPkiClientVerifier::builder_with_provider(roots, self.provider.clone())
            .build()
            .map_err(|e| PeerTlsError::Config(format!("client certificate verifier: {e}")))?;
        let mut config = ServerConfig::builder_with_provider(self.provider.clone())
            .with_protocol_versions(&[&rustls::version::TLS13])
            .map_err(|e| PeerTlsError::Config(e.to_string()))?
            .with_client_cert_verifier(verifier)
            .with_single_cert(self.cert_chain.clone(), self.key.clone_key())
            .map_err(|e| PeerTlsError::Config(format!("server certificate: {e}")))?;
        config.alpn_protocols = vec![ALPN_H2.to_vec()];
        Ok(Arc::new(config))
    }

    /// The client side: TLS 1.3 only, trusts only the cluster CA, presents
    /// the node certificate, ALPN h2. A peer certificate without the host
    /// dialled fails with both named ([`HostNotInCertificate`]).
    pub fn client_config(&self) -> Result<Arc<ClientConfig>, PeerTlsError> {
        let verifier = WebPkiServerVerifier::builder_with_provider(
            Arc::new(self.roots()?),
            self.provider.clone(),
        )
        .build()
        .map_err(|e| PeerTlsError::Config(format!("server certificate verifier: {e}")))?;
        let mut config = ClientConfig::builder_with_provider(self.provider.clone())
            .with_protocol_versions(&[&rustls::version::TLS13])
            .map_err(|e| PeerTlsError::Config(e.to_string()))?
            .dangerous()
            .with_custom_certificate_verifier(Arc::new(server_name::NamingServerVerifier::new(
                verifier,
            )))
            .with_client_auth_cert(self.cert_chain.clone(), self.key.clone_key())
            .map_err(|e| PeerTlsError::Config(format!("client certificate: {e}")))?;
        config.alpn_protocols = vec![ALPN_H2.to_vec()];
        Ok(Arc::new(config))
    }

    fn roots(&self) -> Result<RootCertStore, PeerTlsError> {
        root_store(Path::new("(cluster CA)"), &self.ca_certs)
    }
}

/// How this node talks to its peers: mutual TLS (the default) or plaintext
/// (only with `grpc.tls.insecure: true`). One value serves both directions,
/// so the peer actor has a single interface whatever the mode.
#[derive(Clone)]
pub enum PeerTransport {
    /// TLS 1.3 with client certificates, both directions, with the
    /// configuration in use at each handshake (replaced by a reload).
    Mtls(Arc<LiveTls>),
    /// No TLS at all. Peers cannot be identified: handlers see no identity.
    Plaintext,
}

impl std::fmt::Debug for PeerTransport {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            PeerTransport::Mtls(_) => "PeerTransport::Mtls",
            PeerTransport::Plaintext => "PeerTransport::Plaintext",
        })
    }
}

impl PeerTransport {
    /// Mutual TLS from loaded material.
    pub fn mtls(material: &NodeTlsMaterial) -> Result<Self, PeerTlsError> {
        Ok(PeerTransport::Mtls(Arc::new(LiveTls::from_material(
            material,
        )?)))
    }

    /// Mutual TLS with fixed configurations (never reloaded): for tests
    /// that need a client or server set up differently.
    pub fn mtls_with_configs(server: Arc<ServerConfig>, client: Arc<ClientConfig>) -> Self {
        PeerTransport::Mtls(Arc::new(LiveTls::from_configs(server, client)))
    }

    /// Mutual TLS from the three PEM files.
    pub fn mtls_from_files(paths: &TlsPaths) -> Result<Self, PeerTlsError> {
        Self::mtls(&NodeTlsMaterial::load(paths)?)
    }

    /// Plaintext gRPC (`grpc.tls.insecure: true`). The caller is expected to
    /// warn the operator at start.
    pub fn plaintext() -> Self {
        PeerTransport::Plaintext
    }

    /// Whether this transport encrypts and authenticates peers.
    pub fn is_tls(&self) -> bool {
        matches!(self, PeerTransport::Mtls(_))
    }

    /// The certificates in use; `None` in plaintext.
    pub fn certificates(&self) -> Option<CertificateInfo> {
        match self {
            PeerTransport::Mtls(live) => live.certificates(),
            PeerTransport::Plaintext => None,
        }
    }

    /// The names of this node's certificate in use; `None` in plaintext.
    pub fn identity(&self) -> Option<PeerIdentity> {
        match self {
            PeerTransport::Mtls(live) => live.identity(),
            PeerTransport::Plaintext => None,
        }
    }

    /// Reads the certificate files again and uses them for every new
    /// connection from now on (see [`live`]). `Ok(None)` in plaintext; on an
    /// error the material in use stays.
    pub fn reload(&self) -> Result<Option<TlsReloaded>, PeerTlsError> {
        match self {
            PeerTransport::Mtls(live) => live.reload().map(Some),
            PeerTransport::Plaintext => Ok(None),
        }
    }

    /// The accept side: wraps a bound listener into a stream of connections
    /// for `tonic::transport::Server::serve_with_incoming`; every failed
    /// handshake is passed to `on_failure` with the peer's address (from
    /// the accept loop: keep it quick and non-blocking).
    pub fn incoming<F>(
        &self,
        listener: tokio::net::TcpListener,
        options: IncomingOptions,
        on_failure: F,
    ) -> PeerIncoming
    where
        F: Fn(HandshakeFailure) + Send + Sync + 'static,
    {
        PeerIncoming::new(listener, self.live(), options, on_failure)
    }

    /// A channel to the peer at `host:port`, connected now: fails if the
    /// peer cannot be reached within `options.connect_timeout`. Under mTLS
    /// the server certificate must carry `host` (DNS or IP SAN).
    pub async fn connect(
        &self,
        host: &str,
        port: u16,
        options: &ConnectOptions,
    ) -> Result<tonic::transport::Channel, PeerTlsError> {
        connector::connect(self.live(), host, port, options).await
    }

    /// A channel to the peer at `host:port` that connects on first use (and
    /// reconnects after a loss), for peers that may be down right now.
    pub fn connect_lazy(
        &self,
        host: &str,
        port: u16,
        options: &ConnectOptions,
    ) -> Result<tonic::transport::Channel, PeerTlsError> {
        connector::connect_lazy(self.live(), host, port, options)
    }

    fn live(&self) -> Option<Arc<LiveTls>> {
        match self {
            PeerTransport::Mtls(live) => Some(live.clone()),
            PeerTransport::Plaintext => None,
        }
    }
}

fn read_file(what: TlsFile, path: &Path) -> Result<Vec<u8>, PeerTlsError> {
    std::fs::read(path).map_err(|source| {
        if source.kind() == std::io::ErrorKind::NotFound {
            PeerTlsError::Missing {
                what,
                path: path.to_owned(),
            }
        } else {
            PeerTlsError::Unreadable {
                what,
                path: path.to_owned(),
                source,
            }
        }
    })
}

/// A private key others can read is refused, as ssh and PostgreSQL refuse
/// theirs: the file's "other" bits must all be clear.
#[cfg(unix)]
fn check_key_permissions(path: &Path) -> Result<(), PeerTlsError> {
    use std::os::unix::fs::PermissionsExt;
    let mode = std::fs::metadata(path)
        .map_err(|source| PeerTlsError::Unreadable {
            what: TlsFile::PrivateKey,
            path: path.to_owned(),
            source,
        })?
        .permissions()
        .mode()
        & 0o7777;
    if mode & 0o007 != 0 {
        return Err(PeerTlsError::KeyReadableByOthers {
            what: TlsFile::PrivateKey,
            path: path.to_owned(),
            mode,
        });
    }
    Ok(())
}

#[cfg(not(unix))]
fn check_key_permissions(_: &Path) -> Result<(), PeerTlsError> {
    Ok(())
}

/// Every PEM section of a file that rustls knows, in order. Sections of
/// unknown kinds (e.g. "ENCRYPTED PRIVATE KEY") are skipped by the parser
/// and looked for separately by the callers.
fn pem_sections(
    what: TlsFile,
    path: &Path,
    data: &[u8],
) -> Result<Vec<(SectionKind, Vec<u8>)>, PeerTlsError> {
    if !contains(data, b"-----BEGIN ") {
        return Err(PeerTlsError::NotPem {
            what,
            path: path.to_owned(),
        });
    }
    <(SectionKind, Vec<u8>)>::pem_slice_iter(data)
        .collect::<Result<Vec<_>, pem::Error>>()
        .map_err(|e| PeerTlsError::BadPem {
            what,
            path: path.to_owned(),
            detail: e.to_string(),
        })
}

fn describe_sections(sections: &[(SectionKind, Vec<u8>)], data: &[u8]) -> String {
    let mut kinds: Vec<String> = sections.iter().map(|(k, _)| format!("{k:?}")).collect();
    if contains(data, b"-----BEGIN ENCRYPTED PRIVATE KEY") {
        kinds.push("EncryptedPrivateKey".into());
    }
    if kinds.is_empty() {
        "no block rustls knows".into()
    } else {
        kinds.join(", ")
    }
}

fn parse_certificates(
    what: TlsFile,
    path: &Path,
    data: &[u8],
) -> Result<Vec<CertificateDer<'static>>, PeerTlsError> {
    let sections = pem_sections(what, path, data)?;
    let certs: Vec<CertificateDer<'static>> = sections
        .iter()
        .filter(|(kind, _)| *kind == SectionKind::Certificate)
        .map(|(_, der)| CertificateDer::from(der.clone()))
        .collect();
    if certs.is_empty() {
        return Err(PeerTlsError::NoCertificate {
            what,
            path: path.to_owned(),
            found: describe_sections(&sections, data),
        });
    }
    Ok(certs)
}

fn parse_private_key(
    what: TlsFile,
    path: &Path,
    data: &[u8],
) -> Result<PrivateKeyDer<'static>, PeerTlsError> {
    let sections = pem_sections(what, path, data)?;
    let mut keys: Vec<PrivateKeyDer<'static>> = sections
        .iter()
        .filter_map(|(kind, der)| match kind {
            SectionKind::PrivateKey => Some(PrivateKeyDer::Pkcs8(der.clone().into())),
            SectionKind::EcPrivateKey => Some(PrivateKeyDer::Sec1(der.clone().into())),
            SectionKind::RsaPrivateKey => Some(PrivateKeyDer::Pkcs1(der.clone().into())),
            _ => None,
        })
        .collect();
    match keys.len() {
        1 => Ok(keys.remove(0)),
        0 if contains(data, b"-----BEGIN ENCRYPTED PRIVATE KEY") => {
            Err(PeerTlsError::EncryptedKey {
                what,
                path: path.to_owned(),
            })
        }
        0 => Err(PeerTlsError::NoPrivateKey {
            what,
            path: path.to_owned(),
            found: describe_sections(&sections, data),
        }),
        count => Err(PeerTlsError::SeveralKeys {
            what,
            path: path.to_owned(),
            count,
        }),
    }
}

fn root_store(
    ca_path: &Path,
    ca_certs: &[CertificateDer<'static>],
) -> Result<RootCertStore, PeerTlsError> {
    let mut roots = RootCertStore::empty();
    for cert in ca_certs {
        roots
            .add(cert.clone())
            .map_err(|e| PeerTlsError::BadCertificate {
                what: TlsFile::CaCertificate,
                path: ca_path.to_owned(),
                detail: e.to_string(),
            })?;
    }
    Ok(roots)
}

fn check_key_matches(
    paths: &TlsPaths,
    cert_chain: &[CertificateDer<'static>],
    key: &PrivateKeyDer<'static>,
    provider: &CryptoProvider,
) -> Result<(), PeerTlsError> {
    match rustls::sign::CertifiedKey::from_der(cert_chain.to_vec(), key.clone_key(), provider) {
        Ok(_) => Ok(()),
        Err(rustls::Error::InconsistentKeys(rustls::InconsistentKeys::KeyMismatch)) => {
            Err(PeerTlsError::KeyMismatch {
                cert_path: paths.cert_file.clone(),
                key_path: paths.key_file.clone(),
            })
        }
        // The certificate could not be parsed to compare keys.
        Err(e @ rustls::Error::InvalidCertificate(_)) => Err(PeerTlsError::BadCertificate {
            what: TlsFile::Certificate,
            path: paths.cert_file.clone(),
            detail: e.to_string(),
        }),
        Err(e) => Err(PeerTlsError::UnusableKey {
            what: TlsFile::PrivateKey,
            path: paths.key_file.clone(),
            detail: e.to_string(),
        }),
    }
}

/// Runs the same verification a peer will run on our certificate when we
/// dial it, so a certificate from another cluster fails at start.
fn check_issued_by_ca(
    paths: &TlsPaths,
    cert_chain: &[CertificateDer<'static>],
    roots: &RootCertStore,
    provider: &Arc<CryptoProvider>,
) -> Result<(), PeerTlsError> {
    let verifier =
        WebPkiClientVerifier::builder_with_provider(Arc::new(roots.clone()), provider.clone())
            .build()
            .map_err(|e| PeerTlsError::BadCertificate {
                what: TlsFile::CaCertificate,
                path: paths.ca_file.clone(),
                detail: e.to_string(),
            })?;
    // Also build the server-side verifier: it rejects a CA store it cannot use.
    WebPkiServerVerifier::builder_with_provider(Arc::new(roots.clone()), provider.clone())
        .build()
        .map_err(|e| PeerTlsError::BadCertificate {
            what: TlsFile::CaCertificate,
            path: paths.ca_file.clone(),
            detail: e.to_string(),
        })?;
    verifier
        .verify_client_cert(&cert_chain[0], &cert_chain[1..], UnixTime::now())
        .map(|_| ())
        .map_err(|e| PeerTlsError::NotIssuedByCa {
            cert_path: paths.cert_file.clone(),
            ca_path: paths.ca_file.clone(),
            detail: e.to_string(),
        })
}

/// Reads the node certificate's names and checks its extended key usage.
fn check_certificate(
    path: &Path,
    end_entity: &CertificateDer<'static>,
) -> Result<PeerIdentity, PeerTlsError> {
    let bad = |detail: String| PeerTlsError::BadCertificate {
        what: TlsFile::Certificate,
        path: path.to_owned(),
        detail,
    };
    let (_, cert) =
        X509Certificate::from_der(end_entity.as_ref()).map_err(|e| bad(e.to_string()))?;
    let eku = cert
        .extended_key_usage()
        .map_err(|e| bad(format!("extended key usage: {e}")))?;
    // No EKU extension at all means "any purpose" (RFC 5280 4.2.1.12).
    if let Some(eku) = eku {
        let eku = eku.value;
        if !eku.any && !eku.server_auth {
            return Err(PeerTlsError::MissingKeyUsage {
                path: path.to_owned(),
                missing: "serverAuth",
            });
        }
        if !eku.any && !eku.client_auth {
            return Err(PeerTlsError::MissingKeyUsage {
                path: path.to_owned(),
                missing: "clientAuth",
            });
        }
    }
    PeerIdentity::from_der(end_entity.as_ref()).map_err(|e| bad(e.to_string()))
}

/// Serial and validity of what was loaded, for the expiry metric and
/// warnings and for the audit of a reload.
fn certificate_info(
    paths: &TlsPaths,
    end_entity: &CertificateDer<'static>,
    ca_certs: &[CertificateDer<'static>],
    identity: &PeerIdentity,
) -> Result<CertificateInfo, PeerTlsError> {
    fn not_after(
        what: TlsFile,
        path: &Path,
        der: &CertificateDer<'static>,
    ) -> Result<(chrono::DateTime<chrono::Utc>, String), PeerTlsError> {
        let bad = |detail: String| PeerTlsError::BadCertificate {
            what,
            path: path.to_owned(),
            detail,
        };
        let (_, cert) = X509Certificate::from_der(der.as_ref()).map_err(|e| bad(e.to_string()))?;
        let timestamp = cert.validity().not_after.timestamp();
        let when = chrono::DateTime::from_timestamp(timestamp, 0)
            .ok_or_else(|| bad(format!("notAfter {timestamp} is out of range")))?;
        Ok((when, cert.raw_serial_as_string()))
    }
    let (node_not_after, serial) = not_after(TlsFile::Certificate, &paths.cert_file, end_entity)?;
    let mut ca_not_after = None;
    for der in ca_certs {
        let (when, _) = not_after(TlsFile::CaCertificate, &paths.ca_file, der)?;
        ca_not_after = Some(
            ca_not_after.map_or(when, |earliest: chrono::DateTime<chrono::Utc>| {
                earliest.min(when)
            }),
        );
    }
    Ok(CertificateInfo {
        cert_file: paths.cert_file.clone(),
        ca_file: paths.ca_file.clone(),
        serial,
        subject: identity.to_string(),
        not_after: node_not_after,
        // parse_certificates refuses a CA file without a certificate.
        ca_not_after: ca_not_after.unwrap_or(node_not_after),
    })
}

fn contains(haystack: &[u8], needle: &[u8]) -> bool {
    haystack.windows(needle.len()).any(|w| w == needle)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::pki::testing::TestCa;
    use rcgen::ExtendedKeyUsagePurpose;

    fn paths_in(dir: &Path) -> TlsPaths {
        TlsPaths {
            cert_file: dir.join("node.crt"),
            key_file: dir.join("node.key"),
            ca_file: dir.join("ca.crt"),
        }
    }

    fn write_node(dir: &Path) -> TlsPaths {
        let files = TestCa::new("cluster")
            .issue("node-a", &["127.0.0.1"])
            .write_to(dir, "node");
        TlsPaths {
            cert_file: files.cert,
            key_file: files.key,
            ca_file: files.ca,
        }
    }

    #[test]
    fn valid_files_load_and_build_both_configs() {
        let dir = tempfile::tempdir().unwrap();
        let material = NodeTlsMaterial::load(&write_node(dir.path())).unwrap();
        assert_eq!(material.identity().common_name.as_deref(), Some("node-a"));
        let server = material.server_config().unwrap();
        assert_eq!(server.alpn_protocols, [b"h2".to_vec()]);
        let client = material.client_config().unwrap();
        assert_eq!(client.alpn_protocols, [b"h2".to_vec()]);
        assert!(PeerTransport::mtls(&material).unwrap().is_tls());
        // Debug output never shows key material.
        assert!(!format!("{material:?}").contains("PRIVATE"));
    }

    #[cfg(unix)]
    #[test]
    fn a_key_other_users_can_read_is_refused_with_the_fix() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        let paths = write_node(dir.path());
        for mode in [0o644, 0o604, 0o601] {
            std::fs::set_permissions(&paths.key_file, std::fs::Permissions::from_mode(mode))
                .unwrap();
            let err = NodeTlsMaterial::load(&paths).unwrap_err();
            assert!(
                matches!(err, PeerTlsError::KeyReadableByOthers { mode: m, .. } if m == mode),
                "{err}"
            );
            let msg = err.to_string();
            assert!(
                msg.contains(&format!("mode {mode:04o}"))
                    && msg.contains(&format!("chmod 600 {}", paths.key_file.display())),
                "{msg}"
            );
        }
        // The owner alone, or with a group that must read it: accepted.
        for mode in [0o600, 0o400, 0o640] {
            std::fs::set_permissions(&paths.key_file, std::fs::Permissions::from_mode(mode))
                .unwrap();
            NodeTlsMaterial::load(&paths).unwrap_or_else(|e| panic!("{mode:o}: {e}"));
        }
    }

    #[test]
    fn a_missing_file_is_named() {
        let dir = tempfile::tempdir().unwrap();
        let paths = write_node(dir.path());
        std::fs::remove_file(&paths.ca_file).unwrap();
        let err = NodeTlsMaterial::load(&paths).unwrap_err();
        assert!(matches!(
            err,
            PeerTlsError::Missing {
                what: TlsFile::CaCertificate,
                ..
            }
        ));
        let msg = err.to_string();
        assert!(msg.contains("grpc.tls.ca_file"), "{msg}");
        assert!(msg.contains(&paths.ca_file.display().to_string()), "{msg}");
        assert!(msg.contains("does not exist"), "{msg}");
    }

    #[test]
    fn a_directory_in_place_of_a_file_is_unreadable() {
        let dir = tempfile::tempdir().unwrap();
        let mut paths = write_node(dir.path());
        paths.key_file = dir.path().to_owned();
        let err = NodeTlsMaterial::load(&paths).unwrap_err();
        assert!(
            matches!(
                err,
                PeerTlsError::Unreadable {
                    what: TlsFile::PrivateKey,
                    ..
                }
            ),
            "{err}"
        );
    }

    #[test]
    fn a_file_without_pem_is_not_pem() {
        let dir = tempfile::tempdir().unwrap();
        let paths = write_node(dir.path());
        std::fs::write(&paths.cert_file, b"\x30\x82\x01\x00 DER bytes").unwrap();
        let err = NodeTlsMaterial::load(&paths).unwrap_err();
        assert!(
            matches!(
                err,
                PeerTlsError::NotPem {
                    what: TlsFile::Certificate,
                    ..
                }
            ),
            "{err}"
        );
        assert!(err.to_string().contains("not a PEM file"));
    }

    #[test]
    fn a_truncated_pem_block_is_malformed() {
        let dir = tempfile::tempdir().unwrap();
        let paths = write_node(dir.path());
        let pem = std::fs::read_to_string(&paths.cert_file).unwrap();
        std::fs::write(&paths.cert_file, &pem[..pem.len() / 2]).unwrap();
        let err = NodeTlsMaterial::load(&paths).unwrap_err();
        assert!(matches!(err, PeerTlsError::BadPem { .. }), "{err}");
    }

    #[test]
    fn a_key_given_as_certificate_says_what_it_found() {
        let dir = tempfile::tempdir().unwrap();
        let paths = write_node(dir.path());
        std::fs::copy(&paths.key_file, &paths.cert_file).unwrap();
        let err = NodeTlsMaterial::load(&paths).unwrap_err();
        assert!(matches!(err, PeerTlsError::NoCertificate { .. }), "{err}");
        assert!(err.to_string().contains("found: PrivateKey"), "{err}");
    }

    #[test]
    fn a_certificate_given_as_key_has_no_private_key() {
        let dir = tempfile::tempdir().unwrap();
        let paths = write_node(dir.path());
        std::fs::copy(&paths.cert_file, &paths.key_file).unwrap();
        let err = NodeTlsMaterial::load(&paths).unwrap_err();
        assert!(matches!(err, PeerTlsError::NoPrivateKey { .. }), "{err}");
    }

    #[test]
    fn an_encrypted_key_is_refused_with_advice() {
        let dir = tempfile::tempdir().unwrap();
        let paths = write_node(dir.path());
        std::fs::write(
            &paths.key_file,
            "-----BEGIN ENCRYPTED PRIVATE KEY-----\nMIIB\n-----END ENCRYPTED PRIVATE KEY-----\n",
        )
        .unwrap();
        let err = NodeTlsMaterial::load(&paths).unwrap_err();
        assert!(matches!(err, PeerTlsError::EncryptedKey { .. }), "{err}");
        assert!(err.to_string().contains("unencrypted"));
    }

    #[test]
    fn a_key_of_another_certificate_does_not_match() {
        let dir = tempfile::tempdir().unwrap();
        let paths = write_node(dir.path());
        let other = TestCa::new("cluster").issue("node-b", &[]);
        std::fs::write(&paths.key_file, other.key_pem).unwrap();
        let err = NodeTlsMaterial::load(&paths).unwrap_err();
        assert!(matches!(err, PeerTlsError::KeyMismatch { .. }), "{err}");
        assert!(err.to_string().contains("does not match"));
    }

    #[test]
    fn a_certificate_from_another_cluster_is_refused_at_load() {
        let dir = tempfile::tempdir().unwrap();
        let paths = write_node(dir.path());
        std::fs::write(&paths.ca_file, TestCa::new("other").cert_pem).unwrap();
        let err = NodeTlsMaterial::load(&paths).unwrap_err();
        assert!(matches!(err, PeerTlsError::NotIssuedByCa { .. }), "{err}");
    }

    #[test]
    fn a_server_only_certificate_is_refused_at_load() {
        let dir = tempfile::tempdir().unwrap();
        let ca = TestCa::new("cluster");
        let node = ca.issue_custom(
            "node-a",
            &["node-a"],
            &[],
            &[ExtendedKeyUsagePurpose::ServerAuth],
        );
        let paths = paths_in(dir.path());
        node.write_to(dir.path(), "node");
        let err = NodeTlsMaterial::load(&paths).unwrap_err();
        // webpki refuses it as a client certificate, which is what every
        // peer we dial would do.
        assert!(matches!(err, PeerTlsError::NotIssuedByCa { .. }), "{err}");
        assert!(err.to_string().contains("client authentication"), "{err}");
    }

    #[test]
    fn a_client_only_certificate_lacks_server_auth() {
        let dir = tempfile::tempdir().unwrap();
        let ca = TestCa::new("cluster");
        let node = ca.issue_custom(
            "node-a",
            &["node-a"],
            &[],
            &[ExtendedKeyUsagePurpose::ClientAuth],
        );
        let paths = paths_in(dir.path());
        node.write_to(dir.path(), "node");
        let err = NodeTlsMaterial::load(&paths).unwrap_err();
        assert!(
            matches!(
                err,
                PeerTlsError::MissingKeyUsage {
                    missing: "serverAuth",
                    ..
                }
            ),
            "{err}"
        );
    }

    #[test]
    fn plaintext_is_not_tls() {
        assert!(!PeerTransport::plaintext().is_tls());
    }
}
