//! `unix_header`: [`proxy_http::unix_socket_path`] on arbitrary `x-unix-socket` values. What
//! it accepts is one value, UTF-8, whose trimmed text is an absolute path without NUL and at
//! most [`MAX_UNIX_SOCKET_PATH`] bytes, returned as it was written (trimmed of spaces and tabs
//! only); what it refuses says why, and the reason is right: two values are `Repeated`, bytes
//! that are not UTF-8 `NotUtf8`, and a relative path comes back as it was written for the gate
//! to refuse. Nothing panics.

use std::path::Path;

use proxy_http::{MAX_UNIX_SOCKET_PATH, UnixHeaderError, unix_socket_path};

use crate::input::Input;

/// Pieces the generated paths are built of.
const PIECES: &[&str] = &[
    "/",
    "/run/docker.sock",
    "..",
    ".",
    " ",
    "\t",
    "\0",
    "ü",
    "\u{a0}",
    "~",
    "a",
    "//",
    "\\",
    "%2f",
    "\r\n",
];

/// Runs the target on one input.
pub fn run(data: &[u8]) {
    let mut input = Input::new(data);
    let count = input.below(4);
    let values: Vec<Vec<u8>> = (0..count).map(|_| value(&mut input)).collect();
    let got = unix_socket_path(values.iter().map(Vec::as_slice));
    match count {
        0 => assert_eq!(got, Err(UnixHeaderError::Missing)),
        1 => one(&values[0], got),
        _ => assert_eq!(got, Err(UnixHeaderError::Repeated)),
    }
}

/// A value: arbitrary bytes, pieces of paths, or a path of a length near the bound.
fn value(input: &mut Input<'_>) -> Vec<u8> {
    match input.below(3) {
        0 => input.bytes(80).to_vec(),
        1 => (0..input.below(8))
            .flat_map(|_| input.pick(PIECES).bytes())
            .collect(),
        _ => {
            let around = MAX_UNIX_SOCKET_PATH - 2 + input.below(5);
            let mut v = vec![b'/'];
            v.resize(around, b'a');
            v
        }
    }
}

/// The invariants for one value and what the parser made of it.
fn one(value: &[u8], got: Result<std::path::PathBuf, UnixHeaderError>) {
    let Ok(text) = std::str::from_utf8(value) else {
        assert_eq!(got, Err(UnixHeaderError::NotUtf8), "{value:?}");
        return;
    };
    let trimmed = text.trim_matches([' ', '\t']);
    match got {
        Ok(path) => {
            assert!(path.is_absolute(), "{text:?} gave the relative {path:?}");
            let shown = path
                .to_str()
                .unwrap_or_else(|| panic!("{path:?} is not text"));
            assert_eq!(shown, trimmed, "{text:?} was not kept as written");
            assert!(!shown.contains('\0'), "{text:?} gave a path with NUL");
            assert!(
                shown.len() <= MAX_UNIX_SOCKET_PATH,
                "{text:?} gave a path of {} bytes",
                shown.len()
            );
        }
        Err(UnixHeaderError::Relative(path)) => {
            assert!(!path.is_absolute(), "{text:?}: {path:?} is absolute");
            assert_eq!(path, Path::new(trimmed));
            assert!(!trimmed.contains('\0') && trimmed.len() <= MAX_UNIX_SOCKET_PATH);
        }
        Err(UnixHeaderError::Nul) => assert!(trimmed.contains('\0'), "{text:?}"),
        Err(UnixHeaderError::TooLong) => {
            assert!(trimmed.len() > MAX_UNIX_SOCKET_PATH, "{text:?}");
        }
        Err(e) => panic!("{text:?}: {e}"),
    }
}
