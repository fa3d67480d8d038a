//! `hooks`: a hook built from arbitrary methods, path prefixes, query and header constraints,
//! matched against arbitrary request heads. A hook only ever admits what it names:
//! - the method is one of the hook's (and so is a method-override header's);
//! - the path is plain in every spelling an origin might decode: no `.` or `..` segment (a
//!   segment's `;parameters` cut), no `\`, NUL or encoded `/`, no malformed escape, whether
//!   read raw or percent-decoded once or twice (checked here by a decoder of this crate's own);
//! - with literal prefixes only, the path starts with one of them.

use proxy_core::{Host, RequestHead};
use proxy_policy::Hook;

use crate::input::Input;

const METHODS: &[&str] = &[
    "GET", "POST", "HEAD", "put", "DELETE", "OPTIONS", "G\tT", "",
];
const HEADERS: &[&str] = &[
    "x-http-method-override",
    "x-http-method",
    "x-method-override",
    "authorization",
    "content-type",
    "accept",
];

/// Runs the target on one input.
pub fn run(data: &[u8]) {
    let mut input = Input::new(data);
    let methods: Vec<&str> = (0..=input.below(2)).map(|_| input.pick(METHODS)).collect();
    let prefixes: Vec<String> = (0..=input.below(2)).map(|_| input.string(30)).collect();
    let Ok(mut hook) = Hook::new("fuzz", "api.example.com").and_then(|h| h.methods(&methods))
    else {
        return;
    };
    hook = match hook.path_prefixes(&prefixes) {
        Ok(h) => h,
        Err(_) => return,
    };
    if input.bool() {
        let key = input.string(8);
        let values: Vec<String> = (0..=input.below(2)).map(|_| input.string(12)).collect();
        hook = match hook.query(&key, &values) {
            Ok(h) => h,
            Err(_) => return,
        };
    }
    if input.bool() {
        let name = input.pick(HEADERS);
        let values: Vec<String> = (0..input.below(3)).map(|_| input.string(12)).collect();
        hook = match hook.header(name, &values) {
            Ok(h) => h,
            Err(_) => return,
        };
    }
    let method = input.pick(METHODS);
    let path = input.string(80);
    let query = input.bool().then(|| input.string(40));
    let header_values: Vec<(&str, String)> = (0..input.below(4))
        .map(|_| (input.pick(HEADERS), input.string(16)))
        .collect();
    let headers: Vec<(&str, &str)> = header_values
        .iter()
        .map(|(n, v)| (*n, v.as_str()))
        .collect();
    let head = RequestHead {
        method,
        path: &path,
        query: query.as_deref(),
        headers: &headers,
    };
    let matched = hook.matches(&head);
    // The policy gives the same answer through the hooked host.
    let mut builder = proxy_policy::Policy::builder();
    let verdict = builder
        .allow("api.example.com", None)
        .and_then(|b| b.hook(hook.clone()))
        .and_then(|b| b.build())
        .map(|p| {
            let host = Host::parse("api.example.com").unwrap_or_else(|e| panic!("{e}"));
            matches!(
                p.evaluate_hooks(&host, &head),
                proxy_policy::HookVerdict::Matched(_)
            )
        });
    if let Ok(through_policy) = verdict {
        assert_eq!(
            through_policy, matched,
            "the policy and the hook disagree on {head:?}"
        );
    }
    if !matched {
        return;
    }
    let upper = method.to_ascii_uppercase();
    assert!(
        methods
            .iter()
            .any(|m| m.trim().to_ascii_uppercase() == method)
            && upper == method,
        "method {method:?} matched a hook of {methods:?}"
    );
    if let Some(over) = proxy_core::method_override(headers.iter().map(|(n, v)| (*n, v.as_bytes())))
    {
        assert!(
            methods
                .iter()
                .any(|m| m.trim().to_ascii_uppercase() == over),
            "override {over:?} matched a hook of {methods:?}"
        );
    }
    if let Some(why) = unplain(&path) {
        panic!("path {path:?} matched though {why}");
    }
    if prefixes.iter().all(|p| !p.starts_with("pattern:")) {
        assert!(
            prefixes
                .iter()
                .any(|p| path.starts_with(p.strip_prefix("literal:").unwrap_or(p))),
            "path {path:?} matched none of the literal prefixes {prefixes:?}"
        );
    }
}

/// Why a path is not plain, read raw and decoded up to twice; `None` when it is plain.
fn unplain(path: &str) -> Option<String> {
    let slashes = path.bytes().filter(|b| *b == b'/').count();
    let mut text = path.as_bytes().to_vec();
    for round in 0..3 {
        if text.contains(&b'\\') || text.contains(&0) {
            return Some(format!("round {round} has a backslash or NUL"));
        }
        if text.iter().filter(|b| **b == b'/').count() != slashes {
            return Some(format!("round {round} decoded a slash"));
        }
        for segment in text.split(|b| *b == b'/') {
            let name = segment.split(|b| *b == b';').next().unwrap_or_default();
            if name == b"." || name == b".." {
                return Some(format!("round {round} has a dot segment"));
            }
        }
        if !text.contains(&b'%') {
            return None;
        }
        match decode(&text) {
            Some(decoded) => text = decoded,
            None => return Some(format!("round {round} has a malformed escape")),
        }
    }
    Some("it is encoded more than twice".to_owned())
}

/// `%XX` decoded; `None` for a `%` not followed by two hex digits.
fn decode(text: &[u8]) -> Option<Vec<u8>> {
    let hex = |b: u8| char::from(b).to_digit(16);
    let mut out = Vec::with_capacity(text.len());
    let mut i = 0;
    while i < text.len() {
        if text[i] == b'%' {
            let hi = hex(*text.get(i + 1)?)?;
            let lo = hex(*text.get(i + 2)?)?;
            out.push(u8::try_from(hi * 16 + lo).ok()?);
            i += 3;
        } else {
            out.push(text[i]);
            i += 1;
        }
    }
    Some(out)
}
