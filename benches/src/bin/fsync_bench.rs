//! `fsync_bench [--records N] [--bytes B] [--dir DIR]`: the fdatasync
//! latency of a small record appended to a file that grows with it,
//! against the same record written into space reserved ahead, as the Raft
//! log writes it (`steep_repl_consensus::preallocate`). Both files are in
//! one temporary directory under DIR (default: the current directory, so
//! run it on the disk that holds `raft.dir`); the two are written in turn,
//! record by record, so that both see the same disk at the same moment.
//!
//! Run: `cargo build --release -p steep-repl-benches && target/release/fsync_bench`

use anyhow::{bail, Context, Result};
use std::fs::{File, OpenOptions};
use std::io::{Seek, SeekFrom, Write};
use std::path::PathBuf;
use std::time::{Duration, Instant};
use steep_repl_benches::ipc_load::LoadReport;
use steep_repl_consensus::log_store::RESERVE_BYTES;
use steep_repl_consensus::preallocate;

struct Args {
    records: usize,
    bytes: usize,
    dir: PathBuf,
}

fn parse() -> Result<Args> {
    let mut args = Args {
        records: 3000,
        bytes: 300,
        dir: PathBuf::from("."),
    };
    let mut it = std::env::args().skip(1);
    while let Some(flag) = it.next() {
        let mut value = || it.next().with_context(|| format!("{flag} needs a value"));
        match flag.as_str() {
            "--records" => args.records = value()?.parse().context("--records")?,
            "--bytes" => args.bytes = value()?.parse().context("--bytes")?,
            "--dir" => args.dir = PathBuf::from(value()?),
            "--help" | "-h" => {
                println!("fsync_bench [--records N] [--bytes B] [--dir DIR]");
                std::process::exit(0);
            }
            other => bail!("unknown option {other} (see --help)"),
        }
    }
    if args.records == 0 || args.bytes == 0 {
        bail!("--records and --bytes must be at least 1");
    }
    Ok(args)
}

/// A file written at its own end, with the time of each fdatasync.
struct Log {
    file: File,
    end: u64,
    reserved_end: u64,
    reserve: bool,
    syncs: Vec<Duration>,
}

impl Log {
    fn create(path: PathBuf, reserve: bool) -> Result<Log> {
        let file = OpenOptions::new()
            .write(true)
            .create_new(true)
            .open(&path)
            .with_context(|| format!("creating {}", path.display()))?;
        Ok(Log {
            file,
            end: 0,
            reserved_end: 0,
            reserve,
            syncs: Vec::new(),
        })
    }

    fn write(&mut self, record: &[u8]) -> Result<()> {
        let len = record.len() as u64;
        if self.reserve && self.end + len > self.reserved_end {
            let want = len.max(RESERVE_BYTES);
            if !preallocate::reserve(&self.file, self.end, want).context("reserving space")? {
                bail!("this platform reserves no space: nothing to compare");
            }
            self.reserved_end = self.end + want;
        }
        self.file.seek(SeekFrom::Start(self.end))?;
        self.file.write_all(record)?;
        self.end += len;
        let started = Instant::now();
        self.file.sync_data().context("fdatasync")?;
        self.syncs.push(started.elapsed());
        Ok(())
    }

    fn report(mut self) -> LoadReport {
        self.syncs.sort();
        LoadReport {
            requests: self.syncs.len(),
            connections: 1,
            elapsed: self.syncs.iter().sum(),
            latencies: self.syncs,
        }
    }
}

fn main() -> Result<()> {
    let args = parse()?;
    let dir = tempfile::tempdir_in(&args.dir)
        .with_context(|| format!("a temporary directory in {}", args.dir.display()))?;
    let mut appended = Log::create(dir.path().join("appended.bin"), false)?;
    let mut reserved = Log::create(dir.path().join("reserved.bin"), true)?;
    let record = vec![b'x'; args.bytes];
    for _ in 0..args.records {
        appended.write(&record)?;
        reserved.write(&record)?;
    }
    let (appended, reserved) = (appended.report(), reserved.report());
    let us = |d: Duration| d.as_secs_f64() * 1e6;
    println!(
        "{} fdatasyncs of a {}-byte record each, in {}\n",
        args.records,
        args.bytes,
        args.dir.display()
    );
    println!("| | p50 µs | p90 µs | p99 µs | p99.9 µs |\n|---|---:|---:|---:|---:|");
    for (name, r) in [
        ("appended (the file grows)", &appended),
        ("into reserved space", &reserved),
    ] {
        println!(
            "| {name} | {:.0} | {:.0} | {:.0} | {:.0} |",
            us(r.quantile(0.5)),
            us(r.quantile(0.9)),
            us(r.quantile(0.99)),
            us(r.quantile(0.999))
        );
    }
    println!(
        "| reserved / appended | {:.2} | {:.2} | {:.2} | {:.2} |",
        us(reserved.quantile(0.5)) / us(appended.quantile(0.5)),
        us(reserved.quantile(0.9)) / us(appended.quantile(0.9)),
        us(reserved.quantile(0.99)) / us(appended.quantile(0.99)),
        us(reserved.quantile(0.999)) / us(appended.quantile(0.999))
    );
    Ok(())
}
