//! `cargo xtask fuzz [TARGET...] [--secs N] [--no-cmin]`: a fuzzing campaign over the targets
//! of `fuzz/` (docs/fuzzing.md). Each target runs for N seconds (default 60) under cargo-fuzz on
//! nightly, starting from and adding to its committed corpus (`fuzz/corpus/TARGET/`); the
//! corpus is then minimised (`cargo fuzz cmin`), and a line per target gives executions,
//! coverage and findings; `fuzz/dicts/TARGET.dict`, when there is one, is its dictionary. An input that fails is copied to `fuzz/regressions/TARGET/`, which
//! the stable replay test (crates/proxy-fuzz) then runs until the bug is fixed: every finding
//! becomes a regression test.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use anyhow::{Context, bail};

/// What one campaign of one target found.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(crate) struct Outcome {
    /// Inputs executed.
    pub(crate) execs: u64,
    /// Executions per second, as libFuzzer reports them.
    pub(crate) execs_per_sec: u64,
    /// Coverage points (`cov:`) at the end.
    pub(crate) cov: u64,
    /// Features (`ft:`) at the end.
    pub(crate) features: u64,
    /// Corpus entries at the end (`corp:`).
    pub(crate) corpus: u64,
    /// Peak RSS in MiB.
    pub(crate) rss_mb: u64,
}

/// The figures of a libFuzzer log (`-print_final_stats=1`): the last status line's `cov`, `ft`
/// and `corp`, and the final `stat::` lines.
pub(crate) fn parse_log(log: &str) -> Outcome {
    let mut out = Outcome::default();
    let after = |line: &str, key: &str| -> Option<u64> {
        let rest = line.split(key).nth(1)?.trim_start();
        let digits: String = rest.chars().take_while(char::is_ascii_digit).collect();
        digits.parse().ok()
    };
    for line in log.lines() {
        if line.starts_with('#') && line.contains("cov: ") {
            out.cov = after(line, "cov:").unwrap_or(out.cov);
            out.features = after(line, "ft:").unwrap_or(out.features);
            out.corpus = after(line, "corp:").unwrap_or(out.corpus);
        }
        if let Some(v) = after(line, "stat::number_of_executed_units:") {
            out.execs = v;
        }
        if let Some(v) = after(line, "stat::average_exec_per_sec:") {
            out.execs_per_sec = v;
        }
        if let Some(v) = after(line, "stat::peak_rss_mb:") {
            out.rss_mb = v;
        }
    }
    out
}

fn fuzz_dir(root: &Path) -> PathBuf {
    root.join("fuzz")
}

/// `cargo +nightly ...` through rustup's proxy (the `cargo` running xtask is stable's).
fn nightly(root: &Path) -> Command {
    let mut c = Command::new("cargo");
    c.arg("+nightly").current_dir(fuzz_dir(root));
    c
}

/// The targets fuzz/Cargo.toml declares.
fn targets(root: &Path) -> anyhow::Result<Vec<String>> {
    let out = nightly(root)
        .args(["fuzz", "list"])
        .output()
        .context("cannot run `cargo +nightly fuzz list`")?;
    if !out.status.success() {
        bail!(
            "`cargo +nightly fuzz list` failed: {}",
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    Ok(String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty())
        .map(str::to_owned)
        .collect())
}

/// The failing inputs cargo-fuzz left for `target`, copied to `fuzz/regressions/TARGET/`.
fn keep_findings(root: &Path, target: &str) -> anyhow::Result<Vec<PathBuf>> {
    let artifacts = fuzz_dir(root).join("artifacts").join(target);
    let Ok(entries) = std::fs::read_dir(&artifacts) else {
        return Ok(Vec::new());
    };
    let regressions = fuzz_dir(root).join("regressions").join(target);
    let mut kept = Vec::new();
    for e in entries {
        let path = e?.path();
        let Some(name) = path.file_name().map(|n| n.to_string_lossy().into_owned()) else {
            continue;
        };
        if !["crash-", "timeout-", "oom-", "leak-"]
            .iter()
            .any(|p| name.starts_with(p))
        {
            continue;
        }
        std::fs::create_dir_all(&regressions)?;
        let to = regressions.join(&name);
        std::fs::copy(&path, &to).with_context(|| format!("copying {}", path.display()))?;
        std::fs::remove_file(&path)?;
        kept.push(to);
    }
    Ok(kept)
}

/// libFuzzer options of one target: `hello` must see inputs longer than the ClientHello
/// peek's bound (`MAX_HELLO`, 16 KiB) to check what happens past it; libFuzzer's default
/// cap is 4 KiB.
fn extra_args(target: &str) -> &'static [&'static str] {
    match target {
        "hello" => &["-max_len=20000"],
        _ => &[],
    }
}

/// Runs the campaign; see the module doc.
pub(crate) fn run(root: &Path, args: &[String]) -> anyhow::Result<()> {
    let mut secs: u64 = 60;
    let mut cmin = true;
    let mut chosen = Vec::new();
    let mut it = args.iter();
    while let Some(a) = it.next() {
        match a.as_str() {
            "--secs" => {
                secs = it
                    .next()
                    .and_then(|s| s.parse().ok())
                    .filter(|s| *s > 0)
                    .context("--secs needs a number of seconds")?;
            }
            "--no-cmin" => cmin = false,
            s if s.starts_with('-') => bail!(
                "unknown option {s} (usage: cargo xtask fuzz [TARGET...] [--secs N] [--no-cmin])"
            ),
            s => chosen.push(s.to_owned()),
        }
    }
    if !Command::new("cargo")
        .args(["+nightly", "fuzz", "--version"])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success())
    {
        bail!(
            "fuzzing needs a nightly toolchain and cargo-fuzz: `rustup toolchain install nightly` and `cargo install --locked cargo-fuzz`"
        );
    }
    let all = targets(root)?;
    for c in &chosen {
        if !all.contains(c) {
            bail!("no fuzz target {c}; the targets are: {}", all.join(", "));
        }
    }
    let chosen = if chosen.is_empty() { all } else { chosen };
    let logs = fuzz_dir(root).join("target").join("logs");
    std::fs::create_dir_all(&logs)?;
    let mut results = Vec::new();
    for target in &chosen {
        let corpus = fuzz_dir(root).join("corpus").join(target);
        std::fs::create_dir_all(&corpus)?;
        let log = logs.join(format!("{target}.log"));
        println!("==> fuzz {target} for {secs} s (log: {})", log.display());
        let file = std::fs::File::create(&log)?;
        let mut command = nightly(root);
        command.args(["fuzz", "run", target]).arg(&corpus);
        // A dictionary of the target's tokens (config keys, host spellings), when there is one.
        let dict = fuzz_dir(root).join("dicts").join(format!("{target}.dict"));
        let dict = dict.is_file().then(|| format!("-dict={}", dict.display()));
        let status = command
            .args([
                "--",
                &format!("-max_total_time={secs}"),
                "-print_final_stats=1",
                "-timeout=10",
                "-rss_limit_mb=2048",
            ])
            .args(dict)
            .args(extra_args(target))
            .stdout(file.try_clone()?)
            .stderr(file)
            .status()
            .with_context(|| format!("cannot run cargo fuzz for {target}"))?;
        let outcome = parse_log(&std::fs::read_to_string(&log).unwrap_or_default());
        let findings = keep_findings(root, target)?;
        if cmin {
            let cmin_log = std::fs::File::create(logs.join(format!("{target}.cmin.log")))?;
            let ok = nightly(root)
                .args(["fuzz", "cmin", target])
                .arg(&corpus)
                .stdout(cmin_log.try_clone()?)
                .stderr(cmin_log)
                .status()?
                .success();
            if !ok {
                println!("    cmin of {target} failed: see its log beside the campaign's");
            }
        }
        let kept = std::fs::read_dir(&corpus)?.count();
        println!(
            "    {target}: {} execs ({}/s), cov {}, ft {}, corpus {} → {kept} after cmin, peak RSS {} MiB, findings {}",
            outcome.execs,
            outcome.execs_per_sec,
            outcome.cov,
            outcome.features,
            outcome.corpus,
            outcome.rss_mb,
            findings.len()
        );
        for f in &findings {
            println!("    finding kept as {}", f.display());
        }
        results.push((target.clone(), status.success() && findings.is_empty()));
    }
    let failed: Vec<&str> = results
        .iter()
        .filter(|(_, ok)| !*ok)
        .map(|(t, _)| t.as_str())
        .collect();
    if !failed.is_empty() {
        bail!(
            "fuzzing found failures in {}: the inputs are in fuzz/regressions/ (replayed by `cargo test -p proxy-fuzz`); fix them and commit the inputs",
            failed.join(", ")
        );
    }
    println!("fuzz: {} targets, no finding", results.len());
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_libfuzzer_figures() {
        let log = "INFO: Seed: 1\n#2\tINITED cov: 10 ft: 12 corp: 1/1b exec/s: 0 rss: 30Mb\n\
                   #4096\tpulse  cov: 120 ft: 300 corp: 40/2Kb lim: 43 exec/s: 2048 rss: 41Mb\n\
                   #9000\tDONE   cov: 130 ft: 333 corp: 44/3Kb lim: 60 exec/s: 3000 rss: 42Mb\n\
                   Done 9000 runs in 3 second(s)\n\
                   stat::number_of_executed_units: 9000\nstat::average_exec_per_sec:     3000\n\
                   stat::new_units_added:          43\nstat::slowest_unit_time_sec:    0\n\
                   stat::peak_rss_mb:              42\n";
        assert_eq!(
            parse_log(log),
            Outcome {
                execs: 9000,
                execs_per_sec: 3000,
                cov: 130,
                features: 333,
                corpus: 44,
                rss_mb: 42,
            }
        );
        assert_eq!(parse_log("nothing"), Outcome::default());
    }
}
