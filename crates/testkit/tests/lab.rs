//! The harness tested on a real kernel; every test needs root and skips
//! (or, with `CI` set, fails) without it.

mod common;

use std::net::UdpSocket;
use std::panic::{self, AssertUnwindSafe};
use std::path::PathBuf;
use std::process::Command;
use std::time::Duration;

use common::netns_names;
use duet_testkit::{Lab, in_netns, require_root, wait_for};
use nix::sys::signal::Signal;

const SECOND: Duration = Duration::from_secs(1);

fn namespaces_with(prefix: &str) -> Vec<String> {
    netns_names().into_iter().filter(|n| n.starts_with(prefix)).collect()
}

/// Whether `pid` is dead: no such process, or a zombie awaiting its reaper
/// (a killed orphan is reaped by init a moment later).
fn dead(pid: u32) -> bool {
    match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        // The state follows the parenthesised command name.
        Ok(stat) => stat.rsplit_once(')').is_some_and(|(_, rest)| rest.trim_start().starts_with('Z')),
        Err(_) => true,
    }
}

fn assert_dies(pid: u32) {
    wait_for(&format!("pid {pid} to die"), 5 * SECOND, Duration::from_millis(20), || dead(pid).then_some(())).unwrap();
}

/// Waits for ping from `lab`'s host `from` to `to` to succeed (`want`) or fail.
fn expect_ping(lab: &Lab, from: &str, to: &str, want: bool) {
    let host = lab.host_id(from);
    wait_for(&format!("ping {from} -> {to} == {want}"), 10 * SECOND, Duration::from_millis(100), || {
        (lab.ping(host, to).unwrap() == want).then_some(())
    })
    .unwrap();
}

#[test]
fn hosts_ping_each_other_and_cut_off_stops_it() {
    if !require_root("hosts_ping_each_other_and_cut_off_stops_it") {
        return;
    }
    let lab = Lab::simple("ping", &["a", "b"]).unwrap();
    let (a, b) = (lab.host_id("a"), lab.host_id("b"));
    assert!(lab.ping(a, "198.18.0.2").unwrap());
    assert!(lab.ping(b, "198.18.0.1").unwrap());

    lab.cut_off(b).unwrap();
    assert!(!lab.ping(a, "198.18.0.2").unwrap());
    assert!(!lab.ping(b, "198.18.0.1").unwrap());
    lab.reconnect(b).unwrap();
    expect_ping(&lab, "a", "198.18.0.2", true);
    expect_ping(&lab, "b", "198.18.0.1", true);

    lab.link_down(a, "eth0").unwrap();
    assert!(!lab.ping(b, "198.18.0.1").unwrap());
    lab.link_up(a, "eth0").unwrap();
    expect_ping(&lab, "b", "198.18.0.1", true);
}

#[test]
fn loss_rule_blocks_until_removed() {
    if !require_root("loss_rule_blocks_until_removed") {
        return;
    }
    let lab = Lab::simple("loss", &["a", "b"]).unwrap();
    let a = lab.host_id("a");
    assert!(lab.ping(a, "198.18.0.2").unwrap());

    let all = lab.add_loss("", 100).unwrap();
    assert!(!lab.ping(a, "198.18.0.2").unwrap());
    lab.remove_rule(all).unwrap();
    expect_ping(&lab, "a", "198.18.0.2", true);

    // Filtered and partial loss rules are accepted and removable; VRRP/CARP
    // loss leaves ping alone.
    let carp = lab.add_loss("ip protocol 112", 100).unwrap();
    let some = lab.add_loss("ip protocol icmp", 0).unwrap();
    let half = lab.add_loss("udp dport 9", 50).unwrap();
    assert!(lab.ping(a, "198.18.0.2").unwrap());
    for rule in [carp, some, half] {
        lab.remove_rule(rule).unwrap();
    }
    assert!(lab.add_loss("", 101).is_err());
}

#[test]
fn switch_rules_cut_one_direction() {
    if !require_root("switch_rules_cut_one_direction") {
        return;
    }
    let mut lab = Lab::new("oneway").unwrap();
    let lan = lab.segment("lan").unwrap();
    let wan = lab.segment("wan").unwrap();
    let a = lab.host("a").unwrap();
    let b = lab.host("b").unwrap();
    let mac = lab.attach(a, lan, "eth0", &["198.18.0.1/24"]).unwrap();
    lab.attach(b, lan, "eth0", &["198.18.0.2/24"]).unwrap();
    lab.attach(a, wan, "eth1", &["198.18.1.1/24", "198.18.1.11/24"]).unwrap();
    lab.attach(b, wan, "eth1", &["198.18.1.2/24"]).unwrap();

    assert_eq!(lab.mac(a, "eth0").unwrap(), mac);
    assert_eq!(mac.len(), 17);
    assert!(lab.addr_present(a, "eth1", "198.18.1.11").unwrap());
    assert!(lab.addr_present(a, "eth1", "198.18.1.11/24").unwrap());
    assert!(!lab.addr_present(a, "eth1", "198.18.1.11/32").unwrap());
    assert!(!lab.addr_present(a, "eth0", "198.18.1.11").unwrap());
    assert!(!lab.addr_present(a, "eth9", "198.18.1.11").unwrap());
    assert!(lab.ping(a, "198.18.1.2").unwrap());

    // Frames from b's lan port are dropped: the lan is dead both ways for
    // ping, the wan untouched.
    let port = lab.switch_port(b, "eth0").unwrap().to_owned();
    assert_eq!(port, "b-eth0");
    let rule = lab.add_switch_rule(&format!("iifname \"{port}\" drop")).unwrap();
    assert!(!lab.ping(a, "198.18.0.2").unwrap());
    assert!(lab.ping(a, "198.18.1.2").unwrap());
    lab.remove_rule(rule).unwrap();
    expect_ping(&lab, "a", "198.18.0.2", true);

    lab.teardown().unwrap();
    assert!(namespaces_with(lab.prefix()).is_empty());
    lab.teardown().unwrap();
    assert!(lab.host("c").is_err());
}

#[test]
fn lab_drop_kills_spawned_processes_and_deletes_everything() {
    if !require_root("lab_drop_kills_spawned_processes_and_deletes_everything") {
        return;
    }
    let mut lab = Lab::simple("drop", &["a"]).unwrap();
    let a = lab.host_id("a");
    let prefix = lab.prefix().to_owned();
    let dir = lab.dir().to_owned();
    assert_eq!(namespaces_with(&prefix).len(), 2, "host and switch");

    let sleeper = lab.spawn(a, "sleeper", &["sleep", "1000"], &[]).unwrap();
    // A shell with a background child: the child shares the process group.
    let shell = lab.spawn(a, "shell", &["sh", "-c", "sleep 1000 & echo started; wait"], &[]).unwrap();
    shell.wait_log("started", 5 * SECOND).unwrap();
    let out = Command::new("ip").args(["netns", "pids", &lab.ns(a)]).output().unwrap();
    let inside: Vec<u32> =
        String::from_utf8_lossy(&out.stdout).split_whitespace().filter_map(|p| p.parse().ok()).collect();
    assert!(inside.contains(&sleeper.pid()) && inside.len() >= 3, "{inside:?}");

    // The `Proc`s outlive the lab: the lab's teardown must stop them anyway.
    drop(lab);
    for pid in &inside {
        assert_dies(*pid);
    }
    assert!(namespaces_with(&prefix).is_empty());
    assert!(!dir.exists());
    drop((sleeper, shell));
}

#[test]
fn lab_dropped_during_panic_tears_down() {
    if !require_root("lab_dropped_during_panic_tears_down") {
        return;
    }
    let mut seen: Option<(String, u32, PathBuf)> = None;
    let result = panic::catch_unwind(AssertUnwindSafe(|| {
        let mut lab = Lab::simple("panic", &["a", "b"]).unwrap();
        let a = lab.host_id("a");
        let p = lab.spawn(a, "sleeper", &["sleep", "1000"], &[]).unwrap();
        seen = Some((lab.prefix().to_owned(), p.pid(), lab.dir().to_owned()));
        std::mem::forget(p); // only the lab can stop it now
        panic!("deliberate panic with a lab alive");
    }));
    assert!(result.is_err());
    let (prefix, pid, dir) = seen.unwrap();
    assert!(namespaces_with(&prefix).is_empty(), "{:?}", namespaces_with(&prefix));
    assert_dies(pid);
    assert!(!dir.exists());
}

#[test]
fn in_netns_runs_inside_the_host() {
    if !require_root("in_netns_runs_inside_the_host") {
        return;
    }
    let lab = Lab::simple("innetns", &["a", "b"]).unwrap();
    let ns = lab.ns(lab.host_id("a"));
    let (bound, dev) = in_netns(&ns, || {
        let bound = UdpSocket::bind("198.18.0.1:0").is_ok();
        (bound, std::fs::read_to_string("/proc/thread-self/net/dev").unwrap())
    })
    .unwrap();
    assert!(bound);
    assert!(dev.contains("eth0:"), "{dev}");
    assert!(UdpSocket::bind("198.18.0.1:0").is_err(), "the test thread stayed outside");

    // A socket made inside keeps working outside: b answers a's datagram.
    let sock = in_netns(&ns, || UdpSocket::bind("198.18.0.1:0").unwrap()).unwrap();
    let peer = in_netns(&lab.ns(lab.host_id("b")), || UdpSocket::bind("198.18.0.2:4000").unwrap()).unwrap();
    sock.send_to(b"hi", "198.18.0.2:4000").unwrap();
    peer.set_read_timeout(Some(5 * SECOND)).unwrap();
    let mut buf = [0; 8];
    let (n, from) = peer.recv_from(&mut buf).unwrap();
    assert_eq!(&buf[..n], b"hi");
    assert_eq!(from.ip().to_string(), "198.18.0.1");

    assert!(in_netns("dk-no-such-namespace", || ()).is_err());
    let panicked = panic::catch_unwind(|| in_netns(&ns, || panic!("inside")));
    assert!(panicked.is_err());
}

#[test]
fn proc_logs_signals_and_termination() {
    if !require_root("proc_logs_signals_and_termination") {
        return;
    }
    let mut lab = Lab::simple("proc", &["a"]).unwrap();
    let a = lab.host_id("a");

    let mut p =
        lab.spawn(a, "env", &["sh", "-c", "echo \"value=$DUET_X\"; exec sleep 1000"], &[("DUET_X", "42")]).unwrap();
    p.wait_log("value=42", 5 * SECOND).unwrap();
    assert_eq!(p.log_path(), lab.dir().join("env.log"));
    assert!(p.try_wait().unwrap().is_none());
    p.signal(Signal::SIGUSR1).unwrap(); // sleep dies of it
    let status =
        wait_for("exit after SIGUSR1", 5 * SECOND, Duration::from_millis(20), || p.try_wait().unwrap()).unwrap();
    assert!(!status.success());
    assert!(p.signal(Signal::SIGTERM).is_err(), "reaped: no more signals");

    // Obeys SIGTERM: terminate reports the exit.
    let mut p = lab.spawn(a, "polite", &["sleep", "1000"], &[]).unwrap();
    assert!(p.terminate(5 * SECOND).unwrap().is_some());

    // Ignores SIGTERM: killed after the grace period.
    let mut p =
        lab.spawn(a, "stubborn", &["sh", "-c", "trap '' TERM; echo armed; while :; do sleep 0.1; done"], &[]).unwrap();
    p.wait_log("armed", 5 * SECOND).unwrap();
    assert!(p.terminate(Duration::from_millis(300)).unwrap().is_none());
    assert_dies(p.pid());
    p.kill().unwrap();

    // Bounded waits explain themselves with the log tail.
    let p = lab.spawn(a, "quiet", &["sh", "-c", "echo some noise; sleep 1000"], &[]).unwrap();
    let err = p.wait_log("never", Duration::from_millis(300)).unwrap_err().to_string();
    assert!(err.contains("some noise") && err.contains("within"), "{err}");
    let p = lab.spawn(a, "quitter", &["sh", "-c", "echo bye; exit 3"], &[]).unwrap();
    let err = p.wait_log("never", 10 * SECOND).unwrap_err().to_string();
    assert!(err.contains("exited") && err.contains("bye"), "{err}");

    // `run` reports failures with stderr, `run_status` does not fail.
    let err = lab.run(a, &["sh", "-c", "echo oops >&2; exit 1"]).unwrap_err().to_string();
    assert!(err.contains("oops"), "{err}");
    assert_eq!(lab.run_status(a, &["sh", "-c", "exit 7"]).unwrap().status.code(), Some(7));
    assert_eq!(lab.run(a, &["echo", "hello"]).unwrap(), "hello\n");
    lab.set_cmd_timeout(Duration::from_millis(300));
    assert!(lab.run(a, &["sleep", "5"]).unwrap_err().to_string().contains("timed out"));
}

/// A three-member etcd cluster with TLS: it answers, keeps answering with
/// one member killed, stops with two, and a restarted member rejoins. The
/// lab's teardown leaves no etcd behind.
#[test]
fn an_etcd_cluster_runs_in_the_lab_and_loses_its_quorum_with_two_members_down() {
    if !require_root("an_etcd_cluster_runs_in_the_lab_and_loses_its_quorum_with_two_members_down") {
        return;
    }
    let mut lab = Lab::new("etcd").unwrap();
    let lan = lab.segment("lan").unwrap();
    let addrs = ["198.18.0.21/24", "198.18.0.22/24", "198.18.0.23/24"];
    let mut c = duet_testkit::EtcdCluster::start(&mut lab, lan, &addrs, &["lb1"], true).unwrap();
    assert_eq!(c.endpoints(), ["198.18.0.21:2379", "198.18.0.22:2379", "198.18.0.23:2379"]);
    assert!(c.certs().join("lb1.pem").exists());
    c.etcdctl(&lab, "lb1", &["put", "/duet/test/k", "v1"]).unwrap();
    c.kill(0).unwrap();
    assert!(c.etcdctl(&lab, "lb1", &["get", "/duet/test/k", "--print-value-only"]).unwrap().contains("v1"));
    c.etcdctl(&lab, "lb1", &["put", "/duet/test/k", "v2"]).unwrap();
    c.kill(1).unwrap();
    assert!(c.etcdctl(&lab, "lb1", &["put", "/duet/test/k", "v3"]).is_err(), "one of three: no quorum");
    c.restart(&mut lab, 1).unwrap();
    c.wait_healthy(&lab, 20 * SECOND).unwrap();
    // (The put that timed out may still have been applied once the quorum
    // came back: a timeout is not a failure in etcd.)
    let v = c.etcdctl(&lab, "lb1", &["get", "/duet/test/k", "--print-value-only"]).unwrap();
    assert!(v.contains("v2") || v.contains("v3"), "{v}");
    c.etcdctl(&lab, "lb1", &["put", "/duet/test/k", "v4"]).unwrap();
    let hosts: Vec<String> = (0..3).map(|k| lab.ns(c.host(k))).collect();
    drop(c);
    lab.teardown().unwrap();
    for ns in hosts {
        assert!(!netns_names().contains(&ns), "{ns} torn down");
    }
    assert!(duet_testkit::pids_in("nonexistent-ns").is_err());
}
