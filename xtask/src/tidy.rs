//! Architecture checks from `cargo metadata` and the sources: the layer edges of
//! docs/ARCHITECTURE.md, a pure policy crate, and `#![forbid(unsafe_code)]` plus a crate-level
//! doc comment in every crate root. Also run as an ordinary test.

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;
use std::process::Command;

use anyhow::{Context, bail};
use serde_json::Value;

/// The workspace crates each crate may depend on (normal and build dependencies). A workspace
/// crate missing from this table may depend on nothing of the workspace.
pub(crate) const ALLOWED_EDGES: &[(&str, &[&str])] = &[
    ("proxy-core", &[]),
    ("proxy-policy", &["proxy-core"]),
    ("proxy-config", &["proxy-policy", "proxy-core"]),
    ("proxy-audit", &["proxy-core"]),
    ("proxy-broker", &["proxy-core"]),
    (
        "proxy-mitm",
        &["proxy-core", "proxy-io", "proxy-broker", "proxy-http"],
    ),
    ("proxy-io", &["proxy-core"]),
    ("proxy-gate", &["proxy-core", "proxy-policy", "proxy-io"]),
    ("proxy-http", &["proxy-core", "proxy-io", "proxy-broker"]),
    ("proxy-socks", &["proxy-core", "proxy-io"]),
    ("proxy-admin", &["proxy-core", "proxy-audit", "proxy-io"]),
    ("proxy-isolate", &[]),
    (
        "proxy-bin",
        &[
            "proxy-core",
            "proxy-policy",
            "proxy-config",
            "proxy-gate",
            "proxy-audit",
            "proxy-broker",
            "proxy-mitm",
            "proxy-io",
            "proxy-http",
            "proxy-socks",
            "proxy-admin",
            "proxy-isolate",
        ],
    ),
    ("proxy-test-support", &["proxy-core", "proxy-io"]),
    ("proxy-tests", &[]),
    // The fuzz targets drive the parsers of every layer: like the end-to-end tests, a crate no
    // other crate depends on.
    (
        "proxy-fuzz",
        &[
            "proxy-core",
            "proxy-policy",
            "proxy-config",
            "proxy-audit",
            "proxy-io",
            "proxy-http",
            "proxy-socks",
            "proxy-broker",
            "proxy-test-support",
        ],
    ),
    ("xtask", &[]),
];

/// The crates proxy-core may depend on, directly or not (normal dependencies): its own
/// vocabulary needs error derives and IDNA. Anything else (a runtime, an I/O or format crate) is
/// a review question, answered by adding it here.
pub(crate) const CORE_ALLOWED: &[&str] = &[
    // error derives
    "thiserror",
    "thiserror-impl",
    // host names: IDNA (UTS #46) and the ICU4X data it uses
    "idna",
    "idna_adapter",
    "icu_collections",
    "icu_locale_core",
    "icu_normalizer",
    "icu_normalizer_data",
    "icu_properties",
    "icu_properties_data",
    "icu_provider",
    "displaydoc",
    "litemap",
    "potential_utf",
    "smallvec",
    "stable_deref_trait",
    "tinystr",
    "utf8_iter",
    "utf_types",
    "writeable",
    "yoke",
    "yoke-derive",
    "zerofrom",
    "zerofrom-derive",
    "zerotrie",
    "zerovec",
    "zerovec-derive",
    // proc-macro support of the derives above
    "proc-macro2",
    "quote",
    "syn",
    "synstructure",
    "unicode-ident",
];

/// The crates proxy-policy may depend on besides proxy-core and [`CORE_ALLOWED`] (normal
/// dependencies, transitively): pattern matching and address ranges, nothing that does I/O.
pub(crate) const POLICY_ALLOWED: &[&str] = &[
    "proxy-core",
    "globset",
    "aho-corasick",
    "bstr",
    "memchr",
    "regex-automata",
    "regex-syntax",
    "ipnet",
    "foldhash",
    // Only through feature unification: another workspace crate (hickory) turns on ipnet's
    // `serde` feature. serde is a data model: no format, no I/O.
    "serde",
    "serde_core",
    "serde_derive",
];

/// Paths proxy-policy's source must not name: sockets, files and processes belong to the
/// callers (addresses come from `core::net`).
pub(crate) const POLICY_FORBIDDEN_PATHS: &[&str] = &["std::net", "std::fs", "std::process"];

/// A dependency edge between two packages, with the dependency kinds.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Edge {
    pub(crate) from: String,
    pub(crate) to: String,
    pub(crate) dev_only: bool,
}

/// Workspace edges that the layer table forbids.
pub(crate) fn forbidden_edges(edges: &[Edge], workspace: &BTreeSet<String>) -> Vec<String> {
    let allowed: BTreeMap<&str, &[&str]> = ALLOWED_EDGES.iter().copied().collect();
    let mut problems = Vec::new();
    for e in edges {
        if e.dev_only || !workspace.contains(&e.to) || !workspace.contains(&e.from) {
            continue;
        }
        let ok = allowed
            .get(e.from.as_str())
            .is_some_and(|list| list.contains(&e.to.as_str()));
        if !ok {
            problems.push(format!(
                "forbidden layer edge: {} depends on {} (allowed: {})",
                e.from,
                e.to,
                allowed.get(e.from.as_str()).map_or_else(
                    || "none: add the crate to the layer table".to_owned(),
                    |l| if l.is_empty() {
                        "no workspace crate".to_owned()
                    } else {
                        l.join(", ")
                    },
                )
            ));
        }
    }
    problems
}

/// The dependencies of `krate` (its normal ones, transitively) that its allowlist lacks.
pub(crate) fn unlisted_dependencies(krate: &str, deps: &[String], allowed: &[&str]) -> Vec<String> {
    deps.iter()
        .filter(|d| !allowed.contains(&d.as_str()))
        .map(|d| {
            format!(
                "{krate} depends (normally) on {d}, which its allowlist in xtask/src/tidy.rs lacks: \
                 keep {krate} free of runtimes and I/O, or add {d} there with the reason"
            )
        })
        .collect()
}

/// Lines of proxy-policy's source (tests included) that name a forbidden path.
pub(crate) fn policy_source_problems(dir: &Path) -> anyhow::Result<Vec<String>> {
    let mut problems = Vec::new();
    for file in rust_files(dir)? {
        let text = std::fs::read_to_string(&file)
            .with_context(|| format!("cannot read {}", file.display()))?;
        problems.extend(forbidden_paths(&file.display().to_string(), &text));
    }
    Ok(problems)
}

/// The lines of `text` that name a path of [`POLICY_FORBIDDEN_PATHS`].
pub(crate) fn forbidden_paths(name: &str, text: &str) -> Vec<String> {
    let mut problems = Vec::new();
    for (n, line) in text.lines().enumerate() {
        let code = line.split("//").next().unwrap_or_default();
        for path in POLICY_FORBIDDEN_PATHS {
            if code.contains(path) {
                problems.push(format!(
                    "{name}:{}: proxy-policy must not use {path} (no sockets, files or processes; addresses come from core::net)",
                    n + 1
                ));
            }
        }
    }
    problems
}

/// Every `.rs` file under `dir`.
fn rust_files(dir: &Path) -> anyhow::Result<Vec<std::path::PathBuf>> {
    let mut out = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for entry in
            std::fs::read_dir(&d).with_context(|| format!("cannot read {}", d.display()))?
        {
            let path = entry?.path();
            if path.is_dir() {
                stack.push(path);
            } else if path.extension().is_some_and(|e| e == "rs") {
                out.push(path);
            }
        }
    }
    out.sort();
    Ok(out)
}

/// `anyhow` is for the binary target and xtask only: no other workspace crate may depend on it
/// (normally), and proxy-bin's library (everything under src/ but src/bin/) must not name it.
fn anyhow_problems(
    root: &Path,
    edges: &[Edge],
    workspace: &BTreeSet<String>,
) -> anyhow::Result<Vec<String>> {
    let mut problems: Vec<String> = edges
        .iter()
        .filter(|e| {
            e.to == "anyhow"
                && !e.dev_only
                && workspace.contains(&e.from)
                && !matches!(e.from.as_str(), "proxy-bin" | "xtask")
        })
        .map(|e| format!("{} depends on anyhow: library crates use thiserror", e.from))
        .collect();
    let lib = root.join("crates/proxy-bin/src");
    for file in rust_files(&lib)? {
        if file.starts_with(lib.join("bin")) {
            continue;
        }
        let text = std::fs::read_to_string(&file)
            .with_context(|| format!("cannot read {}", file.display()))?;
        let uses = text
            .lines()
            .any(|l| !l.trim_start().starts_with("//") && l.contains("anyhow"));
        if uses {
            problems.push(format!(
                "{}: proxy-bin's library must not use anyhow (only its binary target does)",
                file.display()
            ));
        }
    }
    Ok(problems)
}

/// The cargo that runs xtask (`$CARGO`), or `cargo` from the path.
pub(crate) fn cargo() -> Command {
    Command::new(std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into()))
}

fn metadata(root: &Path) -> anyhow::Result<Value> {
    let out = cargo()
        .args(["metadata", "--format-version", "1", "--locked"])
        .current_dir(root)
        .output()
        .context("cannot run cargo metadata")?;
    if !out.status.success() {
        bail!(
            "cargo metadata failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    serde_json::from_slice(&out.stdout).context("cargo metadata printed invalid JSON")
}

fn name_of(packages: &BTreeMap<String, &Value>, id: &str) -> String {
    packages
        .get(id)
        .and_then(|p| p["name"].as_str())
        .unwrap_or(id)
        .to_owned()
}

/// Runs every check and reports every problem.
pub(crate) fn run(root: &Path) -> anyhow::Result<()> {
    let meta = metadata(root)?;
    let packages: BTreeMap<String, &Value> = meta["packages"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|p| Some((p["id"].as_str()?.to_owned(), p)))
        .collect();
    let members: BTreeSet<String> = meta["workspace_members"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(Value::as_str)
        .map(str::to_owned)
        .collect();
    let workspace: BTreeSet<String> = members.iter().map(|id| name_of(&packages, id)).collect();
    let mut edges = Vec::new();
    let mut normal_graph: BTreeMap<String, Vec<String>> = BTreeMap::new();
    for node in meta["resolve"]["nodes"].as_array().into_iter().flatten() {
        let from_id = node["id"].as_str().unwrap_or_default();
        let from = name_of(&packages, from_id);
        for dep in node["deps"].as_array().into_iter().flatten() {
            let to_id = dep["pkg"].as_str().unwrap_or_default();
            let to = name_of(&packages, to_id);
            let kinds: Vec<&str> = dep["dep_kinds"]
                .as_array()
                .into_iter()
                .flatten()
                .map(|k| k["kind"].as_str().unwrap_or("normal"))
                .collect();
            let dev_only = !kinds.is_empty() && kinds.iter().all(|k| *k == "dev");
            if kinds.contains(&"normal") || kinds.is_empty() {
                normal_graph
                    .entry(from_id.to_owned())
                    .or_default()
                    .push(to_id.to_owned());
            }
            if members.contains(from_id) {
                edges.push(Edge {
                    from: from.clone(),
                    to,
                    dev_only,
                });
            }
        }
    }
    let mut problems = forbidden_edges(&edges, &workspace);

    // proxy-core and proxy-policy: their normal dependencies, transitively, from allowlists.
    let closure = |name: &str| -> Vec<String> {
        let Some(start) = members.iter().find(|id| name_of(&packages, id) == name) else {
            return Vec::new();
        };
        let mut seen = BTreeSet::new();
        let mut stack = vec![start.clone()];
        while let Some(id) = stack.pop() {
            for dep in normal_graph.get(&id).into_iter().flatten() {
                if seen.insert(dep.clone()) {
                    stack.push(dep.clone());
                }
            }
        }
        seen.iter().map(|id| name_of(&packages, id)).collect()
    };
    let policy_allowed: Vec<&str> = CORE_ALLOWED.iter().chain(POLICY_ALLOWED).copied().collect();
    problems.extend(unlisted_dependencies(
        "proxy-core",
        &closure("proxy-core"),
        CORE_ALLOWED,
    ));
    problems.extend(unlisted_dependencies(
        "proxy-policy",
        &closure("proxy-policy"),
        &policy_allowed,
    ));
    problems.extend(policy_source_problems(
        &root.join("crates/proxy-policy/src"),
    )?);
    problems.extend(anyhow_problems(root, &edges, &workspace)?);

    // Crate roots: forbid(unsafe_code) and a crate-level doc comment.
    for id in &members {
        let Some(p) = packages.get(id) else { continue };
        for target in p["targets"].as_array().into_iter().flatten() {
            let kinds: Vec<&str> = target["kind"]
                .as_array()
                .into_iter()
                .flatten()
                .filter_map(Value::as_str)
                .collect();
            if !kinds
                .iter()
                .any(|k| matches!(*k, "lib" | "bin" | "proc-macro"))
            {
                continue;
            }
            let Some(path) = target["src_path"].as_str() else {
                continue;
            };
            let text =
                std::fs::read_to_string(path).with_context(|| format!("cannot read {path}"))?;
            problems.extend(check_root(path, &text));
        }
    }

    if problems.is_empty() {
        println!(
            "tidy: {} crates, layer edges, core and policy purity, anyhow and crate roots are fine",
            workspace.len()
        );
        Ok(())
    } else {
        for p in &problems {
            eprintln!("tidy: {p}");
        }
        bail!("{} tidy problem(s)", problems.len())
    }
}

/// Checks one crate root.
pub(crate) fn check_root(path: &str, text: &str) -> Vec<String> {
    let mut problems = Vec::new();
    if !text.lines().any(|l| l.trim() == "#![forbid(unsafe_code)]") {
        problems.push(format!(
            "{path}: add `#![forbid(unsafe_code)]` to the crate root"
        ));
    }
    let first = text
        .lines()
        .map(str::trim)
        .find(|l| !l.is_empty())
        .unwrap_or_default();
    if !first.starts_with("//!") {
        problems.push(format!("{path}: start the crate root with a `//!` doc comment (what the crate is, what it is not, its entry type)"));
    }
    problems
}

#[cfg(test)]
mod tests {
    use super::*;

    fn edge(from: &str, to: &str, dev_only: bool) -> Edge {
        Edge {
            from: from.into(),
            to: to.into(),
            dev_only,
        }
    }

    #[test]
    fn the_workspace_is_tidy() {
        run(&crate::root()).unwrap();
    }

    #[test]
    fn a_forbidden_edge_is_reported() {
        let ws: BTreeSet<String> = ["proxy-core", "proxy-policy", "proxy-config", "proxy-http"]
            .iter()
            .map(|s| (*s).to_owned())
            .collect();
        let edges = vec![
            edge("proxy-policy", "proxy-core", false),
            edge("proxy-http", "proxy-policy", false),
            edge("proxy-core", "proxy-policy", false),
            edge("proxy-policy", "proxy-config", true),
            edge("proxy-policy", "globset", false),
        ];
        let p = forbidden_edges(&edges, &ws);
        assert_eq!(p.len(), 2, "{p:?}");
        assert!(p[0].contains("proxy-http depends on proxy-policy"));
        assert!(p[1].contains("proxy-core depends on proxy-policy"));
    }

    #[test]
    fn unlisted_dependencies_and_forbidden_paths_are_reported() {
        let deps = vec!["globset".to_owned(), "tokio".to_owned()];
        let p = unlisted_dependencies("proxy-policy", &deps, &["globset"]);
        assert_eq!(p.len(), 1, "{p:?}");
        assert!(p[0].contains("on tokio"));
        let p = forbidden_paths(
            "x.rs",
            "use core::net::IpAddr;\n// std::fs in a comment\nuse std::net::TcpStream;\nlet _ = std::process::id();\n",
        );
        assert_eq!(p.len(), 2, "{p:?}");
        assert!(p[0].starts_with("x.rs:3:"));
        assert!(p[1].contains("std::process"));
    }

    #[test]
    fn crate_roots_need_forbid_and_docs() {
        assert!(check_root("a.rs", "//! Docs.\n#![forbid(unsafe_code)]\n").is_empty());
        assert_eq!(check_root("a.rs", "#![forbid(unsafe_code)]\n").len(), 1);
        assert_eq!(check_root("a.rs", "//! Docs.\nfn main() {}\n").len(), 1);
    }
}
