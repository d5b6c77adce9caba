//! `duet-bench`: the failover benchmark (duet against keepalived and
//! ucarp in network namespaces) and the idle cost of a unit.
//!
//! Needs root. Run the release build for figures worth quoting:
//! `cargo build --release --workspace --bins && sudo target/release/duet-bench failover`.
//! Exits non-zero only when a failover was not correct (two units answered,
//! the client was left unserved) or could not be measured; figures that
//! miss a goal are printed as MISS and do not change the exit status.

use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::Duration;

use anyhow::Context;
use clap::{Parser, Subcommand};
use duet_tests::bench::report::{self, FailoverReport, HostInfo};
use duet_tests::bench::{DuetLaunch, FailoverOptions, IdleOptions, Scenario, SystemKind, idle, run_failover, run_idle};
use duet_tests::{PairLab, epoch_now};

#[derive(Debug, Parser)]
#[command(about = "Failover benchmark of duet, keepalived and ucarp in network namespaces (needs root)")]
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
        /// Systems: duet, keepalived-v2, keepalived-v3, ucarp.
        #[arg(long, value_delimiter = ',', default_value = "duet,keepalived-v2,keepalived-v3,ucarp")]
        systems: Vec<SystemKind>,
        /// Scenarios: crash, linkdown, graceful.
        #[arg(long, value_delimiter = ',', default_value = "crash,linkdown,graceful")]
        scenarios: Vec<Scenario>,
        /// Where to write the results as JSON.
        #[arg(long, default_value = "bench-results/failover.json")]
        json: PathBuf,
        /// How duet units run: `services` (election + takeover) or `unit` (the supervisor).
        #[arg(long, default_value = "services")]
        duet_launch: DuetLaunch,
        /// How long probing goes on after the new unit's first answer, in ms.
        #[arg(long, default_value_t = 1500)]
        tail_ms: u64,
    },
    /// CPU and PSS of each unit of a settled, idle pair.
    Idle {
        /// Length of the sampling window in seconds.
        #[arg(long, default_value_t = 30)]
        secs: u64,
        #[arg(long, value_delimiter = ',', default_value = "duet,keepalived-v2,keepalived-v3,ucarp")]
        systems: Vec<SystemKind>,
        #[arg(long, default_value = "bench-results/idle.json")]
        json: PathBuf,
        #[arg(long, default_value = "services")]
        duet_launch: DuetLaunch,
    },
}

fn write_json(path: &Path, value: &impl serde::Serialize) -> anyhow::Result<()> {
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    }
    let text = serde_json::to_string_pretty(value)?;
    std::fs::write(path, text + "\n").with_context(|| format!("writing {}", path.display()))
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
        eprintln!("  {:<14} {:<8} {:.0} ms CPU, {:.1} MiB PSS", c.system, c.role, c.cpu_ms, c.pss_kib / 1024.0);
    })?;
    drop(l);
    println!("\n{}", idle::table(&costs));
    #[derive(serde::Serialize)]
    struct IdleReport<'a> {
        command: String,
        host: HostInfo,
        options: &'a IdleOptions,
        units: &'a [idle::IdleCost],
    }
    write_json(json, &IdleReport { command: command_line(), host: HostInfo::probe(), options: &opts, units: &costs })?;
    println!("results: {}", json.display());
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
    };
    match result {
        Ok(code) => code,
        Err(e) => {
            eprintln!("duet-bench: {e:#}");
            ExitCode::from(2)
        }
    }
}
