//! Idle cost of a unit: with a settled pair and no traffic, the CPU time,
//! wakeups and PSS of every process in each unit's namespace over a window,
//! and the adverts each unit sent in it (as the client saw them), against
//! the goals of issue 14 ([`goals`]).
//!
//! duet runs as election + takeover ([`DuetLaunch::Services`]) or as the
//! whole unit ([`DuetLaunch::Supervisor`]: `duet unit` with configsync and
//! the replicator linked to the partner; the window opens only once both
//! links are up, see [`crate::system::linked`]).

use std::collections::BTreeMap;
use std::thread;
use std::time::{Duration, Instant};

use anyhow::{Result, bail};

use crate::report::{Goal, aligned};
use crate::system::{DuetLaunch, System, SystemKind, Unit, holders};
use crate::{capture, procfs};
use duet_tests::{PairLab, epoch_now};

/// What to measure.
#[derive(Debug, Clone, serde::Serialize)]
pub struct IdleOptions {
    pub systems: Vec<SystemKind>,
    pub duet_launch: DuetLaunch,
    /// The sampling window.
    pub window: Duration,
    /// Time the pair runs settled before the window opens.
    pub settle: Duration,
    pub start_timeout: Duration,
}

impl Default for IdleOptions {
    fn default() -> Self {
        Self {
            systems: SystemKind::ALL.to_vec(),
            duet_launch: DuetLaunch::default(),
            window: Duration::from_secs(30),
            settle: Duration::from_secs(3),
            start_timeout: Duration::from_secs(30),
        }
    }
}

/// The cost of one unit of a pair over the window.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct IdleCost {
    pub system: String,
    /// "active" or "standby".
    pub role: String,
    /// Command names of its processes.
    pub processes: Vec<String>,
    /// CPU time used over the window (user + system, children included).
    pub cpu_ms: f64,
    /// That, as a share of one CPU.
    pub cpu_percent: f64,
    /// Wakeups per second over the window: the timeslices run by every
    /// thread of every process in the unit's namespace
    /// ([`procfs::timeslices`], `/proc/<pid>/task/<tid>/schedstat`'s third
    /// field), new threads and processes counted from zero.
    pub wakeups_per_s: f64,
    /// Proportional set size, summed over its processes, averaged over the
    /// window's samples.
    pub pss_kib: f64,
    /// Adverts (IP protocol 112) from the unit's own address per second, as
    /// a tcpdump in the client's namespace saw them in the window; `None`
    /// when the capture did not run.
    pub adverts_per_s: Option<f64>,
    /// The unit's CPU time over the window per advert it sent in it; `None`
    /// for a unit that sent none (the standby).
    pub cpu_us_per_advert: Option<f64>,
    pub window_s: f64,
    /// The same figures per process (the profile behind the unit's total),
    /// for the processes alive at the window's end.
    pub by_process: Vec<ProcessCost>,
}

/// One process's share of an [`IdleCost`].
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct ProcessCost {
    pub name: String,
    pub cpu_ms: f64,
    pub wakeups_per_s: f64,
    /// At the window's end.
    pub pss_kib: f64,
}

/// Measures every system in `opts` on `l`, one after the other.
pub fn run_idle(l: &mut PairLab, opts: &IdleOptions, mut progress: impl FnMut(&IdleCost)) -> Result<Vec<IdleCost>> {
    let mut out = Vec::new();
    let etcd = crate::system::etcd_for(l, &opts.systems)?;
    for (run, kind) in opts.systems.iter().enumerate() {
        let mut sys = kind.system(opts.duet_launch, etcd.as_ref());
        let result = sys.start(l, 1000 + run).and_then(|()| measure(l, sys.as_ref(), opts));
        let stopped = sys.stop(l);
        for c in result? {
            progress(&c);
            out.push(c);
        }
        stopped?;
    }
    Ok(out)
}

fn measure(l: &mut PairLab, sys: &dyn System, opts: &IdleOptions) -> Result<Vec<IdleCost>> {
    let deadline = Instant::now() + opts.start_timeout;
    let active = loop {
        if let [a] = holders(l)?[..]
            && sys.ready(l, a)?
        {
            break a;
        }
        if Instant::now() >= deadline {
            bail!("{} did not settle within {:?}", sys.kind(), opts.start_timeout);
        }
        thread::sleep(Duration::from_millis(100));
    };
    thread::sleep(opts.settle);
    if holders(l)? != [active] {
        bail!("{}: the active unit changed while settling", sys.kind());
    }
    // Adverts as the client sees them: a process in its namespace, not in
    // the units' (it costs them nothing). Without tcpdump, no advert figures.
    let mut capture = capture::start(l, l.c, &format!("idle-capture-{}", sys.kind()))
        .map_err(|e| eprintln!("duet-bench: no advert capture for {}: {e:#}", sys.kind()))
        .ok();
    let tick = procfs::clock_ticks();
    let units = [active, active.other()];
    let ns: Vec<String> = units.iter().map(|u| l.lab.ns(u.host(l))).collect();
    // Per unit: pid -> its children's CPU time (ns) at the window's start,
    // and its threads' wakeups and CPU time.
    let mut start: Vec<BTreeMap<u32, u64>> = Vec::new();
    let mut wakeups = Vec::new();
    for n in &ns {
        let pids = duet_testkit::pids_in(n)?;
        start.push(pids.iter().filter_map(|&p| Some((p, procfs::children_ns(p, tick)?))).collect());
        wakeups.push(procfs::Wakeups::start(&pids));
    }
    let (t0, wall0) = (Instant::now(), epoch_now());
    // A look at least every second: a thread that exits loses only what it
    // ran since the last one.
    let samples = u32::try_from(opts.window.as_secs()).unwrap_or(u32::MAX).max(5);
    let mut pss = vec![0f64; units.len()];
    for i in 1..=samples {
        let next = t0 + opts.window * i / samples;
        thread::sleep(next.saturating_duration_since(Instant::now()));
        for (k, n) in ns.iter().enumerate() {
            let pids = duet_testkit::pids_in(n)?;
            wakeups[k].look(&pids);
            let kib: u64 = pids.into_iter().filter_map(procfs::pss_kib).sum();
            pss[k] += kib as f64 / f64::from(samples);
        }
    }
    let (secs, wall1) = (t0.elapsed().as_secs_f64(), epoch_now());
    let mut out = Vec::new();
    for (k, n) in ns.iter().enumerate() {
        let pids = duet_testkit::pids_in(n)?;
        // Per process: what its threads ran (counted at every look, so a
        // thread that exits keeps its time) plus its reaped children's
        // (scripts), from the window's start; a process that started
        // within the window counts from zero.
        wakeups[k].look(&pids);
        let used = |p: u32| {
            let children = procfs::children_ns(p, tick).unwrap_or(0).saturating_sub(*start[k].get(&p).unwrap_or(&0));
            wakeups[k].cpu_ns_by(p) + children
        };
        let used_ns: u64 = pids.iter().map(|&p| used(p)).sum();
        let cpu_ms = used_ns as f64 / 1e6;
        let by_process = pids
            .iter()
            .map(|&p| ProcessCost {
                name: procfs::comm(p),
                cpu_ms: used(p) as f64 / 1e6,
                wakeups_per_s: wakeups[k].counted_by(p) as f64 / secs,
                pss_kib: procfs::pss_kib(p).unwrap_or(0) as f64,
            })
            .collect();
        out.push(IdleCost {
            system: sys.kind().name().into(),
            role: if units[k] == active { "active" } else { "standby" }.into(),
            processes: pids.iter().map(|p| procfs::comm(*p)).collect(),
            cpu_ms,
            cpu_percent: cpu_ms / 1e3 / secs * 100.0,
            wakeups_per_s: wakeups[k].counted() as f64 / secs,
            pss_kib: pss[k],
            adverts_per_s: None,
            cpu_us_per_advert: None,
            window_s: secs,
            by_process,
        });
    }
    if let Some(p) = capture.as_mut() {
        // tcpdump prints at once (--immediate-mode, line-buffered).
        thread::sleep(Duration::from_millis(300));
        let frames = capture::parse(&p.log());
        let _ = p.kill();
        for (k, c) in out.iter_mut().enumerate() {
            let sent = adverts_from(&frames, units[k], wall0, wall1);
            c.adverts_per_s = Some(sent as f64 / (wall1 - wall0));
            c.cpu_us_per_advert = (sent > 0).then(|| c.cpu_ms * 1e3 / sent as f64);
        }
    }
    Ok(out)
}

/// Adverts from `unit`'s own address seen in `[from, to)` (wall clock).
fn adverts_from(frames: &[capture::Frame], unit: Unit, from: f64, to: f64) -> usize {
    frames.iter().filter(|f| f.at >= from && f.at < to && f.is_advert_from(unit.addr())).count()
}

fn opt(v: Option<f64>, digits: usize) -> String {
    v.map_or_else(|| "-".into(), |v| format!("{v:.digits$}"))
}

/// The idle costs as an aligned table.
pub fn table(c: &[IdleCost]) -> String {
    let mut rows = vec![
        ["system", "unit", "processes", "CPU ms", "CPU %", "wakeups/s", "PSS MiB", "adverts/s", "CPU µs/advert"]
            .map(str::to_owned)
            .to_vec(),
    ];
    for x in c {
        rows.push(vec![
            x.system.clone(),
            x.role.clone(),
            x.processes.join(","),
            format!("{:.1}", x.cpu_ms),
            format!("{:.3}", x.cpu_percent),
            format!("{:.1}", x.wakeups_per_s),
            format!("{:.1}", x.pss_kib / 1024.0),
            opt(x.adverts_per_s, 1),
            opt(x.cpu_us_per_advert, 0),
        ]);
    }
    aligned(&rows)
}

/// Each unit's processes with their share, for units of more than one
/// process: where the CPU and the wakeups go.
pub fn process_table(c: &[IdleCost]) -> String {
    let mut rows = vec![["system", "unit", "process", "CPU ms", "wakeups/s", "PSS MiB"].map(str::to_owned).to_vec()];
    for x in c.iter().filter(|x| x.by_process.len() > 1) {
        for p in &x.by_process {
            rows.push(vec![
                x.system.clone(),
                x.role.clone(),
                p.name.clone(),
                format!("{:.1}", p.cpu_ms),
                format!("{:.1}", p.wakeups_per_s),
                format!("{:.1}", p.pss_kib / 1024.0),
            ]);
        }
    }
    aligned(&rows)
}

/// Most PSS a duet unit may take (issue 14), in MiB.
pub const PSS_GOAL_MIB: f64 = 20.0;

/// Issue 14's goals for the systems present in `c`: (a) duet standard as
/// the whole unit ([`DuetLaunch::Supervisor`]; measured as election +
/// takeover only, the goal is printed but not judged): CPU <= 2x and
/// wakeups/s <= 3x keepalived VRRPv2's, PSS <= 20 MiB per unit; (b)
/// duet-fast-100: CPU <= 2x keepalived VRRPv3's. The comparisons are per
/// role, active against active and standby against standby, and both roles
/// must hold. All are performance goals.
pub fn goals(c: &[IdleCost], launch: DuetLaunch) -> Vec<Goal> {
    let present = |k: SystemKind| c.iter().any(|x| x.system == k.name());
    let mode = match launch {
        DuetLaunch::Supervisor => "duet as the whole unit",
        DuetLaunch::Services => "duet as election + takeover only",
    };
    let mut out = Vec::new();
    if present(SystemKind::Duet) {
        let judged = launch == DuetLaunch::Supervisor;
        let v2 = SystemKind::KeepalivedV2;
        let mut g = vs(c, SystemKind::Duet, v2, 2.0, "CPU", |x| x.cpu_ms, "ms");
        let mut w = vs(c, SystemKind::Duet, v2, 3.0, "wakeups/s", |x| x.wakeups_per_s, "/s");
        let pss: Vec<&IdleCost> = c.iter().filter(|x| x.system == SystemKind::Duet.name()).collect();
        let mut p = Goal {
            goal: format!("duet whole unit PSS <= {PSS_GOAL_MIB:.0} MiB per unit"),
            measured: pss
                .iter()
                .map(|x| format!("{} {:.1} MiB", x.role, x.pss_kib / 1024.0))
                .collect::<Vec<_>>()
                .join(", "),
            pass: Some(pss.iter().all(|x| x.pss_kib / 1024.0 <= PSS_GOAL_MIB)),
            correctness: false,
        };
        for goal in [&mut g, &mut w, &mut p] {
            goal.measured.push_str(&format!(" [{mode}]"));
            if !judged {
                goal.pass = None;
            }
        }
        out.extend([g, w, p]);
    }
    if present(SystemKind::DuetFast100) {
        let mut g = vs(c, SystemKind::DuetFast100, SystemKind::KeepalivedV3, 2.0, "CPU", |x| x.cpu_ms, "ms");
        g.measured.push_str(&format!(" [{mode}]"));
        out.push(g);
    }
    out
}

/// `sys`'s figure <= `factor` x `peer`'s, active against active and standby
/// against standby; not judged when a row is missing.
fn vs(
    c: &[IdleCost],
    sys: SystemKind,
    peer: SystemKind,
    factor: f64,
    what: &str,
    f: fn(&IdleCost) -> f64,
    unit: &str,
) -> Goal {
    let row = |k: SystemKind, role: &str| c.iter().find(|x| x.system == k.name() && x.role == role);
    let mut measured = Vec::new();
    let mut pass = Some(true);
    for role in ["active", "standby"] {
        match (row(sys, role), row(peer, role)) {
            (Some(d), Some(k)) => {
                let (d, k) = (f(d), f(k));
                let ratio = if k > 0.0 { format!(" ({:.1}x)", d / k) } else { String::new() };
                measured.push(format!("{role} {d:.1} vs {k:.1} {unit}{ratio}"));
                pass = pass.map(|p| p && d <= factor * k);
            }
            _ => {
                measured.push(format!("{role} -"));
                pass = None;
            }
        }
    }
    let name = |k: SystemKind| if k == SystemKind::Duet { "duet whole unit".to_owned() } else { k.name().to_owned() };
    Goal {
        goal: format!("{} {what} <= {factor:.0}x {}'s, per role", name(sys), peer.name()),
        measured: measured.join(", "),
        pass,
        correctness: false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn row(system: SystemKind, role: &str, cpu_ms: f64, wakeups_per_s: f64, pss_mib: f64) -> IdleCost {
        IdleCost {
            system: system.name().into(),
            role: role.into(),
            processes: vec!["x".into()],
            cpu_ms,
            cpu_percent: 0.0,
            wakeups_per_s,
            pss_kib: pss_mib * 1024.0,
            adverts_per_s: Some(1.0),
            cpu_us_per_advert: None,
            window_s: 10.0,
            by_process: Vec::new(),
        }
    }

    #[test]
    fn goals_compare_per_role() {
        let c = [
            row(SystemKind::Duet, "active", 10.0, 5.0, 15.0),
            row(SystemKind::Duet, "standby", 10.0, 5.0, 15.0),
            row(SystemKind::KeepalivedV2, "active", 6.0, 2.0, 5.0),
            row(SystemKind::KeepalivedV2, "standby", 4.0, 2.0, 5.0),
        ];
        let g = goals(&c, DuetLaunch::Supervisor);
        assert_eq!(g.len(), 3, "{g:?}");
        // Standby: 10 > 2 x 4.
        assert_eq!(g.iter().map(|g| g.pass).collect::<Vec<_>>(), [Some(false), Some(true), Some(true)]);
        assert!(g[0].measured.contains("active 10.0 vs 6.0 ms (1.7x)"), "{}", g[0].measured);
        // Not the whole unit: printed, not judged.
        assert!(goals(&c, DuetLaunch::Services).iter().all(|g| g.pass.is_none()));
        // duet-fast-100 without keepalived VRRPv3: not judged.
        let g = goals(&[row(SystemKind::DuetFast100, "active", 1.0, 1.0, 1.0)], DuetLaunch::Services);
        assert_eq!((g.len(), g[0].pass), (1, None));
        assert!(table(&c).contains("wakeups/s"));
    }
}
