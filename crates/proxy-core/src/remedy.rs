//! The smallest change that would allow a refused request (docs/run.md, "Remedies"), as the
//! gate finds it and `run` and `check` say it. This module only holds and words it; the gate
//! (`proxy-gate`'s `remedy`) decides which one applies.

use std::fmt;
use std::net::IpAddr;

/// What would allow a refused request, or why nothing the user can change would.
///
/// ```
/// use proxy_core::Remedy;
/// let r = Remedy::Allow { pattern: "other.test".into() };
/// assert_eq!(r.command_line(), "--allow other.test");
/// assert_eq!(r.to_string(), "allow with --allow other.test");
/// assert_eq!(r.config_line(), Some(("network.domains", "\"other.test\" = \"allow\"".to_owned())));
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Remedy {
    /// No allow pattern matched: add this one (the host, or an explicit literal for a local
    /// address).
    Allow {
        /// The pattern to allow.
        pattern: String,
    },
    /// A `*.NAME` pattern matched NAME's subdomains but not NAME itself: `**.NAME` admits both.
    Apex {
        /// The pattern that missed (`*.example.com`).
        wildcard: String,
        /// The pattern that would not (`**.example.com`).
        pattern: String,
    },
    /// The name resolved to local addresses: exempt them from local protection
    /// (`treat_as_public`), or use an address itself as an explicit literal.
    TreatAsPublic {
        /// The local addresses the name resolved to.
        addrs: Vec<IpAddr>,
        /// The whole `treat_as_public` list that would allow it: the ranges in force and one
        /// for each address.
        ranges: Vec<String>,
    },
    /// The name resolved to an address of this machine, which `treat_as_public` never
    /// exempts: only turning local protection off allows it.
    LocalBinding {
        /// The address.
        addr: IpAddr,
    },
    /// A deny entry refused it: remove the entry where it was written.
    RemoveDeny {
        /// The deny pattern.
        pattern: String,
        /// Where it was written: `command-line`, `runtime` or a file's path.
        layer: Option<String>,
    },
    /// Limited mode refused the method: full mode allows it.
    FullMode,
    /// It needs HTTPS interception (limited mode over HTTPS, or a host with hooks).
    Mitm,
    /// The proxy is disabled.
    Enable,
    /// Managed requirements decide: the change is not the user's to make.
    Managed {
        /// The requirements file.
        file: String,
    },
}

/// `text` as one shell word: as it is when it holds only safe characters, else in single
/// quotes.
fn shell_word(text: &str) -> String {
    let safe = |c: char| c.is_ascii_alphanumeric() || "-_.:/=,@%+".contains(c);
    if !text.is_empty() && text.chars().all(safe) {
        text.to_owned()
    } else {
        format!("'{}'", text.replace('\'', r"'\''"))
    }
}

/// A TOML string (basic string, escaped).
fn toml_string(text: &str) -> String {
    let mut out = String::from('"');
    for c in text.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            c if c.is_control() => out.push_str(&format!("\\u{:04X}", u32::from(c))),
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

impl Remedy {
    /// Whether it is a change the user can make (every remedy but [`Remedy::Managed`]).
    pub fn is_users(&self) -> bool {
        !matches!(self, Remedy::Managed { .. })
    }

    /// The change on `run`'s (or `check`'s) command line: `--allow other.test`,
    /// `--allow '**.example.com'`, `-c 'treat_as_public=["10.0.0.5/32"]'`, `--mode full`,
    /// ...; for a deny entry, how to remove it; under managed requirements, who decides.
    ///
    /// ```
    /// use proxy_core::Remedy;
    /// let r = Remedy::TreatAsPublic { addrs: vec!["10.0.0.5".parse().unwrap()], ranges: vec!["10.0.0.5/32".into()] };
    /// assert_eq!(r.command_line(), r#"-c 'treat_as_public=["10.0.0.5/32"]'"#);
    /// let r = Remedy::Managed { file: "/etc/netproxy/requirements.toml".into() };
    /// assert_eq!(r.command_line(), "managed by /etc/netproxy/requirements.toml");
    /// ```
    pub fn command_line(&self) -> String {
        match self {
            Remedy::Allow { pattern } | Remedy::Apex { pattern, .. } => {
                format!("--allow {}", shell_word(pattern))
            }
            Remedy::TreatAsPublic { ranges, .. } => {
                let list: Vec<String> = ranges.iter().map(|r| toml_string(r)).collect();
                format!(
                    "-c {}",
                    shell_word(&format!("treat_as_public=[{}]", list.join(",")))
                )
            }
            Remedy::LocalBinding { .. } => "--allow-local-binding".to_owned(),
            Remedy::RemoveDeny { pattern, layer } => match layer.as_deref() {
                Some("command-line") => format!("drop --deny {}", shell_word(pattern)),
                Some("runtime") => {
                    format!("remove the deny entry {pattern} through the admin API")
                }
                Some(file) => format!("remove {} = \"deny\" from {file}", toml_string(pattern)),
                None => format!("remove the deny entry {pattern}"),
            },
            Remedy::FullMode => "--mode full".to_owned(),
            Remedy::Mitm => "--mitm".to_owned(),
            Remedy::Enable => "-c enabled=true".to_owned(),
            Remedy::Managed { file } => format!("managed by {file}"),
        }
    }

    /// The same change in a config file: the table and the line to write in it (`None` for a
    /// removal, or when it is not the user's to make).
    ///
    /// ```
    /// use proxy_core::Remedy;
    /// let r = Remedy::Apex { wildcard: "*.example.com".into(), pattern: "**.example.com".into() };
    /// assert_eq!(r.config_line(), Some(("network.domains", "\"**.example.com\" = \"allow\"".to_owned())));
    /// assert_eq!(Remedy::FullMode.config_line(), Some(("network", "mode = \"full\"".to_owned())));
    /// ```
    pub fn config_line(&self) -> Option<(&'static str, String)> {
        Some(match self {
            Remedy::Allow { pattern } | Remedy::Apex { pattern, .. } => (
                "network.domains",
                format!("{} = \"allow\"", toml_string(pattern)),
            ),
            Remedy::TreatAsPublic { ranges, .. } => {
                let list: Vec<String> = ranges.iter().map(|r| toml_string(r)).collect();
                (
                    "network",
                    format!("treat_as_public = [{}]", list.join(", ")),
                )
            }
            Remedy::LocalBinding { .. } => ("network", "allow_local_binding = true".to_owned()),
            Remedy::FullMode => ("network", "mode = \"full\"".to_owned()),
            Remedy::Mitm => ("network", "mitm = true".to_owned()),
            Remedy::Enable => ("network", "enabled = true".to_owned()),
            Remedy::RemoveDeny { .. } | Remedy::Managed { .. } => return None,
        })
    }
}

/// The sentence of a notice: what to do, and why when the change is not the obvious one
/// (`allow with --allow other.test`).
impl fmt::Display for Remedy {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let line = self.command_line();
        match self {
            Remedy::Allow { .. } => write!(f, "allow with {line}"),
            Remedy::Apex { wildcard, .. } => write!(
                f,
                "{wildcard} matches only the subdomains: allow with {line}"
            ),
            Remedy::TreatAsPublic { addrs, .. } => {
                let shown: Vec<String> = addrs.iter().map(ToString::to_string).collect();
                let first = shown.first().cloned().unwrap_or_default();
                write!(
                    f,
                    "it resolved to {}, a local address: treat it as public with {line}, or use the address itself (--allow {})",
                    shown.join(" and "),
                    shell_word(&first)
                )
            }
            Remedy::LocalBinding { addr } => write!(
                f,
                "it resolved to {addr}, an address of this machine, which treat_as_public does not exempt: use the address itself (--allow {}), or turn local protection off with {line}",
                shell_word(&addr.to_string())
            ),
            Remedy::RemoveDeny { .. } => write!(f, "a deny entry refuses it: {line}"),
            Remedy::FullMode => write!(
                f,
                "limited mode allows GET, HEAD and OPTIONS only: allow with {line}"
            ),
            Remedy::Mitm => write!(f, "it needs HTTPS interception: allow with {line}"),
            Remedy::Enable => write!(f, "the proxy is disabled: enable it with {line}"),
            Remedy::Managed { file } => write!(
                f,
                "not yours to change: the requirements file {file} decides"
            ),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_remedy_on_the_command_line_and_in_a_config_file() {
        let wild = Remedy::Apex {
            wildcard: "*.example.com".into(),
            pattern: "**.example.com".into(),
        };
        assert_eq!(wild.command_line(), "--allow '**.example.com'");
        assert_eq!(
            wild.to_string(),
            "*.example.com matches only the subdomains: allow with --allow '**.example.com'"
        );
        let local = Remedy::TreatAsPublic {
            addrs: vec!["127.0.0.1".parse().unwrap()],
            ranges: vec!["127.0.0.2/32".into(), "127.0.0.1/32".into()],
        };
        assert_eq!(
            local.command_line(),
            r#"-c 'treat_as_public=["127.0.0.2/32","127.0.0.1/32"]'"#
        );
        assert_eq!(
            local.config_line(),
            Some((
                "network",
                r#"treat_as_public = ["127.0.0.2/32", "127.0.0.1/32"]"#.to_owned()
            ))
        );
        assert!(
            local
                .to_string()
                .ends_with("or use the address itself (--allow 127.0.0.1)")
        );
        let deny = |layer: Option<&str>| Remedy::RemoveDeny {
            pattern: "evil.test".into(),
            layer: layer.map(str::to_owned),
        };
        assert_eq!(
            deny(Some("command-line")).command_line(),
            "drop --deny evil.test"
        );
        assert_eq!(
            deny(Some("/home/u/cfg.toml")).command_line(),
            "remove \"evil.test\" = \"deny\" from /home/u/cfg.toml"
        );
        assert_eq!(deny(None).config_line(), None);
        assert_eq!(Remedy::FullMode.command_line(), "--mode full");
        assert_eq!(Remedy::Mitm.config_line().unwrap().1, "mitm = true");
        let managed = Remedy::Managed {
            file: "/etc/netproxy/requirements.toml".into(),
        };
        assert!(!managed.is_users());
        assert_eq!(managed.config_line(), None);
        assert_eq!(
            managed.to_string(),
            "not yours to change: the requirements file /etc/netproxy/requirements.toml decides"
        );
        // A pattern that a shell would split or expand is quoted.
        assert_eq!(
            Remedy::Allow {
                pattern: "it's".into()
            }
            .command_line(),
            r"--allow 'it'\''s'"
        );
    }
}
