//! The assembled proxy: config → snapshot, resolver, gate, dialer, audit; reload; serving.

use std::sync::Arc;

use arc_swap::ArcSwap;
use proxy_audit::{Audit, DropSource, FrontEndCounts, Metrics};
use proxy_config::{Config, DomainEdit, RuntimeLayer, Sources};
use proxy_io::Limits;
use tokio::net::TcpListener;

use proxy_core::DomainChange;

use proxy_gate::{
    OwnAddrsWatch, PolicyGate, ResolveError, Resolver, SharedSnapshot, Snapshot, TcpDialer,
    UpstreamProxies,
};

/// Why the proxy could not start.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    /// The config is invalid or violates managed constraints (exit 3).
    #[error("{0}")]
    Config(#[from] proxy_config::Error),
    /// The resolver could not be built.
    #[error(transparent)]
    Resolver(#[from] ResolveError),
    /// OTLP export could not start.
    #[error("[otel]: {0}")]
    Otlp(#[from] proxy_audit::OtlpError),
    /// The machine's own addresses could not be listed or watched (rtnetlink).
    #[error("cannot watch the machine's own addresses: {0}")]
    OwnAddrs(#[source] std::io::Error),
    /// HTTPS interception (`mitm`) could not start: the CA or the TLS configuration.
    #[error(transparent)]
    Mitm(#[from] crate::MitmStartError),
    /// The audit file could not be opened.
    #[error("cannot open the audit log {path}: {source}")]
    AuditLog {
        /// The configured path.
        path: String,
        /// Why.
        #[source]
        source: std::io::Error,
    },
}

/// Why a reload was refused; the previous config stays in force.
#[derive(Debug, thiserror::Error)]
pub enum ReloadError {
    /// The new config is invalid or violates managed constraints.
    #[error("{0}")]
    Config(#[from] proxy_config::Error),
    /// The change itself is invalid (a bad pattern).
    #[error("{0}")]
    Invalid(String),
    /// The new config changes keys that need a restart.
    #[error("the new config changes {}, which need a restart; nothing was reloaded", .0.join(", "))]
    NeedsRestart(Vec<String>),
    /// The layers were read once at start and are not re-read ([`Files::ReadOnce`]: `run`).
    #[error(
        "the config files were read once at start and are not re-read during a run; change the policy through the runtime layer (POST /domains, POST /mode)"
    )]
    ReadOnce,
}

/// Whether the config files are read again during the service's life.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Files {
    /// Re-read on reload (SIGHUP, `POST /reload`, the file watcher): `serve`.
    Watched,
    /// Read once at start and kept in memory; a reload is refused and runtime changes are
    /// applied over the contents read at start: `run`, whose child could otherwise widen its
    /// own policy by writing a config file.
    ReadOnce,
}

/// The assembled proxy.
#[derive(Debug)]
pub struct Service {
    sources: Sources,
    /// The files read at start, under [`Files::ReadOnce`].
    read_once: Option<proxy_config::ReadOnce>,
    /// The effective config in force (the gate's snapshot is compiled from it).
    config: ArcSwap<Config>,
    state: SharedSnapshot,
    /// The admin API's layer (docs/admin-api.md, "The runtime layer"), kept across file reloads. Its lock also
    /// serialises every change of config, so two changes never interleave.
    runtime: std::sync::Mutex<RuntimeLayer>,
    audit: Arc<Audit>,
    metrics: Arc<Metrics>,
    gate: Arc<PolicyGate>,
    dialer: Arc<TcpDialer>,
    /// The interceptor both front-ends get (HTTPS interception when `mitm` is on at start).
    interceptor: Arc<crate::Interception>,
    /// The actions of hooks, with their secrets (read again on every reload).
    actions: Arc<ArcSwap<proxy_mitm::HookActions>>,
    /// netproxy's environment, as the caller looks it up (hook secrets named by variable).
    env: Env,
    limits: Limits,
    socks_stats: Arc<proxy_io::Stats>,
    /// Where SOCKS5 UDP associations get their client-facing socket.
    relays: Arc<dyn proxy_socks::RelaySockets>,
    audit_file: Option<Arc<proxy_audit::JsonLinesFile>>,
    otlp: Option<Arc<proxy_audit::OtlpSink>>,
    upstream_warnings: Vec<String>,
    /// The credential broker's vault, when `credential_broker` is on (made at start).
    vault: Option<Arc<proxy_broker::Vault>>,
    /// What the broker withheld from the child, said at start.
    broker_warnings: Vec<String>,
    /// Keeps the gate's own-address set current while the service lives.
    _own_watch: Option<OwnAddrsWatch>,
    /// The task that judges open connections again when the own-address set changes.
    _rejudge_on_own_change: Option<AbortOnDrop>,
    /// The requests held for an answer (`run --ask`), when the gate asks.
    approvals: Option<crate::Approvals>,
}

/// A lookup of netproxy's own environment.
#[derive(Clone)]
struct Env(Arc<Lookup>);

/// A variable's value, `None` when unset.
type Lookup = dyn Fn(&str) -> Option<String> + Send + Sync;

impl std::fmt::Debug for Env {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Env")
    }
}

/// What the managed requirements of `config` leave to the user, for the remedies of refusals
/// (docs/run.md, "Remedies"): the first requirements file that limits allow entries, keeps
/// limited mode, forbids local binding or keeps the proxy disabled decides that.
pub fn managed_of(config: &Config) -> proxy_gate::Managed {
    let mut m = proxy_gate::Managed::default();
    for r in config.requirements() {
        let file = r.origin.display().to_string();
        if m.allowlist.is_none()
            && let Some(allowed) = &r.allowed_domains
        {
            m.allowlist = match (
                r.managed_allowed_domains_only,
                r.allowlist_expansion_enabled,
            ) {
                (true, _) | (false, Some(false)) => Some((file.clone(), None)),
                (false, None) => Some((file.clone(), Some(allowed.clone()))),
                (false, Some(true)) => None,
            };
        }
        if r.mode == Some(proxy_core::Mode::Limited) {
            m.mode.get_or_insert_with(|| file.clone());
        }
        if r.allow_local_binding == Some(false) {
            m.local.get_or_insert_with(|| file.clone());
        }
        if r.enabled == Some(false) {
            m.enabled.get_or_insert_with(|| file.clone());
        }
        m.files.push(file);
    }
    m
}

/// The gate's settings in `config`.
fn gate_settings(config: &Config) -> proxy_gate::Settings {
    proxy_gate::Settings {
        allow_upstream_proxy: config.allow_upstream_proxy(),
        verify_sni: config.verify_sni(),
    }
}

fn limits_of(config: &Config) -> Limits {
    Limits {
        header_timeout: config.header_timeout(),
        idle_timeout: config.idle_timeout(),
        max_header_bytes: usize::try_from(config.max_header_bytes()).unwrap_or(usize::MAX),
        max_connections: usize::try_from(config.max_connections()).unwrap_or(usize::MAX),
        udp: config.enable_socks5_udp(),
        proxy_auth: None,
        stats: Arc::default(),
    }
}

impl Service {
    /// Loads the config from `sources` and assembles the proxy. `env` looks up netproxy's own
    /// environment (for the upstream proxy variables); problems with those variables are
    /// returned as warnings by [`Service::upstream_warnings`].
    pub fn new(
        sources: Sources,
        env: impl Fn(&str) -> Option<String> + Send + Sync + 'static,
    ) -> Result<Self, StartError> {
        Self::with_audit(sources, env, Audit::default(), Files::Watched)
    }

    /// Like [`Service::new`], recording decisions into `audit` (with its extra sinks); `files`
    /// says whether the config files may be re-read later.
    pub fn with_audit(
        sources: Sources,
        env: impl Fn(&str) -> Option<String> + Send + Sync + 'static,
        audit: Audit,
        files: Files,
    ) -> Result<Self, StartError> {
        Self::with_decider(sources, env, audit, files, None)
    }

    /// Like [`Service::with_audit`], with `decider` asked about every allowlist miss that
    /// the managed requirements leave open (`run --learn`'s
    /// [`AllowMisses`](crate::suggest::AllowMisses); docs/run.md).
    pub fn with_decider(
        sources: Sources,
        env: impl Fn(&str) -> Option<String> + Send + Sync + 'static,
        audit: Audit,
        files: Files,
        decider: Option<Arc<dyn proxy_gate::Decider>>,
    ) -> Result<Self, StartError> {
        let env = Env(Arc::new(env));
        let read_once = match files {
            Files::Watched => None,
            Files::ReadOnce => Some(proxy_config::ReadOnce::read(sources.clone())),
        };
        let config = match &read_once {
            Some(r) => r.load_with(&[])?,
            None => proxy_config::load(&sources)?,
        };
        let actions = Arc::new(ArcSwap::from_pointee(crate::interception::hook_actions(
            &config, &*env.0,
        )?));
        // The broker's grants and dummies, made once (the child holds the dummies).
        let (vault, broker_warnings) = match crate::broker::vault(&config, &*env.0)? {
            Some((vault, warnings)) => (Some(Arc::new(vault)), warnings),
            None => (None, Vec::new()),
        };
        let policy =
            config.policy_with(|b| crate::broker::add_destinations(vault.as_deref(), b))?;
        let resolver = Resolver::new(
            config.dns_nameservers().as_deref(),
            config.dns_hosts(),
            config.dns_timeout(),
        )?;
        let limits = limits_of(&config);
        let dialer = Arc::new(TcpDialer::new(config.connect_timeout()));
        let state: SharedSnapshot = Arc::new(ArcSwap::from_pointee(
            Snapshot::new(policy, gate_settings(&config)).with_managed(managed_of(&config)),
        ));
        let metrics = Arc::new(Metrics::new());
        let mut audit = audit.with_sink(metrics.clone());
        let audit_file = match config.audit_log() {
            Some(path) => {
                let file = Arc::new(
                    proxy_audit::JsonLinesFile::open(std::path::Path::new(path)).map_err(
                        |source| StartError::AuditLog {
                            path: path.to_owned(),
                            source,
                        },
                    )?,
                );
                audit = audit.with_sink(file.clone());
                let f = file.clone();
                metrics.add_drop_source(DropSource(Box::new(move || f.dropped())));
                Some(file)
            }
            None => None,
        };
        let otlp = match config.otel_exporter() {
            Some(exporter) => {
                let protocol = if exporter == "otlp-grpc" {
                    proxy_audit::OtlpProtocol::Grpc
                } else {
                    proxy_audit::OtlpProtocol::Http
                };
                let default = match protocol {
                    proxy_audit::OtlpProtocol::Grpc => "http://127.0.0.1:4317",
                    proxy_audit::OtlpProtocol::Http => "http://127.0.0.1:4318",
                };
                let sink = Arc::new(proxy_audit::OtlpSink::start(&proxy_audit::OtlpConfig {
                    protocol,
                    endpoint: config.otel_endpoint().unwrap_or(default).to_owned(),
                    headers: config.otel_headers(),
                    service_version: env!("CARGO_PKG_VERSION").to_owned(),
                })?);
                audit = audit.with_sink(sink.clone());
                let s = sink.clone();
                metrics.add_drop_source(DropSource(Box::new(move || s.dropped())));
                Some(sink)
            }
            None => None,
        };
        let audit = Arc::new(audit);
        let (upstream, upstream_warnings) = UpstreamProxies::from_env(|k: &str| (env.0)(k));
        // The machine's own addresses, kept current from the kernel's address events when a
        // runtime is there to run the watch (serve, run), else as one dump found them.
        let (own_watch, own) = if tokio::runtime::Handle::try_current().is_ok() {
            let watch = OwnAddrsWatch::start().map_err(StartError::OwnAddrs)?;
            let shared = watch.shared();
            (Some(watch), shared)
        } else {
            let own = proxy_gate::dump_own_addrs().map_err(StartError::OwnAddrs)?;
            (None, Arc::new(ArcSwap::from_pointee(own)))
        };
        let gate = PolicyGate::new(state.clone(), resolver, audit.clone(), own)
            .with_upstream(upstream)
            .with_lookup_observer({
                let metrics = metrics.clone();
                Arc::new(move |took, ok| metrics.dns_lookup(took, ok))
            });
        let gate = Arc::new(match decider {
            Some(d) => gate.with_decider(d),
            None => gate,
        });
        let interceptor = Arc::new(if config.mitm() || config.credential_broker() {
            crate::Interception::mitm(
                gate.clone(),
                sources.home_dir.as_deref(),
                &limits,
                &*env.0,
                actions.clone(),
                vault.clone(),
            )?
        } else {
            crate::Interception::Off
        });
        // A new own address makes open connections to it local: they are judged again.
        let rejudge = own_watch.as_ref().map(|w| {
            let (changed, gate, state) = (w.changed(), gate.clone(), state.clone());
            tokio::spawn(async move {
                loop {
                    changed.notified().await;
                    gate.revoke_disallowed(&state.load_full());
                }
            })
            .abort_handle()
        });
        let socks_stats = Arc::new(proxy_io::Stats::default());
        metrics.add_front_end("http", counts_of(limits.stats.clone()));
        metrics.add_front_end("socks5", counts_of(socks_stats.clone()));
        Ok(Self {
            sources,
            read_once,
            config: ArcSwap::from_pointee(config),
            state,
            runtime: std::sync::Mutex::default(),
            audit,
            metrics,
            gate,
            dialer,
            interceptor,
            actions,
            env,
            limits,
            socks_stats,
            relays: Arc::new(proxy_socks::LocalRelays),
            audit_file,
            otlp,
            upstream_warnings,
            vault,
            broker_warnings,
            _own_watch: own_watch,
            _rejudge_on_own_change: rejudge.map(AbortOnDrop),
            approvals: None,
        })
    }

    /// Asks `decider` about every allowlist miss from now on (before serving): the gate's
    /// hook (docs/policy.md). Requests inside an intercepted tunnel are judged against their
    /// tunnel, whose admission asked already.
    #[must_use]
    pub fn with_gate_decider(mut self, decider: Arc<dyn proxy_gate::Decider>) -> Self {
        self.gate = Arc::new(PolicyGate::clone(&self.gate).with_decider(decider));
        self
    }

    /// Holds allowlist misses for an answer (`run --ask`, docs/run.md "Approvals"): the gate
    /// asks `approvals`, and the admin API lists and answers them (`GET /pending`,
    /// `POST /pending/ID`). The caller checks first that the managed constraints allow it
    /// ([`crate::approvals::managed_refusal`]).
    #[must_use]
    pub fn with_approvals(self, approvals: crate::Approvals) -> Self {
        let mut s = self.with_gate_decider(Arc::new(approvals.clone()));
        s.approvals = Some(approvals);
        s
    }

    /// The requests held for an answer, under `run --ask`.
    pub fn approvals(&self) -> Option<&crate::Approvals> {
        self.approvals.as_ref()
    }

    /// Requires `credential` from every client of the listeners served from now on (HTTP
    /// `Proxy-Authorization: Basic`, SOCKS5 username/password).
    #[must_use]
    pub fn with_proxy_auth(mut self, credential: proxy_core::ProxyCredential) -> Self {
        self.limits.proxy_auth = Some(Arc::new(credential));
        self
    }

    /// Takes the client-facing socket of each SOCKS5 UDP association served from now on from
    /// `relays` (by default [`proxy_socks::LocalRelays`], in netproxy's own namespace; under
    /// `run --isolate`, one made in the child's).
    #[must_use]
    pub fn with_relay_sockets(mut self, relays: Arc<dyn proxy_socks::RelaySockets>) -> Self {
        self.relays = relays;
        self
    }

    /// Why an upstream proxy variable could not be used (each is ignored: netproxy then
    /// connects directly for that protocol).
    pub fn upstream_warnings(&self) -> &[String] {
        &self.upstream_warnings
    }

    /// The credential broker's vault, when `credential_broker` is on.
    pub fn vault(&self) -> Option<&Arc<proxy_broker::Vault>> {
        self.vault.as_ref()
    }

    /// The built-in credentials the broker withheld from the child, and why (said at start).
    pub fn broker_warnings(&self) -> &[String] {
        &self.broker_warnings
    }

    /// Tells the loop guard netproxy's own listener addresses.
    pub fn set_listeners(&self, addrs: Vec<std::net::SocketAddr>) {
        self.gate.set_listeners(addrs);
    }

    /// The admin API's runtime layer as it stands: the changes made through `POST /mode` and
    /// `POST /domains`, which every reload applies over the files.
    pub fn runtime_layer(&self) -> RuntimeLayer {
        self.runtime
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .clone()
    }

    /// The config in force.
    pub fn config(&self) -> Arc<Config> {
        self.config.load_full()
    }

    /// The gate's snapshot in force: the compiled policy and the gate's settings.
    pub fn snapshot(&self) -> Arc<Snapshot> {
        self.state.load_full()
    }

    /// The audit sink (and its blocked-request buffer).
    pub fn audit(&self) -> &Audit {
        &self.audit
    }

    /// Re-reads every layer; the new config is validated against the managed constraints and
    /// swapped in atomically. A bad file, or a change to a key that needs a restart, leaves the
    /// previous config in force. Returns the new config's warnings. Under [`Files::ReadOnce`]
    /// nothing is re-read: [`ReloadError::ReadOnce`].
    pub fn reload(&self) -> Result<Vec<String>, ReloadError> {
        if self.read_once.is_some() {
            return Err(ReloadError::ReadOnce);
        }
        self.apply(|_| Ok(()))
    }

    /// Whether the config files are re-read on reload ([`Files::Watched`]).
    pub fn files(&self) -> Files {
        if self.read_once.is_some() {
            Files::ReadOnce
        } else {
            Files::Watched
        }
    }

    /// Sets `mode` in the runtime layer (`POST /mode`), through the same validated, atomic
    /// path as a reload.
    pub fn set_mode(&self, mode: proxy_core::Mode) -> Result<Vec<String>, ReloadError> {
        self.apply(|runtime| {
            runtime.set_mode(mode);
            Ok(())
        })
    }

    /// Adds or replaces domain entries in the runtime layer (`POST /domains`): an entry replaces
    /// an earlier runtime entry with the same canonical pattern.
    pub fn update_domains(&self, change: &DomainChange) -> Result<Vec<String>, ReloadError> {
        let edit = DomainEdit::parse(change).map_err(|e| ReloadError::Invalid(e.to_string()))?;
        self.apply(|runtime| {
            runtime.apply(&edit);
            Ok(())
        })
    }

    /// Re-reads every layer with the runtime layer changed by `change`; the new config is
    /// validated against the managed constraints and swapped in atomically, and only then is
    /// the runtime layer kept. Counted in the metrics either way.
    fn apply(
        &self,
        change: impl FnOnce(&mut RuntimeLayer) -> Result<(), ReloadError>,
    ) -> Result<Vec<String>, ReloadError> {
        let mut runtime = self
            .runtime
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let mut candidate = runtime.clone();
        let result = change(&mut candidate).and_then(|()| {
            let extra = candidate.to_layer();
            let config = match &self.read_once {
                Some(r) => r.load_with(extra.as_slice())?,
                None => proxy_config::load_with(&self.sources, extra.as_slice())?,
            };
            let policy = config
                .policy_with(|b| crate::broker::add_destinations(self.vault.as_deref(), b))?;
            let actions = crate::interception::hook_actions(&config, &*self.env.0)?;
            let changed = self.config.load().restart_keys_changed(&config);
            if !changed.is_empty() {
                return Err(ReloadError::NeedsRestart(changed));
            }
            let mut warnings = config.warnings();
            // Allowed unix sockets keep the resolution of the previous snapshot.
            let (snap, moved) =
                Snapshot::renewed(policy, gate_settings(&config), &self.state.load());
            let snap = snap.with_managed(managed_of(&config));
            warnings.extend(moved);
            let snap = Arc::new(snap);
            // The actions first: a hook of the new policy never finds its action missing.
            self.actions.store(Arc::new(actions));
            self.config.store(Arc::new(config));
            self.state.store(snap.clone());
            // Open connections the new policy refuses are closed now.
            self.gate.revoke_disallowed(&snap);
            Ok(warnings)
        });
        self.metrics.reload(result.is_ok());
        if result.is_ok() {
            *runtime = candidate;
        }
        result
    }

    /// Reopens the audit file (after log rotation; `serve` does it on SIGHUP).
    pub fn reopen_audit_log(&self) {
        if let Some(f) = &self.audit_file {
            f.reopen();
        }
    }

    /// Writes every queued audit event out and closes the audit sinks (at shutdown).
    /// Blocks for at most a few seconds when an OTLP collector is slow.
    pub fn close_audit(&self) {
        if let Some(f) = &self.audit_file {
            f.close();
        }
        if let Some(o) = &self.otlp {
            o.close();
        }
    }

    /// The metrics.
    pub fn metrics(&self) -> &Arc<Metrics> {
        &self.metrics
    }

    /// The gate (its resolver answers `POST /check`).
    pub fn gate(&self) -> &PolicyGate {
        &self.gate
    }

    /// The sources the config is read from.
    pub fn sources(&self) -> &Sources {
        &self.sources
    }

    /// With HTTPS interception on, the trust bundle of its CA for a child (written now, or
    /// reused: [`crate::trust_bundle`]); `None` without interception.
    pub fn trust_bundle(&self) -> Result<Option<crate::ChildBundle>, crate::MitmStartError> {
        self.interceptor
            .ca()
            .map(|ca| crate::trust_bundle(self.sources.home_dir.as_deref(), ca, &*self.env.0))
            .transpose()
    }

    /// Every config and requirements file whose change triggers a reload (existing or not);
    /// none under [`Files::ReadOnce`].
    pub fn watched_files(&self) -> Vec<std::path::PathBuf> {
        if self.read_once.is_some() {
            return Vec::new();
        }
        self.sources
            .config_paths()
            .into_iter()
            .chain(self.sources.requirement_paths())
            .map(|(p, _)| p)
            .collect()
    }

    /// Serves SOCKS5 on `listener` until `shutdown` completes, then waits for the open tunnels;
    /// UDP relay sockets come from [`Service::with_relay_sockets`].
    pub async fn serve_socks(
        &self,
        listener: TcpListener,
        shutdown: impl std::future::Future<Output = ()>,
    ) {
        let limits = Limits {
            stats: self.socks_stats.clone(),
            ..self.limits.clone()
        };
        proxy_socks::run_with_relays(
            listener,
            self.gate.clone(),
            self.dialer.clone(),
            self.interceptor.clone(),
            limits,
            self.relays.clone(),
            shutdown,
        )
        .await;
    }

    /// Serves the HTTP proxy on `listener` until `shutdown` completes, then drains.
    pub async fn serve_http(
        &self,
        listener: TcpListener,
        shutdown: impl std::future::Future<Output = ()>,
    ) {
        // With the broker, a dummy in plain HTTP is refused (or injected with the plaintext
        // opt-in, where its grant is bound).
        let broker = self.vault.as_ref().map(|vault| proxy_http::Broker {
            vault: vault.clone(),
            allow_plaintext: self.config().plaintext_credential_injection(),
        });
        proxy_http::run_brokered(
            listener,
            self.gate.clone(),
            self.dialer.clone(),
            self.interceptor.clone(),
            self.limits.clone(),
            broker,
            shutdown,
        )
        .await;
    }

    /// Serves the DNS refuser of `run --isolate` on `udp` and `tcp` (sockets bound inside the
    /// child's namespace at its resolver addresses) until `shutdown` completes: every query is
    /// answered `REFUSED` and recorded in this service's audit as `dns_not_served`, with the
    /// mode in force ([`crate::dns_refuser::serve`]).
    pub async fn serve_dns(
        &self,
        udp: tokio::net::UdpSocket,
        tcp: Option<TcpListener>,
        shutdown: impl std::future::Future<Output = ()>,
    ) {
        let state = self.state.clone();
        crate::dns_refuser::serve(
            udp,
            tcp,
            self.audit.clone(),
            move || state.load().policy.mode(),
            shutdown,
        )
        .await;
    }
}

/// Reads a front-end's live counts for the metrics.
fn counts_of(stats: Arc<proxy_io::Stats>) -> impl Fn() -> FrontEndCounts + Send + Sync + 'static {
    move || FrontEndCounts {
        connections: stats.connections(),
        tunnels: stats.tunnels(),
        bytes_up: stats.bytes_up(),
        bytes_down: stats.bytes_down(),
        foreign_datagrams: stats.foreign_datagrams(),
    }
}

/// Aborts a task when dropped.
#[derive(Debug)]
struct AbortOnDrop(tokio::task::AbortHandle);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}
