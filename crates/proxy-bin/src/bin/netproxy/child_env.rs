//! The environment a child process gets so that its traffic goes through netproxy
//! (docs/run.md: the proxy variables in every spelling tools read, with `NETPROXY_*` names).

use std::net::SocketAddr;

/// Keys that get the HTTP proxy URL.
pub(crate) const HTTP_KEYS: &[&str] = &[
    "HTTP_PROXY",
    "HTTPS_PROXY",
    "http_proxy",
    "https_proxy",
    "YARN_HTTP_PROXY",
    "YARN_HTTPS_PROXY",
    "npm_config_https_proxy",
    "npm_config_proxy",
    "NPM_CONFIG_HTTPS_PROXY",
    "NPM_CONFIG_PROXY",
    "BUNDLE_HTTP_PROXY",
    "BUNDLE_HTTPS_PROXY",
    "PIP_PROXY",
    "DOCKER_HTTP_PROXY",
    "DOCKER_HTTPS_PROXY",
    "WS_PROXY",
    "WSS_PROXY",
    "ws_proxy",
    "wss_proxy",
];

/// Keys the child never gets, neither from netproxy nor inherited: npm reads `proxy` and
/// `https-proxy` only, and warns on every call about an `http-proxy` it does not know.
pub(crate) const REMOVED_KEYS: &[&str] = &["npm_config_http_proxy", "NPM_CONFIG_HTTP_PROXY"];

/// Keys that get the SOCKS5 URL (`socks5h://`), or the HTTP URL when SOCKS is off.
pub(crate) const ALL_KEYS: &[&str] = &["ALL_PROXY", "all_proxy", "FTP_PROXY", "ftp_proxy"];

/// Keys that get the no-proxy list.
pub(crate) const NO_PROXY_KEYS: &[&str] = &[
    "NO_PROXY",
    "no_proxy",
    "npm_config_noproxy",
    "NPM_CONFIG_NOPROXY",
    "YARN_NO_PROXY",
    "BUNDLE_NO_PROXY",
];

/// Keys that get the trust bundle's path when netproxy intercepts HTTPS (docs/mitm.md): the
/// file each tool reads its trusted roots from (OpenSSL and Go, Python requests, curl, Node.js,
/// git, pip, Bundler, npm).
pub(crate) const CA_KEYS: &[&str] = &[
    "SSL_CERT_FILE",
    "REQUESTS_CA_BUNDLE",
    "CURL_CA_BUNDLE",
    "NODE_EXTRA_CA_CERTS",
    "GIT_SSL_CAINFO",
    "PIP_CERT",
    "BUNDLE_SSL_CA_CERT",
    "npm_config_cafile",
];

/// The no-proxy list with `allow_local_binding`: local and private targets go direct.
pub(crate) const LOCAL_NO_PROXY: &str =
    "localhost,127.0.0.1,::1,10.0.0.0/8,172.16.0.0/12,192.168.0.0/16";

/// What the child's environment points at.
#[derive(Debug, Clone)]
pub(crate) struct ProxyEnv {
    /// The HTTP proxy listener.
    pub(crate) http: SocketAddr,
    /// The SOCKS5 listener, when there is one.
    pub(crate) socks: Option<SocketAddr>,
    /// Whether local targets bypass the proxy (`NO_PROXY` lists them).
    pub(crate) allow_local_binding: bool,
    /// Whether the child runs in a network namespace of its own (`run --isolate`): then
    /// nothing bypasses the proxy (`NO_PROXY` is empty), since nothing outside the namespace
    /// is reachable directly.
    pub(crate) isolated: bool,
    /// `user:password` to put in the proxy URLs (`--proxy-auth`).
    pub(crate) credential: Option<String>,
    /// The trust bundle's path, when netproxy intercepts HTTPS.
    pub(crate) ca_bundle: Option<String>,
}

impl ProxyEnv {
    /// The HTTP proxy URL, with the credential when there is one.
    pub(crate) fn http_url(&self) -> String {
        url("http", self.http, self.credential.as_deref())
    }

    /// The URL for `ALL_PROXY`: SOCKS5 with remote resolution, or the HTTP URL.
    pub(crate) fn all_url(&self) -> String {
        match self.socks {
            Some(s) => url("socks5h", s, self.credential.as_deref()),
            None => self.http_url(),
        }
    }

    /// Every variable netproxy sets, in a stable order.
    pub(crate) fn vars(&self) -> Vec<(String, String)> {
        let http = self.http_url();
        let all = self.all_url();
        let no_proxy = if self.allow_local_binding && !self.isolated {
            LOCAL_NO_PROXY
        } else {
            ""
        };
        let mut out: Vec<(String, String)> = Vec::new();
        out.extend(HTTP_KEYS.iter().map(|k| ((*k).to_owned(), http.clone())));
        out.extend(ALL_KEYS.iter().map(|k| ((*k).to_owned(), all.clone())));
        out.extend(
            NO_PROXY_KEYS
                .iter()
                .map(|k| ((*k).to_owned(), no_proxy.to_owned())),
        );
        let flag = if self.allow_local_binding { "1" } else { "0" };
        out.push(("ELECTRON_GET_USE_PROXY".into(), "true".into()));
        out.push(("NODE_USE_ENV_PROXY".into(), "1".into()));
        out.push(("NETPROXY_ACTIVE".into(), "1".into()));
        out.push(("NETPROXY_ALLOW_LOCAL_BINDING".into(), flag.into()));
        if let Some(bundle) = &self.ca_bundle {
            out.extend(CA_KEYS.iter().map(|k| ((*k).to_owned(), bundle.clone())));
        }
        out
    }

    /// Whether the child must not inherit `key`: a managed key ([`is_managed`]), and with a
    /// trust bundle each of [`CA_KEYS`] in any letter case (an inherited `NPM_CONFIG_CAFILE`
    /// must not compete with ours). Without one, the inherited CA keys are left alone.
    pub(crate) fn removes(&self, key: &str) -> bool {
        is_managed(key)
            || (self.ca_bundle.is_some() && CA_KEYS.iter().any(|k| k.eq_ignore_ascii_case(key)))
    }
}

/// The trust bundle's path as the child's variables hold it: UTF-8, or a clear error.
pub(crate) fn bundle_path(path: std::path::PathBuf) -> Result<String, String> {
    path.into_os_string().into_string().map_err(|p| {
        format!(
            "the trust bundle's path {} is not UTF-8; give NETPROXY_HOME a UTF-8 path",
            std::path::Path::new(&p).display()
        )
    })
}

fn url(scheme: &str, addr: SocketAddr, credential: Option<&str>) -> String {
    match credential {
        Some(c) => format!("{scheme}://{c}@{addr}"),
        None => format!("{scheme}://{addr}"),
    }
}

/// Whether `key` is one netproxy manages, which the child never inherits: every key it sets, in
/// any letter case (an inherited `Http_Proxy` must not survive beside ours), and every
/// `NETPROXY_*` variable, which configures netproxy itself (`NETPROXY_ADMIN_TOKEN`,
/// `NETPROXY_HOME`, ...; docs/run.md). Those netproxy sets (`NETPROXY_ACTIVE`, ...) are set
/// anew by [`ProxyEnv::vars`].
pub(crate) fn is_managed(key: &str) -> bool {
    key.get(..NETPROXY_PREFIX.len())
        .is_some_and(|p| p.eq_ignore_ascii_case(NETPROXY_PREFIX))
        || HTTP_KEYS
            .iter()
            .chain(ALL_KEYS)
            .chain(NO_PROXY_KEYS)
            .chain(REMOVED_KEYS)
            .chain(&[
                "ELECTRON_GET_USE_PROXY",
                "NODE_USE_ENV_PROXY",
                "NETPROXY_ACTIVE",
                "NETPROXY_ALLOW_LOCAL_BINDING",
            ])
            .any(|k| k.eq_ignore_ascii_case(key))
}

/// The prefix of netproxy's own variables.
const NETPROXY_PREFIX: &str = "NETPROXY_";

/// `KEY='value'` lines a POSIX shell can source (`export` included).
pub(crate) fn to_sh(vars: &[(String, String)]) -> String {
    let mut s = String::new();
    for (k, v) in vars {
        s.push_str("export ");
        s.push_str(k);
        s.push('=');
        s.push_str(&sh_quote(v));
        s.push('\n');
    }
    s
}

/// Single-quotes `v` for a POSIX shell (a `'` becomes `'\''`).
pub(crate) fn sh_quote(v: &str) -> String {
    format!("'{}'", v.replace('\'', r"'\''"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_proxy_variables_in_every_spelling() {
        let env = ProxyEnv {
            http: "127.0.0.1:3128".parse().unwrap(),
            socks: Some("127.0.0.1:8081".parse().unwrap()),
            allow_local_binding: false,
            isolated: false,
            credential: None,
            ca_bundle: None,
        };
        let vars = env.vars();
        let get = |k: &str| {
            vars.iter()
                .find(|(key, _)| key == k)
                .map(|(_, v)| v.as_str())
        };
        assert_eq!(get("https_proxy"), Some("http://127.0.0.1:3128"));
        // An inherited `Https_Proxy` is removed before these are set.
        assert!(is_managed("Https_Proxy") && !is_managed("PATH"));
        assert_eq!(get("ALL_PROXY"), Some("socks5h://127.0.0.1:8081"));
        assert_eq!(get("NO_PROXY"), Some(""));
    }

    fn env(socks: bool, local: bool) -> ProxyEnv {
        ProxyEnv {
            http: "127.0.0.1:3128".parse().unwrap(),
            socks: socks.then(|| "127.0.0.1:8081".parse().unwrap()),
            allow_local_binding: local,
            isolated: false,
            credential: None,
            ca_bundle: None,
        }
    }

    fn get<'a>(vars: &'a [(String, String)], k: &str) -> Option<&'a str> {
        vars.iter()
            .find(|(key, _)| key == k)
            .map(|(_, v)| v.as_str())
    }

    #[test]
    fn every_key_of_the_list_is_set_once() {
        let vars = env(true, false).vars();
        for k in HTTP_KEYS.iter().chain(ALL_KEYS).chain(NO_PROXY_KEYS) {
            assert_eq!(vars.iter().filter(|(key, _)| key == k).count(), 1, "{k}");
        }
        assert_eq!(get(&vars, "WSS_PROXY"), Some("http://127.0.0.1:3128"));
        assert_eq!(get(&vars, "ftp_proxy"), Some("socks5h://127.0.0.1:8081"));
        assert_eq!(get(&vars, "NODE_USE_ENV_PROXY"), Some("1"));
        assert_eq!(get(&vars, "ELECTRON_GET_USE_PROXY"), Some("true"));
        assert_eq!(get(&vars, "NETPROXY_ACTIVE"), Some("1"));
        assert_eq!(get(&vars, "NETPROXY_ALLOW_LOCAL_BINDING"), Some("0"));
    }

    #[test]
    fn without_socks_all_proxy_is_the_http_url() {
        let vars = env(false, false).vars();
        assert_eq!(get(&vars, "ALL_PROXY"), Some("http://127.0.0.1:3128"));
    }

    #[test]
    fn local_binding_lists_local_targets_in_no_proxy() {
        let vars = env(true, true).vars();
        assert_eq!(get(&vars, "no_proxy"), Some(LOCAL_NO_PROXY));
        assert_eq!(get(&vars, "NETPROXY_ALLOW_LOCAL_BINDING"), Some("1"));
    }

    #[test]
    fn managed_keys_are_recognised_in_any_case() {
        for k in [
            "Http_Proxy",
            "NO_PROXY",
            "no_proxy",
            "YARN_NO_PROXY",
            "netproxy_active",
            "NETPROXY_ADMIN_TOKEN",
            "NETPROXY_HOME",
            "NETPROXY_SYSTEM_DIR",
            "NETPROXY_WORKER_THREADS",
            "Netproxy_Anything_Later",
        ] {
            assert!(is_managed(k), "{k}");
        }
        for k in [
            "HOME",
            "PATH",
            "PROXY",
            "SSL_CERT_FILE",
            "NETPROXY",
            "MY_NETPROXY_X",
            "é",
        ] {
            assert!(!is_managed(k), "{k}");
        }
    }

    #[test]
    fn a_trust_bundle_goes_into_every_ca_key_and_only_then_are_they_replaced() {
        let plain = env(true, false);
        let vars = plain.vars();
        for k in CA_KEYS {
            assert_eq!(get(&vars, k), None, "{k}");
            assert!(!plain.removes(k), "{k}");
        }
        let mut mitm = env(true, false);
        mitm.ca_bundle = Some("/h/ca/ca-bundle-ab.pem".into());
        let vars = mitm.vars();
        for k in CA_KEYS {
            assert_eq!(get(&vars, k), Some("/h/ca/ca-bundle-ab.pem"), "{k}");
            assert_eq!(vars.iter().filter(|(key, _)| key == k).count(), 1, "{k}");
        }
        for k in [
            "SSL_CERT_FILE",
            "NPM_CONFIG_CAFILE",
            "Pip_Cert",
            "HTTP_PROXY",
        ] {
            assert!(mitm.removes(k), "{k}");
        }
        for k in ["SSL_CERT_DIR", "AWS_CA_BUNDLE", "PATH"] {
            assert!(!mitm.removes(k), "{k}");
        }
    }

    #[test]
    fn a_credential_goes_into_every_url() {
        let mut e = env(true, false);
        e.credential = Some("netproxy:s3cret".into());
        assert_eq!(e.http_url(), "http://netproxy:s3cret@127.0.0.1:3128");
        assert_eq!(e.all_url(), "socks5h://netproxy:s3cret@127.0.0.1:8081");
    }

    #[test]
    fn shell_quoting_survives_quotes() {
        assert_eq!(sh_quote("a'b"), r"'a'\''b'");
        assert_eq!(
            to_sh(&[("K".into(), "v w".into())]),
            "export K='v w'\n".to_owned()
        );
    }
}
