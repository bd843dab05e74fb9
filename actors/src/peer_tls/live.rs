//! The TLS configuration in use, replaceable while the daemon runs.
//!
//! Every new connection, accepted (`incoming`) or dialled (`connector`,
//! for the peer heartbeats and the Raft channels alike), asks [`LiveTls`]
//! for the current rustls configuration at its handshake. A reload
//! ([`LiveTls::reload`], on SIGHUP) loads and checks the three files again
//! and swaps the configurations in one step: handshakes that follow use
//! the new material, connections already established keep theirs. A new
//! set that does not load (unparsable, key not matching the certificate,
//! key readable by others, not issued by the CA) is refused and the
//! material in use stays.

use std::sync::Arc;

use arc_swap::ArcSwap;
use rustls::{ClientConfig, ServerConfig};

use super::expiry::CertificateInfo;
use super::identity::PeerIdentity;
use super::{NodeTlsMaterial, PeerTlsError, TlsPaths};

/// One consistent set: both configurations come from the same files.
struct Loaded {
    server: Arc<ServerConfig>,
    client: Arc<ClientConfig>,
    /// `None` for configurations built by hand (tests).
    certificates: Option<CertificateInfo>,
    identity: Option<PeerIdentity>,
}

/// See the module docs.
pub struct LiveTls {
    /// Where a reload reads from; `None` when built from configurations.
    paths: Option<TlsPaths>,
    current: ArcSwap<Loaded>,
}

/// What a successful reload replaced.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TlsReloaded {
    pub before: Option<CertificateInfo>,
    pub after: CertificateInfo,
}

impl TlsReloaded {
    /// Whether the files held other certificates than the ones in use.
    pub fn changed(&self) -> bool {
        self.before.as_ref() != Some(&self.after)
    }
}

impl LiveTls {
    /// Starts with loaded material; reloads read the same paths.
    pub fn from_material(material: &NodeTlsMaterial) -> Result<Self, PeerTlsError> {
        Ok(LiveTls {
            paths: Some(material.paths().clone()),
            current: ArcSwap::from_pointee(loaded(material)?),
        })
    }

    /// Fixed configurations, never reloaded.
    pub fn from_configs(server: Arc<ServerConfig>, client: Arc<ClientConfig>) -> Self {
        LiveTls {
            paths: None,
            current: ArcSwap::from_pointee(Loaded {
                server,
                client,
                certificates: None,
                identity: None,
            }),
        }
    }

    /// The server configuration for the next accepted connection.
    pub fn server_config(&self) -> Arc<ServerConfig> {
        self.current.load().server.clone()
    }

    /// The client configuration for the next dialled connection.
    pub fn client_config(&self) -> Arc<ClientConfig> {
        self.current.load().client.clone()
    }

    /// The certificates in use.
    pub fn certificates(&self) -> Option<CertificateInfo> {
        self.current.load().certificates.clone()
    }

    /// The names of this node's certificate in use.
    pub fn identity(&self) -> Option<PeerIdentity> {
        self.current.load().identity.clone()
    }

    /// Loads the files again and, when they are good, puts them in use. On
    /// an error the material in use stays, and the error names the file.
    pub fn reload(&self) -> Result<TlsReloaded, PeerTlsError> {
        let paths = self.paths.as_ref().ok_or_else(|| {
            PeerTlsError::Config("this transport was not loaded from files".into())
        })?;
        let material = NodeTlsMaterial::load(paths)?;
        let next = loaded(&material)?;
        let after = material.certificates().clone();
        let before = self.current.swap(Arc::new(next));
        Ok(TlsReloaded {
            before: before.certificates.clone(),
            after,
        })
    }
}

fn loaded(material: &NodeTlsMaterial) -> Result<Loaded, PeerTlsError> {
    Ok(Loaded {
        server: material.server_config()?,
        client: material.client_config()?,
        certificates: Some(material.certificates().clone()),
        identity: Some(material.identity().clone()),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::pki::testing::TestCa;

    fn write(node: &crate::pki::testing::TestNode, dir: &std::path::Path) -> TlsPaths {
        let files = node.write_to(dir, "node");
        TlsPaths {
            cert_file: files.cert,
            key_file: files.key,
            ca_file: files.ca,
        }
    }

    #[test]
    fn a_good_new_set_replaces_the_configurations() {
        let dir = tempfile::tempdir().unwrap();
        let ca = TestCa::new("cluster");
        let paths = write(&ca.issue("node-a", &["127.0.0.1"]), dir.path());
        let live = LiveTls::from_material(&NodeTlsMaterial::load(&paths).unwrap()).unwrap();
        let (server, client) = (live.server_config(), live.client_config());
        let first = live.certificates().unwrap();

        // Unchanged files: a reload is harmless and says nothing changed.
        assert!(!live.reload().unwrap().changed());

        write(&ca.issue("node-a", &["127.0.0.1"]), dir.path());
        let reloaded = live.reload().unwrap();
        assert!(reloaded.changed());
        assert_eq!(reloaded.before.as_ref(), Some(&first));
        assert_ne!(reloaded.after.serial, first.serial);
        assert_eq!(live.certificates().unwrap(), reloaded.after);
        assert!(!Arc::ptr_eq(&server, &live.server_config()));
        assert!(!Arc::ptr_eq(&client, &live.client_config()));
    }

    #[test]
    fn a_bad_new_set_keeps_the_material_in_use() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        let ca = TestCa::new("cluster");
        let paths = write(&ca.issue("node-a", &["127.0.0.1"]), dir.path());
        let live = LiveTls::from_material(&NodeTlsMaterial::load(&paths).unwrap()).unwrap();
        let server = live.server_config();
        let first = live.certificates().unwrap();
        let good_key = std::fs::read(&paths.key_file).unwrap();

        // Another node's key: does not match the certificate.
        std::fs::write(&paths.key_file, ca.issue("node-b", &[]).key_pem).unwrap();
        let err = live.reload().unwrap_err();
        assert!(matches!(err, PeerTlsError::KeyMismatch { .. }), "{err}");
        assert!(
            err.to_string()
                .contains(&paths.key_file.display().to_string()),
            "{err}"
        );

        // The right key, readable by everyone.
        std::fs::write(&paths.key_file, &good_key).unwrap();
        std::fs::set_permissions(&paths.key_file, std::fs::Permissions::from_mode(0o644)).unwrap();
        let err = live.reload().unwrap_err();
        assert!(
            matches!(err, PeerTlsError::KeyReadableByOthers { .. }),
            "{err}"
        );

        // A truncated certificate.
        std::fs::set_permissions(&paths.key_file, std::fs::Permissions::from_mode(0o600)).unwrap();
        std::fs::write(&paths.cert_file, "-----BEGIN CERTIFICATE-----\nMIIB\n").unwrap();
        let err = live.reload().unwrap_err();
        assert!(
            err.to_string()
                .contains(&paths.cert_file.display().to_string()),
            "{err}"
        );

        assert!(Arc::ptr_eq(&server, &live.server_config()));
        assert_eq!(live.certificates().unwrap(), first);
    }

    #[test]
    fn configurations_built_by_hand_cannot_be_reloaded() {
        let dir = tempfile::tempdir().unwrap();
        let ca = TestCa::new("cluster");
        let paths = write(&ca.issue("node-a", &[]), dir.path());
        let material = NodeTlsMaterial::load(&paths).unwrap();
        let live = LiveTls::from_configs(
            material.server_config().unwrap(),
            material.client_config().unwrap(),
        );
        assert!(live.certificates().is_none());
        assert!(live.reload().is_err());
    }
}
