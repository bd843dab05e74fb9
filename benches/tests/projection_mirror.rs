//! The mirror of `state_bench --mirror-projection` on real PostgreSQL 18
//! servers: every counted write becomes one applied, audited entry on
//! every server, as the projector writes steep-repl's.

use anyhow::Result;
use steep_repl_benches::projection_mirror::{ProjectionMirror, WriteCounter};
use steep_repl_tests::pg::PgServer;

const WRITES: u64 = 300;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_counted_write_is_applied_and_audited_once_on_every_server() -> Result<()> {
    let servers = [PgServer::start()?, PgServer::start()?];
    let writes = WriteCounter::default();
    let mirror =
        ProjectionMirror::start(&servers.iter().collect::<Vec<_>>(), writes.clone()).await?;
    // From another thread, as the benchmark's writers count.
    let counting = writes.clone();
    std::thread::spawn(move || {
        for _ in 0..WRITES {
            counting.acknowledged();
            std::thread::sleep(std::time::Duration::from_micros(200));
        }
    })
    .join()
    .map_err(|_| anyhow::anyhow!("the counting thread panicked"))?;
    assert_eq!(mirror.stop().await?, vec![WRITES, WRITES]);
    for pg in &servers {
        let mut conn = pg.connect_to("steep_bench_mirror").await?;
        let audited: i64 = sqlx::query_scalar(
            "SELECT count(*) FROM steep_repl.audit_log WHERE action = 'state.updated' AND actor LIKE 'ipc@mirror%' AND target_type = 'state'",
        )
        .fetch_one(&mut conn)
        .await?;
        assert_eq!(
            audited, WRITES as i64,
            "one audit row per entry on port {}",
            pg.port
        );
        let keys: i64 = sqlx::query_scalar("SELECT count(*) FROM steep_repl.coordinator_state")
            .fetch_one(&mut conn)
            .await?;
        assert_eq!(keys, 64, "the entries rotate over 64 keys");
        let index: i64 = sqlx::query_scalar("SELECT applied_index FROM steep_repl.projection()")
            .fetch_one(&mut conn)
            .await?;
        assert_eq!(index, WRITES as i64);
    }
    Ok(())
}
