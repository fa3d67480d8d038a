//! The interceptor both front-ends get: none, or HTTPS interception when `mitm` is on
//! (docs/mitm.md). The CA is loaded or created under `$NETPROXY_HOME/ca/`, and the upstream
//! roots are read here, as proxy-bin is the only crate that reads the environment.

use std::path::Path;
use std::sync::Arc;

use arc_swap::ArcSwap;
use proxy_broker::{Secret, SecretSource};
use proxy_config::{Config, Diagnostic, DiagnosticKind, SecretRef};
use proxy_core::{Decision, Intercepted, Interceptor, NoInterception, RequestMeta, Route};
use proxy_gate::PolicyGate;
use proxy_mitm::{Action, CaStore, HookActions, LeafCache, MitmInterceptor};
use tokio::io::{AsyncRead, AsyncWrite};

/// How many hosts' leaf certificates are kept.
const LEAF_CACHE_HOSTS: usize = 1024;

/// Why HTTPS interception could not start.
#[derive(Debug, thiserror::Error)]
pub enum MitmStartError {
    /// Neither `NETPROXY_HOME` nor `HOME` is set.
    #[error("mitm: neither NETPROXY_HOME nor HOME is set, so there is no place for the CA")]
    NoHome,
    /// The CA could not be loaded or created.
    #[error("mitm: {0}")]
    Ca(#[from] proxy_mitm::CaError),
    /// The interceptor could not be configured.
    #[error("mitm: {0}")]
    Tls(#[from] proxy_mitm::MitmError),
}

/// The actions hooks name in `config`, with their secrets read now: a variable of netproxy's
/// environment through `env`, or a file. A secret that cannot be read, or that makes an invalid
/// header, is a config error naming the action (never the value).
pub(crate) fn hook_actions(
    config: &Config,
    env: &dyn Fn(&str) -> Option<String>,
) -> Result<HookActions, proxy_config::Error> {
    let mut out = HookActions::new();
    let mut diags = Vec::new();
    for a in config.hook_actions() {
        let key = format!("network.mitm.actions.{}", a.name);
        let problem = |msg: String| {
            Diagnostic::new(
                DiagnosticKind::InvalidValue,
                a.layer.to_string(),
                key.clone(),
                msg,
            )
        };
        let mut action = Action::new();
        let mut ok = true;
        for h in &a.strip_request_headers {
            match action.strip(h) {
                Ok(next) => action = next,
                Err(e) => {
                    diags.push(problem(e.to_string()));
                    ok = false;
                    action = Action::new();
                }
            }
        }
        for i in &a.inject_request_headers {
            let source = match &i.secret {
                SecretRef::EnvVar(v) => SecretSource::EnvVar(v.clone()),
                SecretRef::File(f) => SecretSource::File(f.clone()),
            };
            let secret = match Secret::load(&source, |name| env(name).map(Into::into)) {
                Ok(s) => s,
                Err(e) => {
                    diags.push(problem(format!("header {}: {e}", i.name)));
                    ok = false;
                    continue;
                }
            };
            match std::mem::take(&mut action).inject(&i.name, &i.prefix, secret) {
                Ok(next) => action = next,
                Err(e) => {
                    diags.push(problem(e.to_string()));
                    ok = false;
                }
            }
        }
        if ok {
            out.insert(&a.name, action);
        }
    }
    if diags.is_empty() {
        Ok(out)
    } else {
        Err(proxy_config::Error { diagnostics: diags })
    }
}

/// The front-ends' interceptor.
#[derive(Debug)]
pub enum Interception {
    /// `mitm` off: tunnels that need interception are refused `mitm_required`.
    Off,
    /// `mitm` on.
    Mitm(MitmInterceptor<PolicyGate>),
}

impl Interception {
    /// HTTPS interception judging with `gate`: the CA of `HOME/ca/` (`home`: netproxy's home,
    /// `$NETPROXY_HOME` else `$HOME/.netproxy`, as the binary found it, like `netproxy ca`),
    /// created on first use, upstream roots from the platform's store plus `SSL_CERT_FILE`
    /// (looked up through `env`), and the proxy's `limits` inside a session (the idle timeout, the
    /// header timeout and the largest request head).
    pub fn mitm(
        gate: Arc<PolicyGate>,
        home: Option<&Path>,
        limits: &proxy_io::Limits,
        env: &dyn Fn(&str) -> Option<String>,
        actions: Arc<ArcSwap<HookActions>>,
    ) -> Result<Self, MitmStartError> {
        let home = home.map(Path::to_path_buf).ok_or(MitmStartError::NoHome)?;
        let loaded = CaStore::new(home.join("ca")).load_or_create()?;
        if loaded.created {
            tracing::info!(dir = %home.join("ca").display(), "generated the MITM CA");
        }
        // netproxy's own CA never verifies an upstream (whoever holds its key could then pose
        // as any origin to netproxy itself), even when a bundle netproxy reads names it.
        let own = loaded.ca.cert_der().clone();
        let mut roots = upstream_roots(&|k: &str| env(k));
        let before = roots.len();
        roots.retain(|r| *r != own);
        if roots.len() != before {
            tracing::warn!(
                "mitm: netproxy's own CA is among the upstream roots (SSL_CERT_FILE?); it is left out"
            );
        }
        let leaves = Arc::new(LeafCache::new(Arc::new(loaded.ca), LEAF_CACHE_HOSTS));
        Ok(Self::Mitm(
            MitmInterceptor::new(gate, leaves, roots)?
                .with_idle_timeout(limits.idle_timeout)
                .with_request_limits(limits.header_timeout, limits.max_header_bytes)
                .with_actions(actions),
        ))
    }
}

/// The roots that verify upstream servers: the platform's store (rustls-native-certs: the
/// system bundle, or what netproxy's own `SSL_CERT_FILE` / `SSL_CERT_DIR` name instead, as
/// OpenSSL reads them), plus the certificates of `SSL_CERT_FILE` as `env` gives it. Unreadable
/// entries are skipped with a warning.
fn upstream_roots(
    env: &impl Fn(&str) -> Option<String>,
) -> Vec<proxy_mitm::CertificateDer<'static>> {
    let native = rustls_native_certs::load_native_certs();
    for e in &native.errors {
        tracing::warn!(error = %e, "mitm: a platform root certificate could not be read");
    }
    let mut roots = native.certs;
    if let Some(file) = env("SSL_CERT_FILE").filter(|f| !f.is_empty()) {
        let extra = rustls_native_certs::load_certs_from_paths(Some(Path::new(&file)), None);
        for e in &extra.errors {
            tracing::warn!(error = %e, "mitm: SSL_CERT_FILE could not be read");
        }
        roots.extend(extra.certs);
    }
    roots
}

impl<C, U> Interceptor<C, U> for Interception
where
    C: AsyncRead + AsyncWrite + Unpin + Send + 'static,
    U: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    fn accepts(&self, meta: &RequestMeta, route: &Route) -> Result<(), Decision> {
        match self {
            Interception::Off => Interceptor::<C, U>::accepts(&NoInterception, meta, route),
            Interception::Mitm(m) => Interceptor::<C, U>::accepts(m, meta, route),
        }
    }

    async fn intercept(&self, tunnel: Intercepted<C, U>) -> (u64, u64) {
        match self {
            Interception::Off => NoInterception.intercept(tunnel).await,
            Interception::Mitm(m) => m.intercept(tunnel).await,
        }
    }
}
