//! `[witness]` resolved (E14): this unit's way to the pair's etcd witness.
//! The witness's policy and lease TTL are the pair's (`ha.witness_policy`,
//! `ha.witness_lease_ttl_ms`, in the image), read by
//! [`election_params`](crate::election_params); this is the unit's own part:
//! the endpoints, TLS and where the key lives.

use duet_model::Problem;

use duet_carp::HaMode;

use crate::etcd::EtcdTls;
use crate::model::{UnitConfig, WitnessSection};

/// The etcd client's settings of this unit.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WitnessConfig {
    /// etcd members as URLs (`https://host:port`, or `http://` in plaintext).
    pub endpoints: Vec<String>,
    /// TLS to etcd; `None` only with `insecure_plaintext`.
    pub tls: Option<EtcdTls>,
    /// The key's prefix, ending in `/` (the key is `<prefix>witness`);
    /// `None`: `/duet/<pair>/`, the pair being `unit.pair` or `vhid-<vhid>`.
    pub key_prefix: Option<String>,
    /// `unit.pair`.
    pub pair: Option<String>,
    /// The name this unit writes in the key (`unit.name`).
    pub unit: String,
}

impl WitnessConfig {
    /// The witness's key for a pair whose vhid is `vhid`.
    pub fn key(&self, vhid: u8) -> String {
        let prefix = self.key_prefix.clone().unwrap_or_else(|| {
            let pair = self.pair.clone().unwrap_or_else(|| format!("vhid-{vhid}"));
            format!("/duet/{pair}/")
        });
        format!("{prefix}witness")
    }
}

/// Whether `name` is usable as a pair name.
pub fn valid_pair_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 64
        && name.chars().all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-'))
}

/// Where a key that does not belong in `[witness]` does, if anywhere.
fn belongs_elsewhere(key: &str) -> Option<&'static str> {
    match key {
        "policy" | "witness_policy" => Some("ha.witness_policy"),
        "lease_ttl_ms" | "witness_lease_ttl_ms" | "lease_ttl_s" | "ttl" => Some("ha.witness_lease_ttl_ms"),
        _ => None,
    }
}

/// Resolves `[witness]`, or says what is wrong (every problem, each naming
/// its field). `warnings` gets the plaintext warning.
pub(crate) fn resolve(
    cfg: &UnitConfig,
    w: &WitnessSection,
    problems: &mut Vec<Problem>,
    warnings: &mut Vec<String>,
) -> Option<WitnessConfig> {
    let before = problems.len();
    let mut err = |field: &str, message: String| problems.push(Problem::new(field, message));
    if cfg.unit.mode == HaMode::NonHa {
        err(
            "witness",
            "a witness breaks ties between the two units of a pair; this unit is non-ha: remove [witness] or set unit.mode"
                .into(),
        );
    }
    for key in w.unknown.keys() {
        match belongs_elsewhere(key) {
            Some(place) => err(
                &format!("witness.{key}"),
                format!(
                    "the witness's policy and lease TTL are the pair's (the same on both units): set {place} in [ha]"
                ),
            ),
            None => err(
                &format!("witness.{key}"),
                "unknown field, expected one of `endpoints`, `tls_ca`, `tls_cert`, `tls_key`, `insecure_plaintext`, \
                 `key_prefix`"
                    .into(),
            ),
        }
    }
    let client = crate::etcd::resolve(
        &crate::etcd::ClientFields {
            section: "witness",
            purpose: "the key and so take the active role",
            endpoints: &w.endpoints,
            tls_ca: &w.tls_ca,
            tls_cert: &w.tls_cert,
            tls_key: &w.tls_key,
            insecure_plaintext: w.insecure_plaintext,
        },
        problems,
        warnings,
    );
    let mut err = |field: &str, message: String| problems.push(Problem::new(field, message));
    if let Some(p) = &w.key_prefix
        && (!p.starts_with('/') || !p.ends_with('/') || p.chars().any(char::is_whitespace))
    {
        err(
            "witness.key_prefix",
            format!("\"{p}\" must start and end with '/' and hold no spaces, e.g. \"/duet/lb-pair/\""),
        );
    }
    let (endpoints, tls) = client?;
    (problems.len() == before).then(|| WitnessConfig {
        endpoints,
        tls,
        key_prefix: w.key_prefix.clone(),
        pair: cfg.unit.pair.clone(),
        unit: cfg.unit.name.clone(),
    })
}
