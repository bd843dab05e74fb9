//! `Secret`: a string that must never be shown. Its `Debug`, `Display` and
//! `Serialize` all print `********`, so a secret that ends up in a log line,
//! an error, `status` or `config check` shows the mask, never the value.
//! Only `expose()` hands out the text, for the one place that needs it (the
//! PostgreSQL connection options).

use std::fmt;

/// What every rendering of a secret prints.
pub const MASK: &str = "********";

/// A secret string (the PostgreSQL password).
#[derive(Clone, PartialEq, Eq)]
pub struct Secret(String);

impl Secret {
    pub fn new(value: impl Into<String>) -> Self {
        Secret(value.into())
    }

    /// The secret itself. Call it only where the value leaves for its
    /// destination (e.g. `PgConnectOptions::password`), never to print it.
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(MASK)
    }
}

impl fmt::Display for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(MASK)
    }
}

impl serde::Serialize for Secret {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(MASK)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn debug_display_and_json_show_only_the_mask() {
        let s = Secret::new("hunter2");
        assert_eq!(format!("{s:?}"), "********");
        assert_eq!(format!("{s}"), "********");
        assert_eq!(format!("{:?}", Some(s.clone())), "Some(********)");
        assert_eq!(serde_json::to_string(&s).unwrap(), "\"********\"");
        assert_eq!(s.expose(), "hunter2");
    }
}
