// The floor of a user-space SOCKS5 UDP relay on this machine, for the udp-rtt figures in
// docs/benchmarks.md (issue 5). Not part of netproxy and not built by cargo: it is the least a
// relay can do per datagram (one blocking recv and one send, two threads per association, no
// epoll, no policy, no accounting, IPv4 only), to show how far any relay can get on the machine.
//
//   rustc -O -o /tmp/udp-floor scripts/udp-floor.rs
//   /tmp/udp-floor 127.0.0.1:18300 &
//   loadgen udp-rtt --proxy 127.0.0.1:18300 --target 127.0.0.1:18184 --conns 8 --secs 5
//
// Loopback only: it binds 127.0.0.1 and relays only to the IPv4 address each datagram names.
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, UdpSocket};
use std::sync::{Arc, Mutex};

fn main() {
    let addr: SocketAddr = std::env::args()
        .nth(1)
        .unwrap_or("127.0.0.1:18300".into())
        .parse()
        .expect("an ip:port");
    assert!(addr.ip().is_loopback(), "loopback only");
    let l = TcpListener::bind(addr).unwrap();
    for s in l.incoming() {
        let mut s = s.unwrap();
        std::thread::spawn(move || {
            let mut b = [0u8; 512];
            s.read_exact(&mut b[..2]).unwrap();
            let n = b[1] as usize;
            s.read_exact(&mut b[..n]).unwrap();
            s.write_all(&[5, 0]).unwrap();
            s.read_exact(&mut b[..4]).unwrap();
            let cmd = b[1];
            let atyp = b[3];
            let alen = match atyp { 1 => 4, 4 => 16, 3 => { s.read_exact(&mut b[..1]).unwrap(); b[0] as usize } _ => return };
            s.read_exact(&mut b[..alen + 2]).unwrap();
            if cmd != 3 { let _ = s.write_all(&[5, 7, 0, 1, 0, 0, 0, 0, 0, 0]); return; }
            let inb = UdpSocket::bind("127.0.0.1:0").unwrap();
            let out = UdpSocket::bind("0.0.0.0:0").unwrap();
            let p = inb.local_addr().unwrap().port();
            s.write_all(&[5, 0, 0, 1, 127, 0, 0, 1, (p >> 8) as u8, p as u8]).unwrap();
            let client: Arc<Mutex<Option<SocketAddr>>> = Arc::new(Mutex::new(None));
            let (inb2, out2, c2) = (inb.try_clone().unwrap(), out.try_clone().unwrap(), client.clone());
            std::thread::spawn(move || {
                let mut buf = vec![0u8; 65536];
                loop {
                    let (n, src) = inb2.recv_from(&mut buf).unwrap();
                    { let mut c = c2.lock().unwrap(); if c.is_none() { *c = Some(src); } }
                    if n < 10 || buf[3] != 1 { continue; }
                    let to = SocketAddr::from(([buf[4], buf[5], buf[6], buf[7]], u16::from_be_bytes([buf[8], buf[9]])));
                    if !to.ip().is_loopback() { continue; }
                    let _ = out2.send_to(&buf[10..n], to);
                }
            });
            std::thread::spawn(move || {
                let mut buf = vec![0u8; 65536];
                loop {
                    let (n, src) = out.recv_from(&mut buf[10..]).unwrap();
                    let SocketAddr::V4(a) = src else { continue };
                    buf[..4].copy_from_slice(&[0, 0, 0, 1]);
                    buf[4..8].copy_from_slice(&a.ip().octets());
                    buf[8..10].copy_from_slice(&a.port().to_be_bytes());
                    let c = *client.lock().unwrap();
                    if let Some(c) = c { let _ = inb.send_to(&buf[..10 + n], c); }
                }
            });
            let _ = s.read(&mut b);
        });
    }
}
