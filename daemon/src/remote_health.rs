//! `steep-repl health --remote HOST:PORT`: a peer's health over gRPC, with
//! this node's certificates (mutual TLS, as the daemons talk), rendered like
//! the local `health`.

use crate::config::{Config, PeerAddr};
use crate::exit::Exit;
use crate::inspect::render;
use crate::terminal::printable;
use serde_json::{json, Map, Value};
use std::path::Path;
use std::time::Duration;
use steep_repl_actors::ipc::protocol::HealthReport;
use steep_repl_actors::peer_tls::{ConnectOptions, PeerTransport, TlsPaths};
use steep_repl_proto::coordinator_client::CoordinatorClient;
use steep_repl_proto::health_check_response::ServingStatus;
use steep_repl_proto::{HealthCheckRequest, HealthCheckResponse};

const TIMEOUT: Duration = Duration::from_secs(5);

/// The transport this node's configuration describes.
fn transport(config: &Config) -> Result<PeerTransport, String> {
    let tls = &config.grpc.tls;
    if tls.insecure {
        return Ok(PeerTransport::plaintext());
    }
    match (&tls.cert_file, &tls.key_file, &tls.ca_file) {
        (Some(cert_file), Some(key_file), Some(ca_file)) => {
            PeerTransport::mtls_from_files(&TlsPaths {
                cert_file: cert_file.clone(),
                key_file: key_file.clone(),
                ca_file: ca_file.clone(),
            })
            .map_err(|e| e.to_string())
        }
        _ => Err(format!(
            "{}: repl.grpc.tls.cert_file, key_file and ca_file are needed to talk to a peer",
            config.source.display()
        )),
    }
}

/// The answer in the shape of the local `/health` body.
fn as_health_json(r: &HealthCheckResponse) -> Value {
    let healthy = r.status == ServingStatus::Serving as i32;
    let mut components = Map::new();
    for (name, c) in &r.components {
        components.insert(
            name.clone(),
            json!({
                "healthy": c.healthy,
                "status": c.status,
                "error": if c.message.is_empty() { Value::Null } else { Value::String(c.message.clone()) },
            }),
        );
    }
    let since = r.uptime_since.as_ref().map(|t| t.seconds).unwrap_or(0);
    let uptime = (chrono::Utc::now().timestamp() - since).max(0);
    json!({
        "status": if healthy { "healthy" } else { "unhealthy" },
        "components": components,
        "node": {"node_id": r.node_id, "node_name": r.node_name},
        "uptime_seconds": uptime,
        "version": r.version,
    })
}

pub fn health(config_path: Option<&Path>, remote: &str, json_out: bool) -> Exit {
    let address: PeerAddr = match remote.parse() {
        Ok(a) => a,
        Err(e) => {
            eprintln!("steep-repl: --remote {remote}: {e}");
            return Exit::Usage;
        }
    };
    let config = match Config::load(config_path) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("steep-repl: {e}");
            return Exit::Config;
        }
    };
    let transport = match transport(&config) {
        Ok(t) => t,
        Err(e) => {
            eprintln!("steep-repl: {e}");
            return Exit::Config;
        }
    };
    let runtime = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(r) => r,
        Err(e) => {
            eprintln!("steep-repl: cannot start a runtime: {e}");
            return Exit::Error;
        }
    };
    let answer = runtime.block_on(async {
        let options = ConnectOptions {
            connect_timeout: TIMEOUT,
            ..Default::default()
        };
        let channel = transport
            .connect(&address.host, address.port, &options)
            .await
            .map_err(|e| format!("cannot reach {address}: {e}"))?;
        let mut client = CoordinatorClient::new(channel);
        match tokio::time::timeout(TIMEOUT, client.health_check(HealthCheckRequest::default()))
            .await
        {
            Ok(Ok(r)) => Ok(r.into_inner()),
            Ok(Err(status)) => Err(format!(
                "{address} refused the health check: {}",
                status.message()
            )),
            Err(_) => Err(format!(
                "{address} did not answer within {}s",
                TIMEOUT.as_secs()
            )),
        }
    });
    match answer {
        Ok(response) => {
            let body = as_health_json(&response);
            let report: HealthReport = match serde_json::from_value(body.clone()) {
                Ok(report) => report,
                Err(e) => {
                    eprintln!("steep-repl: the answer of {address} cannot be read: {e}");
                    return Exit::Error;
                }
            };
            if json_out {
                println!("{body}");
            } else {
                print!("{}", printable(&render::health(&report)));
            }
            if report.healthy() {
                Exit::Ok
            } else {
                Exit::Unhealthy
            }
        }
        Err(e) => {
            // The peer's own words are in it.
            eprintln!("steep-repl: {}", printable(&e));
            Exit::NotRunning
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use steep_repl_proto::ComponentHealth;

    #[test]
    fn a_peer_answer_reads_like_the_local_health_body() {
        let mut r = HealthCheckResponse {
            status: ServingStatus::NotServing as i32,
            node_id: "node-2".into(),
            node_name: "Node 2".into(),
            version: "0.1.0".into(),
            ..Default::default()
        };
        r.components.insert(
            "postgresql".into(),
            ComponentHealth {
                healthy: false,
                status: "connecting".into(),
                message: "connection refused".into(),
            },
        );
        let body = as_health_json(&r);
        assert_eq!(body["status"], "unhealthy");
        assert_eq!(body["node"]["node_id"], "node-2");
        assert_eq!(
            body["components"]["postgresql"]["error"],
            "connection refused"
        );
        let report: HealthReport = serde_json::from_value(body).unwrap();
        let text = render::health(&report);
        assert!(text.contains("connection refused"), "{text}");
        assert!(text.contains("role         -"), "{text}");
    }
}
