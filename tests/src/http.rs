//! A minimal HTTP/1.1 client over `std::net::TcpStream` for the daemon's
//! probes, and a strict reader of the Prometheus text format.
//!
//! Minimal on purpose: one request per connection (`Connection: close`),
//! the response read to EOF, so what a test sees is exactly what the server
//! wrote, with no client library smoothing over a missing or extra body.

use anyhow::{bail, Context, Result};
use std::collections::BTreeMap;
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::{Duration, Instant};

/// One HTTP response.
#[derive(Debug, Clone)]
pub struct Response {
    pub status: u16,
    /// Header names in lower case.
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
}

impl Response {
    pub fn header(&self, name: &str) -> Option<&str> {
        let name = name.to_ascii_lowercase();
        self.headers
            .iter()
            .find(|(k, _)| *k == name)
            .map(|(_, v)| v.as_str())
    }

    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }

    pub fn json(&self) -> Result<serde_json::Value> {
        serde_json::from_slice(&self.body)
            .with_context(|| format!("body is not JSON: {:?}", self.text()))
    }

    /// The body with `Transfer-Encoding: chunked` undone (servers other
    /// than the daemon, such as Prometheus, chunk large answers); the body
    /// as sent otherwise.
    pub fn dechunked(&self) -> Result<Vec<u8>> {
        if !self
            .header("transfer-encoding")
            .is_some_and(|v| v.eq_ignore_ascii_case("chunked"))
        {
            return Ok(self.body.clone());
        }
        let mut out = Vec::new();
        let mut rest = self.body.as_slice();
        loop {
            let line_end = rest
                .windows(2)
                .position(|w| w == b"\r\n")
                .context("chunk size line without CRLF")?;
            let size_line = std::str::from_utf8(&rest[..line_end])?;
            // Chunk extensions (";name=value") carry nothing we need.
            let hex = size_line.split(';').next().unwrap_or("").trim();
            let size = usize::from_str_radix(hex, 16)
                .with_context(|| format!("bad chunk size {size_line:?}"))?;
            rest = &rest[line_end + 2..];
            if size == 0 {
                return Ok(out);
            }
            if rest.len() < size + 2 || &rest[size..size + 2] != b"\r\n" {
                bail!("chunk of {size} bytes cut short");
            }
            out.extend_from_slice(&rest[..size]);
            rest = &rest[size + 2..];
        }
    }
}

/// Sends `method path` and reads the whole response (`timeout` per read).
pub fn request(addr: SocketAddr, method: &str, path: &str, timeout: Duration) -> Result<Response> {
    let mut stream = TcpStream::connect_timeout(&addr, timeout)
        .with_context(|| format!("connecting to {addr}"))?;
    stream.set_read_timeout(Some(timeout))?;
    stream.set_write_timeout(Some(timeout))?;
    write!(
        stream,
        "{method} {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n"
    )?;
    let mut raw = Vec::new();
    stream
        .read_to_end(&mut raw)
        .with_context(|| format!("reading the answer to {method} {path}"))?;
    parse_response(&raw)
        .with_context(|| format!("{method} {path}: {:?}", String::from_utf8_lossy(&raw)))
}

/// `GET path` with a generous timeout.
pub fn get(addr: SocketAddr, path: &str) -> Result<Response> {
    request(addr, "GET", path, Duration::from_secs(10))
}

fn parse_response(raw: &[u8]) -> Result<Response> {
    let split = raw
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .context("no end of the response head")?;
    let head = std::str::from_utf8(&raw[..split])?;
    let mut lines = head.split("\r\n");
    let status_line = lines.next().context("empty response")?;
    let mut parts = status_line.splitn(3, ' ');
    let (version, code) = (parts.next().unwrap_or(""), parts.next().unwrap_or(""));
    if !version.starts_with("HTTP/1.") {
        bail!("not an HTTP/1.x status line: {status_line:?}");
    }
    let status = code
        .parse()
        .with_context(|| format!("bad status line {status_line:?}"))?;
    let headers = lines
        .filter_map(|line| line.split_once(':'))
        .map(|(k, v)| (k.trim().to_ascii_lowercase(), v.trim().to_string()))
        .collect();
    Ok(Response {
        status,
        headers,
        body: raw[split + 4..].to_vec(),
    })
}

/// Polls `GET path` until it answers `status` (connection errors count as
/// "not yet"); returns that response.
pub fn wait_for_status(
    addr: SocketAddr,
    path: &str,
    status: u16,
    timeout: Duration,
) -> Result<Response> {
    wait_for(addr, path, &format!("status {status}"), timeout, |res| {
        res.status == status
    })
}

/// Polls `GET path` until `accept` takes the response; `what` names the
/// expectation in the error.
pub fn wait_for(
    addr: SocketAddr,
    path: &str,
    what: &str,
    timeout: Duration,
    accept: impl Fn(&Response) -> bool,
) -> Result<Response> {
    let deadline = Instant::now() + timeout;
    loop {
        let last = match get(addr, path) {
            Ok(res) if accept(&res) => return Ok(res),
            Ok(res) => format!("{} {}", res.status, res.text()),
            Err(e) => format!("{e:#}"),
        };
        if Instant::now() > deadline {
            bail!(
                "GET {path} on {addr} did not answer with {what} within {timeout:?}; last: {last}"
            );
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// One sample of a Prometheus text page.
#[derive(Debug, Clone, PartialEq)]
pub struct Sample {
    pub name: String,
    pub labels: BTreeMap<String, String>,
    pub value: f64,
}

/// A metric family: its `# TYPE` and its samples.
#[derive(Debug, Clone, Default)]
pub struct Family {
    pub kind: String,
    pub help: Option<String>,
    pub samples: Vec<Sample>,
}

/// Parses the Prometheus text exposition format (version 0.0.4) strictly:
/// valid names, quoted and escaped label values, numeric values, every
/// sample belonging to a family declared by `# TYPE` before it, each family
/// declared once.
pub fn parse_prometheus(text: &str) -> Result<BTreeMap<String, Family>> {
    let mut families: BTreeMap<String, Family> = BTreeMap::new();
    for (n, line) in text.lines().enumerate() {
        let at = || format!("line {}: {line:?}", n + 1);
        if line.is_empty() {
            continue;
        }
        if let Some(rest) = line.strip_prefix("# ") {
            let mut parts = rest.splitn(3, ' ');
            let (keyword, name, arg) = (parts.next(), parts.next(), parts.next());
            match (keyword, name) {
                (Some("TYPE"), Some(name)) => {
                    check_metric_name(name).with_context(at)?;
                    let kind = arg.context("TYPE without a type").with_context(at)?;
                    if !["counter", "gauge", "histogram", "summary", "untyped"].contains(&kind) {
                        bail!("unknown type {kind:?} ({})", at());
                    }
                    let family = families.entry(name.to_string()).or_default();
                    if !family.kind.is_empty() || !family.samples.is_empty() {
                        bail!("{name} declared twice or after its samples ({})", at());
                    }
                    family.kind = kind.to_string();
                }
                (Some("HELP"), Some(name)) => {
                    check_metric_name(name).with_context(at)?;
                    families.entry(name.to_string()).or_default().help = arg.map(str::to_string);
                }
                // Other comments are allowed and carry nothing.
                _ => {}
            }
            continue;
        }
        if line.starts_with('#') {
            continue;
        }
        let sample = parse_sample(line).with_context(at)?;
        let family_name = family_of(&sample.name, &families)
            .with_context(|| format!("sample of an undeclared family ({})", at()))?;
        families
            .get_mut(&family_name)
            .context("family vanished")?
            .samples
            .push(sample);
    }
    Ok(families)
}

fn family_of(sample: &str, families: &BTreeMap<String, Family>) -> Option<String> {
    if families.get(sample).is_some_and(|f| !f.kind.is_empty()) {
        return Some(sample.to_string());
    }
    for suffix in ["_bucket", "_sum", "_count"] {
        if let Some(base) = sample.strip_suffix(suffix) {
            if families
                .get(base)
                .is_some_and(|f| f.kind == "histogram" || f.kind == "summary")
            {
                return Some(base.to_string());
            }
        }
    }
    None
}

fn check_metric_name(name: &str) -> Result<()> {
    let mut chars = name.chars();
    let first_ok = chars
        .next()
        .is_some_and(|c| c.is_ascii_alphabetic() || c == '_' || c == ':');
    if !first_ok || !chars.all(|c| c.is_ascii_alphanumeric() || c == '_' || c == ':') {
        bail!("invalid metric name {name:?}");
    }
    Ok(())
}

fn parse_sample(line: &str) -> Result<Sample> {
    let name_end = line.find(['{', ' ']).context("no value")?;
    let name = &line[..name_end];
    check_metric_name(name)?;
    let mut labels = BTreeMap::new();
    let mut rest = &line[name_end..];
    if let Some(after) = rest.strip_prefix('{') {
        let mut chars = after.char_indices().peekable();
        let end = loop {
            // label name
            let start = match chars.peek() {
                Some((i, '}')) => break *i + 1,
                Some((i, _)) => *i,
                None => bail!("unterminated labels"),
            };
            let mut eq = None;
            for (i, c) in chars.by_ref() {
                if c == '=' {
                    eq = Some(i);
                    break;
                }
            }
            let eq = eq.context("label without '='")?;
            let label = &after[start..eq];
            let valid = label
                .chars()
                .next()
                .is_some_and(|c| c.is_ascii_alphabetic() || c == '_')
                && label.chars().all(|c| c.is_ascii_alphanumeric() || c == '_');
            if !valid {
                bail!("invalid label name {label:?}");
            }
            if chars.next().map(|(_, c)| c) != Some('"') {
                bail!("label value of {label} is not quoted");
            }
            let mut value = String::new();
            loop {
                match chars.next() {
                    Some((_, '\\')) => match chars.next() {
                        Some((_, '\\')) => value.push('\\'),
                        Some((_, '"')) => value.push('"'),
                        Some((_, 'n')) => value.push('\n'),
                        other => bail!("bad escape {other:?} in label {label}"),
                    },
                    Some((_, '"')) => break,
                    Some((_, c)) => value.push(c),
                    None => bail!("unterminated value of label {label}"),
                }
            }
            labels.insert(label.to_string(), value);
            match chars.next() {
                Some((_, ',')) => continue,
                Some((i, '}')) => break i + 1,
                other => bail!("expected ',' or '}}' after label {label}, got {other:?}"),
            }
        };
        rest = &after[end..];
    }
    let mut fields = rest.split_whitespace();
    let value = fields.next().context("no value")?;
    let value = match value {
        "NaN" => f64::NAN,
        "+Inf" => f64::INFINITY,
        "-Inf" => f64::NEG_INFINITY,
        v => v.parse().with_context(|| format!("bad value {v:?}"))?,
    };
    if let Some(ts) = fields.next() {
        ts.parse::<i64>()
            .with_context(|| format!("bad timestamp {ts:?}"))?;
    }
    if fields.next().is_some() {
        bail!("trailing fields");
    }
    Ok(Sample {
        name: name.to_string(),
        labels,
        value,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_parser_accepts_the_format_and_rejects_what_prometheus_would() {
        let page = "# HELP a_total Things.\n# TYPE a_total counter\na_total{x=\"q\\\"\\\\\",y=\"2\"} 3\n\
                    # TYPE h histogram\nh_bucket{le=\"+Inf\"} 1\nh_sum 0.5\nh_count 1\n# TYPE g gauge\n";
        let families = parse_prometheus(page).unwrap();
        assert_eq!(families["a_total"].samples[0].labels["x"], "q\"\\");
        assert_eq!(families["h"].samples.len(), 3);
        assert!(families["g"].samples.is_empty());
        for bad in [
            "undeclared 1\n",
            "# TYPE a gauge\na{x=1} 1\n",
            "# TYPE a gauge\na one\n",
            "# TYPE 1a gauge\n",
        ] {
            assert!(parse_prometheus(bad).is_err(), "{bad:?} accepted");
        }
    }

    #[test]
    fn a_chunked_body_is_put_back_together_and_a_cut_one_is_refused() {
        let res = parse_response(
            b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n3\r\n{\"a\r\nb;x=y\r\n\":12345678}\r\n0\r\n\r\n",
        )
        .unwrap();
        assert_eq!(res.dechunked().unwrap(), b"{\"a\":12345678}");
        let cut = parse_response(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n9\r\nabc")
            .unwrap();
        assert!(cut.dechunked().is_err());
        let plain = parse_response(b"HTTP/1.1 200 OK\r\n\r\n3\r\nabc").unwrap();
        assert_eq!(plain.dechunked().unwrap(), b"3\r\nabc");
    }

    #[test]
    fn a_response_splits_into_status_headers_and_body() {
        let res =
            parse_response(b"HTTP/1.1 503 Service Unavailable\r\nContent-Type: a/b\r\n\r\n{}")
                .unwrap();
        assert_eq!(
            (res.status, res.header("content-type"), res.body.as_slice()),
            (503, Some("a/b"), &b"{}"[..])
        );
    }
}
