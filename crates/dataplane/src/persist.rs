//! Source-address persistence as data: reading the kernel's persistence
//! sets (`nft -j list table ip duet`) and writing elements back.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::net::{Ipv4Addr, SocketAddrV4};

use serde_json::Value;

use crate::error::ListingError;
use crate::render::{self, FAMILY, TABLE};

/// One remembered client of a virtual service with source-address
/// persistence: new connections from `client` go to `real_server` for the
/// next `expires_ms` (each new connection restarts the full timeout).
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct PersistEntry {
    /// Name of the virtual service.
    pub service: String,
    pub real_server: SocketAddrV4,
    pub client: Ipv4Addr,
    /// Time left. nft 1.0.6 prints it in whole seconds in JSON (rounded
    /// down), so this is a multiple of 1000 when read from the kernel.
    pub expires_ms: u64,
}

/// What [`crate::install_persistence`] did with the entries it was given.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Installed {
    /// Added (or, if the client was there already, its time left replaced).
    pub installed: usize,
    /// The service has no persistence set for that real server here (not
    /// programmed, no source persistence, or the server is not usable).
    pub no_such_set: usize,
    /// Less than a millisecond left.
    pub expired: usize,
}

/// A persistence set as found in the kernel: its name and default timeout.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct KernelSet {
    pub(crate) service: String,
    pub(crate) real_server: SocketAddrV4,
    pub(crate) timeout_ms: u64,
}

/// What `nft -j list table ip duet` says about persistence and counters.
#[derive(Debug, Default)]
pub(crate) struct TableState {
    /// Persistence sets by name.
    pub(crate) sets: BTreeMap<String, KernelSet>,
    pub(crate) entries: Vec<PersistEntry>,
    /// Named counters: name to packets.
    pub(crate) counters: BTreeMap<String, u64>,
}

/// Reads the output of `nft -j list table ip duet`.
pub(crate) fn parse_table(json: &str) -> Result<TableState, ListingError> {
    let v: Value = serde_json::from_str(json)?;
    let items = v.get("nftables").and_then(Value::as_array).ok_or(ListingError::NoItems)?;
    let mut state = TableState::default();
    for item in items {
        if let Some(c) = item.get("counter") {
            let name = c.get("name").and_then(Value::as_str).ok_or(ListingError::CounterName)?;
            let packets = c.get("packets").and_then(Value::as_u64).ok_or(ListingError::CounterPackets)?;
            state.counters.insert(name.to_owned(), packets);
            continue;
        }
        let Some(set) = item.get("set") else { continue };
        let Some(name) = set.get("name").and_then(Value::as_str) else { continue };
        let Some((service, real_server)) = render::parse_persist_set_name(name) else { continue };
        let timeout_ms = set.get("timeout").and_then(Value::as_u64).unwrap_or(0).saturating_mul(1000);
        for elem in set.get("elem").and_then(Value::as_array).map(Vec::as_slice).unwrap_or_default() {
            // An element with a timeout is `{"elem": {"val": .., "expires": s}}`;
            // a bare value (no timeout at all) is just the address.
            let (val, expires_s) = match elem.get("elem") {
                Some(e) => (e.get("val"), e.get("expires").and_then(Value::as_u64)),
                None => (Some(elem), None),
            };
            let client: Ipv4Addr = val
                .and_then(Value::as_str)
                .and_then(|s| s.parse().ok())
                .ok_or_else(|| ListingError::Element { set: name.to_owned(), element: elem.to_string() })?;
            let expires_ms = expires_s.map_or(timeout_ms, |s| s.saturating_mul(1000));
            state.entries.push(PersistEntry { service: service.clone(), real_server, client, expires_ms });
        }
        state.sets.insert(name.to_owned(), KernelSet { service, real_server, timeout_ms });
    }
    Ok(state)
}

/// `add element` commands for `entries` into the sets of `sets` (name to
/// the set's timeout in ms), time left capped at the set's timeout (the
/// kernel refuses more with ERANGE). Appends to `out`.
pub(crate) fn add_elements(
    out: &mut String,
    entries: &[PersistEntry],
    mut timeout_of: impl FnMut(&str) -> Option<u64>,
) -> Installed {
    let mut by_set: BTreeMap<String, Vec<String>> = BTreeMap::new();
    let mut done = Installed::default();
    for e in entries {
        let set = render::persist_set_name(&e.service, e.real_server);
        let Some(timeout_ms) = timeout_of(&set) else {
            done.no_such_set += 1;
            continue;
        };
        let ms = e.expires_ms.min(timeout_ms);
        if ms == 0 {
            done.expired += 1;
            continue;
        }
        by_set.entry(set).or_default().push(format!("{} expires {ms}ms", e.client));
        done.installed += 1;
    }
    for (set, elems) in by_set {
        // Chunks keep each line (one netlink message) of moderate size.
        for chunk in elems.chunks(512) {
            let _ = writeln!(out, "add element {FAMILY} {TABLE} {set} {{ {} }}", chunk.join(", "));
        }
    }
    done
}

#[cfg(test)]
mod tests {
    use super::*;

    const LISTING: &str = r#"{"nftables": [{"metainfo": {"version": "1.0.6", "release_name": "Lester Gooch #5", "json_schema_version": 1}}, {"table": {"family": "ip", "name": "duet", "handle": 6}}, {"counter": {"family": "ip", "name": "drop_invalid", "table": "duet", "handle": 2, "packets": 3, "bytes": 120}}, {"set": {"family": "ip", "name": "vips", "table": "duet", "type": ["ipv4_addr", "inet_proto", "inet_service"], "handle": 6, "elem": [{"concat": ["198.18.0.10", "tcp", 80]}]}}, {"set": {"family": "ip", "name": "p_web_198.19.0.101_80", "table": "duet", "type": "ipv4_addr", "handle": 8, "size": 65536, "flags": ["timeout"], "timeout": 600, "elem": [{"elem": {"val": "198.18.0.100", "expires": 548}}, {"elem": {"val": "198.18.0.101", "timeout": 30, "expires": 28}}]}}, {"set": {"family": "ip", "name": "p_web_198.19.0.102_80", "table": "duet", "type": "ipv4_addr", "handle": 9, "size": 65536, "flags": ["timeout"], "timeout": 600}}]}"#;

    #[test]
    fn reads_persistence_sets_elements_and_counters() {
        let s = parse_table(LISTING).unwrap();
        let rs1 = SocketAddrV4::new(Ipv4Addr::new(198, 19, 0, 101), 80);
        assert_eq!(
            s.entries,
            [
                PersistEntry {
                    service: "web".into(),
                    real_server: rs1,
                    client: Ipv4Addr::new(198, 18, 0, 100),
                    expires_ms: 548_000
                },
                PersistEntry {
                    service: "web".into(),
                    real_server: rs1,
                    client: Ipv4Addr::new(198, 18, 0, 101),
                    expires_ms: 28_000
                },
            ]
        );
        assert_eq!(s.sets.len(), 2);
        assert_eq!(s.sets["p_web_198.19.0.102_80"].timeout_ms, 600_000);
        assert_eq!(s.counters["drop_invalid"], 3);
    }

    #[test]
    fn elements_are_grouped_by_set_capped_and_filtered() {
        let rs1 = SocketAddrV4::new(Ipv4Addr::new(198, 19, 0, 101), 80);
        let e = |client: u8, expires_ms, rs| PersistEntry {
            service: "web".into(),
            real_server: rs,
            client: Ipv4Addr::new(198, 18, 0, client),
            expires_ms,
        };
        let other = SocketAddrV4::new(Ipv4Addr::new(198, 19, 0, 109), 80);
        let mut out = String::new();
        let done = add_elements(
            &mut out,
            &[e(100, 550_500, rs1), e(101, 900_000, rs1), e(102, 0, rs1), e(103, 1000, other)],
            |set| (set == "p_web_198.19.0.101_80").then_some(600_000),
        );
        assert_eq!(done, Installed { installed: 2, no_such_set: 1, expired: 1 });
        assert_eq!(
            out,
            "add element ip duet p_web_198.19.0.101_80 { 198.18.0.100 expires 550500ms, 198.18.0.101 expires 600000ms }\n"
        );
    }

    #[test]
    fn garbage_is_an_error_not_a_panic() {
        assert!(parse_table("").is_err());
        assert!(parse_table("{}").is_err());
        let bad = r#"{"nftables": [{"set": {"name": "p_web_1.2.3.4_80", "elem": [{"elem": {"val": 7}}]}}]}"#;
        assert!(parse_table(bad).unwrap_err().to_string().contains("not an IPv4 address"));
    }
}
