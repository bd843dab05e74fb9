//! `steep_repl`: the node registry, coordinator key/value state and the
//! append-only audit log that every steep-repl daemon keeps on its local
//! PostgreSQL 18.
//!
//! Everything the extension does is plain SQL in `ext/sql/*.sql`; this file
//! only orders those files for pgrx. The daemon talks to the extension through
//! the SQL API and the tables, never through Rust symbols, so the schema is
//! the whole contract between the two.
//!
//! Order matters: `bootstrap.sql` must run before anything else so that an
//! older server sees our version message instead of a library load error.
//!
//! Upgrades: `sql/released/` holds the install script of every released
//! version as shipped, and `sql/steep_repl--A--B.sql` the upgrade scripts.
//! The fresh install of this version (the files below) and the oldest
//! release plus every upgrade script must give the same schema
//! (tests/tests/extension_upgrade.rs compares them).

::pgrx::pg_module_magic!(name, version);

pgrx::extension_sql_file!("../sql/bootstrap.sql", name = "bootstrap", bootstrap);
pgrx::extension_sql_file!("../sql/tables.sql", name = "tables", requires = ["bootstrap"]);
pgrx::extension_sql_file!(
    "../sql/audit.sql",
    name = "audit",
    requires = ["tables"]
);
pgrx::extension_sql_file!("../sql/api.sql", name = "api", requires = ["audit"]);
pgrx::extension_sql_file!("../sql/projection.sql", name = "projection", requires = ["api"]);
pgrx::extension_sql_file!("../sql/finalize.sql", name = "finalize", finalize);
