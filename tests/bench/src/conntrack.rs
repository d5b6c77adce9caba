//! The conntrack benchmark: throughput of duet's ctnetlink layer
//! (`duet_net::conntrack`), which the replicator writes and reads the
//! kernel's table with, each size in a fresh network namespace.
//!
//! For each flow count N it creates N established, assured TCP flows to a
//! VIP, each DNAT'd to one of 100 real servers with TCP state and mark (the
//! heaviest kind the replicator writes) in one `Conntrack::upsert`, then
//! writes the same flows again (each one found existing and updated), then
//! dumps the table, and reports entries/s and µs per entry for each step.
//! The goal is at least 200,000 entries/s, at most 5 µs each.

use std::net::{Ipv4Addr, SocketAddrV4};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, ensure};
use duet_net::conntrack::{
    Conntrack, Flow, IP_CT_TCP_FLAG_SACK_PERM, IP_CT_TCP_FLAG_WINDOW_SCALE, IPS_ASSURED, IPS_SEEN_REPLY, PROTO_TCP,
    TCP_CONNTRACK_ESTABLISHED, TcpInfo, Tuple,
};
use duet_testkit::{Lab, in_netns};

use crate::report::{Goal, aligned};

/// The VIP the flows go to.
const VIP: SocketAddrV4 = SocketAddrV4::new(Ipv4Addr::new(198, 18, 0, 10), 443);
/// Source ports per client address.
const PORTS_PER_CLIENT: u32 = 50_000;
/// The most flows the benchmark can tell apart (250 client addresses).
pub const MAX_FLOWS: u32 = 250 * PORTS_PER_CLIENT;
/// The goal for every step.
pub const GOAL_ENTRIES_PER_S: f64 = 200_000.0;

/// What to run.
#[derive(Debug, Clone, serde::Serialize)]
pub struct ConntrackOptions {
    /// Flow counts, each in a fresh namespace.
    pub flows: Vec<u32>,
}

impl Default for ConntrackOptions {
    fn default() -> Self {
        Self { flows: vec![10_000, 100_000] }
    }
}

/// One step with one flow count.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct Step {
    /// `upsert (create)`, `upsert (all existing)` or `dump`.
    pub step: String,
    pub entries: usize,
    pub ms: f64,
    pub entries_per_s: f64,
    pub us_per_entry: f64,
}

impl Step {
    fn new(step: &str, entries: usize, took: Duration) -> Self {
        let secs = took.as_secs_f64();
        Self {
            step: step.into(),
            entries,
            ms: secs * 1e3,
            entries_per_s: entries as f64 / secs,
            us_per_entry: secs * 1e6 / entries as f64,
        }
    }
}

/// An established, assured TCP flow from `client` to `vip`, DNAT'd to
/// `real`, with window scaling and SACK both ways: what the replicator
/// writes for a live connection through a virtual service.
pub fn established_flow(client: SocketAddrV4, vip: SocketAddrV4, real: SocketAddrV4, mark: u32) -> Flow {
    let tcp = |a: SocketAddrV4, b: SocketAddrV4| Tuple {
        proto: PROTO_TCP,
        src: *a.ip(),
        dst: *b.ip(),
        sport: a.port(),
        dport: b.port(),
    };
    Flow {
        orig: tcp(client, vip),
        reply: tcp(real, client),
        status: IPS_SEEN_REPLY | IPS_ASSURED,
        timeout_s: 3600,
        mark,
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

/// Flow `i`: client 198.18.128.0 + i / 50000, port 10000 + i % 50000, to
/// the VIP's port 443, DNAT'd to real server 198.19.0.(1 + i % 100):8443,
/// mark `i`.
fn flow(i: u32) -> Flow {
    let client = Ipv4Addr::from(u32::from(Ipv4Addr::new(198, 18, 128, 0)) + i / PORTS_PER_CLIENT);
    let sport = 10_000 + (i % PORTS_PER_CLIENT) as u16;
    let real = Ipv4Addr::new(198, 19, 0, 1 + (i % 100) as u8);
    established_flow(SocketAddrV4::new(client, sport), VIP, SocketAddrV4::new(real, 8443), i)
}

/// Runs every count in `opts` in its own namespace of one lab; `progress`
/// sees each step as it is measured.
pub fn run(opts: &ConntrackOptions, mut progress: impl FnMut(u32, &Step)) -> Result<Vec<Vec<Step>>> {
    if let Some(&n) = opts.flows.iter().find(|&&n| n == 0 || n > MAX_FLOWS) {
        anyhow::bail!("{n} flows: from 1 to {MAX_FLOWS}");
    }
    let mut lab = Lab::new("ctbench")?;
    let mut out = Vec::new();
    for (n, &count) in opts.flows.iter().enumerate() {
        let host = lab.host(&format!("b{n}"))?;
        let mut ct = in_netns(&lab.ns(host), Conntrack::open)??;
        let flows: Vec<Flow> = (0..count).map(flow).collect();
        let count_usize = flows.len();
        let mut steps = Vec::new();
        let mut done = |s: Step| {
            progress(count, &s);
            steps.push(s);
        };

        let start = Instant::now();
        let report = ct.upsert(&flows)?;
        done(Step::new("upsert (create)", count_usize, start.elapsed()));
        ensure!(report.created == count_usize, "{report:?}");

        let start = Instant::now();
        let report = ct.upsert(&flows)?;
        done(Step::new("upsert (all existing)", count_usize, start.elapsed()));
        ensure!(report.updated == count_usize, "{report:?}");

        let start = Instant::now();
        let dumped = ct.dump()?;
        done(Step::new("dump", dumped.len(), start.elapsed()));
        ensure!(dumped.len() == count_usize, "dumped {} of {count}", dumped.len());
        let sample = dumped.iter().find(|f| f.orig == flows[count_usize / 2].orig).context("a flow is missing")?;
        ensure!(sample.dnat() == flows[count_usize / 2].dnat(), "{sample:?}");
        out.push(steps);
    }
    lab.teardown()?;
    Ok(out)
}

/// The steps as an aligned table.
pub fn table(runs: &[Vec<Step>]) -> String {
    let mut rows = vec![["step", "entries", "ms", "entries/s", "µs/entry"].map(str::to_owned).to_vec()];
    for s in runs.iter().flatten() {
        rows.push(vec![
            s.step.clone(),
            s.entries.to_string(),
            format!("{:.1}", s.ms),
            format!("{:.0}", s.entries_per_s),
            format!("{:.2}", s.us_per_entry),
        ]);
    }
    aligned(&rows)
}

/// The goal, per step over every count (performance only).
pub fn goals(runs: &[Vec<Step>]) -> Vec<Goal> {
    let steps = ["upsert (create)", "upsert (all existing)", "dump"];
    steps
        .iter()
        .map(|&step| {
            let rates: Vec<f64> = runs.iter().flatten().filter(|s| s.step == step).map(|s| s.entries_per_s).collect();
            let slowest = rates.iter().copied().reduce(f64::min);
            Goal {
                goal: format!("{step}: at least {GOAL_ENTRIES_PER_S:.0} entries/s (5 µs/entry) at every size"),
                measured: slowest.map_or_else(|| "-".into(), |r| format!("slowest {r:.0} entries/s")),
                pass: slowest.map(|r| r >= GOAL_ENTRIES_PER_S),
                correctness: false,
            }
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn flows_are_distinct_and_dnat_to_the_reals() {
        let f: Vec<Flow> = (0..120_000).map(flow).collect();
        let set: std::collections::HashSet<Tuple> = f.iter().map(|x| x.orig).collect();
        assert_eq!(set.len(), f.len());
        assert_eq!(f[101].dnat(), Some((Ipv4Addr::new(198, 19, 0, 2), 8443)));
        assert_eq!(f[101].mark, 101);
    }

    #[test]
    fn goals_per_step() {
        let runs = vec![vec![
            Step::new("upsert (create)", 1000, Duration::from_millis(4)),
            Step::new("upsert (all existing)", 1000, Duration::from_millis(10)),
            Step::new("dump", 1000, Duration::from_millis(1)),
        ]];
        let pass: Vec<Option<bool>> = goals(&runs).iter().map(|g| g.pass).collect();
        assert_eq!(pass, [Some(true), Some(false), Some(true)]);
        assert!(table(&runs).contains("250000"));
    }
}
