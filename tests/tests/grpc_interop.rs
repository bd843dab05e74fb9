//! The wire contract from another gRPC stack: Python's grpcio, with code
//! generated from proto/…/repl.proto, calls HealthCheck and GetNodes over
//! mutual TLS (deploy/python-env.sh provides grpcio).

use std::process::Command;
use std::time::Duration;
use steep_repl_tests::cluster::TestCluster;
use steep_repl_tests::paths::repo_root;

fn python() -> String {
    if let Ok(python) = std::env::var("STEEP_TEST_PYTHON") {
        return python;
    }
    let script = repo_root().join("deploy/python-env.sh");
    let output = Command::new(&script)
        .output()
        .expect("running deploy/python-env.sh");
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    String::from_utf8(output.stdout).unwrap().trim().to_string()
}

#[tokio::test]
async fn python_grpcio_reads_health_and_nodes_over_mutual_tls() {
    let cluster = TestCluster::start(&[50, 60]).await.unwrap();
    let both = [("node-1", "healthy"), ("node-2", "healthy")];
    cluster
        .wait_until("two healthy nodes", Duration::from_secs(30), || async {
            Ok(cluster.sees(1, &both).await?
                && cluster.coordinator(1).await?.as_deref() == Some("node-2"))
        })
        .await
        .unwrap();
    let certs = &cluster.certs;
    let output = Command::new(python())
        .arg(repo_root().join("tests/python/interop.py"))
        .arg(repo_root().join("proto/proto"))
        .arg(format!("127.0.0.1:{}", cluster.nodes[1].grpc_port))
        .arg(certs.path("ca.crt"))
        .arg(certs.path("node-1.crt"))
        .arg(certs.path("node-1.key"))
        .output()
        .unwrap();
    assert!(
        output.status.success(),
        "interop.py failed: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    let seen: serde_json::Value = serde_json::from_slice(&output.stdout).unwrap();
    assert_eq!(seen["status"], "SERVING", "{seen}");
    assert_eq!(seen["node_id"], "node-2");
    assert_eq!(seen["components"]["postgresql"], true);
    assert!(seen["uptime_since"].as_i64().unwrap() > 1_700_000_000);
    let ids: Vec<&str> = seen["nodes"]
        .as_array()
        .unwrap()
        .iter()
        .map(|n| n["node_id"].as_str().unwrap())
        .collect();
    assert_eq!(ids, ["node-1", "node-2"]);
    assert_eq!(seen["nodes"][1]["grpc_port"], cluster.nodes[1].grpc_port);
    assert_eq!(seen["nodes"][1]["is_coordinator"], true);
    assert_eq!(
        seen["healthy_nodes"],
        serde_json::json!(["node-1", "node-2"])
    );
    assert_eq!(seen["coordinator_id"], "node-2");
}
