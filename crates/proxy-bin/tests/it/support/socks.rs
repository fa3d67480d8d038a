//! SOCKS5 UDP: an association with the real proxy, datagrams, and a UDP echo server.

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpStream, UdpSocket};

/// A SOCKS5 UDP ASSOCIATE (no authentication) at `socks`, declaring `client` as where the
/// datagrams come from: the control connection (the association lasts as long as it does) and
/// the relay's address.
pub(crate) async fn udp_associate(socks: &str, client: SocketAddr) -> (TcpStream, SocketAddr) {
    let mut c = TcpStream::connect(socks).await.unwrap();
    c.write_all(&[5, 1, 0]).await.unwrap();
    let mut m = [0u8; 2];
    c.read_exact(&mut m).await.unwrap();
    assert_eq!(m, [5, 0]);
    c.write_all(&[&[5, 3, 0][..], &address(client)].concat())
        .await
        .unwrap();
    let mut reply = [0u8; 10];
    c.read_exact(&mut reply).await.unwrap();
    assert_eq!(reply[1], 0, "UDP ASSOCIATE refused: {reply:?}");
    let relay = SocketAddr::from((
        Ipv4Addr::new(reply[4], reply[5], reply[6], reply[7]),
        u16::from_be_bytes([reply[8], reply[9]]),
    ));
    if relay.ip().is_unspecified() {
        return (c, SocketAddr::from((Ipv4Addr::LOCALHOST, relay.port())));
    }
    (c, relay)
}

/// A datagram for the relay to send `payload` to `to` (IPv4).
pub(crate) fn datagram(to: SocketAddr, payload: &[u8]) -> Vec<u8> {
    let mut d = vec![0, 0, 0];
    d.extend_from_slice(&address(to));
    d.extend_from_slice(payload);
    d
}

/// `to` as a SOCKS5 address: type 1 (IPv4), the address, the port.
fn address(to: SocketAddr) -> Vec<u8> {
    let IpAddr::V4(ip) = to.ip() else {
        panic!("IPv4 only")
    };
    let mut a = vec![1];
    a.extend_from_slice(&ip.octets());
    a.extend_from_slice(&to.port().to_be_bytes());
    a
}

/// A UDP echo server on `addr` (port 0: any), and the count of datagrams it received.
pub(crate) async fn udp_echo(addr: &str) -> (SocketAddr, Arc<AtomicUsize>) {
    let sock = UdpSocket::bind(addr).await.unwrap();
    let addr = sock.local_addr().unwrap();
    let count = Arc::new(AtomicUsize::new(0));
    let seen = count.clone();
    tokio::spawn(async move {
        let mut buf = vec![0u8; 2048];
        while let Ok((n, from)) = sock.recv_from(&mut buf).await {
            seen.fetch_add(1, Ordering::SeqCst);
            let _ = sock.send_to(&buf[..n], from).await;
        }
    });
    (addr, count)
}

/// The next datagram `client` receives (failing the test if none comes in time).
pub(crate) async fn reply(client: &UdpSocket) -> Vec<u8> {
    let mut buf = vec![0u8; 2048];
    let (n, _) = tokio::time::timeout(proxy_test_support::PATIENCE, client.recv_from(&mut buf))
        .await
        .expect("a reply")
        .unwrap();
    buf.truncate(n);
    buf
}
