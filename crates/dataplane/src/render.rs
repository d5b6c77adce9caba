//! The nftables ruleset for an image: pure text, no kernel.
//!
//! Everything duet programs lives in one table, `table ip duet`, rebuilt
//! whole on every apply. For each enabled virtual service with at least one
//! usable real server (enabled, weight > 0) it holds:
//!
//! - a rule in the nat `prerouting` chain (priority dstnat) that sends new
//!   connections to `address:port/protocol` into the service chain
//!   `svc_<vs>` (a nat chain only ever sees the first packet of a
//!   connection; conntrack applies the translation to the rest);
//! - in `svc_<vs>`: a counter `conn_<vs>` of new connections, then with
//!   source-address persistence one lookup per real server in its
//!   persistence set (`ip saddr @p_<vs>_<addr>_<port> goto rs_...`), then
//!   the scheduler, a `vmap` from a number to the real servers' chains;
//! - per real server a chain `rs_<vs>_<addr>_<port>` that (with persistence)
//!   refreshes the client in the server's set (`update`, which also resets
//!   its timeout) and DNATs to the server.
//!
//! Schedulers, as programmed (nftables has no connection counts):
//!
//! | image                  | nftables                                                         |
//! |------------------------|------------------------------------------------------------------|
//! | `ROUND_ROBIN`          | `numgen inc mod <n>`: one slot per usable server, weights ignored |
//! | `WEIGHTED_ROUND_ROBIN` | `numgen inc mod <total weight>`: `weight` consecutive slots each   |
//! | `SOURCE_HASH`          | `jhash ip saddr mod <total weight> seed 0x64756574`, by weight    |
//! | `LEAST_CONNECTION`     | not expressible: weighted round robin, with a warning             |
//!
//! `numgen inc` is a counter per rule, so round robin is exact on one unit
//! (weights 1 and 3 give a, b, b, b, a, b, b, b, ...) and restarts at 0 on
//! every apply. The hash seed is fixed so both units send a client to the
//! same server.
//!
//! Strict state, in filter chains at priority 0:
//!
//! - `forward`: `ct state invalid` and `ct state untracked` dropped (named
//!   counters `drop_invalid`, `drop_untracked`), established and related
//!   accepted, new DNATed connections to a real server counted and
//!   accepted. The policy is accept: other forwarded traffic is not duet's
//!   to judge (another table may still drop it).
//! - `input`: packets to a virtual service's endpoint that reach the unit
//!   itself were not DNATed. Invalid and untracked ones are dropped (a stray
//!   mid-stream segment is not answered with a reset, so a client that
//!   fails over keeps its connection if the state arrives); the rest are
//!   refused (TCP reset, ICMP port unreachable), so no local process ever
//!   answers on a service endpoint, also when a service has no usable
//!   server.
//!
//! What makes a mid-stream TCP segment without a conntrack entry invalid
//! (instead of being picked up and sent to a random server) is the sysctl
//! `net.netfilter.nf_conntrack_tcp_loose=0`; see [`crate::set_sysctls`].
//!
//! Names: virtual service names are 1-64 of `A-Z a-z 0-9 - _ .`, all valid in
//! nft identifiers after a letter prefix, so the names are the image's
//! names. A persistence set's name says which service and real server it is
//! for, `p_<vs>_<addr>_<port>`, so [`crate::persistence`] can read the
//! kernel alone; `<vs>` may itself hold `_`, and the name is split from the
//! right.
//!
//! Over 600 lines: the whole ruleset is one pure function of the image, and
//! about half the file is its tests (rendered text compared rule by rule).

use std::collections::HashSet;
use std::fmt::{self, Write as _};
use std::net::{Ipv4Addr, SocketAddrV4};

use duet_model::{PersistenceMode, Problem, Protocol, Scheduler, VirtualService};

/// The nftables family of duet's table.
pub const FAMILY: &str = "ip";
/// The name of duet's table; no other table is ever touched.
pub const TABLE: &str = "duet";
/// Maximum number of clients in one real server's persistence set. When it
/// is full, new clients are still scheduled but not remembered (the
/// `update` rule fails on its own and the DNAT rule after it still runs).
pub const PERSIST_SET_SIZE: u32 = 65_536;
/// Seed of `jhash` for `SOURCE_HASH`; fixed so both units agree.
pub const HASH_SEED: u32 = 0x6475_6574;
/// Named counter of invalid packets dropped (forward and input).
pub const COUNTER_INVALID: &str = "drop_invalid";
/// Named counter of untracked packets dropped (forward and input).
pub const COUNTER_UNTRACKED: &str = "drop_untracked";

/// How new connections of a service are spread over its real servers, as
/// programmed (see the module documentation).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Spread {
    /// `numgen inc`, one slot per server.
    RoundRobin,
    /// `numgen inc`, `weight` slots per server (also the fallback for
    /// `LEAST_CONNECTION`).
    WeightedRoundRobin,
    /// `jhash ip saddr`, `weight` slots per server.
    SourceHash,
}

/// A real server as programmed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Backend {
    pub address: SocketAddrV4,
    pub weight: u32,
}

/// A virtual service as programmed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Service {
    pub name: String,
    pub address: Ipv4Addr,
    pub port: u16,
    pub protocol: Protocol,
    pub spread: Spread,
    /// The usable real servers (enabled, weight > 0), in image order.
    pub backends: Vec<Backend>,
    /// Real servers left out: disabled or weight 0.
    pub skipped: usize,
    /// Source-address persistence timeout, if on.
    pub persistence_timeout_s: Option<u32>,
}

/// The rendered table for one image, ready for [`crate::apply`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Ruleset {
    pub(crate) generation: u64,
    pub(crate) image_hash: String,
    pub(crate) services: Vec<Service>,
    pub(crate) skipped_services: usize,
    pub(crate) warnings: Vec<Problem>,
    pub(crate) text: String,
}

impl Ruleset {
    /// Generation of the image this was rendered from.
    pub fn generation(&self) -> u64 {
        self.generation
    }

    /// Content hash of the image this was rendered from.
    pub fn image_hash(&self) -> &str {
        &self.image_hash
    }

    /// The services programmed.
    pub fn services(&self) -> &[Service] {
        &self.services
    }

    /// Disabled virtual services, left out.
    pub fn skipped_services(&self) -> usize {
        self.skipped_services
    }

    /// What is programmed differently from what the image asks.
    pub fn warnings(&self) -> &[Problem] {
        &self.warnings
    }

    /// The table definition in nft syntax (`table ip duet { ... }`).
    pub fn text(&self) -> &str {
        &self.text
    }

    /// Number of real servers programmed, over all services.
    pub fn backend_count(&self) -> usize {
        self.services.iter().map(|s| s.backends.len()).sum()
    }

    /// Appends raw nft input after the table definition. Only for tests of
    /// nft's transaction semantics (an apply that the kernel refuses);
    /// nothing else should ever need it.
    #[doc(hidden)]
    pub fn append_raw_for_tests(&mut self, nft: &str) {
        self.text.push_str(nft);
        self.text.push('\n');
    }

    /// The persistence sets: (set name, service, real server, timeout).
    pub(crate) fn persist_sets(&self) -> impl Iterator<Item = (String, &Service, &Backend, u32)> {
        self.services.iter().flat_map(|s| {
            s.persistence_timeout_s
                .into_iter()
                .flat_map(move |t| s.backends.iter().map(move |b| (persist_set_name(&s.name, b.address), s, b, t)))
        })
    }
}

impl fmt::Display for Ruleset {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.text)
    }
}

/// Name of the persistence set of real server `rs` in service `vs`.
pub(crate) fn persist_set_name(vs: &str, rs: SocketAddrV4) -> String {
    format!("p_{vs}_{}_{}", rs.ip(), rs.port())
}

/// Service and real server of a persistence set's name, if it is one.
pub(crate) fn parse_persist_set_name(name: &str) -> Option<(String, SocketAddrV4)> {
    let rest = name.strip_prefix("p_")?;
    let mut parts = rest.rsplitn(3, '_');
    let port: u16 = parts.next()?.parse().ok()?;
    let addr: Ipv4Addr = parts.next()?.parse().ok()?;
    let vs = parts.next()?;
    valid_name(vs).then(|| (vs.to_owned(), SocketAddrV4::new(addr, port)))
}

fn service_chain(vs: &str) -> String {
    format!("svc_{vs}")
}

fn backend_chain(vs: &str, rs: SocketAddrV4) -> String {
    format!("rs_{vs}_{}_{}", rs.ip(), rs.port())
}

fn conn_counter(vs: &str) -> String {
    format!("conn_{vs}")
}

/// Name of the counter of new connections of service `vs`.
pub(crate) fn parse_conn_counter(name: &str) -> Option<&str> {
    name.strip_prefix("conn_").filter(|vs| valid_name(vs))
}

/// A name safe to splice into nft identifiers after a letter prefix: the
/// model's rule for virtual service names.
fn valid_name(name: &str) -> bool {
    VirtualService::usable_name(name)
}

/// Renders the table for `services` (validated by the model, e.g. a
/// generation's [`duet_model::ImageContent`]) of the image `generation`
/// with content hash `image_hash`: the enabled services with their usable
/// real servers, plus the strict-state chains (also without services).
///
/// Pure: no kernel involved, and no validation: what the validators allow,
/// the data plane programs, with a warning where nftables cannot do
/// exactly what is asked. Addresses and ports are typed, so only names are
/// text: a service whose name is not usable (which the validators never
/// let through) is left out with a warning, so that nothing can ever
/// inject nft syntax.
pub fn ruleset(generation: u64, image_hash: &str, services: &[VirtualService]) -> Ruleset {
    let mut warnings = Vec::new();
    let mut programmed = Vec::new();
    let mut skipped_services = 0;
    for vs in services {
        if !vs.enabled {
            skipped_services += 1;
            continue;
        }
        if !valid_name(&vs.name) {
            warnings.push(Problem::new(
                format!("virtual_services[{}]", vs.name.escape_debug()),
                "not a usable name: left out (an image that passed validation never has one)",
            ));
            skipped_services += 1;
            continue;
        }
        programmed.push(program(vs, &mut warnings));
    }
    let text = table_text(generation, image_hash, &programmed);
    Ruleset { generation, image_hash: image_hash.to_owned(), services: programmed, skipped_services, warnings, text }
}

fn warning(vs: &str, field: &str, message: impl Into<String>) -> Problem {
    Problem::new(format!("virtual_services[{vs}].{field}"), message)
}

/// One enabled service as programmed, with its warnings.
fn program(vs: &VirtualService, warnings: &mut Vec<Problem>) -> Service {
    let id = vs.name.as_str();
    let spread = match vs.scheduler {
        Scheduler::RoundRobin => Spread::RoundRobin,
        Scheduler::WeightedRoundRobin => Spread::WeightedRoundRobin,
        Scheduler::SourceHash => Spread::SourceHash,
        Scheduler::LeastConnection => {
            warnings.push(warning(
                id,
                "scheduler",
                "LEAST_CONNECTION cannot be expressed in nftables (no connection counts): \
                 programmed as WEIGHTED_ROUND_ROBIN",
            ));
            Spread::WeightedRoundRobin
        }
    };
    let persistence_timeout_s = match vs.persistence.mode {
        PersistenceMode::SourceAddress => Some(vs.persistence.timeout_s),
        PersistenceMode::Cookie => {
            warnings.push(warning(
                id,
                "persistence.mode",
                "cookie persistence is layer 7 and not done by the L4 data plane: no persistence programmed",
            ));
            None
        }
        PersistenceMode::None => None,
    };
    let mut backends = Vec::new();
    let mut skipped = 0;
    let mut seen = HashSet::new();
    for rs in &vs.real_servers {
        let address = SocketAddrV4::new(rs.address, rs.port);
        // Validated unique; a repeat would only be a second, dead vmap arm.
        if !rs.enabled || rs.weight == 0 || !seen.insert(address) {
            skipped += 1;
            continue;
        }
        backends.push(Backend { address, weight: rs.weight });
    }
    if backends.is_empty() {
        warnings.push(warning(
            id,
            "real_servers",
            format!(
                "no enabled real server with weight > 0: connections to {}:{} are refused (TCP reset, \
                 ICMP port unreachable)",
                vs.address, vs.port
            ),
        ));
    }
    Service {
        name: vs.name.clone(),
        address: vs.address,
        port: vs.port,
        protocol: vs.protocol,
        spread,
        backends,
        skipped,
        persistence_timeout_s,
    }
}

/// Slots per backend for the scheduler's `mod`.
fn slots(spread: Spread, b: &Backend) -> u32 {
    match spread {
        Spread::RoundRobin => 1,
        Spread::WeightedRoundRobin | Spread::SourceHash => b.weight,
    }
}

fn table_text(generation: u64, image_hash: &str, services: &[Service]) -> String {
    // `writeln!` into a String cannot fail.
    let mut t = String::new();
    let hash = if image_hash.chars().all(|c| c.is_ascii_alphanumeric()) { image_hash } else { "?" };
    let _ = writeln!(t, "table {FAMILY} {TABLE} {{");
    let _ = writeln!(t, "\tcomment \"duet generation {generation} image {hash}\"");
    for counter in [COUNTER_INVALID, COUNTER_UNTRACKED] {
        let _ = writeln!(t, "\tcounter {counter} {{\n\t}}");
    }
    for s in services {
        let _ = writeln!(t, "\tcounter {} {{\n\t}}", conn_counter(&s.name));
    }

    // Endpoints of the services and their real servers, for the filter
    // chains.
    let endpoint_set = |t: &mut String, name: &str, elems: Vec<String>| {
        let _ = writeln!(t, "\tset {name} {{\n\t\ttype ipv4_addr . inet_proto . inet_service");
        if !elems.is_empty() {
            let _ = writeln!(t, "\t\telements = {{ {} }}", elems.join(", "));
        }
        let _ = writeln!(t, "\t}}");
    };
    let vips = services.iter().map(|s| format!("{} . {} . {}", s.address, s.protocol.as_str(), s.port)).collect();
    endpoint_set(&mut t, "vips", vips);
    let mut seen = HashSet::new();
    let backends = services
        .iter()
        .flat_map(|s| s.backends.iter().map(move |b| (b.address, s.protocol)))
        .filter(|x| seen.insert(*x))
        .map(|(a, p)| format!("{} . {} . {}", a.ip(), p.as_str(), a.port()))
        .collect();
    endpoint_set(&mut t, "backends", backends);

    for s in services {
        let Some(timeout) = s.persistence_timeout_s else { continue };
        for b in &s.backends {
            let _ = writeln!(
                t,
                "\tset {} {{\n\t\ttype ipv4_addr\n\t\tsize {PERSIST_SET_SIZE}\n\t\tflags dynamic, timeout\n\t\t\
                 timeout {timeout}s\n\t}}",
                persist_set_name(&s.name, b.address)
            );
        }
    }

    let _ = writeln!(t, "\tchain prerouting {{\n\t\ttype nat hook prerouting priority dstnat; policy accept;");
    for s in services.iter().filter(|s| !s.backends.is_empty()) {
        let _ = writeln!(
            t,
            "\t\tip daddr {} {} dport {} jump {}",
            s.address,
            s.protocol.as_str(),
            s.port,
            service_chain(&s.name)
        );
    }
    let _ = writeln!(t, "\t}}");

    for s in services.iter().filter(|s| !s.backends.is_empty()) {
        let _ = writeln!(t, "\tchain {} {{", service_chain(&s.name));
        let _ = writeln!(t, "\t\tcounter name {}", conn_counter(&s.name));
        if s.persistence_timeout_s.is_some() {
            for b in &s.backends {
                let _ = writeln!(
                    t,
                    "\t\tip saddr @{} goto {}",
                    persist_set_name(&s.name, b.address),
                    backend_chain(&s.name, b.address)
                );
            }
        }
        let _ = writeln!(t, "\t\t{}", scheduler_rule(s));
        let _ = writeln!(t, "\t}}");
        for b in &s.backends {
            let _ = writeln!(t, "\tchain {} {{", backend_chain(&s.name, b.address));
            if s.persistence_timeout_s.is_some() {
                // A rule of its own: when the set is full the update fails
                // and ends only this rule, the DNAT below still runs.
                let _ = writeln!(t, "\t\tupdate @{} {{ ip saddr }}", persist_set_name(&s.name, b.address));
            }
            let _ = writeln!(t, "\t\tmeta l4proto {} dnat to {}", s.protocol.as_str(), b.address);
            let _ = writeln!(t, "\t}}");
        }
    }

    let endpoint = "ip daddr . meta l4proto . th dport @vips";
    let _ = writeln!(t, "\tchain input {{\n\t\ttype filter hook input priority filter; policy accept;");
    let _ = writeln!(t, "\t\t{endpoint} ct state invalid counter name {COUNTER_INVALID} drop");
    let _ = writeln!(t, "\t\t{endpoint} ct state untracked counter name {COUNTER_UNTRACKED} drop");
    let _ = writeln!(t, "\t\tmeta l4proto tcp {endpoint} reject with tcp reset");
    let _ = writeln!(t, "\t\t{endpoint} reject");
    let _ = writeln!(t, "\t}}");

    let _ = writeln!(t, "\tchain forward {{\n\t\ttype filter hook forward priority filter; policy accept;");
    let _ = writeln!(t, "\t\tct state invalid counter name {COUNTER_INVALID} drop");
    let _ = writeln!(t, "\t\tct state untracked counter name {COUNTER_UNTRACKED} drop");
    let _ = writeln!(t, "\t\tct state established,related accept");
    let _ = writeln!(t, "\t\tct state new ct status dnat ip daddr . meta l4proto . th dport @backends counter accept");
    let _ = writeln!(t, "\t}}");
    let _ = writeln!(t, "}}");
    t
}

/// The last rule of a service chain: a `goto` to the real server's chain,
/// chosen by the scheduler.
fn scheduler_rule(s: &Service) -> String {
    if let [only] = s.backends.as_slice() {
        return format!("goto {}", backend_chain(&s.name, only.address));
    }
    let mut next = 0u32;
    let arms: Vec<String> = s
        .backends
        .iter()
        .map(|b| {
            let (lo, n) = (next, slots(s.spread, b));
            next += n;
            let range = if n == 1 { lo.to_string() } else { format!("{lo}-{}", lo + n - 1) };
            format!("{range} : goto {}", backend_chain(&s.name, b.address))
        })
        .collect();
    let key = match s.spread {
        Spread::RoundRobin | Spread::WeightedRoundRobin => format!("numgen inc mod {next}"),
        Spread::SourceHash => format!("jhash ip saddr mod {next} seed {HASH_SEED:#x}"),
    };
    format!("{key} vmap {{ {} }}", arms.join(", "))
}

#[cfg(test)]
mod tests {
    use duet_model::{Persistence, RealServer};

    use super::*;

    fn rs(address: &str, weight: u32, enabled: bool) -> RealServer {
        RealServer { address: address.parse().unwrap(), port: 80, weight, enabled }
    }

    fn web(scheduler: Scheduler, real_servers: Vec<RealServer>) -> VirtualService {
        VirtualService {
            name: "web".into(),
            address: Ipv4Addr::new(198, 18, 0, 10),
            port: 80,
            protocol: Protocol::Tcp,
            scheduler,
            real_servers,
            persistence: Persistence::default(),
            enabled: true,
        }
    }

    fn render(vss: &[VirtualService]) -> Ruleset {
        ruleset(7, "ab12", vss)
    }

    fn lines(r: &Ruleset) -> Vec<&str> {
        r.text().lines().map(str::trim).collect()
    }

    #[test]
    fn weighted_round_robin_gives_each_server_its_weight_in_slots() {
        let r = render(&[web(
            Scheduler::WeightedRoundRobin,
            vec![rs("198.19.0.101", 1, true), rs("198.19.0.102", 3, true)],
        )]);
        let l = lines(&r);
        assert!(l.contains(&"ip daddr 198.18.0.10 tcp dport 80 jump svc_web"), "{}", r.text());
        assert!(
            l.contains(&"numgen inc mod 4 vmap { 0 : goto rs_web_198.19.0.101_80, 1-3 : goto rs_web_198.19.0.102_80 }"),
            "{}",
            r.text()
        );
        assert!(l.contains(&"meta l4proto tcp dnat to 198.19.0.102:80"));
        assert!(l.contains(&"comment \"duet generation 7 image ab12\""));
        assert!(!r.text().contains("update @"), "no persistence asked");
        assert_eq!((r.generation(), r.image_hash(), r.backend_count()), (7, "ab12", 2));
        assert!(r.warnings().is_empty());
    }

    #[test]
    fn round_robin_ignores_weights_and_source_hash_uses_them() {
        let servers = vec![rs("198.19.0.101", 5, true), rs("198.19.0.102", 2, true)];
        let r = render(&[web(Scheduler::RoundRobin, servers.clone())]);
        assert!(r.text().contains("numgen inc mod 2 vmap { 0 : goto rs_web_198.19.0.101_80, 1 : goto"), "{r}");
        let r = render(&[web(Scheduler::SourceHash, servers)]);
        assert!(
            r.text().contains("jhash ip saddr mod 7 seed 0x64756574 vmap { 0-4 : goto rs_web_198.19.0.101_80, 5-6")
        );
    }

    #[test]
    fn disabled_and_drained_servers_and_disabled_services_are_left_out() {
        let mut off = web(Scheduler::RoundRobin, vec![rs("198.19.0.200", 1, true)]);
        off.name = "off".into();
        off.enabled = false;
        let r = render(&[
            web(
                Scheduler::WeightedRoundRobin,
                vec![rs("198.19.0.101", 0, true), rs("198.19.0.102", 3, false), rs("198.19.0.103", 2, true)],
            ),
            off,
        ]);
        assert!(!r.text().contains("198.19.0.101") && !r.text().contains("198.19.0.102"), "{r}");
        assert!(!r.text().contains("198.19.0.200") && !r.text().contains("svc_off"), "{r}");
        // One usable server: no scheduler, straight to it.
        assert!(lines(&r).contains(&"goto rs_web_198.19.0.103_80"), "{r}");
        assert_eq!(r.services()[0].skipped, 2);
        assert_eq!(r.skipped_services(), 1);
    }

    #[test]
    fn source_persistence_gets_a_set_per_server_checked_before_the_scheduler() {
        let mut vs = web(Scheduler::RoundRobin, vec![rs("198.19.0.101", 1, true), rs("198.19.0.102", 1, true)]);
        vs.persistence = Persistence { mode: PersistenceMode::SourceAddress, timeout_s: 600, cookie: String::new() };
        let r = render(&[vs]);
        let t = r.text();
        assert!(t.contains(
            "\tset p_web_198.19.0.101_80 {\n\t\ttype ipv4_addr\n\t\tsize 65536\n\t\tflags dynamic, timeout\n\t\t\
             timeout 600s\n\t}"
        ));
        let l = lines(&r);
        let lookup = l.iter().position(|x| *x == "ip saddr @p_web_198.19.0.102_80 goto rs_web_198.19.0.102_80");
        let sched = l.iter().position(|x| x.starts_with("numgen inc mod 2"));
        assert!(lookup.unwrap() < sched.unwrap(), "{t}");
        assert!(l.contains(&"update @p_web_198.19.0.101_80 { ip saddr }"));
        let sets: Vec<_> = r.persist_sets().map(|(n, ..)| n).collect();
        assert_eq!(sets, ["p_web_198.19.0.101_80", "p_web_198.19.0.102_80"]);
    }

    #[test]
    fn strict_state_chains_are_there_even_without_services() {
        let r = render(&[]);
        let l = lines(&r);
        for want in [
            "type filter hook forward priority filter; policy accept;",
            "ct state invalid counter name drop_invalid drop",
            "ct state untracked counter name drop_untracked drop",
            "ct state established,related accept",
            "ip daddr . meta l4proto . th dport @vips ct state invalid counter name drop_invalid drop",
            "meta l4proto tcp ip daddr . meta l4proto . th dport @vips reject with tcp reset",
        ] {
            assert!(l.contains(&want), "missing {want:?} in\n{r}");
        }
    }

    #[test]
    fn unsupported_choices_are_warnings() {
        let mut vs = web(Scheduler::LeastConnection, vec![rs("198.19.0.101", 2, true), rs("198.19.0.102", 1, true)]);
        vs.persistence = Persistence { mode: PersistenceMode::Cookie, timeout_s: 60, cookie: "SRV".into() };
        let mut empty = web(Scheduler::RoundRobin, vec![rs("198.19.0.101", 0, true)]);
        empty.name = "empty".into();
        empty.port = 81;
        let r = render(&[vs, empty]);
        let w: Vec<String> = r.warnings().iter().map(ToString::to_string).collect();
        assert_eq!(w.len(), 3, "{w:?}");
        assert!(w[0].starts_with("virtual_services[web].scheduler: LEAST_CONNECTION cannot"), "{w:?}");
        assert!(w[1].starts_with("virtual_services[web].persistence.mode: cookie"), "{w:?}");
        assert!(w[2].starts_with("virtual_services[empty].real_servers: no enabled real server"), "{w:?}");
        assert!(r.text().contains("numgen inc mod 3 vmap"), "LC falls back to WRR: {r}");
        assert!(!r.text().contains("svc_empty"), "{r}");
        assert!(r.text().contains("198.18.0.10 . tcp . 81"), "the empty service's endpoint is still refused");
    }

    #[test]
    fn a_name_that_could_inject_syntax_is_left_out() {
        // The validators refuse such a name (and addresses and ports are
        // typed); this is the guard behind them.
        let mut bad = web(Scheduler::RoundRobin, vec![rs("198.19.0.1", 1, true)]);
        bad.name = "web } flush ruleset".into();
        let mut good = web(Scheduler::RoundRobin, vec![rs("198.19.0.2", 1, true)]);
        good.name = "ok".into();
        let r = render(&[bad, good]);
        assert!(!r.text().contains("flush"), "{r}");
        assert_eq!((r.services().len(), r.skipped_services()), (1, 1));
        assert!(r.warnings()[0].to_string().starts_with("virtual_services[web } flush ruleset]: not a usable name"));
    }

    #[test]
    fn set_names_round_trip_even_with_underscores_and_dots() {
        let rs = SocketAddrV4::new(Ipv4Addr::new(198, 19, 0, 101), 8080);
        for vs in ["web", "a_b_1.2.3.4_80", "x-y.z", "9"] {
            assert_eq!(parse_persist_set_name(&persist_set_name(vs, rs)), Some((vs.to_owned(), rs)), "{vs}");
        }
        for other in ["vips", "p_", "p_web_1.2.3.4", "p__1.2.3.4_80", "p_web_1.2.3.4_x", "p_w b_1.2.3.4_80"] {
            assert_eq!(parse_persist_set_name(other), None, "{other}");
        }
    }
}
