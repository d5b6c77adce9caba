//! Conntrack over ctnetlink against a real kernel, inside throw-away network
//! namespaces (duet-testkit). Needs root; without it each test says so and
//! passes, unless `CI` is set.
//!
//! Sockets are opened on a thread inside a lab host and used from the test
//! thread: they stay in the namespace they were created in. The event
//! subscription comes with the current-thread runtime that drives it. Every
//! wait is bounded.

use std::io::{Read, Write};
use std::net::{Ipv4Addr, SocketAddr, TcpListener, TcpStream, UdpSocket};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use duet_net::conntrack::{
    self, Conntrack, CtEvent, CtEvents, EventKind, Flow, IP_CT_TCP_FLAG_SACK_PERM, IP_CT_TCP_FLAG_WINDOW_SCALE,
    IPS_ASSURED, IPS_CONFIRMED, IPS_DST_NAT, IPS_DST_NAT_DONE, IPS_SEEN_REPLY, IPS_SRC_NAT, IPS_SRC_NAT_DONE,
    PROTO_TCP, PROTO_UDP, TCP_CONNTRACK_CLOSE, TCP_CONNTRACK_ESTABLISHED, TCP_CONNTRACK_TIME_WAIT, TcpInfo, Tuple,
};
use duet_testkit::{HostId, Lab, in_netns, when_root};
use tokio::runtime::Runtime;

/// Bound of every wait for the network or an event.
const WAIT: Duration = Duration::from_secs(5);
const CLIENT: Ipv4Addr = Ipv4Addr::new(198, 18, 0, 100);
const VIP: Ipv4Addr = Ipv4Addr::new(198, 18, 0, 10);
const REAL: Ipv4Addr = Ipv4Addr::new(198, 19, 0, 101);
/// Addresses of `Lab::simple` hosts 0 and 1.
const HOST_1: Ipv4Addr = Ipv4Addr::new(198, 18, 0, 1);
const HOST_2: Ipv4Addr = Ipv4Addr::new(198, 18, 0, 2);

fn tuple(proto: u8, src: Ipv4Addr, sport: u16, dst: Ipv4Addr, dport: u16) -> Tuple {
    Tuple { proto, src, dst, sport, dport }
}

/// An established client connection to the VIP, DNAT'd to a real server.
fn dnat_tcp(sport: u16) -> Flow {
    Flow {
        orig: tuple(PROTO_TCP, CLIENT, sport, VIP, 80),
        reply: tuple(PROTO_TCP, REAL, 8080, CLIENT, sport),
        status: IPS_SEEN_REPLY | IPS_ASSURED,
        timeout_s: 3600,
        mark: 42,
        zone: 0,
        tcp: Some(TcpInfo {
            state: TCP_CONNTRACK_ESTABLISHED,
            wscale_orig: 7,
            wscale_reply: 9,
            flags_orig: IP_CT_TCP_FLAG_WINDOW_SCALE | IP_CT_TCP_FLAG_SACK_PERM,
            flags_reply: IP_CT_TCP_FLAG_WINDOW_SCALE | IP_CT_TCP_FLAG_SACK_PERM,
        }),
    }
}

/// A UDP exchange without NAT.
fn plain_udp(sport: u16, timeout_s: u32) -> Flow {
    let orig = tuple(PROTO_UDP, CLIENT, sport, VIP, 53);
    Flow { orig, reply: orig.reversed(), status: IPS_SEEN_REPLY, timeout_s, mark: 0, zone: 0, tcp: None }
}

fn open(lab: &Lab, host: HostId) -> Result<Conntrack> {
    Ok(in_netns(&lab.ns(host), Conntrack::open)??)
}

fn find<'a>(flows: &'a [Flow], orig: &Tuple) -> Option<&'a Flow> {
    flows.iter().find(|f| f.orig == *orig)
}

/// `got` is `want` up to the timeout, which may differ by a few seconds.
fn assert_same_flow(got: &Flow, want: &Flow) {
    assert!(got.timeout_s.abs_diff(want.timeout_s) <= 5, "timeout {} vs {}", got.timeout_s, want.timeout_s);
    assert_eq!(Flow { timeout_s: 0, ..got.clone() }, Flow { timeout_s: 0, ..want.clone() });
}

/// The lines of `conntrack -L <args>` in `host` that mention `needle`.
fn listed(lab: &Lab, host: HostId, args: &[&str], needle: &str) -> Result<Vec<String>> {
    let argv: Vec<&str> = ["conntrack", "-L"].into_iter().chain(args.iter().copied()).collect();
    let out = lab.run_status(host, &argv)?;
    if !out.status.success() {
        bail!("conntrack -L failed: {}", String::from_utf8_lossy(&out.stderr));
    }
    Ok(String::from_utf8_lossy(&out.stdout).lines().filter(|l| l.contains(needle)).map(str::to_owned).collect())
}

/// A DNAT rule as a load balancer has: the VIP's port 80 and 53 go to this
/// host's own address, ports 8080 and 5353.
fn add_dnat_rules(lab: &Lab, lb: HostId) -> Result<()> {
    lab.run(lb, &["ip", "addr", "add", &format!("{VIP}/24"), "dev", "eth0"])?;
    let rules = format!(
        "add table ip t; \
         add chain ip t pre {{ type nat hook prerouting priority dstnat; }}; \
         add rule ip t pre ip daddr {VIP} tcp dport 80 dnat to {HOST_2}:8080; \
         add rule ip t pre ip daddr {VIP} udp dport 53 dnat to {HOST_2}:5353"
    );
    lab.run(lb, &["nft", &rules])?;
    Ok(())
}

/// A lab of one host, `lb`, for `test` (`None`: skipped).
fn lone_lb(test: &str, tag: &str) -> Result<Option<(Lab, HostId)>> {
    when_root(test, || {
        let mut lab = Lab::new(tag)?;
        let lb = lab.host("lb")?;
        Ok((lab, lb))
    })
}

/// A lab of a client (198.18.0.1) and `lb` (198.18.0.2) on one segment,
/// for `test` (`None`: skipped).
fn client_and_lb(test: &str, tag: &str) -> Result<Option<(Lab, HostId, HostId)>> {
    when_root(test, || {
        let lab = Lab::simple(tag, &["client", "lb"])?;
        let (client, lb) = (lab.host_id("client"), lab.host_id("lb"));
        Ok((lab, client, lb))
    })
}

/// A TCP connection from `client` to the VIP's port 80, accepted by a
/// listener on `lb`'s port 8080: the client's and the server's ends.
fn tcp_to_vip(lab: &Lab, client: HostId, lb: HostId) -> Result<(TcpStream, TcpStream)> {
    let listener = in_netns(&lab.ns(lb), || TcpListener::bind((HOST_2, 8080)))??;
    let conn = in_netns(&lab.ns(client), || TcpStream::connect_timeout(&SocketAddr::from((VIP, 80)), WAIT))??;
    let (server, _) = listener.accept()?;
    Ok((conn, server))
}

/// A UDP query from `client` (port `sport`, 0 for any) to the VIP's port
/// 53, answered by a server on `lb`'s port 5353. Returns the query's port,
/// where the server saw it come from and where the answer came from.
fn udp_query(lab: &Lab, client: HostId, lb: HostId, sport: u16) -> Result<(u16, SocketAddr, SocketAddr)> {
    let server = in_netns(&lab.ns(lb), || UdpSocket::bind((HOST_2, 5353)))??;
    let query = in_netns(&lab.ns(client), move || UdpSocket::bind((HOST_1, sport)))??;
    server.set_read_timeout(Some(WAIT))?;
    query.set_read_timeout(Some(WAIT))?;
    query.send_to(b"q", (VIP, 53))?;
    let mut buf = [0; 1];
    let (_, from) = server.recv_from(&mut buf)?;
    server.send_to(b"a", from)?;
    let (_, answered_by) = query.recv_from(&mut buf)?;
    Ok((query.local_addr()?.port(), from, answered_by))
}

/// A conntrack event subscription in a lab host and the runtime driving it.
struct HostEvents {
    // Field order is drop order: the socket before its runtime.
    events: CtEvents,
    rt: Runtime,
}

impl HostEvents {
    fn open(lab: &Lab, host: HostId, buffer: Option<usize>) -> Result<Self> {
        in_netns(&lab.ns(host), move || -> Result<Self> {
            let rt = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
            let events = {
                let _entered = rt.enter();
                match buffer {
                    Some(bytes) => CtEvents::open(bytes)?,
                    None => conntrack::events()?,
                }
            };
            Ok(Self { events, rt })
        })?
    }

    /// The next event, or `None` if none comes within `wait`.
    fn next(&mut self, wait: Duration) -> Result<Option<CtEvent>> {
        let events = &mut self.events;
        match self.rt.block_on(async { tokio::time::timeout(wait, events.next()).await }) {
            Ok(event) => Ok(Some(event?)),
            Err(_elapsed) => Ok(None),
        }
    }

    /// Waits (bounded) for the first flow event that `want` accepts,
    /// skipping others.
    fn expect(&mut self, what: &str, want: impl Fn(EventKind, &Flow) -> bool) -> Result<Flow> {
        let deadline = Instant::now() + WAIT;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.next(left)? {
                Some(CtEvent::Flow(kind, flow)) if want(kind, &flow) => return Ok(flow),
                Some(_) => {}
                None => bail!("no {what} within {WAIT:?}"),
            }
        }
    }
}

#[test]
fn a_dnat_tcp_flow_is_created_dumped_and_deleted() -> Result<()> {
    let Some((mut lab, lb)) = lone_lb("a_dnat_tcp_flow_is_created_dumped_and_deleted", "cttcp")? else { return Ok(()) };
    let mut ct = open(&lab, lb)?;
    let flow = dnat_tcp(40000);

    let report = ct.upsert(std::slice::from_ref(&flow))?;
    assert_eq!((report.created, report.updated, report.failed), (1, 0, 0), "{report:?}");

    let lines = listed(&lab, lb, &["--dst-nat"], "sport=40000")?;
    assert_eq!(lines.len(), 1, "{lines:?}");
    let line = &lines[0];
    for part in [
        "ESTABLISHED",
        "src=198.18.0.100 dst=198.18.0.10 sport=40000 dport=80",
        "src=198.19.0.101 dst=198.18.0.100 sport=8080 dport=40000",
        "[ASSURED]",
        "mark=42",
    ] {
        assert!(line.contains(part), "{part:?} not in {line:?}");
    }

    let dumped = ct.dump()?;
    let got = find(&dumped, &flow.orig).with_context(|| format!("not in the dump: {dumped:?}"))?;
    // The kernel adds the NAT bits (a DNAT binding and a null SNAT binding)
    // and CONFIRMED.
    let nat_bits = IPS_CONFIRMED | IPS_DST_NAT | IPS_DST_NAT_DONE | IPS_SRC_NAT_DONE;
    assert_same_flow(got, &Flow { status: flow.status | nat_bits, ..flow.clone() });
    assert!(got.timeout_s > 3590, "{got:?}");
    assert_eq!(got.dnat(), Some((REAL, 8080)));

    // The filter sees every flow and keeps what it accepts.
    ct.upsert(&[plain_udp(1000, 60)])?;
    assert_eq!(ct.dump()?.len(), 2);
    let filtered = ct.dump_filtered(|f| f.orig.dport == 80)?;
    assert_eq!(filtered.len(), 1);
    assert_eq!(filtered[0].orig, flow.orig);

    assert!(ct.delete(&flow.orig)?, "deleted");
    assert!(listed(&lab, lb, &[], "sport=40000")?.is_empty());
    assert!(find(&ct.dump()?, &flow.orig).is_none());
    assert!(!ct.delete(&flow.orig)?, "nothing left to delete");
    Ok(lab.teardown()?)
}

#[test]
fn a_udp_flow_is_created_then_updated() -> Result<()> {
    let Some((mut lab, lb)) = lone_lb("a_udp_flow_is_created_then_updated", "ctudp")? else { return Ok(()) };
    let mut ct = open(&lab, lb)?;

    let flow = plain_udp(5000, 30);
    let report = ct.upsert(std::slice::from_ref(&flow))?;
    assert_eq!((report.created, report.updated, report.failed), (1, 0, 0), "{report:?}");
    let lines = listed(&lab, lb, &["-p", "udp"], "sport=5000")?;
    assert_eq!(lines.len(), 1, "{lines:?}");
    assert!(lines[0].contains("src=198.18.0.100 dst=198.18.0.10 sport=5000 dport=53"), "{lines:?}");
    let got = ct.dump()?;
    assert_same_flow(&got[0], &Flow { status: flow.status | IPS_CONFIRMED, ..flow.clone() });

    // The same flow again, later: the entry is updated, not refused.
    let later = Flow { timeout_s: 600, mark: 5, status: IPS_SEEN_REPLY | IPS_ASSURED, ..flow.clone() };
    let report = ct.upsert(std::slice::from_ref(&later))?;
    assert_eq!((report.created, report.updated, report.failed), (0, 1, 0), "{report:?}");
    let got = ct.dump()?;
    assert_eq!(got.len(), 1, "{got:?}");
    assert_same_flow(&got[0], &Flow { status: later.status | IPS_CONFIRMED, ..later.clone() });
    let lines = listed(&lab, lb, &["-p", "udp"], "sport=5000")?;
    assert!(lines[0].contains("[ASSURED]") && lines[0].contains("mark=5"), "{lines:?}");

    // A batch mixing known, new and impossible flows: each is counted, the
    // refusal comes with its tuple and errno.
    let mut bad = plain_udp(6000, 30);
    bad.reply.proto = PROTO_TCP;
    let report = ct.upsert(&[later.clone(), plain_udp(5001, 30), bad.clone(), dnat_tcp(40001)])?;
    assert_eq!((report.created, report.updated, report.failed), (2, 1, 1), "{report:?}");
    assert_eq!(report.errors.len(), 1);
    assert_eq!((report.errors[0].orig, report.errors[0].errno), (bad.orig, libc::EINVAL));
    assert_eq!(ct.dump()?.len(), 3);

    // The same tuple in another zone is another entry.
    let zoned = Flow { zone: 7, ..later.clone() };
    assert_eq!(ct.upsert(std::slice::from_ref(&zoned))?.created, 1);
    let dumped = ct.dump()?;
    assert_eq!(dumped.iter().filter(|f| f.orig == later.orig).count(), 2, "{dumped:?}");
    assert!(dumped.iter().any(|f| f.orig == later.orig && f.zone == 7));
    assert!(ct.delete_in_zone(&later.orig, 7)?);
    assert!(!ct.delete_in_zone(&later.orig, 7)?);
    assert!(find(&ct.dump()?, &later.orig).is_some_and(|f| f.zone == 0), "zone 0 untouched");
    Ok(lab.teardown()?)
}

#[test]
fn a_preinstalled_dnat_flow_rewrites_packets_with_no_rule() -> Result<()> {
    let Some((mut lab, client, lb)) = client_and_lb("a_preinstalled_dnat_flow_rewrites_packets_with_no_rule", "ctnat")?
    else {
        return Ok(());
    };
    lab.run(lb, &["ip", "addr", "add", &format!("{VIP}/24"), "dev", "eth0"])?;
    // NAT hooks and a stateful filter, as the standby's ruleset has, but no
    // NAT rule: only the entry can translate. (Empty NAT chains alone do not
    // turn conntrack on in a namespace; the `ct` match does.)
    let chains = "add table ip t; \
                  add chain ip t pre { type nat hook prerouting priority dstnat; }; \
                  add chain ip t post { type nat hook postrouting priority srcnat; }; \
                  add chain ip t in { type filter hook input priority filter; }; \
                  add rule ip t in ct state invalid drop";
    lab.run(lb, &["nft", chains])?;
    let orig = tuple(PROTO_UDP, HOST_1, 5000, VIP, 53);
    let flow = Flow {
        orig,
        reply: tuple(PROTO_UDP, HOST_2, 5353, HOST_1, 5000),
        status: IPS_SEEN_REPLY | IPS_ASSURED,
        timeout_s: 120,
        mark: 0,
        zone: 0,
        tcp: None,
    };
    let mut ct = open(&lab, lb)?;
    assert_eq!(ct.upsert(std::slice::from_ref(&flow))?.created, 1);

    let (_, from, answered_by) = udp_query(&lab, client, lb, 5000)?;
    assert_eq!(from, SocketAddr::from((HOST_1, 5000)), "the VIP's port 53 reached 5353");
    assert_eq!(answered_by, SocketAddr::from((VIP, 53)), "the answer is translated back");
    let dumped = ct.dump()?;
    assert_eq!(dumped.len(), 1, "the packets used the entry, no new one: {dumped:?}");
    Ok(lab.teardown()?)
}

#[test]
fn events_follow_a_real_dnat_connection() -> Result<()> {
    let Some((mut lab, client, lb)) = client_and_lb("events_follow_a_real_dnat_connection", "ctevents")? else {
        return Ok(());
    };
    add_dnat_rules(&lab, lb)?;
    let mut events = HostEvents::open(&lab, lb, None)?;
    let mut ct = open(&lab, lb)?;

    // TCP: connect to the VIP, which the rule sends to port 8080.
    let (mut conn, mut server) = tcp_to_vip(&lab, client, lb)?;
    let sport = conn.local_addr()?.port();
    let orig = tuple(PROTO_TCP, HOST_1, sport, VIP, 80);
    let reply = tuple(PROTO_TCP, HOST_2, 8080, HOST_1, sport);

    let new = events.expect("New of the TCP flow", |kind, f| kind == EventKind::New && f.orig == orig)?;
    assert_eq!(new.reply, reply);
    assert_eq!(new.dnat(), Some((HOST_2, 8080)));
    assert!(new.status & IPS_DST_NAT != 0, "{new:?}");
    // The handshake's last ACK makes it ESTABLISHED and ASSURED at once.
    let established = events.expect("Update to ESTABLISHED", |kind, f| {
        kind == EventKind::Update && f.orig == orig && f.tcp.is_some_and(|t| t.state == TCP_CONNTRACK_ESTABLISHED)
    })?;
    assert_eq!(established.reply, reply);
    assert!(established.status & IPS_ASSURED != 0, "{established:?}");

    conn.set_read_timeout(Some(WAIT))?;
    conn.write_all(b"ping")?;
    let mut buf = [0; 4];
    server.read_exact(&mut buf)?;
    drop(conn);
    server.set_read_timeout(Some(WAIT))?;
    assert_eq!(server.read(&mut buf)?, 0, "the client closed");
    drop(server);
    events.expect("Update to TIME_WAIT", |kind, f| {
        kind == EventKind::Update
            && f.orig == orig
            && f.tcp.is_some_and(|t| [TCP_CONNTRACK_TIME_WAIT, TCP_CONNTRACK_CLOSE].contains(&t.state))
    })?;
    // TIME_WAIT lasts two minutes; delete the entry to see it go.
    assert!(ct.delete(&orig)?);
    let gone = events.expect("Destroy of the TCP flow", |kind, f| kind == EventKind::Destroy && f.orig == orig)?;
    assert_eq!(gone.reply, reply);

    // UDP: a query to the VIP, answered from port 5353.
    let (sport, _, answered_by) = udp_query(&lab, client, lb, 0)?;
    assert_eq!(answered_by, SocketAddr::from((VIP, 53)), "the answer is translated back");
    let orig = tuple(PROTO_UDP, HOST_1, sport, VIP, 53);
    let new = events.expect("New of the UDP flow", |kind, f| kind == EventKind::New && f.orig == orig)?;
    assert_eq!(new.reply, tuple(PROTO_UDP, HOST_2, 5353, HOST_1, sport));
    assert!(new.tcp.is_none());
    events.expect("Update to SEEN_REPLY", |kind, f| {
        kind == EventKind::Update && f.orig == orig && f.status & IPS_SEEN_REPLY != 0
    })?;
    assert!(ct.delete(&orig)?);
    events.expect("Destroy of the UDP flow", |kind, f| kind == EventKind::Destroy && f.orig == orig)?;
    assert_eq!(events.events.undecodable(), 0);
    Ok(lab.teardown()?)
}

#[test]
fn flows_dumped_on_the_active_are_recreated_equal_on_the_standby() -> Result<()> {
    let Some((mut lab, client, lb)) =
        client_and_lb("flows_dumped_on_the_active_are_recreated_equal_on_the_standby", "ctrepl")?
    else {
        return Ok(());
    };
    let standby = lab.host("standby")?;
    add_dnat_rules(&lab, lb)?;
    let mut active_ct = open(&lab, lb)?;
    let mut standby_ct = open(&lab, standby)?;

    // Real traffic: an open TCP connection and a UDP exchange.
    let (mut conn, mut server) = tcp_to_vip(&lab, client, lb)?;
    conn.write_all(b"hello")?;
    let mut buf = [0; 5];
    server.set_read_timeout(Some(WAIT))?;
    server.read_exact(&mut buf)?;
    server.write_all(b"world")?;
    conn.set_read_timeout(Some(WAIT))?;
    conn.read_exact(&mut buf)?;
    udp_query(&lab, client, lb, 0)?;
    // And one written through ctnetlink with both NAT directions, as a
    // full-NAT load balancer has.
    let mut full_nat = dnat_tcp(40000);
    full_nat.reply.dst = Ipv4Addr::new(198, 19, 0, 1);
    full_nat.reply.dport = 61000;
    assert_eq!(active_ct.upsert(std::slice::from_ref(&full_nat))?.created, 1);

    let active = active_ct.dump_filtered(|f| f.orig.dst == VIP)?;
    assert_eq!(active.len(), 3, "{active:?}");
    let tcp = find(&active, &tuple(PROTO_TCP, HOST_1, conn.local_addr()?.port(), VIP, 80)).context("tcp")?;
    assert_eq!(tcp.tcp.map(|t| t.state), Some(TCP_CONNTRACK_ESTABLISHED));
    assert_eq!(tcp.dnat(), Some((HOST_2, 8080)));
    let full = find(&active, &full_nat.orig).context("full NAT")?;
    assert!(full.status & (IPS_SRC_NAT | IPS_DST_NAT) == IPS_SRC_NAT | IPS_DST_NAT, "{full:?}");

    let report = standby_ct.upsert(&active)?;
    assert_eq!((report.created, report.updated, report.failed), (3, 0, 0), "{report:?}");
    let copied = standby_ct.dump()?;
    assert_eq!(copied.len(), 3, "{copied:?}");
    for flow in &active {
        let copy = find(&copied, &flow.orig).with_context(|| format!("{} not copied", flow.orig))?;
        assert_same_flow(copy, flow);
    }
    assert_eq!(listed(&lab, standby, &["--dst-nat"], "dport=80")?.len(), 2);

    // Replaying the same state is harmless.
    let report = standby_ct.upsert(&active)?;
    assert_eq!((report.created, report.updated, report.failed), (0, 3, 0), "{report:?}");
    Ok(lab.teardown()?)
}

#[test]
fn a_lagging_event_reader_is_told_of_the_overrun() -> Result<()> {
    let Some((mut lab, lb)) = lone_lb("a_lagging_event_reader_is_told_of_the_overrun", "ctoverrun")? else {
        return Ok(());
    };
    // The smallest buffer the kernel grants: a few events fill it.
    let mut events = HostEvents::open(&lab, lb, Some(4096))?;
    assert!(events.events.buffer_size() < 64 << 10, "{}", events.events.buffer_size());
    let mut ct = open(&lab, lb)?;

    let flows: Vec<Flow> = (0..2000).map(|i| plain_udp(10_000 + i, 300)).collect();
    assert_eq!(ct.upsert(&flows)?.created, flows.len());
    let mut news = 0;
    let mut overrun = false;
    while let Some(event) = events.next(Duration::from_millis(500))? {
        match event {
            CtEvent::Overrun => overrun = true,
            CtEvent::Flow(EventKind::New, _) => news += 1,
            CtEvent::Flow(..) => {}
        }
    }
    assert!(overrun, "no overrun reported");
    assert!(news < flows.len(), "{news} New events but the buffer cannot hold them");

    // The subscription goes on after the loss.
    assert!(ct.delete(&flows[0].orig)?);
    let gone = events.expect("Destroy after the overrun", |kind, _| kind == EventKind::Destroy)?;
    assert_eq!(gone.orig, flows[0].orig);
    Ok(lab.teardown()?)
}
