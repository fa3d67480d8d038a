//! `netproxy config show`: the effective config, each value with its layer.

use proxy_config::Config;
use serde_json::{Value, json};

fn to_json(v: &toml::Value) -> Value {
    match v {
        toml::Value::String(s) => Value::String(s.clone()),
        toml::Value::Integer(i) => json!(i),
        toml::Value::Float(f) => json!(f),
        toml::Value::Boolean(b) => json!(b),
        toml::Value::Datetime(d) => Value::String(d.to_string()),
        toml::Value::Array(a) => Value::Array(a.iter().map(to_json).collect()),
        toml::Value::Table(t) => {
            Value::Object(t.iter().map(|(k, v)| (k.clone(), to_json(v))).collect())
        }
    }
}

/// The effective config as JSON: `values` (key, value, layer), `warnings`, and the allow
/// entries that are not in force.
pub fn config_json(config: &Config) -> Value {
    let values: Vec<Value> = config
        .show()
        .iter()
        .map(|s| {
            json!({
                "key": s.key,
                "value": s.value.as_ref().map_or(Value::Null, to_json),
                "layer": s.layer.to_string(),
            })
        })
        .collect();
    let ignored: Vec<Value> = config
        .ignored_allow_entries()
        .iter()
        .map(|e| json!({"pattern": e.pattern.as_str(), "layer": e.layer.to_string()}))
        .collect();
    json!({
        "values": values,
        "not_in_force": ignored,
        "warnings": config.warnings(),
        "requirements": config.requirements().iter().map(|r| r.origin.display().to_string()).collect::<Vec<_>>(),
    })
}

/// The effective config as text: `key = value    # layer`.
pub fn config_text(config: &Config) -> String {
    let mut out = String::new();
    for s in config.show() {
        let value = s
            .value
            .as_ref()
            .map_or_else(|| "(unset)".to_owned(), ToString::to_string);
        out.push_str(&format!("{} = {value}    # {}\n", s.key, s.layer));
    }
    for e in config.ignored_allow_entries() {
        out.push_str(&format!(
            "# not in force (managed_allowed_domains_only): network.domains.{:?} = \"allow\"    # {}\n",
            e.pattern.as_str(),
            e.layer
        ));
    }
    out
}
