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
use proxy_mitm::{Action, Ca, CaStore, HookActions, LeafCache, MitmInterceptor, TrustBundle};
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
    /// created on first use, upstream roots from the platform's store plus `SSL_CERT_FILE` and
    /// `SSL_CERT_DIR` (looked up through `env`; they add to the store, never replace it), and
    /// the proxy's `limits` inside a session (the idle timeout, the header timeout and the
    /// largest request head).
    pub fn mitm(
        gate: Arc<PolicyGate>,
        home: Option<&Path>,
        limits: &proxy_io::Limits,
        env: &dyn Fn(&str) -> Option<String>,
        actions: Arc<ArcSwap<HookActions>>,
        vault: Option<Arc<proxy_broker::Vault>>,
    ) -> Result<Self, MitmStartError> {
        let home = home.map(Path::to_path_buf).ok_or(MitmStartError::NoHome)?;
        let loaded = CaStore::new(home.join("ca")).load_or_create()?;
        if loaded.created {
            tracing::info!(dir = %home.join("ca").display(), "generated the MITM CA");
        }
        // netproxy's own CA never verifies an upstream (whoever holds its key could then pose
        // as any origin to netproxy itself), even when a bundle netproxy reads names it.
        let own = loaded.ca.cert_der().clone();
        let read = crate::roots::upstream_roots(crate::roots::platform_roots(), &|k: &str| env(k));
        for w in &read.warnings {
            tracing::warn!("mitm: upstream roots: {w}");
        }
        let mut roots = read.certs;
        let before = roots.len();
        roots.retain(|r| *r != own);
        if roots.len() != before {
            tracing::warn!(
                "mitm: netproxy's own CA is among the upstream roots (SSL_CERT_FILE?); it is left out"
            );
        }
        let leaves = Arc::new(LeafCache::new(Arc::new(loaded.ca), LEAF_CACHE_HOSTS));
        let interceptor = MitmInterceptor::new(gate, leaves, roots)?
            .with_idle_timeout(limits.idle_timeout)
            .with_request_limits(limits.header_timeout, limits.max_header_bytes)
            .with_actions(actions);
        let interceptor = match vault {
            Some(v) => interceptor.with_vault(v),
            None => interceptor,
        };
        Ok(Self::Mitm(interceptor))
    }

    /// netproxy's CA, when intercepting.
    pub fn ca(&self) -> Option<&Arc<Ca>> {
        match self {
            Interception::Off => None,
            Interception::Mitm(m) => Some(m.leaves().ca()),
        }
    }
}

/// A trust bundle written (or reused) for a child, and what reading the platform's roots
/// could not read.
#[derive(Debug)]
pub struct ChildBundle {
    /// The bundle file.
    pub bundle: TrustBundle,
    /// One line per root file or directory that could not be read (the bundle is made of the
    /// rest).
    pub warnings: Vec<String>,
}

/// The trust bundle `netproxy run` gives its child (docs/mitm.md, "The trust bundle"): the
/// roots netproxy itself trusts upstream (the machine's store plus what netproxy's own
/// `SSL_CERT_FILE` / `SSL_CERT_DIR` name, looked up through `env`: a corporate root the child
/// inherited keeps working for the tunnels netproxy does not intercept) and `ca`'s
/// certificate, in `HOME/ca/ca-bundle-<sha256>.pem`, written once and then reused.
pub fn trust_bundle(
    home: Option<&Path>,
    ca: &Ca,
    env: &dyn Fn(&str) -> Option<String>,
) -> Result<ChildBundle, MitmStartError> {
    let home = home.ok_or(MitmStartError::NoHome)?;
    let roots = crate::roots::upstream_roots(crate::roots::platform_roots(), &|k: &str| env(k));
    // netproxy's own CA goes last, once.
    let own = ca.cert_der().clone();
    let mut roots = roots;
    roots.certs.retain(|r| *r != own);
    let bundle = CaStore::new(home.join("ca")).write_bundle(ca, &roots.certs)?;
    if bundle.created {
        tracing::info!(
            path = %bundle.path.display(),
            roots = bundle.roots,
            "wrote the trust bundle"
        );
    }
    Ok(ChildBundle {
        bundle,
        warnings: roots.warnings,
    })
}

/// [`trust_bundle`] for the CA of `HOME/ca/`, created first when there is none (`netproxy env`
/// for a config with `mitm`: what `run` would give its child).
pub fn load_trust_bundle(
    home: Option<&Path>,
    env: &dyn Fn(&str) -> Option<String>,
) -> Result<ChildBundle, MitmStartError> {
    let dir = home.ok_or(MitmStartError::NoHome)?;
    let loaded = CaStore::new(dir.join("ca")).load_or_create()?;
    trust_bundle(home, &loaded.ca, env)
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
