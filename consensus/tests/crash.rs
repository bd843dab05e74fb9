//! The log store across real crashes: a writer process appends entries and
//! says which ones were acknowledged durable; it is killed with SIGKILL at
//! a random moment, several times in a row on the same store, and the store
//! must then hold every acknowledged entry, contiguous, exactly as written.
//!
//! After each kill the test also plays what a power loss could add: the
//! bytes after the last acknowledged entry were never fsync'd, so a random
//! part of them is taken back (tearing a record) and junk is sometimes
//! written in their place.
//!
//! The writer is this same test binary, re-executed with an environment
//! variable that selects the writer's side of the test.

use openraft::storage::{RaftLogStorage, RaftLogStorageExt};
use openraft::testing::log_id;
use openraft::{EntryPayload, RaftLogReader};
use serde::Serialize;
use serde_json::json;
use std::fs::OpenOptions;
use std::io::{BufRead, BufReader, Seek, SeekFrom, Write};
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::Duration;
use steep_repl_consensus::command::{Command as StateCommand, Proposal, Requester};
use steep_repl_consensus::log_store::LOG_FILE;
use steep_repl_consensus::types::Entry;

/// Set in the writer's environment: the store directory it writes to.
const WRITER_ENV: &str = "STEEP_REPL_CRASH_WRITER_DIR";
/// This test's name, to re-execute only it.
const TEST_NAME: &str = "killed_writers_lose_no_acknowledged_entry";
const ROUNDS: usize = 4;

/// The entry at `index`: its content is derived from the index so that the
/// store's copy can be checked byte for byte. Sizes vary so that records
/// straddle page boundaries.
fn entry(index: u64) -> Entry {
    Entry {
        log_id: log_id(1, 1, index),
        payload: EntryPayload::Normal(Proposal {
            command: StateCommand::Set {
                key: format!("k{index}"),
                value: json!({ "index": index, "pad": "x".repeat((index * 37 % 900) as usize) }),
            },
            request_id: Some(format!("r{index}")),
            requester: Requester::default(),
        }),
    }
}

/// The writer's side: appends batches forever, printing `ack N` for each
/// entry only after its append reported it durable.
fn run_writer(dir: &Path) -> ! {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("a runtime for the writer");
    runtime.block_on(async {
        let (_identity, mut log, _sm) =
            steep_repl_consensus::open(dir).expect("the writer opens the store");
        let state = log.get_log_state().await.expect("the log state");
        let mut next = state.last_log_id.map_or(1, |l| l.index + 1);
        let stdout = std::io::stdout();
        {
            let mut out = stdout.lock();
            // The test harness has printed `test NAME ... ` without a line
            // end before the test's own output: start on a line of our own.
            writeln!(out, "\nstart {next}").expect("stdout");
            if let Some(torn) = log.torn_tail() {
                writeln!(out, "torn {} {}", torn.bytes, torn.reason).expect("stdout");
            }
            out.flush().expect("stdout");
        }
        // Bounded so that an orphaned writer stops by itself.
        while next < 1_000_000 {
            let count = fastrand::u64(1..=8);
            let batch: Vec<Entry> = (next..next + count).map(entry).collect();
            log.blocking_append(batch).await.expect("an append");
            let mut out = stdout.lock();
            for index in next..next + count {
                writeln!(out, "ack {index}").expect("stdout");
            }
            out.flush().expect("stdout");
            next += count;
        }
    });
    std::process::exit(0)
}

#[test]
fn killed_writers_lose_no_acknowledged_entry() {
    if let Some(dir) = std::env::var_os(WRITER_ENV) {
        run_writer(Path::new(&dir));
    }
    let dir = tempfile::tempdir().unwrap();
    let exe = std::env::current_exe().unwrap();
    let mut acknowledged = 0u64;
    let mut torn_tails = 0;
    let mut injected_junk = 0;

    for round in 0..ROUNDS {
        let mut child = Command::new(&exe)
            .args([TEST_NAME, "--exact", "--nocapture", "--test-threads=1"])
            .env(WRITER_ENV, dir.path())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .unwrap();
        let stdout = child.stdout.take().unwrap();
        let target = fastrand::u64(300..1200);
        let mut acked_this_round = 0u64;
        let mut expected_next = None;
        let mut killed = false;
        for line in BufReader::new(stdout).lines() {
            let line = line.unwrap();
            if let Some(start) = line.strip_prefix("start ") {
                let start: u64 = start.parse().unwrap();
                assert!(
                    start > acknowledged,
                    "round {round}: the writer reopened at {start}, but {acknowledged} was acknowledged"
                );
                expected_next = Some(start);
            } else if line.starts_with("torn ") {
                torn_tails += 1;
                eprintln!("round {round}: {line}");
            } else if let Some(index) = line.strip_prefix("ack ") {
                let index: u64 = index.parse().unwrap();
                assert_eq!(
                    Some(index),
                    expected_next,
                    "round {round}: acknowledgements out of order"
                );
                expected_next = Some(index + 1);
                acknowledged = index;
                acked_this_round += 1;
                if acked_this_round >= target {
                    // A random moment: somewhere in the next batch's
                    // write or fsync, or between batches.
                    std::thread::sleep(Duration::from_micros(fastrand::u64(0..3000)));
                    child.kill().unwrap(); // SIGKILL on unix
                    killed = true;
                    break;
                }
            }
        }
        let status = child.wait().unwrap();
        assert!(
            killed,
            "round {round}: the writer ended by itself ({status}) after {acked_this_round} entries"
        );
        injected_junk += lose_the_unsynced_tail(dir.path(), acknowledged);
    }

    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    runtime.block_on(async {
        let (_identity, mut log, _sm) = steep_repl_consensus::open(dir.path()).unwrap();
        if let Some(torn) = log.torn_tail() {
            torn_tails += 1;
            eprintln!("final open: torn {} {}", torn.bytes, torn.reason);
        }
        let state = log.get_log_state().await.unwrap();
        let last = state.last_log_id.expect("a log with entries").index;
        assert!(
            last >= acknowledged,
            "the log ends at {last}, {acknowledged} was acknowledged"
        );
        let entries = log.try_get_log_entries(1..=last).await.unwrap();
        assert_eq!(entries.len() as u64, last, "the log has a hole");
        for (position, got) in entries.iter().enumerate() {
            let index = position as u64 + 1;
            assert_eq!(
                *got,
                entry(index),
                "entry {index} differs from what was written"
            );
        }
        eprintln!(
            "{ROUNDS} kills: {acknowledged} entries acknowledged, {last} in the log, \
             {torn_tails} torn tails cut ({injected_junk} with junk written)"
        );
    });
    assert!(torn_tails >= injected_junk, "every junk tail is cut off");
}

/// The record of an entry exactly as the log store frames it, to know how
/// many bytes the entries after the acknowledged ones take.
#[derive(Serialize)]
enum Record<'a> {
    Entry(&'a Entry),
}

fn frame_bytes(index: u64) -> u64 {
    8 + serde_json::to_vec(&Record::Entry(&entry(index)))
        .unwrap()
        .len() as u64
}

/// What a power loss could do after a kill: the bytes after the last
/// acknowledged entry were never fsync'd, so any part of them may be gone,
/// and the end of the records may hold garbage. Takes back a random part of
/// those bytes (tearing a record in the middle): zeros again where the log
/// had reserved the space, cut off where it had not; sometimes writes junk
/// where they were; answers 1 when junk was written.
fn lose_the_unsynced_tail(dir: &Path, acknowledged: u64) -> usize {
    let (last, end) = {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .build()
            .unwrap();
        runtime.block_on(async {
            let (_identity, mut log, _sm) = steep_repl_consensus::open(dir).unwrap();
            let last = log
                .get_log_state()
                .await
                .unwrap()
                .last_log_id
                .map_or(0, |l| l.index);
            (last, log.stats().file_bytes)
        })
    };
    let unsynced: u64 = (acknowledged + 1..=last).map(frame_bytes).sum();
    let path = dir.join(LOG_FILE);
    let mut file = OpenOptions::new().write(true).open(&path).unwrap();
    let len = file.metadata().unwrap().len();
    let cut = fastrand::u64(0..=unsynced);
    if len > end {
        file.seek(SeekFrom::Start(end - cut)).unwrap();
        file.write_all(&vec![0u8; cut as usize]).unwrap();
    } else {
        file.set_len(end - cut).unwrap();
    }
    if fastrand::bool() {
        let junk: Vec<u8> = (0..fastrand::usize(1..64))
            .map(|_| fastrand::u8(..))
            .collect();
        file.seek(SeekFrom::Start(end - cut)).unwrap();
        file.write_all(&junk).unwrap();
        1
    } else {
        0
    }
}
