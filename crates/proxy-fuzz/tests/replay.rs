//! Replays the committed corpora and regressions through every target on stable Rust: the
//! fuzzers' findings stay fixed without nightly (docs/fuzzing.md).

use std::path::{Path, PathBuf};

/// The longest one input may take here (a debug build; libFuzzer's own bound is 10 s).
const INPUT_BOUND: std::time::Duration = std::time::Duration::from_secs(60);

fn fuzz_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../fuzz")
}

/// The files of `dir`, sorted; none when it does not exist.
fn files(dir: &Path) -> Vec<PathBuf> {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return Vec::new();
    };
    let mut out: Vec<PathBuf> = entries
        .map(|e| {
            e.unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
                .path()
        })
        .filter(|p| p.is_file())
        .collect();
    out.sort();
    out
}

#[test]
fn every_corpus_and_regression_input_passes_its_target() {
    // `PROXY_FUZZ_TARGET=NAME` replays one target only.
    let only = std::env::var("PROXY_FUZZ_TARGET").ok();
    for target in proxy_fuzz::TARGETS {
        if only.as_deref().is_some_and(|o| o != target.name) {
            continue;
        }
        let corpus = files(&fuzz_dir().join("corpus").join(target.name));
        assert!(
            !corpus.is_empty(),
            "no committed corpus for {}: run `cargo xtask fuzz {}` and commit fuzz/corpus/{}",
            target.name,
            target.name,
            target.name
        );
        let regressions = files(&fuzz_dir().join("regressions").join(target.name));
        for file in corpus.iter().chain(&regressions) {
            let data = match std::fs::read(file) {
                Ok(data) => data,
                // Removed since the listing: a campaign running in this checkout minimises
                // its corpus as it goes.
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => continue,
                Err(e) => panic!("{}: {e}", file.display()),
            };
            // On a thread of its own, bounded: an input that hangs fails the test instead of
            // holding CI (a panic is the thread's error).
            let run = target.run;
            let (tx, rx) = std::sync::mpsc::channel();
            std::thread::spawn(move || {
                let outcome = std::panic::catch_unwind(|| run(&data));
                let _ = tx.send(outcome.is_ok());
            });
            match rx.recv_timeout(INPUT_BOUND) {
                Ok(passed) => assert!(passed, "{} fails on {}", target.name, file.display()),
                Err(_) => panic!(
                    "{} ran longer than {INPUT_BOUND:?} on {}",
                    target.name,
                    file.display()
                ),
            }
        }
    }
}

#[test]
fn every_folder_and_binary_names_a_target() {
    for kind in ["corpus", "regressions"] {
        let Ok(entries) = std::fs::read_dir(fuzz_dir().join(kind)) else {
            continue;
        };
        for e in entries {
            let name = e.unwrap_or_else(|e| panic!("{e}")).file_name();
            let name = name.to_string_lossy();
            assert!(
                proxy_fuzz::target(&name).is_some(),
                "fuzz/{kind}/{name} names no target of proxy_fuzz::TARGETS"
            );
        }
    }
    for target in proxy_fuzz::TARGETS {
        let binary = fuzz_dir()
            .join("fuzz_targets")
            .join(format!("{}.rs", target.name));
        let text = std::fs::read_to_string(&binary)
            .unwrap_or_else(|e| panic!("{}: {e}", binary.display()));
        assert!(
            text.contains(&format!("proxy_fuzz::{}::run", target.name)),
            "{} does not run proxy_fuzz::{}::run",
            binary.display(),
            target.name
        );
    }
}
