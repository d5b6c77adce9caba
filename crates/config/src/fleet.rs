//! `[fleet]` and `configsync.store` resolved (O7): where a fleet of pairs
//! keeps its images and publishes its units' status, in etcd.

use duet_model::Problem;
use serde::{Deserialize, Serialize};

use crate::etcd::EtcdTls;
use crate::model::UnitConfig;

/// Where configsync keeps the pair's image generations.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum StoreKind {
    /// On the pair itself, each unit's state directory (the default).
    #[default]
    Local,
    /// In the fleet's etcd (`[fleet]`), with the local store as a copy.
    Etcd,
}

/// This unit's way to its fleet's etcd.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FleetConfig {
    /// etcd members as URLs (`https://host:port`, or `http://` in plaintext).
    pub endpoints: Vec<String>,
    /// TLS to etcd; `None` only with `insecure_plaintext`.
    pub tls: Option<EtcdTls>,
    /// The fleet's key prefix (`/duet` by default): the pair's keys are
    /// under `<prefix>/pairs/<pair>/`.
    pub prefix: String,
    /// `unit.pair`.
    pub pair: String,
    /// `unit.name`.
    pub unit: String,
    /// The pair's image lives in etcd (`configsync.store = "etcd"`); else
    /// the unit only publishes its status there.
    pub store: StoreKind,
}

/// The default key prefix of a fleet.
pub const DEFAULT_PREFIX: &str = "/duet";

/// Whether `p` is usable as a fleet's key prefix; the problem otherwise.
pub fn check_prefix(p: &str) -> Result<(), String> {
    if p.starts_with('/') && !p.ends_with('/') && p.len() > 1 && !p.chars().any(char::is_whitespace) {
        Ok(())
    } else {
        Err(format!(
            "\"{p}\" must start with '/', not end with one and hold no spaces, e.g. \"/duet\" or \"/fleets/eu\""
        ))
    }
}

/// Resolves `[fleet]` with `configsync.store`, or says what is wrong
/// (every problem, each naming its field).
pub(crate) fn resolve(
    cfg: &UnitConfig,
    problems: &mut Vec<Problem>,
    warnings: &mut Vec<String>,
) -> Option<FleetConfig> {
    let store = cfg.configsync.store;
    let Some(f) = &cfg.fleet else {
        if store == StoreKind::Etcd {
            problems.push(Problem::new(
                "configsync.store",
                "\"etcd\" needs a [fleet] section (the etcd endpoints, TLS and key prefix): add it, or set \
                 configsync.store = \"local\"",
            ));
        }
        return None;
    };
    let before = problems.len();
    let client = crate::etcd::resolve(
        &crate::etcd::ClientFields {
            section: "fleet",
            purpose: "the pair's configuration",
            endpoints: &f.endpoints,
            tls_ca: &f.tls_ca,
            tls_cert: &f.tls_cert,
            tls_key: &f.tls_key,
            insecure_plaintext: f.insecure_plaintext,
        },
        problems,
        warnings,
    );
    let prefix = f.prefix.clone().unwrap_or_else(|| DEFAULT_PREFIX.to_owned());
    if let Err(why) = check_prefix(&prefix) {
        problems.push(Problem::new("fleet.prefix", why));
    }
    let pair = cfg.unit.pair.clone().unwrap_or_default();
    if pair.is_empty() {
        problems.push(Problem::new(
            "unit.pair",
            "missing: a unit in a fleet names its pair (the same on both units, e.g. pair = \"edge-fra-1\"); its keys \
             are <prefix>/pairs/<pair>/",
        ));
    }
    let (endpoints, tls) = client?;
    (problems.len() == before).then(|| FleetConfig { endpoints, tls, prefix, pair, unit: cfg.unit.name.clone(), store })
}
