//! Injection: a request's dummies replaced by their real values where their grants are bound,
//! or the request refused (`credential_not_bound`) with its headers untouched.

use std::fmt;

use base64::Engine as _;
use base64::engine::{DecodePaddingMode, GeneralPurpose, GeneralPurposeConfig};
use http::header::AUTHORIZATION;
use http::{HeaderMap, HeaderName, HeaderValue};
use secrecy::zeroize::Zeroizing;

use crate::{Destination, Form, Grant, Unbound, Vault};

/// Base64 as Basic credentials are written; padding optional, as some clients omit it.
const BASIC: GeneralPurpose = GeneralPurpose::new(
    &base64::alphabet::STANDARD,
    GeneralPurposeConfig::new().with_decode_padding_mode(DecodePaddingMode::Indifferent),
);

/// The audit fields of a request that carried a dummy: `credential.grant` (the grant's name;
/// several joined by `,`) and `credential.injected`. Never a value.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CredentialAudit {
    /// `credential.grant`.
    pub grant: String,
    /// `credential.injected`.
    pub injected: bool,
}

/// What [`Vault::inject`] did to a request it let through.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Injected {
    grants: Vec<String>,
}

impl Injected {
    /// The grants whose real value replaced their dummy, each once, in the order found; empty when
    /// the request carried no dummy (and was left as it was).
    pub fn grants(&self) -> &[String] {
        &self.grants
    }

    /// Whether nothing was injected (no dummy in the request).
    pub fn is_empty(&self) -> bool {
        self.grants.is_empty()
    }

    /// The audit fields, when something was injected.
    pub fn audit(&self) -> Option<CredentialAudit> {
        (!self.is_empty()).then(|| CredentialAudit {
            grant: self.grants.join(","),
            injected: true,
        })
    }
}

/// A request refused because it carries a dummy whose grant is not bound to its destination
/// (reason `credential_not_bound`, 403). The request's headers are left as they were and nothing
/// is sent upstream. Names the grant and the host, never a value.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("credential grant {grant} is not bound to {host}:{port}: {why}")]
pub struct CredentialNotBound {
    /// The grant whose dummy was presented.
    pub grant: String,
    /// The destination's host.
    pub host: String,
    /// The destination's port.
    pub port: u16,
    /// Why its real value is not sent there.
    pub why: Unbound,
}

impl CredentialNotBound {
    /// The decision reason: [`proxy_core::Reason::CredentialNotBound`].
    pub fn reason(&self) -> proxy_core::Reason {
        proxy_core::Reason::CredentialNotBound
    }

    /// The audit fields: the grant, not injected.
    pub fn audit(&self) -> CredentialAudit {
        CredentialAudit {
            grant: self.grant.clone(),
            injected: false,
        }
    }
}

/// One header value holding a dummy, and what to put in its place.
struct Replacement<'v> {
    name: HeaderName,
    /// The value's position among the values of `name`.
    index: usize,
    grant: &'v Grant,
    value: HeaderValue,
}

impl fmt::Debug for Replacement<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Replacement")
            .field("name", &self.name)
            .field("index", &self.index)
            .field("grant", &self.grant.name)
            .finish_non_exhaustive()
    }
}

impl Vault {
    /// Replaces each of this session's dummies that `headers` carry by its grant's real value, in
    /// the same form, when that grant is bound to `dest`; refuses the request otherwise.
    ///
    /// Where a dummy is looked for: each `Authorization` value (`Bearer <dummy>`,
    /// `token <dummy>`, `Basic base64(<user>:<dummy>)`) and each value of the headers the grants
    /// name (`<prefix><dummy>`). Dummies elsewhere (a body, another header) are not looked for and
    /// pass as they are: they are worth nothing.
    ///
    /// The rule, for one dummy or several:
    /// - no dummy: nothing changes, whatever credential the request carries of its own;
    /// - every dummy found is exactly one of its grant's [`Form`]s, its grant is bound to `dest`
    ///   (host, port, path) and `dest` is HTTPS (or `allow_plaintext`, which is
    ///   `dangerously_allow_plaintext_credential_injection`): each is replaced by its real value,
    ///   the new header values marked sensitive;
    /// - otherwise (one dummy's grant is not bound here, the request is plain HTTP, or the dummy
    ///   is in a form its grant does not take, or mixed with other text in one value): the
    ///   request is refused, naming the first such grant and why (the binding's reason before
    ///   [`Unbound::Form`]), and `headers` are left as they were. A request never goes out with some
    ///   dummies replaced and others refused.
    ///
    /// ```
    /// use http::{HeaderMap, HeaderValue, header::AUTHORIZATION};
    /// use proxy_broker::{Destination, Scheme, Unbound, Vault};
    /// use proxy_core::Host;
    /// let real = "sk-proj-AbCdEfGhIjKlMnOpQrStUvWxYz0123456789AbCdEfGhIjKlMnOp";
    /// let vault = Vault::new(|v| (v == "OPENAI_API_KEY").then(|| real.into()), &[])?;
    /// let dummy = vault.grants()[0].dummy().to_owned();
    /// let bearer = HeaderValue::from_str(&format!("Bearer {dummy}"))?;
    ///
    /// let api = Host::parse("api.openai.com")?;
    /// let mut headers = HeaderMap::new();
    /// headers.insert(AUTHORIZATION, bearer.clone());
    /// let done = vault.inject(&Destination::new(Scheme::Https, &api, 443, "/v1/models"), &mut headers, false)?;
    /// assert_eq!(done.grants(), ["OPENAI_API_KEY"]);
    /// assert_eq!(headers[AUTHORIZATION], format!("Bearer {real}").as_str());
    /// assert!(headers[AUTHORIZATION].is_sensitive());
    ///
    /// let evil = Host::parse("evil.example")?;
    /// let mut headers = HeaderMap::new();
    /// headers.insert(AUTHORIZATION, bearer.clone());
    /// let refused = vault
    ///     .inject(&Destination::new(Scheme::Https, &evil, 443, "/"), &mut headers, false)
    ///     .unwrap_err();
    /// assert_eq!((refused.grant.as_str(), refused.why), ("OPENAI_API_KEY", Unbound::Host));
    /// assert_eq!(headers[AUTHORIZATION], bearer);
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn inject(
        &self,
        dest: &Destination<'_>,
        headers: &mut HeaderMap,
        allow_plaintext: bool,
    ) -> Result<Injected, CredentialNotBound> {
        let (replacements, injected) = self.plan(dest, headers, allow_plaintext, true)?;
        let mut names: Vec<&HeaderName> = replacements.iter().map(|r| &r.name).collect();
        names.dedup();
        for name in names {
            let old: Vec<HeaderValue> = headers.get_all(name).iter().cloned().collect();
            headers.remove(name);
            for (i, v) in old.into_iter().enumerate() {
                let new = replacements
                    .iter()
                    .find(|r| r.name == name && r.index == i)
                    .map(|r| r.value.clone());
                headers.append(name.clone(), new.unwrap_or(v));
            }
        }
        Ok(injected)
    }

    /// What [`inject`](Vault::inject) would do to `headers` sent to `dest`, without changing
    /// them and without putting a real value anywhere: the grants whose dummies it would replace
    /// (empty when the request carries no dummy), or the refusal. A front-end asks this before
    /// the gate judges the request, so that the gate's one audit event carries the grant and
    /// refuses a dummy sent where its grant is not bound (docs/credentials.md, "Injection").
    ///
    /// ```
    /// use http::{HeaderMap, HeaderValue, header::AUTHORIZATION};
    /// use proxy_broker::{Destination, Scheme, Vault};
    /// use proxy_core::Host;
    /// let vault = Vault::new(|v| (v == "GH_TOKEN").then(|| "ghp_real".into()), &[])?;
    /// let mut headers = HeaderMap::new();
    /// let bearer = HeaderValue::from_str(&format!("Bearer {}", vault.grants()[0].dummy()))?;
    /// headers.insert(AUTHORIZATION, bearer.clone());
    /// let api = Host::parse("api.github.com")?;
    /// let https = Destination::new(Scheme::Https, &api, 443, "/user");
    /// assert_eq!(vault.check_request(&https, &headers, false)?.grants(), ["GH_TOKEN"]);
    /// let plain = Destination::new(Scheme::Http, &api, 80, "/user");
    /// assert_eq!(vault.check_request(&plain, &headers, false).unwrap_err().grant, "GH_TOKEN");
    /// assert_eq!(headers[AUTHORIZATION], bearer);
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn check_request(
        &self,
        dest: &Destination<'_>,
        headers: &HeaderMap,
        allow_plaintext: bool,
    ) -> Result<Injected, CredentialNotBound> {
        self.plan(dest, headers, allow_plaintext, false)
            .map(|(_, injected)| injected)
    }

    /// The replacements of [`inject`](Vault::inject) (with the real values when `expose`, with
    /// empty ones otherwise) and the grants they inject, or the refusal.
    fn plan(
        &self,
        dest: &Destination<'_>,
        headers: &HeaderMap,
        allow_plaintext: bool,
        expose: bool,
    ) -> Result<(Vec<Replacement<'_>>, Injected), CredentialNotBound> {
        if self.grants().is_empty() {
            return Ok((Vec::new(), Injected::default()));
        }
        let refuse = |grant: &Grant, why| CredentialNotBound {
            grant: grant.name.clone(),
            host: dest.host.to_string(),
            port: dest.port,
            why,
        };
        let mut replacements: Vec<Replacement<'_>> = Vec::new();
        for name in &self.scanned {
            for (index, value) in headers.get_all(name).iter().enumerate() {
                let Some(found) = self.find(name, value, expose) else {
                    continue;
                };
                // Where the grant is bound comes first: a dummy sent to a host its grant is not
                // bound to is refused for that, whatever its form.
                let (grant, value) = match found {
                    Ok((grant, value)) => (grant, Some(value)),
                    Err(grant) => (grant, None),
                };
                grant
                    .check(dest, allow_plaintext)
                    .map_err(|why| refuse(grant, why))?;
                let value = value.ok_or_else(|| refuse(grant, Unbound::Form))?;
                replacements.push(Replacement {
                    name: name.clone(),
                    index,
                    grant,
                    value,
                });
            }
        }
        let mut injected = Injected::default();
        for r in &replacements {
            if !injected.grants.contains(&r.grant.name) {
                injected.grants.push(r.grant.name.clone());
            }
        }
        Ok((replacements, injected))
    }

    /// The grant whose dummy `value` (a value of header `name`) carries, and the value with the
    /// real one in its place; `Err(grant)` when a dummy is there in no form of its grant (or with
    /// another dummy); `None` when there is no dummy. Without `expose`, the value is built with
    /// an empty real value (for [`check_request`](Vault::check_request), which sends nothing).
    fn find<'v>(
        &'v self,
        name: &HeaderName,
        value: &HeaderValue,
        expose: bool,
    ) -> Option<Result<(&'v Grant, HeaderValue), &'v Grant>> {
        let raw = value.as_bytes();
        let parsed = (name == AUTHORIZATION)
            .then(|| Authorization::parse(raw))
            .flatten();
        let decoded = match &parsed {
            Some(Authorization::Basic { decoded, .. }) => Some(decoded.as_slice()),
            _ => None,
        };
        let mut carried = self.grants().iter().filter(|g| {
            let d = g.dummy().as_bytes();
            contains(raw, d) || decoded.is_some_and(|text| contains(text, d))
        });
        let grant = carried.next()?;
        if carried.next().is_some() {
            return Some(Err(grant));
        }
        let dummy = grant.dummy().as_bytes();
        let real = if expose { grant.real() } else { "" };
        // The value with the real one in place of the dummy, built in memory that is wiped.
        let mut text: Option<Zeroizing<String>> = None;
        for form in &grant.forms {
            text = match (form, &parsed) {
                (Form::Bearer, Some(Authorization::Scheme { scheme, token }))
                    if scheme.eq_ignore_ascii_case("bearer") && *token == dummy =>
                {
                    Some(Zeroizing::new(format!("{scheme} {real}")))
                }
                (Form::Token, Some(Authorization::Scheme { scheme, token }))
                    if scheme.eq_ignore_ascii_case("token") && *token == dummy =>
                {
                    Some(Zeroizing::new(format!("{scheme} {real}")))
                }
                (Form::Basic { user }, Some(Authorization::Basic { scheme, decoded }))
                    if decoded.as_slice() == [user.as_bytes(), b":", dummy].concat().as_slice() =>
                {
                    let pair = Zeroizing::new(format!("{user}:{real}"));
                    let encoded = Zeroizing::new(BASIC.encode(pair.as_bytes()));
                    Some(Zeroizing::new(format!("{scheme} {}", encoded.as_str())))
                }
                (Form::Header { name: n, prefix }, _) if n == name => raw
                    .get(..prefix.len())
                    .filter(|p| p.eq_ignore_ascii_case(prefix.as_bytes()))
                    .filter(|_| &raw[prefix.len()..] == dummy)
                    .map(|p| Zeroizing::new(format!("{}{real}", String::from_utf8_lossy(p)))),
                _ => None,
            };
            if text.is_some() {
                break;
            }
        }
        let Some(text) = text else {
            return Some(Err(grant));
        };
        match HeaderValue::from_str(&text) {
            Ok(mut v) => {
                v.set_sensitive(true);
                Some(Ok((grant, v)))
            }
            Err(_) => Some(Err(grant)),
        }
    }
}

/// An `Authorization` value: `<scheme> <token>`, with Basic's token decoded.
enum Authorization<'a> {
    Scheme {
        scheme: &'a str,
        token: &'a [u8],
    },
    Basic {
        scheme: &'a str,
        /// The decoded `user:password`, wiped when dropped (it may hold a credential).
        decoded: Zeroizing<Vec<u8>>,
    },
}

impl<'a> Authorization<'a> {
    fn parse(raw: &'a [u8]) -> Option<Self> {
        let raw = raw.trim_ascii();
        let split = raw.iter().position(|b| *b == b' ' || *b == b'\t')?;
        let scheme = std::str::from_utf8(&raw[..split]).ok()?;
        let token = raw[split..].trim_ascii();
        if scheme.eq_ignore_ascii_case("basic") {
            let decoded = Zeroizing::new(BASIC.decode(token).ok()?);
            return Some(Authorization::Basic { scheme, decoded });
        }
        Some(Authorization::Scheme { scheme, token })
    }
}

/// Whether `needle` occurs in `hay`.
fn contains(hay: &[u8], needle: &[u8]) -> bool {
    !needle.is_empty() && hay.windows(needle.len()).any(|w| w == needle)
}

#[cfg(test)]
mod tests;
