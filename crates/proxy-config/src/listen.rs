//! Listener addresses: parsing of `proxy_url`, `socks_url` and `admin_url`, and clamping of
//! non-loopback binds.

use std::net::{IpAddr, Ipv4Addr, SocketAddr};

use proxy_core::{Host, split_authority};

/// Parses a listener URL (`http://127.0.0.1:3128`, `127.0.0.1:3128`, `[::1]:8080`,
/// `localhost:3128`, a bare IPv6 literal) into the address to bind. `localhost` binds
/// 127.0.0.1; any other name is refused (netproxy never binds by name). A missing port is
/// `default_port`; port 0 asks for an ephemeral port.
///
/// ```
/// use proxy_config::parse_listen_url;
/// assert_eq!(parse_listen_url("http://localhost:3128", 1).unwrap().to_string(), "127.0.0.1:3128");
/// assert_eq!(parse_listen_url("[::1]", 8080).unwrap().to_string(), "[::1]:8080");
/// assert!(parse_listen_url("http://proxy.example:3128", 1).is_err());
/// ```
pub fn parse_listen_url(url: &str, default_port: u16) -> Result<SocketAddr, String> {
    let t = url.trim();
    if t.is_empty() {
        return Err("missing host in listener address".into());
    }
    let rest = match t.split_once("://") {
        Some((scheme, rest)) => {
            if !matches!(
                scheme.to_ascii_lowercase().as_str(),
                "http" | "socks5" | "socks5h" | "socks"
            ) {
                return Err(format!(
                    "unsupported scheme {scheme:?} in listener address {url:?}"
                ));
            }
            rest
        }
        None => t,
    };
    let authority = rest.split('/').next().unwrap_or(rest);
    if authority.contains('@') {
        return Err(format!(
            "listener address {url:?} must not contain credentials"
        ));
    }
    if authority.is_empty() {
        return Err(format!("missing host in listener address {url:?}"));
    }
    let ephemeral = authority
        .strip_suffix(":0")
        .filter(|h| h.starts_with('[') || !h.contains(':'));
    let (host, port) = if let Some(h) = ephemeral {
        (h, Some(0))
    } else if authority.starts_with('[') || authority.matches(':').count() <= 1 {
        split_authority(authority).map_err(|e| format!("invalid listener address {url:?}: {e}"))?
    } else {
        (authority, None)
    };
    let port = port.unwrap_or(default_port);
    let host = Host::parse(host).map_err(|e| format!("invalid listener host in {url:?}: {e}"))?;
    let ip = match (host.ip(), host.as_name()) {
        (Some(ip), _) => ip,
        (None, Some("localhost")) => IpAddr::V4(Ipv4Addr::LOCALHOST),
        _ => {
            return Err(format!(
                "listener host in {url:?} must be an IP address or localhost (netproxy never binds by name)"
            ));
        }
    };
    Ok(SocketAddr::new(ip, port))
}

/// Clamps a non-loopback bind to 127.0.0.1 on the same port unless `allow_non_loopback`; the
/// second value is a warning when it clamped (or when it binds beyond loopback on purpose).
pub fn clamp_bind(
    name: &str,
    addr: SocketAddr,
    allow_non_loopback: bool,
    flag: &str,
    force_loopback: Option<&str>,
) -> (SocketAddr, Option<String>) {
    if addr.ip().is_loopback() {
        return (addr, None);
    }
    let clamped = SocketAddr::new(IpAddr::V4(Ipv4Addr::LOCALHOST), addr.port());
    if let Some(why) = force_loopback {
        return (
            clamped,
            Some(format!(
                "{why}; ignoring {flag} and clamping {name} {addr} to {clamped}"
            )),
        );
    }
    if allow_non_loopback {
        return (
            addr,
            Some(format!(
                "DANGEROUS: {name} listening on non-loopback address {addr}"
            )),
        );
    }
    (
        clamped,
        Some(format!(
            "{name} requested non-loopback bind ({addr}); clamping to {clamped} (set {flag} to override)"
        )),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[track_caller]
    fn check(url: &str, expected: Result<&str, &str>) {
        match (parse_listen_url(url, 3128), expected) {
            (Ok(a), Ok(want)) => assert_eq!(a.to_string(), want, "{url}"),
            (Err(e), Err(want)) => assert!(e.contains(want), "{url}: {e}"),
            (got, want) => panic!("{url}: got {got:?}, want {want:?}"),
        }
    }

    #[test]
    fn listener_urls() {
        check("127.0.0.1:8080", Ok("127.0.0.1:8080"));
        check("http://127.0.0.1:8080/some/path", Ok("127.0.0.1:8080"));
        check("http://[::1]:9999", Ok("[::1]:9999"));
        check("::1", Ok("[::1]:3128"));
        check("localhost", Ok("127.0.0.1:3128"));
        check("http://LOCALHOST:0", Ok("127.0.0.1:0"));
        check("1.2.3.4", Ok("1.2.3.4:3128"));
        check("socks5://127.0.0.1:1080", Ok("127.0.0.1:1080"));
        check("", Err("missing host"));
        check("   ", Err("missing host"));
        check("http://", Err("missing host"));
        check("http://user:pass@127.0.0.1:1", Err("credentials"));
        check("http://example.com:5555", Err("never binds by name"));
        check("127.0.0.1:notaport", Err("invalid port"));
        check("ftp://127.0.0.1:21", Err("unsupported scheme"));
    }

    #[test]
    fn clamping() {
        let any: SocketAddr = "0.0.0.0:3128".parse().unwrap();
        let (a, w) = clamp_bind(
            "HTTP proxy",
            any,
            false,
            "dangerously_allow_non_loopback_proxy",
            None,
        );
        assert_eq!(a.to_string(), "127.0.0.1:3128");
        assert!(w.unwrap().contains("clamping to 127.0.0.1:3128"));
        let (a, w) = clamp_bind(
            "HTTP proxy",
            any,
            true,
            "dangerously_allow_non_loopback_proxy",
            None,
        );
        assert_eq!(a, any);
        assert!(w.unwrap().starts_with("DANGEROUS"));
        let (a, _) = clamp_bind(
            "HTTP proxy",
            any,
            true,
            "f",
            Some("unix socket proxying is enabled"),
        );
        assert_eq!(a.to_string(), "127.0.0.1:3128");
        let v6: SocketAddr = "[::1]:1".parse().unwrap();
        assert_eq!(clamp_bind("x", v6, false, "f", None), (v6, None));
    }
}
