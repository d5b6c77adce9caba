//! The data plane against a real kernel and nft, in throw-away network
//! namespaces (duet-testkit). Needs root; without it each test says so and
//! passes, unless `CI` is set.
//!
//! The lab is a two-arm load balancer:
//!
//! ```text
//!  client 198.18.0.100 ──lan── unit1 eth0 198.18.0.1 + shared 198.18.0.10
//!                        │      unit1 eth1 198.19.0.1 + shared 198.19.0.10 ──srv── rs1 198.19.0.101
//!                        └──── unit2 eth0 198.18.0.2                          ├──── rs2 198.19.0.102
//!                               unit2 eth1 198.19.0.2 ───────────────────────┴──── rs3 198.19.0.103
//! ```
//!
//! The client's default route is via 198.18.0.10, the real servers' via
//! 198.19.0.10, so whichever unit holds the shared addresses carries the
//! traffic both ways. Each real server runs a tiny TCP server on port 80 (a
//! thread of this process, its socket opened inside the server's
//! namespace) that answers with its name and closes. The data plane's
//! functions are called on a thread inside a unit (`in_netns`); the `nft`
//! they spawn inherits that namespace.

use std::collections::BTreeMap;
use std::io::{ErrorKind, Read, Write};
use std::net::{Ipv4Addr, SocketAddr, SocketAddrV4, TcpListener, TcpStream};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::thread::{self, JoinHandle};
use std::time::Duration;

use anyhow::{Context, Result, bail};
use duet_dataplane::{
    Applied, DataplaneError, Installed, PersistEntry, Ruleset, apply, counters, install_persistence, persistence,
    remove, render, set_sysctls,
};
use duet_proto::config::v1::{Image, Persistence, PersistenceMode, Protocol, RealServer, Scheduler, VirtualService};
use duet_testkit::{HostId, Lab, in_netns, when_root};
use socket2::{Domain, Protocol as SockProtocol, SockAddr, Socket, Type};

const VIP: Ipv4Addr = Ipv4Addr::new(198, 18, 0, 10);
const CLIENT: Ipv4Addr = Ipv4Addr::new(198, 18, 0, 100);
const IO_TIMEOUT: Duration = Duration::from_secs(3);

struct Hosts {
    client: HostId,
    unit1: HostId,
    unit2: HostId,
    rs: [HostId; 3],
}

/// The lab of the module documentation for `test` (`None`: skipped), its
/// real servers answering.
fn two_arm_lab(test: &str, tag: &str) -> Result<Option<(Lab, Hosts, Vec<NameServer>)>> {
    when_root(test, || {
        let (lab, h) = build_two_arm_lab(tag)?;
        let servers = start_servers(&lab, &h)?;
        Ok((lab, h, servers))
    })
}

fn build_two_arm_lab(tag: &str) -> Result<(Lab, Hosts)> {
    let mut lab = Lab::new(tag)?;
    let lan = lab.segment("lan")?;
    let srv = lab.segment("srv")?;
    let client = lab.host("client")?;
    lab.attach(client, lan, "eth0", &["198.18.0.100/24"])?;
    lab.run(client, &["ip", "route", "add", "default", "via", "198.18.0.10"])?;
    let unit1 = lab.host("unit1")?;
    lab.attach(unit1, lan, "eth0", &["198.18.0.1/24", "198.18.0.10/24"])?;
    lab.attach(unit1, srv, "eth1", &["198.19.0.1/24", "198.19.0.10/24"])?;
    let unit2 = lab.host("unit2")?;
    lab.attach(unit2, lan, "eth0", &["198.18.0.2/24"])?;
    lab.attach(unit2, srv, "eth1", &["198.19.0.2/24"])?;
    let mut rs = Vec::new();
    for i in 1..=3 {
        let h = lab.host(&format!("rs{i}"))?;
        lab.attach(h, srv, "eth0", &[&format!("198.19.0.10{i}/24")])?;
        lab.run(h, &["ip", "route", "add", "default", "via", "198.19.0.10"])?;
        rs.push(h);
    }
    let rs = [rs[0], rs[1], rs[2]];
    Ok((lab, Hosts { client, unit1, unit2, rs }))
}

/// Runs `f` on a thread inside `host`.
fn on<T: Send + 'static>(lab: &Lab, host: HostId, f: impl FnOnce() -> T + Send + 'static) -> Result<T> {
    Ok(in_netns(&lab.ns(host), f)?)
}

/// A TCP server on port 80 of a real server that writes `name` to each
/// connection and closes it. Stops when dropped.
struct NameServer {
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

impl NameServer {
    fn start(lab: &Lab, host: HostId, name: &'static str) -> Result<Self> {
        let listener = on(lab, host, || TcpListener::bind("0.0.0.0:80"))??;
        listener.set_nonblocking(true)?;
        let stop = Arc::new(AtomicBool::new(false));
        let flag = stop.clone();
        let thread = thread::spawn(move || {
            while !flag.load(Ordering::Relaxed) {
                match listener.accept() {
                    Ok((mut s, _)) => {
                        let _ = s.set_nonblocking(false);
                        let _ = s.write_all(name.as_bytes());
                    }
                    Err(e) if e.kind() == ErrorKind::WouldBlock => thread::sleep(Duration::from_millis(1)),
                    Err(_) => thread::sleep(Duration::from_millis(10)),
                }
            }
        });
        Ok(Self { stop, thread: Some(thread) })
    }
}

impl Drop for NameServer {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

fn start_servers(lab: &Lab, h: &Hosts) -> Result<Vec<NameServer>> {
    ["rs1", "rs2", "rs3"].iter().zip(h.rs).map(|(name, host)| NameServer::start(lab, host, name)).collect()
}

/// Opens `n` connections from the client to the virtual service, one after
/// the other, and counts who answered (`error` for failures).
fn connect_many(lab: &Lab, h: &Hosts, n: usize) -> Result<BTreeMap<String, usize>> {
    on(lab, h.client, move || {
        let mut seen = BTreeMap::new();
        for _ in 0..n {
            let who = (|| -> std::io::Result<String> {
                let mut s = TcpStream::connect_timeout(&SocketAddr::from((VIP, 80)), IO_TIMEOUT)?;
                s.set_read_timeout(Some(IO_TIMEOUT))?;
                let mut who = String::new();
                s.read_to_string(&mut who)?;
                Ok(who)
            })()
            .unwrap_or_else(|_| "error".to_owned());
            *seen.entry(who).or_insert(0) += 1;
        }
        seen
    })
}

/// Real server `rs<i>`, 198.19.0.10`<i>` port 80.
fn real_server(i: u8, weight: u32, enabled: bool) -> RealServer {
    RealServer { address: format!("198.19.0.10{i}"), port: 80, weight, enabled }
}

fn image(generation: u64, scheduler: Scheduler, servers: Vec<RealServer>, persistence_s: Option<u32>) -> Image {
    Image {
        generation,
        hash: format!("{generation:064x}"),
        virtual_services: vec![VirtualService {
            name: "web".into(),
            address: VIP.to_string(),
            port: 80,
            protocol: Protocol::Tcp as i32,
            scheduler: scheduler as i32,
            real_servers: servers,
            persistence: persistence_s.map(|timeout_s| Persistence {
                mode: PersistenceMode::SourceAddress as i32,
                timeout_s,
                cookie: String::new(),
            }),
            enabled: true,
        }],
        ..Default::default()
    }
}

/// The ruleset of `image`.
fn rendered(image: &Image) -> Result<Ruleset> {
    render(image).map_err(|e| anyhow::anyhow!("{e:?}"))
}

/// The ruleset of [`image`]`(generation, ...)`.
fn ruleset(
    generation: u64,
    scheduler: Scheduler,
    servers: Vec<RealServer>,
    persistence_s: Option<u32>,
) -> Result<Ruleset> {
    rendered(&image(generation, scheduler, servers, persistence_s))
}

fn apply_on(lab: &Lab, host: HostId, ruleset: &Ruleset) -> Result<Result<Applied, DataplaneError>> {
    let r = ruleset.clone();
    on(lab, host, move || apply(&r))
}

fn count(seen: &BTreeMap<String, usize>, who: &str) -> usize {
    seen.get(who).copied().unwrap_or(0)
}

/// `nft list table ip duet` in `host`.
fn listing(lab: &Lab, host: HostId) -> Result<String> {
    Ok(lab.run(host, &["nft", "list", "table", "ip", "duet"])?)
}

#[test]
fn weights_drained_and_disabled_servers_changes_and_a_refused_apply() -> Result<()> {
    let Some((lab, h, _servers)) =
        two_arm_lab("weights_drained_and_disabled_servers_changes_and_a_refused_apply", "dpweights")?
    else {
        return Ok(());
    };
    // Someone else's table: duet must never touch it.
    lab.run(h.unit1, &["nft", "add table ip other; add chain ip other c { type filter hook input priority 10; }"])?;

    // Weights 1 and 3, rs3 drained (weight 0).
    let mut servers = vec![real_server(1, 1, true), real_server(2, 3, true), real_server(3, 0, true)];
    let one = ruleset(1, Scheduler::WeightedRoundRobin, servers.clone(), None)?;
    let applied = apply_on(&lab, h.unit1, &one)??;
    assert_eq!((applied.generation, applied.services, applied.real_servers), (1, 1, 2), "{applied:?}");
    let sysctls = on(&lab, h.unit1, set_sysctls)??;

    let seen = connect_many(&lab, &h, 200)?;
    eprintln!("weights 1:3:0 over 200 connections: {seen:?}");
    assert_eq!(count(&seen, "error"), 0, "{seen:?}");
    assert!((30..=70).contains(&count(&seen, "rs1")), "rs1 (weight 1) {seen:?}");
    assert!((130..=170).contains(&count(&seen, "rs2")), "rs2 (weight 3) {seen:?}");
    assert_eq!(count(&seen, "rs3"), 0, "a drained server gets nothing: {seen:?}");
    let c = on(&lab, h.unit1, counters)??;
    assert_eq!(c.connections.get("web"), Some(&200), "{c:?}");

    // A changed image: rs2 disabled, rs3 still drained; all to rs1.
    servers[1].enabled = false;
    let two = ruleset(2, Scheduler::WeightedRoundRobin, servers, None)?;
    let applied = apply_on(&lab, h.unit1, &two)??;
    assert_eq!((applied.generation, applied.real_servers), (2, 1));
    let seen = connect_many(&lab, &h, 30)?;
    assert_eq!(count(&seen, "rs1"), 30, "only rs1 is usable now: {seen:?}");

    // Refused applies change nothing: one that the kernel refuses (a jump
    // to a chain that does not exist: ENOENT, after nft's own checks
    // passed), one that nft cannot parse.
    let before = listing(&lab, h.unit1)?;
    let mut three = ruleset(3, Scheduler::RoundRobin, vec![real_server(3, 1, true)], None)?;
    let mut unparsable = three.clone();
    three.append_raw_for_tests("add rule ip duet prerouting jump no_such_chain");
    unparsable.append_raw_for_tests("this is not nft");
    for bad in [&three, &unparsable] {
        match apply_on(&lab, h.unit1, bad)? {
            Err(DataplaneError::Nft { stderr, .. }) => eprintln!("refused as expected: {stderr}"),
            other => bail!("expected nft to refuse, got {other:?}"),
        }
        assert_eq!(listing(&lab, h.unit1)?, before, "a refused apply changed the table");
    }
    let seen = connect_many(&lab, &h, 10)?;
    assert_eq!(count(&seen, "rs1"), 10, "the old rules are still in force: {seen:?}");

    // The other table survived every apply, and survives removal.
    assert!(on(&lab, h.unit1, remove)??);
    assert!(!on(&lab, h.unit1, remove)??, "a second remove finds nothing");
    let tables = lab.run(h.unit1, &["nft", "list", "tables"])?;
    assert!(tables.contains("table ip other") && !tables.contains("table ip duet"), "{tables}");
    on(&lab, h.unit1, move || sysctls.restore())??;
    Ok(())
}

#[test]
fn source_persistence_sticks_survives_an_apply_and_moves_to_the_partner() -> Result<()> {
    let Some((lab, h, _servers)) =
        two_arm_lab("source_persistence_sticks_survives_an_apply_and_moves_to_the_partner", "dppersist")?
    else {
        return Ok(());
    };
    // Plain round robin alternates; persistence must override that.
    let servers = vec![real_server(1, 1, true), real_server(2, 1, true)];
    let one = ruleset(1, Scheduler::RoundRobin, servers.clone(), Some(600))?;
    for unit in [h.unit1, h.unit2] {
        apply_on(&lab, unit, &one)??;
        let _kept = on(&lab, unit, set_sysctls)??;
    }

    let seen = connect_many(&lab, &h, 20)?;
    assert_eq!(seen.len(), 1, "every connection of the client goes to one server: {seen:?}");
    let chosen = seen.keys().next().context("no answer")?.clone();
    assert!(chosen == "rs1" || chosen == "rs2", "{seen:?}");
    let chosen_addr: Ipv4Addr = if chosen == "rs1" { "198.19.0.101" } else { "198.19.0.102" }.parse()?;

    let entries = on(&lab, h.unit1, persistence)??;
    eprintln!("persistence on unit1: {entries:?}");
    let [entry] = entries.as_slice() else { bail!("expected one entry, got {entries:?}") };
    assert_eq!(
        (entry.service.as_str(), entry.real_server, entry.client),
        ("web", SocketAddrV4::new(chosen_addr, 80), CLIENT)
    );
    assert!((590_000..=600_000).contains(&entry.expires_ms), "{entry:?}");

    // A changed image (one more server) keeps the entry and the client's
    // server.
    let mut more = servers.clone();
    more.push(real_server(3, 1, true));
    let two = ruleset(2, Scheduler::RoundRobin, more, Some(600))?;
    let applied = apply_on(&lab, h.unit1, &two)??;
    assert_eq!((applied.persistence_kept, applied.persistence_dropped), (1, 0), "{applied:?}");
    let seen = connect_many(&lab, &h, 12)?;
    assert_eq!(count(&seen, &chosen), 12, "still {chosen} after the apply: {seen:?}");

    // The partner: same image, the entries installed, then it takes the
    // shared addresses over.
    apply_on(&lab, h.unit2, &two)??;
    let entries = on(&lab, h.unit1, persistence)??;
    let stale = PersistEntry { service: "gone".into(), ..entries[0].clone() };
    let mut offered = entries.clone();
    offered.push(stale);
    let installed = on(&lab, h.unit2, move || install_persistence(&offered))??;
    assert_eq!(installed, Installed { installed: 1, no_such_set: 1, expired: 0 });
    let there = on(&lab, h.unit2, persistence)??;
    assert_eq!(there.len(), 1, "{there:?}");
    assert_eq!((there[0].real_server, there[0].client), (entries[0].real_server, CLIENT));
    assert!(there[0].expires_ms + 2_000 >= entries[0].expires_ms, "time left kept: {there:?} vs {entries:?}");

    lab.run(h.unit1, &["ip", "addr", "del", "198.18.0.10/24", "dev", "eth0"])?;
    lab.run(h.unit1, &["ip", "addr", "del", "198.19.0.10/24", "dev", "eth1"])?;
    lab.run(h.unit2, &["ip", "addr", "add", "198.18.0.10/24", "dev", "eth0"])?;
    lab.run(h.unit2, &["ip", "addr", "add", "198.19.0.10/24", "dev", "eth1"])?;
    for host in [h.client, h.rs[0], h.rs[1], h.rs[2]] {
        lab.run(host, &["ip", "neigh", "flush", "all"])?;
    }
    let seen = connect_many(&lab, &h, 12)?;
    assert_eq!(count(&seen, &chosen), 12, "the partner sends the client to {chosen} too: {seen:?}");
    let c = on(&lab, h.unit2, counters)??;
    assert_eq!(c.connections.get("web"), Some(&12), "unit2 carried them: {c:?}");
    Ok(())
}

/// Packets that reached `host`'s TCP port 80, counted by a probe table
/// (created on first call).
fn probe_count(lab: &Lab, host: HostId) -> Result<u64> {
    if lab.run_status(host, &["nft", "list", "table", "ip", "probe"])?.status.success() {
        let out = lab.run(host, &["nft", "list", "chain", "ip", "probe", "pre"])?;
        let n =
            out.split_whitespace().skip_while(|w| *w != "packets").nth(1).context("no counter in the probe chain")?;
        return Ok(n.parse()?);
    }
    lab.run(
        host,
        &[
            "nft",
            "add table ip probe; add chain ip probe pre { type filter hook prerouting priority -300; }; \
             add rule ip probe pre tcp dport 80 counter",
        ],
    )?;
    Ok(0)
}

/// Sends one bare TCP ACK (no handshake before it) from the client to
/// `dst:80`, from source port `sport`, through a raw socket.
fn stray_ack(lab: &Lab, h: &Hosts, dst: Ipv4Addr, sport: u16) -> Result<()> {
    on(lab, h.client, move || -> Result<()> {
        let mut tcp = [0u8; 20];
        tcp[0..2].copy_from_slice(&sport.to_be_bytes());
        tcp[2..4].copy_from_slice(&80u16.to_be_bytes());
        tcp[4..8].copy_from_slice(&0x1234_5678u32.to_be_bytes()); // seq
        tcp[8..12].copy_from_slice(&0x0abc_def0u32.to_be_bytes()); // ack
        tcp[12] = 5 << 4; // data offset: 5 words
        tcp[13] = 0x10; // ACK
        tcp[14..16].copy_from_slice(&64240u16.to_be_bytes()); // window
        let sum = checksum(CLIENT, dst, &tcp);
        tcp[16..18].copy_from_slice(&sum.to_be_bytes());
        let s = Socket::new(Domain::IPV4, Type::RAW, Some(SockProtocol::TCP))?;
        s.send_to(&tcp, &SockAddr::from(SocketAddrV4::new(dst, 0)))?;
        Ok(())
    })?
}

/// The TCP checksum over the IPv4 pseudo-header and `segment`.
fn checksum(src: Ipv4Addr, dst: Ipv4Addr, segment: &[u8]) -> u16 {
    let mut sum = 0u32;
    let mut add = |b: &[u8]| {
        for pair in b.chunks(2) {
            sum += u32::from(u16::from_be_bytes([pair[0], *pair.get(1).unwrap_or(&0)]));
        }
    };
    add(&src.octets());
    add(&dst.octets());
    add(&[0, 6]);
    add(&(segment.len() as u16).to_be_bytes());
    add(segment);
    while sum > 0xffff {
        sum = (sum & 0xffff) + (sum >> 16);
    }
    !(sum as u16)
}

#[test]
fn a_stray_mid_stream_ack_is_dropped_not_sent_to_a_server() -> Result<()> {
    let Some((lab, h, _servers)) = two_arm_lab("a_stray_mid_stream_ack_is_dropped_not_sent_to_a_server", "dpstray")?
    else {
        return Ok(());
    };
    let ruleset = ruleset(1, Scheduler::RoundRobin, vec![real_server(1, 1, true), real_server(2, 1, true)], None)?;
    apply_on(&lab, h.unit1, &ruleset)??;
    let reached = |lab: &Lab| -> Result<u64> { Ok(probe_count(lab, h.rs[0])? + probe_count(lab, h.rs[1])?) };
    assert_eq!(reached(&lab)?, 0);

    // Control: with the kernel's default (tcp_loose=1) conntrack picks the
    // ACK up as a new connection and it is DNATed to a server.
    lab.run(h.unit1, &["sysctl", "-q", "-w", "net.ipv4.ip_forward=1"])?;
    let loose = lab.run(h.unit1, &["sysctl", "-n", "net.netfilter.nf_conntrack_tcp_loose"])?;
    assert_eq!(loose.trim(), "1", "the kernel default");
    stray_ack(&lab, &h, VIP, 40001)?;
    thread::sleep(Duration::from_millis(300));
    assert_eq!(reached(&lab)?, 1, "control: with tcp_loose=1 the stray ACK reaches a server");

    // With duet's sysctls it is invalid and dropped: to the virtual
    // service (input chain) and to a real server directly (forward chain).
    let sysctls = on(&lab, h.unit1, set_sysctls)??;
    let before = on(&lab, h.unit1, counters)??;
    stray_ack(&lab, &h, VIP, 40002)?;
    stray_ack(&lab, &h, "198.19.0.101".parse()?, 40003)?;
    thread::sleep(Duration::from_millis(300));
    assert_eq!(reached(&lab)?, 1, "the stray ACKs must not reach a server");
    let after = on(&lab, h.unit1, counters)??;
    assert_eq!(after.dropped_invalid - before.dropped_invalid, 2, "{before:?} -> {after:?}");
    // Real connections still work.
    let seen = connect_many(&lab, &h, 4)?;
    assert_eq!((count(&seen, "rs1"), count(&seen, "rs2")), (2, 2), "{seen:?}");

    // Teardown puts the old values back (forwarding was on already: only
    // the loose tracking changed).
    assert_eq!(sysctls.previous(), [("net.netfilter.nf_conntrack_tcp_loose".to_owned(), "1".to_owned())]);
    on(&lab, h.unit1, move || sysctls.restore())??;
    let loose = lab.run(h.unit1, &["sysctl", "-n", "net.netfilter.nf_conntrack_tcp_loose"])?;
    assert_eq!(loose.trim(), "1");
    Ok(())
}

#[test]
fn every_kind_of_service_renders_to_a_ruleset_nft_accepts() -> Result<()> {
    let Some(mut lab) = when_root("every_kind_of_service_renders_to_a_ruleset_nft_accepts", || Lab::new("dpkinds"))?
    else {
        return Ok(());
    };
    let unit = lab.host("unit")?;
    let vs = |name: &str, port: u32, protocol: Protocol, scheduler: Scheduler, persistence: Option<PersistenceMode>| {
        VirtualService {
            name: name.into(),
            address: VIP.to_string(),
            port,
            protocol: protocol as i32,
            scheduler: scheduler as i32,
            real_servers: vec![
                RealServer { address: "198.19.0.101".into(), port: 8080, weight: 1000, enabled: true },
                RealServer { address: "198.19.0.102".into(), port: 8081, weight: 7, enabled: true },
                RealServer { address: "198.19.0.103".into(), port: 8080, weight: 0, enabled: true },
            ],
            persistence: persistence.map(|mode| Persistence {
                mode: mode as i32,
                timeout_s: 86_400,
                cookie: "S".into(),
            }),
            enabled: true,
        }
    };
    let mut empty = vs("no-servers", 90, Protocol::Tcp, Scheduler::RoundRobin, None);
    empty.real_servers.clear();
    let image = Image {
        generation: 9,
        hash: "00ff".into(),
        virtual_services: vec![
            vs("web_a.b-c", 80, Protocol::Tcp, Scheduler::RoundRobin, Some(PersistenceMode::SourceAddress)),
            vs("dns", 53, Protocol::Udp, Scheduler::SourceHash, Some(PersistenceMode::SourceAddress)),
            vs("lc", 81, Protocol::Tcp, Scheduler::LeastConnection, Some(PersistenceMode::Cookie)),
            vs("wrr", 82, Protocol::Udp, Scheduler::WeightedRoundRobin, Some(PersistenceMode::None)),
            empty,
        ],
        ..Default::default()
    };
    let ruleset = rendered(&image)?;
    assert_eq!(ruleset.warnings().len(), 3, "{:?}", ruleset.warnings());
    let applied = apply_on(&lab, unit, &ruleset)??;
    assert_eq!((applied.services, applied.real_servers, applied.warnings.len()), (5, 8, 3), "{applied:?}");
    let listed = listing(&lab, unit)?;
    for want in [
        "jhash ip saddr mod 1007 seed 0x64756574 vmap { 0-999 : goto rs_dns_198.19.0.101_8080, 1000-1006 : goto rs_dns_198.19.0.102_8081 }",
        "meta l4proto udp dnat to 198.19.0.102:8081",
        "update @p_web_a.b-c_198.19.0.101_8080 { ip saddr }",
        "timeout 1d",
        "numgen inc mod 1007 vmap",
    ] {
        assert!(listed.contains(want), "missing {want:?} in\n{listed}");
    }
    Ok(())
}
