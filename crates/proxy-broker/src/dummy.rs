//! Dummy credentials: look-alikes of a real value that are worth nothing outside netproxy
//! (docs/credentials.md, "Dummies").
//!
//! A dummy keeps the real value's recognised prefix (`ghp_`, `github_pat_`, `sk-proj-` ...), is
//! as long as the real value (at least the provider's minimum, and the prefix plus 16), has the
//! real value's punctuation at the same places, and random letters and digits everywhere else,
//! drawn from the classes the real value uses (so a hexadecimal token gets a hexadecimal dummy).
//! It reveals the real value's prefix, length and punctuation, which are its format, and nothing
//! of its random part.

/// The family of a credential, which decides its dummy's prefix and minimum length.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub(crate) enum Shape {
    /// GitHub tokens: prefixes `github_pat_`, `ghp_`, `gho_`, `ghu_`, `ghs_`, `ghr_` (an unknown
    /// one becomes `ghp_`), at least 40 characters.
    GitHub,
    /// OpenAI keys: `sk-` or `sk-<segment>-` (`sk-proj-`, `sk-svcacct-` ...), at least 51
    /// characters.
    OpenAi,
    /// Any other credential: up to two short letter segments each ending in `_` or `-` (`glpat-`,
    /// `sk_live_`) are kept as the prefix, when at least 16 characters follow them.
    Generic,
}

/// GitHub's token prefixes, the longest first.
const GITHUB_PREFIXES: &[&str] = &["github_pat_", "ghp_", "gho_", "ghu_", "ghs_", "ghr_"];

/// The prefixes of other vendors' tokens that a configured grant's dummy keeps (so that tools
/// checking the format accept it): GitLab, Stripe, Slack, npm, PyPI, Hugging Face,
/// DigitalOcean, Shopify, SendGrid, Google API keys.
const KNOWN_PREFIXES: &[&str] = &[
    "glpat-", "gldt-", "glrt-", "glptt-", "glsoat-", "sk_live_", "sk_test_", "rk_live_",
    "rk_test_", "xoxb-", "xoxp-", "xoxa-", "xoxr-", "xapp-", "npm_", "pypi-", "hf_", "dop_v1_",
    "shpat_", "SG.", "AIza",
];

/// The fewest random characters a dummy has.
pub(crate) const MIN_RANDOM: usize = 16;

impl Shape {
    /// The dummy's minimum length.
    fn min_len(self) -> usize {
        match self {
            Shape::GitHub => 40,
            Shape::OpenAi => 51,
            Shape::Generic => 0,
        }
    }

    /// The prefix a dummy of `real` starts with, and how many bytes of `real` it stands for
    /// (the rest of `real` lines up with the dummy's characters after the prefix). A prefix taken
    /// from `real` is letters and separators only: its format, not its random part.
    fn prefix(self, real: &str) -> (String, usize) {
        match self {
            Shape::GitHub => GITHUB_PREFIXES
                .iter()
                .find(|p| real.starts_with(**p))
                .map_or(("ghp_".to_owned(), 0), |p| ((*p).to_owned(), p.len())),
            Shape::OpenAi => match real.strip_prefix("sk-") {
                None => ("sk-".to_owned(), 0),
                Some(rest) => {
                    let n = 3 + letter_segment(rest, b'-', 16).unwrap_or(0);
                    (real[..n].to_owned(), n)
                }
            },
            // Only a vendor's known prefix is kept: a letter segment of a random secret (its
            // first characters) would otherwise be copied into the dummy.
            Shape::Generic => KNOWN_PREFIXES
                .iter()
                .find(|p| real.starts_with(**p) && real.len() - p.len() >= MIN_RANDOM)
                .map_or((String::new(), 0), |p| ((*p).to_owned(), p.len())),
        }
    }
}

/// The length of `letters sep` at the start of `s` (1 to `max` ASCII letters, then `sep`).
fn letter_segment(s: &str, sep: u8, max: usize) -> Option<usize> {
    let letters = s.bytes().take_while(u8::is_ascii_alphabetic).count();
    (1..=max).contains(&letters).then_some(())?;
    (s.as_bytes().get(letters) == Some(&sep)).then_some(letters + 1)
}

/// The shape of a dummy for `real`: its prefix, then per position after it either a character
/// to copy or a random one, and the alphabet of the random ones.
#[derive(Debug)]
pub(crate) struct Plan {
    prefix: String,
    /// `Some(c)`: copy `c`; `None`: a random character.
    tail: Vec<Option<u8>>,
    alphabet: Vec<u8>,
}

impl Plan {
    /// Plans a dummy for `real` (printable ASCII, checked by the caller).
    pub(crate) fn new(shape: Shape, real: &str) -> Self {
        let (prefix, consumed) = shape.prefix(real);
        let real_tail = real.as_bytes().get(consumed..).unwrap_or_default();
        let len = real
            .len()
            .max(shape.min_len())
            .max(prefix.len() + MIN_RANDOM);
        let tail_len = len.saturating_sub(prefix.len());
        let mut tail: Vec<Option<u8>> = (0..tail_len)
            .map(|i| match real_tail.get(i) {
                Some(c) if !c.is_ascii_alphanumeric() => Some(*c),
                _ => None,
            })
            .collect();
        // A value made mostly of punctuation still gets enough random characters.
        let random = tail.iter().filter(|c| c.is_none()).count();
        tail.extend(std::iter::repeat_n(None, MIN_RANDOM.saturating_sub(random)));
        Self {
            prefix,
            tail,
            alphabet: alphabet(real_tail),
        }
    }

    /// A dummy following the plan, its random characters drawn by `random` (bytes; each is
    /// mapped onto the alphabet without bias).
    pub(crate) fn draw(
        &self,
        mut random: impl FnMut(&mut [u8]) -> Result<(), getrandom::Error>,
    ) -> Result<String, getrandom::Error> {
        let n = self.alphabet.len();
        // The largest multiple of n a byte can hold: bytes at or above it are drawn again.
        let limit = 256 - 256 % n;
        let mut out = self.prefix.clone().into_bytes();
        let mut pool = [0u8; 64];
        let mut used = pool.len();
        for slot in &self.tail {
            match slot {
                Some(c) => out.push(*c),
                None => loop {
                    if used == pool.len() {
                        random(&mut pool)?;
                        used = 0;
                    }
                    let b = usize::from(pool[used]);
                    used += 1;
                    if b < limit {
                        out.push(self.alphabet[b % n]);
                        break;
                    }
                },
            }
        }
        // Only ASCII went in.
        Ok(String::from_utf8_lossy(&out).into_owned())
    }
}

/// The characters a dummy draws from: the digit, lowercase and uppercase classes the real value's
/// random part uses (hexadecimal letters only when it uses no other letter of that case); all
/// three when it uses none.
fn alphabet(tail: &[u8]) -> Vec<u8> {
    let digits = tail.iter().any(u8::is_ascii_digit);
    let lower: Vec<u8> = tail
        .iter()
        .copied()
        .filter(u8::is_ascii_lowercase)
        .collect();
    let upper: Vec<u8> = tail
        .iter()
        .copied()
        .filter(u8::is_ascii_uppercase)
        .collect();
    let mut out = Vec::new();
    if digits {
        out.extend(b'0'..=b'9');
    }
    for (letters, first, hex_end, end) in [(&lower, b'a', b'f', b'z'), (&upper, b'A', b'F', b'Z')] {
        if letters.is_empty() {
            continue;
        }
        let top = if letters.iter().all(|c| *c <= hex_end) {
            hex_end
        } else {
            end
        };
        out.extend(first..=top);
    }
    if out.len() < 10 {
        // No letters or digits at all, or one narrow class (a few hex letters only): all of them.
        out = (b'0'..=b'9')
            .chain(b'a'..=b'z')
            .chain(b'A'..=b'Z')
            .collect();
    }
    out
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::{MIN_RANDOM, Plan, Shape};

    fn dummy(shape: Shape, real: &str) -> String {
        Plan::new(shape, real).draw(getrandom::fill).unwrap()
    }

    /// The contract of docs/credentials.md: same prefix, same length for a long value,
    /// punctuation at the same places, a letter or digit wherever the real value has one, and
    /// never the real value.
    fn assert_shape(real: &str, d: &str, prefix: &str) {
        assert_ne!(d, real);
        assert!(d.starts_with(prefix), "{d} should start with {prefix}");
        assert_eq!(d.len(), real.len(), "{d} vs {real}");
        for (a, b) in real.bytes().zip(d.bytes()) {
            if a.is_ascii_alphanumeric() {
                assert!(b.is_ascii_alphanumeric(), "{d} vs {real}");
            } else {
                assert_eq!(a, b, "{d} vs {real}");
            }
        }
    }

    #[test]
    fn github_dummies_keep_the_prefix_length_and_punctuation() {
        let pat = "github_pat_11ABCDEFG0abcdefghijkl_mnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789abcdefghi";
        assert_shape(pat, &dummy(Shape::GitHub, pat), "github_pat_");
        for prefix in ["ghp_", "gho_", "ghu_", "ghs_", "ghr_"] {
            let real = format!("{prefix}AbCdEfGhIjKlMnOpQrStUvWxYz0123456789");
            let d = dummy(Shape::GitHub, &real);
            assert_shape(&real, &d, prefix);
            assert!(
                d[4..].bytes().all(|b| b.is_ascii_alphanumeric()),
                "{d} is [A-Za-z0-9] after its prefix"
            );
        }
        // An unknown (legacy 40-hex) token becomes a `ghp_` token of the same length.
        let legacy = "0123456789abcdef0123456789abcdef01234567";
        let d = dummy(Shape::GitHub, legacy);
        assert!(d.starts_with("ghp_") && d.len() == 40, "{d}");
        assert!(
            d[4..]
                .bytes()
                .all(|b| b.is_ascii_hexdigit() && !b.is_ascii_uppercase())
        );
        // A short token reaches the minimum.
        let d = dummy(Shape::GitHub, "ghp_short");
        assert_eq!(d.len(), 40, "{d}");
    }

    #[test]
    fn openai_dummies_keep_the_segment_prefix() {
        let proj =
            "sk-proj-AbCdEfGhIjKl_MnOpQrStUvWxYz-0123456789AbCdEfGhIjKlMnOpQrStUvWxYz0123456789";
        assert_shape(proj, &dummy(Shape::OpenAi, proj), "sk-proj-");
        let classic = "sk-AbCdEfGhIjKlMnOpQrStUvWxYz0123456789AbCdEfGhIjKlMn";
        assert_shape(classic, &dummy(Shape::OpenAi, classic), "sk-");
        let d = dummy(Shape::OpenAi, "sk-explicit");
        assert!(d.starts_with("sk-") && d.len() == 51, "{d}");
        let d = dummy(Shape::OpenAi, "not-an-openai-key");
        assert!(d.starts_with("sk-") && d.len() == 51, "{d}");
    }

    #[test]
    fn generic_dummies_keep_known_prefixes_only_before_enough_characters() {
        let gl = "glpat-AbCdEfGhIjKlMnOpQrSt";
        assert_shape(gl, &dummy(Shape::Generic, gl), "glpat-");
        let stripe = "sk_live_0123456789abcdefABCDEF";
        assert_shape(stripe, &dummy(Shape::Generic, stripe), "sk_live_");
        // An unknown letter segment is not kept: it may be the secret's own first characters.
        for other in [
            "acme-0123456789abcdef0123",
            "QxZpRtWm_Kd8s0123456789abcdefgh",
        ] {
            let d = dummy(Shape::Generic, other);
            assert_ne!(d[..4], other[..4], "{d}");
        }
        // Too few characters after a known prefix: not kept; at least 16 random characters.
        let d = dummy(Shape::Generic, "glpat-abc");
        assert!(!d.starts_with("glpat-"), "{d}");
        assert!(d.len() >= MIN_RANDOM, "{d}");
        // A long first "segment" is not a prefix.
        let d = dummy(Shape::Generic, "averylongword_0123456789abcdef0123");
        assert!(!d.starts_with("averylongword"), "{d}");
        // Punctuation only: still random characters.
        let d = dummy(Shape::Generic, "------");
        assert!(
            d.bytes().filter(u8::is_ascii_alphanumeric).count() >= MIN_RANDOM,
            "{d}"
        );
    }

    #[test]
    fn the_alphabet_follows_the_classes_of_the_value() {
        let hex = "0123456789abcdef0123456789abcdef";
        for _ in 0..20 {
            let d = dummy(Shape::Generic, hex);
            assert!(
                d.bytes()
                    .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b)),
                "{d}"
            );
        }
        let digits = "1234567890123456789012";
        let d = dummy(Shape::Generic, digits);
        assert!(d.bytes().all(|b| b.is_ascii_digit()), "{d}");
    }

    #[test]
    fn two_dummies_of_one_value_differ() {
        let real = "ghp_AbCdEfGhIjKlMnOpQrStUvWxYz0123456789";
        let plan = Plan::new(Shape::GitHub, real);
        let a = plan.draw(getrandom::fill).unwrap();
        let b = plan.draw(getrandom::fill).unwrap();
        assert_ne!(a, b);
    }

    #[test]
    fn draws_are_unbiased_by_rejection() {
        // A source that always yields 255 first, then 0: 255 is at or above the limit for a
        // 62-character alphabet (248) and is drawn again.
        let plan = Plan::new(Shape::GitHub, "ghp_");
        let mut calls = 0;
        let d = plan
            .draw(|buf| {
                calls += 1;
                buf.fill(if calls == 1 { 255 } else { 0 });
                Ok(())
            })
            .unwrap();
        assert_eq!(&d[4..], "0".repeat(36));
    }
}
