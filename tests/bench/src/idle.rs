//! Idle cost of a unit: with a settled pair and no traffic, the CPU time
//! and PSS of every process in each unit's namespace over a window.

use std::collections::BTreeMap;
use std::thread;
use std::time::{Duration, Instant};

use anyhow::{Result, bail};

use crate::procfs;
use crate::report::aligned;
use crate::system::{DuetLaunch, System, SystemKind, holders};
use duet_tests::PairLab;

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
    /// Proportional set size, summed over its processes, averaged over the
    /// window's samples.
    pub pss_kib: f64,
    pub window_s: f64,
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

fn measure(l: &PairLab, sys: &dyn System, opts: &IdleOptions) -> Result<Vec<IdleCost>> {
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
    let tick = procfs::clock_ticks();
    let units = [active, active.other()];
    let ns: Vec<String> = units.iter().map(|u| l.lab.ns(u.host(l))).collect();
    // Per unit: pid -> CPU time (ns) at the window's start.
    let mut start: Vec<BTreeMap<u32, u64>> = Vec::new();
    for n in &ns {
        start.push(duet_testkit::pids_in(n)?.into_iter().filter_map(|p| Some((p, procfs::cpu_ns(p, tick)?))).collect());
    }
    let t0 = Instant::now();
    let samples = 5u32;
    let mut pss = vec![0f64; units.len()];
    for i in 1..=samples {
        let next = t0 + opts.window * i / samples;
        thread::sleep(next.saturating_duration_since(Instant::now()));
        for (k, n) in ns.iter().enumerate() {
            let kib: u64 = duet_testkit::pids_in(n)?.into_iter().filter_map(procfs::pss_kib).sum();
            pss[k] += kib as f64 / f64::from(samples);
        }
    }
    let secs = t0.elapsed().as_secs_f64();
    let mut out = Vec::new();
    for (k, n) in ns.iter().enumerate() {
        let pids = duet_testkit::pids_in(n)?;
        // A process that started within the window counts from zero.
        let used_ns: u64 = pids
            .iter()
            .filter_map(|p| Some(procfs::cpu_ns(*p, tick)?.saturating_sub(*start[k].get(p).unwrap_or(&0))))
            .sum();
        let cpu_ms = used_ns as f64 / 1e6;
        out.push(IdleCost {
            system: sys.kind().name().into(),
            role: if units[k] == active { "active" } else { "standby" }.into(),
            processes: pids.iter().map(|p| procfs::comm(*p)).collect(),
            cpu_ms,
            cpu_percent: cpu_ms / 1e3 / secs * 100.0,
            pss_kib: pss[k],
            window_s: secs,
        });
    }
    Ok(out)
}

/// The idle costs as an aligned table.
pub fn table(c: &[IdleCost]) -> String {
    let mut rows = vec![["system", "unit", "processes", "CPU ms", "CPU %", "PSS MiB"].map(str::to_owned).to_vec()];
    for x in c {
        rows.push(vec![
            x.system.clone(),
            x.role.clone(),
            x.processes.join(","),
            format!("{:.1}", x.cpu_ms),
            format!("{:.3}", x.cpu_percent),
            format!("{:.1}", x.pss_kib / 1024.0),
        ]);
    }
    aligned(&rows)
}
