//! One failover, measured: start a pair, probe the shared address until the
//! active answers steadily, apply a fault to it, wait for the other unit to
//! answer, keep probing a little longer, then read what the client saw.

use std::fmt;
use std::net::{Ipv4Addr, SocketAddrV4};
use std::str::FromStr;
use std::thread;
use std::time::{Duration, Instant};

use anyhow::{Result, bail};

use crate::capture::{self, Frame};
use crate::probe::{self, Prober, Responder};
use crate::system::{DuetLaunch, DuetTimes, System, SystemKind, Unit, holders};
use duet_tests::{PairLab, SHARED, epoch_now};

/// UDP port of the responders in the units.
pub const PROBE_PORT: u16 = 7900;

/// How long after the new unit's first answer the gap's window stays open.
pub const SETTLED_AFTER: Duration = Duration::from_millis(100);

/// The faults applied to the active unit.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, serde::Serialize)]
pub enum Scenario {
    /// Link down and SIGKILL of all its processes.
    Crash,
    /// Link down only; its processes keep running.
    LinkDown,
    /// SIGTERM (duet: planned handover first).
    Graceful,
}

impl Scenario {
    pub const ALL: [Self; 3] = [Self::Crash, Self::LinkDown, Self::Graceful];

    pub fn name(self) -> &'static str {
        match self {
            Self::Crash => "crash",
            Self::LinkDown => "linkdown",
            Self::Graceful => "graceful",
        }
    }
}

impl fmt::Display for Scenario {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

impl FromStr for Scenario {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, String> {
        Self::ALL
            .into_iter()
            .find(|k| k.name() == s)
            .ok_or_else(|| format!("unknown scenario {s:?} (one of {})", Self::ALL.map(Self::name).join(", ")))
    }
}

/// What to run and the bounds of each step.
#[derive(Debug, Clone, serde::Serialize)]
pub struct FailoverOptions {
    pub reps: usize,
    pub systems: Vec<SystemKind>,
    pub scenarios: Vec<Scenario>,
    pub duet_launch: DuetLaunch,
    /// One probe every this long.
    pub probe_interval: Duration,
    /// How long the pair runs settled, answering, before the fault.
    pub settle: Duration,
    /// Bound on a pair's start (until one unit answers steadily).
    pub start_timeout: Duration,
    /// Bound on the failover (until the other unit answers).
    pub recover_timeout: Duration,
    /// How long probing goes on after the new unit's first answer.
    pub tail: Duration,
}

impl Default for FailoverOptions {
    fn default() -> Self {
        Self {
            reps: 5,
            systems: SystemKind::ALL.to_vec(),
            scenarios: Scenario::ALL.to_vec(),
            duet_launch: DuetLaunch::default(),
            probe_interval: Duration::from_millis(1),
            settle: Duration::from_millis(1500),
            start_timeout: Duration::from_secs(30),
            recover_timeout: Duration::from_secs(20),
            tail: Duration::from_millis(1500),
        }
    }
}

/// duet's own figures of one failover, in ms.
#[derive(Debug, Clone, Default, PartialEq, serde::Serialize)]
pub struct DuetFigures {
    /// Role change (election) to the shared address added (takeover).
    pub role_to_addr_ms: Option<f64>,
    /// Role change to the first gratuitous ARP on the wire (client tcpdump).
    pub role_to_garp_ms: Option<f64>,
    /// Role change to the first gratuitous ARP as the takeover reports it.
    pub role_to_garp_reported_ms: Option<f64>,
    /// Role change to the takeover service receiving it.
    pub role_to_received_ms: Option<f64>,
    pub times: DuetTimes,
}

/// The result of one failover.
#[derive(Debug, Clone, Default, PartialEq, serde::Serialize)]
pub struct RepResult {
    pub system: String,
    pub scenario: String,
    pub rep: usize,
    /// The unit that was active (faulted) and the one expected to take over.
    pub old: u8,
    pub new: u8,
    /// Set when the harness could not measure this failover.
    pub error: Option<String>,
    /// The new unit answered within the bound.
    pub recovered: bool,
    /// The client's longest time without any answer, from its last answer
    /// before the fault to 100 ms after the new unit's first answer.
    pub gap_ms: Option<f64>,
    /// The old active's last advert (seen by the client) to the fault.
    pub fault_phase_ms: Option<f64>,
    /// Fault to the new unit's first answer.
    pub fault_to_answer_ms: Option<f64>,
    /// The old active's last advert (as seen by the client) to the new
    /// unit's first answer.
    pub advert_to_answer_ms: Option<f64>,
    /// Answers from the old unit received after the new unit's first one.
    pub old_after_new: usize,
    /// Of those, answers to probes sent after the one the new unit answered
    /// first: the old unit still took new traffic (rather than answering
    /// late what it had received before the switch).
    pub old_after_new_newer: usize,
    /// Probes answered by both units.
    pub answered_twice: usize,
    /// Probes sent after the fault that nobody answered.
    pub lost: usize,
    /// Gratuitous ARPs for the shared address seen after the fault, in all
    /// and from the old unit's MAC.
    pub garps: usize,
    pub garps_from_old: usize,
    /// Answers from the new unit in the end (the client is served again).
    pub answers_at_end: usize,
    /// Which units held the shared address at the end. A unit that crashed
    /// or lost its link may keep it on its dead interface; a unit stopped
    /// gracefully must not.
    pub old_holds_at_end: bool,
    pub new_holds_at_end: bool,
    pub probes_sent: usize,
    pub duet: Option<DuetFigures>,
}

impl RepResult {
    /// A correctness failure: two units answered, or nobody took over.
    pub fn correctness_failure(&self) -> Option<String> {
        if self.error.is_some() {
            return None;
        }
        if self.old_after_new > 0 || self.answered_twice > 0 {
            return Some(format!(
                "{} answers from the old unit after the new one answered, {} probes answered twice",
                self.old_after_new, self.answered_twice
            ));
        }
        if !self.recovered || self.answers_at_end == 0 {
            return Some("the client was not served again".into());
        }
        if self.scenario == Scenario::Graceful.name() && self.old_holds_at_end {
            return Some("the gracefully stopped unit kept the shared address".into());
        }
        None
    }
}

/// What a failover run shares across repetitions: responders in both
/// units and a capture in the client. Dropped, it stops them.
#[derive(Debug)]
pub struct Bench {
    responders: Vec<Responder>,
    capture: duet_testkit::Proc,
    macs: [String; 2],
    runs: usize,
}

impl Bench {
    /// Starts the responders and the capture on `l`.
    pub fn new(l: &mut PairLab) -> Result<Self> {
        let mut responders = Vec::new();
        for u in Unit::BOTH {
            responders.push(Responder::start(&l.lab.ns(u.host(l)), PROBE_PORT, u.id())?);
        }
        let capture = capture::start(l, l.c, "bench-capture")?;
        let macs = [l.lab.mac(l.a, "eth0")?, l.lab.mac(l.b, "eth0")?];
        Ok(Self { responders, capture, macs, runs: 0 })
    }

    /// Stops the responders; returns how many probes each answered.
    pub fn stop(self) -> Result<Vec<u64>> {
        self.responders.into_iter().map(Responder::stop).collect()
    }

    /// Runs one failover of `sys` with `scenario`. Harness errors (a pair
    /// that never settles, a command that fails) are returned in the
    /// result's `error`, not as `Err`, so that a run goes on.
    pub fn failover(
        &mut self,
        l: &mut PairLab,
        sys: &mut dyn System,
        scenario: Scenario,
        rep: usize,
        opts: &FailoverOptions,
    ) -> RepResult {
        self.runs += 1;
        let mut r = RepResult {
            system: sys.kind().name().into(),
            scenario: scenario.name().into(),
            rep,
            ..RepResult::default()
        };
        let outcome = sys.start(l, self.runs).and_then(|()| self.measure(l, sys, scenario, opts, &mut r));
        if let Err(e) = outcome {
            r.error = Some(format!("{e:#}"));
        }
        if let Err(e) = sys.stop(l) {
            let msg = format!("stopping: {e:#}");
            r.error = Some(r.error.map_or(msg.clone(), |prev| format!("{prev}; {msg}")));
        }
        if let Some(dir) = std::env::var_os(TRACE_ENV)
            && (r.error.is_some() || r.correctness_failure().is_some())
            && let Err(e) = keep_logs(l, std::path::Path::new(&dir), &r, self.runs)
        {
            eprintln!("duet-bench: keeping the logs of {} {}: {e:#}", r.system, r.scenario);
        }
        r
    }

    /// Waits for the next advert of `unit` the client sees and returns its
    /// time (tcpdump's), at most `timeout`.
    fn next_advert(&self, unit: Unit, timeout: Duration) -> Result<f64> {
        use std::io::{Read, Seek, SeekFrom};
        let mut f = std::fs::File::open(self.capture.log_path())?;
        let mut offset = f.seek(SeekFrom::End(0))?;
        let mut pending = String::new();
        let deadline = Instant::now() + timeout;
        loop {
            let mut buf = String::new();
            f.seek(SeekFrom::Start(offset))?;
            offset += f.read_to_string(&mut buf)? as u64;
            pending.push_str(&buf);
            // Only whole lines; keep a partial last line for the next read.
            let cut = pending.rfind('\n').map_or(0, |i| i + 1);
            let whole: String = pending.drain(..cut).collect();
            if let Some(f) = capture::parse(&whole).iter().rev().find(|x| x.is_advert_from(unit.addr())) {
                return Ok(f.at);
            }
            if Instant::now() >= deadline {
                bail!("no advert from {unit} within {timeout:?}");
            }
            thread::sleep(Duration::from_millis(1));
        }
    }

    fn measure(
        &self,
        l: &mut PairLab,
        sys: &mut dyn System,
        scenario: Scenario,
        opts: &FailoverOptions,
        r: &mut RepResult,
    ) -> Result<()> {
        let target = SocketAddrV4::new(shared(), PROBE_PORT);
        let prober = Prober::start(&l.lab.ns(l.c), target, opts.probe_interval)?;
        let old = settle(l, sys, &prober, opts)?;
        let new = old.other();
        (r.old, r.new) = (old.id(), new.id());
        // The fault comes at a phase of the active's advert interval that
        // spreads the repetitions evenly over it: repetition i of n waits
        // (i + 0.5) / n of an interval after an advert. Every system gets
        // the same phases, so their gaps compare repetition by repetition
        // rather than by the luck of when the fault fell.
        let fraction = (r.rep as f64 + 0.5) / opts.reps.max(1) as f64;
        let phase = sys.kind().advert_interval().mul_f64(fraction.min(1.0));
        let advert = self.next_advert(old, Duration::from_secs(3))?;
        let wait = advert + phase.as_secs_f64() - epoch_now();
        if wait > 0.0 {
            thread::sleep(Duration::from_secs_f64(wait));
        }

        let t_fault = epoch_now();
        match scenario {
            Scenario::Crash => sys.crash(l, old)?,
            Scenario::LinkDown => sys.link_down(l, old)?,
            Scenario::Graceful => sys.graceful(l, old)?,
        }
        let first = prober.wait_answer(opts.recover_timeout, |a| a.unit == new.id() && a.at > t_fault);
        r.recovered = first.is_ok();
        thread::sleep(opts.tail);
        let held = holders(l)?;
        (r.old_holds_at_end, r.new_holds_at_end) = (held.contains(&old), held.contains(&new));
        let duet = if r.recovered { sys.duet_times(l, new) } else { None };
        let log = prober.stop()?;
        // The window ends with the last probe sent: the prober waits a
        // little for late answers after that, which is no gap.
        let t_end = log.sent.last().map_or_else(epoch_now, |s| s.at);
        // tcpdump prints a frame a moment after it arrives.
        thread::sleep(Duration::from_millis(200));
        let frames: Vec<Frame> =
            capture::parse(&self.capture.log()).into_iter().filter(|f| f.at >= t_fault - 10.0).collect();

        let answers = &log.answers;
        if let Some(dir) = std::env::var_os(TRACE_ENV) {
            trace(std::path::Path::new(&dir), r, t_fault, answers, &frames)?;
        }
        r.probes_sent = log.sent.len();
        // The gap's window opens with the last answer before the fault and
        // closes SETTLED_AFTER after the new unit's first answer: it holds
        // the failover and any flapping right after it, but not a stall of
        // the probe threads long after, which on a loaded machine can be
        // tens of ms. (Later trouble still shows in `lost`, `old_after_new`
        // and `answers_at_end`.)
        let from = answers.iter().rev().map(|a| a.at).find(|t| *t <= t_fault).unwrap_or(t_fault);
        let to = probe::first_answer_from(answers, new.id(), t_fault)
            .map_or(t_end, |f| (f.at + SETTLED_AFTER.as_secs_f64()).min(t_end));
        r.gap_ms = Some(probe::longest_gap(answers, from, to).ms());
        r.old_after_new = probe::old_after_new(answers, old.id(), new.id(), t_fault);
        r.old_after_new_newer = probe::first_answer_from(answers, new.id(), t_fault)
            .map_or(0, |f| answers.iter().filter(|a| a.unit == old.id() && a.seq > f.seq).count());
        r.answered_twice = probe::answered_twice(answers);
        r.lost = probe::lost_probes(&log.sent, answers, t_fault, t_end - 0.1);
        r.answers_at_end = answers.iter().filter(|a| a.unit == new.id() && a.at > t_end - 0.5).count();
        let first = probe::first_answer_from(answers, new.id(), t_fault);
        r.fault_phase_ms = frames
            .iter()
            .filter(|f| f.is_advert_from(old.addr()) && f.at <= t_fault)
            .map(|f| (t_fault - f.at) * 1e3)
            .fold(None, |m: Option<f64>, d| Some(m.map_or(d, |m| m.min(d))));
        if let Some(first) = first {
            r.fault_to_answer_ms = Some((first.at - t_fault) * 1e3);
            let last_advert = frames
                .iter()
                .filter(|f| f.is_advert_from(old.addr()) && f.at < first.at)
                .map(|f| f.at)
                .fold(None, |m: Option<f64>, t| Some(m.map_or(t, |m| m.max(t))));
            r.advert_to_answer_ms = last_advert.map(|t| (first.at - t) * 1e3);
        }
        let garps: Vec<&Frame> =
            frames.iter().filter(|f| f.is_garp_for(shared()) && f.at >= t_fault && f.at <= t_end).collect();
        r.garps = garps.len();
        let old_mac = &self.macs[usize::from(old.id() - 1)];
        r.garps_from_old = garps.iter().filter(|f| &f.src_mac == old_mac).count();
        if let Some(times) = duet {
            let times = times?;
            // The new unit's first GARP: a refresh the old unit sent just
            // before it stopped is not it.
            let first_garp_wire = garps
                .iter()
                .filter(|f| &f.src_mac != old_mac)
                .map(|f| f.at)
                .fold(None, |m: Option<f64>, t| Some(m.map_or(t, |m| m.min(t))));
            let since = |t: Option<f64>| Some((t? - times.role_since?) * 1e3);
            r.duet = Some(DuetFigures {
                role_to_addr_ms: since(times.addresses_at),
                role_to_garp_ms: since(first_garp_wire),
                role_to_garp_reported_ms: since(times.first_garp_at),
                role_to_received_ms: since(times.role_received_at),
                times,
            });
        }
        Ok(())
    }
}

/// Set to a directory to get, per failover, the answers and frames from
/// just before the fault to the end as a text file (times relative to the
/// fault, in ms).
pub const TRACE_ENV: &str = "DUET_BENCH_TRACE";

fn trace(
    dir: &std::path::Path,
    r: &RepResult,
    t_fault: f64,
    answers: &[probe::Answer],
    frames: &[Frame],
) -> Result<()> {
    use std::fmt::Write as _;
    std::fs::create_dir_all(dir)?;
    let mut lines: Vec<(f64, String)> = Vec::new();
    let from = t_fault - 0.05;
    let mut prev: Option<probe::Answer> = None;
    for a in answers.iter().filter(|a| a.at >= from) {
        // Only answers that change unit or follow a gap over 2 ms, to keep
        // the file short.
        let note = match prev {
            Some(p) if p.unit == a.unit && a.at - p.at < 0.002 => None,
            Some(p) => Some(format!("answer seq {} unit {} (after {:.2} ms)", a.seq, a.unit, (a.at - p.at) * 1e3)),
            None => Some(format!("answer seq {} unit {}", a.seq, a.unit)),
        };
        if let Some(n) = note {
            lines.push((a.at, n));
        }
        prev = Some(*a);
    }
    for f in frames.iter().filter(|f| f.at >= t_fault - 2.0) {
        lines.push((f.at, format!("frame {} > {} {:?}", f.src_mac, f.dst_mac, f.kind)));
    }
    lines.sort_by(|a, b| a.0.total_cmp(&b.0));
    let mut text = format!("# {} {} rep {}: unit {} -> {}\n", r.system, r.scenario, r.rep + 1, r.old, r.new);
    for (t, l) in lines {
        let _ = writeln!(text, "{:+10.3} {l}", (t - t_fault) * 1e3);
    }
    std::fs::write(dir.join(format!("{}-{}-{}.txt", r.system, r.scenario, r.rep + 1)), text)?;
    Ok(())
}

/// Copies the logs of start `run` (labels ending in `-r<run>`) into the
/// trace directory, for a failover that went wrong.
fn keep_logs(l: &PairLab, dir: &std::path::Path, r: &RepResult, run: usize) -> Result<()> {
    let to = dir.join(format!("{}-{}-{}-logs", r.system, r.scenario, r.rep + 1));
    std::fs::create_dir_all(&to)?;
    let suffix = format!("-r{run}.log");
    for entry in std::fs::read_dir(l.lab.dir())?.flatten() {
        let name = entry.file_name();
        if name.to_string_lossy().ends_with(&suffix) {
            std::fs::copy(entry.path(), to.join(&name))?;
        }
    }
    Ok(())
}

fn shared() -> Ipv4Addr {
    SHARED.parse().expect("a literal address")
}

/// Waits until exactly one unit holds the shared address, the system says
/// it is ready, and the client has had steady answers from that unit for
/// the settle time; returns that unit.
fn settle(l: &PairLab, sys: &dyn System, prober: &Prober, opts: &FailoverOptions) -> Result<Unit> {
    let deadline = Instant::now() + opts.start_timeout;
    let mut last;
    loop {
        let h = holders(l)?;
        if let [active] = h[..] {
            if sys.ready(l, active)? && prober.wait_steady(active.id(), 200, Duration::from_secs(2)).is_ok() {
                thread::sleep(opts.settle);
                // Still the only one, still answering alone (a start race,
                // as ucarp's, would show here).
                if holders(l)? == [active] && prober.wait_steady(active.id(), 200, Duration::from_millis(500)).is_ok() {
                    return Ok(active);
                }
                last = format!("{active} held the address but the pair was not stable");
            } else {
                last = format!("{active} holds the address; not ready or not answering steadily yet");
            }
        } else {
            last = format!("holders of {SHARED}: {h:?}");
        }
        if Instant::now() >= deadline {
            bail!("{} did not settle within {:?}: {last}", sys.kind(), opts.start_timeout);
        }
        thread::sleep(Duration::from_millis(100));
    }
}

/// Runs every system × scenario `opts.reps` times on `l`, systems and
/// scenarios interleaved within a repetition so that a slow stretch of the
/// machine hits all of them alike. `progress` sees each result as it comes.
pub fn run_failover(
    l: &mut PairLab,
    opts: &FailoverOptions,
    mut progress: impl FnMut(&RepResult),
) -> Result<Vec<RepResult>> {
    let etcd = crate::system::etcd_for(l, &opts.systems)?;
    let mut bench = Bench::new(l)?;
    let mut systems: Vec<Box<dyn System>> =
        opts.systems.iter().map(|k| k.system(opts.duet_launch, etcd.as_ref())).collect();
    let mut out = Vec::new();
    for rep in 0..opts.reps {
        for sys in &mut systems {
            for &scenario in &opts.scenarios {
                let r = bench.failover(l, sys.as_mut(), scenario, rep, opts);
                progress(&r);
                out.push(r);
            }
        }
    }
    bench.stop()?;
    Ok(out)
}
