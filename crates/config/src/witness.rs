//! `[witness]` resolved (E14): this unit's way to the pair's etcd witness.
//! The witness's policy and lease TTL are the pair's (`ha.witness_policy`,
//! `ha.witness_lease_ttl_ms`, in the image), read by
//! [`election_params`](crate::election_params); this is the unit's own part:
//! the endpoints, TLS and where the key lives.

use std::path::PathBuf;

use duet_model::Problem;

use duet_carp::HaMode;

use crate::model::{UnitConfig, WitnessSection};

/// The etcd client's settings of this unit.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WitnessConfig {
    /// etcd members as URLs (`https://host:port`, or `http://` in plaintext).
    pub endpoints: Vec<String>,
    /// TLS to etcd; `None` only with `insecure_plaintext`.
    pub tls: Option<WitnessTls>,
    /// The key's prefix, ending in `/` (the key is `<prefix>witness`);
    /// `None`: `/duet/<pair>/`, the pair being `unit.pair` or `vhid-<vhid>`.
    pub key_prefix: Option<String>,
    /// `unit.pair`.
    pub pair: Option<String>,
    /// The name this unit writes in the key (`unit.name`).
    pub unit: String,
}

/// The CA to check etcd's certificates with, and this unit's client
/// certificate when etcd asks for one.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WitnessTls {
    pub ca: PathBuf,
    pub identity: Option<(PathBuf, PathBuf)>,
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
pub(crate) fn valid_pair_name(name: &str) -> bool {
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
    if w.endpoints.is_empty() {
        err(
            "witness.endpoints",
            "no etcd endpoint: list the members of the etcd cluster, e.g. [\"198.18.0.21:2379\", \"198.18.0.22:2379\", \
             \"198.18.0.23:2379\"]"
                .into(),
        );
    }
    let scheme = if w.insecure_plaintext { "http" } else { "https" };
    let mut endpoints = Vec::new();
    for (k, e) in w.endpoints.iter().enumerate() {
        let field = format!("witness.endpoints[{k}]");
        let (given, rest) = match e.split_once("://") {
            Some((s, rest)) => (Some(s), rest),
            None => (None, e.as_str()),
        };
        match given {
            Some(s) if s != scheme => {
                let why = if w.insecure_plaintext {
                    "witness.insecure_plaintext is set: use http:// or no scheme"
                } else {
                    "the witness talks TLS: use https:// or no scheme (or set witness.insecure_plaintext = true)"
                };
                err(&field, format!("\"{e}\": {why}"));
                continue;
            }
            _ => {}
        }
        let rest = rest.trim_end_matches('/');
        let port_ok = rest.rsplit_once(':').is_some_and(|(host, port)| {
            !host.is_empty() && !host.contains('/') && port.parse::<u16>().is_ok_and(|p| p > 0)
        });
        if !port_ok {
            err(&field, format!("\"{e}\" is not host:port, e.g. \"198.18.0.21:2379\""));
            continue;
        }
        endpoints.push(format!("{scheme}://{rest}"));
    }
    let tls = if w.insecure_plaintext {
        for (f, v) in [("tls_ca", &w.tls_ca), ("tls_cert", &w.tls_cert), ("tls_key", &w.tls_key)] {
            if v.is_some() {
                err(
                    &format!("witness.{f}"),
                    "witness.insecure_plaintext = true and TLS exclude each other: remove one".into(),
                );
            }
        }
        warnings.push(
            "witness.insecure_plaintext = true: the witness talks to etcd without TLS; anyone on the way can read or \
             forge the key and so take the active role; give witness.tls_ca (and a client certificate)"
                .into(),
        );
        None
    } else {
        if w.tls_ca.is_none() {
            err(
                "witness.tls_ca",
                "missing: the witness talks TLS to etcd; give the CA of the etcd members' certificates (or set \
                 witness.insecure_plaintext = true in a test setup)"
                    .into(),
            );
        }
        let identity = match (&w.tls_cert, &w.tls_key) {
            (Some(c), Some(k)) => Some((c.clone(), k.clone())),
            (None, None) => None,
            (Some(_), None) => {
                err(
                    "witness.tls_key",
                    "missing: witness.tls_cert is set; give both (a client certificate) or neither".into(),
                );
                None
            }
            (None, Some(_)) => {
                err(
                    "witness.tls_cert",
                    "missing: witness.tls_key is set; give both (a client certificate) or neither".into(),
                );
                None
            }
        };
        w.tls_ca.clone().map(|ca| WitnessTls { ca, identity })
    };
    if let Some(p) = &w.key_prefix
        && (!p.starts_with('/') || !p.ends_with('/') || p.chars().any(char::is_whitespace))
    {
        err(
            "witness.key_prefix",
            format!("\"{p}\" must start and end with '/' and hold no spaces, e.g. \"/duet/lb-pair/\""),
        );
    }
    (problems.len() == before).then(|| WitnessConfig {
        endpoints,
        tls,
        key_prefix: w.key_prefix.clone(),
        pair: cfg.unit.pair.clone(),
        unit: cfg.unit.name.clone(),
    })
}
