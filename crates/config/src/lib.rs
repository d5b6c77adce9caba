//! The unit configuration file: one TOML file per unit, read by every
//! duet service of that unit, plus `DUET_` environment variables.
//!
//! [`load`] reads and merges the file and the environment (figment), then
//! [`UnitConfig::validate`] checks every field and reports *all* problems
//! at once, each naming the field, what is wrong and what to do. Nothing
//! here touches the network or the disk beyond reading the file.
//!
//! The pair's settings in the file (`[ha]`'s pair part, `[[interface]]`)
//! are the model's types (`duet_model`), read through its serde and checked
//! by its validators; the unit's own settings (password, authentication,
//! advskew, per-interface `unicast`...) and their rules are this crate's.
//! [`election_params`] makes the election's parameters from both.
//!
//! Environment variables override the file: `DUET_HA__TIMEOUT_S=3` sets
//! `ha.timeout_s` (sections are separated by a double underscore).

mod admin;
mod etcd;
mod fleet;
mod hooks;
mod model;
mod pair;
mod problems;
mod sync;
mod track;
mod validate;
mod witness;

pub use admin::{AdminRole, AdminSection, AdminTokens};
pub use duet_model::{Cidr, Problem};
pub use etcd::{EndpointProblem, EtcdTls, endpoint_url as etcd_endpoint_url};
pub use fleet::{DEFAULT_PREFIX as DEFAULT_FLEET_PREFIX, FleetConfig, StoreKind, check_prefix as check_fleet_prefix};
pub use hooks::{HookKind, Hooks, HooksSection};
pub use model::*;
pub use pair::{PairSettings, problem_lines};
pub use sync::{ConfigSync, PeerLink, Replicator};
pub use track::{KINDS as TRACK_KINDS, Probe, ProcessBy, RunAs, Track, TrackSection};
pub use validate::{LocalHa, UnicastOverride, Validated, election_params};
pub use witness::{WitnessConfig, valid_pair_name};

use std::path::Path;

use figment::Figment;
use figment::providers::{Env, Format, Toml};

/// Why a configuration could not be used.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The file is missing, unreadable or not TOML of the expected shape.
    #[error("{path}: {message}")]
    Parse {
        /// The file.
        path: String,
        /// What figment said, with the field path when it knows one.
        message: String,
    },
    /// One or more fields hold values that cannot be used.
    #[error("{path}: {} problem(s):\n{}", errors.len(), errors.iter().map(|e| format!("  - {e}")).collect::<Vec<_>>().join("\n"))]
    Invalid {
        /// The file.
        path: String,
        /// Every problem found.
        errors: Vec<Problem>,
    },
}

/// Reads `path` and the `DUET_` environment into a [`UnitConfig`] without
/// validating it; the environment wins over the file.
pub fn load_raw(path: &Path) -> Result<UnitConfig, ConfigError> {
    if !path.exists() {
        return Err(ConfigError::Parse {
            path: path.display().to_string(),
            message: "no such file; pass the unit's configuration with --config".into(),
        });
    }
    let fig = Figment::new()
        .merge(Toml::file_exact(path))
        // Only DUET_<SECTION>__<FIELD> variables: DUET_LOG, DUET_CONFIG and
        // friends belong to the processes, not to the file.
        .merge(Env::prefixed("DUET_").filter(|k| k.as_str().contains("__")).split("__"));
    extract(&fig, &path.display().to_string())
}

fn extract(fig: &Figment, path: &str) -> Result<UnitConfig, ConfigError> {
    fig.extract::<UnitConfig>().map_err(|e| ConfigError::Parse { path: path.to_owned(), message: describe(&e, fig) })
}

/// Reads and validates a unit configuration.
pub fn load(path: &Path) -> Result<Validated, ConfigError> {
    let raw = load_raw(path)?;
    raw.validate().map_err(|errors| ConfigError::Invalid { path: path.display().to_string(), errors })
}

/// Parses TOML text (for tests and for `--check` of generated files).
pub fn from_toml(text: &str) -> Result<Validated, ConfigError> {
    let raw = extract(&Figment::new().merge(Toml::string(text)), "<text>")?;
    raw.validate().map_err(|errors| ConfigError::Invalid { path: "<text>".into(), errors })
}

fn describe(e: &figment::Error, fig: &Figment) -> String {
    let mut lines = pinpoint(fig);
    for e in e.clone() {
        // Said by the key-by-key pass already (the same path and words).
        let said = format!("{}: {}", e.path.join("."), e.kind);
        if lines.contains(&said) {
            continue;
        }
        // An error that names only a flattened section is one of those
        // pinpointed (by field) above.
        let flattened = matches!(e.path.as_slice(), [s] if s == "ha")
            || matches!(e.path.as_slice(), [s, n] if s == "interface" && n.parse::<usize>().is_ok());
        if flattened && !lines.is_empty() {
            continue;
        }
        let path = e.path.join(".");
        lines.push(if path.is_empty() { e.kind.to_string() } else { format!("{path}: {}", e.kind) });
    }
    lines.join("; ")
}

/// Inside the flattened parts of `[ha]` and `[[interface]]` serde names
/// only the section of a bad value (`ha: invalid type...`). Reading each
/// key of those sections on its own finds the field, and every bad one.
fn pinpoint(fig: &Figment) -> Vec<String> {
    use figment::value::{Dict, Value};
    use serde::de::DeserializeOwned;

    fn bad<T: DeserializeOwned>(base: &Dict, key: &str, value: &Value) -> Option<String> {
        let mut d = base.clone();
        d.insert(key.to_owned(), value.clone());
        // figment's error path starts at the key.
        T::deserialize(&Value::from(d)).err().map(|e| {
            let path = if e.path.is_empty() { key.to_owned() } else { e.path.join(".") };
            format!("{path}: {}", e.kind)
        })
    }
    let mut out = Vec::new();
    if let Ok(Value::Dict(_, ha)) = fig.find_value("ha") {
        for (k, v) in &ha {
            let e =
                bad::<duet_model::HaSettings>(&Dict::new(), k, v).or_else(|| bad::<UnitHaSettings>(&Dict::new(), k, v));
            out.extend(e.map(|e| format!("ha.{e}")));
        }
    }
    if let Ok(Value::Array(_, ifaces)) = fig.find_value("interface") {
        for (n, i) in ifaces.iter().enumerate() {
            let Value::Dict(_, d) = i else { continue };
            // The name is required: a stand-in lets each other key be tried alone.
            let base = Dict::from([("name".to_owned(), Value::from("probe"))]);
            for (k, v) in d.iter().filter(|(k, _)| k.as_str() != "unicast") {
                out.extend(bad::<duet_model::Interface>(&base, k, v).map(|e| format!("interface[{n}].{e}")));
            }
        }
    }
    if let Ok(Value::Array(_, tracks)) = fig.find_value("track") {
        for (n, t) in tracks.iter().enumerate() {
            let Value::Dict(_, d) = t else { continue };
            let base = Dict::from([("name".to_owned(), Value::from("probe")), ("kind".to_owned(), Value::from("tcp"))]);
            for (k, v) in d {
                out.extend(bad::<TrackSection>(&base, k, v).map(|e| format!("track[{n}].{e}")));
            }
        }
    }
    // Every other section, key by key: serde stops at a section's first
    // error, and the file's reader at the first section's, so without this
    // a file with five mistakes took five runs.
    type Check = fn(&Dict, &str, &Value) -> Option<String>;
    let unit_base = Dict::from([("name".to_owned(), Value::from("probe")), ("mode".to_owned(), Value::from("first"))]);
    let sections: [(&str, Check, &Dict); 11] = [
        ("unit", bad::<UnitSection>, &unit_base),
        ("election", bad::<ElectionSection>, &Dict::new()),
        ("takeover", bad::<TakeoverSection>, &Dict::new()),
        ("configsync", bad::<ConfigSyncSection>, &Dict::new()),
        ("replicator", bad::<ReplicatorSection>, &Dict::new()),
        ("supervisor", bad::<SupervisorSection>, &Dict::new()),
        ("telemetry", bad::<TelemetrySection>, &Dict::new()),
        ("witness", bad::<WitnessSection>, &Dict::new()),
        ("fleet", bad::<FleetSection>, &Dict::new()),
        ("admin", bad::<AdminSection>, &Dict::new()),
        ("hooks", bad::<HooksSection>, &Dict::new()),
    ];
    for (section, check, base) in sections {
        if let Ok(Value::Dict(_, d)) = fig.find_value(section) {
            for (k, v) in &d {
                out.extend(check(base, k, v).map(|e| format!("{section}.{e}")));
            }
        }
    }
    out
}

/// Name of the macvlan that carries the virtual MAC of `ifname` (T2):
/// `dv<vhid>.<ifname>`, cut to the 15 characters Linux allows. The election
/// (fail-safe scrub) and the takeover service both use it.
pub fn vmac_device(ifname: &str, vhid: u8) -> String {
    let mut n = format!("dv{vhid}.{ifname}");
    n.truncate(15);
    n
}

#[cfg(test)]
mod name_tests {
    #[test]
    fn vmac_device_names_fit_linux() {
        assert_eq!(super::vmac_device("eth0", 10), "dv10.eth0");
        assert_eq!(super::vmac_device("enp0s31f6-long", 255).len(), 15);
    }
}

#[cfg(test)]
mod parse_tests {
    /// One mistake in each of five sections: all five in one run, each
    /// with its key (a file with five mistakes used to take five runs).
    #[test]
    fn every_section_s_mistake_is_reported_at_once() {
        let text = r#"
[unit]
name = "lb1"
mode = "primary"

[[interface]]
name = "eth0"
unit1 = "198.18.0.1/24"
unit2 = "198.18.0.2/24"
shared = "198.18.0.10/24"

[election]
listen = 7870

[takeover]
garp_cont = 3

[telemetry]
log_format = "xml"

[hooks]
timeout = 5
"#;
        let e = super::from_toml(text).unwrap_err().to_string();
        for key in ["unit.mode", "election.listen", "takeover.garp_cont", "telemetry.log_format", "hooks.timeout"] {
            assert!(e.contains(key), "{key} missing from: {e}");
        }
        assert!(e.contains("`text`, `json`") || e.contains("`text` or `json`"), "the allowed words: {e}");
    }
}
