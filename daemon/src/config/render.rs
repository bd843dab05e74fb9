//! What `config check` prints: the effective configuration as YAML under
//! `repl:`, every key in the schema's order, printed as the schema says
//! (`flatten.rs`), secrets masked, and a comment on each
//! value that the file did not set (`# default`, `# from PGHOST`). The output
//! loads back into the same configuration (with the mask as password).
//! Also `lock_path`, derived from the IPC path.

use std::path::PathBuf;

use super::flatten;
use super::schema::{Config, ValueOrigin};

impl Config {
    /// The effective configuration under `repl:`, secrets masked, with a
    /// comment on each value the file did not set.
    pub fn to_masked_yaml(&self) -> String {
        let mut out = format!(
            "# steep-repl effective configuration, loaded from {} (secrets masked)\nrepl:\n",
            self.source.display()
        );
        let mut open: Vec<String> = Vec::new();
        for leaf in flatten::leaves(self) {
            let key = leaf.key.as_str();
            let parts: Vec<&str> = key.split('.').collect();
            let (sections, leaf_name) = parts.split_at(parts.len() - 1);
            let common = open
                .iter()
                .zip(sections)
                .take_while(|(a, b)| a.as_str() == **b)
                .count();
            for (depth, name) in sections.iter().enumerate().skip(common) {
                out.push_str(&"  ".repeat(depth + 1));
                out.push_str(name);
                out.push_str(":\n");
            }
            open = sections.iter().map(|s| s.to_string()).collect();
            let note = match self.origins.get(key) {
                ValueOrigin::File => String::new(),
                ValueOrigin::Default => "  # default".into(),
                ValueOrigin::Env(var) => format!("  # from {var}"),
            };
            out.push_str(&format!(
                "{}{}: {}{note}\n",
                "  ".repeat(sections.len() + 1),
                leaf_name[0],
                leaf.yaml
            ));
        }
        out
    }

    /// The one-instance lock file: the IPC path plus `.lock`. Used even when
    /// IPC is disabled, so two daemons on one config never both run.
    #[cfg(not(windows))]
    pub fn lock_path(&self) -> PathBuf {
        let mut s = self.ipc.path.clone().into_os_string();
        s.push(".lock");
        PathBuf::from(s)
    }

    /// On Windows the IPC path is a named pipe, not a file: the lock goes in
    /// the temp directory under the pipe's name.
    #[cfg(windows)]
    pub fn lock_path(&self) -> PathBuf {
        let name = self
            .ipc
            .path
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_else(|| "steep-repl".into());
        std::env::temp_dir().join(format!("{name}.lock"))
    }
}
