//! `hello`: the ClientHello peek ([`proxy_core::tls::client_hello`]) on arbitrary first bytes,
//! against rustls's own parser, the one the interceptor terminates TLS with. `verify_sni`
//! compares the name the peek reads with the `CONNECT` host, and the interceptor then serves
//! the name rustls reads: the two must never read different names. And the peek is
//! consistent with itself: a prefix of the bytes is `Incomplete` or the same answer, and
//! nothing past [`MAX_HELLO`] bytes is ever needed.

use proxy_core::tls::{Hello, MAX_HELLO, client_hello};
use rustls::server::Acceptor;

/// Runs the target on one input.
pub fn run(data: &[u8]) {
    let ours = client_hello(data);
    if data.len() > MAX_HELLO + 5 {
        assert_ne!(
            ours,
            Hello::Incomplete,
            "more than MAX_HELLO bytes and still incomplete"
        );
    }
    // A prefix: still incomplete, or already the same answer (a whole hello does not depend
    // on the bytes after it).
    if !data.is_empty() {
        let cut = data.len() * 2 / 3;
        let early = client_hello(&data[..cut]);
        if let Hello::ClientHello { .. } = early {
            assert_eq!(early, ours, "a prefix of {cut} bytes reads another hello");
        }
    }
    let Hello::ClientHello { sni: ours } = ours else {
        return;
    };
    if let Some(name) = &ours {
        assert!(
            name.bytes().all(|b| b.is_ascii_graphic()),
            "the peek returned a name with a non-printable byte: {name:?}"
        );
    }
    let mut acceptor = Acceptor::default();
    let mut rest = data;
    while !rest.is_empty() {
        match acceptor.read_tls(&mut rest) {
            Ok(0) | Err(_) => return,
            Ok(_) => {}
        }
    }
    let Ok(Some(accepted)) = acceptor.accept() else {
        return;
    };
    // Both directions: a name rustls reads and the peek does not would let a tunnel whose
    // `CONNECT` named an IP literal pass `verify_sni` and be served another host's name.
    if let Some(theirs) = accepted.client_hello().server_name() {
        let Some(ours) = &ours else {
            panic!("rustls reads {theirs:?}, the peek reads no name");
        };
        assert!(
            theirs.eq_ignore_ascii_case(ours)
                || theirs.eq_ignore_ascii_case(ours.trim_end_matches('.')),
            "the peek reads {ours:?}, rustls reads {theirs:?}"
        );
    }
}
