//! HealthActor: keeps the cached health fresh.
//!
//! Every refresh interval it marks the daemon's loop as turning (what
//! `/live` reads) and asks the database keeper for a PostgreSQL ping, whose result
//! lands in the shared snapshot. Probes never come here: they read the
//! snapshot directly (see `health_state`). The same tick feeds the service
//! manager's watchdog.

use crate::db::Db;
use crate::health_state::SharedHealth;
use crate::lifecycle::ServiceNotifier;
use actix::prelude::*;
use std::sync::Arc;
use std::time::Duration;

pub struct HealthActor {
    health: SharedHealth,
    db: Db,
    interval: Duration,
    notifier: Option<Arc<dyn ServiceNotifier>>,
}

impl HealthActor {
    pub fn new(
        health: SharedHealth,
        db: Db,
        interval: Duration,
        notifier: Option<Arc<dyn ServiceNotifier>>,
    ) -> Self {
        HealthActor {
            health,
            db,
            interval,
            notifier,
        }
    }
}

impl Actor for HealthActor {
    type Context = Context<Self>;

    fn started(&mut self, ctx: &mut Context<Self>) {
        self.health.touch_loop();
        ctx.run_interval(self.interval, |act, _| {
            act.health.touch_loop();
            // The watchdog is fed from the same loop /live watches: if the
            // actor thread is stuck, systemd restarts the daemon.
            if let Some(notifier) = &act.notifier {
                notifier.watchdog();
            }
            act.db.ping();
        });
    }
}
