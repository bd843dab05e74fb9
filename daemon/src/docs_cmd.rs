//! `completions SHELL` and `man-pages DIR`: the shell completion scripts
//! and man pages, generated from the command line's own definition so they
//! never drift from `--help`. The Debian package ships both
//! (deploy/package.sh).

use crate::cli::Cli;
use crate::exit::Exit;
use clap::CommandFactory;
use std::path::Path;

/// Prints the completion script for `shell` on stdout.
pub fn completions(shell: clap_complete::Shell) -> Exit {
    let mut command = Cli::command();
    clap_complete::generate(shell, &mut command, "steep-repl", &mut std::io::stdout());
    Exit::Ok
}

/// Writes `steep-repl.1` and one page per subcommand, nested ones named
/// after their path (`steep-repl-cluster-add.1`), into `dir`.
pub fn man_pages(dir: &Path) -> Exit {
    let result = std::fs::create_dir_all(dir)
        .map_err(|e| format!("creating {}: {e}", dir.display()))
        .and_then(|()| write_pages(Cli::command(), dir));
    match result {
        Ok(count) => {
            eprintln!("wrote {count} man pages to {}", dir.display());
            Exit::Ok
        }
        Err(e) => {
            eprintln!("steep-repl: {e}");
            Exit::Error
        }
    }
}

/// Renders `command` and its visible subcommands; returns how many pages.
fn write_pages(command: clap::Command, dir: &Path) -> Result<usize, String> {
    // Subcommands get their full name (`steep-repl-cluster-add`) so the
    // pages' NAME and SYNOPSIS say what to type, and `man steep-repl-cluster`
    // finds them.
    // The synopsis shows what is typed (`steep-repl cluster add`).
    let command = command.disable_help_subcommand(true);
    let mut count = 0;
    let mut stack = vec![(command, "steep-repl".to_string())];
    while let Some((command, typed)) = stack.pop() {
        let name = command.get_name().to_string();
        for sub in command.get_subcommands() {
            if sub.is_hide_set() {
                continue;
            }
            let sub_typed = format!("{typed} {}", sub.get_name());
            let full = format!("{name}-{}", sub.get_name());
            stack.push((
                sub.clone().name(full).bin_name(sub_typed.clone()),
                sub_typed,
            ));
        }
        let command = command.bin_name(typed);
        let path = dir.join(format!("{name}.1"));
        let mut page = Vec::new();
        clap_mangen::Man::new(command)
            .render(&mut page)
            .map_err(|e| format!("rendering {name}: {e}"))?;
        std::fs::write(&path, page).map_err(|e| format!("writing {}: {e}", path.display()))?;
        count += 1;
    }
    Ok(count)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_visible_command_gets_a_page_named_after_its_path() {
        let dir = tempfile::tempdir().expect("temp dir");
        let count = write_pages(Cli::command(), dir.path()).expect("pages");
        for page in [
            "steep-repl.1",
            "steep-repl-run.1",
            "steep-repl-cluster.1",
            "steep-repl-cluster-add.1",
            "steep-repl-state-cas.1",
            "steep-repl-tls-issue.1",
            "steep-repl-completions.1",
        ] {
            let text = std::fs::read_to_string(dir.path().join(page))
                .unwrap_or_else(|e| panic!("{page}: {e}"));
            assert!(text.starts_with(".ie"), "{page} is not roff: {text:.80}");
        }
        let add =
            std::fs::read_to_string(dir.path().join("steep-repl-cluster-add.1")).expect("add");
        assert!(add.contains("\\-\\-grpc"), "{add}");
        assert!(!dir.path().join("steep-repl-man-pages.1").exists());
        let files = std::fs::read_dir(dir.path()).expect("read_dir").count();
        assert_eq!(files, count);
    }

    #[test]
    fn the_bash_completion_offers_the_subcommands() {
        let mut out = Vec::new();
        clap_complete::generate(
            clap_complete::Shell::Bash,
            &mut Cli::command(),
            "steep-repl",
            &mut out,
        );
        let text = String::from_utf8(out).expect("utf-8");
        assert!(text.contains("complete -F _steep__repl"), "{text:.200}");
        assert!(text.contains("cluster"));
    }
}
