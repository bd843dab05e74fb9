//! The launchd property list for macOS: started at load, kept alive after a
//! failure (not after a clean exit), logs to files next to the config.

use std::path::Path;

pub const LABEL: &str = "io.steep.repl";

fn xml_escape(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
}

/// The plist text.
pub fn plist(binary: &Path, config: &Path, log_dir: &Path) -> String {
    let args = [
        binary.to_string_lossy().into_owned(),
        "run".into(),
        "--config".into(),
        config.to_string_lossy().into_owned(),
    ];
    let args: String = args
        .iter()
        .map(|a| format!("    <string>{}</string>\n", xml_escape(a)))
        .collect();
    let log = |name: &str| xml_escape(&log_dir.join(name).to_string_lossy());
    format!(
        r#"<?xml version="1.0" encoding="UTF-8"?>
<!DOCTYPE plist PUBLIC "-//Apple//DTD PLIST 1.0//EN" "http://www.apple.com/DTDs/PropertyList-1.0.dtd">
<plist version="1.0">
<dict>
  <key>Label</key>
  <string>{LABEL}</string>
  <key>ProgramArguments</key>
  <array>
{args}  </array>
  <key>RunAtLoad</key>
  <true/>
  <key>KeepAlive</key>
  <dict>
    <key>SuccessfulExit</key>
    <false/>
  </dict>
  <key>ThrottleInterval</key>
  <integer>5</integer>
  <key>StandardOutPath</key>
  <string>{out}</string>
  <key>StandardErrorPath</key>
  <string>{err}</string>
</dict>
</plist>
"#,
        out = log("steep-repl.out.log"),
        err = log("steep-repl.err.log"),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_plist_runs_at_load_keeps_alive_and_escapes_paths() {
        let text = plist(
            Path::new("/usr/local/bin/steep-repl"),
            Path::new("/Users/a&b/config.yaml"),
            Path::new("/tmp"),
        );
        assert!(text.contains("<key>RunAtLoad</key>\n  <true/>"));
        assert!(text.contains("<key>SuccessfulExit</key>\n    <false/>"));
        assert!(text.contains("<string>/Users/a&amp;b/config.yaml</string>"));
        assert!(text.contains("<string>io.steep.repl</string>"));
    }
}
