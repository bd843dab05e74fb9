//! Replicated state writes against etcd (the goal: `state.set`/`state.cas`
//! p99 on three nodes with mTLS at most that of a three-member etcd doing
//! the same puts in the same run).
//!
//! steep-repl side: three nodes on loopback made by the test harness
//! (each its own PostgreSQL 18 with the projection of the state map, a
//! release daemon when `STEEP_DAEMON_BIN` names one, gRPC and Raft over
//! mutual TLS, Raft logs fsync'd on local disk, the daemon's default Raft
//! and lease settings), formed with `cluster init` + `cluster add`.
//! Reference: three etcd members started here on loopback (Debian's
//! `etcd-server`; peers over mutual TLS with the same CA and node
//! certificates, clients over plain HTTP, etcd's default settings), their
//! data in a temporary directory on the same disk.
//!
//! In each round both sides run the same scenarios, alternately (which
//! side goes first alternates too): sequential writes on one connection
//! (one write in flight, a warm-up first) on the leader, on a follower, and
//! compare-and-set chains on the leader; then a throughput run of several
//! clients writing to the leader. Every error answer is counted by code,
//! and leader changes on either side are reported.
//!
//! Run: `cargo build --release && STEEP_DAEMON_BIN=$PWD/target/release/steep-repl target/release/state_bench`
//! Options: `--rounds 5 --ops 2000 --clients 8 --seconds 10
//! --throughput-rounds 2 --etcd-plain-peers --no-postgresql
//! --mirror-projection` (`--no-postgresql`: three witnesses, no PostgreSQL
//! and so no projection, to see what the projection costs;
//! `--mirror-projection`: etcd's writes are also applied to the three
//! PostgreSQL servers as the projection applies steep-repl's, to see how
//! much of the gap is the shared machine's).

use anyhow::{bail, Context, Result};
use base64::Engine;
use serde_json::{json, Value};
use std::collections::BTreeMap;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::os::unix::process::CommandExt;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};
use steep_repl_benches::projection_mirror::{ProjectionMirror, WriteCounter};
use steep_repl_tests::cluster::TestCluster;
use steep_repl_tests::ipc::IpcClient;
use steep_repl_tests::ports::free_port;

/// Keys the sequential writes rotate over (dotted: the projection's rule).
const KEYS: usize = 64;
const WARMUP: usize = 100;

struct Args {
    rounds: usize,
    ops: usize,
    clients: usize,
    seconds: u64,
    throughput_rounds: usize,
    etcd_plain_peers: bool,
    /// Every node a witness: no PostgreSQL, so no projection (what the
    /// replicated writes cost without it).
    no_postgresql: bool,
    /// etcd's writes also applied to the three PostgreSQL servers as the
    /// projection applies steep-repl's (benches/src/projection_mirror.rs).
    mirror_projection: bool,
}

impl Args {
    fn parse() -> Result<Args> {
        let mut args = Args {
            rounds: 5,
            ops: 2000,
            clients: 8,
            seconds: 10,
            throughput_rounds: 2,
            etcd_plain_peers: false,
            no_postgresql: false,
            mirror_projection: false,
        };
        let mut it = std::env::args().skip(1);
        while let Some(flag) = it.next() {
            let mut number = |name: &str| -> Result<u64> {
                it.next()
                    .with_context(|| format!("{name} needs a number"))?
                    .parse()
                    .with_context(|| format!("{name} needs a number"))
            };
            match flag.as_str() {
                "--rounds" => args.rounds = number("--rounds")? as usize,
                "--ops" => args.ops = number("--ops")? as usize,
                "--clients" => args.clients = number("--clients")? as usize,
                "--seconds" => args.seconds = number("--seconds")?,
                "--throughput-rounds" => {
                    args.throughput_rounds = number("--throughput-rounds")? as usize
                }
                "--etcd-plain-peers" => args.etcd_plain_peers = true,
                "--no-postgresql" => args.no_postgresql = true,
                "--mirror-projection" => args.mirror_projection = true,
                "--help" | "-h" => {
                    println!(
                        "state_bench [--rounds N] [--ops N] [--clients N] [--seconds S] \
                         [--throughput-rounds N] [--etcd-plain-peers] [--no-postgresql] \
                         [--mirror-projection]"
                    );
                    std::process::exit(0);
                }
                other => bail!("unknown option {other} (see --help)"),
            }
        }
        if args.no_postgresql && args.mirror_projection {
            bail!("--mirror-projection needs the nodes' PostgreSQL servers (not --no-postgresql)");
        }
        Ok(args)
    }
}

/// One write's outcome: its latency, or the error code it answered.
type Outcome = Result<Duration, String>;

/// A client that writes one value at a time.
trait Writer: Send {
    fn write(&mut self, n: u64) -> Result<Outcome>;
}

fn key_of(prefix: &str, n: u64) -> String {
    format!("bench.{prefix}.k{}", n % KEYS as u64)
}

/// `state.set` or `state.cas` on one daemon's IPC socket.
struct SteepWriter {
    ipc: IpcClient,
    prefix: String,
    cas: bool,
    /// The value last written to each key (the next cas expects it).
    last: BTreeMap<String, Value>,
}

impl SteepWriter {
    fn new(socket: &Path, prefix: &str, cas: bool) -> Result<SteepWriter> {
        Ok(SteepWriter {
            ipc: IpcClient::connect(socket)?,
            prefix: prefix.to_string(),
            cas,
            last: BTreeMap::new(),
        })
    }
}

impl Writer for SteepWriter {
    fn write(&mut self, n: u64) -> Result<Outcome> {
        let key = key_of(&self.prefix, n);
        let value = json!(n);
        let (method, params) = match (self.cas, self.last.get(&key)) {
            (true, Some(expected)) => (
                "state.cas",
                json!({"key": key, "expected": expected, "value": value}),
            ),
            _ => ("state.set", json!({"key": key, "value": value})),
        };
        let started = Instant::now();
        let answer = self.ipc.request(method, params)?;
        let took = started.elapsed();
        if let Some(code) = answer["error"]["code"].as_str() {
            return Ok(Err(code.to_string()));
        }
        self.last.insert(key, value);
        Ok(Ok(took))
    }
}

/// etcd's JSON gateway over one keep-alive HTTP/1.1 connection.
struct EtcdWriter {
    http: HttpConnection,
    prefix: String,
    cas: bool,
    last: BTreeMap<String, String>,
    /// Told of every acknowledged write (`--mirror-projection`).
    mirror: Option<WriteCounter>,
}

impl EtcdWriter {
    fn new(port: u16, prefix: &str, cas: bool, mirror: Option<WriteCounter>) -> Result<EtcdWriter> {
        Ok(EtcdWriter {
            http: HttpConnection::connect(port)?,
            prefix: prefix.to_string(),
            cas,
            last: BTreeMap::new(),
            mirror,
        })
    }
}

fn b64(s: &str) -> String {
    base64::engine::general_purpose::STANDARD.encode(s)
}

impl Writer for EtcdWriter {
    fn write(&mut self, n: u64) -> Result<Outcome> {
        let key = key_of(&self.prefix, n);
        let value = n.to_string();
        let (path, body) = match (self.cas, self.last.get(&key)) {
            (true, Some(expected)) => (
                "/v3/kv/txn",
                json!({
                    "compare": [{"key": b64(&key), "result": "EQUAL", "target": "VALUE", "value": b64(expected)}],
                    "success": [{"request_put": {"key": b64(&key), "value": b64(&value)}}],
                }),
            ),
            _ => (
                "/v3/kv/put",
                json!({"key": b64(&key), "value": b64(&value)}),
            ),
        };
        let started = Instant::now();
        let (status, answer) = self.http.post(path, &body)?;
        let took = started.elapsed();
        if status != 200 {
            return Ok(Err(format!("HTTP {status}")));
        }
        if path == "/v3/kv/txn" && answer["succeeded"] != json!(true) {
            return Ok(Err("compare failed".to_string()));
        }
        if let Some(mirror) = &self.mirror {
            mirror.acknowledged();
        }
        self.last.insert(key, value);
        Ok(Ok(took))
    }
}

/// A minimal HTTP/1.1 client: enough for etcd's JSON gateway.
struct HttpConnection {
    port: u16,
    reader: BufReader<TcpStream>,
}

impl HttpConnection {
    fn connect(port: u16) -> Result<HttpConnection> {
        let stream = TcpStream::connect(("127.0.0.1", port))?;
        stream.set_nodelay(true)?;
        stream.set_read_timeout(Some(Duration::from_secs(30)))?;
        Ok(HttpConnection {
            port,
            reader: BufReader::new(stream),
        })
    }

    fn post(&mut self, path: &str, body: &Value) -> Result<(u16, Value)> {
        let body = serde_json::to_vec(body)?;
        let mut request = format!(
            "POST {path} HTTP/1.1\r\nHost: 127.0.0.1:{}\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n",
            self.port,
            body.len()
        )
        .into_bytes();
        request.extend_from_slice(&body);
        self.reader.get_mut().write_all(&request)?;
        let mut line = String::new();
        self.reader.read_line(&mut line)?;
        let status: u16 = line
            .split_whitespace()
            .nth(1)
            .and_then(|s| s.parse().ok())
            .with_context(|| format!("bad status line {line:?}"))?;
        let mut length = None;
        let mut chunked = false;
        loop {
            line.clear();
            if self.reader.read_line(&mut line)? == 0 {
                bail!("etcd closed the connection");
            }
            let header = line.trim_end();
            if header.is_empty() {
                break;
            }
            let lower = header.to_ascii_lowercase();
            if let Some(v) = lower.strip_prefix("content-length:") {
                length = v.trim().parse::<usize>().ok();
            } else if lower.starts_with("transfer-encoding:") && lower.contains("chunked") {
                chunked = true;
            }
        }
        let mut bytes = Vec::new();
        if chunked {
            loop {
                line.clear();
                self.reader.read_line(&mut line)?;
                let size = usize::from_str_radix(line.trim(), 16)
                    .with_context(|| format!("bad chunk size {line:?}"))?;
                let mut chunk = vec![0; size + 2];
                self.reader.read_exact(&mut chunk)?;
                if size == 0 {
                    break;
                }
                bytes.extend_from_slice(&chunk[..size]);
            }
        } else {
            let mut body = vec![0; length.context("no Content-Length")?];
            self.reader.read_exact(&mut body)?;
            bytes = body;
        }
        let value = serde_json::from_slice(&bytes).unwrap_or(Value::Null);
        Ok((status, value))
    }
}

/// Three etcd members on loopback, killed (and their data removed) on drop;
/// the kernel kills them too if this process dies (parent-death signal).
struct Etcd {
    children: Vec<Child>,
    client_ports: Vec<u16>,
    _data: tempfile::TempDir,
}

impl Etcd {
    fn start(certs: &Path, plain_peers: bool) -> Result<Etcd> {
        let data = tempfile::Builder::new()
            .prefix("state-bench-etcd-")
            .tempdir()?;
        let client_ports: Vec<u16> = (0..3).map(|_| free_port()).collect();
        let peer_ports: Vec<u16> = (0..3).map(|_| free_port()).collect();
        let scheme = if plain_peers { "http" } else { "https" };
        let initial: Vec<String> = (0..3)
            .map(|i| format!("e{i}={scheme}://127.0.0.1:{}", peer_ports[i]))
            .collect();
        let mut children = Vec::new();
        for i in 0..3 {
            let dir = data.path().join(format!("e{i}"));
            let log = std::fs::File::create(data.path().join(format!("e{i}.log")))?;
            let mut cmd = Command::new("etcd");
            cmd.arg("--name")
                .arg(format!("e{i}"))
                .arg("--data-dir")
                .arg(&dir)
                .arg("--listen-client-urls")
                .arg(format!("http://127.0.0.1:{}", client_ports[i]))
                .arg("--advertise-client-urls")
                .arg(format!("http://127.0.0.1:{}", client_ports[i]))
                .arg("--listen-peer-urls")
                .arg(format!("{scheme}://127.0.0.1:{}", peer_ports[i]))
                .arg("--initial-advertise-peer-urls")
                .arg(format!("{scheme}://127.0.0.1:{}", peer_ports[i]))
                .arg("--initial-cluster")
                .arg(initial.join(","))
                .arg("--initial-cluster-state")
                .arg("new")
                .arg("--initial-cluster-token")
                .arg("state-bench");
            if !plain_peers {
                let node = format!("node-{}", i + 1);
                cmd.arg("--peer-cert-file")
                    .arg(certs.join(format!("{node}.crt")))
                    .arg("--peer-key-file")
                    .arg(certs.join(format!("{node}.key")))
                    .arg("--peer-trusted-ca-file")
                    .arg(certs.join("ca.crt"))
                    .arg("--peer-client-cert-auth");
            }
            cmd.stdout(Stdio::null()).stderr(log);
            // SAFETY: prctl is async-signal-safe; nothing else runs here.
            unsafe {
                cmd.pre_exec(|| {
                    nix::sys::prctl::set_pdeathsig(nix::sys::signal::Signal::SIGKILL)
                        .map_err(std::io::Error::from)
                });
            }
            children.push(cmd.spawn().context(
                "cannot start etcd (Debian's etcd-server: apt-get install -y etcd-server)",
            )?);
        }
        let etcd = Etcd {
            children,
            client_ports,
            _data: data,
        };
        let deadline = Instant::now() + Duration::from_secs(30);
        while etcd.leader().is_err() {
            if Instant::now() > deadline {
                bail!(
                    "etcd did not elect a leader within 30 s (logs in {})",
                    etcd._data.path().display()
                );
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        Ok(etcd)
    }

    /// (index of the leader, its raft term), from each member's status.
    fn leader(&self) -> Result<(usize, u64)> {
        let mut ids = Vec::new();
        let mut leader = None;
        for &port in &self.client_ports {
            let (status, answer) =
                HttpConnection::connect(port)?.post("/v3/maintenance/status", &json!({}))?;
            if status != 200 {
                bail!("status answered HTTP {status}");
            }
            ids.push(
                answer["header"]["member_id"]
                    .as_str()
                    .unwrap_or("")
                    .to_string(),
            );
            let term = answer["raftTerm"]
                .as_str()
                .and_then(|t| t.parse().ok())
                .unwrap_or(0);
            if let Some(l) = answer["leader"].as_str() {
                leader = Some((l.to_string(), term));
            }
        }
        let (id, term) = leader.context("no leader")?;
        let index = ids
            .iter()
            .position(|m| *m == id)
            .context("leader unknown")?;
        Ok((index, term))
    }
}

impl Drop for Etcd {
    fn drop(&mut self) {
        for child in &mut self.children {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

/// (leader index, term) of the steep-repl cluster from node-1's view.
fn steep_leader(cluster: &TestCluster) -> Result<(usize, u64)> {
    let status = cluster.nodes[0]
        .daemon
        .ipc()?
        .call("cluster.status", json!({}))?;
    let leader = status["leader"].as_str().context("no leader")?;
    let index = cluster
        .nodes
        .iter()
        .position(|n| n.node_id == leader)
        .context("leader unknown")?;
    Ok((index, status["term"].as_u64().unwrap_or(0)))
}

/// Latencies and errors of one scenario over every round.
#[derive(Default)]
struct Tally {
    latencies: Vec<Duration>,
    round_p99: Vec<Duration>,
    errors: BTreeMap<String, u64>,
    busy: Duration,
    /// CPU time used on the whole machine while the scenario ran.
    cpu: Duration,
}

impl Tally {
    fn add_round(&mut self, (outcomes, busy, cpu): Measured) {
        self.cpu += cpu;
        let mut round = Vec::new();
        for outcome in outcomes {
            match outcome {
                Ok(d) => round.push(d),
                Err(code) => *self.errors.entry(code).or_default() += 1,
            }
        }
        round.sort();
        self.round_p99.push(percentile(&round, 0.99));
        self.latencies.extend(round);
        self.busy += busy;
    }

    fn sorted(&self) -> Vec<Duration> {
        let mut all = self.latencies.clone();
        all.sort();
        all
    }

    /// Machine CPU time per answered write.
    fn cpu_per_op(&self) -> Duration {
        self.cpu / (self.latencies.len().max(1) as u32)
    }

    fn ops_per_second(&self) -> f64 {
        self.latencies.len() as f64 / self.busy.as_secs_f64().max(1e-9)
    }
}

fn percentile(sorted: &[Duration], q: f64) -> Duration {
    if sorted.is_empty() {
        return Duration::ZERO;
    }
    let i = ((sorted.len() as f64 * q).ceil() as usize).clamp(1, sorted.len()) - 1;
    sorted[i]
}

fn micros(d: Duration) -> String {
    let us = d.as_micros();
    let s = us.to_string();
    // Thin spaces between thousands, as the other tables of BENCHMARKS.md.
    let mut out = String::new();
    for (i, c) in s.chars().enumerate() {
        if i > 0 && (s.len() - i).is_multiple_of(3) {
            out.push(' ');
        }
        out.push(c);
    }
    out
}

/// Outcomes, the time they took, and the machine's CPU time meanwhile.
type Measured = (Vec<Outcome>, Duration, Duration);

/// CPU time the whole machine has used since boot (every process, user
/// and system; from /proc/stat, in clock ticks of 10 ms).
fn machine_cpu() -> Duration {
    let stat = std::fs::read_to_string("/proc/stat").unwrap_or_default();
    let ticks: u64 = stat
        .lines()
        .next()
        .unwrap_or("")
        .split_whitespace()
        .skip(1)
        .enumerate()
        // user nice system (idle iowait skipped) irq softirq; not steal,
        // the time the host gave to others
        .filter(|(i, _)| matches!(i, 0 | 1 | 2 | 5 | 6))
        .filter_map(|(_, v)| v.parse::<u64>().ok())
        .sum();
    Duration::from_millis(ticks * 10)
}

/// Sequential writes: `WARMUP` untimed, then `ops` timed.
fn sequential(writer: &mut dyn Writer, ops: usize, start: u64) -> Result<Measured> {
    for n in 0..WARMUP as u64 {
        let _ = writer.write(start + n)?;
    }
    let mut outcomes = Vec::with_capacity(ops);
    let cpu = machine_cpu();
    let began = Instant::now();
    for n in 0..ops as u64 {
        outcomes.push(writer.write(start + WARMUP as u64 + n)?);
    }
    Ok((outcomes, began.elapsed(), machine_cpu() - cpu))
}

/// `clients` writers in parallel for `seconds`; every outcome.
fn throughput(
    make: &dyn Fn(usize) -> Result<Box<dyn Writer>>,
    clients: usize,
    seconds: u64,
) -> Result<Measured> {
    let mut writers = Vec::new();
    for c in 0..clients {
        writers.push(make(c)?);
    }
    let cpu = machine_cpu();
    let began = Instant::now();
    let until = began + Duration::from_secs(seconds);
    let handles: Vec<_> = writers
        .into_iter()
        .map(|mut w| {
            std::thread::spawn(move || -> Result<Vec<Outcome>> {
                let mut outcomes = Vec::new();
                let mut n = 0;
                while Instant::now() < until {
                    outcomes.push(w.write(n)?);
                    n += 1;
                }
                Ok(outcomes)
            })
        })
        .collect();
    let mut all = Vec::new();
    for h in handles {
        all.extend(
            h.join()
                .map_err(|_| anyhow::anyhow!("a client panicked"))??,
        );
    }
    Ok((all, began.elapsed(), machine_cpu() - cpu))
}

const SCENARIOS: [&str; 4] = [
    "set / put, leader",
    "set / put, follower",
    "cas / txn, leader",
    "clients on the leader",
];

fn main() -> Result<()> {
    let args = Args::parse()?;
    let runtime = tokio::runtime::Runtime::new()?;
    let started = Instant::now();
    let stolen_before = stolen();
    eprintln!(
        "state_bench: daemon {}",
        steep_repl_tests::daemon::steep_repl_bin()?.display()
    );
    let witnesses: &[usize] = if args.no_postgresql { &[0, 1, 2] } else { &[] };
    let cluster = runtime.block_on(TestCluster::start_for_benchmark(
        &[50, 50, 50],
        witnesses,
        "",
        "",
    ))?;
    let etcd = Etcd::start(cluster.certs.dir.path(), args.etcd_plain_peers)?;
    let (steep_lead, steep_term) = steep_leader(&cluster)?;
    let (etcd_lead, etcd_term) = etcd.leader()?;
    let steep_follow = (steep_lead + 1) % 3;
    let etcd_follow = (etcd_lead + 1) % 3;
    eprintln!(
        "state_bench: steep-repl leader {} (term {steep_term}), etcd leader e{etcd_lead} (term {etcd_term}); load {}",
        cluster.nodes[steep_lead].node_id,
        load_average()
    );
    let socket = |i: usize| cluster.nodes[i].daemon.home.socket_path();
    let (mirror, counter) = if args.mirror_projection {
        let counter = WriteCounter::default();
        let servers: Vec<_> = cluster.nodes.iter().map(|n| &n.pg).collect();
        let mirror = runtime.block_on(ProjectionMirror::start(&servers, counter.clone()))?;
        (Some(mirror), Some(counter))
    } else {
        (None, None)
    };
    let mut steep: Vec<Tally> = (0..4).map(|_| Tally::default()).collect();
    let mut reference: Vec<Tally> = (0..4).map(|_| Tally::default()).collect();
    for round in 0..args.rounds {
        let base = (round * (args.ops + WARMUP)) as u64;
        for side in [round % 2, 1 - round % 2] {
            let p = format!("r{round}");
            if side == 0 {
                let mut w = SteepWriter::new(&socket(steep_lead), &format!("{p}l"), false)?;
                let m = sequential(&mut w, args.ops, base)?;
                steep[0].add_round(m);
                let mut w = SteepWriter::new(&socket(steep_follow), &format!("{p}f"), false)?;
                let m = sequential(&mut w, args.ops, base)?;
                steep[1].add_round(m);

                let mut w = SteepWriter::new(&socket(steep_lead), &format!("{p}c"), true)?;
                let m = sequential(&mut w, args.ops, base)?;
                steep[2].add_round(m);
            } else {
                let port = |i: usize| etcd.client_ports[i];
                let mut w =
                    EtcdWriter::new(port(etcd_lead), &format!("{p}l"), false, counter.clone())?;
                let m = sequential(&mut w, args.ops, base)?;
                reference[0].add_round(m);

                let mut w =
                    EtcdWriter::new(port(etcd_follow), &format!("{p}f"), false, counter.clone())?;
                let m = sequential(&mut w, args.ops, base)?;
                reference[1].add_round(m);

                let mut w =
                    EtcdWriter::new(port(etcd_lead), &format!("{p}c"), true, counter.clone())?;
                let m = sequential(&mut w, args.ops, base)?;
                reference[2].add_round(m);
            }
        }
        eprintln!(
            "state_bench: round {} of {} done ({:.0} s, load {})",
            round + 1,
            args.rounds,
            started.elapsed().as_secs_f64(),
            load_average()
        );
    }
    for round in 0..args.throughput_rounds {
        for side in [round % 2, 1 - round % 2] {
            let prefix = format!("t{round}");
            if side == 0 {
                let lead = socket(steep_lead);
                let make = |c: usize| -> Result<Box<dyn Writer>> {
                    Ok(Box::new(SteepWriter::new(
                        &lead,
                        &format!("{prefix}c{c}"),
                        false,
                    )?))
                };
                let m = throughput(&make, args.clients, args.seconds)?;
                steep[3].add_round(m);
            } else {
                let port = etcd.client_ports[etcd_lead];
                let make = |c: usize| -> Result<Box<dyn Writer>> {
                    Ok(Box::new(EtcdWriter::new(
                        port,
                        &format!("{prefix}c{c}"),
                        false,
                        counter.clone(),
                    )?))
                };
                let m = throughput(&make, args.clients, args.seconds)?;
                reference[3].add_round(m);
            }
        }
    }
    if let Some(mirror) = mirror {
        let applied = runtime.block_on(mirror.stop())?;
        println!(
            "etcd's writes were also applied to the three PostgreSQL servers as the projection applies steep-repl's (--mirror-projection): {applied:?} entries"
        );
    }
    let after_steep = steep_leader(&cluster)?;
    let after_etcd = etcd.leader()?;
    if after_steep != (steep_lead, steep_term) {
        println!("NOTE: the steep-repl leader or term changed during the run: {after_steep:?}");
    }
    if after_etcd != (etcd_lead, etcd_term) {
        println!("NOTE: the etcd leader or term changed during the run: {after_etcd:?}");
    }
    report(&args, &steep, &reference);
    let took = started.elapsed();
    let steal = stolen() - stolen_before;
    println!(
        "\n{:.0} s in all; CPU time taken by the host (steal): {:.1} s of {:.0} s on 2 cores ({:.0} %)",
        took.as_secs_f64(),
        steal.as_secs_f64(),
        took.as_secs_f64() * 2.0,
        100.0 * steal.as_secs_f64() / (took.as_secs_f64() * 2.0)
    );
    Ok(())
}

fn report(args: &Args, steep: &[Tally], reference: &[Tally]) {
    println!(
        "{} rounds x {} sequential writes per scenario; throughput: {} clients, {} x {} s",
        args.rounds, args.ops, args.clients, args.throughput_rounds, args.seconds
    );
    println!();
    println!(
        "| scenario | p50 µs | p90 µs | p99 µs | max µs | ops/s | machine CPU µs/write | errors |"
    );
    println!("|---|---:|---:|---:|---:|---:|---:|---|");
    for (i, name) in SCENARIOS.iter().enumerate() {
        for (side, tally) in [("steep-repl", &steep[i]), ("etcd", &reference[i])] {
            let s = tally.sorted();
            let errors = if tally.errors.is_empty() {
                "0".to_string()
            } else {
                format!("{:?}", tally.errors)
            };
            println!(
                "| {side} {name} | {} | {} | {} | {} | {:.0} | {} | {errors} |",
                micros(percentile(&s, 0.50)),
                micros(percentile(&s, 0.90)),
                micros(percentile(&s, 0.99)),
                micros(s.last().copied().unwrap_or_default()),
                tally.ops_per_second(),
                micros(tally.cpu_per_op()),
            );
        }
    }
    println!();
    println!("| steep-repl / etcd | p50 | p99 | p99 in each round | ops/s |");
    println!("|---|---:|---:|---|---:|");
    for (i, name) in SCENARIOS.iter().enumerate() {
        let (s, r) = (steep[i].sorted(), reference[i].sorted());
        let ratio = |a: Duration, b: Duration| a.as_secs_f64() / b.as_secs_f64().max(1e-9);
        let rounds: Vec<String> = steep[i]
            .round_p99
            .iter()
            .zip(&reference[i].round_p99)
            .map(|(a, b)| format!("{:.2}", ratio(*a, *b)))
            .collect();
        println!(
            "| {name} | {:.2} | **{:.2}** | {} | {:.2} |",
            ratio(percentile(&s, 0.5), percentile(&r, 0.5)),
            ratio(percentile(&s, 0.99), percentile(&r, 0.99)),
            rounds.join(", "),
            steep[i].ops_per_second() / reference[i].ops_per_second().max(1e-9),
        );
    }
}

/// CPU time the host took from this machine (steal) since boot.
fn stolen() -> Duration {
    let stat = std::fs::read_to_string("/proc/stat").unwrap_or_default();
    let ticks = stat
        .lines()
        .next()
        .and_then(|l| l.split_whitespace().nth(8))
        .and_then(|v| v.parse::<u64>().ok())
        .unwrap_or(0);
    Duration::from_millis(ticks * 10)
}

fn load_average() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .map(|s| s.split_whitespace().take(3).collect::<Vec<_>>().join(" "))
        .unwrap_or_default()
}
