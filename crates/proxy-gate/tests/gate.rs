//! The gate with a real resolver against the in-process DNS server. No dial happens here.
#![allow(clippy::unwrap_used)]

use std::net::{IpAddr, SocketAddr};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use arc_swap::ArcSwap;
use proxy_config::{CliOverrides, Sources};
use proxy_core::{
    Admission, AuditEvent, AuditSink, Decision, Gate, Protocol, Reason, RequestMeta, Target,
    UpstreamFailure, Via,
};
use proxy_gate::{Decider, DeciderFuture, PolicyGate, Resolver, SharedOwnAddrs, Snapshot};
use proxy_test_support::{Answer, DnsServer};

#[derive(Debug, Default)]
struct Events(Mutex<Vec<AuditEvent>>);
impl AuditSink for Events {
    fn record(&self, e: &AuditEvent) {
        self.0.lock().unwrap().push(e.clone());
    }
}

/// The gate's settings in a loaded config.
fn settings(config: &proxy_config::Config) -> proxy_gate::Settings {
    proxy_gate::Settings {
        allow_upstream_proxy: config.allow_upstream_proxy(),
        verify_sni: config.verify_sni(),
    }
}

/// The machine's own addresses, as one dump finds them now.
fn own_now() -> SharedOwnAddrs {
    Arc::new(ArcSwap::from_pointee(proxy_gate::dump_own_addrs().unwrap()))
}

fn ip(s: &str) -> IpAddr {
    s.parse().unwrap()
}

struct Fixture {
    dns: DnsServer,
    gate: PolicyGate,
    events: Arc<Events>,
}

async fn fixture(set: &[&str], allow: &[&str], deny: &[&str]) -> Fixture {
    let dns = DnsServer::start().await.unwrap();
    let mut set: Vec<String> = set.iter().map(|s| (*s).to_owned()).collect();
    set.push(format!("dns.nameservers=[\"{}\"]", dns.addr()));
    set.push("dns.timeout_ms=400".into());
    let sources = Sources {
        system_dir: None,
        home_dir: None,
        system_requirements: Some("/nonexistent/requirements.toml".into()),
        cli: CliOverrides {
            set,
            allow: allow.iter().map(|s| (*s).to_owned()).collect(),
            deny: deny.iter().map(|s| (*s).to_owned()).collect(),
            ..Default::default()
        },
        ..Default::default()
    };
    let config = proxy_config::load(&sources).unwrap();
    let policy = config.policy().unwrap();
    let resolver = Resolver::new(
        config.dns_nameservers().as_deref(),
        config.dns_hosts(),
        config.dns_timeout(),
    )
    .unwrap();
    let state = Arc::new(ArcSwap::from_pointee(Snapshot::new(
        policy,
        settings(&config),
    )));
    let events = Arc::new(Events::default());
    let gate = PolicyGate::new(state, resolver, events.clone(), own_now());
    Fixture { dns, gate, events }
}

fn connect(host: &str, port: u16) -> RequestMeta {
    RequestMeta::new(
        Protocol::HttpsConnect,
        Target::parse_authority(&format!("{host}:{port}"), port).unwrap(),
    )
    .with_method("CONNECT")
    .with_client("127.0.0.1:50000".parse().unwrap())
}

fn addrs(a: &Admission) -> Vec<SocketAddr> {
    match a {
        Admission::Allow(r) => match &r.via {
            Via::Direct(a) => a.clone(),
            other => panic!("unexpected route {other:?}"),
        },
        other => panic!("expected an allow, got {other:?}"),
    }
}

fn reason(a: &Admission) -> Option<Reason> {
    match a {
        Admission::Deny(d) => d.reason,
        _ => None,
    }
}

#[tokio::test]
async fn an_allowed_name_is_resolved_once_and_every_address_checked() {
    let f = fixture(
        &["treat_as_public=[\"127.0.0.2/32\", \"127.0.0.3/32\"]"],
        &["*.test"],
        &[],
    )
    .await;
    f.dns.set(
        "ok.test",
        Answer::Addrs(vec![ip("127.0.0.2"), ip("127.0.0.3")]),
    );
    f.dns.set(
        "mixed.test",
        Answer::Addrs(vec![ip("127.0.0.2"), ip("127.0.0.1")]),
    );
    f.dns
        .set("local.test", Answer::Addrs(vec![ip("127.0.0.1")]));
    f.dns.set("alias.test", Answer::Cname("local.test".into()));

    let a = f.gate.admit(&connect("ok.test", 443)).await;
    let mut got = addrs(&a);
    got.sort();
    assert_eq!(
        got,
        vec![
            "127.0.0.2:443".parse().unwrap(),
            "127.0.0.3:443".parse().unwrap()
        ]
    );
    assert_eq!(
        reason(&f.gate.admit(&connect("mixed.test", 443)).await),
        Some(Reason::NotAllowedLocal)
    );
    assert_eq!(
        reason(&f.gate.admit(&connect("local.test", 443)).await),
        Some(Reason::NotAllowedLocal)
    );
    assert_eq!(
        reason(&f.gate.admit(&connect("alias.test", 443)).await),
        Some(Reason::NotAllowedLocal)
    );
    // One audit event per decision.
    let events = f.events.0.lock().unwrap();
    assert_eq!(events.len(), 4);
    assert_eq!(events[0].reason, "allow");
    assert_eq!(events[1].reason, "not_allowed_local");
    assert_eq!(events[1].client, Some("127.0.0.1:50000".parse().unwrap()));
}

#[tokio::test]
async fn a_refused_name_is_never_resolved() {
    let f = fixture(&[], &["*.test"], &["evil.test"]).await;
    f.dns.set("evil.test", Answer::Addrs(vec![ip("127.0.0.2")]));
    f.dns
        .set("other.example", Answer::Addrs(vec![ip("127.0.0.2")]));
    assert_eq!(
        reason(&f.gate.admit(&connect("evil.test", 443)).await),
        Some(Reason::Denied)
    );
    assert_eq!(
        reason(&f.gate.admit(&connect("other.example", 443)).await),
        Some(Reason::NotAllowed)
    );
    assert_eq!(f.dns.queries_for("evil.test"), 0);
    assert_eq!(f.dns.queries_for("other.example"), 0);
}

#[tokio::test]
async fn dns_failures_fail_closed_within_the_timeout() {
    let f = fixture(&[], &["*.test"], &[]).await;
    f.dns.set("gone.test", Answer::NxDomain);
    f.dns.set("broken.test", Answer::ServFail);
    f.dns.set("silent.test", Answer::Drop);
    for name in ["gone.test", "broken.test", "silent.test", "unknown.test"] {
        let start = Instant::now();
        let a = f.gate.admit(&connect(name, 443)).await;
        // The configured timeout is 400 ms; allow 3x.
        assert!(
            start.elapsed() < Duration::from_millis(1200),
            "{name} took {:?}",
            start.elapsed()
        );
        match a {
            Admission::Fail(failure) => {
                assert_eq!(failure.kind, UpstreamFailure::DnsFailed, "{name}");
            }
            other => panic!("{name}: expected a DNS failure, got {other:?}"),
        }
    }
    let events = f.events.0.lock().unwrap();
    assert_eq!(events.len(), 4);
    assert!(events.iter().all(|e| e.reason == "dns_failed"));
    // A failure is not a refusal: the policy's decision (allow, by its rule), the failure apart.
    for e in events.iter() {
        assert_eq!(e.decision, proxy_core::Verdict::Allow, "{e:?}");
        assert_eq!(e.rule.as_ref().map(|r| &*r.pattern), Some("*.test"));
        let failure = e.failure.as_ref().unwrap();
        assert_eq!(failure.kind, UpstreamFailure::DnsFailed);
    }
}

/// A failed lookup says what happened in one plain sentence, never a resolver's debug dump.
#[tokio::test]
async fn dns_failures_say_what_happened_in_plain_words() {
    let f = fixture(&[], &["*.test"], &[]).await;
    f.dns.set("gone.test", Answer::NxDomain);
    f.dns.set("broken.test", Answer::ServFail);
    f.dns.set("silent.test", Answer::Drop);
    f.dns.set("empty.test", Answer::Addrs(vec![]));
    for (name, want) in [
        ("gone.test", "the name gone.test does not exist (NXDOMAIN)"),
        (
            "broken.test",
            "the DNS server could not answer for broken.test (SERVFAIL)",
        ),
        (
            "silent.test",
            "no DNS server answered for silent.test within 400 ms",
        ),
        (
            "empty.test",
            "the name empty.test has no address (no A or AAAA record)",
        ),
    ] {
        let Admission::Fail(failure) = f.gate.admit(&connect(name, 443)).await else {
            panic!("{name}: expected a failure");
        };
        assert_eq!(failure.message, want, "{name}");
        for dump in ["Query", "Name(", "{", "os error"] {
            assert!(!failure.message.contains(dump), "{}", failure.message);
        }
    }
}

#[tokio::test]
async fn literals_local_names_static_hosts_and_local_binding() {
    let f = fixture(
        &[
            "dns.hosts={\"static.test\" = [\"127.0.0.2\"]}",
            "treat_as_public=[\"127.0.0.2/32\"]",
        ],
        &["localhost", "*.test", "127.0.0.5"],
        &[],
    )
    .await;
    assert_eq!(
        addrs(&f.gate.admit(&connect("127.0.0.5", 8080)).await),
        vec!["127.0.0.5:8080".parse().unwrap()]
    );
    let loopback = addrs(&f.gate.admit(&connect("localhost", 3000)).await);
    assert_eq!(
        loopback,
        vec![
            "127.0.0.1:3000".parse().unwrap(),
            "[::1]:3000".parse().unwrap()
        ]
    );
    assert_eq!(
        addrs(&f.gate.admit(&connect("static.test", 80)).await),
        vec!["127.0.0.2:80".parse().unwrap()]
    );
    assert_eq!(f.dns.queries_for("static.test"), 0);
    assert_eq!(f.dns.queries_for("localhost"), 0);

    let f = fixture(&["allow_local_binding=true"], &["*.test"], &[]).await;
    f.dns.set("dev.test", Answer::Addrs(vec![ip("127.0.0.1")]));
    assert_eq!(
        addrs(&f.gate.admit(&connect("dev.test", 80)).await),
        vec!["127.0.0.1:80".parse().unwrap()]
    );
}

#[tokio::test]
async fn rebinding_answers_are_never_used_twice() {
    let f = fixture(&["treat_as_public=[\"127.0.0.2/32\"]"], &["*.test"], &[]).await;
    f.dns.set(
        "rebind.test",
        Answer::Sequence(vec![vec![ip("127.0.0.2")], vec![ip("127.0.0.1")]]),
    );
    let a = f.gate.admit(&connect("rebind.test", 443)).await;
    assert_eq!(addrs(&a), vec!["127.0.0.2:443".parse().unwrap()]);
    // The gate asked once for A (and once for AAAA); the route pins the checked answer.
    assert!(
        f.dns.queries_for("rebind.test") <= 2,
        "{:?}",
        f.dns.queries()
    );
    // A later request resolves again and its new, local answer is refused.
    assert_eq!(
        reason(&f.gate.admit(&connect("rebind.test", 443)).await),
        Some(Reason::NotAllowedLocal)
    );
}

#[derive(Debug)]
struct AllowAll;
impl Decider for AllowAll {
    fn decide<'a>(&'a self, _meta: &'a RequestMeta) -> DeciderFuture<'a> {
        Box::pin(async { Decision::allow() })
    }
}

#[tokio::test]
async fn a_decider_sees_misses_only_and_its_allow_is_still_address_checked() {
    let f = fixture(
        &["treat_as_public=[\"127.0.0.2/32\"]"],
        &["*.test"],
        &["evil.example"],
    )
    .await;
    let gate = f.gate.clone().with_decider(Arc::new(AllowAll));
    f.dns
        .set("miss.example", Answer::Addrs(vec![ip("127.0.0.2")]));
    f.dns
        .set("localmiss.example", Answer::Addrs(vec![ip("127.0.0.1")]));
    let a = gate.admit(&connect("miss.example", 443)).await;
    match &a {
        Admission::Allow(r) => {
            assert!(r.decision.policy_override);
            assert_eq!(r.decision.source, proxy_core::Source::Decider);
        }
        other => panic!("{other:?}"),
    }
    assert_eq!(
        reason(&gate.admit(&connect("localmiss.example", 443)).await),
        Some(Reason::NotAllowedLocal)
    );
    assert_eq!(
        reason(&gate.admit(&connect("evil.example", 443)).await),
        Some(Reason::Denied)
    );
    assert_eq!(
        reason(&gate.admit(&connect("127.0.0.1", 443)).await),
        Some(Reason::NotAllowedLocal)
    );
    let events = f.events.0.lock().unwrap();
    assert_eq!(events[0].reason, "not_allowed");
    assert!(events[0].policy_override);
}

/// A miss of an allowlist that managed requirements fix is refused without asking the
/// decider, with the requirements file named; other misses are still the decider's.
#[tokio::test]
async fn a_decider_is_not_asked_about_a_miss_of_a_managed_fixed_allowlist() {
    let dns = DnsServer::start().await.unwrap();
    dns.set("api.test", Answer::Addrs(vec![ip("127.0.0.2")]));
    dns.set("miss.test", Answer::Addrs(vec![ip("127.0.0.2")]));
    let dir = tempfile::tempdir().unwrap();
    let gate_with = |requirements: &str| {
        let path = dir.path().join("requirements.toml");
        std::fs::write(&path, requirements).unwrap();
        let sources = Sources {
            system_requirements: Some("/nonexistent/requirements.toml".into()),
            requirement_files: vec![path],
            cli: CliOverrides {
                set: vec![
                    format!("dns.nameservers=[\"{}\"]", dns.addr()),
                    "treat_as_public=[\"127.0.0.2/32\"]".into(),
                ],
                ..Default::default()
            },
            ..Default::default()
        };
        let config = proxy_config::load(&sources).unwrap();
        let resolver = Resolver::new(
            config.dns_nameservers().as_deref(),
            config.dns_hosts(),
            config.dns_timeout(),
        )
        .unwrap();
        let state = Arc::new(ArcSwap::from_pointee(Snapshot::new(
            config.policy().unwrap(),
            settings(&config),
        )));
        PolicyGate::new(state, resolver, Arc::new(Events::default()), own_now())
            .with_decider(Arc::new(AllowAll))
    };
    let fixed = gate_with(
        "[network]\nallowed_domains = [\"api.test\"]\nmanaged_allowed_domains_only = true\n",
    );
    assert!(matches!(
        fixed.admit(&connect("api.test", 443)).await,
        Admission::Allow(_)
    ));
    match fixed.admit(&connect("miss.test", 443)).await {
        Admission::Deny(d) => {
            assert_eq!(d.reason, Some(Reason::NotAllowed));
            assert_eq!(d.source, proxy_core::Source::BaselinePolicy);
            assert!(!d.policy_override);
            let detail = d.detail.as_deref().unwrap_or_default();
            assert!(detail.contains("requirements.toml"), "{detail}");
        }
        other => panic!("{other:?}"),
    }
    // Expansion allowed: the decider decides the miss.
    let open = gate_with(
        "[network]\nallowed_domains = [\"api.test\"]\nallowlist_expansion_enabled = true\n",
    );
    match open.admit(&connect("miss.test", 443)).await {
        Admission::Allow(r) => assert!(r.decision.policy_override),
        other => panic!("{other:?}"),
    }
}

/// What follows the allowlist holds for a decider's allow too: limited mode still refuses a
/// write and a `CONNECT` that cannot be intercepted (a hooked host likewise: `Policy::guard`).
#[tokio::test]
async fn a_deciders_allow_still_meets_limited_mode() {
    let f = fixture(
        &["treat_as_public=[\"127.0.0.2/32\"]", "mode=\"limited\""],
        &["*.test"],
        &[],
    )
    .await;
    let gate = f.gate.clone().with_decider(Arc::new(AllowAll));
    f.dns
        .set("miss.example", Answer::Addrs(vec![ip("127.0.0.2")]));
    let post = RequestMeta::new(
        Protocol::Http,
        Target::parse_authority("miss.example:80", 80).unwrap(),
    )
    .with_method("POST");
    assert_eq!(
        reason(&gate.admit(&post).await),
        Some(Reason::MethodNotAllowed)
    );
    assert_eq!(
        reason(&gate.admit(&connect("miss.example", 443)).await),
        Some(Reason::MitmRequired)
    );
    let get = RequestMeta::new(
        Protocol::Http,
        Target::parse_authority("miss.example:80", 80).unwrap(),
    )
    .with_method("GET");
    assert!(matches!(gate.admit(&get).await, Admission::Allow(_)));
}

/// Local binding turns local protection off as a whole: `*` admits loopback literals and
/// names resolving to loopback, but an IP deny entry wins over the literal in every spelling,
/// over `localhost`, and over every address a name resolves to (reason `denied`), also for a
/// name the decider allowed.
#[tokio::test]
async fn under_local_binding_deny_wins_on_resolved_addresses() {
    let f = fixture(&["allow_local_binding=true"], &["*"], &["127.0.0.1"]).await;
    f.dns.set("ok.test", Answer::Addrs(vec![ip("127.0.0.2")]));
    f.dns.set(
        "denied.test",
        Answer::Addrs(vec![ip("127.0.0.2"), ip("127.0.0.1")]),
    );
    f.dns
        .set("mapped.test", Answer::Addrs(vec![ip("::ffff:127.0.0.1")]));
    f.dns
        .set("nat64.test", Answer::Addrs(vec![ip("64:ff9b::7f00:1")]));
    f.dns.set("alias.test", Answer::Cname("denied.test".into()));
    assert_eq!(
        addrs(&f.gate.admit(&connect("ok.test", 8080)).await),
        vec!["127.0.0.2:8080".parse().unwrap()]
    );
    assert_eq!(
        addrs(&f.gate.admit(&connect("127.0.0.2", 8080)).await),
        vec!["127.0.0.2:8080".parse().unwrap()]
    );
    for name in ["denied.test", "mapped.test", "nat64.test", "alias.test"] {
        let a = f.gate.admit(&connect(name, 8080)).await;
        assert_eq!(reason(&a), Some(Reason::Denied), "{name}: {a:?}");
        let Admission::Deny(d) = a else {
            unreachable!()
        };
        assert_eq!(d.rule.as_ref().map(|r| &*r.pattern), Some("127.0.0.1"));
        assert!(
            d.detail.as_deref().unwrap().contains("resolved to"),
            "{d:?}"
        );
    }
    for literal in [
        "127.0.0.1",
        "127.1",
        "[::ffff:127.0.0.1]",
        "[64:ff9b::127.0.0.1]",
    ] {
        assert_eq!(
            reason(&f.gate.admit(&connect(literal, 8080)).await),
            Some(Reason::Denied),
            "{literal}"
        );
    }
    assert_eq!(
        reason(&f.gate.admit(&connect("localhost", 8080)).await),
        Some(Reason::Denied)
    );
    assert_eq!(f.dns.queries_for("localhost"), 0);
    {
        let events = f.events.0.lock().unwrap();
        let denied = events.iter().filter(|e| e.reason == "denied").count();
        assert_eq!(denied, 9, "{events:?}");
    }

    // A name the decider allows is address-checked the same way.
    let f = fixture(&["allow_local_binding=true"], &["*.test"], &["127.0.0.1"]).await;
    let gate = f.gate.clone().with_decider(Arc::new(AllowAll));
    f.dns
        .set("miss.example", Answer::Addrs(vec![ip("127.0.0.1")]));
    f.dns
        .set("fine.example", Answer::Addrs(vec![ip("127.0.0.3")]));
    assert_eq!(
        reason(&gate.admit(&connect("miss.example", 443)).await),
        Some(Reason::Denied)
    );
    assert_eq!(
        addrs(&gate.admit(&connect("fine.example", 443)).await),
        vec!["127.0.0.3:443".parse().unwrap()]
    );
}

/// The machine's own addresses are local while local protection is on: neither `*`, nor
/// `treat_as_public`, nor a name's resolution admits one; an explicit literal does. The set is
/// read live. No dial happens: the gate only routes.
#[tokio::test]
async fn the_machines_own_addresses_are_local() {
    let own: SharedOwnAddrs = Arc::new(ArcSwap::from_pointee(proxy_policy::OwnAddrs::new([
        ip("203.0.113.7"),
        ip("2001:db8::7"),
    ])));
    let f = fixture(
        &["treat_as_public=[\"203.0.113.0/24\", \"2001:db8::/32\", \"127.0.0.2/32\"]"],
        &["*"],
        &[],
    )
    .await;
    let gate = f.gate.clone().with_own_addrs(own.clone());
    f.dns
        .set("own.test", Answer::Addrs(vec![ip("203.0.113.7")]));
    f.dns
        .set("own6.test", Answer::Addrs(vec![ip("2001:db8::7")]));
    f.dns.set(
        "mixed.test",
        Answer::Addrs(vec![ip("127.0.0.2"), ip("203.0.113.7")]),
    );
    f.dns
        .set("other.test", Answer::Addrs(vec![ip("127.0.0.2")]));
    for target in [
        "203.0.113.7",
        "[::ffff:203.0.113.7]",
        "[64:ff9b::203.0.113.7]",
        "[2001:db8::7]",
        "own.test",
        "own6.test",
        "mixed.test",
    ] {
        let a = gate.admit(&connect(target, 8080)).await;
        assert_eq!(reason(&a), Some(Reason::NotAllowedLocal), "{target}: {a:?}");
    }
    // Other addresses of the same ranges keep their treat_as_public exemption.
    assert_eq!(
        addrs(&gate.admit(&connect("203.0.113.8", 8080)).await),
        vec!["203.0.113.8:8080".parse().unwrap()]
    );
    assert_eq!(
        addrs(&gate.admit(&connect("other.test", 8080)).await),
        vec!["127.0.0.2:8080".parse().unwrap()]
    );
    // The set is live: an address that leaves the machine is public again, one that arrives
    // is local from the next request on.
    own.store(Arc::new(proxy_policy::OwnAddrs::new([ip("127.0.0.2")])));
    assert_eq!(
        addrs(&gate.admit(&connect("own.test", 8080)).await),
        vec!["203.0.113.7:8080".parse().unwrap()]
    );
    assert_eq!(
        reason(&gate.admit(&connect("other.test", 8080)).await),
        Some(Reason::NotAllowedLocal)
    );

    // Only an explicit literal admits an own address.
    let f = fixture(&[], &["203.0.113.7", "own.test"], &[]).await;
    let gate = f
        .gate
        .clone()
        .with_own_addrs(Arc::new(ArcSwap::from_pointee(
            proxy_policy::OwnAddrs::new([ip("203.0.113.7")]),
        )));
    f.dns
        .set("own.test", Answer::Addrs(vec![ip("203.0.113.7")]));
    assert_eq!(
        addrs(&gate.admit(&connect("203.0.113.7", 8080)).await),
        vec!["203.0.113.7:8080".parse().unwrap()]
    );
    assert_eq!(
        reason(&gate.admit(&connect("own.test", 8080)).await),
        Some(Reason::NotAllowedLocal)
    );

    // Under local binding they are judged by the lists like anything else.
    let f = fixture(&["allow_local_binding=true"], &["*"], &[]).await;
    let gate = f
        .gate
        .clone()
        .with_own_addrs(Arc::new(ArcSwap::from_pointee(
            proxy_policy::OwnAddrs::new([ip("203.0.113.7")]),
        )));
    assert_eq!(
        addrs(&gate.admit(&connect("203.0.113.7", 8080)).await),
        vec!["203.0.113.7:8080".parse().unwrap()]
    );
}

/// The gate starts with the machine's addresses as the kernel lists them: loopback is there.
#[tokio::test]
async fn the_gate_knows_the_machines_addresses() {
    let f = fixture(&[], &["*"], &[]).await;
    let own = f.gate.own_addrs();
    assert!(own.contains(ip("127.0.0.1")), "{own:?}");
}

/// A policy change between a connection's admission and its lease (the dial in between) does
/// not let it escape: the lease is judged against the policy in force when it is taken, revoked
/// at once and audited as a revocation.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_policy_change_between_admission_and_hold_revokes_at_once() {
    let dns = DnsServer::start().await.unwrap();
    let config = |deny: &[&str]| {
        let sources = Sources {
            system_dir: None,
            home_dir: None,
            system_requirements: Some("/nonexistent/requirements.toml".into()),
            cli: CliOverrides {
                set: vec![format!("dns.nameservers=[\"{}\"]", dns.addr())],
                allow: vec!["127.0.0.1".into()],
                deny: deny.iter().map(|s| (*s).to_owned()).collect(),
                ..Default::default()
            },
            ..Default::default()
        };
        let config = proxy_config::load(&sources).unwrap();
        let policy = config.policy().unwrap();
        (config, policy)
    };
    let (c, p) = config(&[]);
    let resolver = Resolver::new(
        c.dns_nameservers().as_deref(),
        c.dns_hosts(),
        c.dns_timeout(),
    )
    .unwrap();
    let state = Arc::new(ArcSwap::from_pointee(Snapshot::new(p, settings(&c))));
    let events = Arc::new(Events::default());
    let gate = PolicyGate::new(state.clone(), resolver, events.clone(), own_now());
    let meta = connect("127.0.0.1", 9);
    let Admission::Allow(route) = gate.admit(&meta).await else {
        panic!("not admitted")
    };
    let kept = gate.hold(&meta, &route);
    assert!(!kept.is_revoked());
    // The policy changes before the second connection takes its lease.
    let Admission::Allow(route2) = gate.admit(&meta).await else {
        panic!("not admitted")
    };
    let (c, p) = config(&["127.0.0.1"]);
    let snap = Arc::new(Snapshot::new(p, settings(&c)));
    state.store(snap.clone());
    assert_eq!(gate.revoke_disallowed(&snap), 1, "the held one");
    assert!(kept.is_revoked());
    let late = gate.hold(&meta, &route2);
    assert!(
        late.is_revoked(),
        "a lease taken after the change escaped it"
    );
    let revocations: Vec<_> = events
        .0
        .lock()
        .unwrap()
        .iter()
        .filter(|e| e.revoked)
        .map(|e| e.reason)
        .collect();
    assert_eq!(revocations, vec!["denied", "denied"]);
    assert_eq!(gate.held(), 0);
}

#[derive(Debug)]
struct DenyAll;
impl Decider for DenyAll {
    fn decide<'a>(&'a self, _meta: &'a RequestMeta) -> DeciderFuture<'a> {
        Box::pin(async { Decision::deny(Reason::PolicyDenied) })
    }
}

/// A decider that holds requests to ask a person (`run --ask`): `decide` is its question,
/// `explain` its answer without asking.
#[derive(Debug, Default)]
struct Asking {
    asked: std::sync::atomic::AtomicUsize,
}
impl Decider for Asking {
    fn decide<'a>(&'a self, _meta: &'a RequestMeta) -> DeciderFuture<'a> {
        self.asked.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        Box::pin(async { Decision::allow() })
    }
    fn explain<'a>(&'a self, _meta: &'a RequestMeta) -> DeciderFuture<'a> {
        Box::pin(async { Decision::ask(Reason::NotAllowed) })
    }
}

/// The dry run asks the decider through `Decider::explain`, never `decide`: `netproxy check`
/// and `POST /check` under `run --ask` never hold a request or ask anyone, and say `ask`.
#[tokio::test]
async fn the_dry_run_asks_the_decider_without_side_effects() {
    let f = fixture(&["treat_as_public=[\"127.0.0.2/32\"]"], &["*.test"], &[]).await;
    f.dns
        .set("miss.example", Answer::Addrs(vec![ip("127.0.0.2")]));
    let asking = Arc::new(Asking::default());
    let gate = f.gate.clone().with_decider(asking.clone());
    for lookup in [proxy_gate::Lookup::Resolve, proxy_gate::Lookup::Skip] {
        let seen = gate.explain(&connect("miss.example", 443), lookup).await;
        assert_eq!(seen.decision.verdict, proxy_core::Verdict::Ask);
        assert_eq!(seen.decision.reason, Some(Reason::NotAllowed));
        assert_eq!(seen.decision.source, proxy_core::Source::Decider);
    }
    assert_eq!(asking.asked.load(std::sync::atomic::Ordering::SeqCst), 0);
    // A request asks.
    assert!(matches!(
        gate.admit(&connect("miss.example", 443)).await,
        Admission::Allow(r) if r.decision.policy_override
    ));
    assert_eq!(asking.asked.load(std::sync::atomic::Ordering::SeqCst), 1);
}

/// The dry run (`netproxy check`, `POST /check`) and a request are judged by the same code: for
/// a table of requests (allowed, denied, local, failing names, the decider's allow and refusal,
/// routes through an upstream proxy and its loop guard), `explain` gives the admission `admit`
/// gives, and records nothing, while `admit` records exactly one event per request.
#[tokio::test]
async fn the_dry_run_and_admission_judge_alike() {
    let f = fixture(
        &[
            "treat_as_public=[\"127.0.0.2/32\"]",
            "allow_upstream_proxy=true",
        ],
        &["*.test", "**.up.example", "127.0.0.2"],
        &["bad.test"],
    )
    .await;
    f.dns.set("ok.test", Answer::Addrs(vec![ip("127.0.0.2")]));
    f.dns
        .set("local.test", Answer::Addrs(vec![ip("127.0.0.1")]));
    f.dns.set("gone.test", Answer::NxDomain);
    f.dns
        .set("miss.example", Answer::Addrs(vec![ip("127.0.0.2")]));
    f.dns
        .set("a.up.example", Answer::Addrs(vec![ip("127.0.0.2")]));
    f.dns
        .set("loop.up.example", Answer::Addrs(vec![ip("127.0.0.2")]));
    let env = |k: &str| match k {
        "HTTPS_PROXY" => Some("http://127.0.0.9:3129".to_owned()),
        "HTTP_PROXY" => Some("http://127.0.0.1:3128".to_owned()),
        "NO_PROXY" => Some("ok.test,local.test".to_owned()),
        _ => None,
    };
    let (upstream, problems) = proxy_gate::UpstreamProxies::from_env(env);
    assert!(problems.is_empty(), "{problems:?}");
    let base = f.gate.clone().with_upstream(upstream);
    // netproxy's own listener: the plain-HTTP upstream proxy at 127.0.0.1:3128 is a loop.
    base.set_listeners(vec!["127.0.0.1:3128".parse().unwrap()]);
    let http = |host: &str, method: &str| {
        RequestMeta::new(
            Protocol::Http,
            Target::parse_authority(&format!("{host}:80"), 80).unwrap(),
        )
        .with_method(method)
    };
    let table = [
        connect("ok.test", 443),
        connect("local.test", 443),
        connect("gone.test", 443),
        connect("bad.test", 443),
        connect("miss.example", 443),
        connect("127.0.0.2", 443),
        connect("127.0.0.1", 443),
        connect("a.up.example", 443),
        http("ok.test", "GET"),
        http("ok.test", "POST"),
        http("a.up.example", "GET"),
    ];
    let deciders: [Option<Arc<dyn Decider>>; 3] =
        [None, Some(Arc::new(AllowAll)), Some(Arc::new(DenyAll))];
    let mut admitted = 0;
    for decider in deciders {
        let gate = match &decider {
            Some(d) => base.clone().with_decider(d.clone()),
            None => base.clone(),
        };
        for meta in &table {
            let before = f.events.0.lock().unwrap().len();
            let seen = gate
                .explain(meta, proxy_gate::Lookup::Resolve)
                .await
                .admission();
            assert_eq!(f.events.0.lock().unwrap().len(), before, "{meta:?}");
            let admission = gate.admit(meta).await;
            assert_eq!(f.events.0.lock().unwrap().len(), before + 1, "{meta:?}");
            assert_eq!(seen, admission, "{meta:?} with decider {decider:?}");
            if matches!(admission, Admission::Allow(_)) {
                admitted += 1;
            }
        }
    }
    // The table covers each kind of answer.
    assert!(admitted > 0);
    let judged = |meta: RequestMeta| {
        let gate = base.clone().with_decider(Arc::new(AllowAll));
        async move { gate.admit(&meta).await }
    };
    assert!(matches!(
        judged(connect("a.up.example", 443)).await,
        Admission::Allow(r) if matches!(r.via, Via::UpstreamProxy { connect: true, .. })
    ));
    assert!(matches!(
        judged(http("a.up.example", "GET")).await,
        Admission::Fail(f) if f.message.contains("loop refused")
    ));
    // The dry run's lookups are not the proxy's traffic: the lookup observer hears only
    // admissions.
    let lookups = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let counted = {
        let lookups = lookups.clone();
        f.gate.clone().with_lookup_observer(Arc::new(move |_, _| {
            lookups.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        }))
    };
    let seen = counted
        .explain(&connect("ok.test", 443), proxy_gate::Lookup::Resolve)
        .await;
    assert_eq!(seen.resolved, Some(vec![ip("127.0.0.2")]));
    assert_eq!(lookups.load(std::sync::atomic::Ordering::Relaxed), 0);
    counted.admit(&connect("ok.test", 443)).await;
    assert_eq!(lookups.load(std::sync::atomic::Ordering::Relaxed), 1);
    // The loop guard holds whichever of `set_listeners` and `with_upstream` comes first.
    let early = f.gate.clone();
    early.set_listeners(vec!["127.0.0.1:3128".parse().unwrap()]);
    let (upstream, _) = proxy_gate::UpstreamProxies::from_env(env);
    let early = early.with_upstream(upstream);
    assert!(matches!(
        early.admit(&http("a.up.example", "GET")).await,
        Admission::Fail(f) if f.message.contains("loop refused")
    ));
    assert!(matches!(
        judged(connect("miss.example", 443)).await,
        Admission::Allow(r) if r.decision.policy_override
    ));
    assert!(matches!(
        judged(connect("gone.test", 443)).await,
        Admission::Fail(f) if f.kind == UpstreamFailure::DnsFailed
    ));
}

/// `verify_sni` marks opaque tunnels (HTTP `CONNECT`, SOCKS5 `CONNECT`) for the ClientHello
/// check, and refuses SOCKS5 UDP to port 443 (QUIC, whose server name netproxy does not read);
/// other UDP and plain HTTP are untouched.
#[tokio::test]
async fn verify_sni_marks_tunnels_and_refuses_quic() {
    let f = fixture(
        &["treat_as_public=[\"127.0.0.2/32\"]", "verify_sni=true"],
        &["*.test"],
        &[],
    )
    .await;
    f.dns.set("ok.test", Answer::Addrs(vec![ip("127.0.0.2")]));
    let meta = |protocol: Protocol, port: u16| {
        RequestMeta::new(
            protocol,
            Target::parse_authority(&format!("ok.test:{port}"), port).unwrap(),
        )
    };
    let marked = |a: Admission| match a {
        Admission::Allow(r) => r.verify_sni,
        other => panic!("{other:?}"),
    };
    assert!(marked(
        f.gate.admit(&meta(Protocol::HttpsConnect, 443)).await
    ));
    assert!(marked(f.gate.admit(&meta(Protocol::Socks5Tcp, 443)).await));
    assert!(!marked(f.gate.admit(&meta(Protocol::Http, 80)).await));
    assert!(!marked(f.gate.admit(&meta(Protocol::Socks5Udp, 53)).await));
    let quic = f.gate.admit(&meta(Protocol::Socks5Udp, 443)).await;
    assert_eq!(reason(&quic), Some(Reason::SniMismatch));
    let events = f.events.0.lock().unwrap();
    assert_eq!(events.last().unwrap().reason, "sni_mismatch");
}
