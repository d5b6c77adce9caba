//! `duet`: runs a whole duet unit from one configuration file.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};
use duet_runtime::telemetry::{self, TelemetryConfig};

/// duet: high availability for a pair of load-balancer units.
#[derive(Debug, Parser)]
#[command(name = "duet", version = duet_version::VERSION)]
struct Args {
    #[command(subcommand)]
    cmd: Cmd,
}

#[derive(Debug, Subcommand)]
enum Cmd {
    /// Run this unit's services (election, takeover, configsync, replicator) from one configuration file.
    Unit {
        /// The unit's configuration file.
        #[arg(long, short, env = "DUET_CONFIG")]
        config: PathBuf,
    },
    /// Validate a unit configuration file and exit.
    Check {
        #[arg(long, short, env = "DUET_CONFIG")]
        config: PathBuf,
    },
    /// Write the man pages and shell completions into a directory (for packages).
    #[command(hide = true)]
    GenerateDocs {
        #[arg(long)]
        out: PathBuf,
    },
}

/// Run as one of the unit's services when started under its name (the
/// supervisor starts the services from this binary with `argv[0]` set to
/// the service's: one binary in memory for the five processes).
fn as_service() -> Option<ExitCode> {
    let arg0 = std::env::args_os().next()?;
    let name = std::path::Path::new(&arg0).file_name()?.to_str()?;
    use duet_runtime::service::{Service, main as run};
    if name == duet_election::Election::NAME {
        Some(run::<duet_election::Election>(duet_version::VERSION))
    } else if name == duet_takeover::Takeover::NAME {
        Some(run::<duet_takeover::Takeover>(duet_version::VERSION))
    } else if name == duet_configsync::ConfigSyncService::NAME {
        Some(run::<duet_configsync::ConfigSyncService>(duet_version::VERSION))
    } else if name == duet_replicator::Replicator::NAME {
        Some(run::<duet_replicator::Replicator>(duet_version::VERSION))
    } else {
        None
    }
}

fn main() -> ExitCode {
    if let Some(code) = as_service() {
        return code;
    }
    if let Err(e) = duet_runtime::caps::raise_permitted() {
        eprintln!("duet: cannot make its permitted capabilities effective: {e}");
    }
    let args = Args::parse();
    let (config, check) = match args.cmd {
        Cmd::Unit { config } => (config, false),
        Cmd::Check { config } => (config, true),
        Cmd::GenerateDocs { out } => {
            use clap::CommandFactory;
            return match duet_version::write_docs(Args::command(), &out) {
                Ok(files) => {
                    println!("{} files written to {}", files.len(), out.display());
                    ExitCode::SUCCESS
                }
                Err(e) => {
                    eprintln!("cannot write the docs into {}: {e}", out.display());
                    ExitCode::FAILURE
                }
            };
        }
    };
    let cfg = match duet_config::load(&config) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("{e}");
            // A file that does not validate: what can be checked of it
            // without validation, in the same run.
            if let (duet_config::ConfigError::Invalid { .. }, Ok(raw)) = (&e, duet_config::load_raw(&config)) {
                for p in duet_unit::check::unvalidated_findings(&raw, duet_runtime::caps::effective()) {
                    eprintln!("  - {p}");
                }
            }
            return ExitCode::from(2);
        }
    };
    // The same checks for `duet check` and before the unit starts: every
    // finding at once; a problem stops the unit before anything runs.
    let found = duet_unit::check::findings(&cfg, duet_runtime::caps::effective());
    if check {
        for w in &found.warnings {
            println!("warning: {w}");
        }
        if !found.problems.is_empty() {
            eprintln!("{}: the unit cannot run with it:", config.display());
            for p in &found.problems {
                eprintln!("  - {p}");
            }
            return ExitCode::from(2);
        }
        println!(
            "{}: OK (unit {}, mode {}; runs {})",
            config.display(),
            cfg.raw.unit.name,
            cfg.election.mode.as_str(),
            found.services.join(", ")
        );
        return ExitCode::SUCCESS;
    }
    if !found.problems.is_empty() {
        eprintln!("{}: the unit cannot start:", config.display());
        for p in &found.problems {
            eprintln!("  - {p}");
        }
        return ExitCode::from(2);
    }
    let rt = match tokio::runtime::Builder::new_multi_thread().worker_threads(1).enable_all().build() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("cannot start the runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    rt.block_on(async move {
        let tcfg = TelemetryConfig::for_unit(&cfg);
        let _telemetry = match telemetry::init("duet-unit", &cfg.raw.unit.name, &tcfg) {
            Ok(g) => g,
            Err(e) => {
                eprintln!("cannot set up telemetry: {e:#}");
                return ExitCode::FAILURE;
            }
        };
        // The supervisor hands over before stopping: with the unit's token.
        duet_runtime::admin::set_client_token(cfg.admin_tokens.as_ref().map(duet_config::AdminTokens::internal));
        let (trigger, shutdown) = duet_runtime::shutdown::channel();
        if let Err(e) = duet_runtime::shutdown::on_signals(trigger) {
            tracing::error!("cannot install signal handlers: {e}");
            return ExitCode::FAILURE;
        }
        let run = async {
            let binaries = duet_unit::binaries(&cfg)?;
            let sup = duet_unit::Supervisor::new(cfg, config, binaries)?;
            sup.run(shutdown).await
        };
        match run.await {
            Ok(()) => ExitCode::SUCCESS,
            Err(e) => {
                tracing::error!("{e:#}");
                ExitCode::FAILURE
            }
        }
    })
}
