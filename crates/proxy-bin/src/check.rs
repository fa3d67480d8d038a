//! `netproxy check`: explain one decision without serving.

use proxy_core::{Decision, Host, Protocol, Reason, RequestMeta, Target, Verdict, split_authority};
use proxy_gate::{Lookup, PolicyGate};
use serde_json::{Value, json};

/// A target that could not be read (a usage error, exit 2).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TargetError {
    /// An empty target.
    #[error("empty target")]
    Empty,
    /// A URL scheme netproxy does not proxy.
    #[error("unsupported URL scheme {0:?} (expected http, https, ws or wss)")]
    Scheme(String),
    /// A bad port.
    #[error("invalid port in {0:?}")]
    Port(String),
}

/// The request `check` explains: protocol, host (or why it is invalid), port and method.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CheckRequest {
    /// The protocol.
    pub protocol: Protocol,
    /// The host as given.
    pub raw_host: String,
    /// The canonical host, or why it is invalid.
    pub host: Result<Host, proxy_core::HostError>,
    /// The port.
    pub port: u16,
    /// The method, if any.
    pub method: Option<String>,
}

impl CheckRequest {
    /// Reads `TARGET` (a URL, `host`, `host:port` or `[v6]:port`). A URL's scheme sets the
    /// protocol (`http`/`ws` → http, `https`/`wss` → https_connect) unless `protocol` is given;
    /// otherwise the protocol is `https_connect`. The method defaults to `GET` for http and
    /// `CONNECT` for https_connect.
    pub fn parse(
        target: &str,
        protocol: Option<Protocol>,
        method: Option<&str>,
    ) -> Result<Self, TargetError> {
        let t = target.trim();
        if t.is_empty() {
            return Err(TargetError::Empty);
        }
        let (scheme_protocol, authority) = match t.split_once("://") {
            Some((scheme, rest)) => {
                let p = match scheme.to_ascii_lowercase().as_str() {
                    "http" | "ws" => Protocol::Http,
                    "https" | "wss" => Protocol::HttpsConnect,
                    other => return Err(TargetError::Scheme(other.to_owned())),
                };
                let end = rest.find(['/', '?', '#']).unwrap_or(rest.len());
                let authority = &rest[..end];
                // Drop userinfo: it is not part of the destination.
                let authority = authority.rsplit_once('@').map_or(authority, |(_, a)| a);
                (Some(p), authority)
            }
            None => (None, t),
        };
        let protocol = protocol
            .or(scheme_protocol)
            .unwrap_or(Protocol::HttpsConnect);
        let default_port = match scheme_protocol {
            Some(Protocol::Http) => 80,
            Some(_) => 443,
            None => protocol.default_port(),
        };
        let (host, port) =
            split_authority(authority).map_err(|_| TargetError::Port(target.to_owned()))?;
        let method = method.map(str::to_owned).or(match protocol {
            Protocol::Http => Some("GET".to_owned()),
            Protocol::HttpsConnect => Some("CONNECT".to_owned()),
            _ => None,
        });
        Ok(Self {
            protocol,
            raw_host: host.to_owned(),
            host: Host::parse(host),
            port: port.unwrap_or(default_port),
            method,
        })
    }
}

/// The explanation of one decision.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CheckReport {
    /// The request, as checked.
    pub request: CheckRequest,
    /// The decision so far.
    pub decision: Decision,
    /// True when the host is an allowed name whose addresses are checked when connecting.
    pub addresses_checked_at_connect: bool,
    /// True when the tunnel would be intercepted.
    pub intercept: bool,
    /// True when the host has MITM hooks (reached only through interception).
    pub hooked: bool,
    /// The addresses the name resolved to, when it was resolved.
    pub resolved: Option<Vec<std::net::IpAddr>>,
    /// Why the target could not be checked or routed (the proxy would answer 502).
    pub failure: Option<proxy_core::Failure>,
    /// The upstream proxy the target would be reached through, if any.
    pub upstream: Option<String>,
    /// For a refusal: the smallest change that would allow it, if one would.
    pub remedy: Option<proxy_core::Remedy>,
}

/// Explains the decision for `req` through `gate`'s dry run ([`PolicyGate::explain`]): the code
/// that judges every request, the decider and the upstream route included, recording nothing.
/// With [`Lookup::Skip`], an allowed name is reported as allowed if its addresses pass.
pub async fn explain(gate: &PolicyGate, req: &CheckRequest, lookup: Lookup) -> CheckReport {
    let host = match &req.host {
        Ok(h) => h.clone(),
        Err(e) => {
            return CheckReport {
                request: req.clone(),
                decision: Decision::deny(Reason::InvalidHost).with_detail(e.to_string()),
                addresses_checked_at_connect: false,
                intercept: false,
                hooked: false,
                resolved: None,
                failure: None,
                upstream: None,
                remedy: None,
            };
        }
    };
    let mut meta = RequestMeta::new(req.protocol, Target::net(host, req.port));
    meta.method = req.method.clone();
    let seen = gate.explain(&meta, lookup).await;
    let hooked = meta.target.host().is_some_and(|h| gate.is_hooked(h));
    CheckReport {
        hooked,
        request: req.clone(),
        decision: seen.decision,
        addresses_checked_at_connect: seen.pending,
        intercept: seen.intercept,
        resolved: seen.resolved,
        failure: seen.failure,
        upstream: seen.upstream,
        remedy: seen.remedy,
    }
}

impl CheckReport {
    /// The process exit code: 0 allowed, 1 refused.
    pub fn exit_code(&self) -> i32 {
        if self.decision.is_allowed() && self.failure.is_none() {
            0
        } else {
            1
        }
    }

    fn host_text(&self) -> String {
        match &self.request.host {
            Ok(h) => h.to_string(),
            Err(_) => self.request.raw_host.clone(),
        }
    }

    /// The human explanation.
    pub fn to_text(&self) -> String {
        let d = &self.decision;
        let host = match &self.request.host {
            Ok(h) => h.to_uri_host(),
            Err(_) => format!("{:?}", self.request.raw_host),
        };
        let verdict = if self.failure.is_some() {
            "fail"
        } else {
            d.verdict.as_str()
        };
        let mut out = format!(
            "{}: {}:{} ({}{})\n",
            verdict,
            host,
            self.request.port,
            self.request.protocol,
            self.request
                .method
                .as_deref()
                .map(|m| format!(", {m}"))
                .unwrap_or_default()
        );
        match (&self.failure, d.reason) {
            // A failure, not a refusal: the policy allows the target; reaching it failed.
            (Some(f), _) => out.push_str(&format!(
                "reason: {} (a failure: the policy allows it, reaching it failed): {}\n",
                f.kind, f.message
            )),
            (None, Some(r)) => out.push_str(&format!(
                "reason: {r} (source {}): {}\n",
                d.source,
                r.message()
            )),
            (None, None) => out.push_str(&format!("reason: allow (source {})\n", d.source)),
        }
        match &d.rule {
            Some(rule) => {
                // A refusal after the rule matched (the name's addresses, the mode): the rule
                // is said all the same.
                let after = match d.reason {
                    Some(Reason::NotAllowedLocal) => "; its addresses were then refused",
                    Some(Reason::Denied) | None => "",
                    Some(_) => "; the request was then refused",
                };
                out.push_str(&format!(
                    "rule: {} (layer {}) matched{after}\n",
                    rule.pattern,
                    rule.origin.as_deref().unwrap_or("unknown")
                ));
            }
            None => out.push_str("rule: none matched\n"),
        }
        if let Some(detail) = &d.detail {
            out.push_str(&format!("detail: {detail}\n"));
        }
        if let Some(ips) = &self.resolved {
            let list: Vec<String> = ips.iter().map(ToString::to_string).collect();
            out.push_str(&format!("resolved: {}\n", list.join(", ")));
        }
        if let Some(upstream) = &self.upstream {
            out.push_str(&format!("upstream proxy: {upstream}\n"));
        }
        if let Some(f) = &self.failure {
            out.push_str(&format!(
                "failure: {f} (the proxy answers {})\n",
                f.kind.http_status()
            ));
        }
        if let Some(remedy) = &self.remedy {
            out.push_str(&format!("remedy: {remedy}\n"));
            if let Some((table, line)) = remedy.config_line() {
                out.push_str(&format!(
                    "remedy in a config file, under [{table}]: {line}\n"
                ));
            }
        }
        if self.addresses_checked_at_connect {
            out.push_str(&format!(
                "note: {} is a name; its addresses are checked when connecting: none may match an IP deny entry and, while local protection is on, every one must be public (or inside treat_as_public) and none an address of this machine\n",
                self.host_text()
            ));
        }
        if self.hooked {
            out.push_str(&format!(
                "note: {} has MITM hooks: it is reached only through interception, and inside TLS only the requests a hook matches pass\n",
                self.host_text()
            ));
        } else if self.intercept {
            out.push_str(
                "note: the tunnel is intercepted so that limited mode can be enforced inside TLS\n",
            );
        }
        out
    }

    /// The JSON explanation (`--json`). For a failure, `decision` is `fail`, and `reason` and
    /// `message` are the failure's, as in `failure` (the same the proxy's 502 body gives).
    pub fn to_json(&self) -> Value {
        let d = &self.decision;
        let (reason, message) = match (&self.failure, d.reason) {
            (Some(f), _) => (f.kind.as_str(), f.message.clone()),
            (None, Some(r)) => (r.as_str(), r.message().to_owned()),
            (None, None) => (d.reason_str(), "Allowed by policy.".to_owned()),
        };
        json!({
            "decision": if self.failure.is_some() { "fail" } else { d.verdict.as_str() },
            "resolved": self.resolved.as_ref().map(|ips| ips.iter().map(ToString::to_string).collect::<Vec<_>>()),
            "failure": self.failure.as_ref().map(|f| json!({"reason": f.kind.as_str(), "message": f.message})),
            "reason": reason,
            "source": d.source.as_str(),
            "protocol": self.request.protocol.as_str(),
            "host": self.host_text(),
            "port": self.request.port,
            "method": self.request.method,
            "rule": d.rule.as_ref().map(|r| json!({"pattern": &*r.pattern, "layer": r.origin.as_deref()})),
            "detail": d.detail.as_deref(),
            "message": message,
            "x_proxy_error": if self.failure.is_some() { None } else { d.reason.and_then(Reason::x_proxy_error) },
            "addresses_checked_at_connect": self.addresses_checked_at_connect,
            "intercept": self.intercept,
            "hooked": self.hooked,
            "upstream_proxy": self.upstream,
            "remedy": self.remedy.as_ref().map(|r| json!({
                "text": r.to_string(),
                "command_line": r.command_line(),
                "config": r.config_line().map(|(table, line)| json!({"table": table, "line": line})),
                "managed": !r.is_users(),
            })),
            "allowed": d.verdict == Verdict::Allow && self.failure.is_none(),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn targets() {
        let r = CheckRequest::parse("http://Example.com/a?b", None, None).unwrap();
        assert_eq!(
            (r.protocol, r.port, r.method.as_deref()),
            (Protocol::Http, 80, Some("GET"))
        );
        let r = CheckRequest::parse("https://user:pw@example.com:8443/", None, None).unwrap();
        assert_eq!(
            (r.protocol, r.port, r.raw_host.as_str()),
            (Protocol::HttpsConnect, 8443, "example.com")
        );
        let r = CheckRequest::parse("[::1]:8080", None, None).unwrap();
        assert_eq!(r.host.unwrap().to_string(), "::1");
        assert_eq!(r.port, 8080);
        let r = CheckRequest::parse("example.com", Some(Protocol::Http), Some("POST")).unwrap();
        assert_eq!((r.port, r.method.as_deref()), (80, Some("POST")));
        let r = CheckRequest::parse("example.com", Some(Protocol::Socks5Udp), None).unwrap();
        assert_eq!((r.port, r.method), (443, None));
        let r = CheckRequest::parse("wss://x.test", None, None).unwrap();
        assert_eq!(r.protocol, Protocol::HttpsConnect);
        assert!(CheckRequest::parse("ftp://x", None, None).is_err());
        assert!(CheckRequest::parse("x:99999", None, None).is_err());
        assert!(CheckRequest::parse("", None, None).is_err());
        assert!(
            CheckRequest::parse("bad host", None, None)
                .unwrap()
                .host
                .is_err()
        );
    }
}
