//! The audit spool: a local, append-only file of JSON lines holding every
//! audit event that has not been written to PostgreSQL yet.
//!
//! An event is appended (one `write` of a whole line) before anything else
//! happens to it, so a `kill -9` loses nothing that reached the spool: the
//! page cache keeps it. On start the file is read back; a torn last line (a
//! crash in the middle of a write) is skipped and counted. When everything
//! is in PostgreSQL the file is truncated; while PostgreSQL is away it is
//! rewritten from time to time to drop what was written meanwhile.

use crate::audit_event::AuditEvent;
use std::collections::{HashSet, VecDeque};
use std::fs::{File, OpenOptions};
use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};

#[derive(Debug, thiserror::Error)]
pub enum SpoolError {
    #[error("cannot create the audit spool folder {path}: {source}")]
    CreateDir {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("cannot open the audit spool {path}: {source}")]
    Open {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("cannot read the audit spool {path}: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("cannot write the audit spool {path}: {source}")]
    Write {
        path: PathBuf,
        source: std::io::Error,
    },
}

/// What was found in the spool when it was opened.
#[derive(Debug, Default)]
pub struct Recovered {
    /// Events to write, oldest first, each once.
    pub events: VecDeque<AuditEvent>,
    /// Lines that could not be parsed (a torn write).
    pub corrupt_lines: u64,
    /// Events beyond `spool_max_events`, not read back (as events beyond it
    /// are dropped while the daemon runs).
    pub over_limit: u64,
}

pub struct Spool {
    path: PathBuf,
    file: File,
    /// Lines in the file, written or not.
    lines: u64,
    /// The file's length after the last whole write: a write the disk
    /// refuses halfway is cut back to it.
    len: u64,
    /// fsyncs so far.
    syncs: u64,
}

fn open_append(path: &Path) -> Result<File, SpoolError> {
    let mut options = OpenOptions::new();
    options.create(true).append(true).read(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        options.mode(0o600);
    }
    options.open(path).map_err(|source| SpoolError::Open {
        path: path.to_path_buf(),
        source,
    })
}

impl Spool {
    /// Opens (creating when missing) the spool and reads back what it holds,
    /// at most `max_events` events (the oldest), so that a huge file cannot
    /// take the daemon's memory.
    pub fn open(path: &Path, max_events: u64) -> Result<(Spool, Recovered), SpoolError> {
        if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
            std::fs::create_dir_all(dir).map_err(|source| SpoolError::CreateDir {
                path: dir.to_path_buf(),
                source,
            })?;
        }
        let file = open_append(path)?;
        let mut recovered = Recovered::default();
        let mut seen = HashSet::new();
        let mut lines = 0;
        let reader = BufReader::new(file.try_clone().map_err(|source| SpoolError::Read {
            path: path.to_path_buf(),
            source,
        })?);
        for line in reader.split(b'\n') {
            let line = line.map_err(|source| SpoolError::Read {
                path: path.to_path_buf(),
                source,
            })?;
            if line.is_empty() {
                continue;
            }
            lines += 1;
            match serde_json::from_slice::<AuditEvent>(&line) {
                Ok(event) => {
                    if recovered.events.len() as u64 >= max_events {
                        recovered.over_limit += 1;
                    } else if seen.insert(event.event_id) {
                        recovered.events.push_back(event);
                    }
                }
                Err(_) => recovered.corrupt_lines += 1,
            }
        }
        let len = file
            .metadata()
            .map_err(|source| SpoolError::Read {
                path: path.to_path_buf(),
                source,
            })?
            .len();
        let mut spool = Spool {
            path: path.to_path_buf(),
            file,
            lines,
            len,
            syncs: 0,
        };
        if recovered.corrupt_lines > 0 || recovered.over_limit > 0 {
            // Do not leave a torn line in front of the next append, nor
            // events that were not read back.
            spool.rewrite(&recovered.events)?;
        }
        Ok((spool, recovered))
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Lines in the file (written to PostgreSQL or not).
    pub fn lines(&self) -> u64 {
        self.lines
    }

    /// Appends events with a single write.
    pub fn append<'a>(
        &mut self,
        events: impl IntoIterator<Item = &'a AuditEvent>,
    ) -> Result<(), SpoolError> {
        let mut buffer = Vec::with_capacity(512);
        let mut count = 0;
        for event in events {
            // Serializing our own struct cannot fail: every field is plain data.
            if serde_json::to_writer(&mut buffer, event).is_ok() {
                buffer.push(b'\n');
                count += 1;
            }
        }
        if let Err(source) = self.file.write_all(&buffer) {
            // A full disk may have taken part of the buffer: cut it off, or
            // the next line would be glued to it and both be unreadable.
            let _ = self.file.set_len(self.len);
            return Err(SpoolError::Write {
                path: self.path.clone(),
                source,
            });
        }
        self.len += buffer.len() as u64;
        self.lines += count;
        Ok(())
    }

    /// Makes the file hold exactly `pending`: truncation when empty,
    /// otherwise a rewrite through a temporary file and a rename, so a crash
    /// leaves either the old or the new file, never half of one.
    pub fn rewrite(&mut self, pending: &VecDeque<AuditEvent>) -> Result<(), SpoolError> {
        let write_err = |source| SpoolError::Write {
            path: self.path.clone(),
            source,
        };
        if pending.is_empty() {
            self.file.set_len(0).map_err(write_err)?;
            self.lines = 0;
            self.len = 0;
            return Ok(());
        }
        let tmp = self.path.with_extension("spool.tmp");
        {
            let mut out = std::io::BufWriter::new(File::create(&tmp).map_err(|source| {
                SpoolError::Write {
                    path: tmp.clone(),
                    source,
                }
            })?);
            for event in pending {
                if serde_json::to_writer(&mut out, event).is_ok() {
                    out.write_all(b"\n").map_err(write_err)?;
                }
            }
            let file = out.into_inner().map_err(|e| SpoolError::Write {
                path: tmp.clone(),
                source: e.into_error(),
            })?;
            file.sync_data().map_err(write_err)?;
        }
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            std::fs::set_permissions(&tmp, std::fs::Permissions::from_mode(0o600))
                .map_err(write_err)?;
        }
        std::fs::rename(&tmp, &self.path).map_err(write_err)?;
        self.file = open_append(&self.path)?;
        self.len = self.file.metadata().map_err(write_err)?.len();
        self.lines = pending.len() as u64;
        Ok(())
    }

    /// Flushes the file to stable storage (for power loss; a process crash
    /// needs no sync).
    pub fn sync(&mut self) -> Result<(), SpoolError> {
        self.syncs += 1;
        self.file.sync_data().map_err(|source| SpoolError::Write {
            path: self.path.clone(),
            source,
        })
    }

    /// How many times the file was flushed to stable storage.
    pub fn syncs(&self) -> u64 {
        self.syncs
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::audit_event::AuditAction;

    fn event(n: u32) -> AuditEvent {
        AuditEvent::new(AuditAction::DaemonStarted).target("daemon", format!("n{n}"))
    }

    #[test]
    fn appended_events_are_recovered_in_order_after_reopening() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("sub/audit.spool");
        let events: Vec<_> = (0..5).map(event).collect();
        {
            let (mut spool, recovered) = Spool::open(&path, u64::MAX).unwrap();
            assert!(recovered.events.is_empty());
            spool.append(&events[..2]).unwrap();
            spool.append(&events[2..]).unwrap();
            assert_eq!(spool.lines(), 5);
        }
        let (_spool, recovered) = Spool::open(&path, u64::MAX).unwrap();
        assert_eq!(Vec::from(recovered.events), events);
        assert_eq!(recovered.corrupt_lines, 0);
    }

    #[test]
    fn a_torn_last_line_is_skipped_counted_and_removed() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("audit.spool");
        let good = event(1);
        {
            let (mut spool, _) = Spool::open(&path, u64::MAX).unwrap();
            spool.append([&good]).unwrap();
        }
        let mut raw = OpenOptions::new().append(true).open(&path).unwrap();
        raw.write_all(b"{\"event_id\":\"6a1").unwrap();
        drop(raw);

        let (mut spool, recovered) = Spool::open(&path, u64::MAX).unwrap();
        assert_eq!(Vec::from(recovered.events), vec![good.clone()]);
        assert_eq!(recovered.corrupt_lines, 1);
        let next = event(2);
        spool.append([&next]).unwrap();
        let (_, again) = Spool::open(&path, u64::MAX).unwrap();
        assert_eq!(Vec::from(again.events), vec![good, next]);
        assert_eq!(again.corrupt_lines, 0);
    }

    #[test]
    fn a_duplicated_event_is_recovered_once() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("audit.spool");
        let e = event(1);
        {
            let (mut spool, _) = Spool::open(&path, u64::MAX).unwrap();
            spool.append([&e, &e]).unwrap();
        }
        let (_, recovered) = Spool::open(&path, u64::MAX).unwrap();
        assert_eq!(recovered.events.len(), 1);
    }

    #[test]
    fn rewrite_keeps_only_pending_events_and_truncates_when_empty() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("audit.spool");
        let (mut spool, _) = Spool::open(&path, u64::MAX).unwrap();
        let events: Vec<_> = (0..4).map(event).collect();
        spool.append(&events).unwrap();
        let pending: VecDeque<_> = events[2..].iter().cloned().collect();
        spool.rewrite(&pending).unwrap();
        spool.append([&event(9)]).unwrap();
        let (_, recovered) = Spool::open(&path, u64::MAX).unwrap();
        assert_eq!(recovered.events.len(), 3);
        assert_eq!(recovered.events[0], events[2]);

        let (mut spool, _) = Spool::open(&path, u64::MAX).unwrap();
        spool.rewrite(&VecDeque::new()).unwrap();
        assert_eq!(std::fs::metadata(&path).unwrap().len(), 0);
    }

    #[test]
    fn recovery_reads_at_most_the_limit_and_keeps_the_oldest() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("audit.spool");
        let events: Vec<_> = (0..10).map(event).collect();
        {
            let (mut spool, _) = Spool::open(&path, u64::MAX).unwrap();
            spool.append(&events).unwrap();
        }
        let (_, recovered) = Spool::open(&path, 4).unwrap();
        assert_eq!(Vec::from(recovered.events), events[..4].to_vec());
        assert_eq!(recovered.over_limit, 6);
        // What was not read back is not left in the file either.
        let (_, again) = Spool::open(&path, u64::MAX).unwrap();
        assert_eq!(again.events.len(), 4);
    }

    /// A disk that fills in the middle of a write (here: a file-size limit,
    /// which makes `write` stop partway) must not leave half a line in front
    /// of the next event. nextest runs each test in its own process, so the
    /// limit stays in this one.
    #[cfg(target_os = "linux")]
    #[test]
    fn a_write_refused_halfway_leaves_no_torn_line_in_front_of_the_next() {
        use nix::sys::resource::{getrlimit, setrlimit, Resource};
        use nix::sys::signal::{signal, SigHandler, Signal};
        // SAFETY: ignoring SIGXFSZ installs no handler code; the write then
        // fails with EFBIG instead of killing the process.
        unsafe { signal(Signal::SIGXFSZ, SigHandler::SigIgn) }.unwrap();
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("audit.spool");
        let (mut spool, _) = Spool::open(&path, u64::MAX).unwrap();
        let first = event(1);
        spool.append([&first]).unwrap();
        let len = std::fs::metadata(&path).unwrap().len();
        let (soft, hard) = getrlimit(Resource::RLIMIT_FSIZE).unwrap();
        setrlimit(Resource::RLIMIT_FSIZE, len + 20, hard).unwrap();
        let refused = spool.append([&event(2)]);
        setrlimit(Resource::RLIMIT_FSIZE, soft, hard).unwrap();
        assert!(refused.is_err());
        assert_eq!(
            std::fs::metadata(&path).unwrap().len(),
            len,
            "the torn part is cut off"
        );
        let third = event(3);
        spool.append([&third]).unwrap();
        let (_, recovered) = Spool::open(&path, u64::MAX).unwrap();
        assert_eq!(recovered.corrupt_lines, 0);
        assert_eq!(Vec::from(recovered.events), vec![first, third]);
    }

    #[cfg(unix)]
    #[test]
    fn the_spool_is_private_to_the_daemon_user() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("audit.spool");
        let (mut spool, _) = Spool::open(&path, u64::MAX).unwrap();
        spool.append([&event(1)]).unwrap();
        let mode = std::fs::metadata(&path).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600);
    }
}
