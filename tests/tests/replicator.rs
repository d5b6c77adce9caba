//! The replicator in namespaces (SPEC R1-R5): established connections
//! through the virtual service survive a crash of the active unit with no
//! reset (state before address), HAProxy's stick-table entries are on the
//! new active, the standby is resynced after a restart, expiry is honoured
//! on both units, and a peer with the wrong certificate is refused.

use std::time::{Duration, Instant};

use duet_proto::common::v1::Role;
use duet_proto::replicator::v1 as rp;
use duet_testkit::{HostId, Proc, wait_for};
use duet_tests::lblab::{self, LbLab, lb_test, replicator_call};
use duet_tests::*;

const T: Duration = Duration::from_secs(20);

struct Pair {
    c1: UnitConfig,
    c2: UnitConfig,
    u1: Option<Proc>,
    u2: Option<Proc>,
    _server: Proc,
}

/// Units lb1 (a, first) and lb2 (b, second) with the replicator, the echo
/// server, and the virtual service programmed on both.
fn start(l: &mut LbLab, extra: &str) -> anyhow::Result<Pair> {
    let mut c1 = l.unit_config("lb1", "first", "lb1", "lb2")?;
    let mut c2 = l.unit_config("lb2", "second", "lb2", "lb1")?;
    c1.extra.push_str(extra);
    c2.extra.push_str(extra);
    let server = l.server()?;
    let u1 = l.l.unit(l.l.a, &c1)?;
    let u2 = l.l.unit(l.l.b, &c2)?;
    l.l.wait_role(l.l.a, Role::Active, T)?;
    l.l.wait_role(l.l.b, Role::Standby, T)?;
    l.add_service(l.l.a, None)?;
    Ok(Pair { c1, c2, u1: Some(u1), u2: Some(u2), _server: server })
}

/// UDP flows to the shared address in `h`'s kernel.
fn udp_flows(l: &LbLab, h: HostId) -> usize {
    l.l.lab
        .run(h, &["conntrack", "-L", "-p", "udp", "--orig-dst", SHARED])
        .map(|o| o.lines().filter(|l| l.starts_with("udp")).count())
        .unwrap_or(0)
}

/// SIGKILL of everything in the unit's namespace, then its links down
/// (in this order, so that nothing of it can resign first).
fn crash(l: &LbLab, host: HostId, unit: &mut Option<Proc>) -> anyhow::Result<()> {
    duet_testkit::kill_all_in(&l.l.lab.ns(host))?;
    l.l.lab.link_down(host, "eth0")?;
    l.l.lab.link_down(host, "eth1")?;
    if let Some(mut p) = unit.take() {
        p.kill()?;
    }
    Ok(())
}

#[test]
fn established_connections_survive_a_crash_of_the_active_without_a_reset() {
    lb_test("rp_survive", |l| {
        let mut p = start(l, "")?;
        // Resets sent to the client (its own, when it closes at the end, do
        // not count).
        let rst = l.l.lab.spawn(
            l.l.c,
            "rst-capture",
            &[
                "tcpdump",
                "-i",
                "eth0",
                "-n",
                "-l",
                "-U",
                &format!("src host {SHARED} and tcp[tcpflags] & tcp-rst != 0"),
            ],
            &[],
        )?;
        let k = 100;
        let (_cl, ready, json) = l.client(k, 12)?;
        wait_for("all connections open", T, Duration::from_millis(100), || ready.exists().then_some(()))?;
        let held = l.wait_flows(l.l.b, k as u64, Duration::from_secs(10))?;
        let sa = l.replicator_status(l.l.a)?;
        eprintln!("standby holds {} flows, lag p50 {} µs p99 {} µs", held.flows, sa.lag_p50_us, sa.lag_p99_us);
        // Ahead of time: the standby's kernel already has every flow, NAT'd
        // to the real server.
        let kernel = l.kernel_flows(l.l.b)?;
        assert!(kernel.len() >= k, "the standby's kernel holds {} of {k} flows: {kernel:?}", kernel.len());
        assert!(
            kernel.iter().all(|f| f.contains(&format!("src={}", lblab::SERVER))),
            "a flow on the standby is not bound to the real server: {kernel:?}"
        );
        assert!(sa.partner_connected && sa.mode == "sending", "active replicator: {sa:?}");
        // The operator sees it in the pair's status.
        let ctl = bin("duetctl").to_string_lossy().into_owned();
        let out = l.l.lab.run(l.l.a, &[&ctl, "status"])?;
        assert!(
            out.contains(&format!("replication: sending (linked to lb2), {k} flows")) && out.contains("lag "),
            "duetctl status on lb1:\n{out}"
        );
        let out = l.l.lab.run(l.l.b, &[&ctl, "replication"])?;
        assert!(
            out.contains("replication: receiving (linked to lb1)") && out.contains("data plane: generation"),
            "{out}"
        );

        std::thread::sleep(Duration::from_secs(1));
        let t0 = Instant::now();
        crash(l, l.l.a, &mut p.u1)?;
        l.l.wait_role(l.l.b, Role::Active, T)?;
        eprintln!("lb2 active {:?} after the crash", t0.elapsed());
        let r = lblab::client_report(&json, Duration::from_secs(30))?;
        eprintln!("client: {r:?}");
        let st = l.l.status(l.l.b)?;
        let tk = st.takeover.unwrap_or_default();
        eprintln!("takeover on lb2: state installed {} after {} µs", tk.state_installed, tk.state_wait_us);
        assert!(tk.state_installed, "the takeover did not see the state installed: {tk:?}");
        assert_eq!((r.ok, r.reset, r.hung, r.failed_connect), (k, 0, 0, 0), "connections through the failover: {r:?}");
        let resets = rst.log().lines().filter(|l| l.contains("[R")).count();
        assert_eq!(resets, 0, "the client saw resets:\n{}", rst.log());
        drop(p);
        Ok(())
    });
}

#[test]
fn a_restarted_standby_is_resynced_and_expiry_is_honoured_on_both_units() {
    lb_test("rp_resync", |l| {
        let mut p = start(l, "")?;
        let k = 20;
        let (_cl, ready, _json) = l.client(k, 30)?;
        wait_for("all connections open", T, Duration::from_millis(100), || ready.exists().then_some(()))?;
        l.wait_flows(l.l.b, k as u64, Duration::from_secs(10))?;

        // A proxy reports persistence entries on the active: one short-lived.
        let ns_a = l.l.lab.ns(l.l.a);
        let l_a = l.l.a;
        replicator_call(&ns_a, |mut c| async move {
            c.report_persistence(rp::ReportPersistenceRequest {
                entries: vec![
                    rp::PersistenceEntry {
                        table: "cookies".into(),
                        key: "u1".into(),
                        server: "s1".into(),
                        ttl_ms: 600_000,
                    },
                    rp::PersistenceEntry {
                        table: "cookies".into(),
                        key: "u2".into(),
                        server: "s2".into(),
                        ttl_ms: 3_000,
                    },
                ],
            })
            .await?;
            Ok(())
        })?;
        // A bad report is refused whole, naming the field.
        let bad = replicator_call(&ns_a, |mut c| async move {
            Ok(c.report_persistence(rp::ReportPersistenceRequest {
                entries: vec![
                    rp::PersistenceEntry {
                        table: "cookies".into(),
                        key: "u3".into(),
                        server: "s1".into(),
                        ttl_ms: 1000,
                    },
                    rp::PersistenceEntry { table: "cookies".into(), key: "u4".into(), server: "s1".into(), ttl_ms: 0 },
                ],
            })
            .await)
        })?;
        let e = bad.expect_err("a zero time to live is refused");
        assert!(e.message().contains("entries[1].ttl_ms"), "{e:?}");

        let (ns_a2, ns_b) = (l.l.lab.ns(l.l.a), l.l.lab.ns(l.l.b));
        let list = move |h: HostId| -> anyhow::Result<Vec<rp::PersistenceEntry>> {
            let ns = if h == l_a { ns_a2.clone() } else { ns_b.clone() };
            replicator_call(&ns, |mut c| async move {
                Ok(c.list_persistence(rp::ListPersistenceRequest { table: "cookies".into() })
                    .await?
                    .into_inner()
                    .entries)
            })
        };
        wait_for("both entries on the standby", Duration::from_secs(3), Duration::from_millis(50), || {
            list(l.l.b).ok().filter(|e| e.len() == 2)
        })?;
        assert!(list(l.l.b)?.iter().all(|e| e.key != "u3"), "half of a refused report was taken");
        // Expiry on both units.
        wait_for("u2 expired on both", Duration::from_secs(8), Duration::from_millis(200), || {
            let a = list(l.l.a).ok()?;
            let b = list(l.l.b).ok()?;
            (a.len() == 1 && b.len() == 1 && a[0].key == "u1" && b[0].key == "u1").then_some(())
        })?;

        // A UDP flow with a short kernel timeout on the active: replicated,
        // then gone from both kernels when it times out.
        l.l.lab.run(l.l.a, &["sysctl", "-qw", "net.netfilter.nf_conntrack_udp_timeout=4"])?;
        l.l.lab.run(l.l.b, &["sysctl", "-qw", "net.netfilter.nf_conntrack_udp_timeout=4"])?;
        let udp = |l: &LbLab, h: HostId| udp_flows(l, h);
        l.l.lab.run(l.l.c, &["bash", "-c", &format!("echo x > /dev/udp/{SHARED}/9")])?;
        wait_for("the UDP flow on both units", Duration::from_secs(5), Duration::from_millis(100), || {
            (udp(l, l.l.a) == 1 && udp(l, l.l.b) == 1).then_some(())
        })?;
        wait_for("the UDP flow expired on both units", Duration::from_secs(15), Duration::from_millis(200), || {
            (udp(l, l.l.a) == 0 && udp(l, l.l.b) == 0).then_some(())
        })?;

        // Restart the standby: it comes back empty and is resynced in bulk.
        p.u2.take().map(|mut u| u.terminate(Duration::from_secs(10))).transpose()?;
        l.l.lab.run(l.l.b, &["conntrack", "-F"])?;
        p.u2 = Some(l.l.unit(l.l.b, &p.c2)?);
        l.l.wait_role(l.l.b, Role::Standby, T)?;
        l.wait_flows(l.l.b, k as u64, Duration::from_secs(15))?;
        // The flows come in the snapshot's chunks; "done" with the last one.
        wait_for("the resync done on the standby", Duration::from_secs(5), Duration::from_millis(50), || {
            l.replicator_status(l.l.b).ok().filter(|s| s.resync == "done")
        })?;
        assert!(l.kernel_flows(l.l.b)?.len() >= k, "the resync did not reach the standby's kernel");
        wait_for("u1 back on the standby", Duration::from_secs(5), Duration::from_millis(100), || {
            list(l.l.b).ok().filter(|e| e.len() == 1 && e[0].key == "u1")
        })?;
        let sa = l.replicator_status(l.l.a)?;
        assert!(sa.resyncs >= 2, "the active did not resync the restarted standby: {sa:?}");

        // The pair's "L4 updates" off (an HA setting of the image): new
        // flows stay on the active.
        let ctl = bin("duetctl").to_string_lossy().into_owned();
        let out = l.l.lab.run(l.l.a, &[&ctl, "config", "set", "l4_updates=false"])?;
        eprintln!("{out}");
        for h in [l.l.a, l.l.b] {
            wait_for("L4 updates off", Duration::from_secs(5), Duration::from_millis(100), || {
                l.replicator_status(h).ok().filter(|s| !s.l4_updates && s.l7_updates)
            })?;
        }
        l.l.lab.run(l.l.c, &["bash", "-c", &format!("echo x > /dev/udp/{SHARED}/10")])?;
        std::thread::sleep(Duration::from_secs(2));
        assert_eq!((udp(l, l.l.a), udp(l, l.l.b)), (1, 0), "a flow was replicated with L4 updates off");
        drop(p.c1);
        Ok(())
    });
}

#[test]
fn a_peer_with_another_certificate_is_refused_and_nothing_is_installed() {
    lb_test("rp_refuse", |l| {
        // The first unit is lb3 (its own certificate, same CA), where lb2
        // expects lb1: lb2 must refuse everything it sends. (A unit with
        // another unit's certificate does not start at all: duet check.)
        let c1 = l.unit_config("lb3", "first", "lb3", "lb2")?;
        let c2 = l.unit_config("lb2", "second", "lb2", "lb1")?;
        let _server = l.server()?;
        let _u1 = l.l.unit(l.l.a, &c1)?;
        let _u2 = l.l.unit(l.l.b, &c2)?;
        l.l.wait_role(l.l.a, Role::Active, T)?;
        l.l.wait_role(l.l.b, Role::Standby, T)?;
        l.add_service_on(l.l.a, None, &[l.l.a])?;
        let (_cl, ready, _json) = l.client(10, 20)?;
        wait_for("all connections open", T, Duration::from_millis(100), || ready.exists().then_some(()))?;
        l.wait_flows(l.l.a, 10, Duration::from_secs(10))?;
        let sb = wait_for("the refusal counted on lb2", T, Duration::from_millis(200), || {
            l.replicator_status(l.l.b).ok().filter(|s| {
                s.drops.iter().filter(|(k, _)| k.starts_with("refused_peers.")).map(|(_, n)| n).sum::<u64>() >= 2
            })
        })?;
        assert_eq!(sb.flows, 0, "{sb:?}");
        assert!(!sb.partner_connected, "{sb:?}");
        assert!(sb.last_error.contains("lb1"), "the refusal does not say whom it expected: {sb:?}");
        assert!(l.kernel_flows(l.l.b)?.is_empty(), "flows from a stranger were installed");
        let sa = l.replicator_status(l.l.a)?;
        assert!(!sa.partner_connected, "lb1 believes it has a link: {sa:?}");
        assert!(!sa.last_error.is_empty(), "lb1 does not say why it has no link: {sa:?}");
        Ok(())
    });
}

/// `cmd` on HAProxy's runtime API at `sock`.
fn haproxy_cmd(sock: &std::path::Path, cmd: &str) -> anyhow::Result<String> {
    use std::io::{Read, Write};
    let mut s = std::os::unix::net::UnixStream::connect(sock)?;
    s.set_read_timeout(Some(Duration::from_secs(2)))?;
    s.write_all(format!("{cmd}\n").as_bytes())?;
    let mut out = String::new();
    s.read_to_string(&mut out)?;
    Ok(out)
}

/// `key=... server_id=N` of the stick table `be`, as (key, id) pairs.
fn stick_entries(sock: &std::path::Path) -> Vec<(String, u32)> {
    let Ok(out) = haproxy_cmd(sock, "show table be") else { return Vec::new() };
    out.lines()
        .filter(|l| l.starts_with("0x"))
        .filter_map(|l| {
            let key = l.split_whitespace().find_map(|f| f.strip_prefix("key="))?.to_string();
            let id = l.split_whitespace().find_map(|f| f.strip_prefix("server_id="))?.parse().ok()?;
            Some((key, id))
        })
        .collect()
}

#[test]
fn haproxy_stick_table_entries_are_on_the_new_active() {
    lb_test("rp_haproxy", |l| {
        let dir = l.l.lab.dir().to_path_buf();
        let sock = |u: &str| dir.join(format!("haproxy-{u}.sock"));
        // The same HAProxy on both units: clients stick to a server by
        // source address.
        let mut procs = Vec::new();
        let extra = |u: &str| {
            format!(
                "[replicator]\nenabled = true\nrefresh_interval_s = 5\nhaproxy_socket = \"{}\"\nhaproxy_tables = [\"be\"]\nhaproxy_poll_ms = 100\n",
                sock(u).display()
            )
        };
        let mut c1 = l.unit_config("lb1", "first", "lb1", "lb2")?;
        let mut c2 = l.unit_config("lb2", "second", "lb2", "lb1")?;
        // unit_config has a [replicator] section already: replace it.
        for (c, u) in [(&mut c1, "lb1"), (&mut c2, "lb2")] {
            c.extra = c.extra.replace("[replicator]\nenabled = true\nrefresh_interval_s = 5\n", &extra(u));
        }
        for (h, u) in [(l.l.a, "lb1"), (l.l.b, "lb2")] {
            let cfg = dir.join(format!("haproxy-{u}.cfg"));
            std::fs::write(
                &cfg,
                format!(
                    "global\n  stats socket {} mode 600 level admin\ndefaults\n  mode tcp\n  timeout connect 2s\n  timeout client 60s\n  timeout server 60s\nfrontend fe\n  bind 0.0.0.0:8081\n  default_backend be\nbackend be\n  stick-table type ip size 1m expire 30m\n  stick on src\n  server s1 {}:8080 id 1\n  server s2 {}:8082 id 2\n",
                    sock(u).display(),
                    lblab::SERVER,
                    lblab::SERVER
                ),
            )?;
            procs.push(l.l.lab.spawn(
                h,
                &format!("haproxy-{u}"),
                &["haproxy", "-db", "-f", &cfg.to_string_lossy()],
                &[],
            )?);
        }
        let exe = bin("duet-conns").to_string_lossy().into_owned();
        procs.push(l.l.lab.spawn(
            l.s,
            "server2",
            &[&exe, "serve", "--listen", &format!("{}:8082", lblab::SERVER)],
            &[],
        )?);
        let server = l.server()?;
        let mut u1 = Some(l.l.unit(l.l.a, &c1)?);
        let _u2 = l.l.unit(l.l.b, &c2)?;
        l.l.wait_role(l.l.a, Role::Active, T)?;
        l.l.wait_role(l.l.b, Role::Standby, T)?;
        wait_for("HAProxy up on both units", T, Duration::from_millis(100), || {
            (haproxy_cmd(&sock("lb1"), "show info").is_ok() && haproxy_cmd(&sock("lb2"), "show info").is_ok())
                .then_some(())
        })?;

        // The client goes through lb1's HAProxy: an entry for it.
        let talk = |l: &LbLab| {
            l.l.lab.run(
                l.l.c,
                &[
                    "bash",
                    "-c",
                    &format!("exec 3<>/dev/tcp/{SHARED}/8081; echo hello >&3; read -t 3 line <&3; echo $line"),
                ],
            )
        };
        assert!(talk(l)?.contains("hello"), "no answer through lb1's HAProxy");
        let on_a = wait_for("the stick entry on lb1", T, Duration::from_millis(50), || {
            stick_entries(&sock("lb1")).into_iter().find(|(k, _)| k == CLIENT)
        })?;
        // Replicated ahead of time into lb2's HAProxy, same server.
        let t0 = Instant::now();
        let on_b = wait_for("the stick entry on lb2", Duration::from_secs(5), Duration::from_millis(20), || {
            stick_entries(&sock("lb2")).into_iter().find(|(k, _)| k == CLIENT)
        })?;
        eprintln!("stick entry {on_a:?} on lb2 {:?} after it was seen on lb1", t0.elapsed());
        assert_eq!(on_a, on_b);
        let listed = replicator_call(&l.l.lab.ns(l.l.b), |mut c| async move {
            Ok(c.list_persistence(rp::ListPersistenceRequest { table: "haproxy:be".into() })
                .await?
                .into_inner()
                .entries)
        })?;
        assert!(listed.iter().any(|e| e.key == CLIENT && e.server == on_a.1.to_string()), "{listed:?}");

        crash(l, l.l.a, &mut u1)?;
        l.l.wait_role(l.l.b, Role::Active, T)?;
        // The new active's HAProxy sends the client to the same server.
        let answered = wait_for("an answer through lb2's HAProxy", T, Duration::from_millis(200), || {
            talk(l).ok().filter(|o| o.contains("hello"))
        })?;
        drop(answered);
        let after = stick_entries(&sock("lb2"));
        assert!(after.contains(&on_a), "lb2's stick table after the failover: {after:?}, want {on_a:?}");
        drop((procs, server));
        Ok(())
    });
}

/// Whole units (all four services, a virtual service programmed, the
/// replication link up) stop quickly on SIGTERM, the active first (a
/// planned handover) then the new active, and leave no `table ip duet`
/// behind.
#[test]
fn whole_units_stop_within_a_second_and_remove_their_table() {
    lb_test("replicator_stop", |l| {
        let mut p = start(l, "")?;
        l.wait_flows(l.l.b, 0, T)?;
        for (h, u, who) in [(l.l.a, &mut p.u1, "lb1 (active)"), (l.l.b, &mut p.u2, "lb2 (then active)")] {
            let u = u.as_mut().expect("running");
            let tables = l.l.lab.run(h, &["nft", "list", "tables"])?;
            assert!(tables.contains("table ip duet"), "{who}: no table to begin with: {tables}");
            let start = Instant::now();
            let status = u.terminate(Duration::from_secs(15))?;
            let took = start.elapsed();
            assert!(status.is_some_and(|s| s.success()), "{who}: clean exit: {status:?}\n{}", u.log());
            assert!(took < Duration::from_secs(1), "{who} took {took:?} to stop:\n{}", u.log());
            assert!(!u.log().contains("did not stop in time"), "{who}:\n{}", u.log());
            let tables = l.l.lab.run(h, &["nft", "list", "tables"])?;
            assert!(!tables.contains("table ip duet"), "{who} left its table: {tables}\n{}", u.log());
            eprintln!("{who} stopped in {took:?}");
        }
        Ok(())
    });
}
