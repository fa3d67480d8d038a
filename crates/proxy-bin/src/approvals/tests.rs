//! The table alone: each answer, the timeout, one entry per target, UDP, abandoned requests,
//! the dry run, saving to a file, and the managed constraints that forbid asking.

use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use proxy_core::{Approval, Decision, Protocol, Reason, RequestMeta, Source, Target, Verdict};
use proxy_gate::Decider;

use super::{AnswerError, Approvals, managed_refusal, save_allow};

/// Generous: a test waits at most this long for something that takes milliseconds.
const PATIENCE: Duration = Duration::from_secs(10);

fn meta(protocol: Protocol, authority: &str) -> RequestMeta {
    RequestMeta::new(
        protocol,
        Target::parse_authority(authority, 443).expect("an authority"),
    )
    .with_method(if protocol == Protocol::Http {
        "GET"
    } else {
        "CONNECT"
    })
    .with_client("127.0.0.1:40000".parse().expect("an address"))
}

/// Starts a request to `authority` through the decider: its decision, once it has one.
fn request(
    a: &Approvals,
    protocol: Protocol,
    authority: &str,
) -> tokio::task::JoinHandle<Decision> {
    let (a, m) = (a.clone(), meta(protocol, authority));
    tokio::spawn(async move { a.decide(&m).await })
}

/// Waits until `done` holds for the table's pending entries.
async fn until(a: &Approvals, what: &str, done: impl Fn(&proxy_core::PendingView) -> bool) {
    let begin = Instant::now();
    loop {
        let view = a.view();
        if done(&view) {
            return;
        }
        assert!(begin.elapsed() < PATIENCE, "{what}: {view:?}");
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

/// The pending entry of the table's only target, once `waiting` requests wait for it.
async fn waiting(a: &Approvals, n: usize) -> proxy_core::PendingDecision {
    until(a, "requests waiting", |v| {
        v.pending.len() == 1 && v.pending[0].waiting == n
    })
    .await;
    a.view().pending.remove(0)
}

async fn decided(h: tokio::task::JoinHandle<Decision>) -> Decision {
    tokio::time::timeout(PATIENCE, h)
        .await
        .expect("decided in time")
        .expect("the request task")
}

fn table() -> Approvals {
    Approvals::new(PATIENCE * 3, None)
}

#[tokio::test]
async fn once_releases_every_request_waiting_and_the_next_one_asks_again() {
    let a = table();
    let changes = Arc::new(AtomicUsize::new(0));
    let c = changes.clone();
    a.on_change(move || {
        c.fetch_add(1, Ordering::SeqCst);
    });
    // Concurrent requests to one target share one question.
    let first = request(&a, Protocol::HttpsConnect, "api.test:443");
    waiting(&a, 1).await;
    let second = request(&a, Protocol::HttpsConnect, "API.test.:443");
    let p = waiting(&a, 2).await;
    assert_eq!((p.host.as_str(), p.port), ("api.test", 443));
    assert_eq!(p.protocol, Protocol::HttpsConnect);
    assert_eq!(p.method.as_deref(), Some("CONNECT"));
    assert_eq!(p.client, Some("127.0.0.1:40000".parse().unwrap()));
    assert!(p.expires >= p.since + 29, "{p:?}");
    assert!(a.is_pending(p.id));
    // Another port is another target.
    let other = request(&a, Protocol::Http, "api.test:8080");
    until(&a, "two targets", |v| v.pending.len() == 2).await;

    let answered = a.answer(p.id, Approval::Once, None).unwrap();
    assert_eq!(answered.released, 2);
    assert_eq!((answered.pattern, answered.saved), (None, None));
    for h in [first, second] {
        let d = decided(h).await;
        assert!(d.is_allowed(), "{d:?}");
        assert_eq!(d.rule, None);
    }
    assert!(!a.is_pending(p.id));
    assert!(a.view().session.is_empty());
    // Answered: a second answer finds nothing.
    assert!(matches!(
        a.answer(p.id, Approval::Deny, None),
        Err(AnswerError::NotFound(id)) if id == p.id
    ));
    // The next request asks again, under a new id.
    let again = request(&a, Protocol::HttpsConnect, "api.test:443");
    until(&a, "asked again", |v| {
        v.pending.iter().any(|e| e.port == 443 && e.id != p.id)
    })
    .await;
    let id = a.view().pending.iter().find(|e| e.port == 443).unwrap().id;
    a.answer(id, Approval::Deny, None).unwrap();
    let d = decided(again).await;
    assert_eq!(d.reason, Some(Reason::PolicyDenied));
    let id = a.view().pending[0].id;
    a.answer(id, Approval::Deny, None).unwrap();
    assert_eq!(decided(other).await.reason, Some(Reason::PolicyDenied));
    // Told of each target that started or stopped waiting: 3 asked, 3 answered.
    assert_eq!(changes.load(Ordering::SeqCst), 6);
}

#[tokio::test]
async fn session_allows_the_target_for_the_rest_of_the_run() {
    let a = table();
    let on_443 = request(&a, Protocol::HttpsConnect, "api.test:443");
    let p = waiting(&a, 1).await;
    let on_80 = request(&a, Protocol::Http, "api.test:80");
    let on_8080 = request(&a, Protocol::Http, "api.test:8080");
    let elsewhere = request(&a, Protocol::Http, "alt.test:8080");
    until(&a, "four targets", |v| v.pending.len() == 4).await;
    let answered = a.answer(p.id, Approval::Session, None).unwrap();
    // For 80 and 443, the host as a pattern, which admits it on every port: each of its
    // targets is released; another host still waits.
    assert_eq!(answered.pattern.as_deref(), Some("api.test"));
    assert_eq!(answered.released, 3);
    for h in [on_443, on_80, on_8080] {
        let d = decided(h).await;
        assert!(d.is_allowed());
        let rule = d.rule.expect("the pattern allowed");
        assert_eq!(&*rule.pattern, "api.test");
        assert_eq!(rule.origin.as_deref(), Some("approval"));
    }
    let view = a.view();
    assert_eq!(view.session, ["api.test"]);
    assert_eq!(view.pending.len(), 1);
    // Later requests to it are allowed at once, UDP included; the dry run says so too.
    let d = decided(request(&a, Protocol::HttpsConnect, "api.test:443")).await;
    assert!(d.is_allowed());
    assert!(
        a.decide(&meta(Protocol::Socks5Udp, "api.test:443"))
            .await
            .is_allowed()
    );
    assert!(
        a.explain(&meta(Protocol::Http, "api.test:80"))
            .await
            .is_allowed()
    );
    // Another port than 80 or 443 is allowed on that port only.
    let id = view.pending[0].id;
    let answered = a.answer(id, Approval::Session, None).unwrap();
    assert_eq!(answered.pattern.as_deref(), Some("alt.test:8080"));
    assert!(decided(elsewhere).await.is_allowed());
    assert_eq!(a.view().session, ["api.test", "alt.test:8080"]);
    assert_eq!(a.unsaved(), ["api.test", "alt.test:8080"]);
    let h = request(&a, Protocol::Http, "alt.test:8081");
    waiting(&a, 1).await;
    h.abort();
    assert_eq!(
        Approvals::pattern_for(&"::1".parse().unwrap(), 8443),
        "[::1]:8443"
    );
    assert_eq!(
        Approvals::pattern_for(&"2001:db8::1".parse().unwrap(), 443),
        "2001:db8::1"
    );
}

#[tokio::test]
async fn nobody_answers_in_time_and_the_request_is_refused_approval_timeout() {
    let timeout = Duration::from_millis(300);
    let a = Approvals::new(timeout, None);
    let begin = Instant::now();
    let h = request(&a, Protocol::Http, "slow.test:80");
    let p = waiting(&a, 1).await;
    let d = decided(h).await;
    let took = begin.elapsed();
    assert_eq!(d.reason, Some(Reason::ApprovalTimeout));
    assert_eq!(d.source, Source::Decider);
    assert_eq!(d.verdict, Verdict::Deny);
    assert!(took >= timeout && took < timeout * 3 + PATIENCE, "{took:?}");
    // Gone from the table; a late answer finds nothing.
    assert!(a.view().pending.is_empty());
    assert!(matches!(
        a.answer(p.id, Approval::Once, None),
        Err(AnswerError::NotFound(_))
    ));
}

#[tokio::test]
async fn udp_datagrams_are_never_held() {
    let a = table();
    let begin = Instant::now();
    let d = a.decide(&meta(Protocol::Socks5Udp, "dns.test:53")).await;
    assert!(begin.elapsed() < PATIENCE);
    assert_eq!(d.reason, Some(Reason::NotAllowed));
    assert!(d.detail.as_deref().unwrap().contains("UDP"));
    assert!(a.view().pending.is_empty());
}

#[tokio::test]
async fn a_request_whose_client_gave_up_stops_waiting() {
    let a = table();
    let first = request(&a, Protocol::HttpsConnect, "gone.test:443");
    waiting(&a, 1).await;
    let second = request(&a, Protocol::HttpsConnect, "gone.test:443");
    waiting(&a, 2).await;
    first.abort();
    waiting(&a, 1).await;
    second.abort();
    until(&a, "no target left", |v| v.pending.is_empty()).await;
}

#[tokio::test]
async fn the_dry_run_never_holds_a_request() {
    let a = table();
    let d = a
        .explain(&meta(Protocol::HttpsConnect, "api.test:443"))
        .await;
    assert_eq!(d.verdict, Verdict::Ask);
    assert_eq!(d.reason, Some(Reason::NotAllowed));
    assert!(a.view().pending.is_empty());
    let d = a.explain(&meta(Protocol::Socks5Udp, "api.test:443")).await;
    assert_eq!(d.verdict, Verdict::Deny);
}

#[tokio::test]
async fn save_allows_for_the_session_and_writes_the_file() {
    let dir = tempfile::tempdir().unwrap();
    let default = dir.path().join("home/config.toml");
    let a = Approvals::new(PATIENCE * 3, Some(default.clone()));
    let h = request(&a, Protocol::HttpsConnect, "api.test:443");
    let p = waiting(&a, 1).await;
    // The default file, and its folder, are made.
    let answered = a.answer(p.id, Approval::Save, None).unwrap();
    assert_eq!(answered.saved.as_deref(), Some(default.to_str().unwrap()));
    assert_eq!(answered.pattern.as_deref(), Some("api.test"));
    assert!(decided(h).await.is_allowed());
    assert_eq!(
        std::fs::read_to_string(&default).unwrap(),
        "[network.domains]\n\"api.test\" = \"allow\"\n"
    );
    assert_eq!(mode(&default), 0o600);
    assert_eq!(a.view().session, ["api.test"]);
    assert!(a.unsaved().is_empty());
    assert_eq!(mode(default.parent().unwrap()), 0o700);
    // A file the caller names; one that cannot be written leaves the decision pending.
    let named = dir.path().join("agent.toml");
    std::os::unix::fs::symlink(dir.path().join("victim"), &named).unwrap();
    let h = request(&a, Protocol::Http, "other.test:8080");
    let p = waiting(&a, 1).await;
    let e = a.answer(p.id, Approval::Save, Some(&named)).unwrap_err();
    assert!(e.to_string().contains("symbolic link"), "{e}");
    assert!(!dir.path().join("victim").exists());
    assert!(a.is_pending(p.id));
    std::fs::remove_file(&named).unwrap();
    std::fs::write(&named, "# mine\n[network]\nmode = \"full\"\n").unwrap();
    a.answer(p.id, Approval::Save, Some(&named)).unwrap();
    assert!(decided(h).await.is_allowed());
    assert_eq!(
        std::fs::read_to_string(&named).unwrap(),
        "# mine\n[network]\nmode = \"full\"\n\n[network.domains]\n\"other.test:8080\" = \"allow\"\n"
    );
    // No default file: `save` needs one.
    let bare = Approvals::new(PATIENCE * 3, None);
    let h = request(&bare, Protocol::Http, "x.test:80");
    let p = waiting(&bare, 1).await;
    assert!(matches!(
        bare.answer(p.id, Approval::Save, None),
        Err(AnswerError::NoFile)
    ));
    bare.answer(p.id, Approval::Deny, None).unwrap();
    decided(h).await;
}

fn mode(path: &Path) -> u32 {
    use std::os::unix::fs::PermissionsExt;
    std::fs::metadata(path).unwrap().permissions().mode() & 0o777
}

/// Each shape of config file gets the entry where its netproxy reads it, the rest of the file
/// as it was; a file that denies the pattern, or that is not valid, is left alone.
#[test]
fn save_keeps_the_file_and_writes_where_its_shape_says() {
    let dir = tempfile::tempdir().unwrap();
    let saved = |before: &str| {
        let path = dir.path().join("c.toml");
        std::fs::write(&path, before).unwrap();
        let r = save_allow(&path, "api.test");
        (r, std::fs::read_to_string(&path).unwrap())
    };
    // An existing table: the entry is added to it, comments kept.
    let (r, after) = saved("[network.domains] # mine\n\"a.test\" = \"allow\" # a\n");
    r.unwrap();
    assert_eq!(
        after,
        "[network.domains] # mine\n\"a.test\" = \"allow\" # a\n\"api.test\" = \"allow\"\n"
    );
    // Dotted keys under [network], an inline table.
    let (r, after) = saved("[network]\ndomains.\"a.test\" = \"allow\"\n");
    r.unwrap();
    assert!(after.contains("\"api.test\" = \"allow\""), "{after}");
    let (r, after) = saved("[network]\ndomains = { \"a.test\" = \"allow\" }\n");
    r.unwrap();
    let v: toml::Table = toml::from_str(&after).unwrap();
    assert_eq!(v["network"]["domains"]["api.test"].as_str(), Some("allow"));
    assert_eq!(v["network"]["domains"]["a.test"].as_str(), Some("allow"));
    // A profile: its own table.
    let (r, after) =
        saved("default_permissions = \"dev\"\n[permissions.dev.network]\nmode = \"full\"\n");
    r.unwrap();
    let v: toml::Table = toml::from_str(&after).unwrap();
    assert_eq!(
        v["permissions"]["dev"]["network"]["domains"]["api.test"].as_str(),
        Some("allow")
    );
    assert!(v.get("network").is_none(), "{after}");
    // There already (any spelling): unchanged.
    let before = "[network.domains]\n\"API.test.\" = \"allow\"\n";
    let (r, after) = saved(before);
    r.unwrap();
    assert_eq!(after, before);
    let before = "[network]\nallowed_domains = [\"api.test\"]\n";
    let (r, after) = saved(before);
    r.unwrap();
    assert_eq!(after, before);
    // Denied there: left alone, with the reason.
    for before in [
        "[network.domains]\n\"api.test\" = \"deny\"\n",
        "[network]\ndenied_domains = [\"api.test\"]\n",
    ] {
        let (r, after) = saved(before);
        let e = r.unwrap_err();
        assert!(e.to_string().contains("denies api.test"), "{e}");
        assert_eq!(after, before);
    }
    // Not valid TOML, not a valid config, or not a regular file: left alone.
    for before in [
        "[network\n",
        "[network]\nmode = \"sideways\"\n",
        "network = 3\n",
    ] {
        let (r, after) = saved(before);
        assert!(r.is_err(), "{before}");
        assert_eq!(after, before);
    }
    let e = save_allow(dir.path(), "api.test").unwrap_err();
    assert!(e.why.contains("not a regular file"), "{e}");
    // The mode of an existing file is kept; no temporary file is left behind.
    let path = dir.path().join("c.toml");
    std::fs::write(&path, "").unwrap();
    std::fs::set_permissions(&path, std::os::unix::fs::PermissionsExt::from_mode(0o640)).unwrap();
    save_allow(&path, "b.test").unwrap();
    assert_eq!(mode(&path), 0o640);
    let left: Vec<_> = std::fs::read_dir(dir.path())
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .collect();
    assert_eq!(left, [std::ffi::OsString::from("c.toml")]);
}

/// Approvals would widen the allowlist: a managed-only allowlist, or managed allowed_domains
/// that users may not extend, forbid them (and say which file); other requirements do not.
#[test]
fn managed_constraints_that_fix_the_allowlist_forbid_asking() {
    let dir = tempfile::tempdir().unwrap();
    let refusal = |requirements: &str| {
        let path = dir.path().join("requirements.toml");
        std::fs::write(&path, requirements).unwrap();
        let sources = proxy_config::Sources {
            system_requirements: Some(dir.path().join("none.toml")),
            requirement_files: vec![path],
            ..Default::default()
        };
        managed_refusal(&proxy_config::load(&sources).expect("a valid config"))
    };
    let r = refusal(
        "[network]\nallowed_domains = [\"api.test\"]\nmanaged_allowed_domains_only = true\n",
    )
    .expect("refused");
    assert!(
        r.contains("managed_allowed_domains_only") && r.contains("requirements.toml"),
        "{r}"
    );
    for fixed in ["", "allowlist_expansion_enabled = false\n"] {
        let r = refusal(&format!(
            "[network]\nallowed_domains = [\"api.test\"]\n{fixed}"
        ))
        .expect("refused");
        assert!(r.contains("allowlist_expansion_enabled"), "{r}");
    }
    assert_eq!(
        refusal(
            "[network]\nallowed_domains = [\"api.test\"]\nallowlist_expansion_enabled = true\n"
        ),
        None
    );
    assert_eq!(
        refusal("[network]\ndenied_domains = [\"evil.test\"]\n"),
        None
    );
    assert_eq!(refusal("[network]\nmode = \"limited\"\n"), None);
}
