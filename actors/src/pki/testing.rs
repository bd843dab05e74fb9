//! Test support (feature `test-certs`): throwaway cluster CAs and node
//! certificates, in memory, made as [`super::init_ca`] and
//! [`super::issue_node`] make them ([`super::ca_params`],
//! [`super::node_params`]) but without files, validity checks or refusals,
//! and with the odd certificate a test needs (URI SANs, other key usages).
//! Used by the unit tests of `peer_tls` and by the integration tests. Tests
//! may unwrap: a failure here is a broken test set-up, not an input to
//! handle.

use std::path::{Path, PathBuf};

use rcgen::{CertificateParams, ExtendedKeyUsagePurpose, Issuer, KeyPair, SanType};
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
        let params = super::ca_params(name);
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
        // rcgen tells IP addresses from DNS names.
        let owned: Vec<String> = sans.iter().map(|s| (*s).to_owned()).collect();
        let mut names = CertificateParams::new(owned).unwrap().subject_alt_names;
        for uri in uris {
            names.push(SanType::URI((*uri).try_into().unwrap()));
        }
        let mut params = super::node_params(cn, names);
        params.extended_key_usages = ekus.to_vec();
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
