//! `imgpack completion SHELL` and `imgpack man`: shell completion scripts and
//! man pages generated from the clap definition, so they always describe the
//! binary that prints them (also the one inside imgpack's own image).

use std::io::Write;
use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};
use clap::{Args, CommandFactory};
use clap_complete::Shell;

#[derive(Args, Debug)]
pub struct CompletionArgs {
    /// The shell to complete for.
    #[arg(value_enum)]
    pub shell: Shell,
}

#[derive(Args, Debug)]
pub struct ManArgs {
    /// Print the page of this subcommand (imgpack-COMMAND(1)) instead of imgpack(1).
    #[arg(value_name = "COMMAND")]
    pub command: Option<String>,

    /// Write imgpack.1 and one imgpack-COMMAND.1 per subcommand into this directory
    /// instead of printing one page.
    #[arg(long, value_name = "DIR", conflicts_with = "command")]
    pub dir: Option<PathBuf>,
}

/// Prints the completion script for `args.shell` on standard output.
pub fn run_completion(args: CompletionArgs) -> Result<()> {
    let mut command = crate::cli::Cli::command();
    let mut script = Vec::new();
    clap_complete::generate(args.shell, &mut command, "imgpack", &mut script);
    write_stdout(&script)
}

/// Prints one man page (roff) on standard output, or writes all of them to `--dir`.
pub fn run_man(args: ManArgs) -> Result<()> {
    let mut command = crate::cli::Cli::command();
    // build() gives each subcommand its display name (imgpack-build), the page's title.
    command.build();
    if let Some(dir) = args.dir {
        return write_pages(&command, &dir);
    }
    let page = match &args.command {
        None => command,
        Some(name) => match command.find_subcommand(name) {
            Some(subcommand) => subcommand.clone(),
            None => bail!(
                "no subcommand '{name}': use one of {}",
                subcommand_names(&command).join(", ")
            ),
        },
    };
    write_stdout(&render(page)?)
}

fn write_pages(command: &clap::Command, dir: &Path) -> Result<()> {
    std::fs::create_dir_all(dir).with_context(|| format!("cannot create {}", dir.display()))?;
    let pages = std::iter::once(command).chain(
        command
            .get_subcommands()
            .filter(|subcommand| subcommand.get_name() != "help"),
    );
    for page in pages {
        let name = page
            .get_display_name()
            .unwrap_or_else(|| page.get_name())
            .to_owned();
        let path = dir.join(format!("{name}.1"));
        std::fs::write(&path, render(page.clone())?)
            .with_context(|| format!("cannot write {}", path.display()))?;
    }
    Ok(())
}

fn render(page: clap::Command) -> Result<Vec<u8>> {
    let mut roff = Vec::new();
    // Subcommands carry no version of their own; the page footer names imgpack's.
    clap_mangen::Man::new(page.version(env!("CARGO_PKG_VERSION")))
        .render(&mut roff)
        .context("cannot render the man page")?;
    Ok(roff)
}

fn subcommand_names(command: &clap::Command) -> Vec<&str> {
    command
        .get_subcommands()
        .map(clap::Command::get_name)
        .filter(|name| *name != "help")
        .collect()
}

/// Writes to stdout; a closed pipe (`imgpack man | head`) is not an error worth a panic.
fn write_stdout(bytes: &[u8]) -> Result<()> {
    let mut stdout = std::io::stdout().lock();
    match stdout.write_all(bytes).and_then(|()| stdout.flush()) {
        Err(err) if err.kind() == std::io::ErrorKind::BrokenPipe => Ok(()),
        other => other.context("cannot write to standard output"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_shell_gets_a_script_that_names_the_subcommands() {
        for shell in [Shell::Bash, Shell::Zsh, Shell::Fish] {
            let mut script = Vec::new();
            clap_complete::generate(
                shell,
                &mut crate::cli::Cli::command(),
                "imgpack",
                &mut script,
            );
            let script = String::from_utf8(script).unwrap();
            for word in ["build", "push", "resolve", "platform", "insecure-registry"] {
                assert!(script.contains(word), "{shell}: no {word}");
            }
        }
    }

    #[test]
    fn man_pages_cover_the_command_and_each_subcommand() {
        let dir = tempfile::tempdir().unwrap();
        run_man(ManArgs {
            command: None,
            dir: Some(dir.path().to_owned()),
        })
        .unwrap();
        let mut names: Vec<String> = std::fs::read_dir(dir.path())
            .unwrap()
            .map(|entry| entry.unwrap().file_name().into_string().unwrap())
            .collect();
        names.sort();
        assert!(names.contains(&"imgpack.1".to_owned()), "{names:?}");
        assert!(names.contains(&"imgpack-build.1".to_owned()), "{names:?}");
        assert!(!names.contains(&"imgpack-help.1".to_owned()), "{names:?}");
        let build = std::fs::read_to_string(dir.path().join("imgpack-build.1")).unwrap();
        assert!(build.starts_with(".ie"), "not roff: {}", &build[..40]);
        assert!(build.contains(".TH imgpack-build 1"), "{}", &build[..200]);
        assert!(build.contains("platform"));
    }
}
