//! The peer TLS certificates while the daemon runs: their expiry (metric,
//! warning, audit) and their reload on SIGHUP.
//!
//! [`CertificateWatch`] is owned by the GrpcPeerActor, which owns the
//! transport. It publishes the certificates in use to the health snapshot
//! (for `steep_repl_tls_certificate_expiry_seconds`), checks their expiry
//! at start and then every [`CHECK_EVERY`] (a warning within
//! `grpc.tls.expiry_warning`, an error once expired, each audited as
//! `tls.certificate_expiring`), and reloads the files on
//! [`ReloadCertificates`] (audited as `tls.reloaded`; a refused set leaves
//! the one in use).

use crate::audit::AuditActor;
use crate::audit_event::{AuditAction, AuditEvent};
use crate::health_state::SharedHealth;
use crate::peer_tls::{expiry, PeerTransport};
use actix::prelude::*;
use serde_json::json;
use slog::{error, info, warn, Logger};
use std::time::Duration;

/// How often the expiry is checked after the check at start.
pub const CHECK_EVERY: Duration = Duration::from_secs(24 * 3600);

/// Reads the certificate files again (sent by the SystemActor on SIGHUP).
#[derive(Message)]
#[rtype(result = "()")]
pub struct ReloadCertificates;

/// See the module docs.
pub struct CertificateWatch {
    pub transport: PeerTransport,
    pub health: SharedHealth,
    pub audit: Addr<AuditActor>,
    pub log: Logger,
    pub node_id: String,
    /// `grpc.tls.expiry_warning`.
    pub warning: Duration,
}

impl CertificateWatch {
    /// Puts the certificates in use into the health snapshot.
    pub fn publish(&self) {
        let tls = self.transport.certificates();
        self.health.update(|s| s.tls = tls.clone());
    }

    /// Warns about (and audits) each certificate that expires within the
    /// warning window or has expired.
    pub fn check_expiry(&self) {
        let Some(info) = self.transport.certificates() else {
            return;
        };
        let now = chrono::Utc::now();
        for finding in expiry::check(&info, now, self.warning) {
            let seconds_left = expiry::seconds_until(finding.not_after, now);
            let message = finding.to_string();
            if finding.expired() {
                error!(self.log, "tls.certificate_expired"; "certificate" => finding.certificate.as_str(),
                       "file" => %finding.file.display(), "not_after" => %finding.not_after,
                       "error" => &message);
            } else {
                warn!(self.log, "tls.certificate_expiring"; "certificate" => finding.certificate.as_str(),
                      "file" => %finding.file.display(), "not_after" => %finding.not_after,
                      "seconds_left" => seconds_left as i64, "warning" => &message);
            }
            let mut event = AuditEvent::new(AuditAction::TlsCertificateExpiring)
                .target("daemon", &self.node_id)
                .new_value(json!({
                    "certificate": finding.certificate,
                    "file": finding.file,
                    "not_after": finding.not_after,
                    "seconds_left": seconds_left as i64,
                    "serial": match finding.certificate {
                        crate::peer_tls::WhichCertificate::Node => Some(&info.serial),
                        crate::peer_tls::WhichCertificate::Ca => None,
                    },
                }));
            if finding.expired() {
                event = event.failed(message);
            }
            self.audit.do_send(event);
        }
    }

    /// Reads the files again; see the module docs.
    pub fn reload(&self) {
        match self.transport.reload() {
            Ok(None) => {} // plaintext: no certificates
            Ok(Some(reloaded)) if !reloaded.changed() => {
                info!(self.log, "tls.unchanged"; "serial" => &reloaded.after.serial,
                      "note" => "the certificate files hold the certificates in use");
            }
            Ok(Some(reloaded)) => {
                let after = &reloaded.after;
                info!(self.log, "tls.reloaded"; "serial" => &after.serial,
                      "not_after" => %after.not_after, "ca_not_after" => %after.ca_not_after,
                      "subject" => &after.subject,
                      "note" => "new connections use the new certificates; established ones keep theirs");
                let mut event = AuditEvent::new(AuditAction::TlsReloaded)
                    .target("daemon", &self.node_id)
                    .new_value(json!(after));
                if let Some(before) = &reloaded.before {
                    event = event.old_value(json!(before));
                }
                self.audit.do_send(event);
                self.publish();
                self.check_expiry();
            }
            Err(e) => {
                let message = e.to_string();
                error!(self.log, "tls.reload_failed"; "error" => &message,
                       "note" => "the certificates in use stay in use");
                self.audit.do_send(
                    AuditEvent::new(AuditAction::TlsReloaded)
                        .target("daemon", &self.node_id)
                        .failed(message),
                );
            }
        }
    }
}
