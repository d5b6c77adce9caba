//! What the duet binaries say about themselves: `--version` with the
//! commit, and their man pages and shell completions (written by a hidden
//! `generate-docs` command, for packages).

use std::io;
use std::path::{Path, PathBuf};

/// The version and the commit it was built from (`DUET_COMMIT` from the
/// environment for a build outside a checkout; else "unknown").
pub const VERSION: &str = concat!(env!("CARGO_PKG_VERSION"), " (commit ", env!("DUET_COMMIT"), ")");

/// Writes the man pages of `cmd` (one for it, one per subcommand, as
/// `<name>.1` and `<name>-<sub>.1`) into `out/man1`, and its completions
/// for bash, zsh and fish into `out/completions`. Returns the files.
pub fn write_docs(mut cmd: clap::Command, out: &Path) -> io::Result<Vec<PathBuf>> {
    let name = cmd.get_name().to_owned();
    let man = out.join("man1");
    let comp = out.join("completions");
    std::fs::create_dir_all(&man)?;
    std::fs::create_dir_all(&comp)?;
    let mut written = Vec::new();
    cmd.build();
    let mut pages = vec![(name.clone(), cmd.clone())];
    for sub in cmd.get_subcommands().filter(|s| !s.is_hide_set() && s.get_name() != "help") {
        pages.push((format!("{name}-{}", sub.get_name()), sub.clone().name(format!("{name}-{}", sub.get_name()))));
    }
    for (page, c) in pages {
        let p = man.join(format!("{page}.1"));
        let mut buf = Vec::new();
        clap_mangen::Man::new(c).render(&mut buf)?;
        std::fs::write(&p, buf)?;
        written.push(p);
    }
    for (shell, file) in [
        (clap_complete::Shell::Bash, name.clone()),
        (clap_complete::Shell::Zsh, format!("_{name}")),
        (clap_complete::Shell::Fish, format!("{name}.fish")),
    ] {
        let p = comp.join(shell.to_string()).join(file);
        std::fs::create_dir_all(p.parent().expect("a directory"))?;
        let mut buf = Vec::new();
        clap_complete::generate(shell, &mut cmd, name.clone(), &mut buf);
        std::fs::write(&p, buf)?;
        written.push(p);
    }
    Ok(written)
}
