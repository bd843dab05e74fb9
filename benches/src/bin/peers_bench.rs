//! Peer measurements (issue "peers"), with real daemons on loopback:
//!
//! 1. HealthCheck round trip over an open mTLS channel from another process
//!    (this one) to a daemon, p50/p99, against a reference measured in the
//!    same run: a bare tonic Coordinator answering a constant HealthCheck
//!    over the same mTLS transport, served by a child process (this binary
//!    with `serve-reference`) on a single-threaded runtime like the daemon's;
//! 2. time for three fresh nodes to agree on a coordinator;
//! 3. time from `kill -9` of a peer to `unreachable` in another node's
//!    registry, at default settings (heartbeat 1 s, unreachable after 3 s).
//!
//! Run: `cargo build --release && cargo run --release -p steep-repl-benches --bin peers_bench`

use anyhow::{Context, Result};
use std::time::{Duration, Instant};
use steep_repl_actors::peer_tls::{ConnectOptions, IncomingOptions, PeerTransport, TlsPaths};
use steep_repl_proto::coordinator_client::CoordinatorClient;
use steep_repl_proto::coordinator_server::{Coordinator, CoordinatorServer};
use steep_repl_proto::*;
use steep_repl_tests::cluster::TestCluster;
use steep_repl_tests::paths::repo_root;
use tonic::{Request, Response, Status};

const CALLS: usize = 20_000;

fn percentile(sorted: &[Duration], p: f64) -> f64 {
    let idx = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[idx].as_secs_f64() * 1e6
}

async fn round_trips(channel: tonic::transport::Channel) -> Result<Vec<Duration>> {
    let mut client = CoordinatorClient::new(channel);
    for _ in 0..500 {
        client.health_check(HealthCheckRequest::default()).await?;
    }
    let mut times = Vec::with_capacity(CALLS);
    for _ in 0..CALLS {
        let started = Instant::now();
        client.health_check(HealthCheckRequest::default()).await?;
        times.push(started.elapsed());
    }
    times.sort();
    Ok(times)
}

/// The reference server: answers HealthCheck with a constant.
struct Constant;

#[tonic::async_trait]
impl Coordinator for Constant {
    async fn health_check(
        &self,
        _: Request<HealthCheckRequest>,
    ) -> Result<Response<HealthCheckResponse>, Status> {
        Ok(Response::new(HealthCheckResponse {
            status: 1,
            node_id: "reference".into(),
            ..Default::default()
        }))
    }
    async fn register_node(
        &self,
        _: Request<RegisterNodeRequest>,
    ) -> Result<Response<RegisterNodeResponse>, Status> {
        Err(Status::unimplemented("reference"))
    }
    async fn get_nodes(
        &self,
        _: Request<GetNodesRequest>,
    ) -> Result<Response<GetNodesResponse>, Status> {
        Err(Status::unimplemented("reference"))
    }
    async fn heartbeat(
        &self,
        _: Request<HeartbeatRequest>,
    ) -> Result<Response<HeartbeatResponse>, Status> {
        Err(Status::unimplemented("reference"))
    }
}

fn report(name: &str, times: &[Duration]) {
    println!(
        "{name:<46} p50 {:>6.1} µs  p99 {:>6.1} µs  ({} calls)",
        percentile(times, 0.5),
        percentile(times, 0.99),
        times.len()
    );
}

async fn agree(cluster: &TestCluster, alive: &[usize], who: Option<&str>) -> Result<bool> {
    for &i in alive {
        if cluster.coordinator(i).await?.as_deref() != who {
            return Ok(false);
        }
    }
    Ok(true)
}

/// `peers_bench serve-reference CERT KEY CA`: the reference server, in its
/// own process; prints its port on stdout, serves until killed.
fn serve_reference(args: &[String]) -> Result<()> {
    let [cert, key, ca] = args else {
        anyhow::bail!("usage: peers_bench serve-reference CERT KEY CA");
    };
    let paths = TlsPaths {
        cert_file: cert.into(),
        key_file: key.into(),
        ca_file: ca.into(),
    };
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    runtime.block_on(async {
        let transport = PeerTransport::mtls_from_files(&paths)?;
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
        println!("{}", listener.local_addr()?.port());
        let incoming = transport.incoming(listener, IncomingOptions::default(), |_| {});
        tonic::transport::Server::builder()
            .add_service(CoordinatorServer::new(Constant))
            .serve_with_incoming(incoming)
            .await?;
        Ok::<_, anyhow::Error>(())
    })
}

fn main() -> Result<()> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let _ = rustls::crypto::ring::default_provider().install_default();
    if args.first().map(String::as_str) == Some("serve-reference") {
        return serve_reference(&args[1..]);
    }
    if std::env::var_os("STEEP_DAEMON_BIN").is_none() {
        std::env::set_var(
            "STEEP_DAEMON_BIN",
            repo_root().join("target/release/steep-repl"),
        );
    }
    let _ = rustls::crypto::ring::default_provider().install_default();
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    runtime.block_on(async {
        // 2. Agreement of three fresh nodes (the clock starts before the
        //    first daemon is spawned; PostgreSQL servers are started first).
        let started = Instant::now();
        let cluster = TestCluster::start(&[50, 70, 60]).await?;
        let spawned = started.elapsed();
        let deadline = Instant::now() + Duration::from_secs(60);
        while !agree(&cluster, &[0, 1, 2], Some("node-2")).await? {
            anyhow::ensure!(Instant::now() < deadline, "no agreement within 60 s");
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        println!(
            "three fresh nodes agree on a coordinator: {:.2} s after the daemons were started ({:.2} s including PostgreSQL start-up)",
            (started.elapsed() - spawned).as_secs_f64() + 0.0,
            started.elapsed().as_secs_f64()
        );

        // 1. HealthCheck round trips, daemon vs reference, same transport.
        let dir = cluster.certs.dir.path();
        let paths = TlsPaths {
            cert_file: dir.join("node-1.crt"),
            key_file: dir.join("node-1.key"),
            ca_file: dir.join("ca.crt"),
        };
        let transport = PeerTransport::mtls_from_files(&paths)?;
        let options = ConnectOptions::default();
        let mut child = std::process::Command::new(std::env::current_exe()?)
            .arg("serve-reference")
            .arg(&paths.cert_file)
            .arg(&paths.key_file)
            .arg(&paths.ca_file)
            .stdout(std::process::Stdio::piped())
            .spawn()?;
        // Whatever happens, the child is stopped before the result is used.
        let reference = async {
            let stdout = child.stdout.take().ok_or_else(|| anyhow::anyhow!("no stdout"))?;
            let mut line = String::new();
            std::io::BufRead::read_line(&mut std::io::BufReader::new(stdout), &mut line)?;
            let port: u16 = line.trim().parse().with_context(|| format!("serve-reference said {line:?}"))?;
            round_trips(transport.connect("127.0.0.1", port, &options).await?).await
        }
        .await;
        let _ = child.kill();
        let _ = child.wait();
        let reference = reference?;
        let ours = round_trips(transport.connect("127.0.0.1", cluster.nodes[1].grpc_port, &options).await?).await?;
        report("reference: bare tonic + same mTLS, other process", &reference);
        report("steep-repl daemon HealthCheck, other process", &ours);
        println!(
            "ratio daemon/reference: p50 {:.2}, p99 {:.2}",
            percentile(&ours, 0.5) / percentile(&reference, 0.5),
            percentile(&ours, 0.99) / percentile(&reference, 0.99)
        );

        // 3. kill -9 to unreachable, three times (node-3 killed and restarted).
        let mut cluster = cluster;
        let mut detections = Vec::new();
        for _ in 0..3 {
            let healthy = [("node-3", "healthy")];
            let deadline = Instant::now() + Duration::from_secs(60);
            while !cluster.sees(0, &healthy).await? {
                anyhow::ensure!(Instant::now() < deadline, "node-3 never healthy");
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
            cluster.nodes[2].daemon.kill9()?;
            let killed = Instant::now();
            while !cluster.sees(0, &[("node-3", "unreachable")]).await? {
                anyhow::ensure!(killed.elapsed() < Duration::from_secs(30), "never unreachable");
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
            detections.push(killed.elapsed().as_secs_f64());
            cluster.nodes[2].daemon.restart()?;
        }
        println!("kill -9 to unreachable in a peer's registry (3 runs): {:?} s", detections.iter().map(|d| (d * 100.0).round() / 100.0).collect::<Vec<_>>());
        Ok::<_, anyhow::Error>(())
    })
}
