//! `config`: config loading on arbitrary layers, a requirements file and `-c` values
//! ([`proxy_config::load_texts`]). The input is split at `0xff` bytes (never part of UTF-8
//! text): the first part is the user's config file, the second a second config file, the third
//! a requirements file, the rest `-c` values. Whatever the input: a clear error or a config,
//! never a panic; an error's positions lie inside the text they point into; and a config that
//! loads keeps the requirements' pins (`enabled = false`, `mode = "limited"`, `isolate = true`,
//! every `false` switch).

use proxy_config::{CliOverrides, load_texts};
use proxy_core::Mode;

/// The requirement pins checked on every config that loads: (key under `[network]`, value).
const PINS: &[(&str, &str)] = &[
    ("enabled", "false"),
    ("mode", "limited"),
    ("allow_local_binding", "false"),
    ("allow_upstream_proxy", "false"),
    ("dangerously_allow_all_unix_sockets", "false"),
    ("dangerously_allow_non_loopback_proxy", "false"),
    ("dangerously_allow_non_loopback_admin", "false"),
    ("dangerously_allow_plaintext_credential_injection", "false"),
    ("isolate", "true"),
];

/// Runs the target on one input.
pub fn run(data: &[u8]) {
    let parts: Vec<String> = data
        .split(|b| *b == 0xff)
        .map(|p| String::from_utf8_lossy(p).into_owned())
        .collect();
    let part = |i: usize| parts.get(i).map(String::as_str);
    let mut configs = vec![("user.toml", part(0).unwrap_or_default())];
    if let Some(second) = part(1) {
        configs.push(("second.toml", second));
    }
    let requirements: Vec<(&str, &str)> = part(2)
        .map(|r| ("requirements.toml", r))
        .into_iter()
        .collect();
    let cli = CliOverrides {
        set: parts.iter().skip(3).take(4).cloned().collect(),
        ..CliOverrides::default()
    };
    let texts: Vec<(&str, &str)> = configs.iter().chain(&requirements).copied().collect();
    match load_texts(&configs, &requirements, &cli) {
        Err(e) => {
            assert!(!e.diagnostics.is_empty(), "an error without a diagnostic");
            for d in &e.diagnostics {
                assert!(
                    !d.message.is_empty(),
                    "a diagnostic without a message: {d:?}"
                );
                let (Some(pos), Some((_, text))) =
                    (d.position, texts.iter().find(|(o, _)| *o == d.origin))
                else {
                    continue;
                };
                let lines = text.split('\n').count();
                assert!(
                    pos.line >= 1 && pos.column >= 1 && pos.line as usize <= lines,
                    "{d:?} points outside its text of {lines} lines"
                );
            }
        }
        Ok(config) => {
            let Some(required) = part(2).and_then(|r| r.parse::<toml::Table>().ok()) else {
                return;
            };
            let network = required
                .get("network")
                .or_else(|| required.get("experimental_network"))
                .and_then(toml::Value::as_table);
            let Some(network) = network else {
                return;
            };
            for (key, value) in PINS {
                let pinned = match network.get(*key) {
                    Some(toml::Value::Boolean(b)) => b.to_string() == *value,
                    Some(toml::Value::String(s)) => s == value,
                    _ => false,
                };
                if !pinned {
                    continue;
                }
                let holds = match *key {
                    "enabled" => !config.enabled(),
                    "mode" => config.mode() == Mode::Limited,
                    "allow_local_binding" => !config.allow_local_binding(),
                    "allow_upstream_proxy" => !config.allow_upstream_proxy(),
                    "dangerously_allow_all_unix_sockets" => !config.allow_all_unix_sockets(),
                    "dangerously_allow_non_loopback_proxy" => !config.allow_non_loopback_proxy(),
                    "dangerously_allow_non_loopback_admin" => !config.allow_non_loopback_admin(),
                    "dangerously_allow_plaintext_credential_injection" => {
                        !config.plaintext_credential_injection()
                    }
                    "isolate" => config.isolate(),
                    _ => true,
                };
                assert!(holds, "the requirement {key} = {value} does not hold");
            }
        }
    }
}
