//! Every file in `tests/fixtures/config/` is validated; its first line says what to expect:
//! `# expect: ok`, or `# expect: error` followed by substrings that must all appear in the
//! diagnostics. Every folder in `tests/fixtures/managed/` holds a `config.toml`, a
//! `requirements.toml` and an `expect` file of the same form.

use std::path::{Path, PathBuf};

fn fixtures(dir: &str) -> Vec<PathBuf> {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("fixtures")
        .join(dir);
    let mut out: Vec<PathBuf> = std::fs::read_dir(&root)
        .unwrap_or_else(|e| panic!("{}: {e}", root.display()))
        .map(|e| e.unwrap().path())
        .collect();
    out.sort();
    assert!(!out.is_empty(), "no fixtures in {}", root.display());
    out
}

fn expectation(text: &str) -> (bool, Vec<String>) {
    let first = text.lines().next().unwrap_or_default();
    let rest = first
        .strip_prefix("# expect:")
        .unwrap_or_else(|| panic!("first line must be `# expect: ...`: {first}"))
        .trim();
    if rest == "ok" {
        return (true, Vec::new());
    }
    let wanted = rest.strip_prefix("error").expect("`ok` or `error ...`");
    (
        false,
        wanted
            .split('|')
            .map(|s| s.trim().to_owned())
            .filter(|s| !s.is_empty())
            .collect(),
    )
}

fn judge(name: &Path, result: Result<(), proxy_config::Error>, expect: &str) {
    let (ok, wanted) = expectation(expect);
    match (result, ok) {
        (Ok(()), true) => {}
        (Ok(()), false) => panic!("{}: expected an error", name.display()),
        (Err(e), true) => panic!("{}: expected ok, got:\n{e}", name.display()),
        (Err(e), false) => {
            let text = e.to_string();
            for w in wanted {
                assert!(
                    text.contains(&w),
                    "{}: {w:?} not in:\n{text}",
                    name.display()
                );
            }
        }
    }
}

#[test]
fn config_files() {
    for path in fixtures("config") {
        let text = std::fs::read_to_string(&path).unwrap();
        judge(
            &path,
            proxy_config::validate_files(std::slice::from_ref(&path)),
            &text,
        );
    }
}

#[test]
fn managed_pairs() {
    for dir in fixtures("managed") {
        let expect = std::fs::read_to_string(dir.join("expect")).unwrap();
        let sources = proxy_config::Sources {
            config_files: vec![dir.join("config.toml")],
            requirement_files: vec![dir.join("requirements.toml")],
            system_requirements: Some(dir.join("absent.toml")),
            ..Default::default()
        };
        let result = proxy_config::load(&sources).map(|_| ());
        judge(&dir, result, &expect);
    }
}
