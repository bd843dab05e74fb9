//! The projection's PostgreSQL work, done for a reference system's writes
//! (`state_bench --mirror-projection`).
//!
//! steep-repl applies every replicated write to each node's PostgreSQL
//! (one `steep_repl.apply_state_batch` call per pass of at most every
//! 100 ms, with an audit row per entry). On a machine where the three
//! nodes and their PostgreSQL servers share the cores, that work competes
//! with the writes. The mirror gives the reference the same work on the
//! same servers: for every write the reference acknowledges, each of the
//! three PostgreSQL servers applies one entry of the same shape, in the
//! projector's passes, in a database of its own (`steep_bench_mirror`,
//! with the extension) so that the nodes' own projection is untouched.
//! It tells how much of a gap between the two sides is the machine's.

use anyhow::{bail, Context, Result};
use serde_json::{json, Value};
use sqlx::{Connection, Executor, PgConnection};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};
use steep_repl_actors::db::projection::{state_entry, ProjectionStep, APPLY_STATE_BATCH_ALONE};
use steep_repl_actors::raft::projector::{BATCH, COALESCE};
use steep_repl_tests::pg::PgServer;

/// The database the mirror writes in, on each server (made afresh).
const DATABASE: &str = "steep_bench_mirror";
const DROP_DATABASE: &str = "DROP DATABASE IF EXISTS steep_bench_mirror";
const CREATE_DATABASE: &str = "CREATE DATABASE steep_bench_mirror";
/// Keys the entries rotate over, as the benchmark's writes do.
const KEYS: u64 = 64;

/// Counts the reference's acknowledged writes and wakes the mirror tasks,
/// as an applied entry wakes the projector; each task applies one entry
/// per write.
#[derive(Clone)]
pub struct WriteCounter(Arc<tokio::sync::watch::Sender<u64>>);

impl Default for WriteCounter {
    fn default() -> Self {
        WriteCounter(Arc::new(tokio::sync::watch::Sender::new(0)))
    }
}

impl WriteCounter {
    pub fn acknowledged(&self) {
        self.0.send_modify(|n| *n += 1);
    }
}

/// The mirror tasks; they stop when this is dropped.
pub struct ProjectionMirror {
    stop: Arc<AtomicBool>,
    writes: WriteCounter,
    tasks: Vec<tokio::task::JoinHandle<Result<u64>>>,
}

impl ProjectionMirror {
    /// Makes the mirror database on each server and starts one task per
    /// server, applying an entry for every write `writes` counts.
    pub async fn start(servers: &[&PgServer], writes: WriteCounter) -> Result<ProjectionMirror> {
        let cluster = uuid::Uuid::new_v4().to_string();
        let stop = Arc::new(AtomicBool::new(false));
        let mut tasks = Vec::new();
        for (i, pg) in servers.iter().enumerate() {
            let mut admin = pg.connect().await?;
            admin.execute(DROP_DATABASE).await?;
            admin
                .execute(CREATE_DATABASE)
                .await
                .with_context(|| format!("creating {DATABASE} on port {}", pg.port))?;
            let mut conn = pg.connect_to(DATABASE).await?;
            conn.execute("CREATE EXTENSION steep_repl")
                .await
                .context("CREATE EXTENSION steep_repl in the mirror database")?;
            sqlx::query("SELECT steep_repl.apply_state_snapshot($1, 0, 0, '{}')")
                .bind(&cluster)
                .execute(&mut conn)
                .await?;
            let actor = format!("ipc@mirror{i}");
            tasks.push(tokio::spawn(mirror(
                conn,
                cluster.clone(),
                actor,
                writes.0.subscribe(),
                stop.clone(),
            )));
        }
        Ok(ProjectionMirror {
            stop,
            writes,
            tasks,
        })
    }

    /// Stops the tasks once each has applied every write counted so far;
    /// the entries each applied.
    pub async fn stop(mut self) -> Result<Vec<u64>> {
        self.stop.store(true, Ordering::Relaxed);
        // Wakes the tasks that wait for a write.
        self.writes.0.send_modify(|_| {});
        let mut applied = Vec::new();
        for task in self.tasks.drain(..) {
            applied.push(task.await.context("a mirror task panicked")??);
        }
        Ok(applied)
    }
}

impl Drop for ProjectionMirror {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
    }
}

/// One server's passes: everything counted since the last pass, in
/// batches, at most every `COALESCE`.
async fn mirror(
    mut conn: PgConnection,
    cluster: String,
    actor: String,
    mut writes: tokio::sync::watch::Receiver<u64>,
    stop: Arc<AtomicBool>,
) -> Result<u64> {
    let mut applied = 0u64;
    let mut last_pass: Option<Instant> = None;
    loop {
        if *writes.borrow_and_update() == applied {
            if stop.load(Ordering::Relaxed) {
                break;
            }
            match tokio::time::timeout(Duration::from_secs(1), writes.changed()).await {
                Ok(Err(_)) => break, // no writer left to count
                Ok(Ok(())) | Err(_) => continue,
            }
        }
        if let Some(rest) = last_pass.and_then(|t| COALESCE.checked_sub(t.elapsed())) {
            tokio::time::sleep(rest).await;
        }
        last_pass = Some(Instant::now());
        let target = *writes.borrow_and_update();
        while applied < target {
            let end = target.min(applied + BATCH as u64);
            let entries: Vec<Value> = (applied + 1..=end)
                .filter_map(|n| state_entry(&change(n, &actor)))
                .collect();
            sqlx::query(APPLY_STATE_BATCH_ALONE)
                .bind(&cluster)
                .bind(sqlx::types::Json(Value::Array(entries)))
                .execute(&mut conn)
                .await
                .context("a mirror pass")?;
            applied = end;
        }
    }
    // What the extension recorded: every entry counted was written.
    let (recorded,): (i64,) = sqlx::query_as("SELECT applied_index FROM steep_repl.projection()")
        .fetch_one(&mut conn)
        .await?;
    if u64::try_from(recorded).ok() != Some(applied) {
        bail!("the mirror applied {applied} entries but the projection records index {recorded}");
    }
    conn.close().await?;
    Ok(applied)
}

/// The change the projector would write for write `n`.
fn change(n: u64, actor: &str) -> ProjectionStep {
    ProjectionStep::State {
        index: n,
        term: 1,
        key: format!("bench.mirror.k{}", n % KEYS),
        value: Some(json!(n)),
        actor: actor.to_string(),
        client_ip: None,
        request_id: Some(uuid::Uuid::new_v4().to_string()),
    }
}
