//! Where a diagnostic's key is in its file: line and column, found by walking the file's TOML
//! again with the spans `toml` keeps (`toml::de::DeTable`). The parser works on plain values;
//! every diagnostic names the key path as written (`network.domains."*.example.com"`,
//! `network.allowed_domains[2]`), and that path leads back to the text.

use std::ops::Range;

use toml::Spanned;
use toml::de::{DeTable, DeValue};

use crate::error::{Diagnostic, DiagnosticKind, Position};

/// A file's text, kept to place its diagnostics.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Source {
    /// The diagnostics' `origin` for this file (its path as displayed).
    pub(crate) origin: String,
    pub(crate) text: String,
}

impl Source {
    /// Gives every diagnostic of this file that has none a position: its key's, else the
    /// nearest enclosing key's that the file writes.
    pub(crate) fn place(&self, diags: &mut [Diagnostic]) {
        let mut todo = diags
            .iter_mut()
            .filter(|d| d.origin == self.origin && d.position.is_none() && !d.key.is_empty())
            .peekable();
        if todo.peek().is_none() {
            return;
        }
        let Ok(root) = DeTable::parse(&self.text) else {
            return;
        };
        for d in todo {
            if let Some(span) = find(root.get_ref(), &d.key, d.kind) {
                d.position = Some(position(&self.text, span.start));
            }
        }
    }
}

/// The line and column (1-based; the column counts characters) of byte `offset` in `text`.
pub(crate) fn position(text: &str, offset: usize) -> Position {
    let offset = offset.min(text.len());
    let before = text.get(..offset).unwrap_or(text);
    let line_start = before.rfind('\n').map_or(0, |i| i + 1);
    let line = before.bytes().filter(|&b| b == b'\n').count() + 1;
    let column = before.get(line_start..).map_or(0, |l| l.chars().count()) + 1;
    Position {
        line: u32::try_from(line).unwrap_or(u32::MAX),
        column: u32::try_from(column).unwrap_or(u32::MAX),
    }
}

/// One step of a key path: a table key, or an index into a list.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Step {
    Key(String),
    Index(usize),
}

/// The steps of a key path as diagnostics write it: dotted keys, a key that needs quotes in
/// Rust's debug quoting (`"*.example.com"`), and `[N]` after a list. Stops at the first part it
/// cannot read (the steps before it still place the diagnostic).
fn steps(path: &str) -> Vec<Step> {
    let mut out = Vec::new();
    let mut chars = path.chars().peekable();
    loop {
        match chars.peek() {
            None => break,
            Some('"') => {
                chars.next();
                let mut key = String::new();
                let mut closed = false;
                while let Some(c) = chars.next() {
                    match c {
                        '"' => {
                            closed = true;
                            break;
                        }
                        '\\' => match chars.next() {
                            Some('n') => key.push('\n'),
                            Some('t') => key.push('\t'),
                            Some('r') => key.push('\r'),
                            Some('0') => key.push('\0'),
                            Some('u') => {
                                let hex: String = chars
                                    .by_ref()
                                    .skip_while(|&c| c == '{')
                                    .take_while(|&c| c != '}')
                                    .collect();
                                match u32::from_str_radix(&hex, 16).ok().and_then(char::from_u32) {
                                    Some(c) => key.push(c),
                                    None => return out,
                                }
                            }
                            Some(other) => key.push(other),
                            None => return out,
                        },
                        c => key.push(c),
                    }
                }
                if !closed {
                    return out;
                }
                out.push(Step::Key(key));
            }
            Some('[') => {
                chars.next();
                let n: String = chars.by_ref().take_while(|&c| c != ']').collect();
                match n.parse() {
                    Ok(i) => out.push(Step::Index(i)),
                    Err(_) => return out,
                }
            }
            Some(_) => {
                let mut key = String::new();
                while let Some(&c) = chars.peek() {
                    if matches!(c, '.' | '[') {
                        break;
                    }
                    key.push(c);
                    chars.next();
                }
                if key.is_empty() {
                    return out;
                }
                out.push(Step::Key(key));
            }
        }
        if chars.peek() == Some(&'.') {
            chars.next();
        }
    }
    out
}

/// The span to show for `path`: an unknown key's own name; for a bad value, the value when the
/// whole path is found and is no table, else the deepest key found. An entry of a map keyed by
/// pattern, path or name (`domains`, `unix_sockets`, `dns.hosts`) is shown at its key, which is
/// what its diagnostics are mostly about. A path under `network`
/// that the file writes in a selected profile (`[permissions.NAME.network]`) is found there.
fn find(root: &DeTable<'_>, path: &str, kind: DiagnosticKind) -> Option<Range<usize>> {
    let steps = steps(path);
    let mut best = walk(root, &steps, kind);
    if best.as_ref().is_none_or(|(depth, _)| *depth < steps.len())
        && matches!(steps.first(), Some(Step::Key(k)) if k == "network")
        && let Some(profiles) = root.get("permissions").and_then(|p| p.get_ref().as_table())
    {
        for (_, profile) in profiles {
            if let Some(t) = profile.get_ref().as_table()
                && let Some(found) = walk(t, &steps, kind)
                && best.as_ref().is_none_or(|(d, _)| found.0 > *d)
            {
                best = Some(found);
            }
        }
    }
    best.map(|(_, span)| span)
}

/// The maps whose keys are patterns, paths or names rather than settings.
const KEYED_MAPS: &[&str] = &["domains", "unix_sockets", "hosts"];

/// How many steps of `steps` `table` holds, and the span to show for the last of them.
fn walk(
    table: &DeTable<'_>,
    steps: &[Step],
    kind: DiagnosticKind,
) -> Option<(usize, Range<usize>)> {
    let mut found: Option<(usize, Range<usize>)> = None;
    let mut here: Option<&Spanned<DeValue<'_>>> = None;
    for (i, step) in steps.iter().enumerate() {
        let next = match (step, here.map(Spanned::get_ref)) {
            (Step::Key(k), None) => table.get_key_value(k.as_str()),
            (Step::Key(k), Some(DeValue::Table(t))) => t.get_key_value(k.as_str()),
            (Step::Index(n), Some(DeValue::Array(a))) => {
                let Some(item) = a.get(*n) else { break };
                found = Some((i + 1, item.span()));
                here = Some(item);
                continue;
            }
            _ => None,
        };
        let Some((key, value)) = next else { break };
        let last = i + 1 == steps.len();
        let keyed_entry =
            i > 0 && matches!(&steps[i - 1], Step::Key(m) if KEYED_MAPS.contains(&m.as_str()));
        let show_value = last
            && !keyed_entry
            && kind != DiagnosticKind::UnknownKey
            && !matches!(value.get_ref(), DeValue::Table(_));
        let span = if show_value { value.span() } else { key.span() };
        found = Some((i + 1, span));
        here = Some(value);
    }
    found
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(text: &str, key: &str, kind: DiagnosticKind) -> Option<(u32, u32)> {
        let source = Source {
            origin: "f.toml".into(),
            text: text.into(),
        };
        let mut d = [Diagnostic::new(kind, "f.toml", key, "why")];
        source.place(&mut d);
        d[0].position.map(|p| (p.line, p.column))
    }

    #[test]
    fn paths_are_read_as_diagnostics_write_them() {
        assert_eq!(
            steps("network.domains.\"*.example.com\""),
            [
                Step::Key("network".into()),
                Step::Key("domains".into()),
                Step::Key("*.example.com".into())
            ]
        );
        assert_eq!(
            steps("network.allowed_domains[2]"),
            [
                Step::Key("network".into()),
                Step::Key("allowed_domains".into()),
                Step::Index(2)
            ]
        );
        assert_eq!(
            steps("a.\"q\\\"uo\\\\te\\u{e9}\".b"),
            [
                Step::Key("a".into()),
                Step::Key("q\"uo\\teé".into()),
                Step::Key("b".into())
            ]
        );
        // What cannot be read ends the path; the steps before it stay.
        assert_eq!(steps("a.\"open"), [Step::Key("a".into())]);
        assert_eq!(steps("a[x]"), [Step::Key("a".into())]);
        assert_eq!(steps("a..b"), [Step::Key("a".into())]);
    }

    #[test]
    fn diagnostics_are_placed_at_their_key_or_value() {
        use DiagnosticKind::{InvalidValue, UnknownKey};
        let text = "# a comment\n[network]\nmdoe = \"limited\"\nenabled = \"yes\"\nallowed_domains = [\"a.test\", \"b c\"]\n\n[network.domains]\n\"*.é.example\" = \"maybe\"\n\n[network.limits]\nidle_timeout = 5\n";
        assert_eq!(at(text, "network.mdoe", UnknownKey), Some((3, 1)));
        assert_eq!(at(text, "network.enabled", InvalidValue), Some((4, 11)));
        assert_eq!(
            at(text, "network.allowed_domains[1]", InvalidValue),
            Some((5, 30))
        );
        assert_eq!(
            at(text, "network.domains.\"*.é.example\"", InvalidValue),
            Some((8, 1))
        );
        assert_eq!(
            at(text, "network.limits.idle_timeout", UnknownKey),
            Some((11, 1))
        );
        // A key the file does not write: the deepest one it does.
        assert_eq!(
            at(text, "network.limits.max_connections", InvalidValue).map(|p| p.0),
            Some(10)
        );
        assert_eq!(at(text, "otel.endpoint", InvalidValue), None);
        // The same keys in a selected profile.
        let profile = "default_permissions = \"ci\"\n[permissions.ci.network]\nmode = \"open\"\n";
        assert_eq!(at(profile, "network.mode", InvalidValue), Some((3, 8)));
        assert_eq!(
            at(profile, "permissions.ci.network.mode", InvalidValue),
            Some((3, 8))
        );
        // Inline tables and dotted keys.
        let inline = "network = { dns = { timeout = 5 } }\nnetwork2.x.y = 1\n";
        assert_eq!(at(inline, "network.dns.timeout", UnknownKey), Some((1, 21)));
        assert_eq!(at(inline, "network2.x.y", UnknownKey), Some((2, 12)));
        // Another file's diagnostic is left alone.
        let source = Source {
            origin: "f.toml".into(),
            text: text.into(),
        };
        let mut d = [Diagnostic::new(UnknownKey, "g.toml", "network.mdoe", "why")];
        source.place(&mut d);
        assert_eq!(d[0].position, None);
    }

    #[test]
    fn positions_count_lines_and_characters() {
        let text = "ab\ncdé\nf";
        assert_eq!(position(text, 0), Position { line: 1, column: 1 });
        assert_eq!(position(text, 3), Position { line: 2, column: 1 });
        assert_eq!(position(text, 8), Position { line: 3, column: 1 });
        assert_eq!(position(text, 7), Position { line: 2, column: 4 });
        assert_eq!(position(text, 99), Position { line: 3, column: 2 });
    }
}
