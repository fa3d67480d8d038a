//! The smallest change that would allow a refused request (docs/run.md, "Remedies"): one pure
//! function from the refusal (the request, the decision, the addresses its name resolved to)
//! and the policy in force to a [`Remedy`]. The gate puts it in the refusal's audit event (for
//! `run`'s notices and summary) and in its explanation (for `netproxy check`).

use std::net::IpAddr;

use proxy_core::{Decision, Host, Mode, Reason, RequestMeta, Source, Target};
use proxy_policy::{OwnAddrs, Pattern};

use crate::gate::Snapshot;

/// What managed requirements leave to the user: a change they forbid is not offered as a
/// remedy; the refusal says who decides instead ([`Remedy::Managed`]). Built by the embedder
/// from its requirements (netproxy: `requirements.toml`, docs/config.md).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Managed {
    /// The requirements files, by the label their patterns carry ([`proxy_core::Rule::origin`]):
    /// a deny entry from one of them is theirs.
    pub files: Vec<String>,
    /// When the requirements limit new allow entries: the file, and the managed patterns a
    /// user entry must fall under (`None`: no new user entry is in force).
    pub allowlist: Option<(String, Option<Vec<Pattern>>)>,
    /// The file that keeps limited mode.
    pub mode: Option<String>,
    /// The file that forbids `allow_local_binding` (and so pins `treat_as_public` to its own
    /// ranges).
    pub local: Option<String>,
    /// The file that keeps the proxy disabled.
    pub enabled: Option<String>,
}

impl Managed {
    /// The requirements file that forbids a user allow entry `pattern`, if any.
    fn forbids_allow(&self, pattern: &str) -> Option<&str> {
        let (file, covering) = self.allowlist.as_ref()?;
        let Some(covering) = covering else {
            return Some(file);
        };
        let allowed = Pattern::parse(pattern).is_ok_and(|p| covering.iter().any(|m| m.covers(&p)));
        (!allowed).then_some(file.as_str())
    }
}

pub use proxy_core::Remedy;

/// The smallest change to the policy in `snap` that would allow `meta`, which `decision`
/// refused: the pattern to allow (the `**.` form when a `*.` pattern missed the apex), the
/// addresses to treat as public when the name resolved to local ones (`resolved`, the
/// addresses checked, with `own`, the machine's own), the deny entry to remove, full mode, or
/// interception. `None` for an allowed request, or when no change of the user's would allow it
/// (an invalid host, a decider's refusal, a request inside a tunnel that names another host).
/// A change the managed requirements forbid is [`Remedy::Managed`].
///
/// ```
/// use proxy_core::{Decision, Protocol, Reason, RequestMeta, Target};
/// use proxy_gate::{Remedy, Settings, Snapshot, remedy};
/// use proxy_policy::{OwnAddrs, Policy};
/// let mut b = Policy::builder();
/// b.allow("*.example.com", None)?;
/// let snap = Snapshot::new(b.build()?, Settings::default());
/// let meta = |host: &str| RequestMeta::new(Protocol::HttpsConnect, Target::parse_authority(host, 443).unwrap());
/// let refused = Decision::deny(Reason::NotAllowed);
/// assert_eq!(
///     remedy(&meta("other.test"), &refused, None, &snap, OwnAddrs::none()),
///     Some(Remedy::Allow { pattern: "other.test".into() })
/// );
/// assert_eq!(
///     remedy(&meta("example.com"), &refused, None, &snap, OwnAddrs::none()),
///     Some(Remedy::Apex { wildcard: "*.example.com".into(), pattern: "**.example.com".into() })
/// );
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
pub fn remedy(
    meta: &RequestMeta,
    decision: &Decision,
    resolved: Option<&[IpAddr]>,
    snap: &Snapshot,
    own: &OwnAddrs,
) -> Option<Remedy> {
    if decision.is_allowed() || decision.source == Source::Decider {
        return None;
    }
    let managed = &snap.managed;
    let policy = &snap.policy;
    let under = |file: Option<&str>, remedy: Remedy| match file {
        Some(file) => Remedy::Managed {
            file: file.to_owned(),
        },
        None => remedy,
    };
    let allow = |pattern: String| {
        let file = managed.forbids_allow(&pattern);
        under(file, Remedy::Allow { pattern })
    };
    let Target::Net { host, port } = &meta.target else {
        return None;
    };
    match decision.reason? {
        Reason::Denied => {
            let rule = decision.rule.as_ref()?;
            let layer = rule.origin.as_deref();
            let file = layer.filter(|l| managed.files.iter().any(|f| f == l));
            Some(under(
                file,
                Remedy::RemoveDeny {
                    pattern: rule.pattern.to_string(),
                    layer: layer.map(str::to_owned),
                },
            ))
        }
        // A rule that matched and still `not_allowed`: a request inside a tunnel that names
        // another host than the tunnel's; no allow entry changes that.
        Reason::NotAllowed if decision.rule.is_some() => None,
        Reason::NotAllowed => match policy.apex_missed_by(host, *port) {
            Some(wildcard) => {
                let pattern = format!("*{wildcard}");
                let file = managed.forbids_allow(&pattern);
                Some(under(
                    file,
                    Remedy::Apex {
                        wildcard: wildcard.to_owned(),
                        pattern,
                    },
                ))
            }
            None => Some(allow(literal_pattern(host))),
        },
        Reason::NotAllowedLocal => local(host, resolved, snap, own, allow),
        Reason::MethodNotAllowed if policy.mode() == Mode::Limited => {
            Some(under(managed.mode.as_deref(), Remedy::FullMode))
        }
        Reason::MitmRequired if !policy.interception() => Some(Remedy::Mitm),
        Reason::ProxyDisabled => Some(under(managed.enabled.as_deref(), Remedy::Enable)),
        _ => None,
    }
}

/// The remedy of a `not_allowed_local` refusal: a local literal needs an explicit allow entry
/// of its own; a name that resolved to local addresses needs them treated as public (or, for
/// an address of this machine, local protection off).
fn local(
    host: &Host,
    resolved: Option<&[IpAddr]>,
    snap: &Snapshot,
    own: &OwnAddrs,
    allow: impl Fn(String) -> Remedy,
) -> Option<Remedy> {
    let policy = &snap.policy;
    let managed = &snap.managed;
    let looked_up = host.is_name() && !is_localhost(host);
    if !looked_up {
        return Some(allow(literal_pattern(host)));
    }
    let locals: Vec<IpAddr> = resolved?
        .iter()
        .copied()
        .filter(|ip| policy.local_reason(*ip, own).is_some())
        .collect();
    if locals.is_empty() {
        return None;
    }
    if let Some(file) = &managed.local {
        return Some(Remedy::Managed { file: file.clone() });
    }
    if let Some(addr) = locals.iter().copied().find(|ip| own.contains(*ip)) {
        return Some(Remedy::LocalBinding { addr });
    }
    let mut ranges: Vec<String> = policy
        .treat_as_public()
        .iter()
        .map(ToString::to_string)
        .collect();
    for ip in &locals {
        let net = ipnet::IpNet::from(ip.to_canonical()).to_string();
        if !ranges.contains(&net) {
            ranges.push(net);
        }
    }
    Some(Remedy::TreatAsPublic {
        addrs: locals,
        ranges,
    })
}

/// A host as an allow pattern that admits exactly it (an IPv6 literal bare, without a port
/// scope).
fn literal_pattern(host: &Host) -> String {
    host.to_string()
}

fn is_localhost(host: &Host) -> bool {
    host.as_name()
        .is_some_and(|n| n == "localhost" || n.ends_with(".localhost"))
}

#[cfg(test)]
mod tests {
    use proxy_core::{Protocol, Rule};
    use proxy_policy::Policy;

    use super::*;
    use crate::Settings;

    fn snap(build: impl FnOnce(&mut proxy_policy::PolicyBuilder), managed: Managed) -> Snapshot {
        let mut b = Policy::builder();
        build(&mut b);
        Snapshot::new(b.build().unwrap(), Settings::default()).with_managed(managed)
    }

    fn meta(authority: &str) -> RequestMeta {
        RequestMeta::new(
            Protocol::HttpsConnect,
            Target::parse_authority(authority, 443).unwrap(),
        )
    }

    fn ips(list: &[&str]) -> Vec<IpAddr> {
        list.iter().map(|s| s.parse().unwrap()).collect()
    }

    #[test]
    fn the_remedy_of_each_refusal() {
        let s = snap(
            |b| {
                b.allow("*.example.com", None).unwrap();
                b.allow("api.test", Some("command-line")).unwrap();
                b.deny("evil.test", Some("/home/u/cfg.toml")).unwrap();
                b.treat_as_public("127.0.0.2/32".parse().unwrap());
            },
            Managed::default(),
        );
        let none = OwnAddrs::none();
        let r = |authority: &str, d: Decision, resolved: Option<&[IpAddr]>| {
            remedy(&meta(authority), &d, resolved, &s, none)
        };
        assert_eq!(r("api.test", Decision::allow(), None), None);
        assert_eq!(
            r("other.test", Decision::deny(Reason::NotAllowed), None),
            Some(Remedy::Allow {
                pattern: "other.test".into()
            })
        );
        assert_eq!(
            r("example.com", Decision::deny(Reason::NotAllowed), None),
            Some(Remedy::Apex {
                wildcard: "*.example.com".into(),
                pattern: "**.example.com".into()
            })
        );
        // A local literal: an explicit allow entry of its own.
        assert_eq!(
            r("10.0.0.5:80", Decision::deny(Reason::NotAllowedLocal), None),
            Some(Remedy::Allow {
                pattern: "10.0.0.5".into()
            })
        );
        assert_eq!(
            r("[::1]:8080", Decision::deny(Reason::NotAllowedLocal), None),
            Some(Remedy::Allow {
                pattern: "::1".into()
            })
        );
        // A name that resolved to local addresses: those addresses treated as public, over
        // the ranges in force.
        let resolved = ips(&["127.0.0.2", "127.0.0.1", "::ffff:10.0.0.5"]);
        assert_eq!(
            r(
                "local.test",
                Decision::deny(Reason::NotAllowedLocal),
                Some(&resolved)
            ),
            Some(Remedy::TreatAsPublic {
                addrs: ips(&["127.0.0.1", "::ffff:10.0.0.5"]),
                ranges: vec![
                    "127.0.0.2/32".into(),
                    "127.0.0.1/32".into(),
                    "10.0.0.5/32".into()
                ],
            })
        );
        // Not resolved (check --no-resolve): nothing to say.
        assert_eq!(
            r("local.test", Decision::deny(Reason::NotAllowedLocal), None),
            None
        );
        // An address of this machine: only local binding.
        let own = OwnAddrs::new(ips(&["192.0.2.10"]));
        assert_eq!(
            remedy(
                &meta("self.test"),
                &Decision::deny(Reason::NotAllowedLocal),
                Some(&ips(&["192.0.2.10"])),
                &s,
                &own
            ),
            Some(Remedy::LocalBinding {
                addr: "192.0.2.10".parse().unwrap()
            })
        );
        // A deny entry: removed where it was written.
        let denied = Decision::deny(Reason::Denied)
            .with_rule(Rule::new("evil.test", Some("/home/u/cfg.toml".into())));
        assert_eq!(
            r("evil.test", denied, None),
            Some(Remedy::RemoveDeny {
                pattern: "evil.test".into(),
                layer: Some("/home/u/cfg.toml".into())
            })
        );
        // No user change for these.
        for d in [
            Decision::deny(Reason::InvalidHost),
            Decision::deny(Reason::SniMismatch),
            Decision::deny(Reason::CredentialNotBound),
            Decision::deny(Reason::PolicyDenied),
            // Inside a tunnel, another host than the tunnel's: a rule matched.
            Decision::deny(Reason::NotAllowed).with_rule(Rule::new("api.test", None)),
        ] {
            assert_eq!(r("api.test", d.clone(), None), None, "{d:?}");
        }
        // Full mode: no method refusal, no interception remedy.
        assert_eq!(
            r("api.test", Decision::deny(Reason::MethodNotAllowed), None),
            None
        );
        let limited = snap(
            |b| {
                b.mode(Mode::Limited);
            },
            Managed::default(),
        );
        let r = |d: Decision| remedy(&meta("api.test"), &d, None, &limited, none);
        assert_eq!(
            r(Decision::deny(Reason::MethodNotAllowed)),
            Some(Remedy::FullMode)
        );
        assert_eq!(r(Decision::deny(Reason::MitmRequired)), Some(Remedy::Mitm));
        assert_eq!(
            r(Decision::deny(Reason::ProxyDisabled)),
            Some(Remedy::Enable)
        );
    }

    #[test]
    fn what_managed_requirements_decide_is_not_the_users_to_change() {
        let file = "/etc/netproxy/requirements.toml".to_owned();
        let managed = Managed {
            files: vec![file.clone()],
            allowlist: Some((
                file.clone(),
                Some(vec![Pattern::parse("**.corp.test").unwrap()]),
            )),
            mode: Some(file.clone()),
            local: Some(file.clone()),
            enabled: None,
        };
        let s = snap(
            |b| {
                b.mode(Mode::Limited);
                b.deny("evil.test", Some(&file)).unwrap();
            },
            managed,
        );
        let none = OwnAddrs::none();
        let theirs = Some(Remedy::Managed { file: file.clone() });
        let r = |authority: &str, d: Decision, resolved: Option<&[IpAddr]>| {
            remedy(&meta(authority), &d, resolved, &s, none)
        };
        assert_eq!(
            r("other.test", Decision::deny(Reason::NotAllowed), None),
            theirs
        );
        // A pattern the managed list covers is the user's to add.
        assert_eq!(
            r("api.corp.test", Decision::deny(Reason::NotAllowed), None),
            Some(Remedy::Allow {
                pattern: "api.corp.test".into()
            })
        );
        let denied = Decision::deny(Reason::Denied)
            .with_rule(Rule::new("evil.test", Some(file.as_str().into())));
        assert_eq!(r("evil.test", denied, None), theirs);
        assert_eq!(
            r(
                "api.corp.test",
                Decision::deny(Reason::MethodNotAllowed),
                None
            ),
            theirs
        );
        assert_eq!(
            r(
                "db.corp.test",
                Decision::deny(Reason::NotAllowedLocal),
                Some(&ips(&["10.0.0.5"]))
            ),
            theirs
        );
        // Only managed allow entries in force: no user entry is.
        let only = snap(
            |_| {},
            Managed {
                allowlist: Some((file.clone(), None)),
                ..Managed::default()
            },
        );
        assert_eq!(
            remedy(
                &meta("api.corp.test"),
                &Decision::deny(Reason::NotAllowed),
                None,
                &only,
                none
            ),
            theirs
        );
    }
}
