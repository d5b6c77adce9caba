//! Virtual services with their real servers and persistence (S1).

use std::collections::HashSet;
use std::net::Ipv4Addr;

use serde::{Deserialize, Serialize};

use crate::Problem;

/// Transport protocol of a virtual service.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Protocol {
    Tcp,
    Udp,
}

impl Protocol {
    /// The word: `tcp` or `udp`.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Tcp => "tcp",
            Self::Udp => "udp",
        }
    }
}

/// How new connections are spread over the real servers.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Scheduler {
    RoundRobin,
    WeightedRoundRobin,
    SourceHash,
    LeastConnection,
}

/// What a client is remembered by.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum PersistenceMode {
    /// No persistence (the default).
    #[default]
    None,
    /// The client's source address (L4).
    SourceAddress,
    /// A cookie (L7, HTTP).
    Cookie,
}

/// Persistence of a virtual service.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(default)]
pub struct Persistence {
    pub mode: PersistenceMode,
    /// How long a client is remembered (1-86400 s when persistence is on).
    pub timeout_s: u32,
    /// The cookie's name (cookie persistence).
    pub cookie: String,
}

/// A real server of a virtual service.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RealServer {
    pub address: Ipv4Addr,
    pub port: u16,
    /// 0-1000; 0 drains the server.
    pub weight: u32,
    #[serde(default = "yes")]
    pub enabled: bool,
}

/// A virtual service: an endpoint and the real servers behind it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct VirtualService {
    /// Unique name, 1-64 of `A-Z a-z 0-9 - _ .` (e.g. "web").
    pub name: String,
    /// The virtual address (a shared address, or another address of its subnet).
    pub address: Ipv4Addr,
    pub port: u16,
    pub protocol: Protocol,
    pub scheduler: Scheduler,
    #[serde(default)]
    pub real_servers: Vec<RealServer>,
    #[serde(default)]
    pub persistence: Persistence,
    #[serde(default = "yes")]
    pub enabled: bool,
}

fn yes() -> bool {
    true
}

/// The one wording of the port rule (1-65535), for the conversion (a value
/// above 65535) and the validator (0).
pub(crate) fn not_a_port(field: String, port: u32) -> Problem {
    Problem::new(field, format!("{port} is not a port: use 1-65535"))
}

/// How a virtual service is named in field paths: its name, or its index
/// when it has none.
pub(crate) fn service_id(name: &str, index: usize) -> String {
    if name.is_empty() { index.to_string() } else { name.to_owned() }
}

impl VirtualService {
    /// Whether `name` is a usable virtual service name: 1-64 of
    /// `A-Z a-z 0-9 - _ .` (also safe inside nftables identifiers).
    pub fn usable_name(name: &str) -> bool {
        !name.is_empty()
            && name.len() <= 64
            && name.chars().all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'))
    }

    /// Checks every rule of a list of virtual services; `path` is where the
    /// list sits (`virtual_services`). Disabled services are checked too:
    /// enabling one must not be what makes an image invalid.
    pub fn validate_list(list: &[Self], path: &str) -> Vec<Problem> {
        let mut p = Vec::new();
        let mut names = HashSet::new();
        let mut endpoints = HashSet::new();
        for (k, vs) in list.iter().enumerate() {
            let id = service_id(&vs.name, k);
            let f = |x: &str| format!("{path}[{id}].{x}");
            if !Self::usable_name(&vs.name) {
                p.push(Problem::new(
                    f("name"),
                    format!("\"{}\" is not a usable name: 1-64 letters, digits, '-', '_' or '.'", vs.name),
                ));
            } else if !names.insert(vs.name.as_str()) {
                p.push(Problem::new(
                    f("name"),
                    format!("\"{}\" is used by two virtual services: names are unique", vs.name),
                ));
            }
            if vs.port == 0 {
                p.push(not_a_port(f("port"), 0));
            } else if !endpoints.insert((vs.address, vs.port, vs.protocol)) {
                p.push(Problem::new(
                    f("port"),
                    format!("{}:{} {} is served by another virtual service", vs.address, vs.port, vs.protocol.as_str()),
                ));
            }
            let mut reals = HashSet::new();
            for (r, rs) in vs.real_servers.iter().enumerate() {
                let rf = |x: &str| format!("{path}[{id}].real_servers[{r}].{x}");
                if rs.port == 0 {
                    p.push(not_a_port(rf("port"), 0));
                }
                if rs.weight > 1000 {
                    p.push(Problem::new(
                        rf("weight"),
                        format!("{} is too high: use 0-1000 (0 drains the server)", rs.weight),
                    ));
                }
                if !reals.insert((rs.address, rs.port)) {
                    p.push(Problem::new(
                        rf("address"),
                        format!("{}:{} is listed twice in this virtual service", rs.address, rs.port),
                    ));
                }
            }
            let per = &vs.persistence;
            if per.mode != PersistenceMode::None && !(1..=86_400).contains(&per.timeout_s) {
                p.push(Problem::new(
                    f("persistence.timeout_s"),
                    format!("{} is out of range: use 1-86400 seconds", per.timeout_s),
                ));
            }
            if per.mode == PersistenceMode::Cookie {
                if per.cookie.is_empty() {
                    p.push(Problem::new(f("persistence.cookie"), "cookie persistence needs the cookie's name"));
                }
                if vs.protocol != Protocol::Tcp {
                    p.push(Problem::new(
                        f("persistence.mode"),
                        "cookie persistence needs a TCP (HTTP) virtual service",
                    ));
                }
            }
        }
        p
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_words_of_the_enums() {
        let vs: VirtualService = serde_json::from_str(
            r#"{"name": "web", "address": "198.18.0.10", "port": 80, "protocol": "tcp",
                "scheduler": "weighted-round-robin", "persistence": {"mode": "source-address", "timeout_s": 60}}"#,
        )
        .unwrap();
        assert_eq!(
            (vs.scheduler, vs.persistence.mode, vs.enabled),
            (Scheduler::WeightedRoundRobin, PersistenceMode::SourceAddress, true)
        );
        let e = serde_json::from_value::<Scheduler>("rr".into()).unwrap_err().to_string();
        assert!(e.contains("`round-robin`, `weighted-round-robin`, `source-hash`, `least-connection`"), "{e}");
    }
}
