//! The one skeleton of every duet service process: the four services'
//! `main` is `duet_runtime::service::main::<TheService>()`.
//!
//! ```text
//!  args (--config, --check) ─► unit file (every problem at once, exit 2)
//!    ├─ --check ─► the service's view of the file, warnings; exit 0 or 2
//!    └─ before_runtime (start history, scheduling) ─► runtime (threads)
//!         ─► telemetry ─► signals + supervisor exit ─► gRPC listener
//!         ─► run(cfg, context) until shutdown ─► exit code
//! ```
//!
//! Exit codes: 0 after a shutdown, [`EXIT_RESTART_SERVICES`] when the
//! service asks the unit supervisor to restart every service (E8), 2 for
//! a configuration the service cannot run with, 1 for anything else.

use std::fmt::Display;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;

use duet_config::{Problem, Validated};
use tokio::net::TcpListener;

use crate::shutdown::Shutdown;
use crate::telemetry::{self, TelemetryConfig};

/// Exit code with which a service asks the unit supervisor to restart
/// every service of the unit (E8: a checked link lost with hard reboot on).
pub const EXIT_RESTART_SERVICES: u8 = 75;

/// Exit code for a configuration the service cannot run with.
pub const EXIT_CONFIG: u8 = 2;

/// How a service's run ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Exit {
    /// Shutdown was asked for (SIGTERM, SIGINT, the supervisor gone).
    Shutdown,
    /// Restart every service of the unit (E8).
    RestartServices,
}

/// The threads of a service's runtime.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Threads {
    /// One thread: the service waits on the kernel and its peers and does
    /// not compute; events pass from task to task without waking another
    /// thread.
    One,
    /// A multi-thread runtime with this many workers.
    Workers(usize),
}

/// A line the service wants logged once telemetry is up (from work done
/// before the runtime started).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Note {
    Info(String),
    Warn(String),
}

/// What a service's run gets besides its configuration.
#[derive(Debug)]
pub struct Context {
    /// The unit file it was started with (read again on SIGHUP where the
    /// service does that).
    pub config_path: PathBuf,
    /// Its gRPC listener, bound.
    pub listener: TcpListener,
    /// Fires on SIGTERM, SIGINT or the supervisor's exit.
    pub shutdown: Shutdown,
}

/// One duet service process.
pub trait Service {
    /// The process name, e.g. `duet-election` (telemetry's service name).
    const NAME: &'static str;
    /// One line for `--help`.
    const ABOUT: &'static str;
    /// The setting of its gRPC address, e.g. `election.listen`.
    const LISTEN_SETTING: &'static str;
    /// The capabilities it cannot work without: checked before it starts
    /// ([`crate::caps`]), and by `--check`.
    const CAPABILITIES: &'static [crate::caps::Cap] = &[];
    /// Why its run failed.
    type Error: Display;

    /// The runtime's threads.
    fn threads(_cfg: &Validated) -> Threads {
        Threads::Workers(2)
    }

    /// Its gRPC address, or the problems in its section of the file.
    fn listen(cfg: &Validated) -> Result<SocketAddr, Vec<Problem>>;

    /// What `--check` prints after "<file>: OK" (the service's view of
    /// the file), or the problems that would stop it.
    fn check(cfg: &Validated) -> Result<String, Vec<Problem>>;

    /// Work before the runtime starts (its threads inherit what this sets);
    /// the notes are logged once telemetry is up. An error stops the
    /// process before anything else starts.
    fn before_runtime(_cfg: &Validated) -> Result<Vec<Note>, Self::Error> {
        Ok(Vec::new())
    }

    /// Runs the service until `ctx.shutdown` fires (or it asks for a
    /// restart of the unit's services).
    fn run(cfg: Validated, ctx: Context) -> impl Future<Output = Result<Exit, Self::Error>> + Send;
}

/// The command line every service takes.
#[derive(Debug, clap::Parser)]
#[command(version)]
struct Args {
    /// The unit's configuration file.
    #[arg(long, short, env = "DUET_CONFIG")]
    config: PathBuf,
    /// Validate the configuration, print what the service would do and exit.
    #[arg(long)]
    check: bool,
}

/// A service that cannot start with its section of the unit file: every
/// problem, one a line.
#[derive(Debug, thiserror::Error)]
#[error("{service} cannot start:\n{}", list(.problems))]
pub struct CannotStart {
    /// The service, as its messages name it ("configsync").
    pub service: &'static str,
    pub problems: Vec<Problem>,
}

impl CannotStart {
    /// `service` cannot start with `problems`.
    pub fn new(service: &'static str) -> impl FnOnce(Vec<Problem>) -> Self {
        move |problems| Self { service, problems }
    }
}

/// The problems, one a line as `  - <problem>`.
fn list(problems: &[Problem]) -> String {
    problems.iter().map(|p| format!("  - {p}")).collect::<Vec<_>>().join("\n")
}

fn print_problems(problems: &[Problem]) {
    for p in problems {
        eprintln!("  - {p}");
    }
}

/// The whole `main` of service `S`.
pub fn main<S: Service>(version: &'static str) -> ExitCode {
    use clap::{CommandFactory, FromArgMatches};
    // The process's name in ps, top and pgrep (its comm) is the service's,
    // also when the unit supervisor runs it from the `duet` binary.
    if let Ok(name) = std::ffi::CString::new(S::NAME) {
        let _ = nix::sys::prctl::set_name(&name);
    }
    let matches = Args::command().name(S::NAME).about(S::ABOUT).version(version).get_matches();
    let args = match Args::from_arg_matches(&matches) {
        Ok(a) => a,
        Err(e) => e.exit(),
    };
    let cfg = match duet_config::load(&args.config) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("{e}");
            return ExitCode::from(EXIT_CONFIG);
        }
    };
    if let Err(e) = crate::caps::raise_permitted() {
        eprintln!("{}: cannot make its permitted capabilities effective: {e}", S::NAME);
    }
    let lacking = crate::caps::missing(S::CAPABILITIES);
    if !lacking.is_empty() {
        // One line and a configuration exit: restarting would not help.
        eprintln!("{}", crate::caps::explain(S::NAME, &lacking));
        return ExitCode::from(EXIT_CONFIG);
    }
    if args.check {
        return match S::check(&cfg) {
            Ok(view) => {
                println!("{}: OK ({view})", args.config.display());
                for w in &cfg.warnings {
                    println!("warning: {w}");
                }
                ExitCode::SUCCESS
            }
            Err(problems) => {
                eprintln!("{}: {} cannot run with it:", args.config.display(), S::NAME);
                print_problems(&problems);
                ExitCode::from(EXIT_CONFIG)
            }
        };
    }
    let addr = match S::listen(&cfg) {
        Ok(a) => a,
        Err(problems) => {
            eprintln!("{}: {} cannot run with it:", args.config.display(), S::NAME);
            print_problems(&problems);
            return ExitCode::from(EXIT_CONFIG);
        }
    };
    let notes = match S::before_runtime(&cfg) {
        Ok(n) => n,
        Err(e) => {
            eprintln!("{e:#}");
            return ExitCode::FAILURE;
        }
    };
    let built = match S::threads(&cfg) {
        Threads::One => tokio::runtime::Builder::new_current_thread().enable_all().build(),
        Threads::Workers(n) => tokio::runtime::Builder::new_multi_thread().worker_threads(n).enable_all().build(),
    };
    let rt = match built {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("cannot start the runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    rt.block_on(serve::<S>(cfg, args.config, addr, notes))
}

async fn serve<S: Service>(cfg: Validated, config_path: PathBuf, addr: SocketAddr, notes: Vec<Note>) -> ExitCode {
    let tcfg = TelemetryConfig::for_unit(&cfg);
    let guard = match telemetry::init(S::NAME, &cfg.raw.unit.name, &tcfg) {
        Ok(g) => g,
        Err(e) => {
            eprintln!("cannot set up telemetry: {e}");
            return ExitCode::FAILURE;
        }
    };
    for n in notes {
        match n {
            Note::Info(m) => tracing::info!("{m}"),
            Note::Warn(m) => tracing::warn!("{m}"),
        }
    }
    let code = async {
        let shutdown = match crate::shutdown::for_service() {
            Ok(s) => s,
            Err(e) => {
                tracing::error!("cannot install signal handlers: {e}");
                return ExitCode::FAILURE;
            }
        };
        let listener = match crate::grpc::listen(addr, S::LISTEN_SETTING).await {
            Ok(l) => l,
            Err(e) => {
                tracing::error!("{e}");
                return ExitCode::FAILURE;
            }
        };
        // The unit's services call each other with its internal token.
        crate::admin::set_client_token(cfg.admin_tokens.as_ref().map(duet_config::AdminTokens::internal));
        match S::run(cfg, Context { config_path, listener, shutdown }).await {
            Ok(Exit::Shutdown) => ExitCode::SUCCESS,
            Ok(Exit::RestartServices) => ExitCode::from(EXIT_RESTART_SERVICES),
            Err(e) => {
                tracing::error!("{e:#}");
                ExitCode::FAILURE
            }
        }
    }
    .await;
    // The final export flush needs the runtime to make progress, and with
    // one thread that is this one: let go of the guard elsewhere.
    let _ = tokio::task::spawn_blocking(move || drop(guard)).await;
    code
}
