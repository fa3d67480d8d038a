use super::*;
use proptest::prelude::*;

/// One helper for every spelling: `check(input, Ok(canonical))` or `check(input, Err(error))`.
fn check(input: &str, expected: Result<&str, HostError>) {
    let got = Host::parse(input).map(|h| h.to_string());
    assert_eq!(
        got.as_deref().map_err(Clone::clone),
        expected,
        "input {input:?}"
    );
}

#[test]
fn names_are_lowercased_and_lose_one_trailing_dot() {
    check("Example.COM", Ok("example.com"));
    check("example.com.", Ok("example.com"));
    check("example.com..", Err(HostError::EmptyLabel));
    check("LOCALHOST.", Ok("localhost"));
    check("_dmarc.example.com", Ok("_dmarc.example.com"));
    check("a-b.example", Ok("a-b.example"));
}

#[test]
fn malformed_names_are_invalid() {
    check("", Err(HostError::Empty));
    check(".", Err(HostError::Empty));
    check(".example.com", Err(HostError::EmptyLabel));
    check("a..b", Err(HostError::EmptyLabel));
    check(
        "evil.com\0.example.com",
        Err(HostError::ForbiddenChar('\0')),
    );
    check("evil.com\r\nx", Err(HostError::ForbiddenChar('\r')));
    check("evil.com\n", Err(HostError::ForbiddenChar('\n')));
    check("exa mple.com", Err(HostError::ForbiddenChar(' ')));
    check(" example.com", Err(HostError::ForbiddenChar(' ')));
    check("example.com\t", Err(HostError::ForbiddenChar('\t')));
    check("ex%61mple.com", Err(HostError::PercentEscape));
    check("user@example.com", Err(HostError::ForbiddenChar('@')));
    check("example.com/path", Err(HostError::ForbiddenChar('/')));
    check("*.example.com", Err(HostError::ForbiddenChar('*')));
    check(
        &format!("{}.com", "a".repeat(64)),
        Err(HostError::LabelTooLong),
    );
    check(
        &format!("{}.com", "a".repeat(63)),
        Ok(&format!("{}.com", "a".repeat(63))),
    );
    let long = vec!["a".repeat(62); 4].join(".") + ".ab"; // 254 bytes
    assert_eq!(long.len(), 254);
    check(&long, Err(HostError::NameTooLong));
    let ok = vec!["a".repeat(62); 4].join(".") + ".a"; // 253 bytes
    check(&ok, Ok(&ok.clone()));
    check(&format!("{ok}."), Ok(&ok.clone()));
}

#[test]
fn idna_names_become_ascii() {
    check("bücher.example", Ok("xn--bcher-kva.example"));
    check("BÜCHER.example.", Ok("xn--bcher-kva.example"));
    check("xn--bcher-kva.example", Ok("xn--bcher-kva.example"));
    check("XN--BCHER-KVA.example", Ok("xn--bcher-kva.example"));
    check("xn--a.example", Err(HostError::InvalidIdna));
    // A full-width dot is a label separator under IDNA.
    check("example\u{ff0e}com", Ok("example.com"));
}

#[test]
fn legacy_ipv4_spellings_become_dotted_quads() {
    for spelling in [
        "127.0.0.1",
        "127.1",
        "127.0.1",
        "0x7f.0.0.1",
        "0x7F.1",
        "0177.0.0.1",
        "0177.1",
        "2130706433",
        "0x7f000001",
        "017700000001",
        "0x7f.0.0x0.01",
        "127.0.0.1.",
        "0x7f.00.0.1",
    ] {
        check(spelling, Ok("127.0.0.1"));
    }
    check("10.1", Ok("10.0.0.1"));
    check("192.168.257", Ok("192.168.1.1"));
    check("0", Ok("0.0.0.0"));
    check("0x", Ok("0.0.0.0"));
    check("4294967295", Ok("255.255.255.255"));
    check("1.2.3.4", Ok("1.2.3.4"));
}

#[test]
fn names_ending_in_a_number_must_be_addresses() {
    check("4294967296", Err(HostError::InvalidIpv4));
    check("256.0.0.1", Err(HostError::InvalidIpv4));
    check("1.2.3.4.5", Err(HostError::InvalidIpv4));
    check("08.0.0.1", Err(HostError::InvalidIpv4));
    check("1.2.3.256", Err(HostError::InvalidIpv4));
    check("1.2.65536", Err(HostError::InvalidIpv4));
    check("foo.123", Err(HostError::InvalidIpv4));
    check("0x1g.0.0.1", Err(HostError::InvalidIpv4));
    check("99999999999999999999999", Err(HostError::InvalidIpv4));
    // A name whose last label is not numeric stays a name.
    check("123.example", Ok("123.example"));
    check("1.2.3.4a", Ok("1.2.3.4a"));
}

#[test]
fn ipv6_literals_bracketed_or_bare_with_zones() {
    check("::1", Ok("::1"));
    check("[::1]", Ok("::1"));
    check("[0:0:0:0:0:0:0:1]", Ok("::1"));
    check("2001:DB8::1", Ok("2001:db8::1"));
    check("[fe80::1%lo0]", Ok("fe80::1%lo0"));
    check("[fe80::1%25lo0]", Ok("fe80::1%lo0"));
    check("fe80::1%LO0", Ok("fe80::1%lo0"));
    check("[[::1]]", Err(HostError::Brackets));
    check("[::1", Err(HostError::Brackets));
    check("::1]", Err(HostError::Brackets));
    check("[example.com]", Err(HostError::InvalidIpv6));
    check("[::1]:443", Err(HostError::Brackets));
    check("fe80::1%", Err(HostError::InvalidZone));
    check("fe80::1%25", Ok("fe80::1%25")); // a numeric zone id "25"
    // A zone id starting with "25" keeps the URI separator, so the canonical form reads back
    // as itself (written bare it would lose the "25": found by the `socks_request` fuzzer).
    check("::14%25255252R", Ok("::14%25255252r"));
    check("fe80::1%2525a", Ok("fe80::1%2525a"));
    check("fe80::1%250", Ok("fe80::1%0"));
    check("fe80::1%25250", Ok("fe80::1%25250"));
    for text in [
        "fe80::1%2525a",
        "fe80::1%25250",
        "fe80::1%25",
        "fe80::1%eth0",
    ] {
        let host = Host::parse(text).unwrap();
        assert_eq!(Host::parse(&host.to_string()), Ok(host.clone()), "{text}");
    }
    check("fe80::1%2541%25", Err(HostError::PercentEscape));
    check("example.com:443", Err(HostError::InvalidIpv6));
    check(":::", Err(HostError::InvalidIpv6));
}

#[test]
fn ipv4_mapped_literals_become_ipv4_in_any_spelling() {
    for spelling in [
        "::ffff:127.0.0.1",
        "[::ffff:127.0.0.1]",
        "::FFFF:7f00:1",
        "[::ffff:7f00:0001]",
        "0:0:0:0:0:ffff:127.0.0.1",
        "0000:0000:0000:0000:0000:ffff:7f00:0001",
    ] {
        check(spelling, Ok("127.0.0.1"));
    }
}

#[test]
fn ipv4_compatible_literals_keep_their_literal_but_are_judged_as_ipv4() {
    let h = Host::parse("[::127.0.0.1]").unwrap();
    assert_eq!(h.to_string(), "::7f00:1");
    assert_eq!(h.policy_ip(), Some("127.0.0.1".parse().unwrap()));
    let h = Host::parse("::7f00:1").unwrap();
    assert_eq!(h.policy_ip(), Some("127.0.0.1".parse().unwrap()));
    // :: and ::1 are themselves.
    assert_eq!(
        Host::parse("::").unwrap().policy_ip(),
        Some("::".parse().unwrap())
    );
    assert_eq!(
        Host::parse("::1").unwrap().policy_ip(),
        Some("::1".parse().unwrap())
    );
    assert_eq!(
        Host::parse("::2").unwrap().policy_ip(),
        Some("0.0.0.2".parse().unwrap())
    );
}

#[test]
fn uri_form_brackets_ipv6() {
    assert_eq!(Host::parse("::1").unwrap().to_uri_host(), "[::1]");
    assert_eq!(
        Host::parse("fe80::1%lo0").unwrap().to_uri_host(),
        "[fe80::1%25lo0]"
    );
    assert_eq!(Host::parse("a.example").unwrap().to_uri_host(), "a.example");
}

proptest! {
    #[test]
    fn canonicalisation_is_idempotent(s in "\\PC{0,40}") {
        if let Ok(h) = Host::parse(&s) {
            let again = Host::parse(&h.to_string()).expect("a canonical host parses");
            prop_assert_eq!(&again, &h);
            prop_assert_eq!(again.to_string(), h.to_string());
            let uri = Host::parse(&h.to_uri_host()).expect("the URI form parses");
            prop_assert_eq!(uri, h);
        }
    }

    #[test]
    fn canonicalisation_is_idempotent_on_host_like_input(
        s in "[a-zA-Z0-9.\\-_:\\[\\]%]{1,40}"
    ) {
        if let Ok(h) = Host::parse(&s) {
            prop_assert_eq!(Host::parse(&h.to_string()).unwrap(), h);
        }
    }

    #[test]
    fn every_ipv4_spelling_is_the_same_host(a: u8, b: u8, c: u8, d: u8, style in 0u8..4) {
        let v4 = Ipv4Addr::new(a, b, c, d);
        let bits = u32::from(v4);
        let spelled = match style {
            0 => format!("{bits}"),
            1 => format!("0x{bits:x}"),
            2 => format!("0{a:o}.0{b:o}.0x{c:x}.{d}"),
            _ => format!("{a}.{}", bits & 0x00ff_ffff),
        };
        let h = Host::parse(&spelled).unwrap();
        prop_assert_eq!(h.ip(), Some(IpAddr::V4(v4)));
        let mapped = Host::parse(&format!("[::ffff:{v4}]")).unwrap();
        prop_assert_eq!(mapped, h);
    }
}
