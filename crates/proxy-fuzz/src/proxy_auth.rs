//! `proxy_auth`: [`proxy_http::proxy_authorized`] on a configured credential and arbitrary
//! `Proxy-Authorization` values, against a straightforward reading of RFC 7617 written here
//! (its own base64 decoder, strict: the standard alphabet, the padding, no stray bits). A value
//! passes exactly when it is `Basic` (any case) and a space, then, past any whitespace, the
//! base64 of `user:password`, byte for byte the configured ones; so one of several values
//! passes exactly when one of them does. Nothing panics, whatever the bytes.
//!
//! The user never holds a colon (RFC 7617: the user-id cannot, and netproxy's is `netproxy`).

use proxy_core::ProxyCredential;

use crate::input::Input;

/// Schemes the generated values start with.
const SCHEMES: &[&[u8]] = &[
    b"Basic ", b"basic ", b"BASIC ", b"Basic  ", b"Basic\t", b"Basic", b"Bearer ", b"Basi ", b"",
];

/// Runs the target on one input.
pub fn run(data: &[u8]) {
    let mut input = Input::new(data);
    let user: Vec<u8> = input
        .bytes(12)
        .iter()
        .copied()
        .filter(|b| *b != b':')
        .collect();
    let password = input.bytes(12).to_vec();
    // ProxyCredential holds text: the configured credential is UTF-8 (what the bytes say, with
    // invalid sequences replaced, is the credential then).
    let user = String::from_utf8_lossy(&user).into_owned();
    let password = String::from_utf8_lossy(&password).into_owned();
    let cred = ProxyCredential::new(user.clone(), password.clone());
    let expected = [user.as_bytes(), b":", password.as_bytes()].concat();
    let values: Vec<Vec<u8>> = (0..=input.below(3))
        .map(|_| value(&mut input, &expected))
        .collect();
    let ours = proxy_http::proxy_authorized(values.iter().map(Vec::as_slice), &cred);
    let theirs = values.iter().any(|v| carries(v, &expected));
    assert_eq!(
        ours, theirs,
        "netproxy says {ours}, RFC 7617 says {theirs}, for {values:?} and the credential {user:?}:{password:?}"
    );
}

/// One header value: arbitrary bytes, or a scheme and the base64 of the credential, changed a
/// little or not at all.
fn value(input: &mut Input<'_>, expected: &[u8]) -> Vec<u8> {
    match input.below(4) {
        0 => input.bytes(64).to_vec(),
        1 => [input.pick(SCHEMES), input.bytes(40)].concat(),
        _ => {
            let scheme = input.pick(SCHEMES);
            let mut plain = expected.to_vec();
            match input.below(8) {
                // Cut the end (down to the user alone, or nothing).
                0 => plain.truncate(input.below(plain.len() + 1)),
                // Change one byte.
                1 if !plain.is_empty() => {
                    let i = input.below(plain.len());
                    plain[i] ^= input.byte() | 1;
                }
                // Add bytes at the end.
                2 => plain.extend_from_slice(input.bytes(4)),
                // Swap the case.
                3 => plain.make_ascii_uppercase(),
                _ => {}
            }
            let mut token = encode(&plain);
            match input.below(8) {
                // Padding taken off.
                0 => token.retain(|b| *b != b'='),
                // Whitespace around it.
                1 => {
                    token.insert(0, b' ');
                    token.push(b'\t');
                }
                // A byte changed.
                2 if !token.is_empty() => {
                    let i = input.below(token.len());
                    token[i] = input.byte();
                }
                // A byte cut.
                3 if !token.is_empty() => {
                    let i = input.below(token.len());
                    token.remove(i);
                }
                _ => {}
            }
            [scheme, &token].concat()
        }
    }
}

/// Whether `value` is `Basic` credentials for exactly `expected` (`user:password`).
fn carries(value: &[u8], expected: &[u8]) -> bool {
    let Some((scheme, token)) = value.split_at_checked(6) else {
        return false;
    };
    scheme.eq_ignore_ascii_case(b"basic ")
        && decode(token.trim_ascii()).is_some_and(|plain| plain == expected)
}

const ALPHABET: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";

/// Base64, standard alphabet, padded.
fn encode(plain: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(plain.len().div_ceil(3) * 4);
    for chunk in plain.chunks(3) {
        let b = [
            chunk[0],
            chunk.get(1).copied().unwrap_or(0),
            chunk.get(2).copied().unwrap_or(0),
        ];
        let n = (u32::from(b[0]) << 16) | (u32::from(b[1]) << 8) | u32::from(b[2]);
        for i in 0..4 {
            if i <= chunk.len() {
                out.push(ALPHABET[((n >> (18 - 6 * i)) & 63) as usize]);
            } else {
                out.push(b'=');
            }
        }
    }
    out
}

/// Strict base64: groups of four symbols, `=` only as the padding of the last group, and the
/// bits the padding leaves over all zero (so each text decodes from exactly one encoding).
fn decode(text: &[u8]) -> Option<Vec<u8>> {
    if !text.len().is_multiple_of(4) {
        return None;
    }
    let value = |c: u8| ALPHABET.iter().position(|a| *a == c).map(|v| v as u32);
    let mut out = Vec::with_capacity(text.len() / 4 * 3);
    let groups = text.len() / 4;
    for (g, group) in text.chunks(4).enumerate() {
        let pad = group.iter().rev().take_while(|c| **c == b'=').count();
        if pad > 2 || (pad > 0 && g + 1 != groups) {
            return None;
        }
        let mut n = 0u32;
        for c in &group[..4 - pad] {
            n = (n << 6) | value(*c)?;
        }
        n <<= 6 * pad;
        let bytes = [(n >> 16) as u8, (n >> 8) as u8, n as u8];
        let keep = 3 - pad;
        if bytes[keep..].iter().any(|b| *b != 0) {
            return None;
        }
        out.extend_from_slice(&bytes[..keep]);
    }
    Some(out)
}

#[cfg(test)]
mod tests {
    use super::{decode, encode};

    #[test]
    fn the_reference_base64_is_rfc_4648() {
        for (plain, text) in [
            (&b""[..], &b""[..]),
            (b"f", b"Zg=="),
            (b"fo", b"Zm8="),
            (b"foo", b"Zm9v"),
            (b"foob", b"Zm9vYg=="),
            (b"user:secret", b"dXNlcjpzZWNyZXQ="),
        ] {
            assert_eq!(encode(plain), text);
            assert_eq!(decode(text).as_deref(), Some(plain));
        }
        for bad in [
            &b"Zg="[..],
            b"Zh==",
            b"Zg=a",
            b"Zg==Zg==",
            b"Z===",
            b"Zm9v\n",
        ] {
            assert_eq!(decode(bad), None, "{bad:?}");
        }
    }
}
