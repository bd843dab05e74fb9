//! `ConfigError`: everything that can be wrong with a configuration, in words
//! an operator can act on. Every message starts with where the problem is
//! (the file, or the environment variable), names the key, and says what is
//! expected; none ever contains a secret.

use std::path::PathBuf;

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The file does not exist. `hint` explains a default path.
    #[error("{}: config file not found{hint}", .path.display())]
    NotFound { path: PathBuf, hint: String },

    #[error("{}: cannot read the config file: {error}{hint}", .path.display())]
    Unreadable {
        path: PathBuf,
        error: std::io::Error,
        hint: String,
    },

    #[error("{}: line {line}: the config file is not valid UTF-8 text", .path.display())]
    NotUtf8 { path: PathBuf, line: usize },

    /// Malformed YAML.
    #[error("{}: line {line} column {column}: {message}", .path.display())]
    Syntax {
        path: PathBuf,
        line: usize,
        column: usize,
        message: String,
    },

    #[error(
        "{}: no `repl:` section; steep-repl reads its settings from a top-level `repl:` key \
         (for example `repl: {{node_id: node1}}`)",
        .path.display()
    )]
    NoReplSection { path: PathBuf },

    /// A section (`repl`, `repl.grpc`, ...) that is not a mapping of keys.
    #[error("{}: {key}: expected a section of keys ({known}), got {got}", .path.display())]
    NotASection {
        path: PathBuf,
        key: String,
        known: String,
        got: String,
    },

    #[error("{}: line {line}: {key} is set twice (first on line {first_line})", .path.display())]
    DuplicateKey {
        path: PathBuf,
        key: String,
        line: usize,
        first_line: usize,
    },

    #[error("{}: unknown key {key}{}", .path.display(), did_you_mean(.suggestion))]
    UnknownKey {
        path: PathBuf,
        key: String,
        suggestion: Option<String>,
    },

    #[error("{var}: unknown setting{}", did_you_mean(.suggestion))]
    UnknownEnvVar {
        var: String,
        suggestion: Option<String>,
    },

    #[error(
        "{var}: repl.{key} is a section, not a value; set one of its keys, for example {example}"
    )]
    EnvSection {
        var: String,
        key: String,
        example: String,
    },

    #[error("{var}: the value is not valid UTF-8")]
    EnvNotUtf8 { var: String },

    /// A value of the wrong form. `place` is `FILE: repl.KEY` or the variable.
    #[error("{place}: expected {expected}, got {got}")]
    Invalid {
        place: String,
        expected: String,
        got: String,
    },

    /// A required key that nothing set.
    #[error("{}: repl.{key} is required{hint}", .path.display())]
    Missing {
        path: PathBuf,
        key: String,
        hint: String,
    },

    /// Keys that are fine alone but not together, or a default that cannot
    /// be worked out on this machine.
    #[error("{place}: {message}")]
    Inconsistent { place: String, message: String },

    /// `password_command` could not produce a password.
    #[error("{place}: password command `{command}` {reason}")]
    PasswordCommand {
        place: String,
        command: String,
        reason: String,
    },
}

fn did_you_mean(suggestion: &Option<String>) -> String {
    match suggestion {
        Some(s) => format!(" (did you mean {s}?)"),
        None => String::new(),
    }
}
