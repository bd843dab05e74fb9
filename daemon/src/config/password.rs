//! Getting the PostgreSQL password: the configured one, or the first line
//! printed by `password_command` (for pass, the 1Password CLI, the macOS
//! Keychain...). The command line is split with shell quoting but run
//! without a shell, with stdin closed, and killed (with anything it started)
//! if it takes longer than `PASSWORD_COMMAND_TIMEOUT`. Error messages say
//! what went wrong with the command; they never contain what it printed on
//! stdout, which is where the password would be.

use std::io::Read;
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use super::error::ConfigError;
use super::schema::Config;
use super::secret::Secret;
use super::validate::place;

/// How long `password_command` may run.
pub const PASSWORD_COMMAND_TIMEOUT: Duration = Duration::from_secs(10);

/// How much of stdout and stderr is kept; the rest is read and dropped so a
/// chatty command cannot block on a full pipe or fill our memory.
const OUTPUT_CAP: usize = 64 * 1024;

impl Config {
    /// The password to connect with: `postgresql.password`, or what
    /// `postgresql.password_command` prints, or `None` (trust, peer, or
    /// certificate authentication). Runs the command every time it is
    /// called, so a rotated password is picked up on reconnect.
    pub fn resolve_password(&self) -> Result<Option<Secret>, ConfigError> {
        if let Some(password) = &self.postgresql.password {
            return Ok(Some(password.clone()));
        }
        match &self.postgresql.password_command {
            None => Ok(None),
            Some(command) => run_password_command(
                command,
                &place(self, "postgresql.password_command"),
                PASSWORD_COMMAND_TIMEOUT,
            )
            .map(Some),
        }
    }
}

use steep_repl_actors::db::PasswordSource;

impl Config {
    /// `postgresql.password_command` as a source the database actor runs
    /// again before every connection attempt (a rotated password is picked
    /// up at the next reconnection); `None` when the password is fixed or
    /// there is none. Its errors name the command, never its output.
    pub fn password_source(&self) -> Option<PasswordSource> {
        if self.postgresql.password.is_some() {
            return None;
        }
        let command = self.postgresql.password_command.clone()?;
        let place = place(self, "postgresql.password_command");
        Some(std::sync::Arc::new(move || {
            run_password_command(&command, &place, PASSWORD_COMMAND_TIMEOUT)
                .map(|secret| secret.expose().to_string())
                .map_err(|e| match e {
                    ConfigError::PasswordCommand { reason, .. } => reason,
                    other => other.to_string(),
                })
        }))
    }
}

/// Runs `command` and returns the first line of its output. `place` names
/// where the command was configured, for error messages.
pub(crate) fn run_password_command(
    command: &str,
    place: &str,
    timeout: Duration,
) -> Result<Secret, ConfigError> {
    let fail = |reason: String| ConfigError::PasswordCommand {
        place: place.to_string(),
        command: command.to_string(),
        reason,
    };
    let words = shell_words::split(command)
        .map_err(|_| fail("cannot be split into words: its quotes are unbalanced".into()))?;
    let Some((program, args)) = words.split_first() else {
        return Err(fail("is empty".into()));
    };

    let mut cmd = Command::new(program);
    cmd.args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    #[cfg(unix)]
    {
        // Its own process group, so a timeout kills what it started too
        // (`sh -c '...'` and its children), not only the first process.
        use std::os::unix::process::CommandExt;
        cmd.process_group(0);
    }
    let mut child = cmd.spawn().map_err(|e| {
        if e.kind() == std::io::ErrorKind::NotFound {
            fail(format!("cannot start: {program} was not found"))
        } else {
            fail(format!("cannot start {program}: {e}"))
        }
    })?;

    let deadline = Instant::now() + timeout;
    let stdout = reader(child.stdout.take());
    let stderr = reader(child.stderr.take());
    let timed_out = || {
        fail(format!(
            "did not finish within {} and was stopped",
            super::values::format_duration(timeout)
        ))
    };

    let status = loop {
        match child.try_wait() {
            Ok(Some(status)) => break status,
            Ok(None) if Instant::now() >= deadline => {
                kill(&mut child);
                return Err(timed_out());
            }
            Ok(None) => std::thread::sleep(Duration::from_millis(5)),
            Err(e) => {
                kill(&mut child);
                return Err(fail(format!("could not be waited for: {e}")));
            }
        }
    };
    // The process has exited, but something it started may still hold the
    // pipes open; the deadline bounds that too.
    let remaining = deadline.saturating_duration_since(Instant::now());
    let (Ok(out), Ok(err)) = (
        stdout.recv_timeout(remaining),
        stderr.recv_timeout(deadline.saturating_duration_since(Instant::now())),
    ) else {
        kill(&mut child);
        return Err(timed_out());
    };

    if !status.success() {
        let first = String::from_utf8_lossy(&err)
            .lines()
            .map(str::trim)
            .find(|l| !l.is_empty())
            .map(|l| l.chars().take(200).collect::<String>());
        return Err(fail(match first {
            Some(line) => format!("{}: {line}", describe(status)),
            None => format!("{} and printed nothing on stderr", describe(status)),
        }));
    }

    let first_line = match out.iter().position(|b| *b == b'\n') {
        Some(end) => &out[..end],
        None => &out[..],
    };
    let first_line = first_line.strip_suffix(b"\r").unwrap_or(first_line);
    if first_line.is_empty() {
        return Err(fail(
            "printed nothing on its first line; it must print the password".into(),
        ));
    }
    match String::from_utf8(first_line.to_vec()) {
        Ok(password) => Ok(Secret::new(password)),
        Err(_) => Err(fail("printed a first line that is not valid UTF-8".into())),
    }
}

/// Reads a pipe to its end on a thread, keeping the first `OUTPUT_CAP`
/// bytes; the receiver gets them at EOF.
fn reader(pipe: Option<impl Read + Send + 'static>) -> mpsc::Receiver<Vec<u8>> {
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        let mut kept = Vec::new();
        if let Some(mut pipe) = pipe {
            let mut buf = [0u8; 8192];
            loop {
                match pipe.read(&mut buf) {
                    Ok(0) => break,
                    Ok(n) => {
                        let room = OUTPUT_CAP.saturating_sub(kept.len());
                        kept.extend_from_slice(&buf[..n.min(room)]);
                    }
                    Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
                    Err(_) => break,
                }
            }
        }
        // The receiver may have given up (timeout); nothing to do then.
        let _ = tx.send(kept);
    });
    rx
}

/// Kills the command and everything in its process group, then reaps it.
fn kill(child: &mut Child) {
    #[cfg(unix)]
    {
        use nix::sys::signal::{killpg, Signal};
        use nix::unistd::Pid;
        if let Ok(pid) = i32::try_from(child.id()) {
            // Errors mean the group is already gone, which is the goal.
            let _ = killpg(Pid::from_raw(pid), Signal::SIGKILL);
        }
    }
    let _ = child.kill();
    let _ = child.wait();
}

fn describe(status: ExitStatus) -> String {
    if let Some(code) = status.code() {
        return format!("exited with status {code}");
    }
    #[cfg(unix)]
    {
        use std::os::unix::process::ExitStatusExt;
        if let Some(signal) = status.signal() {
            return format!("was killed by signal {signal}");
        }
    }
    format!("failed ({status})")
}

#[cfg(all(test, unix))]
mod tests {
    use super::*;

    const PLACE: &str = "/x.yaml: repl.postgresql.password_command";

    fn run(command: &str) -> Result<Secret, ConfigError> {
        run_password_command(command, PLACE, Duration::from_secs(5))
    }

    fn message(command: &str) -> String {
        run(command).unwrap_err().to_string()
    }

    #[test]
    fn the_first_line_of_stdout_is_the_password() {
        assert_eq!(run("echo s3cret").unwrap().expose(), "s3cret");
        assert_eq!(
            run("printf 'line1\\r\\nline2\\n'").unwrap().expose(),
            "line1"
        );
        assert_eq!(run("printf 'no-newline'").unwrap().expose(), "no-newline");
        // Trailing blanks are part of a password; only the newline goes.
        assert_eq!(run("printf 'pw  \\n'").unwrap().expose(), "pw  ");
    }

    #[test]
    fn shell_quoting_is_honoured_without_a_shell() {
        assert_eq!(run(r#"sh -c 'echo "p w"'"#).unwrap().expose(), "p w");
        // A program path with a space, quoted.
        let dir = tempfile::tempdir().unwrap();
        let script = dir.path().join("my secrets.sh");
        std::fs::write(&script, "#!/bin/sh\necho \"from script\"\n").unwrap();
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&script, std::fs::Permissions::from_mode(0o755)).unwrap();
        let cmd = format!("'{}'", script.display());
        assert_eq!(run(&cmd).unwrap().expose(), "from script");
        // Without a shell, `$HOME` and `;` are plain words.
        assert_eq!(run("echo '$HOME;x'").unwrap().expose(), "$HOME;x");
    }

    #[test]
    fn a_missing_program_is_named() {
        assert_eq!(
            message("no-such-program-steep-test --flag"),
            "/x.yaml: repl.postgresql.password_command: password command \
             `no-such-program-steep-test --flag` cannot start: no-such-program-steep-test was not found"
        );
    }

    #[test]
    fn a_failing_command_reports_its_status_and_first_stderr_line() {
        assert_eq!(
            message("sh -c 'echo secret-out; echo \"\" >&2; echo \"gpg: decryption failed\" >&2; echo more >&2; exit 2'"),
            "/x.yaml: repl.postgresql.password_command: password command \
             `sh -c 'echo secret-out; echo \"\" >&2; echo \"gpg: decryption failed\" >&2; echo more >&2; exit 2'` \
             exited with status 2: gpg: decryption failed"
        );
        let m = message("false");
        assert!(
            m.ends_with("exited with status 1 and printed nothing on stderr"),
            "{m}"
        );
        let m = message("sh -c 'kill -9 $$'");
        assert!(
            m.ends_with("was killed by signal 9 and printed nothing on stderr"),
            "{m}"
        );
    }

    #[test]
    fn empty_output_is_an_error() {
        let m = message("true");
        assert!(
            m.ends_with("printed nothing on its first line; it must print the password"),
            "{m}"
        );
        // The second line (42) is never shown.
        let m = message("sh -c 'echo; expr 6 \\* 7'");
        assert!(
            m.ends_with("printed nothing on its first line; it must print the password"),
            "{m}"
        );
        assert!(!m.contains("42"), "{m}");
    }

    #[test]
    fn a_slow_command_is_killed_with_its_children() {
        let dir = tempfile::tempdir().unwrap();
        let marker = dir.path().join("survived");
        let cmd = format!("sh -c 'sleep 2; touch {}'", marker.display());
        let start = Instant::now();
        let err = run_password_command(&cmd, PLACE, Duration::from_millis(300)).unwrap_err();
        assert!(
            start.elapsed() < Duration::from_secs(2),
            "{:?}",
            start.elapsed()
        );
        assert!(
            err.to_string()
                .ends_with("did not finish within 300ms and was stopped"),
            "{err}"
        );
        std::thread::sleep(Duration::from_millis(2200));
        assert!(
            !marker.exists(),
            "the child of the timed-out command kept running"
        );
    }

    #[test]
    fn a_background_child_holding_stdout_is_bounded_too() {
        let err = run_password_command(
            "sh -c 'echo pw; sleep 5 &'",
            PLACE,
            Duration::from_millis(300),
        )
        .unwrap_err();
        assert!(
            err.to_string().contains("did not finish within 300ms"),
            "{err}"
        );
    }

    #[test]
    fn unbalanced_quotes_and_empty_commands_are_refused() {
        assert!(message("echo 'oops")
            .ends_with("cannot be split into words: its quotes are unbalanced"));
        assert!(message("  ").ends_with("is empty"));
    }

    #[test]
    fn stdin_is_closed() {
        // `cat` with a null stdin ends at once with no output.
        assert!(message("cat")
            .ends_with("printed nothing on its first line; it must print the password"));
    }
}
