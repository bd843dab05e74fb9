//! What the certificates in use are, and how long until they expire.
//!
//! [`CertificateInfo`] is read once per load of the TLS material (start and
//! every reload): the node certificate's serial, names and notAfter, and
//! the earliest notAfter of the cluster CA file. [`check`] turns it into the
//! findings the daemon warns about: a certificate within the warning window
//! (`grpc.tls.expiry_warning`) or past its notAfter. The computation takes
//! the current time as an argument, so it is tested without waiting.

use std::path::PathBuf;
use std::time::Duration;

use chrono::{DateTime, Utc};
use serde::Serialize;

/// The certificates a node's TLS material holds, as operators see them.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct CertificateInfo {
    /// `grpc.tls.cert_file`.
    pub cert_file: PathBuf,
    /// `grpc.tls.ca_file`.
    pub ca_file: PathBuf,
    /// The node certificate's serial number, hexadecimal (`3c:1f:...`).
    pub serial: String,
    /// The node certificate's subject and names (`CN=node-a, SAN=[...]`).
    pub subject: String,
    /// The node certificate's notAfter.
    pub not_after: DateTime<Utc>,
    /// The earliest notAfter among the CA certificates of `ca_file`: the
    /// day peers stop trusting each other if nothing is done.
    pub ca_not_after: DateTime<Utc>,
}

/// Which certificate a finding or a metric is about.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum WhichCertificate {
    /// The node certificate (`grpc.tls.cert_file`).
    Node,
    /// The cluster CA (`grpc.tls.ca_file`).
    Ca,
}

impl WhichCertificate {
    /// The `certificate` label of `steep_repl_tls_certificate_expiry_seconds`.
    pub fn as_str(self) -> &'static str {
        match self {
            WhichCertificate::Node => "node",
            WhichCertificate::Ca => "ca",
        }
    }
}

impl CertificateInfo {
    /// Both certificates with their file and notAfter, node first.
    pub fn each(&self) -> [(WhichCertificate, &PathBuf, DateTime<Utc>); 2] {
        [
            (WhichCertificate::Node, &self.cert_file, self.not_after),
            (WhichCertificate::Ca, &self.ca_file, self.ca_not_after),
        ]
    }
}

/// Seconds from `now` until `not_after`; negative once it has passed.
pub fn seconds_until(not_after: DateTime<Utc>, now: DateTime<Utc>) -> f64 {
    (not_after - now).num_milliseconds() as f64 / 1000.0
}

/// Where a certificate stands at one instant.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Expiry {
    /// Beyond the warning window.
    Valid,
    /// Within the warning window: expires in `left`.
    Expiring { left: Duration },
    /// Past its notAfter by `ago`: peers refuse it.
    Expired { ago: Duration },
}

/// The state of a certificate valid until `not_after`, at `now`, warning
/// `warning` ahead. A certificate is expired from its notAfter on (webpki
/// refuses it from then).
pub fn expiry(not_after: DateTime<Utc>, now: DateTime<Utc>, warning: Duration) -> Expiry {
    match (not_after - now).to_std() {
        // A negative duration does not convert: the notAfter has passed.
        Err(_) => Expiry::Expired {
            ago: (now - not_after).to_std().unwrap_or_default(),
        },
        Ok(left) if left.is_zero() => Expiry::Expired {
            ago: Duration::ZERO,
        },
        Ok(left) if left <= warning => Expiry::Expiring { left },
        Ok(_) => Expiry::Valid,
    }
}

/// A certificate that needs the operator's attention.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ExpiryFinding {
    pub certificate: WhichCertificate,
    pub file: PathBuf,
    pub not_after: DateTime<Utc>,
    pub expiry: Expiry,
}

impl ExpiryFinding {
    /// True once the certificate is past its notAfter.
    pub fn expired(&self) -> bool {
        matches!(self.expiry, Expiry::Expired { .. })
    }
}

impl std::fmt::Display for ExpiryFinding {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let what = match self.certificate {
            WhichCertificate::Node => "node certificate (grpc.tls.cert_file)",
            WhichCertificate::Ca => "cluster CA certificate (grpc.tls.ca_file)",
        };
        let when = self.not_after.format("%Y-%m-%d %H:%M:%S UTC");
        match self.expiry {
            Expiry::Valid => write!(f, "{what} {} is valid until {when}", self.file.display()),
            Expiry::Expiring { left } => write!(
                f,
                "{what} {} expires in {} (on {when}): issue a new one, replace the file and \
                 reload the daemon (SIGHUP)",
                self.file.display(),
                human(left)
            ),
            Expiry::Expired { ago } => write!(
                f,
                "{what} {} expired {} ago (on {when}): peers refuse this node's connections; \
                 issue a new one, replace the file and reload the daemon (SIGHUP)",
                self.file.display(),
                human(ago)
            ),
        }
    }
}

/// The certificates of `info` that expire within `warning` of `now`, or
/// have expired.
pub fn check(info: &CertificateInfo, now: DateTime<Utc>, warning: Duration) -> Vec<ExpiryFinding> {
    info.each()
        .into_iter()
        .filter_map(|(certificate, file, not_after)| {
            let expiry = expiry(not_after, now, warning);
            (expiry != Expiry::Valid).then(|| ExpiryFinding {
                certificate,
                file: file.clone(),
                not_after,
                expiry,
            })
        })
        .collect()
}

/// "4d 23h", "5h 10m", "42s": precise enough for a warning.
fn human(d: Duration) -> String {
    let s = d.as_secs();
    let (days, hours, minutes) = (s / 86_400, (s % 86_400) / 3600, (s % 3600) / 60);
    if days > 0 {
        format!("{days}d {hours}h")
    } else if hours > 0 {
        format!("{hours}h {minutes}m")
    } else if minutes > 0 {
        format!("{minutes}m {}s", s % 60)
    } else {
        format!("{s}s")
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::TimeZone;

    const DAY: Duration = Duration::from_secs(86_400);

    fn at(secs: i64) -> DateTime<Utc> {
        Utc.timestamp_opt(1_800_000_000 + secs, 0).unwrap()
    }

    fn info(node: DateTime<Utc>, ca: DateTime<Utc>) -> CertificateInfo {
        CertificateInfo {
            cert_file: "/etc/steep-repl/tls/node-a.crt".into(),
            ca_file: "/etc/steep-repl/tls/ca.crt".into(),
            serial: "01".into(),
            subject: "CN=node-a, SAN=[node-a]".into(),
            not_after: node,
            ca_not_after: ca,
        }
    }

    #[test]
    fn seconds_until_is_negative_once_passed() {
        assert_eq!(seconds_until(at(90), at(0)), 90.0);
        assert_eq!(seconds_until(at(0), at(0)), 0.0);
        assert_eq!(seconds_until(at(0), at(1)), -1.0);
        assert_eq!(
            seconds_until(at(0) + chrono::Duration::milliseconds(1500), at(0)),
            1.5
        );
    }

    #[test]
    fn the_window_decides_between_valid_expiring_and_expired() {
        let warning = 30 * DAY;
        let not_after = at(0);
        let before = |d: Duration| not_after - chrono::Duration::from_std(d).unwrap();
        assert_eq!(expiry(not_after, before(31 * DAY), warning), Expiry::Valid);
        assert_eq!(
            expiry(not_after, before(30 * DAY), warning),
            Expiry::Expiring { left: 30 * DAY }
        );
        assert_eq!(
            expiry(not_after, before(DAY), warning),
            Expiry::Expiring { left: DAY }
        );
        assert_eq!(
            expiry(not_after, not_after, warning),
            Expiry::Expired {
                ago: Duration::ZERO
            }
        );
        assert_eq!(
            expiry(not_after, at(3600), warning),
            Expiry::Expired {
                ago: Duration::from_secs(3600)
            }
        );
    }

    #[test]
    fn check_reports_each_certificate_that_needs_attention() {
        let now = at(0);
        let soon = at(5 * 86_400);
        let far = at(400 * 86_400);
        assert!(check(&info(far, far), now, 30 * DAY).is_empty());

        let findings = check(&info(soon, far), now, 30 * DAY);
        assert_eq!(findings.len(), 1);
        assert_eq!(findings[0].certificate, WhichCertificate::Node);
        assert!(!findings[0].expired());
        let msg = findings[0].to_string();
        assert!(
            msg.contains("node certificate (grpc.tls.cert_file) /etc/steep-repl/tls/node-a.crt"),
            "{msg}"
        );
        assert!(msg.contains("expires in 5d 0h"), "{msg}");

        let findings = check(&info(far, at(-7200)), now, 30 * DAY);
        assert_eq!(findings.len(), 1);
        assert_eq!(findings[0].certificate, WhichCertificate::Ca);
        assert!(findings[0].expired());
        let msg = findings[0].to_string();
        assert!(msg.contains("expired 2h 0m ago"), "{msg}");
        assert!(msg.contains("/etc/steep-repl/tls/ca.crt"), "{msg}");
    }

    #[test]
    fn durations_read_as_people_say_them() {
        assert_eq!(human(Duration::from_secs(42)), "42s");
        assert_eq!(human(Duration::from_secs(125)), "2m 5s");
        assert_eq!(human(Duration::from_secs(5 * 3600 + 600)), "5h 10m");
        assert_eq!(human(4 * DAY + Duration::from_secs(23 * 3600)), "4d 23h");
    }
}
