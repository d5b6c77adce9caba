//! The takeover service in network namespaces: two duet units (election
//! and takeover each) and a client on one bridge. Shared address
//! 198.18.0.10/24, HA timeout 3 s.

use std::time::{Duration, Instant};

use anyhow::{Context, ensure};
use duet_proto::common::v1::Role;
use duet_proto::election::v1 as epb;
use duet_proto::takeover::v1 as tpb;
use duet_testkit::{HostId, Proc, wait_for};
use duet_tests::*;

/// The takeover service's gRPC address inside a unit's namespace.
/// The virtual MAC of vhid 10 (the last octet of the shared address).
const VMAC: &str = "00:00:5e:00:01:0a";
const VMAC_DEV: &str = "dv10.eth0";
const SHARED_CIDR: &str = "198.18.0.10/24";
const HA_TIMEOUT: Duration = Duration::from_secs(3);
const T: Duration = Duration::from_secs(15);
const POLL: Duration = Duration::from_millis(10);

/// Seconds since the UNIX epoch of an optional protobuf timestamp.
macro_rules! secs {
    ($t:expr) => {
        $t.as_ref().map(|t| t.seconds as f64 + f64::from(t.nanos) / 1e9)
    };
}

/// One unit's two services.
struct Unit {
    cfg: UnitConfig,
    election: Proc,
    takeover: Proc,
}

/// Starts both units (election, then takeover) with `tweak` applied to both
/// configurations, and waits until `a` is active and holds the shared
/// address and `b` stands by with its takeover following.
fn pair(l: &mut PairLab, tweak: impl Fn(&mut UnitConfig)) -> anyhow::Result<(Unit, Unit)> {
    let mut c1 = UnitConfig::new("lb1", "first", l.lab.dir());
    let mut c2 = UnitConfig::new("lb2", "second", l.lab.dir());
    tweak(&mut c1);
    tweak(&mut c2);
    // One after the other: started together, both may end their initial
    // wait within the same millisecond and be active for a moment, and
    // which one stays is then not the test's choice.
    let e1 = l.election(l.a, &c1)?;
    let t1 = l.takeover(l.a, &c1)?;
    l.wait_role(l.a, Role::Active, T)?;
    wait_for("a's takeover to hold the shared address", Duration::from_secs(5), POLL, || {
        l.takeover_status(l.a).ok().filter(|s| s.holding && s.following).map(drop)
    })?;
    let e2 = l.election(l.b, &c2)?;
    let t2 = l.takeover(l.b, &c2)?;
    l.wait_role(l.b, Role::Standby, T)?;
    wait_for("b's takeover to follow its election", Duration::from_secs(5), POLL, || {
        l.takeover_status(l.b).ok().filter(|s| s.following && !s.holding).map(drop)
    })?;
    Ok((Unit { cfg: c1, election: e1, takeover: t1 }, Unit { cfg: c2, election: e2, takeover: t2 }))
}

/// An independent client (Python grpcio): the services listed by
/// reflection and the health of the takeover service, as JSON.
const HEALTH_PY: &str = r#"
import json, sys, grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection_pb2, reflection_pb2_grpc
ch = grpc.insecure_channel(sys.argv[1])
grpc.channel_ready_future(ch).result(timeout=10)
replies = reflection_pb2_grpc.ServerReflectionStub(ch).ServerReflectionInfo(
    iter([reflection_pb2.ServerReflectionRequest(list_services="")]), timeout=10)
services = sorted(s.name for r in replies for s in r.list_services_response.service)
st = health_pb2_grpc.HealthStub(ch).Check(
    health_pb2.HealthCheckRequest(service="duet.takeover.v1.TakeoverService"), timeout=10)
print(json.dumps({"services": services, "health": health_pb2.HealthCheckResponse.ServingStatus.Name(st.status)}))
"#;

/// The takeover service's health in `host` ("SERVING", "NOT_SERVING"),
/// checking on the way that reflection lists it.
fn takeover_health(l: &PairLab, host: HostId) -> anyhow::Result<String> {
    let out = l.lab.run(host, &["python3", "-c", HEALTH_PY, "127.0.0.1:7871"])?;
    let v: serde_json::Value = serde_json::from_str(out.trim()).with_context(|| format!("python said {out:?}"))?;
    let listed = v["services"].as_array().is_some_and(|s| s.iter().any(|s| s == "duet.takeover.v1.TakeoverService"));
    ensure!(listed, "reflection does not list the takeover service: {v}");
    Ok(v["health"].as_str().unwrap_or_default().to_owned())
}

/// Whether `host` has the shared address on `ifname` (any prefix).
fn has(l: &PairLab, host: HostId, ifname: &str) -> bool {
    l.lab.addr_present(host, ifname, SHARED).unwrap_or(false)
}

/// The link-layer address the client has for the shared address, if any.
fn client_neigh(l: &PairLab) -> anyhow::Result<Option<String>> {
    let out = l.lab.run(l.c, &["ip", "neigh", "show", SHARED])?;
    let mut words = out.split_whitespace();
    while let Some(w) = words.next() {
        if w == "lladdr" {
            return Ok(words.next().map(str::to_owned));
        }
    }
    Ok(None)
}

/// A kernel parameter of `ifname` inside `host`.
fn sysctl(l: &PairLab, host: HostId, ifname: &str, param: &str) -> anyhow::Result<String> {
    Ok(l.lab.run(host, &["cat", &format!("/proc/sys/net/ipv4/conf/{ifname}/{param}")])?.trim().to_owned())
}

/// Whether interface `ifname` exists inside `host`.
fn link_exists(l: &PairLab, host: HostId, ifname: &str) -> bool {
    l.lab.run_status(host, &["ip", "link", "show", "dev", ifname]).is_ok_and(|o| o.status.success())
}

/// A gratuitous ARP seen by tcpdump: when, from which MAC.
#[derive(Debug, Clone, PartialEq)]
struct Garp {
    at: f64,
    src_mac: String,
}

/// Starts `tcpdump -e` for ARP on the client's eth0.
fn capture_arp(l: &mut PairLab) -> anyhow::Result<Proc> {
    let p = l.lab.spawn(l.c, "arp", &["tcpdump", "-l", "-n", "-e", "-tt", "-i", "eth0", "arp"], &[])?;
    p.wait_log("listening on", Duration::from_secs(5))?;
    Ok(p)
}

/// The gratuitous ARPs for the shared address in a tcpdump `-e -tt -n` log.
fn parse_garps(log: &str) -> Vec<Garp> {
    let needle = format!("who-has {SHARED} tell {SHARED},");
    log.lines()
        .filter(|l| l.contains(&needle) && l.contains("ff:ff:ff:ff:ff:ff"))
        .filter_map(|l| {
            let mut it = l.split_whitespace();
            let at = it.next()?.parse().ok()?;
            Some(Garp { at, src_mac: it.next()?.to_owned() })
        })
        .collect()
}

/// Who held the shared address while an episode was watched.
#[derive(Debug, Default)]
struct Episode {
    samples: u32,
    /// Times both units were seen holding it (must stay 0).
    both: u32,
    /// The longest stretch with neither holding it, as sampled.
    longest_neither: Duration,
    /// When b was first seen holding it, after the start.
    b_from: Option<Duration>,
}

/// Samples both units every ~10 ms for `span` (or until b has held the
/// address alone for `settle`). The unit expected to gain the address (b)
/// is sampled before the one expected to lose it (a): if both then show
/// it, the two holdings really overlapped; the sampling cannot fake it.
fn watch_episode(
    l: &PairLab,
    ifname: &str,
    span: Duration,
    settle: Duration,
    mut kick: impl FnMut(),
) -> anyhow::Result<Episode> {
    let start = Instant::now();
    kick();
    let mut e = Episode::default();
    let mut neither_since: Option<Instant> = None;
    while start.elapsed() < span {
        let b = has(l, l.b, ifname);
        let a = has(l, l.a, ifname);
        let now = Instant::now();
        e.samples += 1;
        if a && b {
            e.both += 1;
        }
        if !a && !b {
            let since = *neither_since.get_or_insert(now);
            e.longest_neither = e.longest_neither.max(now - since);
        } else {
            neither_since = None;
        }
        if b && !a && e.b_from.is_none() {
            e.b_from = Some(now - start);
        }
        if e.b_from.is_some_and(|f| now - start > f + settle) {
            break;
        }
        std::thread::sleep(POLL);
    }
    Ok(e)
}

#[test]
fn the_active_holds_and_announces_the_shared_address_and_the_standby_does_not() {
    lab_test("the_active_holds_and_announces", false, |l| {
        let cap = capture_arp(l)?;
        let (ua, ub) = pair(l, |c| c.extra.push_str("[takeover]\ngarp_refresh_s = 1\n"))?;
        ensure!(l.lab.addr_present(l.a, "eth0", SHARED_CIDR)?, "the active has no {SHARED_CIDR} on eth0");
        ensure!(!has(l, l.b, "eth0"), "the standby must not hold {SHARED}");
        let mac_a = l.lab.mac(l.a, "eth0")?;
        let garps =
            wait_for("3 gratuitous ARPs for the shared address at the client", Duration::from_secs(3), POLL, || {
                let g = parse_garps(&cap.log());
                (g.len() >= 3).then_some(g)
            })?;
        ensure!(garps.iter().all(|g| g.src_mac == mac_a), "GARPs not from the active's MAC {mac_a}: {garps:?}");
        // The burst: 3 frames, 20 ms apart, the first at once.
        let spread = garps[2].at - garps[0].at;
        ensure!((0.035..0.2).contains(&spread), "burst of 3 spread over {spread:.3} s, expected about 0.040 s");

        let sa = l.takeover_status(l.a)?;
        ensure!(sa.holding && sa.following && sa.role == Role::Active as i32, "{sa:?}");
        ensure!(sa.garps_sent >= 3 && sa.addresses.len() == 1 && sa.addresses[0].present, "{sa:?}");
        ensure!(sa.addresses[0].address == SHARED_CIDR && sa.addresses[0].device == "eth0", "{sa:?}");
        ensure!(sa.drift_repairs == 0 && sa.failsafe_releases == 0 && sa.last_error.is_empty(), "{sa:?}");
        let sb = l.takeover_status(l.b)?;
        ensure!(!sb.holding && sb.following && sb.role == Role::Standby as i32 && sb.garps_sent == 0, "{sb:?}");
        ensure!(!sb.addresses[0].present, "{sb:?}");

        // The election saw the report (T4) of the applied role.
        let es = l.status(l.a)?;
        let t = es.takeover.context("no takeover status in the election")?;
        ensure!(t.following && t.ok && t.applied_role == Role::Active as i32, "{t:?}");
        ensure!(t.first_garp_at.is_some() && t.addresses_at.is_some(), "{t:?}");
        ensure!(takeover_health(l, l.a)? == "SERVING", "a's takeover is not SERVING");
        ensure!(takeover_health(l, l.b)? == "SERVING", "b's takeover is not SERVING");
        ua.takeover.wait_log("holding shared addresses: 198.18.0.10/24 on eth0", Duration::from_secs(1))?;
        ub.takeover.wait_log("not holding the shared addresses (role ", Duration::from_secs(1))?;
        // The client reaches the shared address at the active.
        ensure!(l.lab.ping(l.c, SHARED)?, "ping {SHARED} from the client");
        ensure!(client_neigh(l)?.as_deref() == Some(mac_a.as_str()), "client's ARP entry is not the active's MAC");
        // T3: one more gratuitous ARP every second (garp_refresh_s = 1).
        let burst_end = garps[2].at;
        let refreshes = wait_for("two refreshes", Duration::from_secs(4), Duration::from_millis(50), || {
            let r: Vec<Garp> = parse_garps(&cap.log()).into_iter().filter(|g| g.at > burst_end + 0.5).collect();
            (r.len() >= 2).then_some(r)
        })?;
        let gap = refreshes[1].at - refreshes[0].at;
        ensure!((0.8..1.3).contains(&gap), "refreshes {gap:.3} s apart, expected 1 s");
        ensure!(refreshes.iter().all(|g| g.src_mac == mac_a), "{refreshes:?}");
        Ok(())
    });
}

#[test]
fn drift_is_repaired_at_once_and_counted_on_both_units() {
    lab_test("drift_is_repaired", false, |l| {
        let (ua, ub) = pair(l, |_| {})?;
        // Active: the shared address removed by hand comes back.
        let t0 = Instant::now();
        l.lab.run(l.a, &["ip", "addr", "del", SHARED_CIDR, "dev", "eth0"])?;
        wait_for(
            "the shared address re-added on the active",
            Duration::from_secs(1),
            Duration::from_millis(5),
            || has(l, l.a, "eth0").then_some(()),
        )?;
        let readded = t0.elapsed();
        // Standby: the shared address added by hand goes away.
        let t1 = Instant::now();
        l.lab.run(l.b, &["ip", "addr", "add", SHARED_CIDR, "dev", "eth0"])?;
        wait_for(
            "the shared address removed on the standby",
            Duration::from_secs(1),
            Duration::from_millis(5),
            || (!has(l, l.b, "eth0")).then_some(()),
        )?;
        let removed = t1.elapsed();
        eprintln!("drift repaired: re-added on the active after {readded:?}, removed on the standby after {removed:?}");
        // Let the periodic pass run too: the service's own changes must not count.
        std::thread::sleep(Duration::from_millis(1500));
        let sa = l.takeover_status(l.a)?;
        ensure!(sa.drift_repairs == 1, "active: one repair expected: {sa:?}");
        ensure!(sa.recent_repairs[0].what.contains("198.18.0.10/24 re-added on eth0"), "{sa:?}");
        ensure!(sa.holding && sa.addresses[0].present, "{sa:?}");
        let sb = l.takeover_status(l.b)?;
        ensure!(sb.drift_repairs == 1, "standby: one repair expected: {sb:?}");
        ensure!(sb.recent_repairs[0].what.contains("198.18.0.10/24 removed from eth0"), "{sb:?}");
        ua.takeover
            .wait_log("drift repaired: 198.18.0.10/24 re-added on eth0 (removed by hand?)", Duration::from_secs(1))?;
        ub.takeover.wait_log("drift repaired: 198.18.0.10/24 removed from eth0", Duration::from_secs(1))?;
        // A re-added address is announced again (burst of 3 on top of the first).
        ensure!(sa.garps_sent >= 6, "no fresh burst after the repair: {sa:?}");
        // Another prefix added by hand on the standby is not the unit's either.
        l.lab.run(l.b, &["ip", "addr", "add", &format!("{SHARED}/32"), "dev", "eth0"])?;
        wait_for("the /32 copy removed on the standby", Duration::from_secs(2), Duration::from_millis(5), || {
            (!has(l, l.b, "eth0")).then_some(())
        })?;
        Ok(())
    });
}

#[test]
fn virtual_mac_keeps_the_clients_arp_entry_across_a_failover() {
    lab_test("virtual_mac_keeps_the_clients_arp_entry", false, |l| {
        let (mut ua, mut ub) = pair(l, |c| c.extra.push_str("[takeover]\nvmac = true\n"))?;
        // The active: the address on the macvlan with the virtual MAC only.
        ensure!(l.lab.mac(l.a, VMAC_DEV)? == VMAC, "a's {VMAC_DEV} does not have the virtual MAC");
        ensure!(l.lab.addr_present(l.a, VMAC_DEV, SHARED_CIDR)?, "a: no {SHARED_CIDR} on {VMAC_DEV}");
        ensure!(!has(l, l.a, "eth0"), "a: the shared address must not be on eth0 itself");
        ensure!(sysctl(l, l.a, "eth0", "arp_ignore")? == "1", "a: eth0 arp_ignore");
        ensure!(sysctl(l, l.a, "eth0", "arp_announce")? == "2", "a: eth0 arp_announce");
        ensure!(sysctl(l, l.a, VMAC_DEV, "arp_ignore")? == "1", "a: {VMAC_DEV} arp_ignore");
        // The standby: no macvlan, its parameters untouched.
        ensure!(!link_exists(l, l.b, VMAC_DEV), "the standby must have no {VMAC_DEV}");
        let b_arp_ignore = sysctl(l, l.b, "eth0", "arp_ignore")?;
        let b_arp_announce = sysctl(l, l.b, "eth0", "arp_announce")?;
        let sa = l.takeover_status(l.a)?;
        ensure!(sa.vmac_enabled && sa.vmacs.len() == 1 && sa.vmacs[0].present && sa.vmacs[0].mac == VMAC, "{sa:?}");
        ensure!(sa.addresses[0].device == VMAC_DEV && sa.addresses[0].present, "{sa:?}");

        // Drift: the macvlan deleted by hand is back at once, with its address.
        l.lab.run(l.a, &["ip", "link", "del", VMAC_DEV])?;
        wait_for("a's macvlan recreated", Duration::from_secs(1), Duration::from_millis(5), || {
            l.lab.addr_present(l.a, VMAC_DEV, SHARED_CIDR).ok().filter(|p| *p).map(drop)
        })?;
        ensure!(l.lab.mac(l.a, VMAC_DEV)? == VMAC, "the recreated {VMAC_DEV} lacks the virtual MAC");
        ensure!(sysctl(l, l.a, VMAC_DEV, "arp_ignore")? == "1", "a: recreated {VMAC_DEV} arp_ignore");
        let sa = l.takeover_status(l.a)?;
        ensure!(sa.drift_repairs == 1 && sa.recent_repairs[0].what.contains("dv10.eth0 recreated on eth0"), "{sa:?}");

        ensure!(l.lab.ping(l.c, SHARED)?, "ping {SHARED} before the failover");
        let before = client_neigh(l)?;
        ensure!(before.as_deref() == Some(VMAC), "client's ARP entry before the failover: {before:?}");
        // The client's ARP entry for a's own address is a's own MAC, not the virtual one.
        ensure!(l.lab.ping(l.c, UNIT1)?, "ping {UNIT1}");
        let own = l.lab.run(l.c, &["ip", "neigh", "show", UNIT1])?;
        ensure!(!own.contains(VMAC), "a's own address learnt at the virtual MAC: {own}");

        // Crash the active: both services killed, its link down.
        ua.election.kill()?;
        ua.takeover.kill()?;
        l.lab.link_down(l.a, "eth0")?;
        l.wait_role(l.b, Role::Active, Duration::from_secs(6))?;
        wait_for("b to hold the address on its macvlan", Duration::from_secs(2), POLL, || {
            l.lab.addr_present(l.b, VMAC_DEV, SHARED_CIDR).ok().filter(|p| *p).map(drop)
        })?;
        ensure!(l.lab.mac(l.b, VMAC_DEV)? == VMAC, "b's {VMAC_DEV} does not have the virtual MAC");
        wait_for(
            "the client to reach the shared address at b",
            Duration::from_secs(5),
            Duration::from_millis(100),
            || l.lab.ping(l.c, SHARED).ok().filter(|ok| *ok).map(drop),
        )?;
        let after = client_neigh(l)?;
        ensure!(after.as_deref() == Some(VMAC), "client's ARP entry after the failover: {after:?}");
        ensure!(sysctl(l, l.b, "eth0", "arp_ignore")? == "1", "b: eth0 arp_ignore while active");
        let sb = l.takeover_status(l.b)?;
        eprintln!(
            "virtual MAC takeover on b: role event received -> first GARP {:.3} ms (macvlan created, address added)",
            sb.garp_latency_us as f64 / 1e3
        );

        // Stopping b's takeover releases everything and puts the parameters back.
        let status = ub.takeover.terminate(Duration::from_secs(5))?;
        ensure!(status.is_some_and(|s| s.success()), "b's takeover did not exit 0 within 5 s: {status:?}");
        ensure!(!link_exists(l, l.b, VMAC_DEV), "b's {VMAC_DEV} left behind");
        ensure!(sysctl(l, l.b, "eth0", "arp_ignore")? == b_arp_ignore, "b: eth0 arp_ignore not restored");
        ensure!(sysctl(l, l.b, "eth0", "arp_announce")? == b_arp_announce, "b: eth0 arp_announce not restored");
        ensure!(ub.takeover.log().contains("released shared addresses"), "{}", ub.takeover.log());
        Ok(())
    });
}

/// Checks an episode against T4: never both, on neither for less than one
/// HA timeout, then the new active reachable (at its own MAC, or at the
/// virtual MAC when the address lives on `ifname` = the macvlan).
fn check_one_clean_failover(l: &PairLab, e: &Episode, what: &str, ifname: &str) -> anyhow::Result<()> {
    eprintln!(
        "{what}: {} samples, both held: {}, longest with neither: {:?}, b held it after {:?}",
        e.samples, e.both, e.longest_neither, e.b_from
    );
    ensure!(e.both == 0, "{what}: the shared address was seen on both units {} time(s)", e.both);
    ensure!(e.b_from.is_some(), "{what}: b never took the shared address over");
    ensure!(e.longest_neither < HA_TIMEOUT, "{what}: neither unit held it for {:?}", e.longest_neither);
    ensure!(l.role(l.b) == Some(Role::Active), "{what}: b is not active");
    ensure!(!has(l, l.a, ifname) && has(l, l.b, ifname), "{what}: the address is not on b only");
    let mac_b = if ifname == VMAC_DEV { VMAC.to_owned() } else { l.lab.mac(l.b, "eth0")? };
    wait_for("the client to reach the shared address at b", Duration::from_secs(3), Duration::from_millis(50), || {
        l.lab.ping(l.c, SHARED).ok().filter(|ok| *ok).map(drop)
    })?;
    let n = client_neigh(l)?;
    ensure!(n.as_deref() == Some(mac_b.as_str()), "{what}: client's ARP entry {n:?} is not b's MAC {mac_b}");
    Ok(())
}

#[test]
fn killing_the_takeover_on_the_active_fails_over_once_and_cleanly() {
    lab_test("killing_the_takeover_on_the_active", false, |l| {
        let (mut ua, _ub) = pair(l, |_| {})?;
        ensure!(l.lab.ping(l.c, SHARED)?, "ping {SHARED} before");
        let e = watch_episode(l, "eth0", Duration::from_secs(8), Duration::from_secs(1), || {
            ua.takeover.kill().expect("killing a's takeover");
        })?;
        check_one_clean_failover(l, &e, "takeover killed on the active", "eth0")?;
        // The election resigned for it: at once, not after the HA timeout.
        ensure!(e.b_from.is_some_and(|f| f < Duration::from_secs(1)), "the handover took {:?}", e.b_from);
        ensure!(l.role(l.a) == Some(Role::Standby), "a is not standby");
        let sb = l.takeover_status(l.b)?;
        ensure!(sb.holding && sb.following, "{sb:?}");
        Ok(())
    });
}

#[test]
fn killing_the_takeover_on_the_active_with_virtual_mac_fails_over_once_and_cleanly() {
    lab_test("killing_the_takeover_vmac", false, |l| {
        let (mut ua, _ub) = pair(l, |c| c.extra.push_str("[takeover]\nvmac = true\n"))?;
        ensure!(l.lab.ping(l.c, SHARED)?, "ping {SHARED} before");
        let e = watch_episode(l, VMAC_DEV, Duration::from_secs(8), Duration::from_secs(1), || {
            ua.takeover.kill().expect("killing a's takeover");
        })?;
        check_one_clean_failover(l, &e, "takeover killed on the active (virtual MAC)", VMAC_DEV)?;
        // The election removed the virtual MAC device for its dead takeover.
        ensure!(!link_exists(l, l.a, VMAC_DEV), "a's {VMAC_DEV} left behind");
        ensure!(l.lab.mac(l.b, VMAC_DEV)? == VMAC, "b's {VMAC_DEV}");
        Ok(())
    });
}

#[test]
fn killing_the_election_on_the_active_fails_over_once_and_cleanly() {
    lab_test("killing_the_election_on_the_active", false, |l| {
        let (mut ua, _ub) = pair(l, |_| {})?;
        ensure!(l.lab.ping(l.c, SHARED)?, "ping {SHARED} before");
        let killed = Instant::now();
        let e = watch_episode(l, "eth0", Duration::from_secs(10), Duration::from_secs(1), || {
            ua.election.kill().expect("killing a's election");
        })?;
        check_one_clean_failover(l, &e, "election killed on the active", "eth0")?;
        let sa = l.takeover_status(l.a)?;
        ensure!(sa.failsafe_releases == 1 && !sa.holding && !sa.following, "{sa:?}");
        ensure!(sa.failsafe_after_ms == 1900, "fail-safe window {} ms, expected 1900", sa.failsafe_after_ms);
        ua.takeover.wait_log("fail-safe: no role stream from the election", Duration::from_secs(1))?;
        ensure!(takeover_health(l, l.a)? == "NOT_SERVING", "a's takeover must not be SERVING without its election");
        eprintln!("fail-safe release logged; {:?} after the kill", killed.elapsed());

        // The election comes back (as standby: b is active) and the
        // takeover follows it again without taking anything.
        ua.election = l.election_labeled(l.a, &ua.cfg, "election-lb1-again")?;
        l.wait_role(l.a, Role::Standby, Duration::from_secs(6))?;
        wait_for("a's takeover to follow the new election", Duration::from_secs(5), POLL, || {
            l.takeover_status(l.a).ok().filter(|s| s.following).map(drop)
        })?;
        let sa = l.takeover_status(l.a)?;
        ensure!(!sa.holding && sa.role == Role::Standby as i32 && sa.stream_lost_at.is_none(), "{sa:?}");
        ensure!(!has(l, l.a, "eth0") && has(l, l.b, "eth0"), "the address must stay on b only");
        ua.takeover.wait_log("is back after", Duration::from_secs(1))?;
        ensure!(takeover_health(l, l.a)? == "SERVING", "a's takeover is not SERVING again");
        Ok(())
    });
}

/// The one-minute load average and the number of cores.
fn load_and_cores() -> (f64, f64) {
    let load = std::fs::read_to_string("/proc/loadavg")
        .ok()
        .and_then(|s| s.split_whitespace().next()?.parse().ok())
        .unwrap_or(0.0);
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
    (load, cores as f64)
}

/// One planned handover from `from` to `to`, timed: the role change in
/// `to`'s election, the takeover's first GARP (its own clock and the
/// client's capture).
fn timed_handover(l: &PairLab, cap: &Proc, from: HostId, to: HostId) -> anyhow::Result<(f64, f64, f64)> {
    let started = epoch_now();
    let r = grpc(&l.lab.ns(from), |mut c| async move {
        Ok(c.handover(epb::HandoverRequest { timeout_ms: 3000 }).await?.into_inner())
    })?;
    ensure!(r.confirmed, "handover not confirmed: {r:?}");
    // The partner confirmed by its adverts: it took over already. Reading
    // the status only afterwards keeps the test's own calls (which the
    // services answer on the same cores) out of what is measured.
    std::thread::sleep(Duration::from_millis(200));
    // The figures come from the services' own timestamps, so a generous
    // wait costs nothing: under a loaded CI run one status call was seen
    // to take the whole of an earlier 3 s bound, with the GARP long sent.
    let to_status = wait_for("the new active's first GARP", Duration::from_secs(10), POLL, || {
        l.takeover_status(to).ok().filter(|s| s.holding && secs!(s.first_garp_at).is_some_and(|g| g > started))
    })?;
    let es = l.status(to)?;
    ensure!(es.role == Role::Active as i32, "{:?} is not active", l.lab.ns(to));
    let role_at = secs!(es.role_since).context("no role_since")?;
    let garp_at = secs!(to_status.first_garp_at).context("no first_garp_at")?;
    let received_at = secs!(to_status.role_received_at).context("no role_received_at")?;
    let mac = l.lab.mac(to, "eth0")?;
    let wire = wait_for("the GARP at the client", Duration::from_secs(2), POLL, || {
        parse_garps(&cap.log()).into_iter().find(|g| g.at > started && g.src_mac == mac)
    })?;
    // The report reached the election too.
    let t = es.takeover.context("no takeover status in the election")?;
    ensure!(t.ok && t.applied_role == Role::Active as i32, "{t:?}");
    Ok(((garp_at - role_at) * 1e3, (garp_at - received_at) * 1e3, (wire.at - role_at) * 1e3))
}

#[test]
fn role_change_to_first_garp_is_well_under_5_ms() {
    lab_test("role_change_to_first_garp", false, |l| {
        let cap = capture_arp(l)?;
        let (_ua, _ub) = pair(l, |_| {})?;
        let (mut service, mut internal, mut wire) = (Vec::new(), Vec::new(), Vec::new());
        let mut from = (l.a, l.b);
        for k in 0..8 {
            // The partner's status (sent every second) must show it standby
            // before it is handed the role.
            std::thread::sleep(Duration::from_millis(1300));
            let (s, i, w) = timed_handover(l, &cap, from.0, from.1)?;
            eprintln!(
                "handover {k}: election role change -> first GARP {s:.3} ms (takeover: event received -> first GARP {i:.3} ms; on the wire at the client {w:.3} ms)"
            );
            service.push(s);
            internal.push(i);
            wire.push(w);
            from = (from.1, from.0);
        }
        let max = |v: &[f64]| v.iter().copied().fold(f64::MIN, f64::max);
        let (ms, mi, mw) = (median(&mut service.clone()), median(&mut internal.clone()), median(&mut wire.clone()));
        eprintln!(
            "GARP latency over {} takeovers: role change -> first GARP median {ms:.3} ms, max {:.3} ms; event received -> first GARP median {mi:.3} ms, max {:.3} ms; role change -> GARP on the wire median {mw:.3} ms, max {:.3} ms",
            service.len(),
            max(&service),
            max(&internal),
            max(&wire)
        );
        ensure!(service.iter().chain(&wire).all(|v| *v >= -0.5), "a GARP before the role change? {service:?} {wire:?}");
        // The takeover service's own part, event received -> first GARP.
        ensure!(mi < 5.0, "median role event received -> first GARP {mi:.3} ms, goal well under 5 ms");
        ensure!(max(&service) < 50.0, "a takeover took {:.3} ms", max(&service));
        // The whole path also crosses the election and the scheduler: on a
        // box busier than its cores (parallel builds), it measures the load.
        let (load, cores) = load_and_cores();
        if load > cores {
            eprintln!("warning: load {load:.1} on {cores} cores: the 5 ms goal from the role change is not asserted");
        } else {
            ensure!(
                ms < 5.0 && mw < 5.0,
                "median role change -> first GARP {ms:.3} ms ({mw:.3} ms on the wire), goal 5 ms"
            );
        }
        if max(&service) >= 5.0 {
            eprintln!("warning: at least one takeover above 5 ms (load {load:.1} on {cores} cores)");
        }
        Ok(())
    });
}

#[test]
fn sigterm_releases_everything_and_exits_cleanly() {
    lab_test("sigterm_releases_everything", false, |l| {
        let (mut ua, _ub) = pair(l, |_| {})?;
        let t0 = Instant::now();
        let status = ua.takeover.terminate(Duration::from_secs(5))?;
        let took = t0.elapsed();
        ensure!(status.is_some_and(|s| s.success()), "takeover did not exit 0 on SIGTERM: {status:?}");
        ensure!(took < Duration::from_secs(3), "stopping took {took:?}");
        ensure!(!has(l, l.a, "eth0"), "the shared address is left on a");
        ua.takeover.wait_log(
            "released shared addresses: 198.18.0.10/24 on eth0 (takeover service stopping)",
            Duration::from_secs(1),
        )?;
        // Its election hands over at once: the takeover service is gone.
        l.wait_role(l.b, Role::Active, Duration::from_secs(2))?;
        wait_for("b to hold the address", Duration::from_secs(2), POLL, || has(l, l.b, "eth0").then_some(()))?;
        Ok(())
    });
}

/// A scripted stand-in for the election, served from inside a unit's
/// namespace on the election's address: the test decides every role event,
/// when streams end and whether connections are refused, and sees every
/// report. It checks the takeover service's side of the role stream
/// contract (sequence rules, kinds, fail-safe, reconnection) precisely.
mod scripted {
    use std::sync::{Arc, Mutex, PoisonError};

    use duet_proto::election::v1 as epb;
    use duet_proto::election::v1::election_service_server::{ElectionService, ElectionServiceServer};
    use tokio::sync::{mpsc, oneshot};
    use tonic::codegen::tokio_stream::wrappers::ReceiverStream;
    use tonic::{Request, Response, Status};

    type Item = Result<epb::WatchRoleResponse, Status>;

    #[derive(Debug, Default)]
    pub(super) struct State {
        /// The newest event: the snapshot a new stream starts with.
        pub current: epb::WatchRoleResponse,
        /// The open stream, if any.
        sender: Option<mpsc::Sender<Item>>,
        /// Refuse WatchRole (as if the election were gone).
        pub refuse: bool,
        pub reports: Vec<epb::ReportAppliedRequest>,
        pub streams_opened: u32,
        pub followers: Vec<String>,
    }

    #[derive(Debug, Clone, Default)]
    pub(super) struct Election(pub Arc<Mutex<State>>);

    impl Election {
        pub(super) fn with<T>(&self, f: impl FnOnce(&mut State) -> T) -> T {
            f(&mut self.0.lock().unwrap_or_else(PoisonError::into_inner))
        }

        /// Sends `ev` on the open stream (and makes it the current state).
        pub(super) fn send(&self, ev: epb::WatchRoleResponse) -> anyhow::Result<()> {
            let tx = self.with(|s| {
                s.current = ev.clone();
                s.sender.clone()
            });
            let tx = tx.ok_or_else(|| anyhow::anyhow!("no stream open"))?;
            tx.blocking_send(Ok(ev)).map_err(|_| anyhow::anyhow!("the stream is closed"))
        }

        /// Ends the open stream.
        pub(super) fn end_stream(&self) {
            self.with(|s| s.sender = None);
        }
    }

    #[tonic::async_trait]
    impl ElectionService for Election {
        async fn get_status(
            &self,
            _: Request<epb::GetStatusRequest>,
        ) -> Result<Response<epb::GetStatusResponse>, Status> {
            Err(Status::unimplemented("scripted"))
        }

        type WatchRoleStream = ReceiverStream<Item>;

        async fn watch_role(
            &self,
            req: Request<epb::WatchRoleRequest>,
        ) -> Result<Response<Self::WatchRoleStream>, Status> {
            let (tx, rx) = mpsc::channel(16);
            let first = self.with(|s| {
                if s.refuse {
                    return Err(Status::unavailable("scripted: refusing"));
                }
                s.streams_opened += 1;
                s.followers.push(req.get_ref().follower.clone());
                s.sender = Some(tx.clone());
                let mut snap = s.current.clone();
                snap.kind = epb::RoleEventKind::Snapshot as i32;
                Ok(snap)
            })?;
            tx.send(Ok(first)).await.map_err(|_| Status::internal("closed"))?;
            Ok(Response::new(ReceiverStream::new(rx)))
        }

        async fn handover(&self, _: Request<epb::HandoverRequest>) -> Result<Response<epb::HandoverResponse>, Status> {
            Err(Status::unimplemented("scripted"))
        }

        async fn clear_pacified(
            &self,
            _: Request<epb::ClearPacifiedRequest>,
        ) -> Result<Response<epb::ClearPacifiedResponse>, Status> {
            Err(Status::unimplemented("scripted"))
        }

        async fn report_applied(
            &self,
            req: Request<epb::ReportAppliedRequest>,
        ) -> Result<Response<epb::ReportAppliedResponse>, Status> {
            self.with(|s| s.reports.push(req.into_inner()));
            Ok(Response::new(epb::ReportAppliedResponse {}))
        }

        async fn set_readiness(
            &self,
            req: Request<epb::SetReadinessRequest>,
        ) -> Result<Response<epb::SetReadinessResponse>, Status> {
            Ok(Response::new(epb::SetReadinessResponse { ready: req.into_inner().ready }))
        }
    }

    /// Serves `election` on 127.0.0.1:7870 inside namespace `ns` until the
    /// returned sender is dropped or fired.
    pub(super) fn serve(
        ns: &str,
        election: Election,
    ) -> anyhow::Result<(oneshot::Sender<()>, std::thread::JoinHandle<()>)> {
        let file = std::fs::File::open(format!("/run/netns/{ns}"))?;
        let (stop, stopped) = oneshot::channel::<()>();
        let handle = std::thread::Builder::new().name("scripted election".into()).spawn(move || {
            nix::sched::setns(&file, nix::sched::CloneFlags::CLONE_NEWNET).expect("entering the namespace");
            let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().expect("runtime");
            rt.block_on(async move {
                let addr = "127.0.0.1:7870".parse().expect("address");
                let server = tonic::transport::Server::builder().add_service(ElectionServiceServer::new(election));
                if let Err(e) = server.serve_with_shutdown(addr, async { drop(stopped.await) }).await {
                    eprintln!("scripted election: {e}");
                }
            });
        })?;
        Ok((stop, handle))
    }
}

fn scripted_event(epoch: u64, seq: u64, kind: epb::RoleEventKind, role: Role) -> epb::WatchRoleResponse {
    epb::WatchRoleResponse {
        epoch,
        seq,
        kind: kind as i32,
        role: role as i32,
        previous_role: 0,
        at: None,
        reason: "scripted".into(),
        ha_timeout_ms: 600,
        advert_interval_ms: 200,
        vhid: 10,
        config_generation: 0,
        traceparent: String::new(),
    }
}

#[test]
fn the_role_stream_contract_is_kept_with_a_scripted_election() {
    use epb::RoleEventKind::{Changed, Parameters, Reannounce, Snapshot};
    lab_test("role_stream_contract", false, |l| {
        const E: u64 = 0xe1;
        let fake = scripted::Election::default();
        fake.with(|s| s.current = scripted_event(E, 1, Snapshot, Role::Standby));
        let (stop, server) = scripted::serve(&l.lab.ns(l.a), fake.clone())?;
        let cfg = UnitConfig::new("lb1", "first", l.lab.dir());
        let mut t = l.takeover(l.a, &cfg)?;
        let status = |l: &PairLab| l.takeover_status(l.a);
        let wait = |what: &str, l: &PairLab, f: &dyn Fn(&tpb::GetStatusResponse) -> bool| {
            wait_for(what, Duration::from_secs(3), POLL, || status(l).ok().filter(|s| f(s)).map(drop))
        };
        wait("following, standby", l, &|s| s.following && s.seq == 1 && !s.holding)?;
        ensure!(fake.with(|s| s.followers == ["takeover"]), "WatchRole without follower \"takeover\"");

        // In order: hold, reported at once.
        fake.send(scripted_event(E, 2, Changed, Role::Active))?;
        wait("holding after seq 2", l, &|s| s.holding && s.seq == 2)?;
        ensure!(has(l, l.a, "eth0"), "no shared address after Active");
        wait_for("the report of seq 2", Duration::from_secs(2), POLL, || {
            fake.with(|s| s.reports.iter().any(|r| r.seq == 2 && r.ok && r.role == Role::Active as i32 && r.epoch == E))
                .then_some(())
        })?;
        let r = fake.with(|s| s.reports.iter().find(|r| r.seq == 2).cloned()).context("report")?;
        ensure!(r.follower == "takeover" && r.addresses_at.is_some() && r.first_garp_at.is_some(), "{r:?}");

        // A gap: the newest message is the truth.
        fake.send(scripted_event(E, 5, Changed, Role::Standby))?;
        wait("released after the gap", l, &|s| !s.holding && s.seq == 5)?;
        ensure!(!has(l, l.a, "eth0"), "shared address kept after Standby");
        t.wait_log("missed 2 role event(s) before seq 5", Duration::from_secs(1))?;

        // Old and repeated numbers are ignored.
        fake.send(scripted_event(E, 4, Changed, Role::Active))?;
        fake.send(scripted_event(E, 5, Changed, Role::Active))?;
        std::thread::sleep(Duration::from_millis(300));
        let s = status(l)?;
        ensure!(!s.holding && s.seq == 5 && !has(l, l.a, "eth0"), "a duplicate was applied: {s:?}");

        // Re-announce while holding: one fresh burst of 3.
        fake.send(scripted_event(E, 6, Changed, Role::Active))?;
        wait("holding after seq 6", l, &|s| s.holding && s.seq == 6)?;
        // (The burst of seq 2 was cut short by the release of seq 5: an
        // address given up is never announced again.)
        std::thread::sleep(Duration::from_millis(150));
        let sent = status(l)?.garps_sent;
        fake.send(scripted_event(E, 7, Reannounce, Role::Active))?;
        wait("the re-announcement", l, &|s| s.garps_sent == sent + 3 && s.seq == 7)?;
        t.wait_log("re-announcing shared addresses (scripted)", Duration::from_secs(1))?;

        // New parameters: the fail-safe window follows them.
        let mut p = scripted_event(E, 8, Parameters, Role::Active);
        p.ha_timeout_ms = 900;
        p.advert_interval_ms = 300;
        fake.send(p)?;
        wait("the new fail-safe window", l, &|s| s.failsafe_after_ms == 570 && s.seq == 8 && s.holding)?;

        // The stream ends and comes back at once: nothing is given up.
        let opened = fake.with(|s| s.streams_opened);
        fake.end_stream();
        wait_for("a new stream", Duration::from_secs(2), POLL, || {
            (fake.with(|s| s.streams_opened) > opened).then_some(())
        })?;
        wait("following again", l, &|s| s.following && s.holding)?;
        ensure!(status(l)?.failsafe_releases == 0 && has(l, l.a, "eth0"), "the address was given up");

        // The election is gone: the fail-safe gives the address up after
        // max(900 - 300, 300) ms less 5 %.
        fake.with(|s| s.refuse = true);
        let lost = Instant::now();
        fake.end_stream();
        wait_for("the fail-safe release", Duration::from_secs(3), Duration::from_millis(5), || {
            (!has(l, l.a, "eth0")).then_some(())
        })?;
        let after = lost.elapsed();
        eprintln!("fail-safe released the address {after:?} after the stream ended (window 570 ms)");
        ensure!(after >= Duration::from_millis(540) && after < Duration::from_millis(1200), "released after {after:?}");
        let s = status(l)?;
        ensure!(s.failsafe_releases == 1 && !s.holding && !s.following && s.stream_lost_at.is_some(), "{s:?}");
        t.wait_log("fail-safe: no role stream from the election for", Duration::from_secs(1))?;

        // It comes back (same epoch): its snapshot is applied, whatever its number.
        fake.with(|s| {
            s.refuse = false;
            s.current = scripted_event(E, 8, Snapshot, Role::Active);
        });
        wait("holding again after the stream returned", l, &|s| s.holding && s.following)?;
        ensure!(has(l, l.a, "eth0"), "the address is not back");
        t.wait_log("is back after", Duration::from_secs(1))?;

        // A restarted election (new epoch) starting in Init: release.
        fake.with(|s| s.current = scripted_event(0xe2, 1, Snapshot, Role::Init));
        fake.end_stream();
        wait("released for the new epoch", l, &|s| !s.holding && s.epoch == 0xe2 && s.seq == 1)?;
        ensure!(!has(l, l.a, "eth0"), "the address kept for a new election in Init");
        t.wait_log("the election restarted", Duration::from_secs(1))?;
        // Every report names the follower and one of the two epochs.
        ensure!(fake.with(|s| s.reports.iter().all(|r| r.follower == "takeover" && (r.epoch == E || r.epoch == 0xe2))));

        let code = t.terminate(Duration::from_secs(5))?;
        ensure!(code.is_some_and(|c| c.success()), "takeover exit: {code:?}");
        drop(stop);
        server.join().map_err(|_| anyhow::anyhow!("the scripted election panicked"))?;
        Ok(())
    });
}
