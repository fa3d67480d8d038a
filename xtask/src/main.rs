//! `cargo xtask`: netproxy's single entry point for CI (`ci`), the architecture checks
//! (`tidy`) and the benchmarks (`bench`: the policy's criterion benches; `bench proxy`: the
//! side-by-side kit in `../shared/bench` against the release binary; `bench mitm`: the
//! TLS-interception workloads against mitmproxy; `bench isolate`: `run --isolate` against
//! `run`), the soak (`soak --minutes N`: the release binary under a mixed loopback load with
//! reloads and admin changes for N minutes, failing on memory or descriptor growth, on any
//! error and on any audit event lost; docs/benchmarks.md, "Soak"), the packagers' files
//! (`dist-docs DIR`: shell completions and man pages; `dist [DIR]`: the release tarball) and the
//! fuzzing campaigns (`fuzz`, nightly only: docs/fuzzing.md).
#![forbid(unsafe_code)]
#![allow(clippy::print_stdout, clippy::print_stderr)]

mod fuzz;
mod mitm;
mod soak;
mod tidy;

use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{Context, bail};

fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .map_or_else(|| PathBuf::from("."), Path::to_path_buf)
}

/// Runs one CI step; on failure, says what to do. `cargo` is the cargo that runs xtask
/// (`$CARGO`).
fn step(name: &str, fix: &str, program: &str, args: &[&str]) -> anyhow::Result<()> {
    println!("==> {name}: {program} {}", args.join(" "));
    let mut command = if program == "cargo" {
        tidy::cargo()
    } else {
        Command::new(program)
    };
    let status = command
        .args(args)
        .current_dir(root())
        .status()
        .with_context(|| format!("cannot run {program}"))?;
    if !status.success() {
        bail!("step `{name}` failed ({status}): {fix}");
    }
    Ok(())
}

fn have(cargo_subcommand: &str) -> bool {
    tidy::cargo()
        .args([cargo_subcommand, "--version"])
        .output()
        .is_ok_and(|o| o.status.success())
}

fn ci() -> anyhow::Result<()> {
    step(
        "fmt",
        "run `cargo fmt --all` and commit the result",
        "cargo",
        &["fmt", "--all", "--check"],
    )?;
    println!("==> tidy");
    tidy::run(&root()).context(
        "tidy failed: fix the problems listed above (see docs/ARCHITECTURE.md for the layer rules)",
    )?;
    step(
        "clippy",
        "fix the warnings above (CI denies every warning)",
        "cargo",
        &[
            "clippy",
            "--workspace",
            "--all-targets",
            "--locked",
            "--",
            "-D",
            "warnings",
        ],
    )?;
    step(
        "test",
        "fix the failing tests above",
        "cargo",
        &["test", "--workspace", "--locked"],
    )?;
    println!("==> doc: cargo doc --workspace --no-deps (warnings denied)");
    let status = tidy::cargo()
        .args(["doc", "--workspace", "--no-deps", "--locked"])
        .env("RUSTDOCFLAGS", "-D warnings")
        .current_dir(root())
        .status()
        .context("cannot run cargo doc")?;
    if !status.success() {
        bail!(
            "step `doc` failed ({status}): fix the rustdoc warnings above (broken links, missing docs)"
        );
    }
    if !have("deny") {
        bail!(
            "cargo-deny is not installed: run `cargo install --locked cargo-deny` (or `bash .ci/run`, which installs it)"
        );
    }
    step(
        "deny",
        "a dependency has a licence, source or ban problem: see deny.toml",
        "cargo",
        &["deny", "--offline", "check", "licenses", "bans", "sources"],
    )?;
    let db = root().join("../shared/advisory-db");
    if db.is_dir() {
        if !have("audit") {
            bail!(
                "cargo-audit is not installed: run `cargo install --locked cargo-audit` (or `bash .ci/run`)"
            );
        }
        let db = db.to_string_lossy().into_owned();
        step(
            "audit",
            "a dependency has a security advisory: upgrade it or document why it does not apply",
            "cargo",
            &["audit", "--no-fetch", "--db", &db],
        )?;
    } else {
        println!("==> audit: skipped, no advisory database at ../shared/advisory-db");
    }
    println!("ci: all steps passed");
    Ok(())
}

/// `cargo xtask bench proxy [COMPARE ARGS]`: builds the release binary and runs the shared
/// side-by-side kit (`../shared/bench/compare.sh`) with it; `--quick` for a short run.
fn bench_proxy(args: &[String]) -> anyhow::Result<()> {
    let kit = root().join("../shared/bench/compare.sh");
    if !kit.is_file() {
        bail!("the benchmark kit is not at {}", kit.display());
    }
    build_release()?;
    let bin = root().join("target/release/netproxy");
    println!("==> compare: {} {}", kit.display(), args.join(" "));
    let status = Command::new("bash")
        .arg(&kit)
        .args(args)
        .env("NETPROXY_BIN", &bin)
        .current_dir(root())
        .status()
        .context("cannot run the benchmark kit")?;
    if !status.success() {
        bail!("the benchmark kit failed ({status})");
    }
    Ok(())
}

/// The release binary the benchmarks run.
fn build_release() -> anyhow::Result<()> {
    step(
        "build",
        "the release build failed",
        "cargo",
        &["build", "--release", "--locked", "-p", "proxy-bin"],
    )
}

/// `cargo xtask bench audit [SECS] [REPS]`: builds the release binary and the counting
/// collector, then runs `scripts/bench-audit.sh` (audit to a file and over OTLP under load).
fn bench_audit(args: &[String]) -> anyhow::Result<()> {
    build_release()?;
    step(
        "build collector",
        "the collector example failed to build",
        "cargo",
        &[
            "build",
            "--release",
            "--locked",
            "-p",
            "proxy-audit",
            "--example",
            "otlp_count",
        ],
    )?;
    let status = Command::new("bash")
        .arg(root().join("scripts/bench-audit.sh"))
        .args(args)
        .current_dir(root())
        .status()
        .context("cannot run scripts/bench-audit.sh")?;
    if !status.success() {
        bail!("the audit benchmark failed ({status})");
    }
    Ok(())
}

/// `cargo xtask bench isolate [REPS] [SECS] [STARTS]`: builds the release binary, then runs
/// `scripts/bench-isolate.sh` (`run --isolate` against `run`, with loadgen as the child).
fn bench_isolate(args: &[String]) -> anyhow::Result<()> {
    build_release()?;
    let status = Command::new("bash")
        .arg(root().join("scripts/bench-isolate.sh"))
        .arg(root().join("target/release/netproxy"))
        .args(args)
        .current_dir(root())
        .status()
        .context("cannot run scripts/bench-isolate.sh")?;
    if !status.success() {
        bail!("the isolation benchmark failed ({status})");
    }
    Ok(())
}

/// `netproxy ARGS` through `cargo run` (built first when needed): its stdout.
fn netproxy(args: &[&str]) -> anyhow::Result<Vec<u8>> {
    let out = tidy::cargo()
        .args([
            "run",
            "--quiet",
            "--locked",
            "-p",
            "proxy-bin",
            "--bin",
            "netproxy",
            "--",
        ])
        .args(args)
        .current_dir(root())
        .stderr(std::process::Stdio::inherit())
        .output()
        .context("cannot run cargo")?;
    if !out.status.success() {
        bail!("`netproxy {}` failed ({})", args.join(" "), out.status);
    }
    Ok(out.stdout)
}

/// `cargo xtask dist-docs DIR`: what a package installs besides the binary, generated by
/// `netproxy completions` and `netproxy man` from the command line's own definitions:
/// `DIR/completions/netproxy.bash`, `DIR/completions/_netproxy` (zsh),
/// `DIR/completions/netproxy.fish`, and `DIR/man/netproxy.1` with a page per command
/// (`netproxy-serve.1`, ...). A relative DIR is taken from the folder xtask runs in.
fn dist_docs(args: &[String]) -> anyhow::Result<()> {
    let [dir] = args else {
        bail!("usage: cargo xtask dist-docs DIR");
    };
    let dir = std::path::absolute(dir).with_context(|| format!("bad folder {dir:?}"))?;
    let completions = dir.join("completions");
    std::fs::create_dir_all(&completions)
        .with_context(|| format!("cannot create {}", completions.display()))?;
    for (shell, name) in [
        ("bash", "netproxy.bash"),
        ("zsh", "_netproxy"),
        ("fish", "netproxy.fish"),
    ] {
        let text = netproxy(&["completions", shell])?;
        let path = completions.join(name);
        std::fs::write(&path, text).with_context(|| format!("cannot write {}", path.display()))?;
        println!("{}", path.display());
    }
    let man = dir.join("man");
    let man_dir = man.to_str().context("the folder's path is not UTF-8")?;
    netproxy(&["man", "--out-dir", man_dir])?;
    let mut pages: Vec<PathBuf> = std::fs::read_dir(&man)
        .with_context(|| format!("cannot list {}", man.display()))?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .collect();
    pages.sort();
    for p in pages {
        println!("{}", p.display());
    }
    Ok(())
}

/// `cargo xtask dist [DIR]`: the release tarball (docs/deploy.md), in DIR (default
/// `target/dist`): `netproxy-VERSION-ARCH-linux.tar.gz` holding `bin/netproxy` (the release
/// build), `share/` with the completions and the man pages (as `dist-docs` writes them),
/// `etc/netproxy/config.toml` (the example config), `lib/systemd/system/netproxy.service`
/// (the hardened unit for `serve`), README.md and docs/deploy.md. The unit is checked with
/// `systemd-analyze verify` when that command is there.
fn dist(args: &[String]) -> anyhow::Result<()> {
    let out = match args {
        [] => root().join("target/dist"),
        [dir] => std::path::absolute(dir).with_context(|| format!("bad folder {dir:?}"))?,
        _ => bail!("usage: cargo xtask dist [DIR]"),
    };
    build_release()?;
    let version = env!("CARGO_PKG_VERSION");
    let name = format!("netproxy-{version}-{}-linux", std::env::consts::ARCH);
    let stage = out.join(&name);
    if stage.exists() {
        std::fs::remove_dir_all(&stage)
            .with_context(|| format!("cannot clear {}", stage.display()))?;
    }
    let copy = |from: PathBuf, to: &str| -> anyhow::Result<()> {
        let to = stage.join(to);
        if let Some(parent) = to.parent() {
            std::fs::create_dir_all(parent)
                .with_context(|| format!("cannot create {}", parent.display()))?;
        }
        std::fs::copy(&from, &to)
            .with_context(|| format!("cannot copy {} to {}", from.display(), to.display()))?;
        Ok(())
    };
    copy(root().join("target/release/netproxy"), "bin/netproxy")?;
    copy(
        root().join("packaging/config.toml"),
        "etc/netproxy/config.toml",
    )?;
    copy(
        root().join("packaging/netproxy.service"),
        "lib/systemd/system/netproxy.service",
    )?;
    copy(root().join("README.md"), "share/doc/netproxy/README.md")?;
    copy(
        root().join("docs/deploy.md"),
        "share/doc/netproxy/deploy.md",
    )?;
    let share = stage.join("share/netproxy");
    let share = share.to_str().context("the folder's path is not UTF-8")?;
    dist_docs(&[share.to_owned()])?;
    if let Ok(out) = Command::new("systemd-analyze")
        .args(["verify", "--man=no"])
        .arg(stage.join("lib/systemd/system/netproxy.service"))
        .output()
    {
        let said = String::from_utf8_lossy(&out.stderr);
        // The unit names /usr/local/bin/netproxy, which need not exist on this machine.
        let faults: Vec<&str> = said
            .lines()
            .filter(|l| !l.contains("/usr/local/bin/netproxy"))
            .collect();
        if !faults.is_empty() {
            bail!("systemd-analyze verify: {}", faults.join("\n"));
        }
    }
    let tarball = out.join(format!("{name}.tar.gz"));
    let status = Command::new("tar")
        .arg("-czf")
        .arg(&tarball)
        .arg("-C")
        .arg(&out)
        .arg(&name)
        .status()
        .context("cannot run tar")?;
    if !status.success() {
        bail!("tar failed ({status})");
    }
    println!("{}", tarball.display());
    Ok(())
}

fn bench(args: &[String]) -> anyhow::Result<()> {
    match args.first().map(String::as_str) {
        Some("proxy") => return bench_proxy(&args[1..]),
        Some("isolate") => return bench_isolate(&args[1..]),
        Some("audit") => return bench_audit(&args[1..]),
        Some("mitm") => return mitm::run(&root(), &args[1..]),
        _ => {}
    }
    let mut cmd = vec!["bench", "-p", "proxy-policy", "--bench", "decide"];
    if !args.is_empty() {
        cmd.push("--");
        cmd.extend(args.iter().map(String::as_str));
    }
    step(
        "bench",
        "the benchmark failed to build or run",
        "cargo",
        &cmd,
    )
}

fn main() -> std::process::ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let result = match args.first().map(String::as_str) {
        Some("ci") => ci(),
        Some("tidy") => tidy::run(&root()),
        Some("bench") => bench(&args[1..]),
        Some("dist-docs") => dist_docs(&args[1..]),
        Some("dist") => dist(&args[1..]),
        Some("fuzz") => fuzz::run(&root(), &args[1..]),
        Some("soak") => soak::run(&root(), &args[1..]),
        _ => {
            eprintln!(
                "usage: cargo xtask <ci | tidy | bench [CRITERION ARGS] | bench proxy [--quick] [COMPARE ARGS] | bench audit [SECS] [REPS] | bench mitm [--quick] [OPTIONS] | soak --minutes N [--rate X] [--period SECS] [--keep] | dist-docs DIR | dist [DIR] | fuzz [TARGET...] [--secs N] [--no-cmin]>"
            );
            return std::process::ExitCode::from(2);
        }
    };
    match result {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("xtask: {e:#}");
            std::process::ExitCode::FAILURE
        }
    }
}
