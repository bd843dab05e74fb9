//! Test support: throwaway cluster CAs and node certificates made with rcgen.
//!
//! Used by the unit tests of `peer_tls` and, through `#[path]`, by the
//! integration test `tests/peer_tls.rs`, so it depends on nothing but rcgen,
//! rustls-pki-types and std. Tests may unwrap: a failure here is a broken
//! test set-up, not an input to handle.

#![allow(dead_code)]

use std::path::{Path, PathBuf};

use rcgen::{
    BasicConstraints, CertificateParams, DistinguishedName, DnType, ExtendedKeyUsagePurpose, IsCa,
    Issuer, KeyPair, KeyUsagePurpose, SanType,
};
use rustls_pki_types::CertificateDer;

/// A cluster CA that can issue node certificates.
pub struct TestCa {
    params: CertificateParams,
    key: KeyPair,
    /// The CA certificate, PEM.
    pub cert_pem: String,
}

/// A node certificate, its key, and the PEM of the CA that issued it.
pub struct TestNode {
    pub cert_pem: String,
    pub key_pem: String,
    pub cert_der: CertificateDer<'static>,
    pub ca_pem: String,
}

/// Where [`TestNode::write_to`] put the three PEM files.
pub struct TestFiles {
    pub cert: PathBuf,
    pub key: PathBuf,
    pub ca: PathBuf,
}

impl TestCa {
    /// A new self-signed CA whose CN is `name`.
    pub fn new(name: &str) -> Self {
        let mut params = CertificateParams::default();
        params.distinguished_name = DistinguishedName::new();
        params.distinguished_name.push(DnType::CommonName, name);
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
        let key = KeyPair::generate().unwrap();
        let cert = params.self_signed(&key).unwrap();
        TestCa {
            params,
            key,
            cert_pem: cert.pem(),
        }
    }

    /// A node certificate with CN = `node_id` and SANs = `node_id` plus
    /// `hosts`, usable as server and as client.
    pub fn issue(&self, node_id: &str, hosts: &[&str]) -> TestNode {
        let mut sans = vec![node_id];
        sans.extend_from_slice(hosts);
        self.issue_with(node_id, &sans, &[])
    }

    /// A node certificate with the given CN, DNS/IP SANs (IPs recognised by
    /// rcgen) and URI SANs.
    pub fn issue_with(&self, cn: &str, sans: &[&str], uris: &[&str]) -> TestNode {
        self.issue_custom(
            cn,
            sans,
            uris,
            &[
                ExtendedKeyUsagePurpose::ServerAuth,
                ExtendedKeyUsagePurpose::ClientAuth,
            ],
        )
    }

    /// Like [`TestCa::issue_with`] with explicit extended key usages.
    pub fn issue_custom(
        &self,
        cn: &str,
        sans: &[&str],
        uris: &[&str],
        ekus: &[ExtendedKeyUsagePurpose],
    ) -> TestNode {
        let owned: Vec<String> = sans.iter().map(|s| (*s).to_owned()).collect();
        let mut params = CertificateParams::new(owned).unwrap();
        for uri in uris {
            params
                .subject_alt_names
                .push(SanType::URI((*uri).try_into().unwrap()));
        }
        params.distinguished_name = DistinguishedName::new();
        params.distinguished_name.push(DnType::CommonName, cn);
        params.extended_key_usages = ekus.to_vec();
        params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
        params.use_authority_key_identifier_extension = true;
        let key = KeyPair::generate().unwrap();
        let issuer = Issuer::from_params(&self.params, &self.key);
        let cert = params.signed_by(&key, &issuer).unwrap();
        TestNode {
            cert_pem: cert.pem(),
            key_pem: key.serialize_pem(),
            cert_der: cert.der().clone(),
            ca_pem: self.cert_pem.clone(),
        }
    }
}

impl TestNode {
    /// Writes `<name>.crt`, `<name>.key` and `ca.crt` into `dir`.
    pub fn write_to(&self, dir: &Path, name: &str) -> TestFiles {
        let files = TestFiles {
            cert: dir.join(format!("{name}.crt")),
            key: dir.join(format!("{name}.key")),
            ca: dir.join("ca.crt"),
        };
        std::fs::write(&files.cert, &self.cert_pem).unwrap();
        std::fs::write(&files.key, &self.key_pem).unwrap();
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            std::fs::set_permissions(&files.key, std::fs::Permissions::from_mode(0o600)).unwrap();
        }
        std::fs::write(&files.ca, &self.ca_pem).unwrap();
        files
    }
}
