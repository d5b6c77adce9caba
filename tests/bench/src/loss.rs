//! False failovers of the fast profile under random advert loss (issue 5):
//! a settled duet pair (by default adverts every
//! [`FAST_INTERVAL_MS`](crate::system::FAST_INTERVAL_MS), takeover after
//! four missed; `--interval-ms`, `--dead-factor`, and `--hogs` for a busy
//! loop per CPU in each unit's namespace) runs for a while with an nftables
//! rule on the lab's switch
//! dropping a percentage of CARP packets at random in both directions
//! (`numgen random`), and every role change of either unit is counted. The
//! standby's scheduling figures (timer lateness, receive wait) are read at
//! the end.

use std::time::{Duration, Instant};

use anyhow::{Result, bail};
use duet_proto::common::v1::Role;
use duet_testkit::Proc;

use crate::system::{DuetLaunch, DuetUnit, FastProfile, Unit};
use duet_tests::PairLab;

/// What to run.
#[derive(Debug, Clone)]
pub struct LossOptions {
    /// Loss percentages, one run each.
    pub percents: Vec<u32>,
    pub duration: Duration,
    /// The pair's fast profile.
    pub profile: FastProfile,
    /// Busy loops, one per CPU in each unit's namespace, for the whole run
    /// (issue 14's moonshot: both cores busy).
    pub hogs: bool,
}

/// One run.
#[derive(Debug, Clone, serde::Serialize)]
pub struct LossResult {
    pub percent: u32,
    pub seconds: f64,
    /// Role changes of either unit while the loss was on (0 expected).
    pub false_failovers: usize,
    /// Adverts the active sent and the standby received meanwhile.
    pub adverts_sent: u64,
    pub adverts_received: u64,
    /// Four consecutive losses needed for a false failover: the expected
    /// count for this many adverts.
    pub expected_false_failovers: f64,
    pub standby_timer_late_p99_us: u64,
    pub standby_timer_late_max_us: u64,
    pub standby_receive_wait_p99_us: u64,
    pub standby_receive_wait_max_us: u64,
    pub interval_ms: u64,
    pub dead_factor: u32,
    pub hogs: bool,
}

/// Runs every percentage on a fresh pair.
pub fn run_loss(o: &LossOptions) -> Result<Vec<LossResult>> {
    let mut out = Vec::new();
    for (run, &percent) in o.percents.iter().enumerate() {
        let mut l = PairLab::new("loss")?;
        let u1 = DuetUnit::start(&mut l, Unit::One, run, DuetLaunch::Services, Some(o.profile), None)?;
        let u2 = DuetUnit::start(&mut l, Unit::Two, run, DuetLaunch::Services, Some(o.profile), None)?;
        l.wait_role(l.a, Role::Active, Duration::from_secs(20))?;
        l.wait_role(l.b, Role::Standby, Duration::from_secs(20))?;
        std::thread::sleep(Duration::from_secs(2));
        let procs: Vec<&Proc> = u1.procs.iter().chain(u2.procs.iter()).collect();
        let count = || procs.iter().map(|p| p.log().matches("Switching to state").count()).sum::<usize>();
        let before = count();
        let (s0, r0) = (l.status(l.a)?.adverts_sent, l.status(l.b)?.adverts_received);
        let mut hogs = Vec::new();
        if o.hogs {
            let cpus = std::thread::available_parallelism().map_or(2, usize::from);
            for host in [l.a, l.b] {
                for k in 0..cpus {
                    hogs.push(l.lab.spawn(
                        host,
                        &format!("hog-{run}-{k}"),
                        &["sh", "-c", "while :; do :; done"],
                        &[],
                    )?);
                }
            }
            eprintln!("  {} CPU hogs running (one per CPU in each unit's namespace)", hogs.len());
        }
        let rule = l.lab.add_loss("ip protocol 112", percent)?;
        eprintln!("  {percent} % CARP loss for {:.0} s ...", o.duration.as_secs_f64());
        let t0 = Instant::now();
        std::thread::sleep(o.duration);
        let seconds = t0.elapsed().as_secs_f64();
        l.lab.remove_rule(rule)?;
        drop(hogs);
        let false_failovers = count() - before;
        let (a, b) = (l.status(l.a)?, l.status(l.b)?);
        if false_failovers == 0 && a.role != Role::Active as i32 {
            bail!("unit 1 is not active after the run, yet no role change was logged");
        }
        let sent = a.adverts_sent.saturating_sub(s0);
        let p = f64::from(percent) / 100.0;
        let tl = b.timer_lateness.unwrap_or_default();
        let rd = b.receive_delay.unwrap_or_default();
        let r = LossResult {
            percent,
            seconds,
            false_failovers,
            adverts_sent: sent,
            adverts_received: b.adverts_received.saturating_sub(r0),
            expected_false_failovers: sent as f64 * p.powi(i32::try_from(o.profile.dead_factor).unwrap_or(4)),
            interval_ms: o.profile.interval_ms,
            dead_factor: o.profile.dead_factor,
            hogs: o.hogs,
            standby_timer_late_p99_us: tl.p99_us,
            standby_timer_late_max_us: tl.max_us,
            standby_receive_wait_p99_us: rd.p99_us,
            standby_receive_wait_max_us: rd.max_us,
        };
        eprintln!(
            "  {percent} %: {} false failovers in {:.0} s ({} adverts sent, {} received)",
            r.false_failovers, r.seconds, r.adverts_sent, r.adverts_received
        );
        drop((u1, u2));
        l.lab.teardown()?;
        out.push(r);
    }
    Ok(out)
}

/// The table.
pub fn print(results: &[LossResult]) {
    if let Some(r) = results.first() {
        println!(
            "\nfast profile ({} ms adverts, takeover after {} missed{}) under random CARP loss, both directions",
            r.interval_ms,
            r.dead_factor,
            if r.hogs { ", a CPU hog per CPU in each unit's namespace" } else { "" }
        );
    }
    println!(
        "{:<6} {:>8} {:>16} {:>14} {:>14} {:>12} {:>22} {:>22}",
        "loss",
        "seconds",
        "false failovers",
        "expected",
        "adverts sent",
        "received",
        "standby timer late p99/max us",
        "receive wait p99/max us"
    );
    for r in results {
        println!(
            "{:<6} {:>8.0} {:>16} {:>14.4} {:>14} {:>12} {:>22} {:>22}",
            format!("{} %", r.percent),
            r.seconds,
            r.false_failovers,
            r.expected_false_failovers,
            r.adverts_sent,
            r.adverts_received,
            format!("{}/{}", r.standby_timer_late_p99_us, r.standby_timer_late_max_us),
            format!("{}/{}", r.standby_receive_wait_p99_us, r.standby_receive_wait_max_us)
        );
    }
}
