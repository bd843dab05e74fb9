//! The layers above the defaults, as figment providers: the file's `repl:`
//! section, then libpq's `PG*` variables, then `STEEP_REPL_*` variables
//! (one provider per variable, so figment's metadata names the variable a
//! value came from). Reading a layer refuses what the schema does not know
//! (unknown keys and variables, with a suggestion, sections that are not
//! mappings, keys set twice) before figment sees it. Every value is handed
//! on as text, lists as lists; text for a list key is split at commas, and a
//! relative path is made absolute against the file's directory or the
//! working directory.

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use figment::value::{Dict, Empty, Map, Value};
use figment::{Metadata, Profile, Provider, Source};

use super::error::ConfigError;
use super::keys;
use super::load::show;
use super::paths::{self, Host};
use super::values;
use super::yaml::{Kind, Node};

/// One layer's settings, nested as the schema is.
pub(crate) struct Layer {
    metadata: Metadata,
    dict: Dict,
}

impl Provider for Layer {
    fn metadata(&self) -> Metadata {
        self.metadata.clone()
    }

    fn data(&self) -> Result<Map<Profile, Dict>, figment::Error> {
        Ok(Profile::Default.collect(self.dict.clone()))
    }
}

impl Layer {
    fn get(&self, dotted: &str) -> Option<&Value> {
        let (sections, leaf) = split_key(dotted);
        let mut dict = &self.dict;
        for name in sections {
            match dict.get(name) {
                Some(Value::Dict(_, inner)) => dict = inner,
                _ => return None,
            }
        }
        dict.get(leaf)
    }

    fn remove(&mut self, dotted: &str) {
        let (sections, leaf) = split_key(dotted);
        let mut dict = &mut self.dict;
        for name in sections {
            match dict.get_mut(name) {
                Some(Value::Dict(_, inner)) => dict = inner,
                _ => return,
            }
        }
        dict.remove(leaf);
    }

    /// Sets `password` or `password_command` to something.
    fn sets_password(&self) -> bool {
        PASSWORD_KEYS
            .iter()
            .any(|k| self.get(k).is_some_and(|v| !is_empty_text(v)))
    }
}

fn split_key(dotted: &str) -> (Vec<&str>, &str) {
    let mut parts: Vec<&str> = dotted.split('.').collect();
    let leaf = parts.pop().unwrap_or(dotted);
    (parts, leaf)
}

fn is_empty_text(value: &Value) -> bool {
    matches!(value, Value::String(_, t) if t.is_empty())
}

/// Two spellings of one setting: a layer may give one of them, and a
/// higher layer that gives either replaces both below it.
const PASSWORD_KEYS: [&str; 2] = ["postgresql.password", "postgresql.password_command"];

/// A key's text as the layer hands it on: split for a list key, made
/// absolute against `base` for a path key.
fn text_value(dotted: &str, text: &str, base: &Path) -> Value {
    if keys::is_list(dotted) {
        // Blank text is an empty list; otherwise every item counts, so that
        // `a:1,` reports its empty second item.
        let items: Vec<Value> = if text.trim().is_empty() {
            Vec::new()
        } else {
            text.split(',').map(|s| Value::from(s.trim())).collect()
        };
        return Value::from(items);
    }
    if keys::is_path(dotted) && values::name(text).is_some() {
        let path = paths::absolute(Path::new(text), base);
        return Value::from(path.to_string_lossy().into_owned());
    }
    Value::from(text.to_string())
}

/// A value of the file that is not a key's text: a list's items keep their
/// own shape, a mapping stands for "a mapping" (which no key takes).
fn node_value(node: &Node) -> Value {
    match &node.kind {
        Kind::Null => Value::from(Empty::None),
        Kind::Scalar(s) => Value::from(s.clone()),
        Kind::Seq(items) => Value::from(items.iter().map(node_value).collect::<Vec<_>>()),
        Kind::Map(_) => Value::from(Dict::new()),
    }
}

/// The file's `repl:` section (`root` is the whole document).
pub(crate) fn file(path: &Path, root: Option<Node>) -> Result<Layer, ConfigError> {
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
    let dir = path
        .parent()
        .map(Path::to_path_buf)
        .unwrap_or_else(|| PathBuf::from("/"));
    let reader = FileReader { path, dir: &dir };
    let dict = match &section.kind {
        Kind::Map(pairs) => reader.section("", pairs)?,
        Kind::Null => Dict::new(),
        _ => return Err(reader.not_a_section("", section)),
    };
    let layer = Layer {
        metadata: Metadata::from(path.display().to_string(), Source::File(path.to_path_buf())),
        dict,
    };
    check_password_pair(&layer, || {
        format!(
            "{}: repl.postgresql.password and repl.postgresql.password_command",
            path.display()
        )
    })?;
    Ok(layer)
}

struct FileReader<'a> {
    path: &'a Path,
    /// Relative paths in the file are relative to its directory.
    dir: &'a Path,
}

impl FileReader<'_> {
    fn not_a_section(&self, dotted: &str, node: &Node) -> ConfigError {
        let key = if dotted.is_empty() {
            "repl".to_string()
        } else {
            format!("repl.{dotted}")
        };
        ConfigError::NotASection {
            path: self.path.to_path_buf(),
            key,
            known: keys::children(dotted).join(", "),
            got: match &node.kind {
                Kind::Scalar(s) => show(s, true),
                other => other.describe().to_string(),
            },
        }
    }

    /// One section of the file: every key it sets, refusing names the
    /// schema does not know.
    fn section(&self, section: &str, pairs: &[(Node, Node)]) -> Result<Dict, ConfigError> {
        let mut dict = Dict::new();
        let mut seen: HashMap<&str, usize> = HashMap::new();
        for (k, v) in pairs {
            let Kind::Scalar(name) = &k.kind else {
                let prefix = if section.is_empty() {
                    "repl".to_string()
                } else {
                    format!("repl.{section}")
                };
                return Err(ConfigError::Inconsistent {
                    place: format!("{}: line {}", self.path.display(), k.line),
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
                    path: self.path.to_path_buf(),
                    key: format!("repl.{dotted}"),
                    line: k.line,
                    first_line,
                });
            }
            if keys::is_section(&dotted) {
                match &v.kind {
                    Kind::Map(inner) => {
                        dict.insert(name.clone(), Value::from(self.section(&dotted, inner)?));
                    }
                    Kind::Null => {}
                    _ => return Err(self.not_a_section(&dotted, v)),
                }
            } else if keys::is_key(&dotted) {
                // `key: ~` (or nothing) leaves the key to the layers below.
                let value = match &v.kind {
                    Kind::Null => continue,
                    Kind::Scalar(text) => text_value(&dotted, text, self.dir),
                    _ => node_value(v),
                };
                dict.insert(name.clone(), value);
            } else {
                return Err(ConfigError::UnknownKey {
                    path: self.path.to_path_buf(),
                    key: format!("repl.{dotted}"),
                    suggestion: keys::suggest_key(section, name),
                });
            }
        }
        Ok(dict)
    }
}

/// One variable's setting.
pub(crate) struct EnvSetting {
    var: String,
    key: String,
    text: String,
}

impl EnvSetting {
    fn layer(&self, cwd: &Path) -> Layer {
        let (sections, leaf) = split_key(&self.key);
        let mut dict = Dict::new();
        dict.insert(leaf.to_string(), text_value(&self.key, &self.text, cwd));
        for name in sections.into_iter().rev() {
            let mut outer = Dict::new();
            outer.insert(name.to_string(), Value::from(dict));
            dict = outer;
        }
        Layer {
            metadata: Metadata::named(self.var.clone()),
            dict,
        }
    }
}

/// PGHOST and friends. Empty ones count as unset, as scripts that export
/// `PGPASSWORD=` mean "none".
pub(crate) fn libpq(host: &Host) -> Vec<EnvSetting> {
    keys::LIBPQ_VARS
        .iter()
        .filter_map(|(var, key)| {
            host.var(var).map(|text| EnvSetting {
                var: var.to_string(),
                key: key.to_string(),
                text: text.to_string(),
            })
        })
        .collect()
}

/// `STEEP_REPL_*` variables, each naming a key. Empty ones are kept: they
/// clear an optional key the file set.
pub(crate) fn steep(host: &Host) -> Result<Vec<EnvSetting>, ConfigError> {
    let mut vars: Vec<(&String, &String)> = host
        .env
        .iter()
        .filter(|(k, _)| k.starts_with(keys::ENV_PREFIX))
        .filter(|(k, _)| !keys::ENV_NOT_SETTINGS.contains(&k.as_str()))
        .collect();
    // Sorted, so that with several bad variables the same one is reported.
    vars.sort();
    let mut settings = Vec::new();
    for (var, text) in vars {
        let dotted = keys::dotted_for_env_var(var).unwrap_or_default();
        if keys::is_key(&dotted) {
            settings.push(EnvSetting {
                var: var.clone(),
                key: dotted,
                text: text.clone(),
            });
        } else if keys::is_section(&dotted) {
            let first = keys::children(&dotted).first().copied().unwrap_or("");
            return Err(ConfigError::EnvSection {
                var: var.clone(),
                example: keys::env_var_for(&format!("{dotted}.{first}")),
                key: dotted,
            });
        } else {
            return Err(ConfigError::UnknownEnvVar {
                var: var.clone(),
                suggestion: keys::suggest_env_var(var),
            });
        }
    }
    let pair: Vec<&EnvSetting> = settings
        .iter()
        .filter(|s| PASSWORD_KEYS.contains(&s.key.as_str()) && !s.text.is_empty())
        .collect();
    if let [a, b] = pair[..] {
        return Err(ConfigError::Inconsistent {
            place: format!("{} and {}", a.var, b.var),
            message: both_set_message(),
        });
    }
    Ok(settings)
}

fn both_set_message() -> String {
    "both are set; keep one of them".into()
}

fn check_password_pair(layer: &Layer, place: impl Fn() -> String) -> Result<(), ConfigError> {
    let set = |k: &str| layer.get(k).is_some_and(|v| !is_empty_text(v));
    if PASSWORD_KEYS.iter().all(|k| set(k)) {
        return Err(ConfigError::Inconsistent {
            place: place(),
            message: both_set_message(),
        });
    }
    Ok(())
}

/// The layers in order, lowest first, with the password rule applied: a
/// layer that gives `password` or `password_command` hides both below it.
pub(crate) fn stack(file: Layer, env: Vec<EnvSetting>, cwd: &Path) -> Vec<Layer> {
    let mut layers = vec![file];
    for setting in env {
        let layer = setting.layer(cwd);
        if layer.sets_password() {
            for lower in &mut layers {
                for key in PASSWORD_KEYS {
                    lower.remove(key);
                }
            }
        }
        layers.push(layer);
    }
    layers
}
