//! [`Db`]: what the rest of the daemon holds to use PostgreSQL. Cloning it is
//! cheap; every clone reads the pool the keeper publishes (a pointer load,
//! never the keeper's mailbox), so queries run on the caller's task. The
//! queries themselves are methods in [`super::queries`] and
//! [`super::projection`].

use super::cause::{describe_connect_error, is_connection_error};
use super::keeper::{
    Close, ConnectionLost, DbActor, DbConnected, DbStatus, GetDbStatus, Ping, PoolSlot,
    SubscribeConnected,
};
use super::{DbError, DbResult, DbSettings, WITNESS};
use crate::health_state::{DbPhase, SharedHealth};
use actix::prelude::*;
use slog::Logger;
use sqlx::postgres::PgPool;
use std::future::Future;
use std::sync::Arc;

/// A handle to PostgreSQL: the published pool, and the keeper to tell when
/// a query finds the connection gone.
#[derive(Clone)]
pub struct Db {
    pool: PoolSlot,
    settings: Arc<DbSettings>,
    health: SharedHealth,
    keeper: Addr<DbActor>,
}

impl Db {
    /// Starts the keeper (in the current actix system) and returns the
    /// first handle to it.
    pub fn start(settings: DbSettings, health: SharedHealth, log: Logger) -> Db {
        let settings = Arc::new(settings);
        let pool = PoolSlot::default();
        let keeper = DbActor::new(settings.clone(), health.clone(), pool.clone(), log).start();
        Db {
            pool,
            settings,
            health,
            keeper,
        }
    }

    /// Asks the keeper for a health ping (the HealthActor's refresh).
    pub fn ping(&self) {
        self.keeper.do_send(Ping);
    }

    /// `recipient` hears each time PostgreSQL becomes usable (at once if it
    /// is now).
    pub fn subscribe_connected(&self, recipient: Recipient<DbConnected>) {
        self.keeper.do_send(SubscribeConnected(recipient));
    }

    /// The keeper's state machine as it stands.
    pub async fn status(&self) -> Result<DbStatus, MailboxError> {
        self.keeper.send(GetDbStatus).await
    }

    /// Closes the pool for shutdown; the keeper connects no more.
    pub async fn close(&self) {
        // A keeper already gone has nothing left to close.
        let _ = self.keeper.send(Close).await;
    }

    /// The published pool, or why there is none.
    fn pool(&self) -> DbResult<PgPool> {
        if let Some(pool) = self.pool.load_full() {
            return Ok(PgPool::clone(&pool));
        }
        let snapshot = self.health.load_stored();
        let pg = &snapshot.postgresql;
        if pg.phase == DbPhase::Disabled {
            return Err(DbError::NotConnected(WITNESS.to_string()));
        }
        let reason = pg
            .error
            .clone()
            .unwrap_or_else(|| format!("PostgreSQL is {}", pg.phase.as_str()));
        Err(DbError::NotConnected(reason))
    }

    /// Runs `query` on the pool; a connection failure also tells the keeper
    /// the connection is lost.
    pub(super) async fn run<T, F, Fut>(&self, query: F) -> DbResult<T>
    where
        F: FnOnce(PgPool) -> Fut,
        Fut: Future<Output = Result<T, sqlx::Error>>,
    {
        match query(self.pool()?).await {
            Ok(value) => Ok(value),
            Err(e) if is_connection_error(&e) => {
                let reason = describe_connect_error(&e, &self.settings.target());
                self.keeper.do_send(ConnectionLost(reason.clone()));
                Err(DbError::NotConnected(reason))
            }
            Err(e) => Err(DbError::Query(e.to_string())),
        }
    }
}
