//! The metrics of the real `netproxy serve` process (`GET /metrics` of the admin API) as
//! traffic flows.

use proxy_test_support::wait_for;

use crate::support::World;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn byte_and_tunnel_metrics_follow_the_traffic() {
    let w = World::new(&["api.test"]).await;
    let s = w.serve().admin().args(&["--allow", "api.test"]).start();
    let api = s.api(Some(&s.token()));
    let body = "x".repeat(1000);
    let status = |args: &[&str]| s.curl().args(args).run().status;
    assert_eq!(status(&["-d", &body, &w.url("api.test", "up")]), 200);
    assert_eq!(status(&[&w.url("api.test", "bytes/5000")]), 200);
    assert_eq!(status(&["-p", &w.url("api.test", "bytes/3000")]), 200);
    let value = |text: &str, series: &str| -> u64 {
        text.lines()
            .find(|l| l.starts_with(series))
            .and_then(|l| l.rsplit(' ').next())
            .and_then(|v| v.parse().ok())
            .unwrap_or_else(|| panic!("{series} not in\n{text}"))
    };
    // The tunnel's bytes are added when it closes: wait for them.
    let m = wait_for("the bytes in the metrics", || {
        let (_, m) = api.get("/metrics");
        let up = value(
            &m,
            "netproxy_bytes_total{protocol=\"http\",direction=\"up\"}",
        );
        let down = value(
            &m,
            "netproxy_bytes_total{protocol=\"http\",direction=\"down\"}",
        );
        if up >= 1000 && down >= 8000 {
            Ok(m)
        } else {
            Err(format!("up {up} down {down}\n{m}"))
        }
    });
    assert_eq!(value(&m, "netproxy_active_tunnels{protocol=\"http\"}"), 0);
}
