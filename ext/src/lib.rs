//! `steep_repl`: the node registry, coordinator key/value state and the
//! append-only audit log that every steep-repl daemon keeps on its local
//! PostgreSQL 18.
//!
//! Almost everything the extension does is plain SQL in `ext/sql/*.sql`;
//! this file orders those files for pgrx and defines the one thing SQL
//! cannot: the setting `steep_repl.applying`, which only a superuser may set
//! (see [`applying`]). The daemon talks to the extension through the SQL API
//! and the tables, never through Rust symbols, so the schema is the whole
//! contract between the two.
//!
//! Order matters: `bootstrap.sql` must run before anything else so that an
//! older server sees our version message instead of a library load error.
//!
//! Upgrades: `sql/released/` holds the install script of every released
//! version as shipped, and `sql/steep_repl--A--B.sql` the upgrade scripts.
//! The fresh install of this version (the files below) and the oldest
//! release plus every upgrade script must give the same schema
//! (tests/tests/extension_upgrade.rs compares them).

use pgrx::prelude::*;
use pgrx::{GucContext, GucFlags, GucRegistry, GucSetting};

::pgrx::pg_module_magic!(name, version);

/// `steep_repl.applying`: on while an apply function of the extension writes
/// the projection and audits the entry itself, so the table triggers do not
/// audit (or refuse) the same change. A setting an ordinary session could
/// turn on would silence the audit; this one is `SUSET`: only a superuser,
/// here the extension's owner inside its `SECURITY DEFINER` functions, may
/// set it. A value an ordinary session gave it before this library was
/// loaded is discarded by PostgreSQL when the library defines it.
static APPLYING: GucSetting<bool> = GucSetting::<bool>::new(false);

#[pg_guard]
pub extern "C-unwind" fn _PG_init() {
    GucRegistry::define_bool_guc(
        c"steep_repl.applying",
        c"On while a steep_repl apply function writes (internal).",
        c"Set only by the extension's own functions; superuser only.",
        &APPLYING,
        GucContext::Suset,
        GucFlags::default(),
    );
}

/// The value of `steep_repl.applying` as defined by this library. The
/// triggers call this rather than `current_setting()`: calling it loads the
/// library first, so a value set before the definition cannot be read.
/// Its SQL declaration is in `sql/audit.sql` (one text for a fresh install
/// and for the upgrade script).
#[pg_extern(sql = false)]
fn applying() -> bool {
    APPLYING.get()
}

pgrx::extension_sql_file!("../sql/bootstrap.sql", name = "bootstrap", bootstrap);
pgrx::extension_sql_file!(
    "../sql/tables.sql",
    name = "tables",
    requires = ["bootstrap"]
);
pgrx::extension_sql_file!("../sql/audit.sql", name = "audit", requires = ["tables"]);
pgrx::extension_sql_file!("../sql/api.sql", name = "api", requires = ["audit"]);
pgrx::extension_sql_file!(
    "../sql/projection.sql",
    name = "projection",
    requires = ["api"]
);
pgrx::extension_sql_file!(
    "../sql/daemon.sql",
    name = "daemon",
    requires = ["projection"]
);
pgrx::extension_sql_file!(
    "../sql/privileges.sql",
    name = "privileges",
    requires = ["daemon"]
);
pgrx::extension_sql_file!("../sql/finalize.sql", name = "finalize", finalize);
