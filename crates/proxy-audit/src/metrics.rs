//! The proxy's metrics (`GET /metrics`), in the OpenMetrics text format through
//! `prometheus-client`.
//!
//! Decisions are counted by an audit sink ([`Metrics`] implements `AuditSink`), so every
//! decision of every front-end is counted once, exactly where it is audited. The rest is read
//! or told from outside: DNS lookups ([`Metrics::dns_lookup`]), reloads, the other sinks' drop
//! counters, and each front-end's live counts ([`FrontEndCounts`], read at scrape time).

use std::time::Duration;

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::Registry;
use proxy_core::{AuditEvent, AuditSink};

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ProtocolLabel {
    protocol: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct DecisionLabels {
    protocol: &'static str,
    decision: &'static str,
    reason: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ResultLabel {
    result: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct DirectionLabels {
    protocol: &'static str,
    direction: &'static str,
}

/// Every metric of the proxy.
#[derive(Debug)]
pub struct Metrics {
    registry: Registry,
    requests: Family<ProtocolLabel, Counter>,
    decisions: Family<DecisionLabels, Counter>,
    dns_lookups: Counter,
    dns_failures: Counter,
    dns_seconds: Histogram,
    reloads: Family<ResultLabel, Counter>,
    audit_dropped: Counter,
    connections: Family<ProtocolLabel, Gauge>,
    tunnels: Family<ProtocolLabel, Gauge>,
    bytes: Family<DirectionLabels, Counter>,
    foreign_datagrams: Family<ProtocolLabel, Counter>,
    front_ends: std::sync::Mutex<Vec<(&'static str, CountsSource)>>,
    /// Byte totals already added to `bytes`, per front-end and direction.
    seen_bytes: std::sync::Mutex<Vec<(u64, u64)>>,
    /// Foreign datagram totals already added to `foreign_datagrams`, per front-end.
    seen_foreign: std::sync::Mutex<Vec<u64>>,
    /// Audit sinks' drop counters, and what was already added from each.
    drop_sources: std::sync::Mutex<Vec<(DropSource, u64)>>,
}

/// Reads an audit sink's count of dropped events.
pub struct DropSource(pub Box<dyn Fn() -> u64 + Send + Sync>);

/// A front-end's live counts as read at scrape time: connections and tunnels open now, and
/// running totals of bytes relayed and of foreign UDP datagrams dropped.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct FrontEndCounts {
    /// Client connections open now.
    pub connections: u64,
    /// Tunnels open now.
    pub tunnels: u64,
    /// Bytes relayed from client to upstream so far.
    pub bytes_up: u64,
    /// Bytes relayed from upstream to client so far.
    pub bytes_down: u64,
    /// Datagrams dropped so far because another sender than the association's client sent them.
    pub foreign_datagrams: u64,
}

/// Reads a front-end's [`FrontEndCounts`].
struct CountsSource(Box<dyn Fn() -> FrontEndCounts + Send + Sync>);

impl std::fmt::Debug for CountsSource {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("CountsSource")
    }
}

impl std::fmt::Debug for DropSource {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("DropSource")
    }
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

impl Metrics {
    /// A fresh registry with every metric at zero.
    pub fn new() -> Self {
        let mut registry = Registry::with_prefix("netproxy");
        let requests = Family::<ProtocolLabel, Counter>::default();
        registry.register(
            "requests",
            "Requests decided, by protocol",
            requests.clone(),
        );
        let decisions = Family::<DecisionLabels, Counter>::default();
        registry.register(
            "decisions",
            "Decisions, by protocol, decision and reason",
            decisions.clone(),
        );
        let dns_lookups = Counter::default();
        registry.register("dns_lookups", "DNS lookups made", dns_lookups.clone());
        let dns_failures = Counter::default();
        registry.register(
            "dns_failures",
            "DNS lookups that failed or timed out",
            dns_failures.clone(),
        );
        let dns_seconds = Histogram::new([
            0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5,
        ]);
        registry.register(
            "dns_lookup_seconds",
            "DNS lookup latency",
            dns_seconds.clone(),
        );
        let reloads = Family::<ResultLabel, Counter>::default();
        registry.register(
            "reloads",
            "Config reloads and admin changes, by result (ok, failed)",
            reloads.clone(),
        );
        let audit_dropped = Counter::default();
        registry.register(
            "audit_export_dropped",
            "Audit events a sink lost: its queue was full, a write or export failed, or the collector rejected them",
            audit_dropped.clone(),
        );
        let connections = Family::<ProtocolLabel, Gauge>::default();
        registry.register(
            "active_connections",
            "Client connections open now, by listener protocol",
            connections.clone(),
        );
        let tunnels = Family::<ProtocolLabel, Gauge>::default();
        registry.register(
            "active_tunnels",
            "Tunnels open now, by listener protocol",
            tunnels.clone(),
        );
        let bytes = Family::<DirectionLabels, Counter>::default();
        registry.register(
            "bytes",
            "Bytes relayed (forwarded bodies as they flow, tunnels when they close), by listener protocol and direction (up: client to upstream)",
            bytes.clone(),
        );
        let foreign_datagrams = Family::<ProtocolLabel, Counter>::default();
        registry.register(
            "udp_foreign_datagrams",
            "Datagrams sent to a UDP association's relay by another sender than its client, dropped",
            foreign_datagrams.clone(),
        );
        Self {
            registry,
            requests,
            decisions,
            dns_lookups,
            dns_failures,
            dns_seconds,
            reloads,
            audit_dropped,
            connections,
            tunnels,
            bytes,
            foreign_datagrams,
            front_ends: std::sync::Mutex::default(),
            seen_bytes: std::sync::Mutex::default(),
            seen_foreign: std::sync::Mutex::default(),
            drop_sources: std::sync::Mutex::default(),
        }
    }

    /// Counts one DNS lookup and its latency.
    pub fn dns_lookup(&self, took: Duration, ok: bool) {
        self.dns_lookups.inc();
        if !ok {
            self.dns_failures.inc();
        }
        self.dns_seconds.observe(took.as_secs_f64());
    }

    /// Counts a reload or an admin change.
    pub fn reload(&self, ok: bool) {
        let result = if ok { "ok" } else { "failed" };
        self.reloads.get_or_create(&ResultLabel { result }).inc();
    }

    /// Registers an audit sink's dropped-event counter, read at scrape time.
    pub fn add_drop_source(&self, source: DropSource) {
        lock(&self.drop_sources).push((source, 0));
    }

    /// Registers a front-end's live counts under `protocol` (`http`, `socks5`); `counts` is
    /// called at every scrape.
    pub fn add_front_end(
        &self,
        protocol: &'static str,
        counts: impl Fn() -> FrontEndCounts + Send + Sync + 'static,
    ) {
        lock(&self.front_ends).push((protocol, CountsSource(Box::new(counts))));
        lock(&self.seen_bytes).push((0, 0));
        lock(&self.seen_foreign).push(0);
    }

    /// The OpenMetrics text exposition.
    pub fn render(&self) -> String {
        self.sync_front_ends();
        let mut out = String::new();
        if prometheus_client::encoding::text::encode(&mut out, &self.registry).is_err() {
            out.clear();
        }
        out
    }

    fn sync_front_ends(&self) {
        for (source, seen) in lock(&self.drop_sources).iter_mut() {
            let now = (source.0)();
            self.audit_dropped.inc_by(now.saturating_sub(*seen));
            *seen = now.max(*seen);
        }
        let fronts = lock(&self.front_ends);
        let mut seen = lock(&self.seen_bytes);
        let mut seen_foreign = lock(&self.seen_foreign);
        for (i, (protocol, counts)) in fronts.iter().enumerate() {
            let stats = (counts.0)();
            let label = ProtocolLabel { protocol };
            let gauge = |g: &Family<ProtocolLabel, Gauge>, v: u64| {
                g.get_or_create(&label)
                    .set(i64::try_from(v).unwrap_or(i64::MAX));
            };
            gauge(&self.connections, stats.connections);
            gauge(&self.tunnels, stats.tunnels);
            let up = stats.bytes_up;
            let down = stats.bytes_down;
            let (seen_up, seen_down) = seen[i];
            let add = |direction: &'static str, by: u64| {
                self.bytes
                    .get_or_create(&DirectionLabels {
                        protocol,
                        direction,
                    })
                    .inc_by(by);
            };
            add("up", up.saturating_sub(seen_up));
            add("down", down.saturating_sub(seen_down));
            seen[i] = (up.max(seen_up), down.max(seen_down));
            let foreign = stats.foreign_datagrams;
            if *protocol == "socks5" || foreign > 0 {
                self.foreign_datagrams
                    .get_or_create(&label)
                    .inc_by(foreign.saturating_sub(seen_foreign[i]));
            }
            seen_foreign[i] = foreign.max(seen_foreign[i]);
        }
    }
}

fn lock<T>(m: &std::sync::Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

impl AuditSink for Metrics {
    fn record(&self, ev: &AuditEvent) {
        let protocol = ev.protocol.as_str();
        self.requests
            .get_or_create(&ProtocolLabel { protocol })
            .inc();
        self.decisions
            .get_or_create(&DecisionLabels {
                protocol,
                decision: ev.decision.as_str(),
                reason: ev.reason,
            })
            .inc();
    }
}

#[cfg(test)]
mod tests {
    use std::sync::{Arc, Mutex};

    use proxy_core::{Decision, Mode, Protocol, Reason, RequestMeta, Target};

    use super::*;

    /// A front-end's counts, changed by the test as a front-end would change them.
    #[derive(Default)]
    struct Stats(Mutex<FrontEndCounts>);

    impl Stats {
        fn source(self: &Arc<Self>) -> impl Fn() -> FrontEndCounts + Send + Sync + 'static {
            let stats = self.clone();
            move || *lock(&stats.0)
        }

        fn change(&self, f: impl FnOnce(&mut FrontEndCounts)) {
            f(&mut lock(&self.0));
        }
    }

    #[test]
    fn decisions_dns_reloads_and_front_ends_show_up() {
        let m = Metrics::new();
        let meta = RequestMeta::new(
            Protocol::HttpsConnect,
            Target::parse_authority("evil.example:443", 443).unwrap(),
        );
        m.record(&AuditEvent::new(
            &meta,
            &Decision::deny(Reason::Denied),
            Mode::Full,
        ));
        m.record(&AuditEvent::new(&meta, &Decision::allow(), Mode::Full));
        m.record(&AuditEvent::dns_not_served(
            [b"a".as_slice(), b"test".as_slice()],
            53,
            "127.0.0.1:1".parse().unwrap(),
            Mode::Full,
        ));
        m.dns_lookup(Duration::from_millis(3), true);
        m.dns_lookup(Duration::from_millis(30), false);
        m.reload(true);
        m.reload(false);
        let stats = Arc::new(Stats::default());
        m.add_front_end("http", stats.source());
        // Two connections open, a tunnel that carried 100 bytes up closed.
        stats.change(|c| {
            c.connections = 2;
            c.bytes_up += 100;
        });
        let text = m.render();
        for line in [
            "netproxy_requests_total{protocol=\"https_connect\"} 2",
            "netproxy_decisions_total{protocol=\"https_connect\",decision=\"deny\",reason=\"denied\"} 1",
            "netproxy_decisions_total{protocol=\"https_connect\",decision=\"allow\",reason=\"allow\"} 1",
            "netproxy_requests_total{protocol=\"dns\"} 1",
            "netproxy_decisions_total{protocol=\"dns\",decision=\"deny\",reason=\"dns_not_served\"} 1",
            "netproxy_dns_lookups_total 2",
            "netproxy_dns_failures_total 1",
            "netproxy_dns_lookup_seconds_count 2",
            "netproxy_reloads_total{result=\"ok\"} 1",
            "netproxy_reloads_total{result=\"failed\"} 1",
            "netproxy_active_connections{protocol=\"http\"} 2",
            "netproxy_bytes_total{protocol=\"http\",direction=\"up\"} 100",
        ] {
            assert!(text.lines().any(|l| l == line), "{line}\n{text}");
        }
        // Counters only ever grow: a second scrape adds only what is new.
        stats.change(|c| c.bytes_up += 50);
        let text = m.render();
        assert!(
            text.contains("netproxy_bytes_total{protocol=\"http\",direction=\"up\"} 150"),
            "{text}"
        );
        assert!(text.ends_with("# EOF\n"));
    }

    #[test]
    fn foreign_datagrams_are_counted_per_front_end() {
        let m = Metrics::new();
        let http = Arc::new(Stats::default());
        let socks = Arc::new(Stats::default());
        m.add_front_end("http", http.source());
        m.add_front_end("socks5", socks.source());
        let line = |text: &str, n: u64| {
            let want = format!("netproxy_udp_foreign_datagrams_total{{protocol=\"socks5\"}} {n}");
            assert!(text.lines().any(|l| l == want), "{want}\n{text}");
            assert!(!text.contains("udp_foreign_datagrams_total{protocol=\"http\"}"));
        };
        line(&m.render(), 0);
        socks.change(|c| c.foreign_datagrams += 2);
        line(&m.render(), 2);
        socks.change(|c| c.foreign_datagrams += 1);
        line(&m.render(), 3);
    }
}
