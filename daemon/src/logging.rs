//! Logging: one slog root logger whose every line carries `node_id`.
//!
//! Under `run` in a terminal the output is human-readable on stderr. Started
//! by systemd (JOURNAL_STREAM is set) it goes to journald; otherwise, with
//! no terminal, to syslog. `log.target` can force any of them. The Windows
//! Event Log and macOS os_log go through the `log` facade (`slog-stdlog`)
//! into the maintained `eventlog` and `oslog` crates, behind `cfg` (not
//! compiled on the Linux machines this project is built on).
//!
//! Our dependencies log through the `log` facade (sqlx, rustls, actix) or
//! through `tracing` (tonic, hyper, h2, openraft), which emits `log` records
//! while no tracing subscriber is set (its `log` feature). Everywhere the
//! `log` facade is not already the sink, [`DependencyLog`] forwards those
//! records into the root logger as `dependency.log` events with their
//! `target`, at warning and above unless the configured level is debug or
//! trace, so that their chatter does not bury ours.

use slog::{o, Drain, Level, Logger};
use std::io::IsTerminal;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, RwLock};

/// The log level in effect, changeable while running (SIGHUP reload).
#[derive(Clone)]
pub struct LevelHandle {
    level: Arc<AtomicUsize>,
    /// Whether [`DependencyLog`] forwards to this logger, so that a new
    /// level also moves the `log` facade's maximum.
    bridged: Arc<AtomicBool>,
}

impl LevelHandle {
    fn new(level: Level) -> Self {
        LevelHandle {
            level: Arc::new(AtomicUsize::new(level.as_usize())),
            bridged: Arc::new(AtomicBool::new(false)),
        }
    }

    pub fn set(&self, level: Level) {
        self.level.store(level.as_usize(), Ordering::Relaxed);
        if self.bridged.load(Ordering::Relaxed) {
            log::set_max_level(log_filter(dependency_level(level)));
        }
    }

    pub fn get(&self) -> Level {
        Level::from_usize(self.level.load(Ordering::Relaxed)).unwrap_or(Level::Info)
    }
}

/// The level of our dependencies' records for a configured level: the
/// configured one at debug and trace, otherwise no chattier than warning.
fn dependency_level(configured: Level) -> Level {
    if configured.is_at_least(Level::Warning) || configured.as_usize() >= Level::Debug.as_usize() {
        configured
    } else {
        Level::Warning
    }
}

fn log_filter(level: Level) -> log::LevelFilter {
    match level {
        Level::Critical | Level::Error => log::LevelFilter::Error,
        Level::Warning => log::LevelFilter::Warn,
        Level::Info => log::LevelFilter::Info,
        Level::Debug => log::LevelFilter::Debug,
        Level::Trace => log::LevelFilter::Trace,
    }
}

fn slog_level(level: log::Level) -> Level {
    match level {
        log::Level::Error => Level::Error,
        log::Level::Warn => Level::Warning,
        log::Level::Info => Level::Info,
        log::Level::Debug => Level::Debug,
        log::Level::Trace => Level::Trace,
    }
}

/// The `log` facade's logger: forwards our dependencies' records (and,
/// through tracing's `log` feature, their tracing events) to the root
/// logger. Installed once per process; [`bridge_dependencies`] points it
/// at the logger of the moment.
struct DependencyLog {
    target: RwLock<Option<(Logger, LevelHandle)>>,
}

static DEPENDENCY_LOG: DependencyLog = DependencyLog {
    target: RwLock::new(None),
};

impl log::Log for DependencyLog {
    fn enabled(&self, metadata: &log::Metadata) -> bool {
        match &*self.target.read().unwrap_or_else(|e| e.into_inner()) {
            Some((_, level)) => {
                slog_level(metadata.level()).is_at_least(dependency_level(level.get()))
            }
            None => false,
        }
    }

    fn log(&self, record: &log::Record) {
        let target = self.target.read().unwrap_or_else(|e| e.into_inner());
        let Some((logger, level)) = &*target else {
            return;
        };
        if !slog_level(record.level()).is_at_least(dependency_level(level.get())) {
            return;
        }
        let (from, message) = (record.target(), record.args());
        // One arm a level: slog's macros take the level as a constant.
        match record.level() {
            log::Level::Error => {
                slog::error!(logger, "dependency.log"; "target" => from, "message" => %message)
            }
            log::Level::Warn => {
                slog::warn!(logger, "dependency.log"; "target" => from, "message" => %message)
            }
            log::Level::Info => {
                slog::info!(logger, "dependency.log"; "target" => from, "message" => %message)
            }
            log::Level::Debug => {
                slog::debug!(logger, "dependency.log"; "target" => from, "message" => %message)
            }
            log::Level::Trace => {
                slog::trace!(logger, "dependency.log"; "target" => from, "message" => %message)
            }
        }
    }

    fn flush(&self) {}
}

/// Sends our dependencies' `log` records (and tracing events) to `logger`
/// at [`dependency_level`] of `level`, following its changes.
pub fn bridge_dependencies(logger: &Logger, level: &LevelHandle) {
    level.bridged.store(true, Ordering::Relaxed);
    *DEPENDENCY_LOG
        .target
        .write()
        .unwrap_or_else(|e| e.into_inner()) = Some((logger.clone(), level.clone()));
    // Fails only when a logger is already installed: ours, from an earlier
    // call (it now points at the new logger), or a platform sink's.
    let _ = log::set_logger(&DEPENDENCY_LOG);
    log::set_max_level(log_filter(dependency_level(level.get())));
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
    if !through_log_facade(sink) {
        bridge_dependencies(&logger, &handle);
    }
    (logger, guard, handle)
}

/// Whether the sink itself writes through the `log` facade (Windows Event
/// Log, os_log): there our dependencies' records already reach it, and a
/// bridge back into slog would loop.
fn through_log_facade(sink: Sink) -> bool {
    match sink {
        #[cfg(windows)]
        Sink::EventLog => true,
        #[cfg(target_os = "macos")]
        Sink::OsLog => true,
        _ => false,
    }
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

    /// A drain that keeps every record's message and key-values as text.
    #[derive(Clone, Default)]
    struct Captured(Arc<std::sync::Mutex<Vec<String>>>);

    impl Drain for Captured {
        type Ok = ();
        type Err = slog::Never;

        fn log(&self, record: &slog::Record, _: &slog::OwnedKVList) -> Result<(), slog::Never> {
            struct Text(String);
            impl slog::Serializer for Text {
                fn emit_arguments(
                    &mut self,
                    key: slog::Key,
                    val: &std::fmt::Arguments,
                ) -> slog::Result {
                    self.0.push_str(&format!(" {key}={val}"));
                    Ok(())
                }
            }
            let mut text = Text(format!(
                "{} {}",
                record.level().as_short_str(),
                record.msg()
            ));
            slog::KV::serialize(&record.kv(), record, &mut text).unwrap();
            self.0.lock().unwrap().push(text.0);
            Ok(())
        }
    }

    impl Captured {
        fn lines(&self) -> Vec<String> {
            self.0.lock().unwrap().clone()
        }
    }

    #[test]
    fn dependencies_log_and_tracing_records_reach_slog_at_warning_unless_debug() {
        let captured = Captured::default();
        let logger = Logger::root(captured.clone().fuse(), o!());
        let level = LevelHandle::new(Level::Info);
        bridge_dependencies(&logger, &level);

        log::warn!(target: "sqlx::query", "slow statement: execution time exceeded alert threshold");
        log::info!(target: "sqlx::query", "summary");
        tracing::warn!(target: "h2::proto", "connection error: broken pipe");
        tracing::info!(target: "hyper::server", "accepted");
        let lines = captured.lines();
        assert!(
            lines.iter().any(|l| l.starts_with("WARN dependency.log")
                && l.contains("target=sqlx::query")
                && l.contains("slow statement")),
            "{lines:?}"
        );
        assert!(
            lines
                .iter()
                .any(|l| l.contains("target=h2::proto") && l.contains("broken pipe")),
            "{lines:?}"
        );
        assert_eq!(
            lines.len(),
            2,
            "info records of dependencies kept back: {lines:?}"
        );

        // `--debug` (or a reload to debug) lets them through.
        level.set(Level::Debug);
        log::debug!(target: "sqlx::pool", "acquired");
        tracing::debug!(target: "tonic::transport", "connecting");
        let lines = captured.lines();
        assert!(
            lines.iter().any(|l| l.contains("target=sqlx::pool")),
            "{lines:?}"
        );
        assert!(
            lines.iter().any(|l| l.contains("target=tonic::transport")),
            "{lines:?}"
        );
    }

    #[test]
    fn dependencies_are_quieter_than_us_except_when_debugging() {
        assert_eq!(dependency_level(Level::Info), Level::Warning);
        assert_eq!(dependency_level(Level::Warning), Level::Warning);
        assert_eq!(dependency_level(Level::Error), Level::Error);
        assert_eq!(dependency_level(Level::Debug), Level::Debug);
        assert_eq!(dependency_level(Level::Trace), Level::Trace);
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
