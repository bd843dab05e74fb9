//! The Raft log, the vote and the committed log id in local files
//! (`raft.dir`): what openraft's `RaftLogStorage` and `RaftLogReader` ask of
//! a node's disk.
//!
//! The log is one append-only file, `log.bin`, of framed records
//! `[u32 length][u32 crc32][JSON record]`, little-endian: an entry, a
//! truncation (entries from an index on are gone) or a purge (entries up to
//! a log id are gone, covered by a snapshot). The live entries are also kept
//! in memory, so reads never touch the disk. An append is acknowledged to
//! openraft only after its records are fsync'd, with at most one fsync per
//! append call (appends that arrive during an fsync share the next one). On open the file is replayed; a torn or damaged tail (a short
//! record, a bad checksum, bad JSON) is cut off and its size reported, so
//! nothing torn is ever returned. When most of the file is dead (purged or
//! truncated records), it is rewritten with only the live records.
//!
//! Records are written at the log's own end, into space reserved a few MiB
//! at a time (`preallocate`, Linux), so that an fsync writes the records
//! and not also the file's new size. The reserved space reads as zeros:
//! zeros after the last record are room, not a torn record.
//!
//! An append returns once its records are written; the flusher thread
//! (`log_flusher`) fsyncs them and only then reports the append done to
//! openraft, so that the fsync never blocks the Raft runtime's thread.
//!
//! The vote lives in `vote.json`, replaced atomically and durably before
//! `save_vote` returns. The committed log id lives in `committed.json`; it
//! is only a hint that lets a restarted node re-apply what it knows was
//! committed, so it is rewritten in place, checksummed, without waiting
//! for the disk (a new file per commit cost more CPU than the commit).
//!
//! openraft owns the `LogStore`; clones (the log readers of the replication
//! tasks) share it. The daemon reads `stats()` for its metrics and logs the
//! torn tail found at open.

use crate::command::Command;
use crate::coordinator::CoordinatorCommand;
use crate::durable;
use crate::lease::RenewalStamp;
use crate::log_flusher::Flusher;
pub use crate::log_flusher::FsyncObserver;
use crate::preallocate;
use crate::store::StoreError;
use crate::types::{Entry, LogId, StorageError, TypeConfig, Vote};
use openraft::storage::{LogFlushed, LogState, RaftLogStorage};
use openraft::RaftLogReader;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::fmt::Debug;
use std::fs::{self, File, OpenOptions};
use std::io::{self, Seek, SeekFrom, Write};
use std::ops::{Bound, RangeBounds};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::Instant;

/// The log file in the store directory.
pub const LOG_FILE: &str = "log.bin";
/// The vote file in the store directory.
pub const VOTE_FILE: &str = "vote.json";
/// The committed log id file in the store directory.
pub const COMMITTED_FILE: &str = "committed.json";

/// Length and checksum before each record.
const HEADER_BYTES: usize = 8;

/// Disk space reserved at a time after the last record (`preallocate`).
pub const RESERVE_BYTES: u64 = 4 << 20;

/// The file is rewritten when its dead records exceed this many bytes and
/// half of the file: rewriting a small file saves nothing worth an fsync.
pub const COMPACT_MIN_DEAD_BYTES: u64 = 4 << 20;

/// A record as it is read back from the file.
#[derive(Debug, Deserialize)]
enum Record {
    Entry(Entry),
    Truncate { since: u64 },
    Purge { upto: LogId },
}

/// A record as it is written; the same JSON as `Record` without moving the
/// entry that is kept in memory.
#[derive(Serialize)]
enum RecordRef<'a> {
    Entry(&'a Entry),
    Truncate { since: u64 },
    Purge { upto: &'a LogId },
}

/// A tail cut off the log file when it was opened.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TornTail {
    /// Where the first bad record began, in bytes from the start.
    pub offset: u64,
    /// How many bytes were dropped (up to the last one that was not zero:
    /// the space reserved after them held nothing).
    pub bytes: u64,
    /// What was wrong with the first dropped record.
    pub reason: String,
}

/// What the log looks like, for metrics and the daemon's start-up log.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LogStats {
    /// The bytes of records in `log.bin` (the file is longer by the space
    /// reserved for the next records).
    pub file_bytes: u64,
    /// The bytes of the records still needed (live entries, last purge).
    pub live_bytes: u64,
    /// How many entries the log holds.
    pub entries: usize,
    /// The tail cut off at open, if one was.
    pub torn_tail: Option<TornTail>,
    /// How many times the file was rewritten since open.
    pub compactions: u64,
    /// Why the last rewrite failed (the old file is kept and used).
    pub compaction_error: Option<String>,
}

/// The Raft log store. Cheap to clone: clones share one log.
#[derive(Clone)]
pub struct LogStore {
    inner: Arc<Mutex<Inner>>,
    /// When a coordinator renewal was last appended here.
    renewal_stamp: RenewalStamp,
}

/// One live entry and the size of its record in the file.
struct Stored {
    entry: Entry,
    frame_bytes: u64,
}

struct Inner {
    dir: PathBuf,
    path: PathBuf,
    /// Shared with the flusher, which fsyncs it. Written at `file_bytes`.
    file: Arc<File>,
    /// Where the records end: the next record is written here. The file
    /// may be longer: zeros reserved for the next records.
    file_bytes: u64,
    /// The file's length as far as this store made it: `file_bytes` plus
    /// the space reserved after it.
    reserved_end: u64,
    /// False once the file system said it cannot reserve space.
    reserving: bool,
    entries: BTreeMap<u64, Stored>,
    /// The sum of `frame_bytes` of `entries`.
    entry_bytes: u64,
    last_purged: Option<LogId>,
    /// The size of the record that carries `last_purged` (it stays live).
    purge_frame_bytes: u64,
    vote: Option<Vote>,
    committed: Option<LogId>,
    /// `committed.json`, rewritten in place at every commit.
    committed_hint: durable::HintFile,
    torn_tail: Option<TornTail>,
    /// Set when a failed write left the file in a state we do not know;
    /// every later write is refused until the store is reopened.
    broken: Option<String>,
    compact_min_dead_bytes: u64,
    compactions: u64,
    compaction_error: Option<String>,
    flusher: Flusher,
}

impl LogStore {
    /// Opens the log in `dir` (creating an empty one when absent), cutting
    /// off a torn tail and reading the vote and the committed log id.
    pub fn open(dir: &Path) -> Result<Self, StoreError> {
        durable::create_private_dir(dir).map_err(|source| StoreError::CreateDir {
            path: dir.to_path_buf(),
            source,
        })?;
        let path = dir.join(LOG_FILE);
        // A rewrite interrupted before its rename leaves a temporary file
        // that was never the log.
        let tmp = durable::tmp_path(&path);
        if tmp.exists() {
            fs::remove_file(&tmp).map_err(|e| StoreError::write(&tmp, e))?;
        }

        let existed = path.exists();
        let bytes = if existed {
            fs::read(&path).map_err(|e| StoreError::read(&path, e))?
        } else {
            Vec::new()
        };
        let file = OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(false)
            .open(&path)
            .map_err(|e| StoreError::write(&path, e))?;
        if !existed {
            durable::sync_parent(&path).map_err(|e| StoreError::write(&path, e))?;
        }

        let committed_path = dir.join(COMMITTED_FILE);
        let committed_hint = durable::HintFile::open(&committed_path)
            .map_err(|e| StoreError::write(&committed_path, e))?;
        let flusher = Flusher::start(&dir.file_name().unwrap_or_default().to_string_lossy())
            .map_err(|e| StoreError::write(&path, e))?;
        let mut inner = Inner {
            dir: dir.to_path_buf(),
            path: path.clone(),
            file: Arc::new(file),
            file_bytes: 0,
            reserved_end: bytes.len() as u64,
            reserving: true,
            entries: BTreeMap::new(),
            entry_bytes: 0,
            last_purged: None,
            purge_frame_bytes: 0,
            vote: None,
            committed: None,
            committed_hint,
            torn_tail: None,
            broken: None,
            compact_min_dead_bytes: COMPACT_MIN_DEAD_BYTES,
            compactions: 0,
            compaction_error: None,
            flusher,
        };
        inner.replay(&bytes)?;
        inner.vote = read_vote(&dir.join(VOTE_FILE))?;
        inner.committed = inner.read_committed_hint();
        inner.maybe_compact();
        Ok(LogStore {
            inner: Arc::new(Mutex::new(inner)),
            // Renewals appended before this start were sent before it.
            renewal_stamp: RenewalStamp::starting_now(),
        })
    }

    /// When a coordinator renewal was last appended to this log (or the
    /// store opened, or a snapshot was installed): the leader grants the
    /// role elsewhere only a lease after it.
    pub fn renewal_stamp(&self) -> RenewalStamp {
        self.renewal_stamp.clone()
    }

    /// The tail cut off when the log was opened, if one was.
    pub fn torn_tail(&self) -> Option<TornTail> {
        self.lock().torn_tail.clone()
    }

    /// Sizes and counters of the log.
    pub fn stats(&self) -> LogStats {
        let inner = self.lock();
        LogStats {
            file_bytes: inner.file_bytes,
            live_bytes: inner.live_bytes(),
            entries: inner.entries.len(),
            torn_tail: inner.torn_tail.clone(),
            compactions: inner.compactions,
            compaction_error: inner.compaction_error.clone(),
        }
    }

    /// The last log id openraft reported committed (on a follower, as far
    /// as the leader has told it).
    pub fn committed(&self) -> Option<LogId> {
        self.lock().committed
    }

    /// Reports the duration of every later fsync of the log file (for the
    /// fsync latency metric).
    pub fn observe_fsync(&self, observer: FsyncObserver) {
        self.lock().flusher.observe(observer);
    }

    /// Rewrites the log file with only its live records now, whatever the
    /// amount of dead records.
    pub fn compact(&self) -> Result<(), StoreError> {
        self.lock().rewrite()
    }

    fn lock(&self) -> MutexGuard<'_, Inner> {
        // A panic while the lock was held cannot leave the file half
        // written (writes are checked before memory changes): go on.
        self.inner.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

impl Inner {
    fn live_bytes(&self) -> u64 {
        self.entry_bytes + self.purge_frame_bytes
    }

    fn last_log_id(&self) -> Option<LogId> {
        self.entries
            .last_key_value()
            .map(|(_, s)| s.entry.log_id)
            .or(self.last_purged)
    }

    /// Replays the file's records into memory, cutting off the first bad
    /// record and everything after it.
    fn replay(&mut self, bytes: &[u8]) -> Result<(), StoreError> {
        let mut offset = 0usize;
        while offset < bytes.len() {
            match decode(&bytes[offset..]) {
                Ok((record, frame)) => {
                    self.apply(record, frame as u64);
                    offset += frame;
                }
                Err(_) if bytes[offset..].iter().all(|b| *b == 0) => {
                    // Space reserved for records not written yet.
                    break;
                }
                Err(reason) => {
                    // Zeros after the damage are reserved space, not data.
                    let damaged = bytes[offset..]
                        .iter()
                        .rposition(|b| *b != 0)
                        .map_or(0, |last| last + 1);
                    let torn = TornTail {
                        offset: offset as u64,
                        bytes: damaged as u64,
                        reason,
                    };
                    self.file
                        .set_len(torn.offset)
                        .and_then(|()| self.file.sync_all())
                        .map_err(|e| StoreError::write(&self.path, e))?;
                    self.reserved_end = torn.offset;
                    self.torn_tail = Some(torn);
                    break;
                }
            }
        }
        self.file_bytes = offset as u64;
        Ok(())
    }

    /// Applies one record to the entries in memory; `frame_bytes` is the
    /// size of its record in the file.
    fn apply(&mut self, record: Record, frame_bytes: u64) {
        match record {
            Record::Entry(entry) => self.insert(entry, frame_bytes),
            Record::Truncate { since } => self.remove_since(since),
            Record::Purge { upto } => {
                if self.last_purged.is_some_and(|p| p >= upto) {
                    return;
                }
                let kept = match upto.index.checked_add(1) {
                    Some(next) => self.entries.split_off(&next),
                    None => BTreeMap::new(),
                };
                let purged = std::mem::replace(&mut self.entries, kept);
                self.entry_bytes -= purged.values().map(|s| s.frame_bytes).sum::<u64>();
                self.last_purged = Some(upto);
                self.purge_frame_bytes = frame_bytes;
            }
        }
    }

    /// Inserts an entry; an entry at an index already present replaces it
    /// and everything after it, so the log never has a hole.
    fn insert(&mut self, entry: Entry, frame_bytes: u64) {
        self.remove_since(entry.log_id.index);
        self.entry_bytes += frame_bytes;
        self.entries
            .insert(entry.log_id.index, Stored { entry, frame_bytes });
    }

    fn remove_since(&mut self, since: u64) {
        let removed = self.entries.split_off(&since);
        self.entry_bytes -= removed.values().map(|s| s.frame_bytes).sum::<u64>();
    }

    /// Why the file may not hold what was written to it, once it may not.
    fn broken_reason(&self) -> Option<String> {
        self.broken.clone().or_else(|| self.flusher.failure())
    }

    /// Appends encoded records to the file, fsync'd here when `sync` is set.
    fn write(&mut self, frames: &[u8], sync: bool) -> Result<(), StoreError> {
        if let Some(reason) = self.broken_reason() {
            return Err(StoreError::Broken {
                path: self.path.clone(),
                reason,
            });
        }
        self.reserve(frames.len() as u64);
        let written = (&*self.file)
            .seek(SeekFrom::Start(self.file_bytes))
            .and_then(|_| (&*self.file).write_all(frames));
        if let Err(e) = written {
            // Take back a partial write so that the next record starts on
            // a record boundary; if even that fails, stop writing.
            match self.file.set_len(self.file_bytes) {
                Ok(()) => self.reserved_end = self.file_bytes,
                Err(undo) => self.broken = Some(format!("{e}, then {undo} while undoing it")),
            }
            return Err(StoreError::write(&self.path, e));
        }
        self.file_bytes += frames.len() as u64;
        self.reserved_end = self.reserved_end.max(self.file_bytes);
        if sync {
            let started = Instant::now();
            if let Err(e) = self.file.sync_data() {
                // After a failed fsync the kernel may have dropped the
                // dirty pages: what is on disk is unknown until a reopen
                // reads it back.
                self.broken = Some(format!("fsync failed: {e}"));
                return Err(StoreError::write(&self.path, e));
            }
            self.flusher.observed(started.elapsed());
        }
        Ok(())
    }

    /// Reserves space after the last record when `len` more bytes would
    /// not fit in what is reserved. Best effort: without it (a full disk,
    /// a file system that cannot) the write grows the file itself.
    fn reserve(&mut self, len: u64) {
        let end = self.file_bytes + len;
        if !self.reserving || end <= self.reserved_end {
            return;
        }
        let want = len.max(RESERVE_BYTES);
        match preallocate::reserve(&self.file, self.file_bytes, want) {
            Ok(true) => self.reserved_end = self.file_bytes + want,
            Ok(false) => self.reserving = false,
            Err(e) => self.reserving = !preallocate::unsupported(&e),
        }
    }

    fn dead_bytes(&self) -> u64 {
        self.file_bytes.saturating_sub(self.live_bytes())
    }

    /// Rewrites the file when its dead records are many; a failed rewrite
    /// is recorded and the old file kept.
    fn maybe_compact(&mut self) {
        let dead = self.dead_bytes();
        if dead > self.compact_min_dead_bytes && dead > self.file_bytes / 2 {
            if let Err(e) = self.rewrite() {
                self.compaction_error = Some(e.to_string());
            }
        }
    }

    /// Writes the live records to a new file and puts it in place of the
    /// log: temporary file, fsync, rename, fsync of the directory.
    fn rewrite(&mut self) -> Result<(), StoreError> {
        if let Some(reason) = self.broken_reason() {
            return Err(StoreError::Broken {
                path: self.path.clone(),
                reason,
            });
        }
        let tmp = durable::tmp_path(&self.path);
        let mut frames = Vec::with_capacity(self.live_bytes() as usize);
        let mut purge_frame_bytes = 0;
        if let Some(upto) = &self.last_purged {
            let frame =
                encode(&RecordRef::Purge { upto }).map_err(|e| StoreError::corrupt(&tmp, e))?;
            purge_frame_bytes = frame.len() as u64;
            frames.extend_from_slice(&frame);
        }
        for stored in self.entries.values_mut() {
            let frame = encode(&RecordRef::Entry(&stored.entry))
                .map_err(|e| StoreError::corrupt(&tmp, e))?;
            stored.frame_bytes = frame.len() as u64;
            frames.extend_from_slice(&frame);
        }
        let written =
            File::create(&tmp).and_then(|mut f| f.write_all(&frames).and_then(|()| f.sync_all()));
        if let Err(e) = written {
            let _ = fs::remove_file(&tmp);
            return Err(StoreError::write(&tmp, e));
        }
        fs::rename(&tmp, &self.path).map_err(|e| StoreError::write(&self.path, e))?;
        // From here the old handle points at the unlinked old file.
        let reopened = durable::sync_parent(&self.path)
            .and_then(|()| OpenOptions::new().write(true).open(&self.path));
        match reopened {
            Ok(file) => self.file = Arc::new(file),
            Err(e) => {
                self.broken = Some(format!("reopening it after a rewrite failed: {e}"));
                return Err(StoreError::write(&self.path, e));
            }
        }
        self.entry_bytes = self.entries.values().map(|s| s.frame_bytes).sum();
        self.purge_frame_bytes = purge_frame_bytes;
        self.file_bytes = frames.len() as u64;
        self.reserved_end = self.file_bytes;
        self.compactions += 1;
        self.compaction_error = None;
        Ok(())
    }

    /// The committed log id of `committed.json`, dropped when unreadable or
    /// beyond the log (it is a hint; a wrong one must not stop a start).
    fn read_committed_hint(&self) -> Option<LogId> {
        let bytes = durable::HintFile::read(&self.dir.join(COMMITTED_FILE))?;
        let committed: Option<LogId> = serde_json::from_slice(&bytes).ok()?;
        let committed = committed?;
        let last = self.last_log_id()?;
        (committed.index <= last.index).then_some(committed)
    }

    fn entries_in(&self, range: impl RangeBounds<u64>) -> Vec<Entry> {
        let start = match range.start_bound() {
            Bound::Included(&s) => s,
            Bound::Excluded(&s) => match s.checked_add(1) {
                Some(s) => s,
                None => return Vec::new(),
            },
            Bound::Unbounded => 0,
        };
        let end = match range.end_bound() {
            Bound::Included(&e) => Bound::Included(e),
            Bound::Excluded(&e) => Bound::Excluded(e),
            Bound::Unbounded => Bound::Unbounded,
        };
        // BTreeMap::range panics on an inverted range; openraft may ask
        // for an empty one.
        let empty = match end {
            Bound::Included(e) => start > e,
            Bound::Excluded(e) => start >= e,
            Bound::Unbounded => false,
        };
        if empty {
            return Vec::new();
        }
        self.entries
            .range((Bound::Included(start), end))
            .map(|(_, s)| s.entry.clone())
            .collect()
    }
}

fn read_vote(path: &Path) -> Result<Option<Vote>, StoreError> {
    match fs::read(path) {
        // A vote is replaced atomically: a damaged one is not a torn write
        // but a disk problem, and guessing could let this node vote twice.
        Ok(bytes) => serde_json::from_slice(&bytes).map_err(|e| StoreError::corrupt(path, e)),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(StoreError::read(path, e)),
    }
}

/// One record framed for the file.
fn encode(record: &RecordRef<'_>) -> Result<Vec<u8>, serde_json::Error> {
    let payload = serde_json::to_vec(record)?;
    let len = u32::try_from(payload.len())
        .map_err(|_| serde::ser::Error::custom("a log record is larger than 4 GiB"))?;
    let mut frame = Vec::with_capacity(HEADER_BYTES + payload.len());
    frame.extend_from_slice(&len.to_le_bytes());
    frame.extend_from_slice(&crc32fast::hash(&payload).to_le_bytes());
    frame.extend_from_slice(&payload);
    Ok(frame)
}

/// The first record of `bytes` and its size in the file, or why it is bad.
fn decode(bytes: &[u8]) -> Result<(Record, usize), String> {
    let header = bytes
        .get(..HEADER_BYTES)
        .ok_or_else(|| format!("a record header is cut short ({} bytes)", bytes.len()))?;
    let len = u32::from_le_bytes([header[0], header[1], header[2], header[3]]) as usize;
    let crc = u32::from_le_bytes([header[4], header[5], header[6], header[7]]);
    if len == 0 {
        return Err("a record of length 0 (zeroed or never written)".into());
    }
    let payload = bytes
        .get(HEADER_BYTES..HEADER_BYTES + len)
        .ok_or_else(|| format!("a record of {len} bytes is cut short"))?;
    if crc32fast::hash(payload) != crc {
        return Err("a record does not match its checksum".into());
    }
    let record =
        serde_json::from_slice(payload).map_err(|e| format!("a record is not valid: {e}"))?;
    Ok((record, HEADER_BYTES + len))
}

/// Whether the entry starts or renews a coordinator's lease. A grant counts
/// too: the leader then waits a whole lease before granting again, instead
/// of granting at once again when the new holder never renews.
fn is_renewal(entry: &Entry) -> bool {
    matches!(
        &entry.payload,
        openraft::EntryPayload::Normal(p)
            if matches!(
                p.command,
                Command::Coordinator(
                    CoordinatorCommand::Renew { .. } | CoordinatorCommand::Grant { .. }
                )
            )
    )
}

impl RaftLogReader<TypeConfig> for LogStore {
    async fn try_get_log_entries<RB: RangeBounds<u64> + Clone + Debug + Send>(
        &mut self,
        range: RB,
    ) -> Result<Vec<Entry>, StorageError> {
        Ok(self.lock().entries_in(range))
    }
}

impl RaftLogStorage<TypeConfig> for LogStore {
    type LogReader = LogStore;

    async fn get_log_state(&mut self) -> Result<LogState<TypeConfig>, StorageError> {
        let inner = self.lock();
        Ok(LogState {
            last_purged_log_id: inner.last_purged,
            last_log_id: inner.last_log_id(),
        })
    }

    async fn get_log_reader(&mut self) -> Self::LogReader {
        self.clone()
    }

    async fn save_vote(&mut self, vote: &Vote) -> Result<(), StorageError> {
        let mut inner = self.lock();
        let path = inner.dir.join(VOTE_FILE);
        let bytes =
            serde_json::to_vec(vote).map_err(|e| StoreError::corrupt(&path, e).write_vote())?;
        durable::atomic_write(&path, &bytes)
            .map_err(|e| StoreError::write(&path, e).write_vote())?;
        inner.vote = Some(*vote);
        Ok(())
    }

    async fn read_vote(&mut self) -> Result<Option<Vote>, StorageError> {
        Ok(self.lock().vote)
    }

    async fn save_committed(&mut self, committed: Option<LogId>) -> Result<(), StorageError> {
        let mut inner = self.lock();
        // No fsync: committed.json is a hint (a lost or older one only
        // means fewer entries are re-applied before a leader says more),
        // and every entry it can name was fsync'd by its append already.
        let path = inner.dir.join(COMMITTED_FILE);
        let bytes = serde_json::to_vec(&committed)
            .map_err(|e| StoreError::corrupt(&path, e).write_other())?;
        inner
            .committed_hint
            .write(&bytes)
            .map_err(|e| StoreError::write(&path, e).write_other())?;
        inner.committed = committed;
        Ok(())
    }

    async fn read_committed(&mut self) -> Result<Option<LogId>, StorageError> {
        Ok(self.lock().committed)
    }

    async fn append<I>(
        &mut self,
        entries: I,
        callback: LogFlushed<TypeConfig>,
    ) -> Result<(), StorageError>
    where
        I: IntoIterator<Item = Entry> + Send,
        I::IntoIter: Send,
    {
        let mut inner = self.lock();
        let mut frames = Vec::new();
        let mut staged = Vec::new();
        for entry in entries {
            if is_renewal(&entry) {
                // Stamped on arrival: later than the holder's send time.
                self.renewal_stamp.observe();
            }
            let frame = encode(&RecordRef::Entry(&entry))
                .map_err(|e| StoreError::corrupt(&inner.path, e).write_logs())?;
            frames.extend_from_slice(&frame);
            staged.push((entry, frame.len() as u64));
        }
        if !staged.is_empty() {
            inner.write(&frames, false).map_err(|e| e.write_logs())?;
        }
        for (entry, frame_bytes) in staged {
            inner.insert(entry, frame_bytes);
        }
        // Reported done by the flusher once every record is on disk.
        inner.flusher.flush(inner.file.clone(), callback);
        Ok(())
    }

    async fn truncate(&mut self, log_id: LogId) -> Result<(), StorageError> {
        let mut inner = self.lock();
        let since = log_id.index;
        let frame = encode(&RecordRef::Truncate { since })
            .map_err(|e| StoreError::corrupt(&inner.path, e).write_logs())?;
        // Made durable at once: truncations are rare, and a lost one would
        // bring back entries a leader asked this node to drop.
        inner.write(&frame, true).map_err(|e| e.write_logs())?;
        inner.remove_since(since);
        inner.maybe_compact();
        Ok(())
    }

    async fn purge(&mut self, log_id: LogId) -> Result<(), StorageError> {
        let mut inner = self.lock();
        if inner.last_purged.is_some_and(|p| p >= log_id) {
            return Ok(());
        }
        let frame = encode(&RecordRef::Purge { upto: &log_id })
            .map_err(|e| StoreError::corrupt(&inner.path, e).write_logs())?;
        // Not fsync'd by itself: a lost purge only brings back entries the
        // snapshot already covers; the next append's fsync carries it.
        inner.write(&frame, false).map_err(|e| e.write_logs())?;
        inner.apply(Record::Purge { upto: log_id }, frame.len() as u64);
        inner.maybe_compact();
        Ok(())
    }
}

impl Debug for LogStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let stats = self.stats();
        f.debug_struct("LogStore")
            .field("path", &self.lock().path)
            .field("stats", &stats)
            .finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::command::{Command, Proposal, Requester};
    use openraft::storage::RaftLogStorageExt;
    use openraft::testing::log_id;
    use openraft::{EntryPayload, RaftLogReader};
    use serde_json::json;

    fn entry(term: u64, index: u64) -> Entry {
        Entry {
            log_id: log_id(term, 1, index),
            payload: EntryPayload::Normal(Proposal {
                command: Command::Set {
                    key: format!("k{index}"),
                    value: json!({ "index": index, "term": term }),
                },
                request_id: None,
                requester: Requester::default(),
            }),
        }
    }

    fn entries(term: u64, range: std::ops::RangeInclusive<u64>) -> Vec<Entry> {
        range.map(|i| entry(term, i)).collect()
    }

    async fn all(store: &mut LogStore) -> Vec<Entry> {
        store.try_get_log_entries(..).await.unwrap()
    }

    /// Writes `bytes` at `offset` of the file, as damage or a crash would.
    fn write_at(path: &Path, offset: u64, bytes: &[u8]) {
        let mut file = OpenOptions::new().write(true).open(path).unwrap();
        file.seek(SeekFrom::Start(offset)).unwrap();
        file.write_all(bytes).unwrap();
    }

    fn indexes(entries: &[Entry]) -> Vec<u64> {
        entries.iter().map(|e| e.log_id.index).collect()
    }

    #[tokio::test]
    async fn appended_entries_survive_a_reopen_with_their_content() {
        let dir = tempfile::tempdir().unwrap();
        let mut store = LogStore::open(dir.path()).unwrap();
        store.blocking_append(entries(1, 1..=5)).await.unwrap();
        drop(store);
        let mut store = LogStore::open(dir.path()).unwrap();
        assert_eq!(all(&mut store).await, entries(1, 1..=5));
        assert_eq!(store.torn_tail(), None);
    }

    #[tokio::test]
    async fn a_half_written_record_is_cut_off_on_reopen_and_earlier_entries_survive() {
        let dir = tempfile::tempdir().unwrap();
        let mut store = LogStore::open(dir.path()).unwrap();
        store.blocking_append(entries(1, 1..=5)).await.unwrap();
        let good = store.stats().file_bytes;
        drop(store);
        let path = dir.path().join(LOG_FILE);
        let frame = encode(&RecordRef::Entry(&entry(1, 6))).unwrap();
        let half = &frame[..frame.len() / 2];
        write_at(&path, good, half);

        let mut store = LogStore::open(dir.path()).unwrap();
        assert_eq!(indexes(&all(&mut store).await), [1, 2, 3, 4, 5]);
        let torn = store.torn_tail().unwrap();
        assert_eq!(torn.offset, good);
        assert_eq!(torn.bytes, half.len() as u64);
        assert_eq!(fs::metadata(&path).unwrap().len(), good);
        // The log goes on after the cut.
        store.blocking_append([entry(1, 6)]).await.unwrap();
        drop(store);
        let mut store = LogStore::open(dir.path()).unwrap();
        assert_eq!(all(&mut store).await, entries(1, 1..=6));
    }

    #[tokio::test]
    async fn a_flipped_byte_in_the_last_record_drops_that_record_only() {
        let dir = tempfile::tempdir().unwrap();
        let mut store = LogStore::open(dir.path()).unwrap();
        store.blocking_append(entries(1, 1..=5)).await.unwrap();
        let end = store.stats().file_bytes;
        drop(store);
        let path = dir.path().join(LOG_FILE);
        let bytes = fs::read(&path).unwrap();
        let last = end as usize - 3;
        write_at(&path, last as u64, &[bytes[last] ^ 0x40]);
        let last_frame = encode(&RecordRef::Entry(&entry(1, 5))).unwrap().len() as u64;

        let mut store = LogStore::open(dir.path()).unwrap();
        assert_eq!(all(&mut store).await, entries(1, 1..=4));
        let torn = store.torn_tail().unwrap();
        assert_eq!(torn.bytes, last_frame);
        assert!(torn.reason.contains("checksum"), "{}", torn.reason);
    }

    #[tokio::test]
    async fn zeros_after_the_last_record_are_space_for_the_next_not_a_torn_tail() {
        let dir = tempfile::tempdir().unwrap();
        let mut store = LogStore::open(dir.path()).unwrap();
        store.blocking_append(entries(1, 1..=3)).await.unwrap();
        drop(store);
        // Zeros where no reservation was made (another platform's file, a
        // disk that was full): the same as reserved space.
        let path = dir.path().join(LOG_FILE);
        let len = fs::metadata(&path).unwrap().len();
        write_at(&path, len, &[0u8; 4096]);
        let mut store = LogStore::open(dir.path()).unwrap();
        assert_eq!(all(&mut store).await, entries(1, 1..=3));
        assert_eq!(store.torn_tail(), None);
        store.blocking_append(entries(1, 4..=5)).await.unwrap();
        drop(store);
        let mut store = LogStore::open(dir.path()).unwrap();
        assert_eq!(all(&mut store).await, entries(1, 1..=5));
        assert_eq!(store.torn_tail(), None);
    }

    #[cfg(target_os = "linux")]
    #[tokio::test]
    async fn records_are_written_into_space_reserved_ahead_and_read_back_after_it() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join(LOG_FILE);
        let mut store = LogStore::open(dir.path()).unwrap();
        store.blocking_append(entries(1, 1..=3)).await.unwrap();
        let end = store.stats().file_bytes;
        let reserved = fs::metadata(&path).unwrap().len();
        assert_eq!(reserved, RESERVE_BYTES, "records end at {end}");
        // Later records go into the same space: the file does not grow.
        store.blocking_append(entries(1, 4..=6)).await.unwrap();
        assert!(store.stats().file_bytes > end);
        assert_eq!(fs::metadata(&path).unwrap().len(), reserved);
        drop(store);
        let mut store = LogStore::open(dir.path()).unwrap();
        assert_eq!(all(&mut store).await, entries(1, 1..=6));
        assert_eq!(store.torn_tail(), None);
        // A record larger than what is left reserves again from its start.
        let big = Entry {
            log_id: log_id(1, 1, 7),
            payload: EntryPayload::Normal(Proposal {
                command: Command::Set {
                    key: "big".into(),
                    value: json!("x".repeat(RESERVE_BYTES as usize)),
                },
                request_id: None,
                requester: Requester::default(),
            }),
        };
        store.blocking_append([big.clone()]).await.unwrap();
        let end = store.stats().file_bytes;
        assert!(fs::metadata(&path).unwrap().len() >= end);
        drop(store);
        let mut store = LogStore::open(dir.path()).unwrap();
        let mut want = entries(1, 1..=6);
        want.push(big);
        assert_eq!(all(&mut store).await, want);
        assert_eq!(store.stats().file_bytes, end);
    }

    #[tokio::test]
    async fn the_vote_and_the_committed_log_id_survive_a_reopen() {
        let dir = tempfile::tempdir().unwrap();
        let mut store = LogStore::open(dir.path()).unwrap();
        store.blocking_append(entries(2, 1..=3)).await.unwrap();
        let vote = Vote::new_committed(2, 7);
        store.save_vote(&vote).await.unwrap();
        store.save_committed(Some(log_id(2, 1, 3))).await.unwrap();
        drop(store);
        let mut store = LogStore::open(dir.path()).unwrap();
        assert_eq!(store.read_vote().await.unwrap(), Some(vote));
        assert_eq!(store.read_committed().await.unwrap(), Some(log_id(2, 1, 3)));
    }

    #[tokio::test]
    async fn a_committed_log_id_beyond_the_log_is_ignored_on_reopen() {
        let dir = tempfile::tempdir().unwrap();
        let mut store = LogStore::open(dir.path()).unwrap();
        store.blocking_append(entries(1, 1..=2)).await.unwrap();
        store.save_committed(Some(log_id(1, 1, 9))).await.unwrap();
        drop(store);
        let mut store = LogStore::open(dir.path()).unwrap();
        assert_eq!(store.read_committed().await.unwrap(), None);
    }

    #[tokio::test]
    async fn truncate_and_purge_survive_a_reopen() {
        let dir = tempfile::tempdir().unwrap();
        let mut store = LogStore::open(dir.path()).unwrap();
        store.blocking_append(entries(1, 1..=10)).await.unwrap();
        store.truncate(log_id(1, 1, 8)).await.unwrap();
        // A new leader's entries replace the truncated ones.
        store.blocking_append(entries(2, 8..=9)).await.unwrap();
        store.purge(log_id(1, 1, 3)).await.unwrap();
        drop(store);

        let mut store = LogStore::open(dir.path()).unwrap();
        let got = all(&mut store).await;
        let mut want = entries(1, 4..=7);
        want.extend(entries(2, 8..=9));
        assert_eq!(got, want);
        let state = store.get_log_state().await.unwrap();
        assert_eq!(state.last_purged_log_id, Some(log_id(1, 1, 3)));
        assert_eq!(state.last_log_id, Some(log_id(2, 1, 9)));
    }

    #[tokio::test]
    async fn a_purge_beyond_the_last_entry_leaves_an_empty_log_that_remembers_it() {
        let dir = tempfile::tempdir().unwrap();
        let mut store = LogStore::open(dir.path()).unwrap();
        store.blocking_append(entries(1, 1..=3)).await.unwrap();
        store.purge(log_id(1, 1, 20)).await.unwrap();
        drop(store);
        let mut store = LogStore::open(dir.path()).unwrap();
        assert!(all(&mut store).await.is_empty());
        let state = store.get_log_state().await.unwrap();
        assert_eq!(state.last_purged_log_id, Some(log_id(1, 1, 20)));
        assert_eq!(state.last_log_id, Some(log_id(1, 1, 20)));
    }

    #[tokio::test]
    async fn compaction_keeps_exactly_the_live_entries() {
        let dir = tempfile::tempdir().unwrap();
        let mut store = LogStore::open(dir.path()).unwrap();
        // A tiny threshold so that a few records make the file worth rewriting.
        store.lock().compact_min_dead_bytes = 1024;
        store.blocking_append(entries(1, 1..=100)).await.unwrap();
        store.truncate(log_id(1, 1, 91)).await.unwrap();
        store.blocking_append(entries(2, 91..=95)).await.unwrap();
        let before = store.stats();
        assert_eq!(before.compactions, 0);
        store.purge(log_id(1, 1, 80)).await.unwrap();

        let after = store.stats();
        assert_eq!(after.compactions, 1, "{after:?}");
        assert_eq!(after.file_bytes, after.live_bytes);
        assert_eq!(
            after.file_bytes,
            fs::metadata(dir.path().join(LOG_FILE)).unwrap().len()
        );
        let mut want = entries(1, 81..=90);
        want.extend(entries(2, 91..=95));
        assert_eq!(all(&mut store).await, want);

        // The rewritten file reads back the same, and appends go on.
        store.blocking_append([entry(2, 96)]).await.unwrap();
        drop(store);
        let mut store = LogStore::open(dir.path()).unwrap();
        want.push(entry(2, 96));
        assert_eq!(all(&mut store).await, want);
        let state = store.get_log_state().await.unwrap();
        assert_eq!(state.last_purged_log_id, Some(log_id(1, 1, 80)));
        assert!(!durable::tmp_path(&dir.path().join(LOG_FILE)).exists());
    }

    #[tokio::test]
    async fn a_reader_clone_sees_what_the_store_appends() {
        let dir = tempfile::tempdir().unwrap();
        let mut store = LogStore::open(dir.path()).unwrap();
        let mut reader = store.get_log_reader().await;
        store.blocking_append(entries(1, 1..=3)).await.unwrap();
        assert_eq!(
            indexes(&reader.try_get_log_entries(2..).await.unwrap()),
            [2, 3]
        );
        // An inverted range must answer nothing, not panic in BTreeMap::range.
        let (start, end) = (3, 2);
        assert!(reader
            .try_get_log_entries(start..end)
            .await
            .unwrap()
            .is_empty());
    }

    #[tokio::test]
    async fn every_append_call_is_one_fsync() {
        let dir = tempfile::tempdir().unwrap();
        let mut store = LogStore::open(dir.path()).unwrap();
        let count = Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let seen = count.clone();
        store.observe_fsync(Arc::new(move |_| {
            seen.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        }));
        store.blocking_append(entries(1, 1..=50)).await.unwrap();
        store.blocking_append(entries(1, 51..=52)).await.unwrap();
        assert_eq!(count.load(std::sync::atomic::Ordering::Relaxed), 2);
    }
}
