//! `duet-demo`: a duet pair in network namespaces for a newcomer to watch.
//!
//! Builds two units, a client and a real server on private bridges
//! (198.18.0.0/24 in front, 198.19.0.0/24 behind), runs a whole unit
//! (`duet unit`: election, takeover, configsync, replicator) on each with
//! mutual-TLS certificates made for the occasion, adds a virtual service
//! through the active unit's configsync, opens client connections through
//! it, shows `duetctl status` on both units, crashes the active unit
//! (SIGKILL of everything, links down), and shows the failover and what
//! the client saw. Everything is torn down at the end. Needs root.
//! Run it with `scripts/demo.sh`.

use std::time::{Duration, Instant};

use anyhow::Context;
use duet_proto::common::v1::Role;
use duet_testkit::wait_for;
use duet_tests::lblab::LbLab;
use duet_tests::{SHARED, bin};

const CONNS: usize = 50;

fn ctl(l: &LbLab, host: duet_testkit::HostId, args: &[&str]) -> String {
    let exe = bin("duetctl").to_string_lossy().into_owned();
    let mut argv = vec![exe.as_str()];
    argv.extend_from_slice(args);
    l.l.lab.run(host, &argv).unwrap_or_else(|e| format!("(duetctl failed: {e:#})\n"))
}

fn indent(s: &str) -> String {
    s.lines().map(|l| format!("    {l}\n")).collect()
}

fn main() -> anyhow::Result<()> {
    if !nix::unistd::Uid::effective().is_root() {
        anyhow::bail!("the demo builds network namespaces: run it as root (sudo scripts/demo.sh)");
    }
    println!("duet demo: units lb1 and lb2, a client and a real server in network namespaces");
    println!("  front 198.18.0.0/24: lb1 .1, lb2 .2, shared .10, client .100");
    println!("  back  198.19.0.0/24: lb1 .1, lb2 .2, shared .254, real server .100 (its gateway: .254)\n");
    let mut l = LbLab::new("demo").context("building the namespaces")?;
    let c1 = l.unit_config("lb1", "first", "lb1", "lb2")?;
    let c2 = l.unit_config("lb2", "second", "lb2", "lb1")?;
    let _server = l.server()?;
    let _u1 = l.l.unit(l.l.a, &c1)?;
    let _u2 = l.l.unit(l.l.b, &c2)?;
    println!("started `duet unit` on both (HA timeout 3 s; peer links with mutual TLS); electing ...");
    l.l.wait_role(l.l.a, Role::Active, Duration::from_secs(20))?;
    l.l.wait_role(l.l.b, Role::Standby, Duration::from_secs(20))?;
    println!("adding virtual service web {SHARED}:80 -> 198.19.0.100:8080 on the active unit (configsync) ...");
    l.add_service(l.l.a, None)?;

    let (_client, ready, json) = l.client(CONNS, 10)?;
    wait_for("the client's connections", Duration::from_secs(20), Duration::from_millis(100), || {
        ready.exists().then_some(())
    })?;
    l.wait_flows(l.l.b, CONNS as u64, Duration::from_secs(10))?;
    println!("the client keeps {CONNS} TCP connections through the shared address, a message every 100 ms each\n");
    std::thread::sleep(Duration::from_millis(1500));
    println!("lb1$ duetctl status\n{}", indent(&ctl(&l, l.l.a, &["status"])));
    println!("lb2$ duetctl status\n{}", indent(&ctl(&l, l.l.b, &["status"])));

    println!("crashing lb1: SIGKILL of everything in it, then its links down ...");
    let t0 = Instant::now();
    duet_testkit::kill_all_in(&l.l.lab.ns(l.l.a))?;
    l.l.lab.link_down(l.l.a, "eth0")?;
    l.l.lab.link_down(l.l.a, "eth1")?;
    let took = l.l.wait_role(l.l.b, Role::Active, Duration::from_secs(10))?;
    println!("lb2 took over {:.2} s after the crash (HA timeout 3 s)\n", took.as_secs_f64());
    std::thread::sleep(Duration::from_millis(1500));
    println!("lb2$ duetctl status\n{}", indent(&ctl(&l, l.l.b, &["status"])));

    let r = duet_tests::lblab::client_report(&json, Duration::from_secs(30))?;
    println!(
        "the client: {} of {CONNS} connections still open and answering, {} reset, {} hung; longest silence p50 {:.0} ms, max {:.0} ms",
        r.ok, r.reset, r.hung, r.gap_p50_ms, r.gap_max_ms
    );
    println!("(the silence is the HA timeout plus TCP's retransmission back-off; the state was already on lb2)");
    println!("\n{:.1} s since the crash; tearing down the namespaces.", t0.elapsed().as_secs_f64());
    l.l.lab.teardown()?;
    Ok(())
}
