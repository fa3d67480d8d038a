//! The admin API of the real `netproxy serve` process: token, every route, changes in force
//! when answered, managed constraints, reload, and no token in any log line.

use crate::support::{World, json, serve};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn routes_change_the_running_proxy_and_never_show_the_token() {
    let w = World::new(&["api.test", "new.test", "other.test"]).await;
    let port = w.origin.addr().port();
    let s = w
        .serve()
        .admin()
        .env("RUST_LOG", "debug")
        .args(&["--allow", "api.test"])
        .start();
    let token = s.token();
    let api = s.api(Some(&token));
    let status = |args: &[&str], host: &str| s.curl().args(args).get(w.url(host, "x")).status;

    let (c, body) = s.api(None).get("/health");
    assert_eq!((c, json(&body)["status"].as_str()), (200, Some("ok")));
    assert_eq!(s.api(None).get("/config").0, 401);
    assert_eq!(s.api(Some("nope")).get("/patterns").0, 401);

    assert_eq!(status(&[], "api.test"), 200);
    assert_eq!(status(&[], "new.test"), 403);

    // /domains: in force when answered.
    let (c, body) = api.post("/domains", r#"{"allow":["new.test"]}"#);
    assert_eq!(c, 200, "{body}");
    assert_eq!(status(&[], "new.test"), 200);
    let (c, body) = api.get("/patterns");
    assert_eq!(c, 200);
    let p = json(&body);
    assert!(
        p["allowed"]
            .as_array()
            .unwrap()
            .iter()
            .any(|v| v == "new.test"),
        "{body}"
    );
    // Replaced key by key: the same pattern denied now.
    let (c, _) = api.post("/domains", r#"{"deny":["NEW.test."]}"#);
    assert_eq!(c, 200);
    assert_eq!(status(&[], "new.test"), 403);

    // /mode.
    let (c, body) = api.post("/mode", r#"{"mode":"limited"}"#);
    assert_eq!(
        (c, json(&body)["mode"].as_str()),
        (200, Some("limited")),
        "{body}"
    );
    assert_eq!(status(&["-X", "POST"], "api.test"), 403);
    assert_eq!(status(&[], "api.test"), 200);

    // /config shows the runtime layer.
    let (c, body) = api.get("/config");
    assert_eq!(c, 200);
    let cfg = json(&body);
    let mode = cfg["values"]
        .as_array()
        .unwrap()
        .iter()
        .find(|v| v["key"] == "network.mode")
        .unwrap();
    assert_eq!(
        (mode["value"].as_str(), mode["layer"].as_str()),
        (Some("limited"), Some("runtime"))
    );

    // /reload keeps the runtime layer, takes the file's changes, refuses a bad file.
    s.write_config("[network.domains]\n\"other.test\" = \"allow\"\n");
    let (c, body) = api.call("POST", "/reload", None);
    assert_eq!(
        (c, json(&body)["status"].as_str()),
        (200, Some("reloaded")),
        "{body}"
    );
    assert_eq!(status(&[], "other.test"), 200);
    assert_eq!(status(&["-X", "POST"], "other.test"), 403);
    s.write_config("[network\n");
    let (c, body) = api.call("POST", "/reload", None);
    assert_eq!(c, 409, "{body}");
    assert_eq!(json(&body)["reason"], "invalid_config");
    assert_eq!(status(&[], "other.test"), 200);
    s.write_config("[network]\nproxy_url = \"http://127.0.0.1:1\"\n");
    let (c, body) = api.call("POST", "/reload", None);
    assert_eq!(c, 409, "{body}");
    assert!(body.contains("network.proxy_url"), "{body}");
    s.write_config("");

    // Bad input.
    assert_eq!(api.post("/mode", "{").0, 400);
    assert_eq!(api.post("/mode", r#"{"mode":"open"}"#).0, 400);
    assert_eq!(api.post("/domains", r#"{"allow":["a?.test"]}"#).0, 400);
    let (c, body) = api.post("/domains", r#"{"allow":["https://github.com/x"]}"#);
    assert_eq!(c, 400, "{body}");
    assert!(
        body.contains("a pattern is a host: did you mean github.com?"),
        "{body}"
    );
    let big = format!(r#"{{"allow":["{}"]}}"#, "a".repeat(70_000));
    assert_eq!(api.post("/domains", &big).0, 413);

    // /blocked: drains unless peeking; total counts everything.
    let (c, body) = api.get("/blocked?peek=true");
    assert_eq!(c, 200);
    let b = json(&body);
    let total = b["total"].as_u64().unwrap();
    assert!(total >= 3, "{body}");
    let first = &b["blocked"][0];
    for key in [
        "host",
        "port",
        "reason",
        "protocol",
        "method",
        "client",
        "mode",
        "decision",
        "source",
        "timestamp",
    ] {
        assert!(first.get(key).is_some(), "{key}: {first}");
    }
    assert_eq!(first["host"], "new.test");
    let (_, body) = api.get("/blocked");
    assert_eq!(
        json(&body)["blocked"].as_array().unwrap().len() as u64,
        total.min(200)
    );
    let (_, body) = api.get("/blocked");
    assert_eq!(json(&body)["blocked"].as_array().unwrap().len(), 0);
    assert_eq!(json(&body)["total"].as_u64().unwrap(), total);

    // /check answers like `netproxy check --json`, with the rule and layer.
    let (c, body) = api.post("/check", &format!(r#"{{"url":"http://new.test:{port}/"}}"#));
    assert_eq!(c, 200, "{body}");
    let v = json(&body);
    assert_eq!(
        (v["decision"].as_str(), v["reason"].as_str()),
        (Some("deny"), Some("denied"))
    );
    assert_eq!(v["rule"]["layer"], "runtime");
    let (c, body) = api.post(
        "/check",
        r#"{"host":"api.test","port":80,"protocol":"http","method":"GET"}"#,
    );
    assert_eq!(c, 200, "{body}");
    assert_eq!(json(&body)["decision"], "allow");
    assert_eq!(api.post("/check", r#"{"url":"gopher://x"}"#).0, 400);

    // /metrics moves when requests flow.
    let count = |text: &str| -> u64 {
        text.lines()
            .filter(|l| l.starts_with("netproxy_requests_total{protocol=\"http\"}"))
            .map(|l| l.rsplit(' ').next().unwrap().parse::<u64>().unwrap())
            .sum()
    };
    let (c, before) = api.get("/metrics");
    assert_eq!(c, 200);
    assert_eq!(status(&[], "api.test"), 200);
    assert_eq!(status(&[], "evil.test"), 403);
    let (_, after) = api.get("/metrics");
    assert_eq!(count(&after), count(&before) + 2, "{after}");
    assert!(
        after.contains(
            "netproxy_decisions_total{protocol=\"http\",decision=\"deny\",reason=\"not_allowed\"}"
        ),
        "{after}"
    );
    assert!(
        after.contains("netproxy_reloads_total{result=\"failed\"} "),
        "{after}"
    );
    assert!(after.contains("netproxy_dns_lookups_total "), "{after}");

    // The token is in no response and no log line, even at debug level.
    for p in ["/config", "/metrics", "/patterns"] {
        assert!(!api.get(p).1.contains(&token));
    }
    let log = s.stop();
    assert!(log.contains("admin API listening"), "{log}");
    assert!(!log.contains(&token), "the token leaked into the log");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn managed_constraints_answer_409_and_tokens_come_from_config_or_env() {
    let w = World::new(&[]).await;
    let (b, _) = w.serve().admin().requirements(
        "[network]\nmode = \"limited\"\nallowed_domains = [\"api.test\"]\nmanaged_allowed_domains_only = true\n",
    );
    let s = b.env("NETPROXY_ADMIN_TOKEN", "from-env-123").start();
    let api = s.api(Some("from-env-123"));
    assert!(!s.path().join("home/admin.token").exists());
    let (c, body) = api.post("/mode", r#"{"mode":"full"}"#);
    assert_eq!(c, 409, "{body}");
    assert_eq!(json(&body)["reason"], "constraint");
    let (c, _) = api.get("/patterns");
    assert_eq!(c, 200);
    drop(s);

    let s = w
        .serve()
        .admin()
        .config("[network]\nadmin_token = \"from-config-456\"\n")
        .env("NETPROXY_ADMIN_TOKEN", "from-env-123")
        .start();
    assert_eq!(s.api(Some("from-env-123")).get("/patterns").0, 401);
    let api = s.api(Some("from-config-456"));
    assert_eq!(api.get("/patterns").0, 200);
    let (_, body) = api.get("/config");
    assert!(!body.contains("from-config-456"), "{body}");
}

#[test]
fn a_busy_admin_port_stops_the_start() {
    let busy = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    serve()
        .args(&["--admin", &busy.local_addr().unwrap().to_string()])
        .start_fails()
        .assert_err(1, &["cannot bind the admin API listener"]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_admin_api_stays_on_loopback_unless_dangerously_allowed() {
    let w = World::new(&[]).await;
    let s = w.serve().args(&["--admin", "0.0.0.0:0"]).start();
    let admin = s.admin.clone().unwrap();
    let err = s.stop();
    assert!(admin.starts_with("127.0.0.1:"), "{admin}");
    assert!(
        err.contains("dangerously_allow_non_loopback_admin"),
        "{err}"
    );
}
