//! `host`: [`Host::parse`] and [`Target::parse_authority`] on arbitrary text. Whatever parses
//! has a canonical form that parses back to the same host (in both its display and its URI
//! spelling), is plain ASCII with no byte a request line, a header or a log line could be
//! split on, and an authority keeps its host and port through its display.

use proxy_core::{Host, Target};

/// Runs the target on one input.
pub fn run(data: &[u8]) {
    let text = String::from_utf8_lossy(data);
    host(&text);
    authority(&text);
}

fn host(text: &str) {
    let Ok(host) = Host::parse(text) else {
        return;
    };
    let shown = host.to_string();
    assert!(
        shown.bytes().all(|b| b.is_ascii_graphic()),
        "canonical host {shown:?} of {text:?} is not printable ASCII"
    );
    assert!(
        !shown.contains(['/', '\\', '@', '?', '#', ' ']),
        "canonical host {shown:?} holds a separator"
    );
    if let Some(name) = host.as_name() {
        assert!(
            !name.ends_with('.') && name == name.to_ascii_lowercase(),
            "name {name:?} of {text:?} is not canonical"
        );
    }
    let again = Host::parse(&shown)
        .unwrap_or_else(|e| panic!("canonical {shown:?} of {text:?} does not parse: {e}"));
    assert_eq!(again, host, "{text:?} → {shown:?} does not round-trip");
    assert_eq!(again.to_string(), shown);
    let uri = host.to_uri_host();
    let from_uri = Host::parse(&uri)
        .unwrap_or_else(|e| panic!("URI form {uri:?} of {text:?} does not parse: {e}"));
    assert_eq!(from_uri, host, "{text:?} → {uri:?} does not round-trip");
    if let Some(ip) = host.ip() {
        let bare = host.without_zone().unwrap_or_else(|| host.clone());
        assert_eq!(
            Host::from_ip(ip),
            bare,
            "{text:?}: the address does not give the host"
        );
    }
}

fn authority(text: &str) {
    for default in [443, 80] {
        let Ok(target) = Target::parse_authority(text, default) else {
            continue;
        };
        let (Some(host), port) = (target.host(), target.port()) else {
            panic!("an authority parsed to a unix target: {target:?}");
        };
        assert_ne!(port, 0, "{text:?} parsed with port 0");
        let shown = target.to_string();
        let again = Target::parse_authority(&shown, if default == 443 { 80 } else { 443 })
            .unwrap_or_else(|e| panic!("{shown:?} (from {text:?}) does not parse: {e}"));
        assert_eq!(again, target, "{text:?} → {shown:?} does not round-trip");
        assert_eq!(Host::parse(&host.to_uri_host()).ok().as_ref(), Some(host));
    }
}
