//! The witness's figure (E14): how long a pair holds its shared address on
//! both units while the units cannot hear each other. The adverts between
//! them are dropped on the switch in both directions for a few seconds
//! (everything else flows: the client, etcd, the peer-status datagrams);
//! then they flow again. Address events in both units (`ip monitor`) give
//! the time both held the address, to the millisecond; a run also counts
//! how often the address changed hands.

use std::thread;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use duet_tests::{PairLab, SHARED, epoch_now, monitor_addresses, parse_addr_events};

use crate::report::{Goal, Spread, aligned, markdown, spread};
use crate::system::{DuetLaunch, System, SystemKind, Unit, etcd_for, holders};

/// What to run.
#[derive(Debug, Clone, serde::Serialize)]
pub struct PartitionOptions {
    pub reps: usize,
    /// duet's kinds.
    pub systems: Vec<SystemKind>,
    pub duet_launch: DuetLaunch,
    /// How long the adverts are dropped.
    pub partition: Duration,
    /// How long the run goes on after they flow again.
    pub heal: Duration,
    /// How long a settled pair runs before the partition.
    pub settle: Duration,
    pub start_timeout: Duration,
}

impl Default for PartitionOptions {
    fn default() -> Self {
        Self {
            reps: 3,
            systems: vec![SystemKind::Duet, SystemKind::DuetWitness, SystemKind::DuetFast, SystemKind::DuetFastWitness],
            duet_launch: DuetLaunch::Services,
            partition: Duration::from_secs(5),
            heal: Duration::from_secs(3),
            settle: Duration::from_secs(1),
            start_timeout: Duration::from_secs(30),
        }
    }
}

/// One partition.
#[derive(Debug, Clone, Default, PartialEq, serde::Serialize)]
pub struct PartitionResult {
    pub system: String,
    pub rep: usize,
    pub error: Option<String>,
    /// Milliseconds the shared address was on both units, from the start
    /// of the partition to the end of the run.
    pub dual_active_ms: Option<f64>,
    /// Of those, after the adverts flowed again.
    pub dual_after_heal_ms: Option<f64>,
    /// Times a unit added the shared address during the run.
    pub takeovers: usize,
    /// The unit holding the address at the end (0: none, 3: both).
    pub holder_at_end: u8,
}

/// Runs every system `opts.reps` times on `l`.
pub fn run_partition(
    l: &mut PairLab,
    opts: &PartitionOptions,
    mut progress: impl FnMut(&PartitionResult),
) -> Result<Vec<PartitionResult>> {
    if let Some(k) = opts.systems.iter().find(|k| !k.is_duet()) {
        bail!("the partition figure is duet's: {k} is not duet");
    }
    let etcd = etcd_for(l, &opts.systems)?;
    let mut out = Vec::new();
    let mut run = 2000;
    for rep in 0..opts.reps {
        for kind in &opts.systems {
            run += 1;
            let mut sys = kind.system(opts.duet_launch, etcd.as_ref());
            let mut r = PartitionResult { system: kind.name().into(), rep, ..PartitionResult::default() };
            let outcome = sys.start(l, run).and_then(|()| measure(l, sys.as_ref(), opts, run, &mut r));
            if let Err(e) = outcome {
                r.error = Some(format!("{e:#}"));
            }
            if let Err(e) = sys.stop(l) {
                let msg = format!("stopping: {e:#}");
                r.error = Some(r.error.map_or(msg.clone(), |p| format!("{p}; {msg}")));
            }
            progress(&r);
            out.push(r);
        }
    }
    Ok(out)
}

fn settle(l: &PairLab, sys: &dyn System, opts: &PartitionOptions) -> Result<Unit> {
    let deadline = Instant::now() + opts.start_timeout;
    loop {
        if let [active] = holders(l)?[..]
            && sys.ready(l, active)?
        {
            thread::sleep(opts.settle);
            if holders(l)? == [active] {
                return Ok(active);
            }
        }
        if Instant::now() >= deadline {
            bail!("{} did not settle within {:?}", sys.kind(), opts.start_timeout);
        }
        thread::sleep(Duration::from_millis(100));
    }
}

fn measure(
    l: &mut PairLab,
    sys: &dyn System,
    opts: &PartitionOptions,
    run: usize,
    r: &mut PartitionResult,
) -> Result<()> {
    let active = settle(l, sys, opts)?;
    let mut monitors = Vec::new();
    for u in Unit::BOTH {
        let host = u.host(l);
        monitors.push(monitor_addresses(&mut l.lab, host, &format!("addr-{}-r{run}", u.id()))?);
    }
    // Held at the start: the active only (checked again now the monitors run).
    if holders(l)? != [active] {
        bail!("the active changed before the partition");
    }
    let t0 = epoch_now();
    let rule = l.lab.add_switch_rule("ip protocol 112 drop").context("dropping the adverts")?;
    thread::sleep(opts.partition);
    let t1 = epoch_now();
    l.lab.remove_rule(rule)?;
    thread::sleep(opts.heal);
    let t2 = epoch_now();
    let end = holders(l)?;
    r.holder_at_end = match end[..] {
        [] => 0,
        [u] => u.id(),
        _ => 3,
    };
    // `ip monitor` prints an event a moment after it happens.
    thread::sleep(Duration::from_millis(100));
    let mut held: [Vec<(f64, f64)>; 2] = [Vec::new(), Vec::new()];
    for (k, u) in Unit::BOTH.into_iter().enumerate() {
        let mut since = (u == active).then_some(t0);
        for e in parse_addr_events(&monitors[k].log())
            .into_iter()
            .filter(|e| e.addr.starts_with(&format!("{SHARED}/")) && e.at >= t0 && e.at <= t2)
        {
            match (e.added, since) {
                (true, None) => {
                    since = Some(e.at);
                    r.takeovers += 1;
                }
                (false, Some(s)) => {
                    held[k].push((s, e.at));
                    since = None;
                }
                _ => {}
            }
        }
        if let Some(s) = since {
            held[k].push((s, t2));
        }
    }
    let overlap = |from: f64| -> f64 {
        let mut total = 0.0;
        for (a0, a1) in &held[0] {
            for (b0, b1) in &held[1] {
                let (s, e) = (a0.max(*b0).max(from), a1.min(*b1));
                if e > s {
                    total += e - s;
                }
            }
        }
        total * 1e3
    };
    r.dual_active_ms = Some(overlap(t0));
    r.dual_after_heal_ms = Some(overlap(t1));
    Ok(())
}

/// The figures of one system.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct PartitionSummary {
    pub system: String,
    pub reps: usize,
    pub errors: usize,
    pub dual_active_ms: Option<Spread>,
    pub dual_after_heal_ms: Option<Spread>,
    pub takeovers_max: usize,
    /// Runs that ended with the address on two units or none.
    pub not_one_at_end: usize,
}

pub fn summarize(results: &[PartitionResult], opts: &PartitionOptions) -> Vec<PartitionSummary> {
    opts.systems
        .iter()
        .map(|k| {
            let all: Vec<&PartitionResult> = results.iter().filter(|r| r.system == k.name()).collect();
            let ok: Vec<&PartitionResult> = all.iter().copied().filter(|r| r.error.is_none()).collect();
            PartitionSummary {
                system: k.name().into(),
                reps: all.len(),
                errors: all.len() - ok.len(),
                dual_active_ms: spread(ok.iter().filter_map(|r| r.dual_active_ms)),
                dual_after_heal_ms: spread(ok.iter().filter_map(|r| r.dual_after_heal_ms)),
                takeovers_max: ok.iter().map(|r| r.takeovers).max().unwrap_or(0),
                not_one_at_end: ok.iter().filter(|r| !matches!(r.holder_at_end, 1 | 2)).count(),
            }
        })
        .collect()
}

fn rows(s: &[PartitionSummary], partition: Duration) -> Vec<Vec<String>> {
    let head =
        ["system", "partition", "reps", "dual-active ms min/med/max", "of which after the heal", "takeovers (max)"];
    let mut rows: Vec<Vec<String>> = vec![head.iter().map(|h| (*h).to_owned()).collect()];
    let sp =
        |x: Option<Spread>| x.map_or_else(|| "-".into(), |g| format!("{:.0} / {:.0} / {:.0}", g.min, g.median, g.max));
    for x in s {
        let reps = if x.errors > 0 { format!("{} ({} err)", x.reps, x.errors) } else { x.reps.to_string() };
        rows.push(vec![
            x.system.clone(),
            format!("{} s", partition.as_secs_f64()),
            reps,
            sp(x.dual_active_ms),
            sp(x.dual_after_heal_ms),
            x.takeovers_max.to_string(),
        ]);
    }
    rows
}

pub fn table(s: &[PartitionSummary], partition: Duration) -> String {
    aligned(&rows(s, partition))
}

pub fn table_markdown(s: &[PartitionSummary], partition: Duration) -> String {
    markdown(&rows(s, partition))
}

/// The goals: no dual-active with a witness; one unit holds the address
/// at the end of every run.
pub fn goals(s: &[PartitionSummary]) -> Vec<Goal> {
    let mut out = Vec::new();
    for x in s.iter().filter(|x| x.system.ends_with("-witness")) {
        let max = x.dual_active_ms.map(|d| d.max);
        out.push(Goal {
            goal: format!("{}: the shared address on one unit only during the partition", x.system),
            measured: max.map_or_else(|| "-".into(), |m| format!("{m:.0} ms on both at most")),
            pass: max.map(|m| m == 0.0),
            correctness: true,
        });
    }
    let wrong: usize = s.iter().map(|x| x.not_one_at_end).sum();
    out.push(Goal {
        goal: "one unit holds the address after the partition, every run".into(),
        measured: format!("{wrong} runs did not"),
        pass: Some(wrong == 0),
        correctness: true,
    });
    let errors: usize = s.iter().map(|x| x.errors).sum();
    out.push(Goal {
        goal: "every run measured".into(),
        measured: format!("{errors} failed"),
        pass: Some(errors == 0),
        correctness: true,
    });
    out
}
