//! The table of every configuration key, derived from the schema: its
//! dotted name under `repl:`, whether it holds a list or a path, the
//! `STEEP_REPL_*` environment variable that overrides it, the libpq
//! variables that map onto `postgresql.*`, and the "did you mean"
//! suggestions for names that are not in the table. The file reader, the
//! environment reader and the YAML printer all walk this one table, so a
//! field added to `schema.rs` is known to all.

use std::sync::LazyLock;

use super::flatten::{self, Leaf};
use super::schema::Config;

struct Table {
    leaves: Vec<Leaf>,
    /// Keys that hold other keys (YAML mappings), in order of appearance.
    sections: Vec<String>,
}

static TABLE: LazyLock<Table> = LazyLock::new(|| {
    let leaves = flatten::leaves(&Config::default());
    let mut sections: Vec<String> = Vec::new();
    for leaf in &leaves {
        let mut end = 0;
        while let Some(dot) = leaf.key[end..].find('.') {
            end += dot;
            let section = &leaf.key[..end];
            if !sections.iter().any(|s| s == section) {
                sections.push(section.to_string());
            }
            end += 1;
        }
    }
    Table { leaves, sections }
});

/// Every leaf key, dotted, relative to `repl:`, in the order `config check`
/// prints them (the schema's).
pub(crate) fn keys() -> impl Iterator<Item = &'static str> {
    TABLE.leaves.iter().map(|l| l.key.as_str())
}

fn sections() -> impl Iterator<Item = &'static str> {
    TABLE.sections.iter().map(String::as_str)
}

fn leaf(dotted: &str) -> Option<&'static Leaf> {
    TABLE.leaves.iter().find(|l| l.key == dotted)
}

pub(crate) fn is_key(dotted: &str) -> bool {
    leaf(dotted).is_some()
}

/// A key that takes a list: text for it is split at commas.
pub(crate) fn is_list(dotted: &str) -> bool {
    leaf(dotted).is_some_and(|l| l.list)
}

/// A key that takes a path: relative text is resolved against its source.
pub(crate) fn is_path(dotted: &str) -> bool {
    leaf(dotted).is_some_and(|l| l.path)
}

/// Prefix of our own environment variables.
pub(crate) const ENV_PREFIX: &str = "STEEP_REPL_";

/// `STEEP_REPL_*` variables that are not settings: the CLI reads them itself
/// (e.g. a default for `--config`), so the loader must not call them unknown.
pub(crate) const ENV_NOT_SETTINGS: &[&str] = &["STEEP_REPL_CONFIG"];

/// The standard libpq variables and the key each one sets. They sit between
/// the file and `STEEP_REPL_*` in precedence, as a DBA expects from any
/// PostgreSQL client.
pub(crate) const LIBPQ_VARS: &[(&str, &str)] = &[
    ("PGHOST", "postgresql.host"),
    ("PGPORT", "postgresql.port"),
    ("PGDATABASE", "postgresql.database"),
    ("PGUSER", "postgresql.user"),
    ("PGPASSWORD", "postgresql.password"),
    ("PGSSLMODE", "postgresql.sslmode"),
];

pub(crate) fn is_section(dotted: &str) -> bool {
    sections().any(|s| s == dotted)
}

/// `grpc.tls.cert_file` -> `STEEP_REPL_GRPC__TLS__CERT_FILE`.
pub(crate) fn env_var_for(dotted: &str) -> String {
    format!(
        "{ENV_PREFIX}{}",
        dotted.to_ascii_uppercase().replace('.', "__")
    )
}

/// `STEEP_REPL_GRPC__TLS__CERT_FILE` -> `grpc.tls.cert_file` (not checked
/// against the table; `None` when the name lacks our prefix).
pub(crate) fn dotted_for_env_var(var: &str) -> Option<String> {
    let rest = var.strip_prefix(ENV_PREFIX)?;
    Some(rest.to_ascii_lowercase().replace("__", "."))
}

/// The names directly inside `section` ("" for the top of `repl:`), keys and
/// sections alike, in table order.
pub(crate) fn children(section: &str) -> Vec<&'static str> {
    let mut names: Vec<&'static str> = Vec::new();
    for full in keys().chain(sections()) {
        let rest = if section.is_empty() {
            Some(full)
        } else {
            full.strip_prefix(section).and_then(|r| r.strip_prefix('.'))
        };
        if let Some(rest) = rest {
            let first = rest.split('.').next().unwrap_or(rest);
            if !names.contains(&first) {
                names.push(first);
            }
        }
    }
    names
}

/// The candidate closest to `word`, when it is close enough to be a typo
/// (transpositions count as one edit: `prot` -> `port`).
fn closest<'a>(word: &str, candidates: impl IntoIterator<Item = &'a str>) -> Option<&'a str> {
    let limit = match word.chars().count() {
        0..=3 => 1,
        4..=8 => 2,
        _ => 3,
    };
    let lower = word.to_ascii_lowercase();
    candidates
        .into_iter()
        .map(|c| (strsim::osa_distance(&lower, &c.to_ascii_lowercase()), c))
        .filter(|(d, _)| *d <= limit)
        .min_by_key(|(d, _)| *d)
        .map(|(_, c)| c)
}

/// A suggestion for an unknown name `name` met inside `section` of the file:
/// a near sibling (`port`), or else the same name where it does exist
/// (`repl.grpc.port or repl.http.port`).
pub(crate) fn suggest_key(section: &str, name: &str) -> Option<String> {
    if let Some(near) = closest(name, children(section)) {
        return Some(near.to_string());
    }
    let elsewhere: Vec<String> = keys()
        .chain(sections())
        .filter(|full| full.rsplit('.').next() == Some(name))
        .map(|full| format!("repl.{full}"))
        .collect();
    match elsewhere.len() {
        0 => None,
        1 => elsewhere.into_iter().next(),
        n => Some(format!(
            "{} or {}",
            elsewhere[..n - 1].join(", "),
            elsewhere[n - 1]
        )),
    }
}

/// A suggestion for an unknown `STEEP_REPL_*` variable: the nearest known
/// variable name (`STEEP_REPL_GRPC_PORT` -> `STEEP_REPL_GRPC__PORT`).
pub(crate) fn suggest_env_var(var: &str) -> Option<String> {
    let known: Vec<String> = keys().map(env_var_for).collect();
    let rest = var.strip_prefix(ENV_PREFIX).unwrap_or(var);
    let rests: Vec<&str> = known
        .iter()
        .map(|k| k.strip_prefix(ENV_PREFIX).unwrap_or(k))
        .collect();
    closest(rest, rests).map(|r| format!("{ENV_PREFIX}{r}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn env_names_round_trip_for_every_key() {
        for key in keys() {
            let var = env_var_for(key);
            assert_eq!(dotted_for_env_var(&var).as_deref(), Some(key), "{var}");
        }
        assert_eq!(
            env_var_for("grpc.tls.cert_file"),
            "STEEP_REPL_GRPC__TLS__CERT_FILE"
        );
    }

    #[test]
    fn the_table_is_read_from_the_schema() {
        assert_eq!(keys().next(), Some("node_id"));
        assert_eq!(keys().last(), Some("log.target"));
        assert_eq!(
            sections().collect::<Vec<_>>(),
            [
                "postgresql",
                "grpc",
                "grpc.tls",
                "raft",
                "coordinator",
                "http",
                "ipc",
                "audit",
                "log"
            ]
        );
        assert_eq!(
            keys().filter(|k| is_list(k)).collect::<Vec<_>>(),
            ["grpc.peers"]
        );
        assert_eq!(
            keys().filter(|k| is_path(k)).collect::<Vec<_>>(),
            [
                "grpc.tls.cert_file",
                "grpc.tls.key_file",
                "grpc.tls.ca_file",
                "raft.dir",
                "ipc.path",
                "audit.spool_path"
            ]
        );
        assert!(!is_key("source") && !is_key("origins"));
    }

    #[test]
    fn every_key_lives_in_a_known_section() {
        for key in keys() {
            if let Some((section, _)) = key.rsplit_once('.') {
                assert!(is_section(section), "{key}");
            }
        }
    }

    #[test]
    fn children_lists_keys_and_sections_of_one_level() {
        assert_eq!(
            children("grpc"),
            vec![
                "enabled",
                "bind",
                "port",
                "peers",
                "tls",
                "heartbeat_interval",
                "degraded_rtt",
                "unreachable_after",
                "request_timeout",
                "max_concurrent_requests",
                "peer_rate_limit"
            ]
        );
        assert!(children("").contains(&"postgresql"));
        assert!(children("").contains(&"node_id"));
    }

    #[test]
    fn a_typo_suggests_the_near_sibling() {
        assert_eq!(suggest_key("grpc", "prot").as_deref(), Some("port"));
        assert_eq!(suggest_key("", "nodeid").as_deref(), Some("node_id"));
        assert_eq!(
            suggest_key("grpc", "hearbeat_interval").as_deref(),
            Some("heartbeat_interval")
        );
        assert_eq!(suggest_key("", "grcp").as_deref(), Some("grpc"));
    }

    #[test]
    fn a_key_in_the_wrong_section_suggests_where_it_lives() {
        assert_eq!(
            suggest_key("", "cert_file").as_deref(),
            Some("repl.grpc.tls.cert_file")
        );
        assert_eq!(
            suggest_key("", "bind").as_deref(),
            Some("repl.grpc.bind or repl.http.bind")
        );
        assert_eq!(suggest_key("grpc", "completely_else"), None);
    }

    #[test]
    fn an_env_typo_suggests_the_known_variable() {
        assert_eq!(
            suggest_env_var("STEEP_REPL_GRPC_PORT").as_deref(),
            Some("STEEP_REPL_GRPC__PORT")
        );
        assert_eq!(
            suggest_env_var("STEEP_REPL_NODEID").as_deref(),
            Some("STEEP_REPL_NODE_ID")
        );
        assert_eq!(suggest_env_var("STEEP_REPL_SOMETHING_ELSE_ENTIRELY"), None);
    }
}
