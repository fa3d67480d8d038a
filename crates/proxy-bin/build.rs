//! Build script of `proxy-bin`: the facts `netproxy --version` shows besides the version, as
//! compile-time environment variables of the crate: `NETPROXY_COMMIT`, the commit the source was
//! built from (`git rev-parse --short HEAD`, or `unknown` outside a git checkout or without
//! git), and `NETPROXY_PROFILE`, the build profile (`debug` or `release`).
#![forbid(unsafe_code)]
#![allow(clippy::print_stdout)] // a build script talks to cargo on stdout

use std::path::{Path, PathBuf};
use std::process::Command;

/// `git ARGS` in `dir`: its trimmed output, or `None` when git is missing or fails.
fn git(dir: &Path, args: &[&str]) -> Option<String> {
    let out = Command::new("git")
        .args(args)
        .current_dir(dir)
        .output()
        .ok()?;
    if !out.status.success() {
        return None;
    }
    let text = String::from_utf8(out.stdout).ok()?;
    let text = text.trim();
    (!text.is_empty()).then(|| text.to_owned())
}

fn main() {
    let dir = PathBuf::from(std::env::var_os("CARGO_MANIFEST_DIR").unwrap_or_default());
    let commit = git(&dir, &["rev-parse", "--short", "HEAD"])
        .filter(|c| c.bytes().all(|b| b.is_ascii_hexdigit()))
        .unwrap_or_else(|| "unknown".to_owned());
    let profile = std::env::var("PROFILE").unwrap_or_else(|_| "unknown".to_owned());
    println!("cargo:rustc-env=NETPROXY_COMMIT={commit}");
    println!("cargo:rustc-env=NETPROXY_PROFILE={profile}");
    println!("cargo:rerun-if-changed=build.rs");
    // Run again when HEAD moves: HEAD itself (a checkout), the branch it names and the refs
    // (a commit; in a worktree they live in the common folder), packed refs. Only paths that
    // exist: cargo would otherwise run this script on every build.
    let mut watched = vec![
        git(&dir, &["rev-parse", "--git-path", "HEAD"]),
        git(&dir, &["rev-parse", "--git-path", "packed-refs"]),
        git(&dir, &["rev-parse", "--git-path", "refs/heads"]),
    ];
    if let Some(branch) = git(&dir, &["symbolic-ref", "-q", "HEAD"]) {
        watched.push(git(&dir, &["rev-parse", "--git-path", &branch]));
    }
    for path in watched.into_iter().flatten() {
        let path = dir.join(path);
        if path.exists() {
            println!("cargo:rerun-if-changed={}", path.display());
        }
    }
}
