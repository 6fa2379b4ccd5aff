//! Puts the git commit into `quiesce --version`, so that a binary (and the image carrying it)
//! says what it was built from.
//!
//! The commit comes from `QUIESCE_GIT_COMMIT` when set (container builds, where .git is not in
//! the build context), else from `git rev-parse HEAD`, else it is `unknown`. A small script
//! rather than a crate: vergen-gitcl's current release needs a newer Rust than the workspace's
//! rust-version, and git-version has no override for builds without .git and recompiles on
//! every change to the git index.

use std::path::Path;
use std::process::Command;

fn git(args: &[&str]) -> Option<String> {
    let out = Command::new("git")
        .args(args)
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .output()
        .ok()?;
    let text = String::from_utf8(out.stdout).ok()?.trim().to_string();
    (out.status.success() && !text.is_empty()).then_some(text)
}

/// Rebuild when the file moves HEAD: HEAD itself (a checkout), the branch's ref (a commit) and
/// packed-refs. Only files that exist: cargo reruns every time for a missing one.
fn rerun_when_head_moves() {
    let mut refs = vec!["HEAD".to_string(), "packed-refs".to_string()];
    refs.extend(git(&["symbolic-ref", "-q", "HEAD"]));
    for r in refs {
        if let Some(path) = git(&["rev-parse", "--path-format=absolute", "--git-path", &r])
            && Path::new(&path).exists()
        {
            println!("cargo::rerun-if-changed={path}");
        }
    }
}

fn main() {
    println!("cargo::rerun-if-env-changed=QUIESCE_GIT_COMMIT");
    let commit = match std::env::var("QUIESCE_GIT_COMMIT") {
        Ok(commit) if !commit.is_empty() => commit,
        _ => {
            rerun_when_head_moves();
            git(&["rev-parse", "HEAD"]).unwrap_or_else(|| "unknown".into())
        }
    };
    println!("cargo::rustc-env=QUIESCE_BUILD_COMMIT={commit}");
}
