//! Reloading the real `netproxy serve` process: on SIGHUP, when a config file changes, and on
//! `POST /reload`; a file that is bad or breaks the managed requirements leaves the last good
//! policy in force.

use proxy_test_support::wait_for;

use crate::support::{World, chmod, inotify_watches, json, serve};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sighup_reloads_good_files_and_keeps_the_last_good_policy() {
    let w = World::new(&["a.test", "b.test"]).await;
    let (b, _) = w.serve().requirements("[network]\nmode = \"limited\"\n");
    let s = b
        .config("[network.domains]\n\"a.test\" = \"allow\"\n")
        .start();
    let get = |host: &str| s.get(&w.url(host, "")).status;
    assert_eq!(get("a.test"), 200);
    assert_eq!(get("b.test"), 403);

    // A good file: b.test becomes allowed.
    s.write_config("[network.domains]\n\"b.test\" = \"allow\"\n");
    s.process.signal("HUP");
    wait_for("b.test allowed", || match get("b.test") {
        200 => Ok(()),
        other => Err(other),
    });
    assert_eq!(get("a.test"), 403);
    // A bad file, then one that violates the managed constraints, then one with a key that
    // needs a restart: each refused as a whole (the log says so), the last good policy stays.
    let refused = |file: &str, key: &str| {
        s.write_config(file);
        s.process.signal("HUP");
        s.process.wait_line("the reload refused", |l| {
            l.contains("reload refused") && l.contains(key)
        });
    };
    refused("[network.domains]\n\"a.test\" = \"maybe\"\n", "\"maybe\"");
    assert_eq!(get("b.test"), 200);
    refused(
        "[network]\nmode = \"full\"\n[network.domains]\n\"a.test\" = \"allow\"\n",
        "network.mode",
    );
    assert_eq!(get("b.test"), 200);
    refused(
        "[network]\nproxy_url = \"127.0.0.1:1\"\n[network.domains]\n\"a.test\" = \"allow\"\n",
        "network.proxy_url",
    );
    assert_eq!(get("a.test"), 403);

    let stderr = s.stop();
    assert!(stderr.contains("reload refused"), "{stderr}");
    assert!(stderr.contains("network.proxy_url"), "{stderr}");
    assert!(stderr.contains("config reloaded"), "{stderr}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_changed_config_file_is_reloaded_without_a_signal() {
    let w = World::new(&["a.test"]).await;
    let s = w.serve().start();
    // It watches its files (what `netproxy run` must not do).
    assert!(inotify_watches(s.process.id()) > 0);
    let get = || s.get(&w.url("a.test", "")).status;
    assert_eq!(get(), 403);
    // Replace the file the way editors do: write a new file, rename it over the old one.
    let tmp = s.path().join("netproxy.toml.new");
    std::fs::write(&tmp, "[network.domains]\n\"a.test\" = \"allow\"\n").unwrap();
    std::fs::rename(&tmp, s.config_path()).unwrap();
    wait_for("the change picked up", || match get() {
        200 => Ok(()),
        other => Err(other),
    });
}

#[test]
fn a_reload_that_breaks_the_requirements_keeps_the_last_good_policy() {
    let token = "reload-test-token";
    let (b, req) = serve()
        .admin()
        .env("NETPROXY_ADMIN_TOKEN", token)
        .requirements(
            "[network]\nallowed_domains = [\"*.corp.test\"]\nallowlist_expansion_enabled = true\n",
        );
    let s = b
        .config("[network.domains]\n\"one.example\" = \"allow\"\n")
        .start();
    let api = s.api(Some(token));
    let allowed = || {
        let (code, body) = api.get("/patterns");
        assert_eq!(code, 200, "{body}");
        let mut list: Vec<String> = json(&body)["allowed"]
            .as_array()
            .unwrap()
            .iter()
            .map(|p| p.as_str().unwrap().to_owned())
            .collect();
        list.sort();
        list
    };
    assert_eq!(allowed(), ["*.corp.test", "one.example"]);

    // A file now gives a managed name a static address: refused, the old policy stays.
    s.write_config(
        "[network.domains]\n\"two.example\" = \"allow\"\n[network.dns.hosts]\n\"api.corp.test\" = [\"93.184.216.34\"]\n",
    );
    let (code, body) = api.call("POST", "/reload", None);
    assert_eq!(code, 409, "{body}");
    let v = json(&body);
    assert_eq!(v["reason"], "constraint", "{body}");
    assert!(
        v["message"]
            .as_str()
            .unwrap()
            .contains("network.dns.hosts.\"api.corp.test\": a static host entry for a name the managed allowed_domains cover"),
        "{body}"
    );
    assert_eq!(allowed(), ["*.corp.test", "one.example"]);

    // The requirements file turns world-writable: refused too.
    s.write_config("[network.domains]\n\"two.example\" = \"allow\"\n");
    chmod(&req, 0o666);
    let (code, body) = api.call("POST", "/reload", None);
    assert_eq!(code, 409, "{body}");
    assert!(
        body.contains("the file is writable by every user"),
        "{body}"
    );
    assert_eq!(allowed(), ["*.corp.test", "one.example"]);

    // Fixed, the reload goes through.
    chmod(&req, 0o644);
    let (code, body) = api.call("POST", "/reload", None);
    assert_eq!(code, 200, "{body}");
    assert_eq!(allowed(), ["*.corp.test", "two.example"]);
}
