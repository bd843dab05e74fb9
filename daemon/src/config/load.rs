//! Loading: reads the file's `repl:` section and the environment into
//! layers of raw settings (each remembering where it came from), stacks them
//! (defaults < file < libpq variables < `STEEP_REPL_*`), parses every key
//! into `Config`, and runs the cross-field checks. Nothing here runs
//! `password_command` or opens anything but the config file.

use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};

use super::error::ConfigError;
use super::keys::{self, KEYS};
use super::paths::{self, Host};
use super::schema::*;
use super::secret::Secret;
use super::validate;
use super::values::{self, DurationRange};
use super::yaml::{self, Kind, Node};

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

    let file = file_layer(&source, root)?;
    let libpq = libpq_layer(host);
    let steep = steep_layer(host)?;
    check_password_pair(&file, &source)?;
    check_password_pair(&steep, &source)?;

    let mut merged = file;
    for layer in [libpq, steep] {
        // password and password_command are two spellings of one setting:
        // a higher layer that gives either replaces both below it.
        let sets_password = ["postgresql.password", "postgresql.password_command"]
            .iter()
            .any(|k| layer.get(k).is_some_and(|s| !s.raw.is_empty_text()));
        if sets_password {
            merged.remove("postgresql.password");
            merged.remove("postgresql.password_command");
        }
        merged.extend(layer);
    }

    let settings = Settings {
        dir: source
            .parent()
            .map(Path::to_path_buf)
            .unwrap_or_else(|| PathBuf::from("/")),
        source,
        cwd: host.cwd.clone(),
        map: merged,
    };
    let config = build(&settings, host)?;
    validate::check(&config)?;
    Ok(config)
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

/// A value before parsing, as the file or a variable gave it.
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum Raw {
    Text(String),
    List(Vec<Raw>),
    /// A shape no key takes (a mapping where a value belongs), or a null
    /// list item; holds how to name it.
    Shape(&'static str),
}

impl Raw {
    fn is_empty_text(&self) -> bool {
        matches!(self, Raw::Text(t) if t.is_empty())
    }

    fn of(node: &Node) -> Option<Raw> {
        match &node.kind {
            Kind::Null => None,
            Kind::Scalar(s) => Some(Raw::Text(s.clone())),
            Kind::Seq(items) => Some(Raw::List(
                items
                    .iter()
                    .map(|n| Raw::of(n).unwrap_or(Raw::Shape("an empty item")))
                    .collect(),
            )),
            Kind::Map(_) => Some(Raw::Shape("a mapping")),
        }
    }
}

/// Where one raw value came from.
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum SettingFrom {
    /// The config file (`Settings::source`).
    File,
    Env(String),
}

#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Setting {
    pub raw: Raw,
    pub from: SettingFrom,
}

type Layer = BTreeMap<&'static str, Setting>;

fn file_layer(path: &Path, root: Option<Node>) -> Result<Layer, ConfigError> {
    let no_repl = || ConfigError::NoReplSection {
        path: path.to_path_buf(),
    };
    let Some(Node {
        kind: Kind::Map(top),
        ..
    }) = root
    else {
        return Err(no_repl());
    };
    let mut repl = top
        .iter()
        .filter(|(k, _)| matches!(&k.kind, Kind::Scalar(s) if s == "repl"));
    let (first_key, section) = repl.next().ok_or_else(no_repl)?;
    if let Some((again, _)) = repl.next() {
        return Err(ConfigError::DuplicateKey {
            path: path.to_path_buf(),
            key: "repl".into(),
            line: again.line,
            first_line: first_key.line,
        });
    }
    let mut layer = Layer::new();
    match &section.kind {
        Kind::Map(pairs) => walk(path, "", pairs, &mut layer)?,
        Kind::Null => {}
        _ => return Err(not_a_section(path, "", section)),
    }
    Ok(layer)
}

fn not_a_section(path: &Path, dotted: &str, node: &Node) -> ConfigError {
    let key = if dotted.is_empty() {
        "repl".to_string()
    } else {
        format!("repl.{dotted}")
    };
    ConfigError::NotASection {
        path: path.to_path_buf(),
        key,
        known: keys::children(dotted).join(", "),
        got: match &node.kind {
            Kind::Scalar(s) => show(s, true),
            other => other.describe().to_string(),
        },
    }
}

/// Walks one section of the file, recording every leaf key it sets and
/// refusing names the table does not know.
fn walk(
    path: &Path,
    section: &str,
    pairs: &[(Node, Node)],
    layer: &mut Layer,
) -> Result<(), ConfigError> {
    let mut seen: HashMap<&str, usize> = HashMap::new();
    for (k, v) in pairs {
        let prefix = if section.is_empty() {
            "repl".to_string()
        } else {
            format!("repl.{section}")
        };
        let Kind::Scalar(name) = &k.kind else {
            return Err(ConfigError::Inconsistent {
                place: format!("{}: line {}", path.display(), k.line),
                message: format!("{prefix}: keys must be plain names"),
            });
        };
        let dotted = if section.is_empty() {
            name.clone()
        } else {
            format!("{section}.{name}")
        };
        if let Some(first_line) = seen.insert(name, k.line) {
            return Err(ConfigError::DuplicateKey {
                path: path.to_path_buf(),
                key: format!("repl.{dotted}"),
                line: k.line,
                first_line,
            });
        }
        if keys::is_section(&dotted) {
            match &v.kind {
                Kind::Map(inner) => walk(path, &dotted, inner, layer)?,
                Kind::Null => {}
                _ => return Err(not_a_section(path, &dotted, v)),
            }
        } else if let Some(key) = KEYS.iter().find(|key| **key == dotted) {
            // `key: ~` (or nothing) leaves the key to the layers below.
            if let Some(raw) = Raw::of(v) {
                layer.insert(
                    key,
                    Setting {
                        raw,
                        from: SettingFrom::File,
                    },
                );
            }
        } else {
            return Err(ConfigError::UnknownKey {
                path: path.to_path_buf(),
                key: format!("repl.{dotted}"),
                suggestion: keys::suggest_key(section, name),
            });
        }
    }
    Ok(())
}

/// PGHOST and friends. Empty ones count as unset, as scripts that export
/// `PGPASSWORD=` mean "none".
fn libpq_layer(host: &Host) -> Layer {
    let mut layer = Layer::new();
    for (var, key) in keys::LIBPQ_VARS {
        if let Some(value) = host.var(var) {
            layer.insert(
                key,
                Setting {
                    raw: Raw::Text(value.to_string()),
                    from: SettingFrom::Env(var.to_string()),
                },
            );
        }
    }
    layer
}

fn steep_layer(host: &Host) -> Result<Layer, ConfigError> {
    let mut vars: Vec<(&String, &String)> = host
        .env
        .iter()
        .filter(|(k, _)| k.starts_with(keys::ENV_PREFIX))
        .filter(|(k, _)| !keys::ENV_NOT_SETTINGS.contains(&k.as_str()))
        .collect();
    // Sorted, so that with several bad variables the same one is reported.
    vars.sort();
    let mut layer = Layer::new();
    for (var, value) in vars {
        let dotted = keys::dotted_for_env_var(var).unwrap_or_default();
        if let Some(key) = KEYS.iter().find(|key| **key == dotted) {
            layer.insert(
                key,
                Setting {
                    raw: Raw::Text(value.clone()),
                    from: SettingFrom::Env(var.clone()),
                },
            );
        } else if keys::is_section(&dotted) {
            let first = keys::children(&dotted).first().copied().unwrap_or("");
            return Err(ConfigError::EnvSection {
                var: var.clone(),
                key: dotted.clone(),
                example: keys::env_var_for(&format!("{dotted}.{first}")),
            });
        } else {
            return Err(ConfigError::UnknownEnvVar {
                var: var.clone(),
                suggestion: keys::suggest_env_var(var),
            });
        }
    }
    Ok(layer)
}

fn check_password_pair(layer: &Layer, source: &Path) -> Result<(), ConfigError> {
    let (Some(pw), Some(cmd)) = (
        layer.get("postgresql.password"),
        layer.get("postgresql.password_command"),
    ) else {
        return Ok(());
    };
    if pw.raw.is_empty_text() || cmd.raw.is_empty_text() {
        return Ok(());
    }
    let place = match (&pw.from, &cmd.from) {
        (SettingFrom::Env(a), SettingFrom::Env(b)) => format!("{a} and {b}"),
        _ => format!(
            "{}: repl.postgresql.password and repl.postgresql.password_command",
            source.display()
        ),
    };
    Err(ConfigError::Inconsistent {
        place,
        message: "both are set; keep one of them".into(),
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

/// The stacked raw settings, and how to resolve and report them.
pub(crate) struct Settings {
    pub source: PathBuf,
    /// The file's directory: relative paths in the file are relative to it.
    pub dir: PathBuf,
    /// Relative paths from the environment are relative to this.
    pub cwd: PathBuf,
    pub map: Layer,
}

impl Settings {
    fn place(&self, key: &str, from: &SettingFrom, item: Option<usize>) -> String {
        let base = match from {
            SettingFrom::File => format!("{}: repl.{key}", self.source.display()),
            SettingFrom::Env(var) => var.clone(),
        };
        match item {
            Some(i) => format!("{base} (item {})", i + 1),
            None => base,
        }
    }

    fn invalid(
        &self,
        key: &str,
        from: &SettingFrom,
        item: Option<usize>,
        expected: &str,
        got: String,
    ) -> ConfigError {
        ConfigError::Invalid {
            place: self.place(key, from, item),
            expected: expected.to_string(),
            got,
        }
    }

    fn got(&self, key: &str, raw: &Raw, from: &SettingFrom) -> String {
        match raw {
            _ if keys::is_secret(key) => match raw {
                Raw::Text(_) => "a value that is not accepted".into(),
                Raw::List(_) => "a list".into(),
                Raw::Shape(s) => (*s).into(),
            },
            Raw::Text(t) => show(t, *from == SettingFrom::File),
            Raw::List(_) => "a list".into(),
            Raw::Shape(s) => (*s).into(),
        }
    }

    /// A single value: `None` when unset, parsed otherwise.
    fn one<T>(
        &self,
        key: &str,
        expected: &str,
        parse: impl Fn(&str) -> Option<T>,
    ) -> Result<Option<T>, ConfigError> {
        let Some(setting) = self.map.get(key) else {
            return Ok(None);
        };
        match &setting.raw {
            Raw::Text(t) => match parse(t) {
                Some(v) => Ok(Some(v)),
                None => Err(self.invalid(
                    key,
                    &setting.from,
                    None,
                    expected,
                    self.got(key, &setting.raw, &setting.from),
                )),
            },
            other => Err(self.invalid(
                key,
                &setting.from,
                None,
                expected,
                self.got(key, other, &setting.from),
            )),
        }
    }

    /// A single value where empty text means "not set" (so an environment
    /// variable can clear what the file set).
    fn optional<T>(
        &self,
        key: &str,
        expected: &str,
        parse: impl Fn(&str) -> Option<T>,
    ) -> Result<Option<T>, ConfigError> {
        if self.map.get(key).is_some_and(|s| s.raw.is_empty_text()) {
            return Ok(None);
        }
        self.one(key, expected, parse)
    }

    fn duration(
        &self,
        key: &str,
        range: DurationRange,
        default: std::time::Duration,
    ) -> Result<std::time::Duration, ConfigError> {
        Ok(self
            .one(key, &range.expected(), |t| range.parse(t))?
            .unwrap_or(default))
    }

    /// A path, made absolute: relative to the file's directory when the file
    /// gave it, to the working directory when a variable did.
    fn path(&self, key: &str) -> Result<Option<PathBuf>, ConfigError> {
        self.path_of(key, values::PATH)
    }

    /// `path`, for a key that wants something else than a file (`expected`).
    fn path_of(&self, key: &str, expected: &str) -> Result<Option<PathBuf>, ConfigError> {
        let Some(p) = self.optional(key, expected, values::name)? else {
            return Ok(None);
        };
        let base = match self.map.get(key).map(|s| &s.from) {
            Some(SettingFrom::Env(_)) => &self.cwd,
            _ => &self.dir,
        };
        Ok(Some(paths::absolute(Path::new(&p), base)))
    }

    /// The peer list: a YAML list, or comma-separated text (how it arrives
    /// from the environment). Empty text is an empty list.
    fn peers(&self, key: &str) -> Result<Option<Vec<PeerAddr>>, ConfigError> {
        let Some(setting) = self.map.get(key) else {
            return Ok(None);
        };
        let from = &setting.from;
        let items: Vec<Raw> = match &setting.raw {
            Raw::Text(t) if t.trim().is_empty() => Vec::new(),
            Raw::Text(t) => t
                .split(',')
                .map(|s| Raw::Text(s.trim().to_string()))
                .collect(),
            Raw::List(items) => items.clone(),
            Raw::Shape(s) => {
                return Err(self.invalid(
                    key,
                    from,
                    None,
                    "a list of HOST:PORT addresses",
                    (*s).into(),
                ));
            }
        };
        let mut peers = Vec::with_capacity(items.len());
        for (i, item) in items.iter().enumerate() {
            let parsed = match item {
                Raw::Text(t) => t.parse::<PeerAddr>().ok(),
                _ => None,
            };
            match parsed {
                Some(p) => peers.push(p),
                None => {
                    return Err(self.invalid(
                        key,
                        from,
                        Some(i),
                        PEER_ADDR_EXPECTED,
                        self.got(key, item, from),
                    ));
                }
            }
        }
        Ok(Some(peers))
    }

    fn origins(&self) -> Origins {
        Origins(
            self.map
                .iter()
                .map(|(k, s)| {
                    let o = match &s.from {
                        SettingFrom::File => ValueOrigin::File,
                        SettingFrom::Env(v) => ValueOrigin::Env(v.clone()),
                    };
                    (k.to_string(), o)
                })
                .collect(),
        )
    }

    fn no_default(&self, key: &str, why: &str, env: &str) -> ConfigError {
        ConfigError::Inconsistent {
            place: self.source.display().to_string(),
            message: format!("repl.{key} has no default on this machine ({why}); set it in the file or with {env}"),
        }
    }
}

fn build(s: &Settings, host: &Host) -> Result<Config, ConfigError> {
    let layout = paths::Layout::of(host, &s.source);
    let node_id = s
        .one("node_id", values::NODE_ID, values::node_id)?
        .ok_or_else(|| ConfigError::Missing {
            path: s.source.clone(),
            key: "node_id".into(),
            hint: " (set it under repl: in the file, or with STEEP_REPL_NODE_ID)".into(),
        })?;
    let node_name = s
        .one("node_name", values::NAME, values::name)?
        .unwrap_or_else(|| node_id.clone());
    let priority = s
        .one("priority", values::PRIORITY, values::priority)?
        .unwrap_or(DEFAULT_PRIORITY);
    let advertise_host = match s.one("advertise_host", values::HOST, values::host)? {
        Some(h) => h,
        None => host
            .hostname
            .clone()
            .filter(|h| !h.is_empty())
            .ok_or_else(|| {
                s.no_default(
                    "advertise_host",
                    "the host name cannot be read",
                    "STEEP_REPL_ADVERTISE_HOST",
                )
            })?,
    };

    let pg_enabled = s
        .one("postgresql.enabled", values::BOOL, values::boolean)?
        .unwrap_or(true);
    let user = match s.one("postgresql.user", values::NAME, values::name)? {
        Some(u) => u,
        None => match host.os_user.clone() {
            Some(u) => u,
            // A witness never connects: no user is needed.
            None if !pg_enabled => String::new(),
            None => {
                return Err(s.no_default(
                    "postgresql.user",
                    "the OS user name cannot be read",
                    "PGUSER",
                ))
            }
        },
    };
    let postgresql = PostgresqlConfig {
        enabled: pg_enabled,
        host: s
            .one("postgresql.host", values::PG_HOST, values::pg_host)?
            .unwrap_or_else(|| DEFAULT_PG_HOST.into()),
        port: s
            .one("postgresql.port", values::PORT, values::port)?
            .unwrap_or(DEFAULT_PG_PORT),
        database: s
            .one("postgresql.database", values::NAME, values::name)?
            .unwrap_or_else(|| DEFAULT_PG_DATABASE.into()),
        user,
        password: s.optional("postgresql.password", values::PASSWORD, |t| {
            Some(Secret::new(t))
        })?,
        password_command: s.optional(
            "postgresql.password_command",
            values::COMMAND,
            values::command,
        )?,
        sslmode: s
            .one("postgresql.sslmode", &sslmode_expected(), SslMode::parse)?
            .unwrap_or(DEFAULT_SSLMODE),
        pool_size: s
            .one("postgresql.pool_size", values::POOL_SIZE, values::pool_size)?
            .unwrap_or(DEFAULT_POOL_SIZE),
        connect_timeout: s.duration(
            "postgresql.connect_timeout",
            values::CONNECT_TIMEOUT,
            DEFAULT_CONNECT_TIMEOUT,
        )?,
    };

    let grpc = GrpcConfig {
        enabled: s
            .one("grpc.enabled", values::BOOL, values::boolean)?
            .unwrap_or(true),
        bind: s
            .one("grpc.bind", values::BIND, values::bind)?
            .unwrap_or(DEFAULT_BIND),
        port: s
            .one("grpc.port", values::PORT, values::port)?
            .unwrap_or(DEFAULT_GRPC_PORT),
        peers: s.peers("grpc.peers")?.unwrap_or_default(),
        tls: TlsConfig {
            cert_file: s.path("grpc.tls.cert_file")?,
            key_file: s.path("grpc.tls.key_file")?,
            ca_file: s.path("grpc.tls.ca_file")?,
            insecure: s
                .one("grpc.tls.insecure", values::BOOL, values::boolean)?
                .unwrap_or(false),
            expiry_warning: s.duration(
                "grpc.tls.expiry_warning",
                values::EXPIRY_WARNING,
                DEFAULT_EXPIRY_WARNING,
            )?,
        },
        heartbeat_interval: s.duration(
            "grpc.heartbeat_interval",
            values::HEARTBEAT,
            DEFAULT_HEARTBEAT_INTERVAL,
        )?,
        degraded_rtt: s.duration("grpc.degraded_rtt", values::RTT, DEFAULT_DEGRADED_RTT)?,
        unreachable_after: s.duration(
            "grpc.unreachable_after",
            values::UNREACHABLE,
            DEFAULT_UNREACHABLE_AFTER,
        )?,
        request_timeout: s.duration(
            "grpc.request_timeout",
            values::REQUEST_TIMEOUT,
            DEFAULT_GRPC_REQUEST_TIMEOUT,
        )?,
        max_concurrent_requests: s
            .one(
                "grpc.max_concurrent_requests",
                values::CONCURRENT_REQUESTS,
                values::concurrent_requests,
            )?
            .unwrap_or(DEFAULT_GRPC_MAX_CONCURRENT_REQUESTS),
        peer_rate_limit: s
            .one(
                "grpc.peer_rate_limit",
                values::PEER_RATE_LIMIT,
                values::peer_rate_limit,
            )?
            .unwrap_or(DEFAULT_GRPC_PEER_RATE_LIMIT),
    };

    let raft_dir = match s.path_of("raft.dir", values::DIR)? {
        Some(p) => p,
        None => paths::default_raft_dir(host, layout, &node_id)
            .map_err(|why| s.no_default("raft.dir", &why, "STEEP_REPL_RAFT__DIR"))?,
    };
    let raft = RaftConfig {
        dir: raft_dir,
        heartbeat_interval: s.duration(
            "raft.heartbeat_interval",
            values::RAFT_HEARTBEAT,
            DEFAULT_RAFT_HEARTBEAT_INTERVAL,
        )?,
        election_timeout_min: s.duration(
            "raft.election_timeout_min",
            values::ELECTION_TIMEOUT,
            DEFAULT_ELECTION_TIMEOUT_MIN,
        )?,
        election_timeout_max: s.duration(
            "raft.election_timeout_max",
            values::ELECTION_TIMEOUT,
            DEFAULT_ELECTION_TIMEOUT_MAX,
        )?,
        snapshot_every: s
            .one("raft.snapshot_every", values::COUNT, values::count)?
            .unwrap_or(DEFAULT_SNAPSHOT_EVERY),
    };

    let coordinator = CoordinatorConfig {
        lease: s.duration("coordinator.lease", values::LEASE, DEFAULT_LEASE)?,
        clock_error: s
            .one(
                "coordinator.clock_error",
                values::CLOCK_ERROR,
                values::clock_error,
            )?
            .unwrap_or(DEFAULT_CLOCK_ERROR),
        failback_after: s.duration(
            "coordinator.failback_after",
            values::FAILBACK,
            DEFAULT_FAILBACK_AFTER,
        )?,
    };

    let http = HttpConfig {
        enabled: s
            .one("http.enabled", values::BOOL, values::boolean)?
            .unwrap_or(true),
        bind: s
            .one("http.bind", values::BIND, values::bind)?
            .unwrap_or(DEFAULT_BIND),
        port: s
            .one("http.port", values::PORT, values::port)?
            .unwrap_or(DEFAULT_HTTP_PORT),
        details: s
            .one("http.details", values::BOOL, values::boolean)?
            .unwrap_or(false),
    };

    let ipc = IpcConfig {
        enabled: s
            .one("ipc.enabled", values::BOOL, values::boolean)?
            .unwrap_or(true),
        path: match s.path("ipc.path")? {
            Some(p) => p,
            None => paths::default_ipc_path(host, layout)
                .map_err(|why| s.no_default("ipc.path", &why, "STEEP_REPL_IPC__PATH"))?,
        },
        mode: s
            .one("ipc.mode", values::MODE, values::mode)?
            .unwrap_or(DEFAULT_IPC_MODE),
        group: s.optional("ipc.group", values::GROUP, values::group)?,
    };

    let spool_path = match s.path("audit.spool_path")? {
        Some(p) => p,
        None => paths::default_spool_path(host, layout, &node_id).map_err(|why| {
            s.no_default("audit.spool_path", &why, "STEEP_REPL_AUDIT__SPOOL_PATH")
        })?,
    };
    let audit = AuditConfig {
        retention: s.duration("audit.retention", values::RETENTION, DEFAULT_RETENTION)?,
        prune_interval: s.duration(
            "audit.prune_interval",
            values::PRUNE,
            DEFAULT_PRUNE_INTERVAL,
        )?,
        spool_path,
        spool_max_events: s
            .one("audit.spool_max_events", values::COUNT, values::count)?
            .unwrap_or(DEFAULT_SPOOL_MAX_EVENTS),
    };

    let log = LogConfig {
        level: s
            .one("log.level", &log_level_expected(), LogLevel::parse)?
            .unwrap_or(LogLevel::Info),
        target: s
            .one("log.target", &log_target_expected(), LogTarget::parse)?
            .unwrap_or(LogTarget::Auto),
    };

    Ok(Config {
        source: s.source.clone(),
        node_id,
        node_name,
        priority,
        advertise_host,
        postgresql,
        grpc,
        raft,
        coordinator,
        http,
        ipc,
        audit,
        log,
        origins: s.origins(),
    })
}

fn one_of(names: impl IntoIterator<Item = &'static str>) -> String {
    format!(
        "one of {}",
        names.into_iter().collect::<Vec<_>>().join(", ")
    )
}

fn sslmode_expected() -> String {
    one_of(SslMode::ALL.map(SslMode::as_str))
}

fn log_level_expected() -> String {
    one_of(LogLevel::ALL.map(LogLevel::as_str))
}

fn log_target_expected() -> String {
    one_of(LogTarget::available().iter().map(|t| t.as_str()))
}
