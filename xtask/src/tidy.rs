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
    ("proxy-mitm", &["proxy-core", "proxy-broker"]),
    ("proxy-io", &["proxy-core"]),
    ("proxy-http", &["proxy-core", "proxy-mitm", "proxy-io"]),
    ("proxy-socks", &["proxy-core", "proxy-mitm", "proxy-io"]),
    ("proxy-admin", &["proxy-core", "proxy-audit", "proxy-io"]),
    (
        "proxy-bin",
        &[
            "proxy-core",
            "proxy-policy",
            "proxy-config",
            "proxy-audit",
            "proxy-broker",
            "proxy-mitm",
            "proxy-io",
            "proxy-http",
            "proxy-socks",
            "proxy-admin",
        ],
    ),
    ("proxy-test-support", &["proxy-core", "proxy-io"]),
    ("proxy-tests", &[]),
    ("xtask", &[]),
];

/// Crates that must never be among proxy-policy's (transitive) normal dependencies: runtimes,
/// HTTP stacks, serde format crates and I/O crates.
pub(crate) const POLICY_FORBIDDEN: &[&str] = &[
    "tokio",
    "hyper",
    "hyper-util",
    "h2",
    "mio",
    "socket2",
    "async-std",
    "smol",
    "futures-io",
    "serde_json",
    "toml",
    "serde_yaml",
    "ron",
    "bincode",
    "reqwest",
    "hickory-resolver",
    "hickory-proto",
    "notify",
    "rustls",
    "tracing-subscriber",
    "libc",
    "nix",
    "rustix",
];

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

fn metadata(root: &Path) -> anyhow::Result<Value> {
    let out = Command::new("cargo")
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

    // proxy-policy's normal dependencies, transitively.
    if let Some(policy_id) = members
        .iter()
        .find(|id| name_of(&packages, id) == "proxy-policy")
    {
        let mut seen = BTreeSet::new();
        let mut stack = vec![policy_id.clone()];
        while let Some(id) = stack.pop() {
            for dep in normal_graph.get(&id).into_iter().flatten() {
                if seen.insert(dep.clone()) {
                    stack.push(dep.clone());
                }
            }
        }
        for id in &seen {
            let name = name_of(&packages, id);
            if POLICY_FORBIDDEN.contains(&name.as_str()) {
                problems.push(format!(
                    "proxy-policy must stay pure, but it depends (normally) on {name}: move that code to proxy-bin or a front-end"
                ));
            }
        }
    }

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
            "tidy: {} crates, layer edges, policy purity and crate roots are fine",
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
    fn crate_roots_need_forbid_and_docs() {
        assert!(check_root("a.rs", "//! Docs.\n#![forbid(unsafe_code)]\n").is_empty());
        assert_eq!(check_root("a.rs", "#![forbid(unsafe_code)]\n").len(), 1);
        assert_eq!(check_root("a.rs", "//! Docs.\nfn main() {}\n").len(), 1);
    }
}
