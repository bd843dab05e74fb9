//! The cluster's small private PKI: certificate generation for
//! `steep-repl tls init` and `tls issue`, and (behind the `test-certs`
//! feature) the same issuance in memory for tests and benches.
//!
//! This module owns the files of a cluster's small private PKI: the cluster
//! CA (`ca.crt`, `ca.key`) and one certificate and key per node
//! (`<node_id>.crt`, `<node_id>.key`), all PEM in one directory. A node
//! certificate is used both as TLS server and as TLS client between peers,
//! so it carries serverAuth and clientAuth, CN = node_id, and as SANs the
//! node_id and every host the node is reached at. Nothing here ever
//! overwrites a file: each is created with `create_new`, keys with mode
//! 0600 from the first byte, and a partial result is removed.
//!
//! The CLI wires these functions to the commands; [`crate::peer_tls`] reads
//! the files back. [`ca_params`] and [`node_params`] say once what a CA and
//! a node certificate are; `testing` issues them without files.

#[cfg(any(test, feature = "test-certs"))]
pub mod testing;

use std::fs::{self, File, OpenOptions};
use std::io::Write;
use std::net::IpAddr;
use std::path::{Path, PathBuf};

use rcgen::{
    BasicConstraints, CertificateParams, DistinguishedName, DnType, ExtendedKeyUsagePurpose, IsCa,
    Issuer, KeyPair, KeyUsagePurpose, PublicKeyData, SanType,
};
use time::{Duration, OffsetDateTime};
use x509_parser::prelude::{FromDer, X509Certificate};

/// File name of the cluster CA certificate inside the certificate directory.
pub const CA_CERT_FILE: &str = "ca.crt";
/// File name of the cluster CA private key inside the certificate directory.
pub const CA_KEY_FILE: &str = "ca.key";

/// Longest node_id accepted: one DNS label, so it can always be a DNS SAN.
const MAX_NODE_ID_LEN: usize = 63;

/// Certificates start being valid a little in the past, so a peer whose
/// clock is slightly behind does not refuse a certificate just issued.
const BACKDATE: Duration = Duration::hours(1);

/// What `init_ca` created.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CaFiles {
    /// The CA certificate (`ca.crt`); distribute it to every node.
    pub cert: PathBuf,
    /// The CA private key (`ca.key`, mode 0600); keep it off the nodes if
    /// you can, it is needed only to issue node certificates.
    pub key: PathBuf,
    /// When the CA certificate expires.
    pub not_after: OffsetDateTime,
}

/// What `issue_node` created.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct NodeFiles {
    /// The node certificate (`<node_id>.crt`): `grpc.tls.cert_file`.
    pub cert: PathBuf,
    /// The node private key (`<node_id>.key`, mode 0600): `grpc.tls.key_file`.
    pub key: PathBuf,
    /// The CA certificate that signed it: `grpc.tls.ca_file`.
    pub ca_cert: PathBuf,
    /// The SANs written into the certificate, as text.
    pub subject_alt_names: Vec<String>,
    /// When the node certificate expires.
    pub not_after: OffsetDateTime,
}

/// Why a certificate could not be created. Messages name the file or the
/// value at fault and, where there is one, the fix.
#[derive(Debug, thiserror::Error)]
pub enum CertError {
    #[error("invalid node_id {node_id:?}: {reason}")]
    InvalidNodeId { node_id: String, reason: String },

    #[error("invalid host {host:?}: {reason}")]
    InvalidHost { host: String, reason: String },

    #[error("invalid cluster name {name:?}: {reason}")]
    InvalidClusterName { name: String, reason: String },

    #[error("invalid validity of {days} days: must be between 1 and 36500")]
    InvalidValidity { days: u32 },

    #[error("cannot create certificate directory {path}: {source}")]
    CreateDir {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },

    #[error(
        "{path} already exists; steep-repl never overwrites certificates or keys \
         (move it away first if you mean to replace it)"
    )]
    Exists { path: PathBuf },

    #[error("cannot write {path}: {source}")]
    Write {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },

    #[error("{path} does not exist; create the cluster CA first with `steep-repl tls init`")]
    MissingCa { path: PathBuf },

    #[error("cannot read {path}: {source}")]
    Read {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },

    #[error("{path} is not a usable CA {what}: {detail}")]
    BadCa {
        path: PathBuf,
        what: &'static str,
        detail: String,
    },

    #[error("CA key {key} does not belong to the CA certificate {cert}")]
    CaKeyMismatch { cert: PathBuf, key: PathBuf },

    #[error(
        "the CA {cert} expires on {ca_not_after}, before the {days} days asked for the node \
         certificate; ask for fewer days or create a new CA"
    )]
    CaExpiresFirst {
        cert: PathBuf,
        ca_not_after: OffsetDateTime,
        days: u32,
    },

    #[error("certificate generation failed: {0}")]
    Generate(#[from] rcgen::Error),
}

/// Creates the cluster CA in `dir`: `ca.crt` (a CA certificate, key usage
/// keyCertSign + cRLSign, basic constraints CA with path length 0, CN =
/// `cluster_name`) and `ca.key` (ECDSA P-256, mode 0600). `dir` is created
/// with mode 0700 when missing. Refuses if either file exists.
pub fn init_ca(dir: &Path, cluster_name: &str, validity_days: u32) -> Result<CaFiles, CertError> {
    validate_cluster_name(cluster_name)?;
    let (not_before, not_after) = validity(validity_days)?;
    let cert_path = dir.join(CA_CERT_FILE);
    let key_path = dir.join(CA_KEY_FILE);
    ensure_dir(dir)?;
    refuse_existing(&[&cert_path, &key_path])?;

    let mut params = ca_params(cluster_name);
    params.not_before = not_before;
    params.not_after = not_after;

    let key = KeyPair::generate()?;
    let cert = params.self_signed(&key)?;
    write_pair(
        (&cert_path, cert.pem().as_bytes()),
        (&key_path, key.serialize_pem().as_bytes()),
    )?;
    Ok(CaFiles {
        cert: cert_path,
        key: key_path,
        not_after,
    })
}

/// Issues the certificate of node `node_id`, signed by the CA in `dir`:
/// `<node_id>.crt` and `<node_id>.key` (mode 0600) beside it. CN = node_id;
/// SANs = node_id (as a DNS name when it is one) and every host given (IP
/// addresses as IP SANs, names as DNS SANs); extended key usage serverAuth
/// and clientAuth. Refuses if either file exists.
pub fn issue_node<H: AsRef<str>>(
    dir: &Path,
    node_id: &str,
    hosts: &[H],
    validity_days: u32,
) -> Result<NodeFiles, CertError> {
    validate_node_id(node_id)?;
    let sans = subject_alt_names(node_id, hosts)?;
    let (not_before, not_after) = validity(validity_days)?;
    let cert_path = dir.join(format!("{node_id}.crt"));
    let key_path = dir.join(format!("{node_id}.key"));
    refuse_existing(&[&cert_path, &key_path])?;

    let ca = load_ca(dir)?;
    if not_after > ca.not_after {
        return Err(CertError::CaExpiresFirst {
            cert: ca.cert_path,
            ca_not_after: ca.not_after,
            days: validity_days,
        });
    }

    let mut params = node_params(node_id, sans.iter().map(|san| san.rcgen.clone()).collect());
    params.not_before = not_before;
    params.not_after = not_after;

    let key = KeyPair::generate()?;
    let cert = params.signed_by(&key, &ca.issuer)?;
    write_pair(
        (&cert_path, cert.pem().as_bytes()),
        (&key_path, key.serialize_pem().as_bytes()),
    )?;
    Ok(NodeFiles {
        cert: cert_path,
        key: key_path,
        ca_cert: dir.join(CA_CERT_FILE),
        subject_alt_names: sans.into_iter().map(|san| san.text).collect(),
        not_after,
    })
}

/// What a cluster CA is: CN = `cluster_name`, O = steep-repl, a CA of path
/// length 0 (it signs node certificates, never another CA) whose key signs
/// certificates and CRLs. Validity is the caller's.
pub(crate) fn ca_params(cluster_name: &str) -> CertificateParams {
    let mut params = CertificateParams::default();
    params.distinguished_name = DistinguishedName::new();
    params
        .distinguished_name
        .push(DnType::CommonName, cluster_name);
    params
        .distinguished_name
        .push(DnType::OrganizationName, "steep-repl");
    params.is_ca = IsCa::Ca(BasicConstraints::Constrained(0));
    params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
    params
}

/// What a node certificate is: CN = `cn`, the given SANs, not a CA, a
/// digital-signature key used as TLS server and as TLS client between peers,
/// with the issuer's key identifier. Validity is the caller's.
pub(crate) fn node_params(cn: &str, sans: Vec<SanType>) -> CertificateParams {
    let mut params = CertificateParams::default();
    params.distinguished_name = DistinguishedName::new();
    params.distinguished_name.push(DnType::CommonName, cn);
    params.subject_alt_names = sans;
    params.is_ca = IsCa::ExplicitNoCa;
    params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
    params.extended_key_usages = vec![
        ExtendedKeyUsagePurpose::ServerAuth,
        ExtendedKeyUsagePurpose::ClientAuth,
    ];
    params.use_authority_key_identifier_extension = true;
    params
}

/// Checks a node_id: 1 to 63 characters from `[A-Za-z0-9._-]`. It becomes
/// a file name and a certificate name, so nothing else is allowed; `ca` is
/// taken by the CA's own files.
pub fn validate_node_id(node_id: &str) -> Result<(), CertError> {
    let invalid = |reason: &str| CertError::InvalidNodeId {
        node_id: node_id.to_owned(),
        reason: reason.to_owned(),
    };
    if node_id.is_empty() {
        return Err(invalid("it is empty"));
    }
    if node_id.len() > MAX_NODE_ID_LEN {
        return Err(invalid("it is longer than 63 characters"));
    }
    if let Some(bad) = node_id
        .chars()
        .find(|c| !(c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-')))
    {
        return Err(invalid(&format!(
            "{bad:?} is not allowed; use letters, digits, '.', '_' and '-'"
        )));
    }
    if node_id == "." || node_id == ".." {
        return Err(invalid("it is not a usable file name"));
    }
    // Case-insensitive: on macOS and Windows "CA.crt" is "ca.crt".
    if node_id.eq_ignore_ascii_case("ca") {
        return Err(invalid("\"ca\" is reserved for the cluster CA's files"));
    }
    Ok(())
}

fn validate_cluster_name(name: &str) -> Result<(), CertError> {
    let invalid = |reason: &str| CertError::InvalidClusterName {
        name: name.to_owned(),
        reason: reason.to_owned(),
    };
    if name.trim().is_empty() {
        return Err(invalid("it is empty"));
    }
    if name.chars().any(char::is_control) {
        return Err(invalid("it contains control characters"));
    }
    // X.520 ub-common-name.
    if name.chars().count() > 64 {
        return Err(invalid("it is longer than 64 characters"));
    }
    Ok(())
}

/// A SAN both as rcgen wants it and as the operator reads it.
struct San {
    rcgen: SanType,
    text: String,
}

fn subject_alt_names<H: AsRef<str>>(node_id: &str, hosts: &[H]) -> Result<Vec<San>, CertError> {
    let mut sans: Vec<San> = Vec::new();
    let mut push = |san: San| {
        if !sans.iter().any(|s| s.rcgen == san.rcgen) {
            sans.push(san);
        }
    };
    // The node_id is always the CN; as a SAN only where it is a valid DNS
    // name (an IP-looking or odd node_id would make an invalid SAN).
    if let Some(san) = dns_san(node_id) {
        push(san);
    }
    for host in hosts {
        let raw = host.as_ref();
        let host = raw.trim().trim_start_matches('[').trim_end_matches(']');
        if host.is_empty() {
            return Err(CertError::InvalidHost {
                host: raw.to_owned(),
                reason: "it is empty".into(),
            });
        }
        if let Ok(ip) = host.parse::<IpAddr>() {
            push(San {
                rcgen: SanType::IpAddress(ip),
                text: ip.to_string(),
            });
        } else if let Some(san) = dns_san(host) {
            push(san);
        } else {
            return Err(CertError::InvalidHost {
                host: raw.to_owned(),
                reason: "neither an IP address nor a valid DNS name".into(),
            });
        }
    }
    Ok(sans)
}

fn dns_san(name: &str) -> Option<San> {
    rustls_pki_types::DnsName::try_from(name).ok()?;
    let ia5 = name.to_owned().try_into().ok()?;
    Some(San {
        rcgen: SanType::DnsName(ia5),
        text: name.to_owned(),
    })
}

fn validity(days: u32) -> Result<(OffsetDateTime, OffsetDateTime), CertError> {
    if !(1..=36_500).contains(&days) {
        return Err(CertError::InvalidValidity { days });
    }
    let now = OffsetDateTime::now_utc();
    Ok((now - BACKDATE, now + Duration::days(i64::from(days))))
}

/// The CA as loaded from `dir`, ready to sign.
struct LoadedCa {
    issuer: Issuer<'static, KeyPair>,
    cert_path: PathBuf,
    not_after: OffsetDateTime,
}

fn load_ca(dir: &Path) -> Result<LoadedCa, CertError> {
    let cert_path = dir.join(CA_CERT_FILE);
    let key_path = dir.join(CA_KEY_FILE);
    let cert_pem = read_ca_file(&cert_path)?;
    let key_pem = read_ca_file(&key_path)?;

    let bad_cert = |detail: String| CertError::BadCa {
        path: cert_path.clone(),
        what: "certificate",
        detail,
    };
    let key = KeyPair::from_pem(&key_pem).map_err(|e| CertError::BadCa {
        path: key_path.clone(),
        what: "key",
        detail: e.to_string(),
    })?;
    let pem = x509_parser::pem::parse_x509_pem(cert_pem.as_bytes())
        .map_err(|e| bad_cert(format!("not a PEM certificate ({e})")))?
        .1;
    if pem.label != "CERTIFICATE" {
        return Err(bad_cert(format!(
            "holds a {} block, not a CERTIFICATE",
            pem.label
        )));
    }
    let (_, x509) =
        X509Certificate::from_der(&pem.contents).map_err(|e| bad_cert(e.to_string()))?;
    if !x509.is_ca() {
        return Err(bad_cert(
            "it is not a CA certificate (basic constraints)".into(),
        ));
    }
    // Signing with a key that is not the certificate's would produce node
    // certificates no peer accepts; say so now.
    if x509.public_key().raw != key.subject_public_key_info().as_slice() {
        return Err(CertError::CaKeyMismatch {
            cert: cert_path,
            key: key_path,
        });
    }
    let not_after = x509.validity().not_after.to_datetime();
    if not_after <= OffsetDateTime::now_utc() {
        return Err(bad_cert(format!("it expired on {not_after}")));
    }
    let issuer = Issuer::from_ca_cert_der(&pem.contents.clone().into(), key)
        .map_err(|e| bad_cert(e.to_string()))?;
    Ok(LoadedCa {
        issuer,
        cert_path,
        not_after,
    })
}

fn read_ca_file(path: &Path) -> Result<String, CertError> {
    fs::read_to_string(path).map_err(|source| {
        if source.kind() == std::io::ErrorKind::NotFound {
            CertError::MissingCa {
                path: path.to_owned(),
            }
        } else {
            CertError::Read {
                path: path.to_owned(),
                source,
            }
        }
    })
}

fn ensure_dir(dir: &Path) -> Result<(), CertError> {
    let mut builder = fs::DirBuilder::new();
    builder.recursive(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::DirBuilderExt;
        // Only directories created here get 0700; an existing one keeps
        // the mode its owner chose.
        builder.mode(0o700);
    }
    builder.create(dir).map_err(|source| CertError::CreateDir {
        path: dir.to_owned(),
        source,
    })
}

fn refuse_existing(paths: &[&Path]) -> Result<(), CertError> {
    match paths.iter().find(|p| p.symlink_metadata().is_ok()) {
        Some(path) => Err(CertError::Exists {
            path: path.to_path_buf(),
        }),
        None => Ok(()),
    }
}

/// Writes a certificate (mode 0644) and its key (mode 0600). Each file is
/// created new (never truncating one that appeared meanwhile); if the second
/// cannot be written, the first is removed so no half pair is left.
fn write_pair(cert: (&Path, &[u8]), key: (&Path, &[u8])) -> Result<(), CertError> {
    write_new(key.0, key.1, 0o600)?;
    if let Err(e) = write_new(cert.0, cert.1, 0o644) {
        let _ = fs::remove_file(key.0);
        return Err(e);
    }
    Ok(())
}

fn write_new(path: &Path, contents: &[u8], mode: u32) -> Result<(), CertError> {
    let mut options = OpenOptions::new();
    options.write(true).create_new(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        // Applied by open(2) itself: the file never exists with wider
        // permissions (the umask can only narrow them).
        options.mode(mode);
    }
    #[cfg(not(unix))]
    let _ = mode;
    let mut file: File = options.open(path).map_err(|source| {
        if source.kind() == std::io::ErrorKind::AlreadyExists {
            CertError::Exists {
                path: path.to_owned(),
            }
        } else {
            CertError::Write {
                path: path.to_owned(),
                source,
            }
        }
    })?;
    let written = file.write_all(contents).and_then(|()| file.sync_all());
    if let Err(source) = written {
        drop(file);
        let _ = fs::remove_file(path);
        return Err(CertError::Write {
            path: path.to_owned(),
            source,
        });
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::peer_tls::{identity_matches, NodeTlsMaterial, TlsPaths};
    use x509_parser::extensions::GeneralName;

    fn parse(path: &Path) -> Vec<u8> {
        let pem = fs::read(path).unwrap();
        x509_parser::pem::parse_x509_pem(&pem).unwrap().1.contents
    }

    #[cfg(unix)]
    fn mode(path: &Path) -> u32 {
        use std::os::unix::fs::PermissionsExt;
        fs::metadata(path).unwrap().permissions().mode() & 0o777
    }

    #[test]
    fn init_creates_a_ca_with_private_files() {
        let root = tempfile::tempdir().unwrap();
        let dir = root.path().join("tls");
        let ca = init_ca(&dir, "prod cluster", 3650).unwrap();
        assert_eq!(ca.cert, dir.join("ca.crt"));
        assert_eq!(ca.key, dir.join("ca.key"));
        #[cfg(unix)]
        {
            assert_eq!(mode(&dir), 0o700);
            assert_eq!(mode(&ca.key), 0o600);
            assert_eq!(mode(&ca.cert) & 0o022, 0, "certificate writable by others");
        }

        let der = parse(&ca.cert);
        let (_, cert) = X509Certificate::from_der(&der).unwrap();
        assert!(cert.is_ca());
        let cn = cert.subject().iter_common_name().next().unwrap();
        assert_eq!(cn.as_str().unwrap(), "prod cluster");
        let usage = cert.key_usage().unwrap().unwrap().value;
        assert!(usage.key_cert_sign() && usage.crl_sign());
        let constraints = cert.basic_constraints().unwrap().unwrap().value;
        assert_eq!(constraints.path_len_constraint, Some(0));
        let days =
            (cert.validity().not_after.to_datetime() - OffsetDateTime::now_utc()).whole_days();
        assert!((3649..=3650).contains(&days), "{days}");
        let key = fs::read_to_string(&ca.key).unwrap();
        assert!(key.starts_with("-----BEGIN PRIVATE KEY-----"));
    }

    #[test]
    fn init_never_overwrites() {
        let dir = tempfile::tempdir().unwrap();
        let first = init_ca(dir.path(), "c", 10).unwrap();
        let before = fs::read(&first.cert).unwrap();
        let err = init_ca(dir.path(), "c", 10).unwrap_err();
        assert!(matches!(err, CertError::Exists { .. }), "{err}");
        assert!(err.to_string().contains("ca.crt"), "{err}");
        assert!(err.to_string().contains("never overwrites"), "{err}");
        assert_eq!(fs::read(&first.cert).unwrap(), before);
    }

    #[test]
    fn init_with_a_stray_key_writes_nothing() {
        let dir = tempfile::tempdir().unwrap();
        fs::write(dir.path().join("ca.key"), "old").unwrap();
        let err = init_ca(dir.path(), "c", 10).unwrap_err();
        assert!(err.to_string().contains("ca.key"), "{err}");
        assert!(!dir.path().join("ca.crt").exists());
        assert_eq!(
            fs::read_to_string(dir.path().join("ca.key")).unwrap(),
            "old"
        );
    }

    #[test]
    fn init_rejects_bad_names_and_validity() {
        let dir = tempfile::tempdir().unwrap();
        assert!(matches!(
            init_ca(dir.path(), " ", 10),
            Err(CertError::InvalidClusterName { .. })
        ));
        assert!(matches!(
            init_ca(dir.path(), "c", 0),
            Err(CertError::InvalidValidity { days: 0 })
        ));
        assert!(!dir.path().join("ca.crt").exists());
    }

    #[test]
    fn issued_certificate_carries_cn_sans_and_both_usages() {
        let dir = tempfile::tempdir().unwrap();
        init_ca(dir.path(), "cluster", 3650).unwrap();
        let node = issue_node(
            dir.path(),
            "node-a",
            &["10.0.0.5", "db-a.example.internal", "::1", "node-a"],
            365,
        )
        .unwrap();
        assert_eq!(node.cert, dir.path().join("node-a.crt"));
        assert_eq!(node.key, dir.path().join("node-a.key"));
        assert_eq!(node.ca_cert, dir.path().join("ca.crt"));
        assert_eq!(
            node.subject_alt_names,
            ["node-a", "10.0.0.5", "db-a.example.internal", "::1"]
        );
        #[cfg(unix)]
        assert_eq!(mode(&node.key), 0o600);

        let der = parse(&node.cert);
        let (_, cert) = X509Certificate::from_der(&der).unwrap();
        let cn = cert.subject().iter_common_name().next().unwrap();
        assert_eq!(cn.as_str().unwrap(), "node-a");
        assert!(!cert.is_ca());
        let eku = cert.extended_key_usage().unwrap().unwrap().value;
        assert!(eku.server_auth && eku.client_auth);
        let sans: Vec<String> = cert
            .subject_alternative_name()
            .unwrap()
            .unwrap()
            .value
            .general_names
            .iter()
            .map(|name| match name {
                GeneralName::DNSName(d) => format!("dns:{d}"),
                GeneralName::IPAddress(ip) => format!("ip:{}", ip.len()),
                other => format!("{other:?}"),
            })
            .collect();
        assert_eq!(
            sans,
            ["dns:node-a", "ip:4", "dns:db-a.example.internal", "ip:16"]
        );

        // Signed by the CA: its signature checks out with the CA's key.
        let ca_der = parse(&dir.path().join("ca.crt"));
        let (_, ca) = X509Certificate::from_der(&ca_der).unwrap();
        cert.verify_signature(Some(ca.public_key())).unwrap();
        assert_eq!(cert.issuer(), ca.subject());
    }

    #[test]
    fn issued_files_load_into_peer_tls_and_complete_a_mutual_handshake() {
        let dir = tempfile::tempdir().unwrap();
        init_ca(dir.path(), "cluster", 3650).unwrap();
        let a = issue_node(dir.path(), "node-a", &["127.0.0.1"], 30).unwrap();
        let b = issue_node(dir.path(), "node-b", &["127.0.0.1"], 30).unwrap();
        let load = |files: &NodeFiles| {
            NodeTlsMaterial::load(&TlsPaths {
                cert_file: files.cert.clone(),
                key_file: files.key.clone(),
                ca_file: files.ca_cert.clone(),
            })
            .unwrap()
        };
        let (a, b) = (load(&a), load(&b));
        assert!(identity_matches(a.identity(), "node-a"));

        // node-b dials node-a at 127.0.0.1, in memory.
        let mut client = rustls::ClientConnection::new(
            b.client_config().unwrap(),
            rustls_pki_types::ServerName::try_from("127.0.0.1").unwrap(),
        )
        .unwrap();
        let mut server = rustls::ServerConnection::new(a.server_config().unwrap()).unwrap();
        handshake(&mut client, &mut server);
        let seen = server.peer_certificates().unwrap();
        let identity = crate::peer_tls::PeerIdentity::from_chain(seen).unwrap();
        assert!(identity_matches(&identity, "node-b"));
        assert_eq!(server.alpn_protocol(), Some(&b"h2"[..]));
        assert_eq!(
            server.protocol_version(),
            Some(rustls::ProtocolVersion::TLSv1_3)
        );
    }

    /// Moves TLS records between two in-memory connections until both
    /// finish the handshake.
    fn handshake(client: &mut rustls::ClientConnection, server: &mut rustls::ServerConnection) {
        for _ in 0..10 {
            let mut buf = Vec::new();
            while client.wants_write() {
                client.write_tls(&mut buf).unwrap();
            }
            server.read_tls(&mut buf.as_slice()).unwrap();
            server.process_new_packets().unwrap();
            let mut buf = Vec::new();
            while server.wants_write() {
                server.write_tls(&mut buf).unwrap();
            }
            client.read_tls(&mut buf.as_slice()).unwrap();
            client.process_new_packets().unwrap();
            if !client.is_handshaking() && !server.is_handshaking() {
                return;
            }
        }
        panic!("handshake did not complete");
    }

    #[test]
    fn issue_never_overwrites() {
        let dir = tempfile::tempdir().unwrap();
        init_ca(dir.path(), "cluster", 3650).unwrap();
        issue_node(dir.path(), "node-a", &["10.0.0.1"], 30).unwrap();
        let before = fs::read(dir.path().join("node-a.key")).unwrap();
        let err = issue_node(dir.path(), "node-a", &["10.0.0.1"], 30).unwrap_err();
        assert!(matches!(err, CertError::Exists { .. }), "{err}");
        assert!(err.to_string().contains("node-a.crt"), "{err}");
        assert_eq!(fs::read(dir.path().join("node-a.key")).unwrap(), before);
    }

    #[test]
    fn issue_without_a_ca_says_to_run_init() {
        let dir = tempfile::tempdir().unwrap();
        let err = issue_node(dir.path(), "node-a", &["10.0.0.1"], 30).unwrap_err();
        assert!(matches!(err, CertError::MissingCa { .. }), "{err}");
        assert!(err.to_string().contains("steep-repl tls init"), "{err}");
        assert!(!dir.path().join("node-a.key").exists());
    }

    #[test]
    fn issue_refuses_a_ca_key_of_another_ca() {
        let dir = tempfile::tempdir().unwrap();
        let other = tempfile::tempdir().unwrap();
        init_ca(dir.path(), "cluster", 3650).unwrap();
        init_ca(other.path(), "other", 3650).unwrap();
        fs::remove_file(dir.path().join("ca.key")).unwrap();
        fs::copy(other.path().join("ca.key"), dir.path().join("ca.key")).unwrap();
        let err = issue_node(dir.path(), "node-a", &["10.0.0.1"], 30).unwrap_err();
        assert!(matches!(err, CertError::CaKeyMismatch { .. }), "{err}");
    }

    #[test]
    fn issue_refuses_to_outlive_the_ca() {
        let dir = tempfile::tempdir().unwrap();
        init_ca(dir.path(), "cluster", 10).unwrap();
        let err = issue_node(dir.path(), "node-a", &["10.0.0.1"], 365).unwrap_err();
        assert!(matches!(err, CertError::CaExpiresFirst { .. }), "{err}");
    }

    #[test]
    fn a_node_id_that_is_no_dns_name_stays_in_the_cn_only() {
        let dir = tempfile::tempdir().unwrap();
        init_ca(dir.path(), "cluster", 3650).unwrap();
        let node = issue_node(dir.path(), "10.0.0.9", &["10.0.0.9"], 30).unwrap();
        assert_eq!(node.subject_alt_names, ["10.0.0.9"]);
    }

    #[test]
    fn bad_hosts_are_refused() {
        let dir = tempfile::tempdir().unwrap();
        init_ca(dir.path(), "cluster", 3650).unwrap();
        for host in ["", "bad host", "-leading.example", "a..b"] {
            let err = issue_node(dir.path(), "node-a", &[host], 30).unwrap_err();
            assert!(
                matches!(err, CertError::InvalidHost { .. }),
                "{host:?}: {err}"
            );
        }
        assert!(!dir.path().join("node-a.crt").exists());
    }

    #[test]
    fn node_ids_are_validated() {
        for ok in ["node-a", "n1", "db.eu-west_1", &"x".repeat(63)] {
            validate_node_id(ok).unwrap();
        }
        let cases = [
            ("", "empty"),
            (&"x".repeat(64) as &str, "longer than 63"),
            ("node a", "' ' is not allowed"),
            ("../etc", "'/' is not allowed"),
            ("nöde", "'ö' is not allowed"),
            ("..", "not a usable file name"),
            ("ca", "reserved"),
        ];
        for (node_id, reason) in cases {
            let err = validate_node_id(node_id).unwrap_err().to_string();
            assert!(err.contains(reason), "{node_id:?}: {err}");
        }
    }
}
