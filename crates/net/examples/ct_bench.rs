//! Throughput of `Conntrack::upsert` and `Conntrack::dump`, each size in a
//! fresh network namespace (duet-testkit, so it needs root).
//!
//! ```text
//! cargo run --release -p duet-net --example ct_bench [-- COUNT...]
//! ```
//!
//! For each COUNT (default 10000 and 100000) it creates that many
//! established, assured TCP flows to a VIP, each DNAT'd to one of 100 real
//! servers with TCP state and mark (the heaviest kind the replicator
//! writes), then writes the same flows again (each one found existing and
//! updated), then dumps the table. It prints entries/s and µs per entry for
//! each step. The goal is at least 200,000 entries/s, at most 5 µs each.

use std::net::Ipv4Addr;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, ensure};
use duet_net::conntrack::{
    Conntrack, Flow, IP_CT_TCP_FLAG_SACK_PERM, IP_CT_TCP_FLAG_WINDOW_SCALE, IPS_ASSURED, IPS_SEEN_REPLY, PROTO_TCP,
    TCP_CONNTRACK_ESTABLISHED, TcpInfo, Tuple,
};
use duet_testkit::{Lab, in_netns, require_root};

const VIP: Ipv4Addr = Ipv4Addr::new(198, 18, 0, 10);
/// Source ports per client address.
const PORTS_PER_CLIENT: u32 = 50_000;

/// Flow `i`: client 198.18.128.0 + i / 50000, port 10000 + i % 50000, to the
/// VIP's port 443, DNAT'd to real server 198.19.0.(1 + i % 100):8443.
fn flow(i: u32) -> Flow {
    let client = Ipv4Addr::from(u32::from(Ipv4Addr::new(198, 18, 128, 0)) + i / PORTS_PER_CLIENT);
    let sport = 10_000 + (i % PORTS_PER_CLIENT) as u16;
    let real = Ipv4Addr::new(198, 19, 0, 1 + (i % 100) as u8);
    Flow {
        orig: Tuple { proto: PROTO_TCP, src: client, dst: VIP, sport, dport: 443 },
        reply: Tuple { proto: PROTO_TCP, src: real, dst: client, sport: 8443, dport: sport },
        status: IPS_SEEN_REPLY | IPS_ASSURED,
        timeout_s: 3600,
        mark: i,
        zone: 0,
        tcp: Some(TcpInfo {
            state: TCP_CONNTRACK_ESTABLISHED,
            wscale_orig: 7,
            wscale_reply: 7,
            flags_orig: IP_CT_TCP_FLAG_WINDOW_SCALE | IP_CT_TCP_FLAG_SACK_PERM,
            flags_reply: IP_CT_TCP_FLAG_WINDOW_SCALE | IP_CT_TCP_FLAG_SACK_PERM,
        }),
    }
}

fn line(step: &str, count: usize, took: Duration) {
    let secs = took.as_secs_f64();
    println!(
        "{step:<24} {count:>8} entries {:>9.1} ms {:>10.0} entries/s {:>7.2} µs/entry",
        secs * 1e3,
        count as f64 / secs,
        secs * 1e6 / count as f64
    );
}

fn main() -> Result<()> {
    if !require_root("ct_bench") {
        return Ok(());
    }
    let counts: Vec<u32> = match std::env::args().skip(1).map(|a| a.parse()).collect::<Result<Vec<_>, _>>()? {
        counts if counts.is_empty() => vec![10_000, 100_000],
        counts => counts,
    };
    let mut lab = Lab::new("ctbench")?;
    for (n, &count) in counts.iter().enumerate() {
        ensure!(count <= 250 * PORTS_PER_CLIENT, "at most {} flows", 250 * PORTS_PER_CLIENT);
        let host = lab.host(&format!("b{n}"))?;
        let mut ct = in_netns(&lab.ns(host), Conntrack::open)??;
        let flows: Vec<Flow> = (0..count).map(flow).collect();
        let count = flows.len();

        let start = Instant::now();
        let report = ct.upsert(&flows)?;
        line("upsert (create)", count, start.elapsed());
        ensure!(report.created == count, "{report:?}");

        let start = Instant::now();
        let report = ct.upsert(&flows)?;
        line("upsert (all existing)", count, start.elapsed());
        ensure!(report.updated == count, "{report:?}");

        let start = Instant::now();
        let dumped = ct.dump()?;
        line("dump", dumped.len(), start.elapsed());
        ensure!(dumped.len() == count, "dumped {} of {count}", dumped.len());
        let sample = dumped.iter().find(|f| f.orig == flows[count / 2].orig).context("a flow is missing")?;
        ensure!(sample.dnat() == flows[count / 2].dnat(), "{sample:?}");
        println!();
    }
    Ok(lab.teardown()?)
}
