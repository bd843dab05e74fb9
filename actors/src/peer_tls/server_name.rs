//! The check of a peer's server certificate, with an error that says which
//! host was dialled and which names the certificate carries.
//!
//! webpki decides; this module only rewrites its "not valid for name"
//! failure. A node whose `advertise_host` (or `grpc.peers` entry) is not
//! among its certificate's names is unreachable for every peer, and the
//! operator who reads the error needs both sides of the mismatch to fix it.

use std::fmt;
use std::sync::Arc;

use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::client::WebPkiServerVerifier;
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::{CertificateError, DigitallySignedStruct, Error, OtherError, SignatureScheme};

use super::identity::PeerIdentity;

/// The peer's certificate does not carry the host this node dialled.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub struct HostNotInCertificate {
    /// The host we dialled (a DNS name or an IP address).
    pub host: String,
    /// The subject CN of the certificate presented, if it has one.
    pub common_name: Option<String>,
    /// Its DNS and IP subject alternative names, the only names a TLS
    /// client matches against the host.
    pub names: Vec<String>,
}

impl fmt::Display for HostNotInCertificate {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let names = if self.names.is_empty() {
            "no DNS or IP name".to_string()
        } else {
            self.names.join(", ")
        };
        let (subject, node_id) = match &self.common_name {
            Some(cn) => (format!("CN={cn}"), cn.as_str()),
            None => ("no CN".to_string(), "<node_id>"),
        };
        write!(
            f,
            "the certificate presented ({subject}) does not carry the host {host} that was \
             dialled; its names are: {names}. Issue the peer's certificate with --host {host} \
             (`steep-repl tls issue {node_id} --host {host}`) or reach the peer at one of its \
             names (its repl.advertise_host, or grpc.peers here)",
            host = self.host,
        )
    }
}

impl HostNotInCertificate {
    /// What a failed name check found, from the certificate presented.
    pub fn new(host: &str, end_entity: &CertificateDer<'_>) -> Self {
        // The chain was parsed by webpki already; a certificate x509-parser
        // cannot read still gets an error that names the host.
        let identity = PeerIdentity::from_der(end_entity.as_ref()).unwrap_or_default();
        HostNotInCertificate {
            host: host.to_owned(),
            common_name: identity.common_name.clone(),
            names: identity
                .dns_names
                .iter()
                .cloned()
                .chain(identity.ip_addresses.iter().map(|ip| ip.to_string()))
                .collect(),
        }
    }
}

/// webpki's server-certificate verification with the name mismatch
/// explained (see the module docs). Everything else is webpki's verdict,
/// unchanged.
#[derive(Debug)]
pub(super) struct NamingServerVerifier {
    inner: Arc<WebPkiServerVerifier>,
}

impl NamingServerVerifier {
    pub(super) fn new(inner: Arc<WebPkiServerVerifier>) -> Self {
        NamingServerVerifier { inner }
    }
}

/// Replaces a name mismatch by [`HostNotInCertificate`]; other errors pass.
pub(super) fn explain_name_mismatch(
    error: Error,
    end_entity: &CertificateDer<'_>,
    server_name: &ServerName<'_>,
) -> Error {
    match error {
        Error::InvalidCertificate(
            CertificateError::NotValidForName | CertificateError::NotValidForNameContext { .. },
        ) => {
            // `Error::Other`, whose text is ours: rustls prints a
            // `CertificateError::Other` with its Debug form. The peer gets a
            // handshake_failure alert instead of bad_certificate.
            let host = server_name.to_str();
            Error::Other(OtherError(Arc::new(HostNotInCertificate::new(
                &host, end_entity,
            ))))
        }
        other => other,
    }
}

impl ServerCertVerifier for NamingServerVerifier {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        server_name: &ServerName<'_>,
        ocsp_response: &[u8],
        now: UnixTime,
    ) -> Result<ServerCertVerified, Error> {
        self.inner
            .verify_server_cert(end_entity, intermediates, server_name, ocsp_response, now)
            .map_err(|e| explain_name_mismatch(e, end_entity, server_name))
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, Error> {
        self.inner.verify_tls12_signature(message, cert, dss)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, Error> {
        self.inner.verify_tls13_signature(message, cert, dss)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.inner.supported_verify_schemes()
    }

    fn requires_raw_public_keys(&self) -> bool {
        self.inner.requires_raw_public_keys()
    }

    fn root_hint_subjects(&self) -> Option<&[rustls::DistinguishedName]> {
        self.inner.root_hint_subjects()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::pki::testing::TestCa;

    fn verifier(ca: &TestCa) -> NamingServerVerifier {
        use rustls::pki_types::pem::PemObject;
        let mut roots = rustls::RootCertStore::empty();
        for cert in CertificateDer::pem_slice_iter(ca.cert_pem.as_bytes()) {
            roots.add(cert.unwrap()).unwrap();
        }
        let inner = WebPkiServerVerifier::builder_with_provider(
            Arc::new(roots),
            Arc::new(rustls::crypto::ring::default_provider()),
        )
        .build()
        .unwrap();
        NamingServerVerifier::new(inner)
    }

    #[test]
    fn a_host_the_certificate_lacks_is_named_with_the_certificate_names() {
        let ca = TestCa::new("cluster");
        let node = ca.issue("node-b", &["localhost", "10.0.0.2"]);
        let host = ServerName::try_from("127.0.0.1").unwrap();
        let err = verifier(&ca)
            .verify_server_cert(&node.cert_der, &[], &host, &[], UnixTime::now())
            .unwrap_err();
        let msg = err.to_string();
        assert!(msg.contains("does not carry the host 127.0.0.1"), "{msg}");
        assert!(msg.contains("CN=node-b"), "{msg}");
        assert!(
            msg.contains("its names are: node-b, localhost, 10.0.0.2"),
            "{msg}"
        );
        assert!(
            msg.contains("steep-repl tls issue node-b --host 127.0.0.1"),
            "{msg}"
        );
    }

    #[test]
    fn a_host_the_certificate_carries_passes_and_other_errors_are_unchanged() {
        let ca = TestCa::new("cluster");
        let node = ca.issue("node-b", &["127.0.0.1"]);
        let host = ServerName::try_from("127.0.0.1").unwrap();
        verifier(&ca)
            .verify_server_cert(&node.cert_der, &[], &host, &[], UnixTime::now())
            .unwrap();
        // Another CA: webpki's own error, not a name story.
        let other = TestCa::new("other");
        let err = verifier(&other)
            .verify_server_cert(&node.cert_der, &[], &host, &[], UnixTime::now())
            .unwrap_err();
        assert_eq!(
            err,
            Error::InvalidCertificate(CertificateError::UnknownIssuer)
        );
    }

    #[test]
    fn a_certificate_without_san_says_so() {
        let e = HostNotInCertificate {
            host: "db1".into(),
            common_name: None,
            names: vec![],
        };
        let msg = e.to_string();
        assert!(msg.contains("(no CN)"), "{msg}");
        assert!(msg.contains("tls issue <node_id> --host db1"), "{msg}");
        assert!(msg.contains("its names are: no DNS or IP name"), "{msg}");
    }
}
