//! The connections the gate admitted and that stay open, re-judged when the policy narrows.
//!
//! A front-end asks [`Gate::hold`](proxy_core::Gate::hold) for a lease when an admitted
//! connection outlives its admission (a tunnel, a kept-alive upstream connection, a UDP
//! association's verdict, an `x-unix-socket` exchange). [`Leases`] keeps what it needs to judge
//! it again: the request, the addresses the gate checked, and whether a decider admitted it (for
//! a unix socket exchange, the allowed entry that admitted it). After every change of policy
//! the service calls [`Leases::rejudge`]: each connection is judged with the pure policy and the
//! addresses already connected (no new lookup), and the ones the new policy refuses are revoked
//! (their front-ends close them) and recorded with `revoked: true`.

use std::collections::HashMap;
use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use proxy_core::{
    Decision, HeldLease, Lease, LeaseHolder, Protocol, Reason, RequestMeta, Revoker, Source, Target,
};
use proxy_policy::{Evaluation, Intercept, OwnAddrs, Policy};

/// What a lease keeps of its connection (in the lease's own allocation): enough to judge it
/// again.
#[derive(Debug)]
struct Held {
    meta: RequestMeta,
    /// The target's addresses the gate checked: the ones the connection went to, or, through
    /// an upstream proxy, the ones it checked before chaining.
    addrs: Vec<IpAddr>,
    /// Admitted by the decider after an allowlist miss: a later allowlist miss keeps it.
    by_decider: bool,
    /// Intercepted whatever its first bytes (its requests judged inside TLS). An opaque
    /// connection the new policy would always intercept (limited mode with interception on, a
    /// host given hooks) is refused: it carries any method. A tunnel intercepted only if TLS
    /// (a credential destination) may have been relayed opaque: it is held as not intercepted.
    /// A policy that would intercept a tunnel only if TLS keeps an opaque one: it was judged
    /// already, and nothing but the child's dummy credentials can pass through it.
    intercepted: bool,
}

/// What a lease on a unix socket exchange (`x-unix-socket`) keeps: the request (for the audit)
/// and the request as judged again, its target the allowed entry that admitted the socket. The
/// socket is connected already; only whether that entry is still allowed is judged.
#[derive(Debug)]
struct HeldUnix {
    meta: RequestMeta,
    judged: RequestMeta,
    /// Admitted because every socket was allowed (no entry was checked, symlinks followed):
    /// closed as soon as they no longer all are, whatever its path names now.
    by_all: bool,
}

/// The open connections' leases: a revoker each, by lease id (the lease's data lives with the
/// lease, so an idle tunnel costs this map only a small entry).
#[derive(Debug, Default)]
pub(crate) struct Leases {
    next: AtomicU64,
    held: Mutex<HashMap<u64, Revoker>>,
}

impl LeaseHolder for Leases {
    fn release(&self, id: u64) {
        self.lock().remove(&id);
    }
}

impl Leases {
    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<u64, Revoker>> {
        self.held
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// A lease for a connection admitted as `meta` by `decision`, connected to `addrs`
    /// (`intercepted`: its requests are judged inside TLS, whatever its first bytes).
    pub(crate) fn hold(
        self: &Arc<Self>,
        meta: &RequestMeta,
        addrs: Vec<IpAddr>,
        decision: &Decision,
        intercepted: bool,
    ) -> Lease {
        let id = self.next.fetch_add(1, Ordering::Relaxed);
        let holder: Arc<dyn LeaseHolder> = self.clone();
        let held = Held {
            meta: meta.clone(),
            addrs,
            by_decider: decision.source == Source::Decider,
            intercepted,
        };
        let (lease, revoker) = Lease::with_data(id, Arc::downgrade(&holder), held);
        self.lock().insert(id, revoker);
        lease
    }

    /// A lease for a unix socket exchange admitted as `meta` by `decision`: judged again as the
    /// allowed entry the decision names (an entry is an absolute path). One admitted because
    /// every socket was allowed is closed when they no longer all are: its path was never
    /// checked against an entry, and may lead elsewhere than the entry it names.
    pub(crate) fn hold_unix(self: &Arc<Self>, meta: &RequestMeta, decision: &Decision) -> Lease {
        let id = self.next.fetch_add(1, Ordering::Relaxed);
        let holder: Arc<dyn LeaseHolder> = self.clone();
        let mut judged = RequestMeta {
            // One exchange whose request was sent: judged as a reused connection is, by its
            // target (limited mode does not cut a request it already let through).
            method: Some("GET".to_owned()),
            method_override: None,
            ..meta.clone()
        };
        let entry = decision
            .rule
            .as_ref()
            .map(|rule| Path::new(&*rule.pattern))
            .filter(|p| p.is_absolute());
        if let Some(entry) = entry {
            judged.target = Target::Unix(PathBuf::from(entry));
        }
        let held = HeldUnix {
            meta: meta.clone(),
            judged,
            by_all: entry.is_none(),
        };
        let (lease, revoker) = Lease::with_data(id, Arc::downgrade(&holder), held);
        self.lock().insert(id, revoker);
        lease
    }

    /// Judges one lease under `policy` and revokes it when refused (the policy in force when
    /// the lease is taken may be newer than the one that admitted the connection); the refusal
    /// is returned for the audit.
    pub(crate) fn judge(&self, lease: &Lease, policy: &Policy, own: &OwnAddrs) -> Option<Decision> {
        let held = lease.held()?;
        let (_, d) = judge_held(policy, own, &held)?;
        if !held.revoke() {
            return None;
        }
        self.lock().remove(&held.id());
        Some(d)
    }

    /// How many connections are held.
    pub(crate) fn len(&self) -> usize {
        self.lock().len()
    }

    /// Judges every held connection again under `policy` (with the machine's own addresses
    /// `own`), revokes those it refuses, and returns each revoked connection's request with the
    /// refusal (for the audit).
    pub(crate) fn rejudge(&self, policy: &Policy, own: &OwnAddrs) -> Vec<(RequestMeta, Decision)> {
        // Taken under the lock, judged and dropped outside it: a lease whose connection lets go
        // meanwhile is released when the last of these goes, which takes the lock.
        let live: Vec<_> = {
            let mut held = self.lock();
            held.retain(|_, r| r.is_held());
            held.values().filter_map(Revoker::upgrade).collect()
        };
        let mut revoked = Vec::new();
        let mut gone = Vec::new();
        for lease in &live {
            if let Some((meta, d)) = judge_held(policy, own, lease)
                && lease.revoke()
            {
                revoked.push((meta.clone(), d));
                gone.push(lease.id());
            }
        }
        // A revoked lease is judged no more.
        {
            let mut held = self.lock();
            for id in gone {
                held.remove(&id);
            }
        }
        drop(live);
        revoked
    }
}

/// The new policy's refusal of a held connection with its request, or `None` while it still
/// allows it (or the lease holds nothing to judge).
fn judge_held<'a>(
    policy: &Policy,
    own: &OwnAddrs,
    lease: &'a HeldLease,
) -> Option<(&'a RequestMeta, Decision)> {
    if let Some(h) = lease.data::<Held>() {
        return refusal(policy, own, h).map(|d| (&h.meta, d));
    }
    let u = lease.data::<HeldUnix>()?;
    match policy.evaluate_with(&u.judged, own) {
        Evaluation::Deny(d) => Some((&u.meta, d)),
        Evaluation::Allow { .. } | Evaluation::AllowIfAddressesPass { .. }
            if u.by_all && !policy.allows_all_unix_sockets() =>
        {
            Some((
                &u.meta,
                Decision::deny(Reason::NotAllowed).with_detail(
                    "admitted while every unix socket was allowed; they no longer are",
                ),
            ))
        }
        Evaluation::Allow { .. } | Evaluation::AllowIfAddressesPass { .. } => None,
    }
}

/// The new policy's refusal of a held connection, or `None` while it still allows it.
fn refusal(policy: &Policy, own: &OwnAddrs, h: &Held) -> Option<Decision> {
    // A kept-alive upstream connection carries any method the mode allows: judge the target.
    let reusable;
    let meta = if h.meta.protocol == Protocol::Http && !h.meta.upgrade {
        reusable = RequestMeta {
            method: Some("GET".to_owned()),
            method_override: None,
            ..h.meta.clone()
        };
        &reusable
    } else {
        &h.meta
    };
    let evaluation = match policy.evaluate_with(meta, own) {
        // A decider's allow outlives allowlist misses, not what follows the allowlist.
        Evaluation::Deny(d) if h.by_decider && d.reason == Some(Reason::NotAllowed) => {
            as_decided(policy, meta)
        }
        other => other,
    };
    match evaluation {
        // Allowed only if intercepted (limited mode, hooks): an opaque tunnel carries any
        // method. (`IfTls` keeps it: see `Held::intercepted`.)
        Evaluation::Allow {
            intercept: Intercept::Always,
            decision,
        }
        | Evaluation::AllowIfAddressesPass {
            intercept: Intercept::Always,
            decision,
        } if !h.intercepted => {
            let d = Decision::deny(Reason::MitmRequired).with_detail(
                "an opaque tunnel, and the mode in force now judges requests inside TLS",
            );
            Some(match decision.rule {
                Some(rule) => d.with_rule(rule),
                None => d,
            })
        }
        Evaluation::Allow { .. } => None,
        Evaluation::AllowIfAddressesPass { decision, .. } => {
            if h.addrs.is_empty() {
                return None;
            }
            let Target::Net { host, port } = &meta.target else {
                return None;
            };
            let d = policy.check_addresses(host, decision, *port, &h.addrs, own);
            (!d.is_allowed()).then_some(d)
        }
        Evaluation::Deny(d) => Some(d),
    }
}

/// What the gate makes of a decider's allow after an allowlist miss (gate.rs, `judge`): the
/// guards that follow the allowlist (hooks, limited mode), then, for a name, the check of its
/// addresses (deny entries, local protection, hooked addresses).
fn as_decided(policy: &Policy, meta: &RequestMeta) -> Evaluation {
    // Managed requirements now fix the allowlist: its misses are not the decider's to allow.
    if let Some(by) = policy.allowlist_fixed_by() {
        return Evaluation::Deny(Decision::deny(Reason::NotAllowed).with_detail(format!(
            "not in the allowlist fixed by the managed requirements {by}"
        )));
    }
    let decision = Decision::allow().with_source(Source::Decider);
    match policy.guard(meta) {
        Err(refused) => Evaluation::Deny(refused),
        Ok(intercept) => match &meta.target {
            Target::Net { host, .. } if host.is_name() => Evaluation::AllowIfAddressesPass {
                decision,
                intercept,
            },
            _ => Evaluation::Allow {
                decision,
                intercept,
            },
        },
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use proxy_core::{Target, Verdict};

    fn policy(allow: &[&str], deny: &[&str]) -> Policy {
        let mut b = Policy::builder();
        for p in allow {
            b.allow(p, None).unwrap();
        }
        for p in deny {
            b.deny(p, None).unwrap();
        }
        b.treat_as_public("127.0.0.2/32".parse().unwrap());
        b.build().unwrap()
    }

    fn meta(authority: &str) -> RequestMeta {
        RequestMeta::new(
            Protocol::HttpsConnect,
            Target::parse_authority(authority, 443).unwrap(),
        )
        .with_method("CONNECT")
    }

    fn decider_allow() -> Decision {
        let mut d = Decision::allow().with_source(Source::Decider);
        d.policy_override = true;
        d
    }

    #[test]
    fn what_the_decider_allowed_stays_allowed_across_unrelated_changes() {
        let leases = Arc::new(Leases::default());
        let ip = vec!["127.0.0.2".parse().unwrap()];
        let by_decider = leases.hold(&meta("asked.test:443"), ip.clone(), &decider_allow(), false);
        let by_list = leases.hold(&meta("listed.test:443"), ip, &Decision::allow(), false);
        assert_eq!(leases.len(), 2);
        // The allowlist no longer names listed.test: that one goes, the decider's stays.
        let revoked = leases.rejudge(&policy(&["other.test"], &[]), OwnAddrs::none());
        assert_eq!(revoked.len(), 1);
        assert_eq!(revoked[0].0.target.to_string(), "listed.test:443");
        assert_eq!(revoked[0].1.reason, Some(Reason::NotAllowed));
        assert!(by_list.is_revoked() && !by_decider.is_revoked());
        assert_eq!(leases.len(), 1);
        // A deny entry wins over the decider too.
        let revoked = leases.rejudge(&policy(&[], &["asked.test"]), OwnAddrs::none());
        assert_eq!(revoked.len(), 1);
        assert_eq!(revoked[0].1.reason, Some(Reason::Denied));
        assert_eq!(revoked[0].1.verdict, Verdict::Deny);
        assert!(by_decider.is_revoked());
    }

    /// A decider's allow outlives allowlist misses only: what follows the allowlist (an IP deny
    /// entry for its address, limited mode, a hook on its address) closes it as it would refuse
    /// a new one.
    #[test]
    fn what_follows_the_allowlist_holds_for_the_deciders_connections() {
        let ip: Vec<IpAddr> = vec!["127.0.0.2".parse().unwrap()];
        let build = |edit: &dyn Fn(&mut proxy_policy::PolicyBuilder)| {
            let mut b = Policy::builder();
            b.allow("other.test", None).unwrap();
            b.treat_as_public("127.0.0.2/32".parse().unwrap());
            edit(&mut b);
            b.build().unwrap()
        };
        let limited = build(&|b| {
            b.mode(proxy_core::Mode::Limited).interception(true);
        });
        let denied = build(&|b| {
            b.deny("127.0.0.2", None).unwrap();
        });
        let hooked = build(&|b| {
            b.interception(true);
            let hook = proxy_policy::Hook::new("h", "127.0.0.2")
                .unwrap()
                .methods(["GET"])
                .unwrap()
                .path_prefixes(["/"])
                .unwrap();
            b.hook(hook).unwrap();
        });
        let fixed = build(&|b| {
            b.allowlist_fixed_by(Some("/etc/netproxy/requirements.toml".to_owned()));
        });
        for (policy, reason) in [
            (&limited, Reason::MitmRequired),
            (&denied, Reason::Denied),
            (&hooked, Reason::MitmHookDenied),
            (&fixed, Reason::NotAllowed),
        ] {
            let leases = Arc::new(Leases::default());
            let lease = leases.hold(&meta("asked.test:443"), ip.clone(), &decider_allow(), false);
            assert!(leases.rejudge(&build(&|_| {}), OwnAddrs::none()).is_empty());
            let revoked = leases.rejudge(policy, OwnAddrs::none());
            assert_eq!(revoked.len(), 1, "{reason:?}");
            assert_eq!(revoked[0].1.reason, Some(reason));
            assert!(lease.is_revoked());
        }
        // What a new admission would still allow stays: a `localhost` connection under local
        // binding, an intercepted one under limited mode (where the opaque `localhost` one goes).
        let leases = Arc::new(Leases::default());
        let intercepted = leases.hold(&meta("asked.test:443"), ip.clone(), &decider_allow(), true);
        let loopback = vec!["127.0.0.1".parse().unwrap(), "::1".parse().unwrap()];
        let local = leases.hold(&meta("localhost:443"), loopback, &decider_allow(), false);
        let local_binding = |mode| {
            let mut b = Policy::builder();
            b.allow("other.test", None).unwrap();
            b.treat_as_public("127.0.0.2/32".parse().unwrap());
            b.allow_local_binding(true).mode(mode).interception(true);
            b.build().unwrap()
        };
        let full = local_binding(proxy_core::Mode::Full);
        assert!(leases.rejudge(&full, OwnAddrs::none()).is_empty());
        let revoked = leases.rejudge(&local_binding(proxy_core::Mode::Limited), OwnAddrs::none());
        assert_eq!(revoked.len(), 1);
        assert_eq!(revoked[0].0.target.to_string(), "localhost:443");
        assert_eq!(revoked[0].1.reason, Some(Reason::MitmRequired));
        assert!(!intercepted.is_revoked() && local.is_revoked());
    }

    #[test]
    fn addresses_are_judged_as_connected_and_closed_leases_are_forgotten() {
        let leases = Arc::new(Leases::default());
        let lease = leases.hold(
            &meta("public.test:443"),
            vec!["127.0.0.2".parse().unwrap()],
            &Decision::allow(),
            false,
        );
        assert!(
            leases
                .rejudge(&policy(&["public.test"], &[]), OwnAddrs::none())
                .is_empty()
        );
        // Without treat_as_public, the address it connected to is local.
        let mut b = Policy::builder();
        b.allow("public.test", None).unwrap();
        let revoked = leases.rejudge(&b.build().unwrap(), OwnAddrs::none());
        assert_eq!(revoked[0].1.reason, Some(Reason::NotAllowedLocal));
        assert!(lease.is_revoked());
        drop(lease);
        assert_eq!(leases.len(), 0);
        // A lease dropped before any change is forgotten at once.
        let other = leases.hold(
            &meta("public.test:443"),
            Vec::new(),
            &Decision::allow(),
            false,
        );
        assert_eq!(leases.len(), 1);
        drop(other);
        assert_eq!(leases.len(), 0);
    }

    /// A tunnel opened in full mode is opaque: when the mode becomes limited with interception
    /// on, it is closed (`mitm_required`), while an intercepted one stays.
    #[test]
    fn an_opaque_tunnel_goes_when_limited_mode_would_intercept_it() {
        let leases = Arc::new(Leases::default());
        let ip = vec!["127.0.0.2".parse().unwrap()];
        let opaque = leases.hold(&meta("api.test:443"), ip.clone(), &Decision::allow(), false);
        let intercepted = leases.hold(&meta("api.test:443"), ip, &Decision::allow(), true);
        let mut b = Policy::builder();
        b.allow("api.test", None).unwrap();
        b.treat_as_public("127.0.0.2/32".parse().unwrap());
        b.mode(proxy_core::Mode::Limited);
        b.interception(true);
        let revoked = leases.rejudge(&b.build().unwrap(), OwnAddrs::none());
        assert_eq!(revoked.len(), 1);
        assert_eq!(revoked[0].1.reason, Some(Reason::MitmRequired));
        assert!(opaque.is_revoked() && !intercepted.is_revoked());
    }

    /// A reload that makes a host a credential destination keeps the opaque tunnels open to
    /// it (they were judged already); one that makes the mode limited closes the tunnels
    /// that were to be intercepted only if TLS, which may have been relayed opaque.
    #[test]
    fn a_credential_destination_keeps_opaque_tunnels_and_limited_mode_closes_them() {
        let leases = Arc::new(Leases::default());
        let ip = vec!["127.0.0.2".parse().unwrap()];
        let opaque = leases.hold(&meta("api.test:443"), ip.clone(), &Decision::allow(), false);
        let credential = |mode| {
            let mut b = Policy::builder();
            b.allow("api.test", None).unwrap();
            b.treat_as_public("127.0.0.2/32".parse().unwrap());
            b.interception(true).mode(mode);
            b.credential_destination("api.test:443").unwrap();
            b.build().unwrap()
        };
        let full = credential(proxy_core::Mode::Full);
        assert!(matches!(
            full.evaluate(&meta("api.test:443")),
            Evaluation::AllowIfAddressesPass {
                intercept: Intercept::IfTls,
                ..
            }
        ));
        assert!(leases.rejudge(&full, OwnAddrs::none()).is_empty());
        assert!(!opaque.is_revoked());
        // Taken while the policy says "if TLS": held as not intercepted, kept all the same.
        let if_tls = leases.hold(&meta("api.test:443"), ip.clone(), &Decision::allow(), false);
        assert!(!if_tls.is_revoked());
        let intercepted = leases.hold(&meta("api.test:443"), ip, &Decision::allow(), true);
        let revoked = leases.rejudge(&credential(proxy_core::Mode::Limited), OwnAddrs::none());
        assert_eq!(revoked.len(), 2);
        assert!(
            revoked
                .iter()
                .all(|(_, d)| d.reason == Some(Reason::MitmRequired))
        );
        assert!(opaque.is_revoked() && if_tls.is_revoked() && !intercepted.is_revoked());
    }
    /// A unix socket exchange is judged again as the entry that admitted it (the path it asked
    /// for may be another spelling of it), recorded with the path it asked for, and kept when
    /// the mode becomes limited (its request was let through already).
    #[test]
    fn a_unix_socket_exchange_is_judged_as_its_entry() {
        use proxy_core::Rule;
        let unix = |entries: &[&str], mode| {
            let mut b = Policy::builder();
            for e in entries {
                b.allow_unix_socket(e, None).unwrap();
            }
            b.mode(mode);
            b.build().unwrap()
        };
        let full = proxy_core::Mode::Full;
        let leases = Arc::new(Leases::default());
        let asked = RequestMeta::new(Protocol::Http, Target::Unix("/run/x/../docker.sock".into()))
            .with_method("POST");
        let by_entry = Decision::allow().with_rule(Rule::new("/run/docker.sock", None));
        let lease = leases.hold_unix(&asked, &by_entry);
        // Admitted while every socket was allowed, under a path an entry names as written.
        let all =
            Decision::allow().with_rule(Rule::new("dangerously_allow_all_unix_sockets", None));
        let listed = RequestMeta::new(Protocol::Http, Target::Unix("/run/docker.sock".into()));
        let by_all = leases.hold_unix(&listed, &all);
        let mut every = Policy::builder();
        every.allow_all_unix_sockets(true);
        assert!(
            leases
                .rejudge(&every.build().unwrap(), OwnAddrs::none())
                .is_empty()
        );
        // Closed once they no longer all are, whatever the entries name: its path was never
        // checked against one.
        let revoked = leases.rejudge(
            &unix(&["/run/docker.sock"], proxy_core::Mode::Limited),
            OwnAddrs::none(),
        );
        assert_eq!(revoked.len(), 1);
        assert_eq!(revoked[0].0.target, listed.target);
        assert!(by_all.is_revoked() && !lease.is_revoked());
        let revoked = leases.rejudge(&unix(&["/run/other.sock"], full), OwnAddrs::none());
        assert_eq!(revoked.len(), 1);
        assert_eq!(revoked[0].0.target, asked.target);
        assert_eq!(revoked[0].1.reason, Some(Reason::NotAllowed));
        assert!(lease.is_revoked());
    }
}
