//! Logging: one slog root logger whose every line carries `node_id`.
//!
//! Under `run` in a terminal the output is human-readable on stderr. Started
//! by systemd (JOURNAL_STREAM is set) it goes to journald; otherwise, with
//! no terminal, to syslog. `log.target` can force any of them. The Windows
//! Event Log and macOS os_log go through the `log` facade (`slog-stdlog`)
//! into the maintained `eventlog` and `oslog` crates, behind `cfg` (not
//! compiled on the Linux machines this project is built on).

use slog::{o, Drain, Level, Logger};
use std::io::IsTerminal;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

/// The log level in effect, changeable while running (SIGHUP reload).
#[derive(Clone)]
pub struct LevelHandle(Arc<AtomicUsize>);

impl LevelHandle {
    fn new(level: Level) -> Self {
        LevelHandle(Arc::new(AtomicUsize::new(level.as_usize())))
    }

    pub fn set(&self, level: Level) {
        self.0.store(level.as_usize(), Ordering::Relaxed);
    }

    pub fn get(&self) -> Level {
        Level::from_usize(self.0.load(Ordering::Relaxed)).unwrap_or(Level::Info)
    }
}

/// A level filter reading the [`LevelHandle`] on every record.
struct DynamicLevel<D> {
    drain: D,
    level: LevelHandle,
}

impl<D: Drain> Drain for DynamicLevel<D> {
    type Ok = Option<D::Ok>;
    type Err = D::Err;

    fn log(
        &self,
        record: &slog::Record,
        values: &slog::OwnedKVList,
    ) -> Result<Self::Ok, Self::Err> {
        if record.level().is_at_least(self.level.get()) {
            self.drain.log(record, values).map(Some)
        } else {
            Ok(None)
        }
    }
}

/// Where log lines go.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Sink {
    /// stderr, human-readable (colours only on a terminal).
    Terminal,
    /// The systemd journal, with structured fields.
    Journald,
    /// The local syslog daemon (/dev/log), RFC 3164.
    Syslog,
    /// The Windows Event Log (source "steep-repl").
    #[cfg(windows)]
    EventLog,
    /// macOS unified logging (subsystem io.steep.repl).
    #[cfg(target_os = "macos")]
    OsLog,
}

/// What `log.target: auto` means here and now.
pub fn auto_sink() -> Sink {
    choose_sink(
        std::env::var_os("JOURNAL_STREAM").is_some(),
        std::io::stderr().is_terminal(),
        cfg!(target_os = "linux"),
    )
}

/// The `auto` rule: journald under systemd, the terminal when there is one,
/// syslog otherwise (Linux); elsewhere stderr until native drains exist.
fn choose_sink(under_systemd: bool, stderr_is_terminal: bool, linux: bool) -> Sink {
    match (linux, under_systemd, stderr_is_terminal) {
        (true, true, _) => Sink::Journald,
        (_, _, true) | (false, _, _) => Sink::Terminal,
        (true, false, false) => Sink::Syslog,
    }
}

/// Keeps the asynchronous drain alive; dropping it flushes pending lines.
pub struct LogGuard {
    _async: Option<slog_async::AsyncGuard>,
}

/// Builds the root logger. A platform sink that cannot be opened (no
/// journald socket, no /dev/log) falls back to the terminal and says so on
/// the first line, so the daemon never runs blind.
pub fn build(sink: Sink, level: Level, node_id: &str) -> (Logger, LogGuard, LevelHandle) {
    let values = || o!("node_id" => node_id.to_string());
    let handle = LevelHandle::new(level);
    let (logger, guard, fallback) = match open(sink, &handle, values()) {
        Ok((logger, guard)) => (logger, guard, None),
        Err(reason) => {
            let (logger, guard) = terminal(&handle, values());
            (logger, guard, Some(reason))
        }
    };
    if let Some(reason) = fallback {
        slog::warn!(logger, "log.fallback"; "wanted" => format!("{sink:?}"), "error" => reason,
                    "using" => "stderr");
    }
    (logger, guard, handle)
}

fn open(
    sink: Sink,
    level: &LevelHandle,
    values: slog::OwnedKV<impl slog::SendSyncRefUnwindSafeKV + 'static>,
) -> Result<(Logger, LogGuard), String> {
    match sink {
        Sink::Terminal => Ok(terminal(level, values)),
        #[cfg(target_os = "linux")]
        Sink::Journald => {
            if std::env::var_os("JOURNAL_STREAM").is_none()
                && !std::path::Path::new("/run/systemd/journal/socket").exists()
            {
                return Err("no systemd journal on this machine".to_string());
            }
            let drain = slog_journald::JournaldDrain::default().ignore_res();
            Ok(wrap_async(drain, level, values))
        }
        #[cfg(target_os = "linux")]
        Sink::Syslog => {
            let drain = slog_syslog::unix_3164(slog_syslog::Facility::LOG_DAEMON)
                .map_err(|e| format!("cannot open syslog (/dev/log): {e}"))?
                .ignore_res();
            Ok(wrap_async(drain, level, values))
        }
        #[cfg(not(target_os = "linux"))]
        Sink::Journald | Sink::Syslog => Err("only available on Linux".to_string()),
        #[cfg(windows)]
        Sink::EventLog => {
            // The event source must be registered (eventlog::register, done
            // by an administrator at install); without it this fails.
            eventlog::init("steep-repl", log::Level::Trace)
                .map_err(|e| format!("cannot open the Windows Event Log source steep-repl: {e}"))?;
            log::set_max_level(log::LevelFilter::Trace);
            Ok(wrap_async(slog_stdlog::StdLog.ignore_res(), level, values))
        }
        #[cfg(target_os = "macos")]
        Sink::OsLog => {
            oslog::OsLogger::new("io.steep.repl")
                .level_filter(log::LevelFilter::Trace)
                .init()
                .map_err(|e| format!("cannot set up os_log: {e}"))?;
            Ok(wrap_async(slog_stdlog::StdLog.ignore_res(), level, values))
        }
    }
}

fn terminal(
    level: &LevelHandle,
    values: slog::OwnedKV<impl slog::SendSyncRefUnwindSafeKV + 'static>,
) -> (Logger, LogGuard) {
    if std::io::stderr().is_terminal() {
        let decorator = slog_term::TermDecorator::new().stderr().build();
        let drain = slog_term::FullFormat::new(decorator).build().fuse();
        wrap_async(drain, level, values)
    } else {
        let decorator = slog_term::PlainDecorator::new(std::io::stderr());
        let drain = slog_term::FullFormat::new(decorator).build().fuse();
        wrap_async(drain, level, values)
    }
}

fn wrap_async<D>(
    drain: D,
    level: &LevelHandle,
    values: slog::OwnedKV<impl slog::SendSyncRefUnwindSafeKV + 'static>,
) -> (Logger, LogGuard)
where
    D: Drain<Ok = (), Err = slog::Never> + Send + 'static,
{
    let (drain, guard) = slog_async::Async::new(drain)
        .chan_size(8192)
        // Block rather than drop: a lost log line is worse than a short wait.
        .overflow_strategy(slog_async::OverflowStrategy::Block)
        .thread_name("steep-repl-log".to_string())
        .build_with_guard();
    let drain = DynamicLevel {
        drain,
        level: level.clone(),
    }
    .fuse();
    (
        Logger::root(drain, values),
        LogGuard {
            _async: Some(guard),
        },
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_terminal_logger_builds_and_logs() {
        let (log, guard, level) = build(Sink::Terminal, Level::Debug, "node-a");
        slog::info!(log, "test.line"; "k" => 1);
        assert_eq!(level.get(), Level::Debug);
        level.set(Level::Warning);
        assert_eq!(level.get(), Level::Warning);
        drop(guard);
    }

    #[test]
    fn auto_picks_journald_under_systemd_then_the_terminal_then_syslog() {
        assert_eq!(choose_sink(true, false, true), Sink::Journald);
        assert_eq!(choose_sink(true, true, true), Sink::Journald);
        assert_eq!(choose_sink(false, true, true), Sink::Terminal);
        assert_eq!(choose_sink(false, false, true), Sink::Syslog);
        assert_eq!(choose_sink(true, false, false), Sink::Terminal);
    }
}
