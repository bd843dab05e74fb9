//! How each field of the schema reads and prints, for the serde attributes
//! in `schema.rs`.
//!
//! Reading: every value arrives as text (the file reader keeps scalars as
//! written, so `mode: 0660` stays octal; the environment has only text),
//! goes through its parser in `values.rs`, and when it does not fit, the
//! error carries the sentence that parser expects and the text itself. The
//! loader adds where the text came from. A password's text is never put in
//! an error.
//!
//! Printing: JSON (the reload diff) sees plain values; `config check` also
//! sees the markers below, wrapped around a value as a newtype struct, which
//! every other serializer passes through.

use std::fmt;
use std::path::PathBuf;
use std::time::Duration;

use serde::de::{self, Deserializer, SeqAccess, Unexpected, Visitor};
use serde::{Deserialize, Serialize, Serializer};

use super::secret::Secret;
use super::types::{LogLevel, LogTarget, PeerAddr, SslMode, PEER_ADDR_EXPECTED};
use super::values;

/// `config check` prints the value bare (`1s`, not `"1s"`).
pub(crate) const PLAIN: &str = "$steep_repl::config::plain";
/// `config check` prints the mask instead of the value (unless unset).
pub(crate) const MASKED: &str = "$steep_repl::config::masked";
/// The key is a path: relative ones are resolved against where they came
/// from (the file's directory, or the working directory).
pub(crate) const PATH: &str = "$steep_repl::config::path";
/// Not a key at all (`Config::source`).
pub(crate) const NOT_A_KEY: &str = "$steep_repl::config::not_a_key";

/// What the peer list must be when it is not a list at all.
pub(crate) const PEER_LIST_EXPECTED: &str = "a list of HOST:PORT addresses";

/// Reads one text value; anything else (a list, a mapping) is refused
/// with the sentence of the key's parser.
struct Text<'a>(&'a str);

impl Visitor<'_> for Text<'_> {
    type Value = String;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.0)
    }

    fn visit_str<E: de::Error>(self, text: &str) -> Result<String, E> {
        Ok(text.to_string())
    }
}

fn refused<E: de::Error>(text: &str, expected: &str) -> E {
    E::invalid_value(Unexpected::Str(text), &expected)
}

fn parsed<'de, D, T>(d: D, expected: &str, parse: impl Fn(&str) -> Option<T>) -> Result<T, D::Error>
where
    D: Deserializer<'de>,
{
    let text = d.deserialize_str(Text(expected))?;
    parse(&text).ok_or_else(|| refused(&text, expected))
}

/// Empty text is "not set", so that an environment variable can clear what
/// the file set.
fn optional<'de, D, T>(
    d: D,
    expected: &str,
    parse: impl Fn(&str) -> Option<T>,
) -> Result<Option<T>, D::Error>
where
    D: Deserializer<'de>,
{
    let text = d.deserialize_str(Text(expected))?;
    if text.is_empty() {
        return Ok(None);
    }
    parse(&text)
        .map(Some)
        .ok_or_else(|| refused(&text, expected))
}

/// Fields read by one parser of `values.rs` with its sentence.
macro_rules! text_fields {
    ($($name:ident -> $ty:ty = $expected:expr, $parse:expr;)*) => {$(
        pub(crate) fn $name<'de, D: Deserializer<'de>>(d: D) -> Result<$ty, D::Error> {
            parsed(d, $expected, $parse)
        }
    )*};
}

text_fields! {
    node_id -> String = values::NODE_ID, values::node_id;
    name -> String = values::NAME, values::name;
    priority -> u8 = values::PRIORITY, values::priority;
    host -> String = values::HOST, values::host;
    pg_host -> String = values::PG_HOST, values::pg_host;
    port -> u16 = values::PORT, values::port;
    boolean -> bool = values::BOOL, values::boolean;
    bind -> std::net::IpAddr = values::BIND, values::bind;
    pool_size -> u32 = values::POOL_SIZE, values::pool_size;
    concurrent_requests -> usize = values::CONCURRENT_REQUESTS, values::concurrent_requests;
    peer_rate_limit -> u32 = values::PEER_RATE_LIMIT, values::peer_rate_limit;
    count -> u64 = values::COUNT, values::count;
    clock_error -> f64 = values::CLOCK_ERROR, values::clock_error;
    read_mode -> u32 = values::MODE, values::mode;
}

/// Duration keys, each with its range: `with` modules, printed bare.
macro_rules! duration_fields {
    ($($name:ident = $range:expr;)*) => {$(
        pub(crate) mod $name {
            use super::*;

            pub(crate) fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Duration, D::Error> {
                parsed(d, &$range.expected(), |t| $range.parse(t))
            }

            pub(crate) use super::ser_duration as serialize;
        }
    )*};
}

duration_fields! {
    connect_timeout = values::CONNECT_TIMEOUT;
    heartbeat = values::HEARTBEAT;
    rtt = values::RTT;
    unreachable = values::UNREACHABLE;
    request_timeout = values::REQUEST_TIMEOUT;
    expiry_warning = values::EXPIRY_WARNING;
    raft_heartbeat = values::RAFT_HEARTBEAT;
    election_timeout = values::ELECTION_TIMEOUT;
    lease = values::LEASE;
    failback = values::FAILBACK;
    retention = values::RETENTION;
    prune = values::PRUNE;
}

/// A `with` module for a key read by one function and printed by another.
macro_rules! with {
    ($($name:ident = $read:ident, $print:ident;)*) => {$(
        pub(crate) mod $name {
            pub(crate) use super::$print as serialize;
            pub(crate) use super::$read as deserialize;
        }
    )*};
}

with! {
    command = read_command, ser_masked;
    file_path = read_file_path, ser_path;
    required_file_path = read_required_file_path, ser_path;
    dir_path = read_dir_path, ser_path;
    mode = read_mode, ser_mode;
}

pub(crate) fn password<'de, D: Deserializer<'de>>(d: D) -> Result<Option<Secret>, D::Error> {
    // Any text is a password, so its text never reaches an error.
    optional(d, values::PASSWORD, |t| Some(Secret::new(t)))
}

pub(crate) fn read_command<'de, D: Deserializer<'de>>(d: D) -> Result<Option<String>, D::Error> {
    optional(d, values::COMMAND, values::command)
}

pub(crate) fn group<'de, D: Deserializer<'de>>(d: D) -> Result<Option<String>, D::Error> {
    optional(d, values::GROUP, values::group)
}

/// A path that may be unset. The loader has made it absolute already.
pub(crate) fn read_file_path<'de, D: Deserializer<'de>>(d: D) -> Result<Option<PathBuf>, D::Error> {
    optional(d, values::PATH, |t| values::name(t).map(PathBuf::from))
}

/// A path with a platform default: empty (the default's placeholder) when
/// unset, filled in by the loader.
pub(crate) fn read_required_file_path<'de, D: Deserializer<'de>>(
    d: D,
) -> Result<PathBuf, D::Error> {
    Ok(read_file_path(d)?.unwrap_or_default())
}

pub(crate) fn read_dir_path<'de, D: Deserializer<'de>>(d: D) -> Result<PathBuf, D::Error> {
    let dir = optional(d, values::DIR, |t| values::name(t).map(PathBuf::from))?;
    Ok(dir.unwrap_or_default())
}

fn one_of(names: impl IntoIterator<Item = &'static str>) -> String {
    format!(
        "one of {}",
        names.into_iter().collect::<Vec<_>>().join(", ")
    )
}

pub(crate) fn sslmode<'de, D: Deserializer<'de>>(d: D) -> Result<SslMode, D::Error> {
    parsed(
        d,
        &one_of(SslMode::ALL.map(SslMode::as_str)),
        SslMode::parse,
    )
}

pub(crate) fn log_level<'de, D: Deserializer<'de>>(d: D) -> Result<LogLevel, D::Error> {
    parsed(
        d,
        &one_of(LogLevel::ALL.map(LogLevel::as_str)),
        LogLevel::parse,
    )
}

pub(crate) fn log_target<'de, D: Deserializer<'de>>(d: D) -> Result<LogTarget, D::Error> {
    let available = one_of(LogTarget::available().iter().map(|t| t.as_str()));
    parsed(d, &available, LogTarget::parse)
}

/// One item of the peer list; a bad one is reported with its position.
struct PeerItem(PeerAddr);

impl<'de> Deserialize<'de> for PeerItem {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        parsed(d, PEER_ADDR_EXPECTED, |t| t.parse().ok()).map(PeerItem)
    }
}

struct PeerList;

impl<'de> Visitor<'de> for PeerList {
    type Value = Vec<PeerAddr>;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(PEER_LIST_EXPECTED)
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Vec<PeerAddr>, A::Error> {
        let mut peers = Vec::with_capacity(seq.size_hint().unwrap_or(0));
        while let Some(PeerItem(peer)) = seq.next_element()? {
            peers.push(peer);
        }
        Ok(peers)
    }
}

/// The peer list. Text (`a:1, b:2`, as the environment gives it) has been
/// split into a list by the loader, which knows list keys from the schema.
pub(crate) fn peers<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<PeerAddr>, D::Error> {
    d.deserialize_seq(PeerList)
}

/// Durations print as they are written in the file (`1s`, `500ms`, `2y`).
pub(crate) fn ser_duration<S: Serializer>(d: &Duration, s: S) -> Result<S::Ok, S::Error> {
    s.serialize_newtype_struct(PLAIN, &values::format_duration(*d))
}

/// File modes print as the octal string people write (`0660`).
pub(crate) fn ser_mode<S: Serializer>(mode: &u32, s: S) -> Result<S::Ok, S::Error> {
    s.collect_str(&format_args!("{mode:04o}"))
}

pub(crate) fn ser_masked<T: Serialize, S: Serializer>(value: &T, s: S) -> Result<S::Ok, S::Error> {
    s.serialize_newtype_struct(MASKED, value)
}

pub(crate) fn ser_path<T: Serialize, S: Serializer>(value: &T, s: S) -> Result<S::Ok, S::Error> {
    s.serialize_newtype_struct(PATH, value)
}

pub(crate) fn ser_not_a_key<T: Serialize, S: Serializer>(
    value: &T,
    s: S,
) -> Result<S::Ok, S::Error> {
    s.serialize_newtype_struct(NOT_A_KEY, value)
}
