//! A client's SOCKS5 greeting and request, read with fast-socks5's framing, and the step from
//! the address it names to netproxy's [`Target`].

use fast_socks5::Socks5Command;
use fast_socks5::server::{Socks5ServerProtocol, SocksServerError, states::CommandRead};
use fast_socks5::util::target_addr::TargetAddr;
use proxy_core::{Host, HostError, ProxyCredential, Target};
use tokio::io::{AsyncRead, AsyncWrite};

/// A request as [`read_request`] returns it: the protocol state to answer it with (its reply is
/// still to be written), the command, and the address the client named.
pub type Request<S> = (
    Socks5ServerProtocol<S, CommandRead>,
    Socks5Command,
    TargetAddr,
);

/// Greets a client and reads its request from `stream` (RFC 1928). Without `proxy_auth`, only
/// the no-authentication method is offered; with it, only username/password (RFC 1929), and
/// only that credential, compared in constant time, passes. An error means the connection is
/// over: fast-socks5 has already written the reply the protocol has for it (no acceptable
/// method `0xff`, a rejected credential, `0x08` for an unknown address type, `0x07` for an
/// unknown command), or the client sent too little or something that is not SOCKS5. Nothing
/// is resolved: a domain stays a name ([`target`]). The caller bounds the time it takes.
///
/// ```
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() {
/// use fast_socks5::{Socks5Command, util::target_addr::TargetAddr};
/// let (mut client, server) = tokio::io::duplex(64);
/// // No authentication, then CONNECT example.com:443.
/// let mut bytes = vec![5, 1, 0, 5, 1, 0, 3, 11];
/// bytes.extend_from_slice(b"example.com");
/// bytes.extend_from_slice(&443u16.to_be_bytes());
/// tokio::io::AsyncWriteExt::write_all(&mut client, &bytes).await.unwrap();
/// let (_reply, command, addr) = proxy_socks::read_request(server, None).await.unwrap();
/// assert_eq!(command, Socks5Command::TCPConnect);
/// assert_eq!(addr, TargetAddr::Domain("example.com".into(), 443));
/// # }
/// ```
pub async fn read_request<S>(
    stream: S,
    proxy_auth: Option<&ProxyCredential>,
) -> Result<Request<S>, SocksServerError>
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    let proto = match proxy_auth {
        Some(cred) => {
            Socks5ServerProtocol::accept_password_auth(stream, |user, pass| {
                cred.matches(user.as_bytes(), pass.as_bytes())
            })
            .await?
            .0
        }
        None => Socks5ServerProtocol::accept_no_auth(stream).await?,
    };
    proto.read_command().await
}

/// The target a SOCKS5 address names: an IP address as it is ([`Host::from_ip`]), a domain
/// canonicalised by [`Host::parse`] (an IP literal sent as a domain becomes that address),
/// with its port. A domain that is not a valid host is an error, and the request is refused
/// (`0x02` for `CONNECT`; a UDP datagram to it is dropped). Port 0 is passed on as it is: the
/// gate judges it.
///
/// ```
/// use fast_socks5::util::target_addr::TargetAddr;
/// let t = proxy_socks::target(&TargetAddr::Domain("Example.COM.".into(), 443)).unwrap();
/// assert_eq!(t.to_string(), "example.com:443");
/// assert!(proxy_socks::target(&TargetAddr::Domain("a b".into(), 80)).is_err());
/// ```
pub fn target(addr: &TargetAddr) -> Result<Target, HostError> {
    Ok(match addr {
        TargetAddr::Ip(sa) => Target::net(Host::from_ip(sa.ip()), sa.port()),
        TargetAddr::Domain(name, port) => Target::net(Host::parse(name)?, *port),
    })
}

#[cfg(test)]
mod tests {
    use std::net::{Ipv4Addr, Ipv6Addr, SocketAddr};

    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    use super::*;

    /// Runs `read_request` on the client bytes `sent`; what it returned (command and address)
    /// and what the server wrote back.
    async fn read(
        sent: &[u8],
        auth: Option<&ProxyCredential>,
    ) -> (Option<(Socks5Command, TargetAddr)>, Vec<u8>) {
        let (mut client, server) = tokio::io::duplex(1024);
        client.write_all(sent).await.unwrap();
        client.shutdown().await.unwrap();
        let read = read_request(server, auth).await;
        let got = read.ok().map(|(proto, c, a)| {
            drop(proto);
            (c, a)
        });
        let mut back = Vec::new();
        client.read_to_end(&mut back).await.unwrap();
        (got, back)
    }

    fn connect(atyp_addr: &[u8], port: u16) -> Vec<u8> {
        let mut b = vec![5, 1, 0];
        b.extend_from_slice(atyp_addr);
        b.extend_from_slice(&port.to_be_bytes());
        b
    }

    #[tokio::test]
    async fn no_auth_reads_each_address_type() {
        let cases: &[(&[u8], TargetAddr)] = &[
            (
                &[1, 127, 0, 0, 1],
                TargetAddr::Ip(SocketAddr::from((Ipv4Addr::LOCALHOST, 80))),
            ),
            (
                &[4, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1],
                TargetAddr::Ip(SocketAddr::from((Ipv6Addr::LOCALHOST, 80))),
            ),
            (
                &[3, 3, b'a', b'.', b'b'],
                TargetAddr::Domain("a.b".into(), 80),
            ),
        ];
        for (addr, want) in cases {
            let mut sent = vec![5, 1, 0];
            sent.extend(connect(addr, 80));
            let (got, back) = read(&sent, None).await;
            assert_eq!(got, Some((Socks5Command::TCPConnect, want.clone())));
            assert_eq!(back, [5, 0], "only the method selection is written");
        }
    }

    #[tokio::test]
    async fn malformed_requests_are_errors_with_the_protocols_reply() {
        // No acceptable method: 0xff.
        assert_eq!(read(&[5, 1, 2], None).await, (None, vec![5, 0xff]));
        // Not SOCKS5: nothing written.
        assert_eq!(read(&[4, 1, 0], None).await, (None, vec![]));
        // Truncated request: nothing but the method selection.
        assert_eq!(read(&[5, 1, 0, 5, 1, 0, 1, 127], None).await.0, None);
        // Unknown address type: 0x08.
        let (got, back) = read(&[5, 1, 0, 5, 1, 0, 9, 0, 0], None).await;
        assert_eq!(got, None);
        assert_eq!(back[2..4], [5, 8]);
        // Unknown command: 0x07.
        let (got, back) = read(&[5, 1, 0, 5, 9, 0, 1, 1, 2, 3, 4, 0, 80], None).await;
        assert_eq!(got, None);
        assert_eq!(back[2..4], [5, 7]);
    }

    #[tokio::test]
    async fn with_a_credential_only_that_credential_passes() {
        let cred = ProxyCredential::new("user", "secret");
        let auth = |user: &[u8], pass: &[u8]| {
            let mut b = vec![5, 2, 0, 2, 1, user.len() as u8];
            b.extend_from_slice(user);
            b.push(pass.len() as u8);
            b.extend_from_slice(pass);
            b
        };
        let mut good = auth(b"user", b"secret");
        good.extend(connect(&[1, 10, 0, 0, 1], 443));
        let (got, back) = read(&good, Some(&cred)).await;
        assert!(got.is_some());
        assert_eq!(back, [5, 2, 1, 0]);
        for (user, pass) in [
            (&b"user"[..], &b"secreT"[..]),
            (b"use", b"secret"),
            (b"user", b"secret2"),
            (b"\xff", b"secret"),
        ] {
            let mut bad = auth(user, pass);
            bad.extend(connect(&[1, 10, 0, 0, 1], 443));
            let (got, back) = read(&bad, Some(&cred)).await;
            assert_eq!(got, None, "{user:?} {pass:?}");
            assert!(!back.ends_with(&[1, 0]), "{user:?} {pass:?}: {back:?}");
        }
        // No-auth is not offered with a credential.
        let mut no_auth = vec![5, 1, 0];
        no_auth.extend(connect(&[1, 10, 0, 0, 1], 443));
        assert_eq!(read(&no_auth, Some(&cred)).await, (None, vec![5, 0xff]));
    }

    #[test]
    fn targets_are_canonical_or_refused() {
        let ip = |s: &str| TargetAddr::Ip(s.parse().unwrap());
        let name = |s: &str, port| TargetAddr::Domain(s.into(), port);
        for (addr, want) in [
            (ip("127.0.0.1:80"), Some("127.0.0.1:80")),
            (ip("[::1]:443"), Some("[::1]:443")),
            (ip("[::ffff:10.0.0.1]:80"), Some("10.0.0.1:80")),
            (name("Example.COM.", 443), Some("example.com:443")),
            (name("127.1", 22), Some("127.0.0.1:22")),
            (name("::1", 22), Some("[::1]:22")),
            (name("a.test", 0), Some("a.test:0")),
            (name("", 80), None),
            (name("a..b", 80), None),
            (name("a\0b", 80), None),
            (name("evil.test\r\nx", 80), None),
        ] {
            let got = target(&addr).ok().map(|t| t.to_string());
            assert_eq!(got.as_deref(), want, "{addr:?}");
        }
    }
}
