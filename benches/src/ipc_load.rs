//! A closed-loop load client for newline-delimited JSON over a Unix socket:
//! `connections` blocking clients, each with one request in flight, send
//! the same request line and time every round trip. Used against the
//! daemon's IPC socket and against the reference echo server alike, so the
//! two numbers differ only by the server.

use anyhow::{bail, Context, Result};
use std::io::{BufRead, BufReader, Write};
use std::os::unix::net::UnixStream;
use std::path::Path;
use std::time::{Duration, Instant};

/// What one load run measured.
#[derive(Debug, Clone)]
pub struct LoadReport {
    pub requests: usize,
    pub connections: usize,
    pub elapsed: Duration,
    /// Every round trip, sorted.
    pub latencies: Vec<Duration>,
}

impl LoadReport {
    /// The `q` quantile (0.0..=1.0), nearest rank.
    pub fn quantile(&self, q: f64) -> Duration {
        if self.latencies.is_empty() {
            return Duration::ZERO;
        }
        let rank =
            ((q * self.latencies.len() as f64).ceil() as usize).clamp(1, self.latencies.len());
        self.latencies[rank - 1]
    }

    pub fn throughput(&self) -> f64 {
        self.requests as f64 / self.elapsed.as_secs_f64()
    }

    /// One line: `p50 12.3 µs  p99 45.6 µs  max ...  N req/s`.
    pub fn summary(&self) -> String {
        let us = |d: Duration| d.as_secs_f64() * 1e6;
        format!(
            "{} requests, {} connections: p50 {:.1} µs  p90 {:.1} µs  p99 {:.1} µs  p99.9 {:.1} µs  max {:.1} µs  {:.0} req/s",
            self.requests,
            self.connections,
            us(self.quantile(0.50)),
            us(self.quantile(0.90)),
            us(self.quantile(0.99)),
            us(self.quantile(0.999)),
            us(self.latencies.last().copied().unwrap_or_default()),
            self.throughput()
        )
    }
}

/// Sends `line` (one JSON request, without newline) `requests` times in
/// total over `connections` clients, after `warmup` untimed round trips
/// per client. Every answer must be one line; `check` vets the first one.
pub fn run(
    socket: &Path,
    line: &str,
    requests: usize,
    connections: usize,
    warmup: usize,
    check: impl Fn(&str) -> Result<()> + Sync,
) -> Result<LoadReport> {
    if connections == 0 || requests < connections {
        bail!("need at least one connection and one request per connection");
    }
    let mut request = line.as_bytes().to_vec();
    request.push(b'\n');
    let per_client = requests / connections;
    let barrier = std::sync::Barrier::new(connections + 1);
    let (results, elapsed) = std::thread::scope(|scope| {
        let workers: Vec<_> = (0..connections)
            .map(|_| {
                let (request, barrier, check) = (&request, &barrier, &check);
                scope.spawn(move || -> Result<Vec<Duration>> {
                    // Every client reaches the barrier, failed or not: the
                    // others (and the timer) wait for all of them there.
                    let connected = connect_and_warm_up(socket, request, warmup, check);
                    barrier.wait();
                    let (mut writer, mut reader) = connected?;
                    let mut answer = String::new();
                    let mut latencies = Vec::with_capacity(per_client);
                    for _ in 0..per_client {
                        let started = Instant::now();
                        round_trip(&mut writer, &mut reader, request, &mut answer)?;
                        latencies.push(started.elapsed());
                    }
                    Ok(latencies)
                })
            })
            .collect();
        barrier.wait();
        let started = Instant::now();
        let results: Vec<_> = workers.into_iter().map(|w| w.join()).collect();
        (results, started.elapsed())
    });
    let mut latencies = Vec::with_capacity(requests);
    for result in results {
        match result {
            Ok(Ok(mut client)) => latencies.append(&mut client),
            Ok(Err(e)) => return Err(e),
            Err(_) => bail!("a load client panicked"),
        }
    }
    latencies.sort_unstable();
    Ok(LoadReport {
        requests: latencies.len(),
        connections,
        elapsed,
        latencies,
    })
}

/// One connection, after `warmup` round trips (at least one), the first
/// answer checked.
fn connect_and_warm_up(
    socket: &Path,
    request: &[u8],
    warmup: usize,
    check: &(impl Fn(&str) -> Result<()> + Sync),
) -> Result<(UnixStream, BufReader<UnixStream>)> {
    let stream = UnixStream::connect(socket)
        .with_context(|| format!("connecting to {}", socket.display()))?;
    stream.set_read_timeout(Some(Duration::from_secs(10)))?;
    let mut writer = stream.try_clone()?;
    let mut reader = BufReader::new(stream);
    let mut answer = String::new();
    for i in 0..warmup.max(1) {
        round_trip(&mut writer, &mut reader, request, &mut answer)?;
        if i == 0 {
            check(answer.trim_end())?;
        }
    }
    Ok((writer, reader))
}

/// Writes one request line and reads its answer line into `answer`.
fn round_trip(
    writer: &mut UnixStream,
    reader: &mut BufReader<UnixStream>,
    request: &[u8],
    answer: &mut String,
) -> Result<()> {
    answer.clear();
    writer.write_all(request)?;
    if reader.read_line(answer)? == 0 {
        bail!("the server closed the connection");
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quantiles_use_the_nearest_rank() {
        let report = LoadReport {
            requests: 100,
            connections: 1,
            elapsed: Duration::from_secs(1),
            latencies: (1..=100).map(Duration::from_micros).collect(),
        };
        assert_eq!(report.quantile(0.5), Duration::from_micros(50));
        assert_eq!(report.quantile(0.99), Duration::from_micros(99));
        assert_eq!(report.quantile(1.0), Duration::from_micros(100));
        assert_eq!(report.throughput(), 100.0);
    }
}
