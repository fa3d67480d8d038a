//! The config schema: every scalar key with its path, the type a written value is checked
//! against, its default and whether changing it needs a restart; and the typed [`Settings`]
//! the layers resolve into, one field per key (docs/config.md lists the keys).
//!
//! The keys are declared once, in the `schema!` invocation below; the macro derives from that
//! one list the table the parser checks written keys against ([`SCALARS`]), the typed
//! settings with their defaults, a layer's partial values, the listing `config show` prints
//! and the keys whose change needs a restart. So every key has a field, a default and a
//! place in `config show`, by construction.

use std::collections::BTreeMap;
use std::fmt;
use std::net::{IpAddr, SocketAddr};

use ipnet::IpNet;
use proxy_core::Mode;
use toml::Value;

use crate::config::ShownValue;
use crate::layer::Layer;

/// The type a written scalar value is checked against (with the message of the diagnostic
/// when it does not fit).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Kind {
    Bool,
    Mode,
    ListenUrl,
    Text,
    Int { min: i64, max: i64 },
    Cidrs,
    Nameservers,
    Exporter,
    Headers,
    Mitm,
}

/// One value of the effective config: its key, the value, and the layer that set it.
#[derive(Debug, Clone, PartialEq)]
pub struct Setting<T> {
    /// The key path, e.g. `network.mode`.
    pub key: &'static str,
    /// The value in force.
    pub value: T,
    /// The layer that set it ([`Layer::Default`] when no layer did).
    pub layer: Layer,
}

impl<T> Setting<T> {
    /// Replaces the value and the layer that set it.
    pub(crate) fn set(&mut self, value: T, layer: Layer) {
        self.value = value;
        self.layer = layer;
    }
}

/// A parsed value kept with the TOML it was written as, which `config show` prints (a bare
/// address in `treat_as_public`, a nameserver without its port, `mitm` as a table). Two are
/// equal when both the value and the writing are.
#[derive(Debug, Clone, PartialEq)]
pub struct Written<T> {
    value: T,
    written: Value,
}

impl<T> Written<T> {
    /// The parsed value.
    pub fn value(&self) -> &T {
        &self.value
    }

    /// The value as written.
    pub fn written(&self) -> &Value {
        &self.written
    }
}

impl<T: fmt::Display> Written<Vec<T>> {
    /// A list written as the display form of its items (a managed merge writes it so).
    pub(crate) fn list(items: Vec<T>) -> Self {
        let written = Value::Array(items.iter().map(|i| Value::String(i.to_string())).collect());
        Self {
            value: items,
            written,
        }
    }
}

impl Written<bool> {
    /// A flag written as `true` or `false`.
    fn flag(on: bool) -> Self {
        Self {
            value: on,
            written: Value::Boolean(on),
        }
    }
}

/// `[otel] exporter`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Exporter {
    /// `none`: nothing is exported.
    Off,
    /// `otlp-http`.
    OtlpHttp,
    /// `otlp-grpc`.
    OtlpGrpc,
}

impl Exporter {
    /// The name as written in the config.
    pub const fn as_str(self) -> &'static str {
        match self {
            Exporter::Off => "none",
            Exporter::OtlpHttp => "otlp-http",
            Exporter::OtlpGrpc => "otlp-grpc",
        }
    }
}

/// A secret string (`admin_token`): shown, and debug-printed, as `<redacted>`.
#[derive(Clone, PartialEq, Eq)]
pub struct Secret(String);

impl Secret {
    /// The secret itself.
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Secret(<redacted>)")
    }
}

/// `[otel] headers`: header names and values. The values usually carry an API key, so only
/// the names are shown or debug-printed.
#[derive(Clone, PartialEq, Eq)]
pub struct Headers(BTreeMap<String, String>);

impl Headers {
    /// The headers, by name.
    pub fn iter(&self) -> impl Iterator<Item = (&str, &str)> {
        self.0.iter().map(|(k, v)| (k.as_str(), v.as_str()))
    }
}

impl fmt::Debug for Headers {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_set().entries(self.0.keys()).finish()
    }
}

/// `[otel] endpoint`: a collector URL, which may carry a user and password; shown and
/// debug-printed without them.
#[derive(Clone, PartialEq, Eq)]
pub struct CollectorUrl(String);

impl CollectorUrl {
    /// The URL as written.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for CollectorUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_tuple("CollectorUrl")
            .field(&proxy_core::redact_userinfo(&self.0))
            .finish()
    }
}

/// A setting's type: read from a TOML value the parser has already checked against the key's
/// [`Kind`], and shown by `config show`.
pub(crate) trait TomlValue: Sized {
    /// The value, or `None` when `v` is not of this type.
    fn from_toml(v: &Value) -> Option<Self>;
    /// The value as `config show` prints it, secrets redacted (`None`: unset).
    fn shown(&self) -> Option<Value>;
}

impl TomlValue for bool {
    fn from_toml(v: &Value) -> Option<Self> {
        v.as_bool()
    }
    fn shown(&self) -> Option<Value> {
        Some(Value::Boolean(*self))
    }
}

impl TomlValue for u32 {
    fn from_toml(v: &Value) -> Option<Self> {
        v.as_integer().and_then(|n| u32::try_from(n).ok())
    }
    fn shown(&self) -> Option<Value> {
        Some(Value::Integer(i64::from(*self)))
    }
}

impl TomlValue for String {
    fn from_toml(v: &Value) -> Option<Self> {
        v.as_str().map(str::to_owned)
    }
    fn shown(&self) -> Option<Value> {
        Some(Value::String(self.clone()))
    }
}

impl TomlValue for Mode {
    fn from_toml(v: &Value) -> Option<Self> {
        v.as_str().and_then(|s| s.parse().ok())
    }
    fn shown(&self) -> Option<Value> {
        Some(Value::String(self.as_str().into()))
    }
}

impl TomlValue for Exporter {
    fn from_toml(v: &Value) -> Option<Self> {
        [Exporter::Off, Exporter::OtlpHttp, Exporter::OtlpGrpc]
            .into_iter()
            .find(|e| v.as_str() == Some(e.as_str()))
    }
    fn shown(&self) -> Option<Value> {
        Some(Value::String(self.as_str().into()))
    }
}

impl TomlValue for Secret {
    fn from_toml(v: &Value) -> Option<Self> {
        v.as_str().map(|s| Secret(s.to_owned()))
    }
    fn shown(&self) -> Option<Value> {
        Some(Value::String("<redacted>".into()))
    }
}

impl TomlValue for Headers {
    fn from_toml(v: &Value) -> Option<Self> {
        v.as_table()?
            .iter()
            .map(|(k, v)| v.as_str().map(|v| (k.clone(), v.to_owned())))
            .collect::<Option<_>>()
            .map(Headers)
    }
    fn shown(&self) -> Option<Value> {
        Some(Value::Table(
            self.0
                .keys()
                .map(|k| (k.clone(), Value::String("<redacted>".into())))
                .collect(),
        ))
    }
}

impl TomlValue for CollectorUrl {
    fn from_toml(v: &Value) -> Option<Self> {
        v.as_str().map(|s| CollectorUrl(s.to_owned()))
    }
    fn shown(&self) -> Option<Value> {
        Some(Value::String(proxy_core::redact_userinfo(&self.0)))
    }
}

/// A list of strings, each parsed by `parse`, kept with its writing.
fn parsed_list<T>(v: &Value, parse: impl Fn(&str) -> Result<T, String>) -> Option<Written<Vec<T>>> {
    let value = v
        .as_array()?
        .iter()
        .map(|i| i.as_str().and_then(|s| parse(s).ok()))
        .collect::<Option<_>>()?;
    Some(Written {
        value,
        written: v.clone(),
    })
}

impl TomlValue for Written<Vec<IpNet>> {
    fn from_toml(v: &Value) -> Option<Self> {
        parsed_list(v, parse_cidr)
    }
    fn shown(&self) -> Option<Value> {
        Some(self.written.clone())
    }
}

impl TomlValue for Written<Vec<SocketAddr>> {
    fn from_toml(v: &Value) -> Option<Self> {
        parsed_list(v, parse_nameserver)
    }
    fn shown(&self) -> Option<Value> {
        Some(self.written.clone())
    }
}

/// `mitm`: `true`/`false`, or a table whose `enabled` says it.
impl TomlValue for Written<bool> {
    fn from_toml(v: &Value) -> Option<Self> {
        let on = match v {
            Value::Boolean(b) => *b,
            Value::Table(t) => t.get("enabled").and_then(Value::as_bool).unwrap_or(false),
            _ => return None,
        };
        Some(Written {
            value: on,
            written: v.clone(),
        })
    }
    /// Whether it is on: the hooks and actions of the table are shown as their own entries.
    fn shown(&self) -> Option<Value> {
        Some(Value::Boolean(self.value))
    }
}

/// A key that may be unset: `None` is shown as unset.
impl<T: TomlValue> TomlValue for Option<T> {
    fn from_toml(v: &Value) -> Option<Self> {
        T::from_toml(v).map(Some)
    }
    fn shown(&self) -> Option<Value> {
        self.as_ref().and_then(TomlValue::shown)
    }
}

/// Declares the scalar keys. Each entry: its docs, `field: Type = default, "key.path",
/// Kind, restart | reload;`, where `restart` marks a key whose change a reload refuses.
/// A field is named after its key path without `network.`, dots made underscores.
macro_rules! schema {
    (@restart restart, $changed:ident, $path:literal, $old:expr, $new:expr) => {
        if $old != $new {
            $changed.push($path);
        }
    };
    (@restart reload, $changed:ident, $path:literal, $old:expr, $new:expr) => {};
    ($(
        $(#[$meta:meta])*
        $field:ident: $ty:ty = $default:expr, $path:literal, $kind:expr, $when:ident;
    )*) => {
        /// Every scalar key (full path) and its type, in the order `config show` lists them.
        pub(crate) const SCALARS: &[(&str, Kind)] = &[$(($path, $kind)),*];

        /// Every field with its key path, for the tests.
        #[cfg(test)]
        pub(crate) const FIELDS: &[(&str, &str)] = &[$((stringify!($field), $path)),*];

        /// The effective scalar settings: one field per key, each with the layer that set it.
        /// Built once per load: defaults, then each layer, then the managed requirements.
        #[derive(Debug, Clone, PartialEq)]
        pub struct Settings {
            $(
                $(#[$meta])*
                pub $field: Setting<$ty>,
            )*
        }

        /// The scalar keys one layer sets (`None`: not set by it).
        #[derive(Debug, Clone, Default, PartialEq)]
        pub(crate) struct LayerValues {
            $(pub(crate) $field: Option<$ty>,)*
        }

        impl Settings {
            /// Every key at its default.
            pub(crate) fn defaults() -> Self {
                Self {
                    $($field: Setting { key: $path, value: $default, layer: Layer::Default },)*
                }
            }

            /// The keys `values` sets replace the current ones; `layer` set them.
            pub(crate) fn overlay(&mut self, values: LayerValues, layer: &Layer) {
                $(
                    if let Some(v) = values.$field {
                        self.$field.set(v, layer.clone());
                    }
                )*
            }

            /// Every key with its value and layer, in schema order, secrets redacted: what
            /// `config show` prints.
            pub fn shown(&self) -> Vec<ShownValue> {
                vec![$(
                    ShownValue {
                        key: $path.to_owned(),
                        value: TomlValue::shown(&self.$field.value),
                        layer: self.$field.layer.clone(),
                    },
                )*]
            }

            /// The keys whose change needs a restart and that differ in `next`, in schema
            /// order.
            pub fn restart_keys_changed(&self, next: &Settings) -> Vec<&'static str> {
                let mut changed = Vec::new();
                $(schema!(@restart $when, changed, $path, self.$field.value, next.$field.value);)*
                changed
            }
        }

        impl LayerValues {
            /// Stores a value the parser has checked for the key at `path`; `false` when
            /// `path` names no scalar key or the value is not of its type.
            pub(crate) fn store(&mut self, path: &str, value: &Value) -> bool {
                match path {
                    $($path => match TomlValue::from_toml(value) {
                        Some(v) => {
                            self.$field = Some(v);
                            true
                        }
                        None => false,
                    },)*
                    _ => false,
                }
            }
        }
    };
}

schema! {
    /// `enabled`: whether the proxy admits anything.
    enabled: bool = true, "network.enabled", Kind::Bool, reload;
    /// `mode`: `full`, or `limited` (read-only methods).
    mode: Mode = Mode::Full, "network.mode", Kind::Mode, reload;
    /// `proxy_url`: the HTTP proxy's listener.
    proxy_url: String = "http://127.0.0.1:3128".to_owned(),
        "network.proxy_url", Kind::ListenUrl, restart;
    /// `enable_socks5`.
    enable_socks5: bool = true, "network.enable_socks5", Kind::Bool, restart;
    /// `socks_url`: the SOCKS5 proxy's listener.
    socks_url: String = "http://127.0.0.1:8081".to_owned(),
        "network.socks_url", Kind::ListenUrl, restart;
    /// `enable_socks5_udp`.
    enable_socks5_udp: bool = true, "network.enable_socks5_udp", Kind::Bool, restart;
    /// `admin_url`: the admin API's listener.
    admin_url: String = "http://127.0.0.1:8080".to_owned(),
        "network.admin_url", Kind::ListenUrl, restart;
    /// `enable_admin`.
    enable_admin: bool = true, "network.enable_admin", Kind::Bool, restart;
    /// `admin_token`.
    admin_token: Option<Secret> = None, "network.admin_token", Kind::Text, reload;
    /// `allow_upstream_proxy`.
    allow_upstream_proxy: bool = true, "network.allow_upstream_proxy", Kind::Bool, reload;
    /// `dangerously_allow_non_loopback_proxy`.
    dangerously_allow_non_loopback_proxy: bool = false,
        "network.dangerously_allow_non_loopback_proxy", Kind::Bool, reload;
    /// `dangerously_allow_non_loopback_admin`.
    dangerously_allow_non_loopback_admin: bool = false,
        "network.dangerously_allow_non_loopback_admin", Kind::Bool, reload;
    /// `allow_local_binding`.
    allow_local_binding: bool = false, "network.allow_local_binding", Kind::Bool, reload;
    /// `dangerously_allow_all_unix_sockets`.
    dangerously_allow_all_unix_sockets: bool = false,
        "network.dangerously_allow_all_unix_sockets", Kind::Bool, reload;
    /// `treat_as_public`: ranges exempt from local protection.
    treat_as_public: Written<Vec<IpNet>> = Written::list(Vec::new()),
        "network.treat_as_public", Kind::Cidrs, reload;
    /// `mitm`: HTTPS interception (limited mode, hooks and brokered credentials inside TLS). The CA
    /// and the interceptor are made at start: turned on by a reload, limited mode's tunnels
    /// stay refused `mitm_required` until a restart.
    mitm: Written<bool> = Written::flag(false), "network.mitm", Kind::Mitm, reload;
    /// `credential_broker`: the credential broker (docs/credentials.md). Its grants and
    /// dummies are made at start: a change needs a restart.
    credential_broker: bool = false, "network.credential_broker", Kind::Bool, restart;
    /// `dangerously_allow_plaintext_credential_injection`: read when the HTTP front-end
    /// starts, so a change needs a restart.
    dangerously_allow_plaintext_credential_injection: bool = false,
        "network.dangerously_allow_plaintext_credential_injection", Kind::Bool, restart;
    /// `verify_sni`: refuse an opaque tunnel whose TLS server name is not its `CONNECT` host.
    verify_sni: bool = false, "network.verify_sni", Kind::Bool, reload;
    /// `isolate`: `run` starts its child in a network namespace of its own, as with
    /// `--isolate` (docs/config.md). Read only by `run`, once at start; `serve` has no child
    /// and ignores it, so a reload that changes it is accepted and changes nothing.
    isolate: bool = false, "network.isolate", Kind::Bool, reload;
    /// `audit_log`: the JSON-lines audit file.
    audit_log: Option<String> = None, "network.audit_log", Kind::Text, restart;
    /// `[network.dns] nameservers` (`None`: the system's).
    dns_nameservers: Option<Written<Vec<SocketAddr>>> = None,
        "network.dns.nameservers", Kind::Nameservers, restart;
    /// `[network.dns] timeout_ms`.
    dns_timeout_ms: u32 = 2000, "network.dns.timeout_ms",
        Kind::Int { min: 1, max: 600_000 }, restart;
    /// `[network.limits] max_connections`.
    limits_max_connections: u32 = 4096, "network.limits.max_connections",
        Kind::Int { min: 1, max: 1_000_000 }, restart;
    /// `[network.limits] connect_timeout_ms`.
    limits_connect_timeout_ms: u32 = 10_000, "network.limits.connect_timeout_ms",
        Kind::Int { min: 1, max: 3_600_000 }, restart;
    /// `[network.limits] header_timeout_ms`.
    limits_header_timeout_ms: u32 = 10_000, "network.limits.header_timeout_ms",
        Kind::Int { min: 1, max: 3_600_000 }, restart;
    /// `[network.limits] idle_timeout_s`.
    limits_idle_timeout_s: u32 = 300, "network.limits.idle_timeout_s",
        Kind::Int { min: 1, max: 604_800 }, restart;
    /// `[network.limits] max_header_bytes`.
    limits_max_header_bytes: u32 = 65_536, "network.limits.max_header_bytes",
        Kind::Int { min: 1024, max: 16_777_216 }, restart;
    /// `[otel] exporter`.
    otel_exporter: Exporter = Exporter::Off, "otel.exporter", Kind::Exporter, restart;
    /// `[otel] endpoint`.
    otel_endpoint: Option<CollectorUrl> = None, "otel.endpoint", Kind::Text, restart;
    /// `[otel] headers`.
    otel_headers: Option<Headers> = None, "otel.headers", Kind::Headers, restart;
}

/// Map-valued keys, overlaid entry by entry across layers.
pub(crate) const MAPS: &[&str] = &[
    "network.domains",
    "network.unix_sockets",
    "network.dns.hosts",
    "network.credentials",
];
/// Legacy list shapes, accepted beside or instead of the maps.
pub(crate) const LISTS: &[&str] = &[
    "network.allowed_domains",
    "network.denied_domains",
    "network.allow_unix_sockets",
];
/// Tables that hold keys.
pub(crate) const TABLES: &[&str] = &["network", "network.dns", "network.limits", "otel"];
/// The keys a document may hold at its top.
pub(crate) const TOP: &[&str] = &["network", "otel", "default_permissions", "permissions"];

/// The type of the scalar key at `path`.
pub(crate) fn kind_of(path: &str) -> Option<Kind> {
    SCALARS.iter().find(|(p, _)| *p == path).map(|(_, k)| *k)
}

/// Every key a user can write, for suggestions.
pub(crate) fn known_paths() -> impl Iterator<Item = &'static str> {
    SCALARS
        .iter()
        .map(|(p, _)| *p)
        .chain(MAPS.iter().copied())
        .chain(LISTS.iter().copied())
        .chain(TABLES.iter().copied())
}

/// Parses a CIDR, or a bare address as a single-address range.
pub(crate) fn parse_cidr(s: &str) -> Result<IpNet, String> {
    let t = s.trim();
    if let Ok(n) = t.parse::<IpNet>() {
        return Ok(n);
    }
    t.parse::<IpAddr>()
        .map(IpNet::from)
        .map_err(|_| format!("invalid CIDR {s:?} (expected e.g. \"198.18.0.0/15\")"))
}

/// Parses a nameserver: `IP` or `IP:PORT` (IPv6 with a port in brackets); port 53 by default.
pub(crate) fn parse_nameserver(s: &str) -> Result<SocketAddr, String> {
    let t = s.trim();
    if let Ok(sa) = t.parse::<SocketAddr>() {
        return Ok(sa);
    }
    let bare = t
        .strip_prefix('[')
        .and_then(|r| r.strip_suffix(']'))
        .unwrap_or(t);
    bare.parse::<IpAddr>()
        .map(|ip| SocketAddr::new(ip, 53))
        .map_err(|_| format!("invalid nameserver {s:?} (expected \"IP\" or \"IP:PORT\")"))
}
