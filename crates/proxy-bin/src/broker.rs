//! The credential broker's vault for the service (docs/credentials.md): built at start from
//! netproxy's own environment and the configured grants, when `credential_broker` is on.

use proxy_broker::{GrantSpec, SecretSource, SendStyle, Vault};
use proxy_config::{Config, Diagnostic, DiagnosticKind, SecretRef};

/// The vault of `config`'s grants and of the built-in providers found by `env`, or `None` when
/// the broker is off. A wrong grant, or one whose secret cannot be read, is a config error
/// naming the grant (never the value). The built-ins withheld from the child come back as
/// warnings.
pub fn vault(
    config: &Config,
    env: &dyn Fn(&str) -> Option<String>,
) -> Result<Option<(Vault, Vec<String>)>, proxy_config::Error> {
    if !config.credential_broker() {
        return Ok(None);
    }
    let mut diags = Vec::new();
    let mut specs = Vec::new();
    for c in config.credentials() {
        let mut spec = GrantSpec::new(c.name.clone(), c.env.clone());
        spec.secret = c.secret.as_ref().map(|s| match s {
            SecretRef::EnvVar(v) => SecretSource::EnvVar(v.clone()),
            SecretRef::File(f) => SecretSource::File(f.clone()),
        });
        spec.hosts.clone_from(&c.hosts);
        spec.port = c.port;
        spec.path_prefixes.clone_from(&c.path_prefixes);
        for s in &c.send {
            match s.parse::<SendStyle>() {
                Ok(style) => spec.send.push(style),
                Err(e) => diags.push(Diagnostic::new(
                    DiagnosticKind::InvalidValue,
                    c.layer.to_string(),
                    format!("network.credentials.{}.send", c.name),
                    e.to_string(),
                )),
            }
        }
        spec.basic_user.clone_from(&c.basic_user);
        spec.header.clone_from(&c.header);
        spec.prefix.clone_from(&c.prefix);
        specs.push(spec);
    }
    if !diags.is_empty() {
        return Err(proxy_config::Error { diagnostics: diags });
    }
    match Vault::new(|k| env(k).map(Into::into), &specs) {
        Ok(vault) => {
            let mut warnings: Vec<String> =
                vault.withheld().iter().map(ToString::to_string).collect();
            // A config file can re-bind a well-known token to other hosts: said at every
            // start, so that a file the child once wrote cannot do it unseen.
            for c in config.credentials() {
                if proxy_broker::builtin_vars().any(|b| b == c.env) {
                    warnings.push(format!(
                        "credential grant {} (from {}) replaces the built-in {}: its real value goes to {}",
                        c.name,
                        c.layer,
                        c.env,
                        c.hosts.join(", ")
                    ));
                }
            }
            Ok(Some((vault, warnings)))
        }
        Err(e) => {
            let origin = match &e {
                proxy_broker::VaultError::Spec { grant, .. } => config
                    .credentials()
                    .iter()
                    .find(|c| &c.name == grant)
                    .map_or_else(|| "environment".to_owned(), |c| c.layer.to_string()),
                _ => "environment".to_owned(),
            };
            Err(proxy_config::Error {
                diagnostics: vec![Diagnostic::new(
                    DiagnosticKind::InvalidValue,
                    origin,
                    "network.credentials",
                    e.to_string(),
                )],
            })
        }
    }
}

/// The grants of `vault` by name and binding, never a value: `GET /credentials`.
pub(crate) fn grants_json(vault: Option<&Vault>) -> serde_json::Value {
    let Some(vault) = vault else {
        return serde_json::json!({"broker": false, "grants": []});
    };
    let grants: Vec<serde_json::Value> = vault
        .grants()
        .iter()
        .map(|g| {
            serde_json::json!({
                "name": g.name(),
                "env": g.env(),
                "builtin": g.is_builtin(),
                "source": g.source().to_string(),
                "hosts": g.binding().hosts().iter().map(ToString::to_string).collect::<Vec<_>>(),
                "port": g.binding().port(),
                "path_prefixes": g.binding().path_prefixes(),
                "forms": g.forms().iter().map(ToString::to_string).collect::<Vec<_>>(),
            })
        })
        .collect();
    let withheld: Vec<String> = vault.withheld().iter().map(ToString::to_string).collect();
    serde_json::json!({"broker": true, "grants": grants, "withheld": withheld})
}

/// `netproxy check --credentials URL`: which grant would be injected at `url`, or why none,
/// with netproxy's environment as `env` gives it. `Err` for a URL that is not `http(s)://host`.
pub fn explain_credentials(
    config: &Config,
    env: &dyn Fn(&str) -> Option<String>,
    url: &str,
) -> Result<CredentialsReport, String> {
    let uri: http::Uri = url.parse().map_err(|e| format!("{url}: not a URL ({e})"))?;
    let scheme = match uri.scheme_str() {
        Some(s) if s.eq_ignore_ascii_case("https") => proxy_broker::Scheme::Https,
        Some(s) if s.eq_ignore_ascii_case("http") => proxy_broker::Scheme::Http,
        _ => return Err(format!("{url}: give an http:// or https:// URL")),
    };
    let host = uri
        .host()
        .ok_or_else(|| format!("{url}: the URL names no host"))
        .and_then(|h| {
            proxy_core::Host::parse(h.trim_start_matches('[').trim_end_matches(']'))
                .map_err(|e| format!("{url}: {e}"))
        })?;
    let port = uri.port_u16().unwrap_or(match scheme {
        proxy_broker::Scheme::Https => 443,
        proxy_broker::Scheme::Http => 80,
    });
    let path = match uri.path() {
        "" => "/",
        p => p,
    };
    if !config.credential_broker() {
        return Ok(CredentialsReport {
            text: format!(
                "credentials for {url}:\n  none: the credential broker is off (credential_broker = false)\n"
            ),
            json: serde_json::json!({"broker": false, "destination": url, "grants": []}),
            injected: false,
        });
    }
    let vault = match vault(config, env) {
        Ok(Some((vault, _))) => vault,
        Ok(None) => return Err("the credential broker is off".to_owned()),
        Err(e) => return Err(e.to_string()),
    };
    let dest = proxy_broker::Destination::new(scheme, &host, port, path);
    let ex = vault.explain(&dest, config.plaintext_credential_injection());
    let grants: Vec<serde_json::Value> = ex
        .entries
        .iter()
        .map(|e| {
            let (verdict, why) = match &e.verdict {
                proxy_broker::Verdict::Injected => ("injected", None),
                proxy_broker::Verdict::NotBound(w) => ("refused", Some(w.to_string())),
                proxy_broker::Verdict::Unset => ("unset", None),
                proxy_broker::Verdict::Withheld(w) => ("withheld", Some(w.to_string())),
                _ => ("other", None),
            };
            serde_json::json!({"grant": e.grant, "env": e.env, "verdict": verdict, "why": why})
        })
        .collect();
    let injected = ex.injected().next().is_some();
    Ok(CredentialsReport {
        text: ex.to_string(),
        json: serde_json::json!({"broker": true, "destination": ex.destination, "grants": grants}),
        injected,
    })
}

/// What `check --credentials` prints.
#[derive(Debug)]
pub struct CredentialsReport {
    /// The text, one line per grant.
    pub text: String,
    /// The same as JSON.
    pub json: serde_json::Value,
    /// Whether some grant would be injected there.
    pub injected: bool,
}

/// Adds the destinations of `vault`'s grants to a policy being built: a tunnel to one is
/// intercepted when its first bytes are TLS (docs/credentials.md).
pub(crate) fn add_destinations(
    vault: Option<&Vault>,
    b: &mut proxy_policy::PolicyBuilder,
) -> Result<(), proxy_policy::Error> {
    let Some(vault) = vault else {
        return Ok(());
    };
    for g in vault.grants() {
        let port = g.binding().port();
        for h in g.binding().hosts() {
            let host = h.to_string();
            let pattern = if host.contains(':') {
                format!("[{host}]:{port}")
            } else {
                format!("{host}:{port}")
            };
            b.credential_destination(&pattern)?;
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use proxy_broker::Vault;

    const REAL: &str = "ghp_RealGitHubToken0123456789abcdefABCDE";

    /// `GET /credentials` names the grants and their bindings, never a real value or a dummy.
    #[test]
    fn the_grants_listing_holds_no_value() {
        let vault = Vault::new(|k| (k == "GH_TOKEN").then(|| REAL.into()), &[]).unwrap();
        let text = super::grants_json(Some(&vault)).to_string();
        assert!(text.contains("\"GH_TOKEN\""), "{text}");
        assert!(text.contains("api.github.com"), "{text}");
        assert!(!text.contains(REAL), "{text}");
        let dummy = &vault.child_env().set[0].1;
        assert!(!text.contains(dummy.as_str()), "{text}");
        assert_eq!(super::grants_json(None)["broker"], false);
    }
}
