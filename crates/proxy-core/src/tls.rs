//! The first bytes of a TLS client: is this a ClientHello, and which name does it ask for?
//!
//! A pure parser of bytes, for the checks that look at a tunnel before anything is relayed:
//! whether a stream on an intercepted route is TLS at all, and (`verify_sni`) whether the
//! server name a client asks for (SNI, RFC 6066 §3) is the host its `CONNECT` named. It reads
//! TLS records (RFC 8446 §5.1) until the ClientHello handshake message (§4.1.2) is whole, across
//! as many records as the client split it into, and never more than [`MAX_HELLO`] bytes. It
//! allocates only when the message is split across records.

/// The most bytes read while looking for a whole ClientHello. Real ones are a few hundred bytes
/// (up to about 2 KiB with post-quantum key shares); more is refused, never buffered.
pub const MAX_HELLO: usize = 16 * 1024;

/// The most records a ClientHello may be split into (real clients use one to three); more is
/// refused, which also bounds the work of reading one.
pub const MAX_RECORDS: usize = 32;

/// What the first bytes of a stream are.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Hello {
    /// Not enough bytes yet to tell: read more (and ask again with every byte so far).
    Incomplete,
    /// Not a TLS ClientHello (another protocol, or a malformed or oversized handshake).
    NotTls(&'static str),
    /// A whole ClientHello.
    ClientHello {
        /// The `host_name` of its `server_name` extension, as sent (ASCII, not yet
        /// canonicalised); `None` when there is none.
        sni: Option<String>,
    },
}

/// The TLS record type of a handshake message.
const HANDSHAKE: u8 = 22;
/// The handshake message type of a ClientHello.
const CLIENT_HELLO: u8 = 1;
/// The extension type of `server_name`.
const SERVER_NAME: u16 = 0;
/// The `name_type` of a host name in `server_name`.
const HOST_NAME: u8 = 0;

/// Reads the first bytes a client sent (`buf`, every byte so far).
///
/// ```
/// use proxy_core::tls::{Hello, client_hello};
/// assert_eq!(client_hello(b"\x16\x03\x01"), Hello::Incomplete);
/// assert!(matches!(client_hello(b"GET / HTTP/1.1\r\n"), Hello::NotTls(_)));
/// ```
pub fn client_hello(buf: &[u8]) -> Hello {
    // The handshake message, gathered from the fragments of consecutive handshake records.
    let mut message: Option<Vec<u8>> = None;
    let mut rest = buf;
    for _ in 0..=MAX_RECORDS {
        let Some(header) = rest.get(..5) else {
            return check_prefix(rest, message.is_some());
        };
        if header[0] != HANDSHAKE {
            return Hello::NotTls("not a TLS handshake record");
        }
        if header[1] != 3 {
            return Hello::NotTls("not a TLS record version");
        }
        let len = usize::from(u16::from_be_bytes([header[3], header[4]]));
        if len == 0 {
            return Hello::NotTls("an empty TLS record");
        }
        let Some(fragment) = rest.get(5..5 + len) else {
            // Only whole records are parsed; what is there already may tell enough.
            let partial = &rest[5..];
            let start: &[u8] = match &message {
                Some(m) => m,
                None => partial,
            };
            if let Some(refused) = too_large_or_other(start) {
                return refused;
            }
            return if buf.len() - rest.len() + 5 + len > MAX_HELLO {
                Hello::NotTls("a ClientHello larger than netproxy reads")
            } else {
                Hello::Incomplete
            };
        };
        rest = &rest[5 + len..];
        let whole: &[u8] = match &mut message {
            None if is_whole(fragment) => return parse_hello(fragment),
            None => message.insert(fragment.to_vec()),
            Some(m) => {
                m.extend_from_slice(fragment);
                m
            }
        };
        if is_whole(whole) {
            return parse_hello(whole);
        }
        if let Some(refused) = too_large_or_other(whole) {
            return refused;
        }
    }
    Hello::NotTls("a ClientHello split into too many records")
}

/// How many bytes `buf` must hold before [`client_hello`] can tell more than it told with `buf`:
/// the end of the first record not yet whole (or of its header). A reader calls
/// [`client_hello`] again only once it has that many, so reading a ClientHello costs work in
/// proportion to its records, not to the reads it arrived in.
///
/// ```
/// use proxy_core::tls::wanted;
/// assert_eq!(wanted(b""), 5);
/// assert_eq!(wanted(b"\x16\x03\x01\x00\x10\x01"), 5 + 16);
/// ```
pub fn wanted(buf: &[u8]) -> usize {
    let mut at = 0;
    for _ in 0..=MAX_RECORDS {
        let Some(header) = buf.get(at..at + 5) else {
            return at + 5;
        };
        let end = at + 5 + usize::from(u16::from_be_bytes([header[3], header[4]]));
        if buf.len() < end {
            return end;
        }
        at = end;
    }
    // Past the record cap: any byte more lets the parser refuse.
    buf.len() + 1
}

/// What the start of a handshake message already refuses: another message type, or a declared
/// length past [`MAX_HELLO`].
fn too_large_or_other(start: &[u8]) -> Option<Hello> {
    match start.first() {
        Some(&t) if t != CLIENT_HELLO => Some(Hello::NotTls(
            "the first handshake message is not a ClientHello",
        )),
        _ if start.len() >= 4 && handshake_len(start) + 4 > MAX_HELLO => {
            Some(Hello::NotTls("a ClientHello larger than netproxy reads"))
        }
        _ => None,
    }
}

/// With fewer than five bytes left: whether they can still start a handshake record.
fn check_prefix(rest: &[u8], started: bool) -> Hello {
    match rest {
        [] | [HANDSHAKE] | [HANDSHAKE, 3] | [HANDSHAKE, 3, _] | [HANDSHAKE, 3, _, _] => {
            Hello::Incomplete
        }
        _ if started => Hello::NotTls("a ClientHello split by another record type"),
        _ => Hello::NotTls("not a TLS handshake record"),
    }
}

/// The length a handshake message declares (its first four bytes are there).
fn handshake_len(m: &[u8]) -> usize {
    usize::from(m[1]) << 16 | usize::from(m[2]) << 8 | usize::from(m[3])
}

/// Whether `m` holds a whole handshake message (header and body).
fn is_whole(m: &[u8]) -> bool {
    m.len() >= 4 && m.len() >= 4 + handshake_len(m)
}

/// A cursor over a message's bytes; every read is checked.
struct Reader<'a>(&'a [u8]);

impl<'a> Reader<'a> {
    fn take(&mut self, n: usize) -> Option<&'a [u8]> {
        let (head, tail) = self.0.split_at_checked(n)?;
        self.0 = tail;
        Some(head)
    }

    fn u8(&mut self) -> Option<u8> {
        self.take(1).map(|b| b[0])
    }

    fn u16(&mut self) -> Option<u16> {
        self.take(2).map(|b| u16::from_be_bytes([b[0], b[1]]))
    }

    /// A vector with a length prefix of `width` bytes (1 or 2).
    fn vector(&mut self, width: usize) -> Option<&'a [u8]> {
        let len = match width {
            1 => usize::from(self.u8()?),
            _ => usize::from(self.u16()?),
        };
        self.take(len)
    }
}

/// Parses one whole handshake message that should be a ClientHello.
fn parse_hello(m: &[u8]) -> Hello {
    if m[0] != CLIENT_HELLO {
        return Hello::NotTls("the first handshake message is not a ClientHello");
    }
    let body = &m[4..4 + handshake_len(m)];
    match server_name(body) {
        Ok(sni) => Hello::ClientHello { sni },
        Err(why) => Hello::NotTls(why),
    }
}

/// The `host_name` of the `server_name` extension of a ClientHello body.
fn server_name(body: &[u8]) -> Result<Option<String>, &'static str> {
    const MALFORMED: &str = "a malformed ClientHello";
    let mut r = Reader(body);
    // legacy_version, random, legacy_session_id, cipher_suites, legacy_compression_methods
    r.take(2 + 32).ok_or(MALFORMED)?;
    r.vector(1).ok_or(MALFORMED)?;
    r.vector(2).ok_or(MALFORMED)?;
    r.vector(1).ok_or(MALFORMED)?;
    if r.0.is_empty() {
        // No extensions at all (TLS 1.2 allows it): no name.
        return Ok(None);
    }
    let mut extensions = Reader(r.vector(2).ok_or(MALFORMED)?);
    if !r.0.is_empty() {
        return Err("bytes after a ClientHello's extensions");
    }
    let mut found = None;
    while !extensions.0.is_empty() {
        let kind = extensions.u16().ok_or(MALFORMED)?;
        let data = extensions.vector(2).ok_or(MALFORMED)?;
        if kind != SERVER_NAME {
            continue;
        }
        if found.is_some() {
            return Err("a ClientHello with two server_name extensions");
        }
        let mut list = Reader(data);
        let mut names = Reader(list.vector(2).ok_or(MALFORMED)?);
        if !list.0.is_empty() {
            return Err("bytes after a server_name list");
        }
        let mut host = None;
        while !names.0.is_empty() {
            let name_type = names.u8().ok_or(MALFORMED)?;
            let name = names.vector(2).ok_or(MALFORMED)?;
            if name_type != HOST_NAME {
                continue;
            }
            // RFC 6066 §3: one host_name, ASCII, no trailing dot; anything else is not a name
            // netproxy could compare.
            if host.is_some() {
                return Err("a server_name with two host names");
            }
            if name.is_empty() || !name.iter().all(u8::is_ascii_graphic) {
                return Err("a server_name that is not an ASCII host name");
            }
            host = Some(String::from_utf8_lossy(name).into_owned());
        }
        found = Some(host);
    }
    Ok(found.flatten())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A ClientHello body with these extensions (type, data).
    fn body(extensions: &[(u16, Vec<u8>)]) -> Vec<u8> {
        let mut b = vec![3, 3];
        b.extend([7u8; 32]);
        b.push(32);
        b.extend([1u8; 32]);
        b.extend([0, 4, 0x13, 0x01, 0x13, 0x02]);
        b.extend([1, 0]);
        let mut ext = Vec::new();
        for (kind, data) in extensions {
            ext.extend(kind.to_be_bytes());
            ext.extend(u16::try_from(data.len()).unwrap().to_be_bytes());
            ext.extend(data);
        }
        b.extend(u16::try_from(ext.len()).unwrap().to_be_bytes());
        b.extend(ext);
        b
    }

    fn sni(name: &[u8]) -> (u16, Vec<u8>) {
        let mut entry = vec![HOST_NAME];
        entry.extend(u16::try_from(name.len()).unwrap().to_be_bytes());
        entry.extend(name);
        let mut data = u16::try_from(entry.len()).unwrap().to_be_bytes().to_vec();
        data.extend(entry);
        (SERVER_NAME, data)
    }

    fn message(body: &[u8]) -> Vec<u8> {
        let len = u32::try_from(body.len()).unwrap().to_be_bytes();
        let mut m = vec![CLIENT_HELLO, len[1], len[2], len[3]];
        m.extend(body);
        m
    }

    /// The message in records of at most `chunk` bytes.
    fn records(message: &[u8], chunk: usize) -> Vec<u8> {
        let mut out = Vec::new();
        for part in message.chunks(chunk) {
            out.extend([HANDSHAKE, 3, 1]);
            out.extend(u16::try_from(part.len()).unwrap().to_be_bytes());
            out.extend(part);
        }
        out
    }

    fn hello(name: Option<&str>) -> Hello {
        Hello::ClientHello {
            sni: name.map(str::to_owned),
        }
    }

    #[test]
    fn the_server_name_of_a_whole_hello_in_one_record() {
        let m = message(&body(&[(10, vec![0, 2, 0, 29]), sni(b"api.example.com")]));
        assert_eq!(
            client_hello(&records(&m, 16_384)),
            hello(Some("api.example.com"))
        );
        // Bytes after the hello (the client's next record) do not matter.
        let mut more = records(&m, 16_384);
        more.extend(b"\x14\x03\x03\x00\x01\x01");
        assert_eq!(client_hello(&more), hello(Some("api.example.com")));
    }

    #[test]
    fn every_prefix_is_incomplete_and_the_whole_is_read_across_records() {
        let m = message(&body(&[sni(b"split.example")]));
        for chunk in [7, 64, 500] {
            let wire = records(&m, chunk);
            for end in 0..wire.len() {
                assert_eq!(
                    client_hello(&wire[..end]),
                    Hello::Incomplete,
                    "{chunk} {end}"
                );
            }
            assert_eq!(client_hello(&wire), hello(Some("split.example")), "{chunk}");
        }
    }

    #[test]
    fn no_extension_no_server_name_and_other_name_types() {
        let mut no_ext = body(&[]);
        no_ext.truncate(no_ext.len() - 2);
        assert_eq!(client_hello(&records(&message(&no_ext), 500)), hello(None));
        let m = message(&body(&[(10, vec![0, 2, 0, 29])]));
        assert_eq!(client_hello(&records(&m, 500)), hello(None));
        // A name type other than host_name is skipped.
        let other = (SERVER_NAME, vec![0, 4, 9, 0, 1, b'x']);
        assert_eq!(
            client_hello(&records(&message(&body(&[other])), 500)),
            hello(None)
        );
    }

    #[test]
    fn other_protocols_and_malformed_hellos_are_not_tls() {
        for wire in [
            &b"GET / HTTP/1.1\r\nHost: x\r\n\r\n"[..],
            b"SSH-2.0-OpenSSH_9.6\r\n",
            b"PRI * HTTP/2.0\r\n",
            b"\x16\x02\x00\x00\x05hello",
            b"\x16\x03\x01\x00\x00",
            b"\x17\x03\x03\x00\x05hello",
        ] {
            assert!(matches!(client_hello(wire), Hello::NotTls(_)), "{wire:?}");
        }
        // A ServerHello, a truncated body, two server names, a name with a space.
        let mut server = message(&body(&[]));
        server[0] = 2;
        let mut short = message(&body(&[sni(b"x.test")]));
        short.truncate(20);
        let len = u32::try_from(short.len() - 4).unwrap().to_be_bytes();
        short[1..4].copy_from_slice(&len[1..]);
        for m in [
            server,
            short,
            message(&body(&[sni(b"a.test"), sni(b"b.test")])),
            message(&body(&[sni(b"a test")])),
            message(&body(&[sni(b"")])),
        ] {
            assert!(
                matches!(client_hello(&records(&m, 500)), Hello::NotTls(_)),
                "{m:?}"
            );
        }
        // A handshake record interrupted by another record type.
        let m = message(&body(&[sni(b"x.test")]));
        let mut wire = records(&m[..10], 10);
        wire.extend(b"\x17\x03\x03\x00\x01\x00");
        assert!(matches!(client_hello(&wire), Hello::NotTls(_)));
    }

    #[test]
    fn too_many_records_trailing_bytes_and_wanted() {
        let m = message(&body(&[sni(b"split.example")]));
        // One byte per record: more records than a client uses.
        assert!(matches!(client_hello(&records(&m, 1)), Hello::NotTls(_)));
        // Every record but the last whole: `wanted` points past the partial one.
        let wire = records(&m, 10);
        for end in 0..wire.len() {
            let w = wanted(&wire[..end]);
            assert!(w > end, "{end}");
            assert!(w <= wire.len(), "{end}");
        }
        // Bytes after the extensions, or after the server_name list.
        let mut extra = body(&[sni(b"x.test")]);
        extra.push(0);
        assert!(matches!(
            client_hello(&records(&message(&extra), 500)),
            Hello::NotTls(_)
        ));
        let (kind, mut data) = sni(b"x.test");
        data.push(0);
        assert!(matches!(
            client_hello(&records(&message(&body(&[(kind, data)])), 500)),
            Hello::NotTls(_)
        ));
    }

    #[test]
    fn a_hello_larger_than_the_bound_is_refused_early() {
        let big = message(&body(&[(21, vec![0; 20_000]), sni(b"x.test")]));
        let wire = records(&big, 16_000);
        // Refused as soon as the declared length is known, before the bound is read.
        assert!(matches!(client_hello(&wire[..200]), Hello::NotTls(_)));
        let wire = records(&big, 1_000);
        assert!(matches!(client_hello(&wire[..5_000]), Hello::NotTls(_)));
        // And a record claiming more than the bound.
        assert!(matches!(
            client_hello(b"\x16\x03\x01\xff\xff\x01"),
            Hello::NotTls(_)
        ));
    }
}
