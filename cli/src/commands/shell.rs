//! `pointflow completions` and `pointflow man`: shell completions and manual
//! pages generated from the same clap definitions as `--help`, so they never
//! drift from the command.

use std::io::Write;
use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context;
use clap::Args;
use clap_complete::Shell;

/// Arguments of `pointflow completions`.
#[derive(Args)]
pub struct CompletionsArgs {
    /// The shell to complete for.
    #[arg(value_enum)]
    shell: Shell,
}

/// Arguments of `pointflow man`.
#[derive(Args)]
pub struct ManArgs {
    /// Write one page per command (`pointflow.1`, `pointflow-submit.1`, `pointflow-local-serve.1`, …) into this
    /// directory instead of printing the top page.
    #[arg(long, value_name = "DIR")]
    out: Option<PathBuf>,
}

/// Prints the completion script for `args.shell` to stdout.
pub fn completions(args: &CompletionsArgs, mut command: clap::Command) -> anyhow::Result<ExitCode> {
    // Into a buffer first: the generator panics on a write error, and a
    // reader that stops early (`| head`) is no error.
    let mut script = Vec::new();
    clap_complete::generate(args.shell, &mut command, "pointflow", &mut script);
    print(&script).context("writing the completion script")?;
    Ok(ExitCode::SUCCESS)
}

/// Writes to stdout; a closed pipe is not an error.
fn print(bytes: &[u8]) -> std::io::Result<()> {
    let mut stdout = std::io::stdout().lock();
    match stdout.write_all(bytes).and_then(|()| stdout.flush()) {
        Err(error) if error.kind() == std::io::ErrorKind::BrokenPipe => Ok(()),
        other => other,
    }
}

/// Prints the top manual page, or writes every command's page into a directory.
pub fn man(args: &ManArgs, command: clap::Command) -> anyhow::Result<ExitCode> {
    match &args.out {
        None => {
            let mut page = Vec::new();
            clap_mangen::Man::new(command)
                .render(&mut page)
                .context("rendering the manual page")?;
            print(&page).context("writing the manual page")?;
        }
        Some(dir) => {
            std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
            let written = write_pages(command, dir)?;
            eprintln!("wrote {written} manual pages to {}", dir.display());
        }
    }
    Ok(ExitCode::SUCCESS)
}

/// Writes the page of `command` and of each of its subcommands, recursively;
/// returns how many pages were written.
fn write_pages(command: clap::Command, dir: &std::path::Path) -> anyhow::Result<usize> {
    // A subcommand's page is named after its whole path (`pointflow-local-serve.1`,
    // the man(1) convention) and its synopsis shows how it is typed (`pointflow local serve`).
    let command = command.disable_help_subcommand(true);
    let mut written = 0;
    let top = command.get_name().to_owned();
    let mut stack = vec![(top.clone(), top, command)];
    while let Some((page_name, typed, command)) = stack.pop() {
        for sub in command.get_subcommands() {
            if sub.is_hide_set() {
                continue;
            }
            let sub_page = format!("{page_name}-{}", sub.get_name());
            let sub_typed = format!("{typed} {}", sub.get_name());
            let sub = sub.clone().display_name(sub_page.clone()).bin_name(sub_typed.clone());
            stack.push((sub_page, sub_typed, sub));
        }
        let path = dir.join(format!("{page_name}.1"));
        let mut page = Vec::new();
        clap_mangen::Man::new(command)
            .render(&mut page)
            .context("rendering a manual page")?;
        std::fs::write(&path, page).with_context(|| format!("writing {}", path.display()))?;
        written += 1;
    }
    Ok(written)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> clap::Command {
        clap::Command::new("pointflow")
            .about("top")
            .subcommand(
                clap::Command::new("local")
                    .about("run")
                    .subcommand(clap::Command::new("serve").about("serve")),
            )
            .subcommand(clap::Command::new("submit").about("submit"))
    }

    #[test]
    fn every_command_gets_a_page_named_after_its_path() {
        let dir = std::env::temp_dir().join(format!("pointflow-man-test-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        let written = write_pages(sample(), &dir).unwrap();
        let mut names: Vec<String> = std::fs::read_dir(&dir)
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        names.sort();
        assert_eq!(
            names,
            [
                "pointflow-local-serve.1",
                "pointflow-local.1",
                "pointflow-submit.1",
                "pointflow.1"
            ]
        );
        assert_eq!(written, 4);
        let serve = std::fs::read_to_string(dir.join("pointflow-local-serve.1")).unwrap();
        std::fs::remove_dir_all(&dir).unwrap();
        assert!(serve.contains(".TH pointflow-local-serve 1"), "{serve}");
        assert!(serve.contains("pointflow local serve"), "{serve}");
    }
}
