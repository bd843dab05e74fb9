//! Loading: reads the file's `repl:` section and the environment into
//! layers (`layers.rs`), lets figment stack them (defaults < file < libpq
//! variables < `STEEP_REPL_*`) and build `Config` through its serde schema,
//! turns figment's errors back into ours (the file or the variable, the key,
//! what was expected, what was there), fills in the defaults that depend on
//! the machine, and runs the cross-field checks. Nothing here runs
//! `password_command` or opens anything but the config file.

use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};

use figment::error::{Actual, Kind as ErrorKind};
use figment::{Figment, Source};

use super::error::ConfigError;
use super::keys;
use super::layers;
use super::paths::{self, Host};
use super::schema::*;
use super::validate;
use super::yaml::{self, Node};

impl Config {
    /// Loads the config file (`explicit`, else the platform default) and the
    /// process environment, and validates the result. Does not run
    /// `password_command`: see `resolve_password`.
    pub fn load(explicit: Option<&Path>) -> Result<Config, ConfigError> {
        let host = Host::current(process_env()?);
        match explicit {
            Some(path) => load_with(path, &host, None),
            None => {
                let (path, tried) = paths::default_config_candidates(&host);
                load_with(&path, &host, Some(&tried))
            }
        }
    }

    /// Loads `path` with `env` standing in for the process environment (the
    /// other machine facts, such as the host name, are this machine's).
    #[cfg_attr(not(test), allow(dead_code))]
    pub fn load_from(path: &Path, env: &HashMap<String, String>) -> Result<Config, ConfigError> {
        load_with(path, &Host::current(env.clone()), None)
    }
}

/// The process environment as UTF-8. A variable we read that is not UTF-8
/// is an error; others are none of our business.
fn process_env() -> Result<HashMap<String, String>, ConfigError> {
    let mut env = HashMap::new();
    for (name, value) in std::env::vars_os() {
        let Some(name) = name.to_str() else { continue };
        match value.into_string() {
            Ok(value) => {
                env.insert(name.to_string(), value);
            }
            Err(_) => {
                let ours = name.starts_with(keys::ENV_PREFIX)
                    || keys::LIBPQ_VARS.iter().any(|(v, _)| *v == name);
                if ours {
                    return Err(ConfigError::EnvNotUtf8 {
                        var: name.to_string(),
                    });
                }
            }
        }
    }
    Ok(env)
}

/// `default_tried`: `Some` when `path` is the default (not `--config`),
/// listing the paths looked at before it.
pub(crate) fn load_with(
    path: &Path,
    host: &Host,
    default_tried: Option<&[PathBuf]>,
) -> Result<Config, ConfigError> {
    let source = paths::absolute(path, &host.cwd);
    let root = read_file(&source, default_tried)?;

    let file = layers::file(&source, root)?;
    let mut env = layers::libpq(host);
    env.extend(layers::steep(host)?);
    let figment = layers::stack(file, env, &host.cwd)
        .into_iter()
        .fold(Figment::new(), Figment::merge);

    let mut config: Config = figment.extract().map_err(|e| refused_value(&e, &source))?;
    config.source = source;
    config.origins = origins(&figment);
    fill_machine_defaults(&mut config, host)?;
    validate::check(&config)?;
    Ok(config)
}

/// Where each key that some layer set came from.
fn origins(figment: &Figment) -> Origins {
    let mut map = BTreeMap::new();
    for key in keys::keys() {
        if let Some(metadata) = figment.find_metadata(key) {
            let origin = match metadata.source {
                Some(Source::File(_)) => ValueOrigin::File,
                _ => ValueOrigin::Env(metadata.name.to_string()),
            };
            map.insert(key.to_string(), origin);
        }
    }
    Origins(map)
}

/// A value figment could not turn into its field: `FILE: repl.KEY` or the
/// variable, the item of a list, what the key expects and what was there.
fn refused_value(error: &figment::Error, source: &Path) -> ConfigError {
    let mut path = error.path.clone();
    let item = match path.last().map(|last| last.parse::<usize>()) {
        Some(Ok(i)) => {
            path.pop();
            Some(i)
        }
        _ => None,
    };
    let key = path.join(".");
    let var = match error.metadata.as_ref() {
        Some(m) if !matches!(m.source, Some(Source::File(_))) => Some(m.name.to_string()),
        _ => None,
    };
    let mut place = match &var {
        Some(var) => var.clone(),
        None => format!("{}: repl.{key}", source.display()),
    };
    if let Some(i) = item {
        place.push_str(&format!(" (item {})", i + 1));
    }
    match &error.kind {
        ErrorKind::InvalidType(actual, expected) | ErrorKind::InvalidValue(actual, expected) => {
            ConfigError::Invalid {
                place,
                expected: expected.clone(),
                got: match actual {
                    Actual::Str(text) => show(text, var.is_none()),
                    Actual::Seq => "a list".into(),
                    Actual::Map => "a mapping".into(),
                    Actual::Unit | Actual::Option => "an empty item".into(),
                    Actual::Other(what) => what.clone(),
                    other => other.to_string(),
                },
            }
        }
        other => ConfigError::Inconsistent {
            place,
            message: other.to_string(),
        },
    }
}

/// The defaults that depend on the machine or on `node_id`, for the keys
/// that nothing set (the schema leaves them empty; no key's parser accepts
/// empty text, so empty means unset).
fn fill_machine_defaults(c: &mut Config, host: &Host) -> Result<(), ConfigError> {
    let place = c.source.display().to_string();
    let no_default = |key: &str, why: &str, env: &str| ConfigError::Inconsistent {
        place: place.clone(),
        message: format!(
            "repl.{key} has no default on this machine ({why}); set it in the file or with {env}"
        ),
    };
    if c.node_id.is_empty() {
        return Err(ConfigError::Missing {
            path: c.source.clone(),
            key: "node_id".into(),
            hint: " (set it under repl: in the file, or with STEEP_REPL_NODE_ID)".into(),
        });
    }
    if c.node_name.is_empty() {
        c.node_name = c.node_id.clone();
    }
    if c.advertise_host.is_empty() {
        c.advertise_host = host
            .hostname
            .clone()
            .filter(|h| !h.is_empty())
            .ok_or_else(|| {
                no_default(
                    "advertise_host",
                    "the host name cannot be read",
                    "STEEP_REPL_ADVERTISE_HOST",
                )
            })?;
    }
    if c.postgresql.user.is_empty() {
        c.postgresql.user = match host.os_user.clone() {
            Some(u) => u,
            // A witness never connects: no user is needed.
            None if !c.postgresql.enabled => String::new(),
            None => {
                return Err(no_default(
                    "postgresql.user",
                    "the OS user name cannot be read",
                    "PGUSER",
                ))
            }
        };
    }
    let layout = paths::Layout::of(host, &c.source);
    if c.raft.dir.as_os_str().is_empty() {
        c.raft.dir = paths::default_raft_dir(host, layout, &c.node_id)
            .map_err(|why| no_default("raft.dir", &why, "STEEP_REPL_RAFT__DIR"))?;
    }
    if c.ipc.path.as_os_str().is_empty() {
        c.ipc.path = paths::default_ipc_path(host, layout)
            .map_err(|why| no_default("ipc.path", &why, "STEEP_REPL_IPC__PATH"))?;
    }
    if c.audit.spool_path.as_os_str().is_empty() {
        c.audit.spool_path = paths::default_spool_path(host, layout, &c.node_id)
            .map_err(|why| no_default("audit.spool_path", &why, "STEEP_REPL_AUDIT__SPOOL_PATH"))?;
    }
    Ok(())
}

fn read_file(path: &Path, default_tried: Option<&[PathBuf]>) -> Result<Option<Node>, ConfigError> {
    let hint = match default_tried {
        None => String::new(),
        Some([]) => " (the default path; --config FILE names another)".to_string(),
        Some(tried) => {
            let tried: Vec<String> = tried.iter().map(|p| p.display().to_string()).collect();
            format!(" (nor {}; --config FILE names another)", tried.join(", "))
        }
    };
    let bytes = std::fs::read(path).map_err(|error| {
        if error.kind() == std::io::ErrorKind::NotFound {
            ConfigError::NotFound {
                path: path.to_path_buf(),
                hint: hint.clone(),
            }
        } else {
            ConfigError::Unreadable {
                path: path.to_path_buf(),
                error,
                hint: hint.clone(),
            }
        }
    })?;
    let text = String::from_utf8(bytes).map_err(|e| ConfigError::NotUtf8 {
        path: path.to_path_buf(),
        line: 1 + e.as_bytes()[..e.utf8_error().valid_up_to()]
            .iter()
            .filter(|b| **b == b'\n')
            .count(),
    })?;
    yaml::parse(&text).map_err(|e| ConfigError::Syntax {
        path: path.to_path_buf(),
        line: e.line,
        column: e.column,
        message: e.message,
    })
}

/// How an error shows a value that did not parse: env values always in
/// quotes (they are strings), file values bare when they read as a number
/// (`got 70000`), in quotes otherwise (`got "abc"`).
pub(crate) fn show(text: &str, from_file: bool) -> String {
    const MAX: usize = 120;
    let numeric = text.trim().parse::<f64>().is_ok() && text.chars().any(|c| c.is_ascii_digit());
    let shown = if from_file && numeric {
        text.to_string()
    } else {
        format!("{text:?}")
    };
    if shown.chars().count() > MAX {
        let cut: String = shown.chars().take(MAX).collect();
        format!("{cut}...")
    } else {
        shown
    }
}
