//! Sets `DUET_COMMIT` for [`VERSION`](../src/lib.rs). A crate of its own,
//! depended on by the binaries only: a new commit rebuilds them, not the
//! whole workspace.

use std::path::{Path, PathBuf};

fn main() {
    let top = PathBuf::from(std::env::var("CARGO_MANIFEST_DIR").expect("set by cargo")).join("../..");
    commit(&top);
}

/// `DUET_COMMIT` for `--version`: the environment's (a build from a
/// tarball), else the checkout's HEAD (12 hex digits), else "unknown".
fn commit(top: &Path) {
    println!("cargo:rerun-if-env-changed=DUET_COMMIT");
    let git = top.join(".git");
    // HEAD moves with a commit or a checkout; the branch's ref with a commit.
    for f in ["HEAD", "packed-refs"] {
        if git.join(f).exists() {
            println!("cargo:rerun-if-changed={}", git.join(f).display());
        }
    }
    if let Some(r) = std::fs::read_to_string(git.join("HEAD"))
        .ok()
        .and_then(|h| h.strip_prefix("ref: ").map(str::trim).map(str::to_owned))
        && git.join(&r).exists()
    {
        println!("cargo:rerun-if-changed={}", git.join(r).display());
    }
    let from_git = || {
        let out = std::process::Command::new("git")
            .args(["rev-parse", "--short=12", "HEAD"])
            .current_dir(top)
            .output()
            .ok()
            .filter(|o| o.status.success())?;
        Some(String::from_utf8_lossy(&out.stdout).trim().to_owned()).filter(|s| !s.is_empty())
    };
    let commit = std::env::var("DUET_COMMIT").ok().filter(|s| !s.is_empty()).or_else(from_git);
    println!("cargo:rustc-env=DUET_COMMIT={}", commit.as_deref().unwrap_or("unknown"));
}
