//! `duet-election`: the election service of one duet unit.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::Parser;
use duet_runtime::telemetry::{self, TelemetryConfig};

/// The election service of a duet unit: CARP on the wire, the unit's role over gRPC.
#[derive(Debug, Parser)]
#[command(version)]
struct Args {
    /// The unit's configuration file.
    #[arg(long, short, env = "DUET_CONFIG")]
    config: PathBuf,
    /// Validate the configuration, print the effective HA parameters and exit.
    #[arg(long)]
    check: bool,
}

/// Exit code asking the unit supervisor to restart every service (E8).
const EXIT_RESTART_SERVICES: u8 = 75;

fn main() -> ExitCode {
    let args = Args::parse();
    let cfg = match duet_config::load(&args.config) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("{e}");
            return ExitCode::from(2);
        }
    };
    if args.check {
        let p = &cfg.election;
        println!(
            "{}: OK (unit {}, mode {}, vhid {}, {} profile, advert every {} ms, takeover after {} ms, auth {})",
            args.config.display(),
            cfg.raw.unit.name,
            p.mode.as_str(),
            p.vhid,
            p.profile_name(),
            p.interval().as_millis(),
            p.down_interval(None).as_millis(),
            p.auth.mode_name()
        );
        for w in &cfg.warnings {
            println!("warning: {w}");
        }
        return ExitCode::SUCCESS;
    }
    if let Err(e) = duet_election::record_start(&cfg) {
        eprintln!("{e:#}");
        return ExitCode::FAILURE;
    }
    // Before the runtime starts, so that its threads inherit it.
    let fast = cfg.election.profile_name() == "fast";
    let rt_priority = cfg.raw.election.realtime_priority.unwrap_or(if fast { 10 } else { 0 });
    let realtime = (rt_priority > 0).then(|| duet_net::sched::set_realtime(rt_priority));
    let rt = match tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("cannot start the runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    rt.block_on(async move {
        let tcfg = TelemetryConfig {
            log: cfg.raw.telemetry.log.clone(),
            otlp_endpoint: cfg.raw.telemetry.otlp_endpoint.clone(),
        };
        let _telemetry = match telemetry::init("duet-election", &cfg.raw.unit.name, &tcfg) {
            Ok(g) => g,
            Err(e) => {
                eprintln!("cannot set up telemetry: {e:#}");
                return ExitCode::FAILURE;
            }
        };
        match &realtime {
            Some(Ok(())) => tracing::info!(priority = rt_priority, "real-time scheduling (SCHED_RR) for the election"),
            Some(Err(e)) => tracing::warn!(
                priority = rt_priority,
                "cannot use real-time scheduling ({e}): timers may be delayed on a busy machine; \
                 grant CAP_SYS_NICE or set election.realtime_priority = 0"
            ),
            None => {}
        }
        let shutdown = match duet_runtime::shutdown::for_service() {
            Ok(s) => s,
            Err(e) => {
                tracing::error!("cannot install signal handlers: {e}");
                return ExitCode::FAILURE;
            }
        };
        let listener = match duet_runtime::grpc::listen(cfg.election_listen, "election.listen").await {
            Ok(l) => l,
            Err(e) => {
                tracing::error!("{e:#}");
                return ExitCode::FAILURE;
            }
        };
        match duet_election::run(cfg, Some(args.config), listener, shutdown).await {
            Ok(duet_election::Exit::Shutdown) => ExitCode::SUCCESS,
            Ok(duet_election::Exit::RestartServices) => ExitCode::from(EXIT_RESTART_SERVICES),
            Err(e) => {
                tracing::error!("{e:#}");
                ExitCode::FAILURE
            }
        }
    })
}
