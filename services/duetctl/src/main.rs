//! `duetctl`: the admin CLI of a duet pair.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};
use duet_ctl::client::Addrs;
use duet_ctl::config_cmd::Target;
use duet_ctl::etcd_args::EtcdArgs;
use duet_ctl::{config_cmd, status};

/// Administer the duet unit this runs on (and through it, the pair); with
/// --etcd, a fleet of pairs in etcd.
#[derive(Debug, Parser)]
#[command(version = duet_version::VERSION)]
struct Args {
    /// The unit's configuration file (for the services' addresses).
    #[arg(long, short, global = true, env = "DUET_CONFIG")]
    config: Option<PathBuf>,
    /// Print the answers as JSON (protobuf JSON, as grpcurl prints).
    #[arg(long, global = true)]
    json: bool,
    /// A file with the API token (or the unit's tokens file); the token
    /// can also come from DUET_TOKEN, or from the unit file's
    /// admin.tokens_file when it can be read.
    #[arg(long, global = true, env = "DUET_TOKEN_FILE")]
    token_file: Option<PathBuf>,
    #[command(flatten)]
    etcd: EtcdArgs,
    #[command(subcommand)]
    cmd: Cmd,
}

#[derive(Debug, Subcommand)]
enum Cmd {
    /// Both status squares, the role, the partner, the configuration generations, replication.
    Status,
    /// Planned handover: the partner takes over now (run on the active unit).
    Failover {
        #[arg(long, default_value_t = 3000)]
        timeout_ms: u64,
    },
    /// Leave the pacified state and take part in HA again.
    ClearPacified,
    /// The replicator: link to the partner, entries, lag, resync, drops, data plane.
    Replication,
    /// Names what is wrong with this unit and its pair, each with its fix
    /// (partner unreachable, adverts one way, another group or host on the
    /// wire, a password mismatch, clock skew, certificates, configuration
    /// out of sync, replication, capabilities...). Exits 0 when nothing is
    /// wrong, 1 with warnings, 2 with a critical problem.
    Doctor,
    /// Each service's gRPC health (no token needed): exits 1 when one is
    /// not serving (pacified, a link down, a takeover not following) or
    /// does not answer. For container and systemd health checks.
    Health,
    /// The persistence entries this unit holds (all tables, or one).
    Persistence { table: Option<String> },
    /// The configuration image (of the unit here; with --etcd and --pair, of a pair in the fleet's etcd).
    #[command(subcommand)]
    Config(ConfigCmd),
    /// A fleet of pairs in etcd (needs --etcd).
    #[command(subcommand)]
    Fleet(FleetCmd),
    /// Write the man pages and shell completions into a directory (for packages).
    #[command(hide = true)]
    GenerateDocs {
        #[arg(long)]
        out: PathBuf,
    },
    /// Make a CA and one certificate per unit for the peer links (a test pair).
    Certs {
        /// Directory to write ca.pem, <unit>.pem and <unit>.key into.
        #[arg(long, default_value = "certs")]
        out: PathBuf,
        /// Name of the pair (goes into the CA's name).
        #[arg(long, default_value = "duet")]
        pair: String,
        /// Unit names (their `unit.name`).
        #[arg(long, value_delimiter = ',', default_value = "lb1,lb2")]
        units: Vec<String>,
        /// Validity in days.
        #[arg(long, default_value_t = 825)]
        days: u32,
    },
}

#[derive(Debug, Subcommand)]
enum FleetCmd {
    /// Every pair (or --pair's): its head, its units (mode, role, generation, squares,
    /// replication), the witness holder, and what is wrong. Exits 1 when a pair has a warning.
    Status,
}

impl Cmd {
    /// The command's name, for messages.
    fn name(&self) -> &'static str {
        match self {
            Self::Status => "status",
            Self::Failover { .. } => "failover",
            Self::ClearPacified => "clear-pacified",
            Self::Replication => "replication",
            Self::Doctor => "doctor",
            Self::Health => "health",
            Self::Persistence { .. } => "persistence",
            Self::Config(_) => "config",
            Self::Fleet(_) => "fleet",
            Self::GenerateDocs { .. } => "generate-docs",
            Self::Certs { .. } => "certs",
        }
    }
}

#[derive(Debug, Subcommand)]
enum ConfigCmd {
    /// Print the image, or one section: ha, interfaces, virtual_services, virtual_services/<name>.
    Get { section: Option<String> },
    /// Change HA settings (key=value ...) or replace the whole image (--file).
    Set {
        /// HA settings in the unit file's words, e.g. timeout_s=6 preferred=first profile=fast.
        pairs: Vec<String>,
        /// A whole image as JSON (as `config get` prints it).
        #[arg(long)]
        file: Option<PathBuf>,
        /// The generation the change is based on (default: the current one).
        #[arg(long)]
        base: Option<u64>,
        #[arg(long, default_value = "")]
        comment: String,
    },
    /// Add or replace a virtual service from a JSON file.
    SetVs {
        #[arg(long)]
        file: PathBuf,
        #[arg(long)]
        base: Option<u64>,
        #[arg(long, default_value = "")]
        comment: String,
    },
    /// Remove a virtual service.
    DeleteVs {
        name: String,
        #[arg(long)]
        base: Option<u64>,
        #[arg(long, default_value = "")]
        comment: String,
    },
    /// Validate an image file without committing it.
    Check {
        #[arg(long)]
        file: PathBuf,
    },
    /// Save the whole image to a file.
    Backup {
        #[arg(long)]
        out: PathBuf,
    },
    /// Restore the image from a backup file.
    Restore {
        #[arg(long)]
        file: PathBuf,
        #[arg(long)]
        base: Option<u64>,
    },
    /// Push the whole image to the partner now.
    ForceUpdate,
    /// Generations kept and named backups.
    History,
    /// Commit a kept generation again.
    Rollback {
        generation: u64,
        #[arg(long)]
        base: Option<u64>,
    },
    /// This unit's own settings (never synced); --set replaces them from JSON.
    Local {
        #[arg(long)]
        set: Option<PathBuf>,
    },
}

/// The config command `c` on `t`.
async fn config(t: &Target, c: ConfigCmd, json: bool) -> anyhow::Result<()> {
    match c {
        ConfigCmd::Get { section } => config_cmd::get(t, section.as_deref().unwrap_or("")).await,
        ConfigCmd::Set { pairs, file, base, comment } => match (file, pairs.is_empty()) {
            (Some(f), true) => config_cmd::set_file(t, &f, base, &comment, json).await,
            (None, false) => config_cmd::set_ha(t, &pairs, base, &comment, json).await,
            _ => anyhow::bail!("give either --file IMAGE.json or HA settings as key=value, not both"),
        },
        ConfigCmd::SetVs { file, base, comment } => config_cmd::set_vs(t, &file, base, &comment, json).await,
        ConfigCmd::DeleteVs { name, base, comment } => config_cmd::delete_vs(t, &name, base, &comment, json).await,
        ConfigCmd::Check { file } => config_cmd::check(t, &file, json).await,
        ConfigCmd::Backup { out } => config_cmd::backup(t, &out).await,
        ConfigCmd::Restore { file, base } => config_cmd::restore(t, &file, base).await,
        ConfigCmd::ForceUpdate => config_cmd::force_update(unit_only(t, "force-update")?, json).await,
        ConfigCmd::History => config_cmd::history(t, json).await,
        ConfigCmd::Rollback { generation, base } => config_cmd::rollback(t, generation, base).await,
        ConfigCmd::Local { set } => config_cmd::local(unit_only(t, "local")?, set.as_deref()).await,
    }
}

/// The refusal of a unit's own config command with --etcd.
fn units_command(cmd: &str) -> anyhow::Error {
    anyhow::anyhow!(
        "config {cmd} is a unit's command: run it against the unit, without --etcd (or DUET_ETCD) and --pair"
    )
}

/// The unit's addresses, for a command that only a unit has.
fn unit_only<'a>(t: &'a Target, cmd: &str) -> anyhow::Result<&'a Addrs> {
    match t {
        Target::Unit(a) => Ok(a),
        Target::Fleet { .. } => Err(units_command(cmd)),
    }
}

/// `fleet ...` and `config ...` with --etcd: no unit file, no token.
async fn run_fleet(etcd: &EtcdArgs, cmd: Cmd, json: bool) -> anyhow::Result<()> {
    let pair = etcd.pair()?;
    match cmd {
        Cmd::Fleet(FleetCmd::Status) => {
            let Some(s) = etcd.settings()? else {
                anyhow::bail!(
                    "fleet status reads a fleet's etcd: give --etcd ENDPOINTS (or DUET_ETCD), e.g. --etcd \
                     198.18.0.21:2379,198.18.0.22:2379,198.18.0.23:2379 --etcd-ca ca.pem --etcd-cert ops.pem \
                     --etcd-key ops.key"
                )
            };
            let code = duet_ctl::fleet::status(&s, pair, json).await?;
            if code != 0 {
                std::process::exit(code);
            }
            Ok(())
        }
        Cmd::Config(c) => {
            match c {
                ConfigCmd::ForceUpdate => return Err(units_command("force-update")),
                ConfigCmd::Local { .. } => return Err(units_command("local")),
                _ => {}
            }
            let Some(pair) = pair else {
                anyhow::bail!(
                    "--etcd without --pair: config through etcd works on one pair's image: add --pair NAME \
                     (`duetctl --etcd ... fleet status` lists the pairs), or drop --etcd (or unset DUET_ETCD) to \
                     work on the unit here"
                )
            };
            let s = etcd.settings()?.ok_or_else(|| anyhow::anyhow!("--etcd: no endpoint"))?;
            let fleet = duet_fleet::Fleet::connect(&s).await.map_err(|e| anyhow::anyhow!("{e}"))?;
            config(&Target::Fleet { fleet: Box::new(fleet), pair: pair.to_owned() }, c, json).await
        }
        other => anyhow::bail!(
            "`duetctl {}` talks to the unit this runs on, not to a fleet's etcd: drop --etcd (or unset DUET_ETCD); \
             `duetctl --etcd ... fleet status` shows the fleet",
            other.name()
        ),
    }
}

async fn run(args: Args) -> anyhow::Result<()> {
    let json = args.json;
    let local = matches!(args.cmd, Cmd::Certs { .. } | Cmd::GenerateDocs { .. });
    if args.etcd.pair.is_some() && !args.etcd.given() && !local {
        anyhow::bail!(
            "--pair names a pair in a fleet's etcd: give --etcd ENDPOINTS too (or DUET_ETCD), or drop --pair to \
             work on the unit here"
        );
    }
    if !local && (args.etcd.given() || matches!(args.cmd, Cmd::Fleet(_))) {
        return run_fleet(&args.etcd, args.cmd, json).await;
    }
    // Making certificates talks to no service: it needs no unit file (and
    // works where DUET_CONFIG names one that is not there, as in the image).
    let a = if local {
        Addrs::default()
    } else {
        let token = duet_ctl::client::token(args.config.as_deref(), args.token_file.as_deref())?;
        duet_proto::auth::set_client_token(token.as_deref());
        Addrs::from_config(args.config.as_deref())?
    };
    match args.cmd {
        Cmd::Status => status::status(&a, json).await,
        Cmd::Failover { timeout_ms } => status::failover(&a, timeout_ms, json).await,
        Cmd::ClearPacified => status::clear_pacified(&a).await,
        Cmd::Replication => status::replication(&a, json).await,
        Cmd::Health => status::health(&a).await,
        Cmd::Doctor => {
            let code = duet_ctl::doctor::run(&a, args.config.as_deref(), json).await?;
            if code != 0 {
                std::process::exit(code);
            }
            Ok(())
        }
        Cmd::GenerateDocs { out } => {
            use clap::CommandFactory;
            let files = duet_version::write_docs(Args::command(), &out)?;
            println!("{} files written to {}", files.len(), out.display());
            Ok(())
        }
        Cmd::Persistence { table } => status::persistence(&a, table.unwrap_or_default(), json).await,
        Cmd::Certs { out, pair, units, days } => {
            let names: Vec<&str> = units.iter().map(String::as_str).collect();
            let w = duet_ctl::certs::generate(&out, &pair, &names, days)?;
            println!("CA: {}", w.ca.display());
            for (u, c, k) in w.units {
                println!("{u}: {} {}", c.display(), k.display());
            }
            Ok(())
        }
        Cmd::Config(c) => config(&Target::Unit(a), c, json).await,
        // With or without --etcd, run_fleet has it.
        Cmd::Fleet(_) => run_fleet(&args.etcd, args.cmd, json).await,
    }
}

fn main() -> ExitCode {
    let args = Args::parse();
    let rt = match tokio::runtime::Builder::new_current_thread().enable_all().build() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("duetctl: {e}");
            return ExitCode::FAILURE;
        }
    };
    match rt.block_on(run(args)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("duetctl: {e:#}");
            ExitCode::FAILURE
        }
    }
}
