//! The daemon's configuration: the `repl:` section of a YAML file shared
//! with the Steep TUI, overridden by libpq's `PG*` variables and by
//! `STEEP_REPL_*` variables, validated as a whole before anything starts.
//! The CLI calls `Config::load`, `config check` prints `to_masked_yaml`,
//! and the actors read the typed sections. See docs/configuration.md.
//!
//! Files: `schema` (the types and defaults), `keys` (the key table and env
//! names), `yaml` (the positioned YAML reader), `values` (single-value
//! parsers), `load` (layering and building), `validate` (cross-field checks,
//! warnings), `password` (`password_command`), `paths` (platform paths),
//! `secret`, `render` (`config check` output), `error`.

mod error;
mod keys;
mod load;
mod password;
mod paths;
mod render;
mod schema;
mod secret;
mod validate;
mod values;
mod yaml;

#[cfg(test)]
mod tests;

pub use paths::{default_config_path, system_config_path, user_config_path};
pub use schema::*;
