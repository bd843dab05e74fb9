//! Who a peer certificate says it is.
//!
//! This module owns the reading of a certificate's names (its subject CN and
//! its subject alternative names) and the rule that decides whether a peer
//! may speak for a node_id: the node_id it claims in a request must equal the
//! certificate's CN or one of its SANs. The accept path (`incoming`) attaches
//! a [`PeerIdentity`] to every mTLS connection; the gRPC handlers compare it
//! with the node_id in each RegisterNode / Heartbeat request.

use std::fmt;
use std::net::IpAddr;

use rustls_pki_types::CertificateDer;
use x509_parser::extensions::GeneralName;
use x509_parser::prelude::{FromDer, X509Certificate};

/// A certificate that could not be read as X.509.
#[derive(Debug, thiserror::Error)]
#[error("certificate could not be parsed: {0}")]
pub struct IdentityError(String);

/// The names a certificate carries: its subject CN and its subject
/// alternative names. Extracted once per connection, after the certificate
/// was verified against the cluster CA, so nothing here is trusted before
/// that verification.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct PeerIdentity {
    /// The first CN of the subject, when it has one that is valid text.
    pub common_name: Option<String>,
    /// DNS-name SANs, as written in the certificate.
    pub dns_names: Vec<String>,
    /// IP-address SANs.
    pub ip_addresses: Vec<IpAddr>,
    /// URI SANs, as written in the certificate.
    pub uris: Vec<String>,
}

impl PeerIdentity {
    /// Reads the names of a DER-encoded certificate.
    pub fn from_der(der: &[u8]) -> Result<Self, IdentityError> {
        let (_rest, cert) =
            X509Certificate::from_der(der).map_err(|e| IdentityError(e.to_string()))?;
        Self::from_x509(&cert)
    }

    /// Reads the names of the end-entity certificate of a chain (the first
    /// one, as TLS sends it).
    pub fn from_chain(chain: &[CertificateDer<'_>]) -> Result<Self, IdentityError> {
        let end_entity = chain
            .first()
            .ok_or_else(|| IdentityError("the peer sent no certificate".into()))?;
        Self::from_der(end_entity.as_ref())
    }

    fn from_x509(cert: &X509Certificate<'_>) -> Result<Self, IdentityError> {
        let common_name = cert
            .subject()
            .iter_common_name()
            .next()
            .and_then(|cn| cn.as_str().ok())
            .map(str::to_owned);
        let mut identity = PeerIdentity {
            common_name,
            ..Default::default()
        };
        let sans = cert
            .subject_alternative_name()
            .map_err(|e| IdentityError(format!("subject alternative names: {e}")))?;
        for name in sans.iter().flat_map(|ext| ext.value.general_names.iter()) {
            match name {
                GeneralName::DNSName(dns) => identity.dns_names.push((*dns).to_owned()),
                GeneralName::URI(uri) => identity.uris.push((*uri).to_owned()),
                GeneralName::IPAddress(bytes) => {
                    // 4 or 16 bytes per RFC 5280; anything else is not an
                    // address and is skipped rather than failing the peer.
                    if let Ok(v4) = <[u8; 4]>::try_from(*bytes) {
                        identity.ip_addresses.push(IpAddr::from(v4));
                    } else if let Ok(v6) = <[u8; 16]>::try_from(*bytes) {
                        identity.ip_addresses.push(IpAddr::from(v6));
                    }
                }
                // e-mail, directory names, other names: not node identities.
                _ => {}
            }
        }
        Ok(identity)
    }

    /// Whether a peer connecting to `host` accepts this certificate as
    /// rustls does: an IP address must be one of its IP SANs, a name one of
    /// its DNS SANs (case aside; `*.` stands for one leftmost label). The CN
    /// is not looked at.
    pub fn serves_host(&self, host: &str) -> bool {
        let host = host.trim_start_matches('[').trim_end_matches(']');
        if let Ok(ip) = host.parse::<IpAddr>() {
            return self.ip_addresses.contains(&ip);
        }
        let host = host.trim_end_matches('.').to_ascii_lowercase();
        self.dns_names.iter().any(|name| {
            let name = name.trim_end_matches('.').to_ascii_lowercase();
            match name.strip_prefix("*.") {
                Some(parent) => host
                    .split_once('.')
                    .is_some_and(|(label, rest)| !label.is_empty() && rest == parent),
                None => name == host,
            }
        })
    }

    /// Every name of the certificate as text: CN first, then DNS, IP and
    /// URI SANs.
    pub fn names(&self) -> impl Iterator<Item = String> + '_ {
        self.common_name
            .iter()
            .cloned()
            .chain(self.dns_names.iter().cloned())
            .chain(self.ip_addresses.iter().map(IpAddr::to_string))
            .chain(self.uris.iter().cloned())
    }
}

impl fmt::Display for PeerIdentity {
    /// `CN=node-a, SAN=[node-a, 10.0.0.1]`: short enough for a log line.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.common_name {
            Some(cn) => write!(f, "CN={cn}")?,
            None => write!(f, "CN=(none)")?,
        }
        let sans: Vec<String> = self
            .dns_names
            .iter()
            .cloned()
            .chain(self.ip_addresses.iter().map(IpAddr::to_string))
            .chain(self.uris.iter().cloned())
            .collect();
        write!(f, ", SAN=[{}]", sans.join(", "))
    }
}

/// Whether a peer with this certificate may claim to be `claimed_node_id`:
/// true when the CN or any SAN (DNS, IP in its usual text form, URI) equals
/// it exactly.
///
/// The comparison is exact, case included: node_ids are registry keys, and a
/// looser match (say, case-insensitive DNS rules) would let one node's
/// certificate speak for a differently spelled node_id. An empty claim never
/// matches.
pub fn identity_matches(identity: &PeerIdentity, claimed_node_id: &str) -> bool {
    if claimed_node_id.is_empty() {
        return false;
    }
    identity.names().any(|name| name == claimed_node_id)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::pki::testing::TestCa;

    #[test]
    fn identity_reads_cn_and_every_kind_of_san() {
        let ca = TestCa::new("cluster");
        let node = ca.issue_with(
            "node-a",
            &["node-a", "db1.example.internal", "10.1.2.3", "::1"],
            &["spiffe://steep/node-a"],
        );
        let identity = PeerIdentity::from_der(node.cert_der.as_ref()).unwrap();
        assert_eq!(identity.common_name.as_deref(), Some("node-a"));
        assert_eq!(identity.dns_names, ["node-a", "db1.example.internal"]);
        assert_eq!(
            identity.ip_addresses,
            [
                "10.1.2.3".parse::<IpAddr>().unwrap(),
                "::1".parse().unwrap()
            ]
        );
        assert_eq!(identity.uris, ["spiffe://steep/node-a"]);
        assert_eq!(
            identity.to_string(),
            "CN=node-a, SAN=[node-a, db1.example.internal, 10.1.2.3, ::1, spiffe://steep/node-a]"
        );
    }

    #[test]
    fn a_claim_matches_the_cn_or_any_san_exactly() {
        let identity = PeerIdentity {
            common_name: Some("node-a".into()),
            dns_names: vec!["alias-a".into()],
            ip_addresses: vec!["10.0.0.7".parse().unwrap()],
            uris: vec!["urn:node:a".into()],
        };
        for claim in ["node-a", "alias-a", "10.0.0.7", "urn:node:a"] {
            assert!(identity_matches(&identity, claim), "{claim} should match");
        }
        for claim in ["node-b", "NODE-A", "node-a ", "", "10.0.0.8"] {
            assert!(
                !identity_matches(&identity, claim),
                "{claim:?} should not match"
            );
        }
    }

    #[test]
    fn a_certificate_without_cn_or_sans_matches_nothing() {
        assert!(!identity_matches(&PeerIdentity::default(), "node-a"));
    }

    #[test]
    fn garbage_is_reported_as_unparsable() {
        let err = PeerIdentity::from_der(b"not a certificate").unwrap_err();
        assert!(err
            .to_string()
            .starts_with("certificate could not be parsed"));
        let err = PeerIdentity::from_chain(&[]).unwrap_err();
        assert!(err.to_string().contains("no certificate"));
    }
}

#[cfg(test)]
mod serves_host_tests {
    use super::PeerIdentity;

    #[test]
    fn a_host_is_served_by_its_ip_or_dns_san_never_by_the_cn() {
        let id = PeerIdentity {
            common_name: Some("node-a".into()),
            dns_names: vec!["db1.example.net".into(), "*.pg.example.net".into()],
            ip_addresses: vec!["10.0.0.1".parse().unwrap(), "fd00::2".parse().unwrap()],
            uris: vec![],
        };
        for host in [
            "10.0.0.1",
            "fd00::2",
            "[fd00::2]",
            "DB1.example.net",
            "db1.example.net.",
            "x.pg.example.net",
        ] {
            assert!(id.serves_host(host), "{host}");
        }
        for host in [
            "node-a",
            "10.0.0.2",
            "127.0.0.1",
            "example.net",
            "pg.example.net",
            "a.b.pg.example.net",
            "db1",
        ] {
            assert!(!id.serves_host(host), "{host}");
        }
    }
}
