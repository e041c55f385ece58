//! `pollhook generate`: shell completions and man pages rendered from the clap definitions, so
//! what the Debian package ships can never disagree with what the binary accepts.

use std::path::{Path, PathBuf};

use clap::CommandFactory as _;
use clap_complete::Shell;

use super::Cli;

/// Why the files could not be written.
#[derive(Debug, thiserror::Error)]
pub enum GenerateError {
    /// A directory or file under `--out` could not be created or written.
    #[error("cannot write {path}: {source}")]
    Write {
        /// What was being written.
        path: PathBuf,
        /// The I/O error.
        source: std::io::Error,
    },
}

/// The shells completions are made for, with the file name each one looks up.
const SHELLS: [(Shell, &str); 3] = [
    (Shell::Bash, "pollhook.bash"),
    (Shell::Zsh, "_pollhook"),
    (Shell::Fish, "pollhook.fish"),
];

fn write(path: PathBuf, bytes: &[u8]) -> Result<PathBuf, GenerateError> {
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir).map_err(|source| GenerateError::Write {
            path: dir.to_path_buf(),
            source,
        })?;
    }
    std::fs::write(&path, bytes).map_err(|source| GenerateError::Write {
        path: path.clone(),
        source,
    })?;
    Ok(path)
}

/// Writes `out/completions/{pollhook.bash,_pollhook,pollhook.fish}` and `out/man/pollhook.1`
/// with one `pollhook-COMMAND.1` per visible subcommand; returns the files written.
pub fn generate(out: &Path) -> Result<Vec<PathBuf>, GenerateError> {
    let mut written = Vec::new();
    for (shell, file) in SHELLS {
        let mut buf = Vec::new();
        clap_complete::generate(shell, &mut Cli::command(), "pollhook", &mut buf);
        written.push(write(out.join("completions").join(file), &buf)?);
    }
    let cmd = Cli::command();
    let mut page = Vec::new();
    let render = |c: clap::Command, buf: &mut Vec<u8>| {
        // Rendering into memory cannot fail on I/O; a failure would be a clap_mangen bug.
        clap_mangen::Man::new(c)
            .render(buf)
            .map_err(|source| GenerateError::Write {
                path: out.join("man"),
                source,
            })
    };
    render(cmd.clone(), &mut page)?;
    written.push(write(out.join("man").join("pollhook.1"), &page)?);
    for sub in cmd.get_subcommands().filter(|s| !s.is_hide_set()) {
        let name = format!("pollhook-{}", sub.get_name());
        let mut page = Vec::new();
        let sub = sub
            .clone()
            .display_name(name.clone())
            .bin_name(format!("pollhook {}", sub.get_name()));
        render(sub, &mut page)?;
        written.push(write(out.join("man").join(format!("{name}.1")), &page)?);
    }
    Ok(written)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn completions_and_man_pages_cover_every_visible_command() {
        let dir = tempfile::tempdir().unwrap();
        let files = generate(dir.path()).unwrap();
        let read = |rel: &str| std::fs::read_to_string(dir.path().join(rel)).unwrap();
        let bash = read("completions/pollhook.bash");
        assert!(bash.contains("_pollhook()"), "{bash}");
        for sub in ["run", "check", "once", "replay", "enable"] {
            assert!(bash.contains(sub), "bash completes `{sub}`");
            let page = read(&format!("man/pollhook-{sub}.1"));
            assert!(page.starts_with(".ie"), "roff: {page}");
            assert!(page.contains(&format!("pollhook\\-{sub}")), "{page}");
            assert!(page.contains(&format!("\\fBpollhook {sub}\\fR")), "{page}");
        }
        assert!(read("completions/_pollhook").starts_with("#compdef pollhook"));
        assert!(read("completions/pollhook.fish").contains("complete -c pollhook"));
        let man = read("man/pollhook.1");
        assert!(man.contains(".TH pollhook 1"), "{man}");
        assert!(man.contains("\\-\\-version"), "{man}");
        assert!(
            !files.iter().any(|f| f.ends_with("pollhook-generate.1")),
            "the hidden packaging command has no page"
        );
    }
}
