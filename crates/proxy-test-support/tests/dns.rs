//! The in-process DNS server answers a real resolver over UDP and TCP.
#![allow(clippy::unwrap_used)]

use std::net::IpAddr;
use std::time::Duration;

use hickory_resolver::Resolver;
use hickory_resolver::config::{NameServerConfig, ResolveHosts, ResolverConfig};
use hickory_resolver::net::runtime::TokioRuntimeProvider;
use proxy_test_support::{Answer, DnsServer};

fn resolver(server: &DnsServer, tcp_only: bool) -> hickory_resolver::TokioResolver {
    let ip = server.addr().ip();
    let mut ns = if tcp_only {
        NameServerConfig::tcp(ip)
    } else {
        NameServerConfig::udp_and_tcp(ip)
    };
    for c in &mut ns.connections {
        c.port = server.addr().port();
    }
    let mut b = Resolver::builder_with_config(
        ResolverConfig::from_name_servers(vec![ns]),
        TokioRuntimeProvider::default(),
    );
    let o = b.options_mut();
    o.timeout = Duration::from_millis(300);
    o.attempts = 1;
    o.use_hosts_file = ResolveHosts::Never;
    o.cache_size = 0;
    b.build().unwrap()
}

async fn lookup(r: &hickory_resolver::TokioResolver, name: &str) -> Result<Vec<IpAddr>, String> {
    r.lookup_ip(name)
        .await
        .map(|l| l.iter().collect())
        .map_err(|e| e.to_string())
}

#[tokio::test]
async fn answers_addresses_cnames_and_failures() {
    let dns = DnsServer::start().await.unwrap();
    dns.set(
        "multi.test",
        Answer::Addrs(vec!["127.0.0.2".parse().unwrap(), "::1".parse().unwrap()]),
    );
    dns.set("alias.test", Answer::Cname("multi.test".into()));
    dns.set("gone.test", Answer::NxDomain);
    dns.set("broken.test", Answer::ServFail);
    dns.set("silent.test", Answer::Drop);
    for tcp in [false, true] {
        let r = resolver(&dns, tcp);
        let mut got = lookup(&r, "multi.test").await.unwrap();
        got.sort();
        assert_eq!(
            got,
            vec![
                "127.0.0.2".parse::<IpAddr>().unwrap(),
                "::1".parse().unwrap()
            ]
        );
        let mut got = lookup(&r, "ALIAS.test.").await.unwrap();
        got.sort();
        assert_eq!(got.len(), 2);
        assert!(lookup(&r, "gone.test").await.is_err());
        assert!(lookup(&r, "unknown.test").await.is_err());
        assert!(lookup(&r, "broken.test").await.is_err());
        assert!(lookup(&r, "silent.test").await.is_err());
    }
    assert!(dns.queries_for("multi.test") >= 4);
}

#[tokio::test]
async fn sequences_change_between_queries() {
    let dns = DnsServer::start().await.unwrap();
    dns.set(
        "rebind.test",
        Answer::Sequence(vec![
            vec!["127.0.0.2".parse().unwrap()],
            vec!["127.0.0.1".parse().unwrap()],
        ]),
    );
    let r = resolver(&dns, false);
    assert_eq!(
        lookup(&r, "rebind.test").await.unwrap(),
        vec!["127.0.0.2".parse::<IpAddr>().unwrap()]
    );
    assert_eq!(
        lookup(&r, "rebind.test").await.unwrap(),
        vec!["127.0.0.1".parse::<IpAddr>().unwrap()]
    );
    assert_eq!(
        lookup(&r, "rebind.test").await.unwrap(),
        vec!["127.0.0.1".parse::<IpAddr>().unwrap()]
    );
}

/// A truncated answer: over UDP the TC bit and nothing else, so a resolver that asks over UDP
/// and TCP gets the addresses only by asking again over TCP; one that asks over UDP only gets
/// none.
#[tokio::test]
async fn a_truncated_answer_is_whole_only_over_tcp() {
    let dns = DnsServer::start().await.unwrap();
    dns.set(
        "big.test",
        Answer::Truncated(vec!["127.0.0.2".parse().unwrap()]),
    );
    let r = resolver(&dns, false);
    assert_eq!(
        lookup(&r, "big.test").await.unwrap(),
        vec!["127.0.0.2".parse::<IpAddr>().unwrap()]
    );
    assert!(dns.tcp_queries_for("big.test") >= 1, "{:?}", dns.queries());
    assert!(dns.queries_for("big.test") > dns.tcp_queries_for("big.test"));

    let mut ns = NameServerConfig::udp(dns.addr().ip());
    for c in &mut ns.connections {
        c.port = dns.addr().port();
    }
    let mut b = Resolver::builder_with_config(
        ResolverConfig::from_name_servers(vec![ns]),
        TokioRuntimeProvider::default(),
    );
    let o = b.options_mut();
    o.timeout = Duration::from_millis(300);
    o.attempts = 1;
    o.use_hosts_file = ResolveHosts::Never;
    o.cache_size = 0;
    let udp_only = b.build().unwrap();
    let before = dns.tcp_queries_for("big.test");
    let got = lookup(&udp_only, "big.test").await;
    assert!(got.as_ref().map_or(true, Vec::is_empty), "{got:?}");
    assert_eq!(dns.tcp_queries_for("big.test"), before);
}
