//! `duet-bench`: duet's benchmarks in network namespaces, one subcommand
//! each (see the `duet_bench` library): `failover`, `idle`, `loss`,
//! `replication`, `configsync`, `conntrack`, `partition`, `tracked`, `chaos`,
//! and `fleet` (its module is this binary's: `fleet.rs`).
//!
//! Needs root. Run the release build for figures worth quoting:
//! `cargo build --release --workspace --bins && sudo target/release/duet-bench failover`.
//! Every subcommand prints its progress on stderr, then its table and goals
//! on stdout, and writes the whole run as JSON (`--json`, by default
//! `bench-results/<subcommand>.json`). It exits non-zero only when a
//! correctness goal failed (two units answered, the client was left
//! unserved, a change never reached the standby) or a run could not be
//! measured; figures that miss a goal are printed as MISS and do not change
//! the exit status.

use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::Duration;

use anyhow::Context;
use clap::{Parser, Subcommand};
use duet_bench::configsync::ConfigsyncOptions;
use duet_bench::conntrack::ConntrackOptions;
use duet_bench::loss::LossOptions;
use duet_bench::report::{self, FailoverReport, Goal, HostInfo};
use duet_bench::{
    DuetLaunch, FailoverOptions, IdleOptions, ReplSystem, ReplicationOptions, Scenario, SystemKind, configsync,
    conntrack, fleet, idle, loss, run_failover, run_idle,
};
use duet_tests::{PairLab, epoch_now};

#[derive(Debug, Parser)]
#[command(
    name = "duet-bench",
    about = "duet's benchmarks against keepalived, ucarp and conntrackd in network namespaces (needs root)"
)]
struct Args {
    #[command(subcommand)]
    cmd: Cmd,
}

#[derive(Debug, Subcommand)]
enum Cmd {
    /// Fail the active unit over, repeatedly, for every system and scenario.
    Failover {
        /// Repetitions of each system x scenario.
        #[arg(long, default_value_t = 5)]
        reps: usize,
        /// Systems: duet, duet-fast (20 ms x 4), duet-fast-100 (100 ms x 3), keepalived-v2,
        /// keepalived-v3, ucarp, and duet with a witness (E14, an etcd cluster in the lab):
        /// duet-witness, duet-fast-witness; not by default: duet-fast-10 (10 ms x 3, issue 14's
        /// moonshot).
        #[arg(
            long,
            value_delimiter = ',',
            default_value = "duet,duet-witness,duet-fast,duet-fast-witness,duet-fast-100,keepalived-v2,keepalived-v3,ucarp"
        )]
        systems: Vec<SystemKind>,
        /// Scenarios: crash, linkdown, graceful.
        #[arg(long, value_delimiter = ',', default_value = "crash,linkdown,graceful")]
        scenarios: Vec<Scenario>,
        /// Where to write the results as JSON.
        #[arg(long, default_value = "bench-results/failover.json")]
        json: PathBuf,
        /// How duet units run: `services` (election + takeover) or `unit` (the whole unit under the
        /// supervisor: configsync and the replicator too, linked).
        #[arg(long, default_value = "services")]
        duet_launch: DuetLaunch,
        /// How long probing goes on after the new unit's first answer, in ms.
        #[arg(long, default_value_t = 1500)]
        tail_ms: u64,
    },
    /// CPU, wakeups, PSS and adverts of each unit of a settled, idle pair, against issue 14's goals.
    Idle {
        /// Length of the sampling window in seconds.
        #[arg(long, default_value_t = 30)]
        secs: u64,
        #[arg(
            long,
            value_delimiter = ',',
            default_value = "duet,duet-witness,duet-fast,duet-fast-witness,duet-fast-100,keepalived-v2,keepalived-v3,ucarp"
        )]
        systems: Vec<SystemKind>,
        #[arg(long, default_value = "bench-results/idle.json")]
        json: PathBuf,
        /// How duet units run: `services` (election + takeover) or `unit` (the whole unit: the
        /// supervisor with election, takeover, configsync and the replicator, linked).
        #[arg(long, default_value = "services")]
        duet_launch: DuetLaunch,
    },
    /// False failovers of the fast profile under random advert loss.
    Loss {
        /// Loss percentages, one run each.
        #[arg(long, value_delimiter = ',', default_value = "1,5")]
        percents: Vec<u32>,
        /// Length of each run in seconds (the issue asks for 600).
        #[arg(long, default_value_t = 600)]
        secs: u64,
        /// The fast profile's advert interval (ms) and dead factor.
        #[arg(long, default_value_t = 20)]
        interval_ms: u64,
        #[arg(long, default_value_t = 4)]
        dead_factor: u32,
        /// A busy loop per CPU in each unit's namespace while the loss is on.
        #[arg(long)]
        hogs: bool,
        #[arg(long, default_value = "bench-results/loss.json")]
        json: PathBuf,
    },
    /// Replication: duet's replicator against keepalived + conntrackd (FTFW): connections
    /// surviving a crash of the active, throughput and cost, role -> state usable.
    Replication {
        /// Survival repetitions per system.
        #[arg(long, default_value_t = 4)]
        reps: usize,
        /// Client connections (K), each sending 16 bytes every 100 ms.
        #[arg(long, default_value_t = 1000)]
        conns: usize,
        /// Synthetic flow counts of the throughput runs (the largest also measures role -> state).
        #[arg(long, value_delimiter = ',', default_value = "10000,100000")]
        flows: Vec<usize>,
        /// Systems: duet, conntrackd (keepalived + conntrackd FTFW).
        #[arg(long, value_delimiter = ',', default_value = "duet,conntrackd")]
        systems: Vec<ReplSystem>,
        /// Also run the survival part for conntrackd with nf_conntrack_tcp_loose=1 (the kernel default).
        #[arg(long)]
        loose: bool,
        /// Skip the survival part.
        #[arg(long)]
        no_survival: bool,
        /// Skip the throughput and role -> state parts.
        #[arg(long)]
        no_throughput: bool,
        /// Seconds the client goes on after the crash (at least).
        #[arg(long, default_value_t = 8)]
        after_crash_s: u64,
        #[arg(long, default_value = "bench-results/replication.json")]
        json: PathBuf,
    },
    /// Configuration sync: commit on the active -> applied on the standby, full sync of a big image.
    Configsync {
        /// Single-service commits on the active, back to back, each timed to the standby.
        #[arg(long, default_value_t = 1000)]
        changes: usize,
        /// Virtual services in the image of the full sync and the forced update.
        #[arg(long, default_value_t = 10_000)]
        services: usize,
        /// HA-settings commits on the active, each timed until the standby's election runs with it.
        #[arg(long, default_value_t = 200)]
        ha_changes: usize,
        #[arg(long, default_value = "bench-results/configsync.json")]
        json: PathBuf,
    },
    /// E14: dual-active time while the units' adverts are dropped both ways, with and without the witness.
    Partition {
        /// Repetitions of each system.
        #[arg(long, default_value_t = 3)]
        reps: usize,
        /// duet's systems: duet, duet-fast, duet-witness, duet-fast-witness.
        #[arg(long, value_delimiter = ',', default_value = "duet,duet-witness,duet-fast,duet-fast-witness")]
        systems: Vec<SystemKind>,
        /// How long the adverts are dropped, in seconds.
        #[arg(long, default_value_t = 5)]
        partition_s: u64,
        #[arg(long, default_value = "bench-results/partition.json")]
        json: PathBuf,
    },
    /// Issue 18: HAProxy killed on the active, the client's outage: duet's `[[track]]` process check
    /// against keepalived's `vrrp_script` (every 1 s, fall 2, rise 2).
    Tracked {
        /// Repetitions of each system.
        #[arg(long, default_value_t = 3)]
        reps: usize,
        /// Systems: duet's (duet, duet-fast, duet-fast-100, ...) and keepalived-v2, keepalived-v3.
        #[arg(long, value_delimiter = ',', default_value = "duet,keepalived-v2")]
        systems: Vec<SystemKind>,
        /// How duet units run: `services` (election + takeover) or `unit` (the whole unit).
        #[arg(long, default_value = "services")]
        duet_launch: DuetLaunch,
        #[arg(long, default_value = "bench-results/tracked.json")]
        json: PathBuf,
    },
    /// Issue 17's fault lab: whole pairs through seeded fault schedules, the pair's invariants
    /// checked throughout (one address holder, bounded outages, no acknowledged generation lost,
    /// connections kept, healthy again). A failing schedule replays with `--seed`.
    Chaos {
        /// Schedules to run, each in a fresh lab.
        #[arg(long, default_value_t = 10)]
        schedules: usize,
        /// The first schedule's seed; schedule i uses seed + i.
        #[arg(long, default_value_t = 1)]
        seed: u64,
        /// The seeds to run instead (e.g. to replay failures: `--seeds 107`).
        #[arg(long, value_delimiter = ',')]
        seeds: Vec<u64>,
        /// Faults per schedule.
        #[arg(long, default_value_t = 6)]
        faults: usize,
        /// Fault kinds drawn from: crash, kill-service, freeze, link-flap, partition, advert-loss,
        /// handover, config-race (all when not given).
        #[arg(long, value_delimiter = ',')]
        kinds: Vec<duet_bench::chaos::FaultKind>,
        /// Long-lived TCP connections through the virtual service.
        #[arg(long, default_value_t = 20)]
        conns: usize,
        /// The client outage a planned handover may cause, in ms (10 on a release build; give a
        /// debug build more).
        #[arg(long, default_value_t = 10.0)]
        handover_ms: f64,
        #[arg(long, default_value = "bench-results/chaos.json")]
        json: PathBuf,
    },
    /// O7 (issue 13): pairs whose images live in etcd: a change written through etcd -> its generation on
    /// the pair's standby, other pairs untouched, every unit on its head, `duetctl fleet status` time.
    Fleet {
        /// Pairs of whole units (at most 40).
        #[arg(long, default_value_t = 10)]
        pairs: usize,
        /// Changes written through etcd, one at a time, round-robin over the pairs.
        #[arg(long, default_value_t = 200)]
        changes: usize,
        #[arg(long, default_value = "bench-results/fleet.json")]
        json: PathBuf,
    },
    /// duet's ctnetlink layer alone: upsert (create), upsert (all existing) and dump of N flows.
    Conntrack {
        /// Flow counts, each in a fresh namespace (at most 12,500,000).
        #[arg(long, value_delimiter = ',', default_value = "10000,100000")]
        flows: Vec<u32>,
        #[arg(long, default_value = "bench-results/conntrack.json")]
        json: PathBuf,
    },
}

fn write_json(path: &Path, value: &impl serde::Serialize) -> anyhow::Result<()> {
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    }
    let text = serde_json::to_string_pretty(value)?;
    std::fs::write(path, text + "\n").with_context(|| format!("writing {}", path.display()))
}

/// What every report starts with, then its own parts (`body`, flattened).
#[derive(serde::Serialize)]
struct Envelope<'a, O, B> {
    command: String,
    started_at: f64,
    finished_at: f64,
    host: HostInfo,
    options: &'a O,
    goals: &'a [Goal],
    #[serde(flatten)]
    body: B,
}

/// Writes a report of a run that started at `started_at` into `path`.
fn write_report<O: serde::Serialize, B: serde::Serialize>(
    path: &Path,
    started_at: f64,
    options: &O,
    goals: &[Goal],
    body: B,
) -> anyhow::Result<()> {
    let e = Envelope {
        command: command_line(),
        started_at,
        finished_at: epoch_now(),
        host: HostInfo::probe(),
        options,
        goals,
        body,
    };
    write_json(path, &e)?;
    println!("results: {}", path.display());
    Ok(())
}

fn command_line() -> String {
    std::env::args().collect::<Vec<_>>().join(" ")
}

fn failover(opts: FailoverOptions, json: &Path) -> anyhow::Result<ExitCode> {
    let started_at = epoch_now();
    let mut l = PairLab::new("bench").context("building the lab")?;
    eprintln!(
        "duet-bench: {} x {} x {} failovers in lab {}",
        opts.reps,
        opts.systems.len(),
        opts.scenarios.len(),
        l.lab.prefix()
    );
    let reps = run_failover(&mut l, &opts, |r| {
        let line = match (&r.error, r.gap_ms) {
            (Some(e), _) => format!("ERROR {e}"),
            (None, Some(g)) => format!(
                "unit {} -> {}: gap {g:.1} ms, old after new {}, GARPs {}{}",
                r.old,
                r.new,
                r.old_after_new,
                r.garps,
                r.duet
                    .as_ref()
                    .and_then(|d| d.role_to_garp_ms)
                    .map_or_else(String::new, |v| format!(", role->GARP {v:.2} ms"))
            ),
            (None, None) => "no figures".into(),
        };
        eprintln!("  rep {} {:<14} {:<9} {line}", r.rep + 1, r.system, r.scenario);
    })?;
    drop(l);
    let summaries = report::summarize(&reps, &opts);
    let goals = report::goals(&reps, &summaries);
    let report = FailoverReport {
        command: command_line(),
        started_at,
        finished_at: epoch_now(),
        host: HostInfo::probe(),
        options: opts,
        summaries,
        goals,
        reps,
    };
    println!("\n{}", report::table(&report.summaries));
    println!("{}", report::goals_text(&report.goals));
    for r in report.reps.iter().filter(|r| r.error.is_some()) {
        println!("error in rep {} of {} {}: {}", r.rep + 1, r.system, r.scenario, r.error.as_deref().unwrap_or(""));
    }
    write_json(json, &report)?;
    println!("results: {}", json.display());
    Ok(if report.correct() { ExitCode::SUCCESS } else { ExitCode::FAILURE })
}

fn idle_cost(opts: IdleOptions, json: &Path) -> anyhow::Result<ExitCode> {
    let mut l = PairLab::new("benchidle").context("building the lab")?;
    eprintln!("duet-bench: idle cost over {:?} per system in lab {}", opts.window, l.lab.prefix());
    let costs = run_idle(&mut l, &opts, |c| {
        eprintln!(
            "  {:<14} {:<8} {:.0} ms CPU, {:.1} wakeups/s, {:.1} MiB PSS",
            c.system,
            c.role,
            c.cpu_ms,
            c.wakeups_per_s,
            c.pss_kib / 1024.0
        );
    })?;
    drop(l);
    let goals = idle::goals(&costs, opts.duet_launch);
    println!("\n{}", idle::table(&costs));
    println!("\nper process:\n{}", idle::process_table(&costs));
    println!("{}", report::goals_text(&goals));
    #[derive(serde::Serialize)]
    struct IdleReport<'a> {
        command: String,
        host: HostInfo,
        options: &'a IdleOptions,
        goals: &'a [Goal],
        units: &'a [idle::IdleCost],
    }
    write_json(
        json,
        &IdleReport { command: command_line(), host: HostInfo::probe(), options: &opts, goals: &goals, units: &costs },
    )?;
    println!("results: {}", json.display());
    Ok(ExitCode::SUCCESS)
}

fn loss(opts: &LossOptions, json: &Path) -> anyhow::Result<ExitCode> {
    eprintln!("duet-bench: fast profile under advert loss {:?} %, {:?} each", opts.percents, opts.duration);
    let results = loss::run_loss(opts)?;
    loss::print(&results);
    #[derive(serde::Serialize)]
    struct LossReport<'a> {
        command: String,
        host: HostInfo,
        runs: &'a [loss::LossResult],
    }
    write_json(json, &LossReport { command: command_line(), host: HostInfo::probe(), runs: &results })?;
    println!("results: {}", json.display());
    Ok(ExitCode::SUCCESS)
}

fn replication(opts: ReplicationOptions, json: &Path) -> anyhow::Result<ExitCode> {
    use duet_bench::replication as rp;
    let started_at = epoch_now();
    eprintln!(
        "duet-bench: replication, survival {} reps x {:?} with K={}, throughput {:?} x {:?} flows",
        opts.reps, opts.survival, opts.conns, opts.throughput, opts.flows
    );
    let survival = rp::run_survival(&opts, |r| {
        let line = match &r.error {
            Some(e) => format!("ERROR {e}"),
            None => format!(
                "ok {} reset {} hung {} no-connect {} of {}, gap p50/p99 {:.0}/{:.0} ms, standby held {}, {:.1} s after the crash",
                r.ok,
                r.reset,
                r.hung,
                r.failed_connect,
                r.conns,
                r.gap_p50_ms,
                r.gap_p99_ms,
                r.standby_entries,
                r.after_crash_s
            ),
        };
        eprintln!("  survival rep {} {:<16} {line}", r.rep + 1, r.system);
    });
    let throughput = rp::run_throughput(&opts, |r| {
        let line = match &r.error {
            Some(e) => format!("ERROR {e}"),
            None => format!(
                "{:.0} ms to the standby, {:.0} entries/s, CPU {:.2} us/entry",
                r.to_standby_ms.unwrap_or(f64::NAN),
                r.entries_per_s.unwrap_or(f64::NAN),
                r.total_cpu_us_per_entry.unwrap_or(f64::NAN)
            ),
        };
        eprintln!("  throughput {:<16} {:>7} flows: {line}", r.system, r.flows);
    });
    let summaries = rp::summarize_survival(&survival, &opts);
    let goals = rp::goals(&survival, &summaries, &throughput);
    let report = rp::ReplicationReport {
        command: command_line(),
        started_at,
        finished_at: epoch_now(),
        host: HostInfo::probe(),
        conntrackd: rp::conntrackd_version(),
        options: opts,
        survival_summaries: summaries,
        goals,
        survival,
        throughput,
    };
    println!("\n{}", rp::tables(&report.survival_summaries, &report.throughput));
    println!("{}", report::goals_text(&report.goals));
    for r in report.survival.iter().filter(|r| r.error.is_some()) {
        println!("error in survival rep {} of {}: {}", r.rep + 1, r.system, r.error.as_deref().unwrap_or(""));
    }
    for r in &report.throughput {
        if let Some(e) = &r.error {
            println!("error in the throughput run of {} with {} flows: {e}", r.system, r.flows);
        }
        if let Some(e) = r.state.as_ref().and_then(|s| s.error.as_ref()) {
            println!("error in the role -> state run of {} with {} flows: {e}", r.system, r.flows);
        }
    }
    write_json(json, &report)?;
    println!("results: {}", json.display());
    Ok(if report.correct() { ExitCode::SUCCESS } else { ExitCode::FAILURE })
}

fn configsync(opts: &ConfigsyncOptions, json: &Path) -> anyhow::Result<ExitCode> {
    let started_at = epoch_now();
    eprintln!(
        "duet-bench: configsync, {} changes back to back, then a full sync of {} virtual services",
        opts.changes, opts.services
    );
    let result = configsync::run(opts)?;
    let goals = configsync::goals(&result);
    println!("\n{}", configsync::text(&result));
    println!("{}", report::goals_text(&goals));
    write_report(json, started_at, opts, &goals, serde_json::json!({ "result": &result }))?;
    Ok(if report::correct(&goals) { ExitCode::SUCCESS } else { ExitCode::FAILURE })
}

fn partition(opts: duet_bench::partition::PartitionOptions, json: &Path) -> anyhow::Result<ExitCode> {
    use duet_bench::partition as pt;
    let started_at = epoch_now();
    let mut l = PairLab::new("benchpart").context("building the lab")?;
    eprintln!(
        "duet-bench: {} x {} partitions of {:?} (adverts dropped both ways) in lab {}",
        opts.reps,
        opts.systems.len(),
        opts.partition,
        l.lab.prefix()
    );
    let results = pt::run_partition(&mut l, &opts, |r| {
        let line = match (&r.error, r.dual_active_ms) {
            (Some(e), _) => format!("ERROR {e}"),
            (None, Some(d)) => format!(
                "both held the address {d:.0} ms ({:.0} ms after the heal), {} takeovers, unit {} at the end",
                r.dual_after_heal_ms.unwrap_or(0.0),
                r.takeovers,
                r.holder_at_end
            ),
            (None, None) => "no figures".into(),
        };
        eprintln!("  rep {} {:<18} {line}", r.rep + 1, r.system);
    })?;
    drop(l);
    let summaries = pt::summarize(&results, &opts);
    let goals = pt::goals(&summaries);
    println!("\n{}", pt::table(&summaries, opts.partition));
    println!("{}", report::goals_text(&goals));
    write_report(json, started_at, &opts, &goals, serde_json::json!({ "summaries": &summaries, "runs": &results }))?;
    Ok(if report::correct(&goals) { ExitCode::SUCCESS } else { ExitCode::FAILURE })
}

fn tracked(opts: duet_bench::tracked::TrackedOptions, json: &Path) -> anyhow::Result<ExitCode> {
    use duet_bench::tracked as tr;
    let started_at = epoch_now();
    let mut l = PairLab::new("benchtrack").context("building the lab")?;
    eprintln!(
        "duet-bench: {} x {} HAProxy kills on the active (check every {:?}, fall {}, rise {}) in lab {}",
        opts.reps,
        opts.systems.len(),
        opts.interval,
        opts.fall,
        opts.rise,
        l.lab.prefix()
    );
    let results = tr::run_tracked(&mut l, &opts, |r| {
        let line = match (&r.error, r.kill_to_serving_ms) {
            (Some(e), _) => format!("ERROR {e}"),
            (None, Some(ms)) => format!(
                "unit {} -> {}: served by the other unit {ms:.1} ms after the kill (phase {:.0} ms), its GARP at {} ms, \
                 old unit kept the address: {}",
                r.old,
                r.new,
                r.phase_ms.unwrap_or(f64::NAN),
                r.kill_to_garp_ms.map_or_else(|| "-".into(), |g| format!("{g:.1}")),
                r.old_holds_at_end
            ),
            (None, None) => format!("unit {} -> {}: the client was not served by the other unit", r.old, r.new),
        };
        eprintln!("  rep {} {:<14} {line}", r.rep + 1, r.system);
    })?;
    drop(l);
    let summaries = tr::summarize(&results, &opts);
    let goals = tr::goals(&summaries, &results, &opts);
    println!("\n{}", tr::rep_table(&results));
    println!("{}", tr::table(&summaries));
    println!("{}", report::goals_text(&goals));
    write_report(json, started_at, &opts, &goals, serde_json::json!({ "summaries": &summaries, "runs": &results }))?;
    Ok(if report::correct(&goals) { ExitCode::SUCCESS } else { ExitCode::FAILURE })
}

fn chaos(opts: duet_bench::chaos::ChaosOptions, json: &Path) -> anyhow::Result<ExitCode> {
    use duet_bench::chaos as ch;
    let started_at = epoch_now();
    eprintln!(
        "duet-bench: {} fault schedules of {} faults, seeds {:?} (outage bounds: handover {} ms, standby {} ms, \
         active HA timeout + interval + {} ms; healthy within {:?})",
        opts.seeds.len(),
        opts.faults,
        opts.seeds,
        opts.handover_ms,
        opts.quiet_ms,
        opts.slack_ms,
        opts.recover
    );
    let results = ch::run_chaos(&opts, |line| eprintln!("{line}"))?;
    let goals = ch::goals(&results);
    println!("\n{}", ch::table(&results));
    println!("{}", report::goals_text(&goals));
    write_report(json, started_at, &opts, &goals, serde_json::json!({ "schedules": &results }))?;
    Ok(if report::correct(&goals) { ExitCode::SUCCESS } else { ExitCode::FAILURE })
}

fn fleet(opts: &fleet::FleetOptions, json: &Path) -> anyhow::Result<ExitCode> {
    let started_at = epoch_now();
    eprintln!(
        "duet-bench: fleet of {} pairs in etcd, {} changes written through etcd round-robin",
        opts.pairs, opts.changes
    );
    let logs = json.parent().filter(|d| !d.as_os_str().is_empty()).unwrap_or(Path::new(".")).join("fleet-logs");
    let result = fleet::run(opts, &logs, |line| eprintln!("  {line}"))?;
    let goals = fleet::goals(&result);
    println!("\n{}", fleet::table(&result));
    println!("{}", report::goals_text(&goals));
    write_report(json, started_at, opts, &goals, serde_json::json!({ "result": &result }))?;
    Ok(if report::correct(&goals) { ExitCode::SUCCESS } else { ExitCode::FAILURE })
}

fn conntrack(opts: &ConntrackOptions, json: &Path) -> anyhow::Result<ExitCode> {
    let started_at = epoch_now();
    eprintln!("duet-bench: ctnetlink upsert and dump of {:?} flows, each in a fresh namespace", opts.flows);
    let runs = conntrack::run(opts, |n, s| {
        eprintln!(
            "  {n:>8} flows {:<22} {:>9.1} ms {:>10.0} entries/s {:>7.2} µs/entry",
            s.step, s.ms, s.entries_per_s, s.us_per_entry
        );
    })?;
    let goals = conntrack::goals(&runs);
    println!("\n{}", conntrack::table(&runs));
    println!("{}", report::goals_text(&goals));
    write_report(json, started_at, opts, &goals, serde_json::json!({ "runs": &runs }))?;
    Ok(ExitCode::SUCCESS)
}

fn main() -> ExitCode {
    let args = Args::parse();
    if !nix::unistd::Uid::effective().is_root() {
        eprintln!("duet-bench builds network namespaces: run it as root");
        return ExitCode::from(2);
    }
    let result = match args.cmd {
        Cmd::Failover { reps, systems, scenarios, json, duet_launch, tail_ms } => {
            let opts = FailoverOptions {
                reps,
                systems,
                scenarios,
                duet_launch,
                tail: Duration::from_millis(tail_ms),
                ..FailoverOptions::default()
            };
            failover(opts, &json)
        }
        Cmd::Idle { secs, systems, json, duet_launch } => {
            let opts =
                IdleOptions { systems, duet_launch, window: Duration::from_secs(secs), ..IdleOptions::default() };
            idle_cost(opts, &json)
        }
        Cmd::Loss { percents, secs, interval_ms, dead_factor, hogs, json } => {
            let profile = duet_bench::system::FastProfile { interval_ms, dead_factor };
            let opts = LossOptions { percents, duration: Duration::from_secs(secs), profile, hogs };
            loss(&opts, &json)
        }
        Cmd::Replication { reps, conns, flows, systems, loose, no_survival, no_throughput, after_crash_s, json } => {
            let mut survival = if no_survival { Vec::new() } else { systems.clone() };
            if loose && !no_survival && !survival.contains(&ReplSystem::ConntrackdLoose) {
                survival.push(ReplSystem::ConntrackdLoose);
            }
            let throughput: Vec<ReplSystem> = if no_throughput {
                Vec::new()
            } else {
                systems.iter().copied().filter(|s| *s != ReplSystem::ConntrackdLoose).collect()
            };
            if flows.iter().any(|&n| n == 0 || n > 1_000_000) {
                eprintln!("duet-bench: --flows takes counts from 1 to 1,000,000");
                return ExitCode::from(2);
            }
            let opts = ReplicationOptions {
                reps,
                conns,
                flows,
                survival,
                throughput,
                after_crash: Duration::from_secs(after_crash_s),
                ..ReplicationOptions::default()
            };
            replication(opts, &json)
        }
        Cmd::Configsync { changes, services, ha_changes, json } => {
            configsync(&ConfigsyncOptions { changes, services, ha_changes }, &json)
        }
        Cmd::Fleet { pairs, changes, json } => fleet(&fleet::FleetOptions { pairs, changes }, &json),
        Cmd::Conntrack { flows, json } => conntrack(&ConntrackOptions { flows }, &json),
        Cmd::Partition { reps, systems, partition_s, json } => {
            let opts = duet_bench::partition::PartitionOptions {
                reps,
                systems,
                partition: Duration::from_secs(partition_s),
                ..Default::default()
            };
            partition(opts, &json)
        }
        Cmd::Tracked { reps, systems, duet_launch, json } => {
            let opts = duet_bench::tracked::TrackedOptions { reps, systems, duet_launch, ..Default::default() };
            tracked(opts, &json)
        }
        Cmd::Chaos { schedules, seed, seeds, faults, kinds, conns, handover_ms, json } => {
            let seeds = if seeds.is_empty() { (seed..).take(schedules).collect() } else { seeds };
            let opts =
                duet_bench::chaos::ChaosOptions { seeds, faults, kinds, conns, handover_ms, ..Default::default() };
            chaos(opts, &json)
        }
    };
    match result {
        Ok(code) => code,
        Err(e) => {
            eprintln!("duet-bench: {e:#}");
            ExitCode::from(2)
        }
    }
}
