//! The unit configuration file: one TOML file per unit, read by every
//! duet service of that unit, plus `DUET_` environment variables.
//!
//! [`load`] reads and merges the file and the environment (figment), then
//! [`UnitConfig::validate`] checks every field and reports *all* problems
//! at once, each naming the field, what is wrong and what to do. Nothing
//! here touches the network or the disk beyond reading the file.
//!
//! Environment variables override the file: `DUET_HA__TIMEOUT_S=3` sets
//! `ha.timeout_s` (sections are separated by a double underscore).

mod addr;
mod model;
mod sync;
mod validate;

pub use addr::Cidr;
pub use model::*;
pub use sync::{ConfigSync, PeerLink, Replicator};
pub use validate::{FieldError, Validated};

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
        errors: Vec<FieldError>,
    },
}

/// File name, in the unit's state directory, of the HA settings taken
/// from the synced configuration image (written by configsync).
pub const HA_OVERLAY: &str = "ha-image.toml";

/// The overlay file of the unit whose file is `path`, if it can be told.
pub fn overlay_path(path: &Path) -> Option<std::path::PathBuf> {
    #[derive(serde::Deserialize)]
    struct Unit {
        name: String,
        state_dir: Option<std::path::PathBuf>,
    }
    #[derive(serde::Deserialize)]
    struct Head {
        unit: Unit,
    }
    let head: Head = Figment::new().merge(Toml::file_exact(path)).extract().ok()?;
    let dir = head.unit.state_dir.unwrap_or_else(|| std::path::PathBuf::from("/var/lib/duet").join(head.unit.name));
    Some(dir.join(HA_OVERLAY))
}

/// Reads `path`, the HA overlay from the synced image (if any) and the
/// `DUET_` environment into a [`UnitConfig`] without validating it. The
/// overlay wins over the file (the pair's image is authoritative once
/// written); the environment wins over both.
pub fn load_raw(path: &Path) -> Result<UnitConfig, ConfigError> {
    if !path.exists() {
        return Err(ConfigError::Parse {
            path: path.display().to_string(),
            message: "no such file; pass the unit's configuration with --config".into(),
        });
    }
    let mut fig = Figment::new().merge(Toml::file_exact(path));
    if let Some(o) = overlay_path(path).filter(|o| o.exists()) {
        fig = fig.merge(Toml::file_exact(o));
    }
    fig
        // Only DUET_<SECTION>__<FIELD> variables: DUET_LOG, DUET_CONFIG and
        // friends belong to the processes, not to the file.
        .merge(Env::prefixed("DUET_").filter(|k| k.as_str().contains("__")).split("__"))
        .extract::<UnitConfig>()
        .map_err(|e| ConfigError::Parse { path: path.display().to_string(), message: describe(&e) })
}

/// Reads and validates a unit configuration.
pub fn load(path: &Path) -> Result<Validated, ConfigError> {
    let raw = load_raw(path)?;
    raw.validate().map_err(|errors| ConfigError::Invalid { path: path.display().to_string(), errors })
}

/// Parses TOML text (for tests and for `--check` of generated files).
pub fn from_toml(text: &str) -> Result<Validated, ConfigError> {
    let raw: UnitConfig = Figment::new()
        .merge(Toml::string(text))
        .extract()
        .map_err(|e| ConfigError::Parse { path: "<text>".into(), message: describe(&e) })?;
    raw.validate().map_err(|errors| ConfigError::Invalid { path: "<text>".into(), errors })
}

fn describe(e: &figment::Error) -> String {
    e.clone()
        .into_iter()
        .map(|e| {
            let path = e.path.join(".");
            if path.is_empty() { e.kind.to_string() } else { format!("{path}: {}", e.kind) }
        })
        .collect::<Vec<_>>()
        .join("; ")
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
