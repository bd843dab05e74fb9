//! The daemon's configuration: the `repl:` section of a YAML file shared
//! with the Steep TUI, overridden by libpq's `PG*` variables and by
//! `STEEP_REPL_*` variables, validated as a whole before anything starts.
//! The CLI calls `Config::load`, `config check` prints `to_masked_yaml`,
//! and the actors read the typed sections. See docs/configuration.md.
//!
//! Files: `schema` (every key, declared once: types, defaults, how each
//! reads and prints), `types` (the enums and `PeerAddr`), `fields` (the
//! serde adapters the schema names), `values` (single-value parsers and
//! what each expects), `flatten` and `keys` (the key table derived from the
//! schema, env names, suggestions), `yaml` (the positioned YAML reader),
//! `layers` (file and environment as figment providers), `load` (stacking,
//! errors, machine defaults), `validate` (cross-field checks, warnings),
//! `password` (`password_command`), `paths` (platform paths), `secret`,
//! `render` (`config check` output), `error`.

mod error;
mod fields;
mod flatten;
mod keys;
mod layers;
mod load;
mod password;
mod paths;
mod render;
mod schema;
mod secret;
mod types;
mod validate;
mod values;
mod yaml;

#[cfg(test)]
mod tests;

pub use paths::{default_config_path, system_config_path, user_config_path};
pub use schema::*;
