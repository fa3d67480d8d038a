//! `proxy-config` turns netproxy's config layers into one effective config and a compiled
//! [`proxy_policy::Policy`]. Layers, lowest first: built-in defaults, the system file, the user
//! file, each `--config FILE`, the command line (and, at run time, the admin API's
//! [`RuntimeLayer`]). Scalars from a higher layer replace lower ones; `domains` and
//! `unix_sockets` overlay entry by entry. Managed requirements (`requirements.toml`) are then
//! applied: no user layer can widen them, and managed domain lists are merged into the effective
//! lists.
//!
//! The scalars resolve, once per load, into typed [`Settings`]: one field per key of the schema
//! (`schema.rs`), each a [`Setting`] with its value and the layer that set it. Every field has a
//! default, so a key cannot be missing; nothing looks a key up by its name after parsing.
//!
//! It is not a watcher or a server: it reads the files it is given and reads no environment
//! variable; the binary decides where the files are. Every problem becomes a [`Diagnostic`] that
//! names the file (or layer), the key path and why, with the nearest known key for a misspelling;
//! all are reported at once. A key whose feature has not been built yet is refused as "not
//! supported yet", never silently inert.
//!
//! ```
//! use proxy_config::{CliOverrides, Sources, load};
//! let dir = tempfile::tempdir()?;
//! std::fs::write(dir.path().join("netproxy.toml"), r#"
//!     [network]
//!     mode = "limited"
//!     domains = { "**.github.com" = "allow", "gist.github.com" = "deny" }
//! "#)?;
//! let sources = Sources {
//!     config_files: vec![dir.path().join("netproxy.toml")],
//!     system_requirements: Some(dir.path().join("none.toml")),
//!     cli: CliOverrides { allow: vec!["example.com".into()], ..Default::default() },
//!     ..Default::default()
//! };
//! let config = load(&sources)?;
//! assert_eq!(config.mode(), proxy_core::Mode::Limited);
//! assert_eq!(config.settings().mode.layer.to_string(), dir.path().join("netproxy.toml").display().to_string());
//! assert_eq!(config.domains().len(), 3);
//! let policy = config.policy()?;
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```
#![forbid(unsafe_code)]

mod config;
mod credentials;
mod error;
mod hooks;
mod layer;
mod listen;
mod load;
mod locate;
mod managed;
mod runtime;
mod schema;

pub use config::{Config, DomainEntry, Listeners, ShownValue, SocketEntry};
pub use credentials::CredentialEntry;
pub use error::{Diagnostic, DiagnosticKind, Error, Position};
pub use hooks::{HookAction, HookEntry, Injection, SecretRef};
pub use layer::{Action, Layer};
pub use listen::{clamp_bind, parse_listen_url};
pub use load::{
    CliOverrides, ReadOnce, SYSTEM_REQUIREMENTS, Sources, load, load_texts, load_with,
    read_requirements, validate_files,
};
pub use managed::Requirements;
pub use runtime::{DomainEdit, InvalidPattern, RuntimeLayer};
pub use schema::{CollectorUrl, Exporter, Headers, Secret, Setting, Settings, Written};

#[cfg(test)]
mod tests;
