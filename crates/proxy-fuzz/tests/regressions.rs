//! The bugs the fuzz targets found, each with the input that found it (`fuzz/regressions/`,
//! also replayed by `replay.rs`) and a direct check of the fix.

use std::path::Path;
use std::time::Duration;

/// Runs `target` on its regression input `name`; it must pass.
fn replay(target: &str, name: &str) {
    let path = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../../fuzz/regressions")
        .join(target)
        .join(name);
    let data = std::fs::read(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    let t = proxy_fuzz::target(target).unwrap_or_else(|| panic!("no target {target}"));
    (t.run)(&data);
}

/// `Proxy-Authorization: Basic` of `user` (no colon) was taken as the user with an empty
/// password: a credential with an empty password passed without its colon (RFC 7617 needs
/// `user:password`). Found by `proxy_auth` against its RFC reading.
#[test]
fn basic_credentials_need_their_colon() {
    replay("proxy_auth", "basic-without-colon");
    let cred = proxy_core::ProxyCredential::new("user", "");
    // base64("user") and base64("user:")
    assert!(!proxy_http::proxy_authorized(
        [&b"Basic dXNlcg=="[..]],
        &cred
    ));
    assert!(proxy_http::proxy_authorized(
        [&b"Basic dXNlcjo="[..]],
        &cred
    ));
    let empty = proxy_core::ProxyCredential::new("", "");
    assert!(!proxy_http::proxy_authorized([&b"Basic "[..]], &empty));
}

/// A tunnel measured its quiet time with the system clock but slept on Tokio's: under a paused
/// clock (the wire harness) an idle tunnel never closed. The tunnel now reads Tokio's clock
/// (the same as the system's outside tests). Found by `socks_wire` (a client that keeps its
/// connection open after its last byte).
#[test]
fn an_idle_tunnel_closes_on_a_paused_clock() {
    replay("socks_wire", "idle-tunnel-on-a-paused-clock");
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_time()
        .start_paused(true)
        .build()
        .unwrap_or_else(|e| panic!("{e}"));
    runtime.block_on(async {
        let (_a, a) = tokio::io::duplex(64);
        let (b, _b) = tokio::io::duplex(64);
        let idle = Duration::from_secs(5);
        let closed = tokio::time::timeout(idle * 3, proxy_io::tunnel(a, b, idle)).await;
        assert!(closed.is_ok(), "the idle tunnel stayed open");
    });
}

/// An upstream that stopped in the middle of a response body held the client connection (and
/// the upstream connection, and a connection slot) for as long as the client waited: nothing
/// timed a body out. The upstream connection is now closed after the idle timeout without a
/// byte either way, which aborts the response. Found by `http_wire`.
#[test]
fn a_response_body_that_stalls_is_closed_after_the_idle_timeout() {
    replay("http_wire", "response-body-stalls");
}

/// A client that stopped in the middle of a request body, after the upstream had already
/// answered, held both connections forever; the same idle close ends it (the request body is
/// dropped, and the client connection closed). Found by `http_wire`.
#[test]
fn a_request_body_that_stalls_after_the_answer_is_closed_after_the_idle_timeout() {
    replay("http_wire", "request-body-stalls-after-the-answer");
    replay("http_wire", "chunked-request-body-stalls-after-the-answer");
}

/// A requirements file with a key in both `[network]` and `[experimental_network]` loaded with
/// one table's value replacing the other's: a managed deny entry was silently dropped (and
/// `enabled = false` could be undone by `enabled = true`). Such a key is now an error. Found by
/// `config` against its reading of the managed deny lists.
#[test]
fn a_requirement_in_both_tables_is_an_error() {
    replay("config", "requirement-in-both-tables");
    let both = "[network]\ndenied_domains = [\"evil.example\"]\n\
                [experimental_network]\ndenied_domains = [\"other.example\"]\n";
    let e = proxy_config::load_texts(
        &[("user.toml", "")],
        &[("requirements.toml", both)],
        &proxy_config::CliOverrides::default(),
    )
    .expect_err("a key in both tables");
    assert!(
        e.to_string().contains(
            "experimental_network.denied_domains: also set, to another value, in [network]"
        ),
        "{e}"
    );
}

/// An IPv6 zone id that starts with "25" (`::14%25255252R`: RFC 6874's `%25` separator, then
/// the zone `255252r`) was written back bare (`::14%255252r`), which reads as the zone
/// `5252r`: the canonical host did not read back as itself, so a target sent again (a SOCKS
/// domain, an audit record read back, a pattern) named another zone. Such a zone is now written
/// with the `%25` separator. Found by `socks_request` (its round-trip check).
#[test]
fn a_zone_starting_with_25_reads_back_as_itself() {
    replay("socks_request", "zone-starting-with-25");
    let host = proxy_core::Host::parse("::14%25255252R").unwrap();
    assert_eq!(host.zone(), Some("255252r"));
    assert_eq!(host.to_string(), "::14%25255252r");
    assert_eq!(proxy_core::Host::parse(&host.to_string()), Ok(host));
}
