//! Exit codes: distinct, documented in `--help`, stable for scripts and
//! monitoring.

use std::process::ExitCode;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u8)]
pub enum Exit {
    /// Success.
    Ok = 0,
    /// A runtime error (the message says which).
    Error = 1,
    /// Bad command line (clap's own code).
    Usage = 2,
    /// The daemon is not running, or the service is not installed.
    NotRunning = 3,
    /// The daemon answers but reports itself unhealthy.
    Unhealthy = 4,
    /// The configuration is missing or invalid.
    Config = 5,
    /// Another daemon already runs with this configuration.
    AlreadyRunning = 6,
    /// This node cannot reach a majority of the cluster (NO_QUORUM).
    NoQuorum = 7,
    /// A compare-and-set found another value (CAS_FAILED).
    CasFailed = 8,
    /// A write may or may not have been applied (UNKNOWN_OUTCOME).
    UnknownOutcome = 9,
    /// The daemon's Raft core stopped on a fatal error (a storage error such
    /// as a full disk or a failed fsync; the log says which). The service
    /// manager restarts the daemon, which reopens the Raft store.
    RaftStopped = 10,
    /// A bug: the daemon panicked (sysexits' EX_SOFTWARE). The log has the
    /// panic; the service manager restarts the daemon.
    Panicked = 70,
}

impl From<Exit> for ExitCode {
    fn from(exit: Exit) -> ExitCode {
        ExitCode::from(exit as u8)
    }
}

/// The table shown at the end of `--help`.
pub const EXIT_CODES_HELP: &str = "\
Exit codes:
  0  success
  1  error (the message says which)
  2  usage: bad command line
  3  the daemon is not running, or the service is not installed
  4  the daemon is unhealthy
  5  the configuration is missing or invalid
  6  another steep-repl already runs with this configuration
  7  no quorum: this node cannot reach a majority of the cluster (nothing was done)
  8  compare-and-set failed: the key holds another value
  9  unknown outcome: the write may or may not have been applied (retry with the same --request-id)
  10 the daemon's Raft store failed (a full disk, a failed fsync: the log says which); the service manager restarts the daemon
  70 the daemon panicked: a bug (the log has the panic; the service manager restarts the daemon)";
