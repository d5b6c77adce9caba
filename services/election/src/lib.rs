//! The election service of a duet unit: CARP on the wire, the unit's role
//! over gRPC.
//!
//! [`run`] opens the raw sockets of the HA-check interfaces, drives the
//! `duet-carp` core ([`driver`]), serves `duet.election.v1.ElectionService`
//! with health and reflection ([`api`]), keeps the start history and replay
//! windows on disk ([`state`]) and reloads the HA parameters when the unit's
//! configuration file changes (E12). It returns when shutdown fires (after
//! a planned handover if the unit is active) or when a checked link loss
//! asks for the services to be restarted (E8).

mod api;
pub mod driver;
mod metrics;
pub mod state;

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use duet_config::Validated;
use duet_proto::election::v1::election_service_server::ElectionServiceServer;
use duet_runtime::shutdown::{self, Shutdown};
use duet_runtime::tasks::Tasks;
use tokio::net::TcpListener;

pub use driver::Exit;

/// Records a start of the election in the unit's start history (E9). Call
/// it first thing, so that a process killed early still counts.
pub fn record_start(cfg: &Validated) -> anyhow::Result<()> {
    state::StateDir::open(&cfg.state_dir)?.record_start("election").map(|_| ())
}

/// Runs the election of the unit described by `cfg` until `shutdown`.
/// `config_path`, when given, is watched for HA parameter changes.
pub async fn run(
    cfg: Validated,
    config_path: Option<PathBuf>,
    listener: TcpListener,
    shutdown: Shutdown,
) -> anyhow::Result<Exit> {
    let state = state::StateDir::open(&cfg.state_dir)?;
    let (router, health) = duet_runtime::grpc::router::<ElectionServiceServer<api::Api>>()?;
    let setup = driver::Setup {
        params: cfg.election.clone(),
        state,
        status_port: cfg.raw.election.status_port,
        handover_timeout: cfg.handover_timeout,
        pacify: duet_carp::PacifyRule { window: cfg.pacify_window, max_starts: cfg.raw.ha.pacify_max_starts },
        shared_addrs: cfg.shared.iter().map(|(i, c)| (i.clone(), c.addr, c.prefix)).collect(),
        vmac: cfg.raw.takeover.vmac,
        drop_log_window: Duration::from_secs(cfg.raw.election.drop_log_window_s),
    };
    let epoch: u64 = rand::random();
    let (mut driver, handles) = driver::Driver::new(setup, epoch, health)?;
    let mut tasks = Tasks::new();
    driver.open(&handles.inbound, &mut tasks).await?;

    // The API outlives the driver's handover on shutdown: it stops only
    // once the driver is done, so status stays readable meanwhile.
    let (api_trigger, api_shutdown) = shutdown::channel();
    let api = api::Api {
        shared: Arc::clone(&handles.shared),
        unit_name: cfg.raw.unit.name.clone(),
        shutdown: api_shutdown.clone(),
    };
    let router = router.add_service(ElectionServiceServer::new(api));
    let server = tokio::spawn(duet_runtime::grpc::serve(router, listener, api_shutdown));

    if let Some(path) = config_path {
        let shared = Arc::clone(&handles.shared);
        tasks.spawn("configuration watcher", watch_config(path, shared));
    }
    tracing::info!(
        unit = %cfg.raw.unit.name,
        mode = cfg.election.mode.as_str(),
        vhid = cfg.election.vhid,
        profile = cfg.election.profile_name(),
        auth = cfg.election.auth.mode_name(),
        "election started"
    );
    for w in &cfg.warnings {
        tracing::warn!("{w}");
    }

    let exit = driver.run(shutdown).await;
    api_trigger.fire();
    // The remaining tasks (receive loops, watchers) hold no state.
    tasks.abort().await;
    match tokio::time::timeout(Duration::from_secs(3), server).await {
        Ok(Ok(Err(e))) => tracing::error!("gRPC server: {e:#}"),
        Err(_) => tracing::warn!("gRPC server did not stop within 3 s"),
        _ => {}
    }
    tracing::info!(?exit, "election stopped");
    Ok(exit)
}

/// E12: reloads the HA parameters when the unit file or the HA overlay
/// from the synced image changes (checked every second and on SIGHUP). A
/// result that does not validate changes nothing.
async fn watch_config(path: PathBuf, shared: Arc<driver::Shared>) -> anyhow::Result<()> {
    use tokio::signal::unix::{SignalKind, signal};
    let mut hup = signal(SignalKind::hangup())?;
    let read = |path: &PathBuf| {
        let overlay = duet_config::overlay_path(path).and_then(|o| std::fs::read(o).ok());
        (std::fs::read(path).ok(), overlay)
    };
    let mut last = read(&path);
    loop {
        tokio::select! {
            _ = tokio::time::sleep(Duration::from_secs(1)) => {}
            _ = hup.recv() => {}
        }
        let now = read(&path);
        if now.0.is_none() || now == last {
            continue;
        }
        last = now;
        match duet_config::load(&path) {
            Ok(v) => {
                if shared.requests.send(driver::Request::Reload(Box::new(v.election))).await.is_err() {
                    return Ok(());
                }
            }
            Err(e) => tracing::error!("configuration changed but is not valid; nothing applied: {e}"),
        }
    }
}
