//! The L4 data plane: the virtual services of the configuration image
//! programmed into the kernel with nftables, on both units.
//!
//! [`render::ruleset`] turns the validated virtual services of a generation
//! (`duet_model` types: the model's validators have checked them, the data
//! plane does not check again) into the text of one table, `table ip duet`
//! (pure; the module [`render`](mod@render) documents the layout, the
//! schedulers and the strict-state chains). [`render()`] does the same for
//! a protobuf image, through the model's conversion and validators. [`apply`] replaces that table
//! with one `nft -f -` transaction, `add table` + `delete table` + the new
//! table, which the kernel commits whole or not at all: a refused ruleset
//! leaves the previous one in force. Source-persistence entries survive an
//! apply (they are read first and written back in the same transaction for
//! the sets that still exist). [`persistence`] and [`install_persistence`]
//! are the replicator's hooks (SPEC R2): read the remembered clients of
//! every service with their time left, and install them on the other unit
//! so a persistent client keeps its server after a failover.
//! [`set_sysctls`] turns on forwarding and strict TCP tracking.
//!
//! Rules are installed on both units; only the unit holding the shared
//! addresses receives traffic for them, and that is the election's and the
//! takeover's business, not this crate's. Locally generated traffic (the
//! `output` hook) is not load balanced.
//!
//! It does not: manage addresses, replicate conntrack entries (SPEC R1), do
//! layer 7 (cookie persistence is a warning), health-check real servers, or
//! touch any table but its own. It shells out to the `nft` binary (nftables
//! 1.0.6 here) rather than speaking netlink. Every call is blocking and acts
//! in the network namespace of the calling thread (a child process inherits
//! it); from async code use `spawn_blocking`, whose threads are in the
//! process's namespace.

pub mod error;
mod nft;
mod persist;
pub mod render;
mod sysctl;

use std::collections::{BTreeMap, HashMap};

use tracing::{info, warn};

pub use duet_model::Problem;
pub use error::DataplaneError;
pub use persist::{Installed, PersistEntry};
pub use render::{Ruleset, ruleset};
pub use sysctl::{SYSCTLS, Sysctls, set_sysctls};

use persist::TableState;
use render::{COUNTER_INVALID, COUNTER_UNTRACKED, FAMILY, TABLE};

/// The ruleset of a protobuf image's virtual services: the one conversion
/// to the model and its validators (every problem at once, each naming the
/// field), then [`render::ruleset`]. For callers that hold a protobuf image
/// rather than a generation of the model.
pub fn render(image: &duet_proto::config::v1::Image) -> Result<Ruleset, Vec<Problem>> {
    let services = duet_model::convert::virtual_services(&image.virtual_services)?;
    let problems = duet_model::VirtualService::validate_list(&services, "virtual_services");
    if !problems.is_empty() {
        return Err(problems);
    }
    Ok(ruleset(image.generation, &image.hash, &services))
}

/// What [`apply`] put in force.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Applied {
    /// Generation and content hash of the image applied.
    pub generation: u64,
    pub image_hash: String,
    /// Virtual services programmed (enabled ones, including any without a
    /// usable real server) and disabled ones left out.
    pub services: usize,
    pub skipped_services: usize,
    /// Real servers programmed over all services.
    pub real_servers: usize,
    /// Persistence entries carried over from the previous table, and those
    /// dropped because their set is gone (service or server removed,
    /// disabled, drained, or persistence turned off).
    pub persistence_kept: usize,
    pub persistence_dropped: usize,
    /// Warnings of the ruleset (also logged).
    pub warnings: Vec<Problem>,
}

/// Counters of duet's table (reset by every apply, which rebuilds it).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Counters {
    /// Invalid packets dropped, forwarded or addressed to a service.
    pub dropped_invalid: u64,
    /// Untracked packets dropped, likewise.
    pub dropped_untracked: u64,
    /// New connections per virtual service name.
    pub connections: BTreeMap<String, u64>,
}

/// Replaces duet's table with `ruleset` in one nft transaction.
///
/// The input is `table ip duet {}` (so the delete cannot fail), `delete
/// table ip duet`, the new table, then `add element` for the persistence
/// entries of the old table whose set is still there (time left capped at
/// the new timeout). nft sends it as one netlink batch; if the kernel
/// refuses any part, nothing changes and this returns
/// [`DataplaneError::Nft`] with nft's message. Entries a client creates
/// between the read and the commit (milliseconds) are lost: that client is
/// scheduled afresh on its next connection.
pub fn apply(ruleset: &Ruleset) -> Result<Applied, DataplaneError> {
    let previous = match read_table() {
        Ok(state) => state.map(|s| s.entries).unwrap_or_default(),
        Err(e) => {
            // Do not let a listing problem block a configuration change;
            // the cost is that clients lose their persistence.
            warn!(error = %e, "dataplane: cannot read the persistence entries; applying without them");
            Vec::new()
        }
    };
    let mut tx = format!("table {FAMILY} {TABLE} {{}}\ndelete table {FAMILY} {TABLE}\n");
    tx.push_str(&ruleset.text);
    let timeouts: HashMap<String, u64> =
        ruleset.persist_sets().map(|(name, _, _, t)| (name, u64::from(t) * 1000)).collect();
    let kept = persist::add_elements(&mut tx, &previous, |set| timeouts.get(set).copied());
    nft::run(&["-f", "-"], Some(&tx))?;

    for w in &ruleset.warnings {
        warn!(generation = ruleset.generation, "dataplane: {w}");
    }
    let applied = Applied {
        generation: ruleset.generation,
        image_hash: ruleset.image_hash.clone(),
        services: ruleset.services.len(),
        skipped_services: ruleset.skipped_services,
        real_servers: ruleset.backend_count(),
        persistence_kept: kept.installed,
        persistence_dropped: kept.no_such_set + kept.expired,
        warnings: ruleset.warnings.clone(),
    };
    info!(
        generation = applied.generation,
        hash = %applied.image_hash,
        services = applied.services,
        real_servers = applied.real_servers,
        persistence_kept = applied.persistence_kept,
        persistence_dropped = applied.persistence_dropped,
        "dataplane: ruleset applied"
    );
    Ok(applied)
}

/// Deletes duet's table (rules, sets and their entries, counters). Returns
/// whether there was one. Other tables are not touched.
pub fn remove() -> Result<bool, DataplaneError> {
    let existed = table_exists()?;
    // `add` first so the delete succeeds also when the table is gone by now.
    nft::run(&["-f", "-"], Some(&format!("table {FAMILY} {TABLE} {{}}\ndelete table {FAMILY} {TABLE}\n")))?;
    if existed {
        info!("dataplane: table removed");
    }
    Ok(existed)
}

/// The remembered clients of every service with source persistence, with
/// their time left (none if duet's table is absent).
pub fn persistence() -> Result<Vec<PersistEntry>, DataplaneError> {
    Ok(read_table()?.map(|s| s.entries).unwrap_or_default())
}

/// Installs `entries` (from the partner's [`persistence`]) in one
/// transaction: each into the set of its service and real server, with its
/// time left (capped at the set's timeout). An entry whose set does not
/// exist here, or that has no time left, is counted and skipped. A client
/// already remembered for that server gets the new time left.
pub fn install_persistence(entries: &[PersistEntry]) -> Result<Installed, DataplaneError> {
    let sets = read_table()?.map(|s| s.sets).unwrap_or_default();
    let mut tx = String::new();
    let done = persist::add_elements(&mut tx, entries, |set| sets.get(set).map(|s| s.timeout_ms));
    if !tx.is_empty() {
        nft::run(&["-f", "-"], Some(&tx))?;
    }
    Ok(done)
}

/// The counters of duet's table (all zero if it is absent).
pub fn counters() -> Result<Counters, DataplaneError> {
    let Some(state) = read_table()? else {
        return Ok(Counters::default());
    };
    let get = |name| state.counters.get(name).copied().unwrap_or(0);
    Ok(Counters {
        dropped_invalid: get(COUNTER_INVALID),
        dropped_untracked: get(COUNTER_UNTRACKED),
        connections: state
            .counters
            .iter()
            .filter_map(|(name, n)| render::parse_conn_counter(name).map(|vs| (vs.to_owned(), *n)))
            .collect(),
    })
}

/// Whether duet's table exists (the data plane is in place).
pub fn table_exists() -> Result<bool, DataplaneError> {
    let out = nft::run(&["list", "tables", FAMILY], None)?;
    Ok(out.lines().any(|l| l.trim() == format!("table {FAMILY} {TABLE}")))
}

/// The parsed listing of duet's table, `None` if it does not exist.
fn read_table() -> Result<Option<TableState>, DataplaneError> {
    let args = ["-j", "list", "table", FAMILY, TABLE];
    let json = match nft::run(&args, None) {
        Ok(json) => json,
        // Absent (ENOENT) or a real failure: tell them apart by asking.
        Err(e) => return if table_exists()? { Err(e) } else { Ok(None) },
    };
    persist::parse_table(&json).map(Some).map_err(|source| DataplaneError::Output { command: args.join(" "), source })
}

#[cfg(test)]
mod tests {
    use duet_proto::config::v1 as pb;

    #[test]
    fn a_protobuf_image_is_refused_by_the_models_rules_naming_every_field() {
        let vs = |name: &str, port: u32, address: &str, weight: u32| pb::VirtualService {
            name: name.into(),
            address: "198.18.0.10".into(),
            port,
            protocol: pb::Protocol::Tcp as i32,
            scheduler: pb::Scheduler::RoundRobin as i32,
            real_servers: vec![pb::RealServer { address: address.into(), port: 80, weight, enabled: true }],
            persistence: None,
            enabled: true,
        };
        let image = |vss| pb::Image { generation: 3, hash: "ab".into(), virtual_services: vss, ..Default::default() };
        let e: Vec<String> = super::render(&image(vec![vs("web", 80, "198.19.0.1; flush ruleset", 1)]))
            .unwrap_err()
            .iter()
            .map(ToString::to_string)
            .collect();
        assert_eq!(
            e,
            ["virtual_services[web].real_servers[0].address: \"198.19.0.1; flush ruleset\" is not an IPv4 address"]
        );
        let e: Vec<String> =
            super::render(&image(vec![vs("web", 0, "198.19.0.1", 1001), vs("web", 81, "198.19.0.1", 1)]))
                .unwrap_err()
                .iter()
                .map(ToString::to_string)
                .collect();
        for want in [
            "virtual_services[web].port: 0 is not a port",
            "virtual_services[web].real_servers[0].weight: 1001 is too high",
            "virtual_services[web].name: \"web\" is used by two virtual services",
        ] {
            assert!(e.iter().any(|x| x.starts_with(want)), "missing {want:?} in {e:#?}");
        }
        let r = super::render(&image(vec![vs("web", 80, "198.19.0.1", 1)])).unwrap();
        assert_eq!((r.generation(), r.image_hash(), r.services().len()), (3, "ab", 1));
    }
}
