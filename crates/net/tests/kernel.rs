//! The kernel adapters against a real kernel, inside throw-away network
//! namespaces (duet-testkit). Needs root; without it each test says so and
//! passes, unless `CI` is set.
//!
//! Netlink handles are created on a thread inside a lab host, together with
//! the current-thread runtime that drives them; both are then handed back to
//! the test thread. A socket stays in the namespace it was created in, so the
//! test can interleave requests with lab actions (`ip` commands, link down)
//! from its own thread. Every wait is bounded.

use std::future::Future;
use std::net::Ipv4Addr;
use std::time::Duration;

use anyhow::{Context, Result};
use duet_net::garp::{GarpError, GarpSender};
use duet_net::netlink::{self, NetEvent, Netlink, NetlinkError};
use duet_net::sysctl::{self, SysctlError};
use duet_testkit::{HostId, Lab, in_netns, wait_for, when_root};
use duet_wire::arp::format_mac;
use tokio::runtime::Runtime;
use tokio::sync::mpsc;

/// Bound of every wait for the network or an event.
const WAIT: Duration = Duration::from_secs(5);
const POLL: Duration = Duration::from_millis(50);
const VIP: Ipv4Addr = Ipv4Addr::new(198, 18, 0, 10);
const VIP2: Ipv4Addr = Ipv4Addr::new(198, 18, 0, 11);
const HOST_A: Ipv4Addr = Ipv4Addr::new(198, 18, 0, 1);
/// The virtual MAC of vhid 10.
const VMAC: [u8; 6] = [0x00, 0x00, 0x5e, 0x00, 0x01, 0x0a];

/// A netlink handle in a lab host and the runtime that drives it.
struct HostNetlink {
    // Field order is drop order: the handle (aborting its task) first.
    nl: Netlink,
    events: Option<mpsc::Receiver<NetEvent>>,
    rt: Runtime,
}

impl HostNetlink {
    /// Opens a handle (and, with `watch`, an event subscription) in `host`.
    fn open(lab: &Lab, host: HostId, watch: bool) -> Result<Self> {
        in_netns(&lab.ns(host), move || -> Result<Self> {
            let rt = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
            let (nl, events) = {
                // Both spawn their task on the current runtime.
                let _entered = rt.enter();
                (Netlink::new()?, if watch { Some(netlink::watch()?) } else { None })
            };
            Ok(Self { nl, events, rt })
        })?
    }

    fn block<F: Future>(&self, f: F) -> F::Output {
        self.rt.block_on(f)
    }

    /// Waits (bounded) for the first event that `want` accepts, skipping
    /// others.
    fn expect_event(&mut self, what: &str, want: impl Fn(&NetEvent) -> bool) -> NetEvent {
        let events = self.events.as_mut().expect("opened with watch");
        // The timeout must be made inside the runtime, hence the outer block.
        let found = self.rt.block_on(async {
            tokio::time::timeout(WAIT, async {
                loop {
                    match events.recv().await {
                        Some(event) if want(&event) => return event,
                        Some(_) => {}
                        None => panic!("event channel closed while waiting for {what}"),
                    }
                }
            })
            .await
        });
        found.unwrap_or_else(|_| panic!("no {what} within {WAIT:?}"))
    }
}

/// A `Lab::simple` of `hosts` for `test` (`None`: skipped), with a netlink
/// handle in the first host (and, with `watch`, an event subscription).
fn netlink_lab(test: &str, tag: &str, hosts: &[&str], watch: bool) -> Result<Option<(Lab, HostNetlink)>> {
    when_root(test, || {
        let lab = Lab::simple(tag, hosts)?;
        let host = HostNetlink::open(&lab, lab.host_id(hosts[0]), watch)?;
        Ok((lab, host))
    })
}

#[test]
fn addresses_are_added_and_removed_idempotently() -> Result<()> {
    let Some((lab, host)) = netlink_lab("addresses_are_added_and_removed_idempotently", "netlink", &["a", "b"], false)?
    else {
        return Ok(());
    };
    let (a, b) = (lab.host_id("a"), lab.host_id("b"));

    assert!(host.block(host.nl.add_address("eth0", VIP, 24))?, "first add adds");
    assert!(lab.addr_present(a, "eth0", "198.18.0.10/24")?);
    assert!(!lab.addr_present(b, "eth0", "198.18.0.10")?, "only in host a");
    let addrs = host.block(host.nl.addresses("eth0"))?;
    assert!(addrs.contains(&(VIP, 24)) && addrs.contains(&(HOST_A, 24)), "{addrs:?}");
    assert!(!host.block(host.nl.add_address("eth0", VIP, 24))?, "second add finds it there");

    assert!(host.block(host.nl.del_address("eth0", VIP, 24))?, "first del removes");
    assert!(!lab.addr_present(a, "eth0", "198.18.0.10")?);
    assert!(!host.block(host.nl.del_address("eth0", VIP, 24))?, "second del finds nothing");
    assert!(lab.addr_present(a, "eth0", "198.18.0.1/24")?, "the host's own address stays");

    let missing = host.block(host.nl.add_address("nope0", VIP, 24));
    assert!(matches!(missing, Err(NetlinkError::NotFound { ref ifname }) if ifname == "nope0"), "{missing:?}");
    let missing = host.block(host.nl.del_address("nope0", VIP, 24));
    assert!(matches!(missing, Err(NetlinkError::NotFound { .. })), "{missing:?}");
    let bad = host.block(host.nl.add_address("eth0", VIP, 33));
    assert!(matches!(bad, Err(NetlinkError::InvalidPrefix { .. })), "{bad:?}");
    Ok(())
}

#[test]
fn links_report_state_kind_and_mac() -> Result<()> {
    let Some((lab, host)) = netlink_lab("links_report_state_kind_and_mac", "netlink", &["a", "b"], false)? else {
        return Ok(());
    };
    let a = lab.host_id("a");

    let eth0 = host.block(host.nl.link("eth0"))?;
    assert!(eth0.up && eth0.admin_up, "{eth0:?}");
    assert_eq!(eth0.name, "eth0");
    assert_eq!(eth0.kind.as_deref(), Some("veth"));
    assert_eq!(eth0.mac.map(|m| format_mac(&m)), Some(lab.mac(a, "eth0")?));

    let links = host.block(host.nl.links())?;
    assert!(links.contains(&eth0), "{links:?}");
    let lo = links.iter().find(|l| l.name == "lo").context("no lo")?;
    assert!(lo.up && lo.kind.is_none(), "{lo:?}");
    assert_eq!(links.len(), 2, "a host has lo and eth0 only: {links:?}");

    let missing = host.block(host.nl.link("nope0"));
    assert!(matches!(missing, Err(NetlinkError::NotFound { .. })), "{missing:?}");
    let invalid = host.block(host.nl.link("much-too-long-name"));
    assert!(matches!(invalid, Err(NetlinkError::InvalidName { .. })), "{invalid:?}");

    lab.link_down(a, "eth0")?;
    let down = host.block(host.nl.link("eth0"))?;
    assert!(!down.up && !down.admin_up, "{down:?}");

    host.block(host.nl.set_up("eth0", true))?;
    // Carrier follows the peer, which is up, but may take a moment.
    wait_for("eth0 up again", WAIT, POLL, || host.block(host.nl.link("eth0")).ok().filter(|l| l.up))?;
    host.block(host.nl.set_up("eth0", false))?;
    let down = host.block(host.nl.link("eth0"))?;
    assert!(!down.up && !down.admin_up, "{down:?}");
    let missing = host.block(host.nl.set_up("nope0", true));
    assert!(matches!(missing, Err(NetlinkError::NotFound { .. })), "{missing:?}");
    Ok(())
}

#[test]
fn watch_reports_address_and_link_changes() -> Result<()> {
    let Some((lab, mut host)) = netlink_lab("watch_reports_address_and_link_changes", "netlink", &["a", "b"], true)?
    else {
        return Ok(());
    };
    let a = lab.host_id("a");
    let eth0 = host.block(host.nl.link("eth0"))?.index;

    // A change made by this crate...
    host.block(host.nl.add_address("eth0", VIP, 24))?;
    host.expect_event("AddressAdded of the VIP", |e| {
        *e == NetEvent::AddressAdded { index: eth0, addr: VIP, prefix: 24 }
    });
    // ...and one made by someone else.
    lab.run(a, &["ip", "addr", "add", "198.18.0.11/24", "dev", "eth0"])?;
    host.expect_event("AddressAdded of 198.18.0.11", |e| {
        *e == NetEvent::AddressAdded { index: eth0, addr: VIP2, prefix: 24 }
    });
    host.block(host.nl.del_address("eth0", VIP, 24))?;
    host.expect_event("AddressRemoved of the VIP", |e| {
        *e == NetEvent::AddressRemoved { index: eth0, addr: VIP, prefix: 24 }
    });

    host.block(host.nl.create_macvlan("eth0", "vip0", VMAC))?;
    let NetEvent::Link(vip0) =
        host.expect_event("Link of vip0", |e| matches!(e, NetEvent::Link(l) if l.name == "vip0"))
    else {
        unreachable!()
    };
    assert_eq!((vip0.mac, vip0.kind.as_deref()), (Some(VMAC), Some("macvlan")));
    host.block(host.nl.delete_link("vip0"))?;
    host.expect_event("LinkRemoved of vip0", |e| {
        *e == NetEvent::LinkRemoved { index: vip0.index, name: "vip0".into() }
    });

    lab.link_down(a, "eth0")?;
    host.expect_event("Link of eth0 down", |e| matches!(e, NetEvent::Link(l) if l.index == eth0 && !l.up));

    // Dropping the receiver ends the task; only the handle's remains.
    assert_eq!(host.rt.metrics().num_alive_tasks(), 2);
    host.events = None;
    wait_for("the watch task to end", WAIT, POLL, || {
        host.block(async { tokio::time::sleep(POLL).await });
        (host.rt.metrics().num_alive_tasks() == 1).then_some(())
    })?;
    Ok(())
}

#[test]
fn watch_drops_events_while_the_receiver_lags_and_carries_on() -> Result<()> {
    let Some((_lab, mut host)) =
        netlink_lab("watch_drops_events_while_the_receiver_lags_and_carries_on", "netlink", &["a"], true)?
    else {
        return Ok(());
    };
    let eth0 = host.block(host.nl.link("eth0"))?.index;

    // More changes than the queue holds, without reading any.
    let base = u32::from(Ipv4Addr::new(198, 18, 1, 0));
    let burst = netlink::EVENT_QUEUE as u32 + 50;
    for i in 1..=burst {
        assert!(host.block(host.nl.add_address("eth0", Ipv4Addr::from(base + i), 32))?);
    }
    // Let the task read whatever is still on the socket.
    host.block(async { tokio::time::sleep(Duration::from_millis(200)).await });
    let events = host.events.as_mut().expect("watching");
    let mut queued = Vec::new();
    while let Ok(event) = events.try_recv() {
        queued.push(event);
    }
    assert_eq!(queued.len(), netlink::EVENT_QUEUE, "a full queue, the rest dropped");
    assert_eq!(queued[0], NetEvent::AddressAdded { index: eth0, addr: Ipv4Addr::from(base + 1), prefix: 32 });

    // The task is still there and delivers the next change.
    host.block(host.nl.add_address("eth0", VIP, 24))?;
    host.expect_event("AddressAdded after the loss", |e| {
        *e == NetEvent::AddressAdded { index: eth0, addr: VIP, prefix: 24 }
    });
    Ok(())
}

#[test]
fn macvlan_vip_answers_the_peer() -> Result<()> {
    let Some((lab, host)) = netlink_lab("macvlan_vip_answers_the_peer", "macvlan", &["a", "b"], false)? else {
        return Ok(());
    };
    let (a, b) = (lab.host_id("a"), lab.host_id("b"));

    // The settings a macvlan VIP needs on its parent, or peers learn the VIP
    // at the parent's MAC, which does not move on failover: arp_ignore=1, or
    // eth0 answers ARP for the VIP too (Linux answers for any local address);
    // arp_announce=2, or the ARP requests host a sends on eth0 while replying
    // from the VIP say "tell 198.18.0.10" with eth0's MAC, and host b updates
    // its entry for the VIP from them.
    in_netns(&lab.ns(a), || -> Result<(), SysctlError> {
        sysctl::write("net.ipv4.conf.eth0.arp_ignore", "1")?;
        sysctl::write("net.ipv4.conf.eth0.arp_announce", "2")?;
        Ok(())
    })??;

    host.block(host.nl.create_macvlan("eth0", "vip0", VMAC))?;
    let vip0 = host.block(host.nl.link("vip0"))?;
    assert_eq!(vip0.kind.as_deref(), Some("macvlan"));
    assert_eq!(vip0.mac, Some(VMAC));
    assert!(vip0.admin_up, "{vip0:?}");
    let again = host.block(host.nl.create_macvlan("eth0", "vip0", VMAC));
    assert!(matches!(again, Err(NetlinkError::AlreadyExists { ref ifname }) if ifname == "vip0"), "{again:?}");
    let orphan = host.block(host.nl.create_macvlan("nope0", "vip1", VMAC));
    assert!(matches!(orphan, Err(NetlinkError::NotFound { ref ifname }) if ifname == "nope0"), "{orphan:?}");

    assert!(host.block(host.nl.add_address("vip0", VIP, 24))?);
    wait_for("a ping answer from the VIP", WAIT, POLL, || lab.ping(b, "198.18.0.10").ok().filter(|ok| *ok))?;
    let neigh = lab.run(b, &["ip", "neigh", "show", "198.18.0.10"])?;
    assert!(neigh.contains("00:00:5e:00:01:0a"), "host b should know the VIP at the virtual MAC: {neigh}");

    assert!(host.block(host.nl.delete_link("vip0"))?);
    assert!(!host.block(host.nl.delete_link("vip0"))?, "second delete finds nothing");
    let gone = host.block(host.nl.link("vip0"));
    assert!(matches!(gone, Err(NetlinkError::NotFound { .. })), "{gone:?}");
    assert!(!lab.ping(b, "198.18.0.10")?, "the VIP left with its interface");
    Ok(())
}

#[test]
fn gratuitous_arp_reaches_the_peer() -> Result<()> {
    let Some(mut lab) = when_root("gratuitous_arp_reaches_the_peer", || Lab::simple("garp", &["a", "b"]))? else {
        return Ok(());
    };
    let (a, b) = (lab.host_id("a"), lab.host_id("b"));
    let tcpdump = lab.spawn(b, "tcpdump", &["tcpdump", "-l", "-n", "-e", "-i", "eth0", "arp"], &[])?;
    tcpdump.wait_log("listening on", WAIT)?;

    let eth0 = HostNetlink::open(&lab, a, false).and_then(|h| Ok(h.block(h.nl.link("eth0"))?))?;
    in_netns(&lab.ns(a), move || GarpSender::open("eth0", eth0.index)?.send(VMAC, VIP))??;

    let header = "00:00:5e:00:01:0a > ff:ff:ff:ff:ff:ff";
    tcpdump.wait_log(header, WAIT)?;
    let log = tcpdump.log();
    let line = log.lines().find(|l| l.contains(header)).context("captured line")?;
    assert!(line.contains("ethertype ARP"), "{line}");
    assert!(line.contains("who-has 198.18.0.10 tell 198.18.0.10"), "not a gratuitous request: {line}");

    let unbound = in_netns(&lab.ns(a), || GarpSender::open("eth0", 9999).map(drop))?;
    assert!(matches!(unbound, Err(GarpError::Bind { ifindex: 9999, .. })), "{unbound:?}");
    Ok(())
}

#[test]
fn sysctl_is_per_namespace_and_returns_the_old_value() -> Result<()> {
    // An interface name of its own, so that the first checks prove the
    // calls resolve in the lab before anything is written.
    let Some(mut lab) = when_root("sysctl_is_per_namespace_and_returns_the_old_value", || Lab::new("sysctl"))? else {
        return Ok(());
    };
    let lan = lab.segment("lan")?;
    let a = lab.host("a")?;
    lab.attach(a, lan, "dsy0", &["198.18.0.1/24"])?;
    let key = "net.ipv4.conf.dsy0.arp_ignore";
    let outside = sysctl::read(key);
    assert!(matches!(outside, Err(SysctlError::Read { .. })), "dsy0 exists outside the lab? {outside:?}");
    let outside_announce = sysctl::read("net.ipv4.conf.all.arp_announce")?;

    let (before, previous, now) = in_netns(&lab.ns(a), move || -> Result<_, SysctlError> {
        let before = sysctl::read(key)?;
        let previous = sysctl::write(key, "1")?;
        let now = sysctl::read("net/ipv4/conf/dsy0/arp_ignore")?;
        sysctl::write("net.ipv4.conf.all.arp_announce", "2")?;
        Ok((before, previous, now))
    })??;
    assert_eq!(previous, before);
    assert_eq!(now, "1");
    assert_eq!(lab.run(a, &["sysctl", "-n", key])?.trim(), "1");
    assert_eq!(lab.run(a, &["sysctl", "-n", "net.ipv4.conf.all.arp_announce"])?.trim(), "2");
    assert_eq!(sysctl::read("net.ipv4.conf.all.arp_announce")?, outside_announce, "outside the lab: untouched");

    let refused = in_netns(&lab.ns(a), move || sysctl::write(key, "banana"))?;
    assert!(matches!(refused, Err(SysctlError::Write { .. })), "{refused:?}");
    let restored = in_netns(&lab.ns(a), move || sysctl::write(key, &before))??;
    assert_eq!(restored, "1");
    Ok(())
}
