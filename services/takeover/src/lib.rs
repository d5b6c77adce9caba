//! The takeover service of a duet unit: the shared addresses, gratuitous
//! ARP and the virtual MAC, applied from the election's role (T1–T4).
//!
//! [`run`] follows the election's `WatchRole` stream
//! (`duet_runtime::follow`) and makes the kernel match the role: the
//! active unit holds every interface's shared address, over netlink,
//! announced by a burst of gratuitous ARPs and a periodic refresh; with the
//! virtual MAC option the address lives on a macvlan with MAC
//! 00:00:5e:00:01:<vhid> ([`devices`], [`sysctls`]). Any other role holds
//! nothing (a stopping unit releases first). Drift (an address or device
//! changed by hand) is repaired from netlink events and a periodic pass; a
//! role stream that stays down makes the unit give the addresses up before
//! the partner takes them over (fail-safe, T4). Each applied role is
//! reported back to the election ([`election`]), which resigns when its
//! takeover service is gone or keeps failing. It serves
//! `duet.takeover.v1.TakeoverService` with health and reflection ([`api`]).
//!
//! Every rule is in the core, [`machine`], tested with virtual time; the
//! [`driver`] only does the I/O around it ([`kernel`] for the interfaces).
//!
//! It does not decide the role (the election does), and it does not care
//! for addresses other than the configured shared ones.

mod api;
mod devices;
mod driver;
mod election;
mod error;
mod garp;
mod hooks;
mod kernel;
mod machine;
mod metrics;
mod notice;
pub mod plan;
pub mod sequence;
mod sysctls;

use std::sync::Arc;
use std::time::Duration;

use duet_config::Validated;
use duet_net::netlink::Netlink;
use duet_proto::takeover::v1::takeover_service_server::TakeoverServiceServer;
use duet_runtime::shutdown::{self, Shutdown};
use duet_runtime::tasks::Tasks;
use tokio::net::TcpListener;
use tokio::sync::watch;

/// How long the service's tasks get to stop once it has released everything.
const TASKS_GRACE: Duration = Duration::from_secs(1);

/// The driver's setup from a validated unit configuration and the pair's
/// settings at start (the stored image when configsync runs here, so the
/// takeover holds the addresses the election advertises for).
fn setup(cfg: &Validated) -> driver::Setup {
    let t = &cfg.raw.takeover;
    let (pair, params, _) = cfg.pair_at_start();
    let ifaces = if cfg.election.mode == duet_carp::HaMode::NonHa { Vec::new() } else { pair.shared() };
    driver::Setup {
        ifaces,
        vmac: t.vmac,
        vhid: params.vhid,
        garp_count: t.garp_count,
        garp_spacing: Duration::from_millis(t.garp_spacing_ms),
        garp_refresh: (t.garp_refresh_s > 0).then(|| Duration::from_secs(t.garp_refresh_s)),
        reconcile_interval: Duration::from_millis(t.reconcile_interval_ms),
        ha_timeout: params.ha_timeout(),
        advert_interval: params.interval(),
        sysctl_file: cfg.state_dir.join("takeover-sysctl.saved"),
        election_url: duet_runtime::follow::election_url(cfg.election_listen),
        replicator_url: cfg.raw.replicator.enabled.then(|| format!("http://{}", cfg.raw.replicator.listen)),
        state_wait: Duration::from_millis(t.state_wait_ms),
        hooks: cfg.hooks.clone(),
        unit: cfg.raw.unit.name.clone(),
    }
}

/// One line describing what the service will do, for `--check` and the
/// start-up log.
pub fn describe(cfg: &Validated) -> String {
    let s = setup(cfg);
    let addrs: Vec<String> = s.ifaces.iter().map(|(i, c)| format!("{c} on {i}")).collect();
    format!(
        "shared addresses: {}; gratuitous ARP burst {} x {} ms apart, refresh {}; virtual MAC {}; reconcile every {} ms; follows the election at {}; fail-safe after {} ms without it",
        notice::list(&addrs),
        s.garp_count,
        s.garp_spacing.as_millis(),
        s.garp_refresh.map_or("off".to_owned(), |r| format!("every {} s", r.as_secs())),
        if s.vmac {
            format!("on ({})", duet_wire::arp::format_mac(&duet_wire::arp::virtual_mac(s.vhid)))
        } else {
            "off".to_owned()
        },
        s.reconcile_interval.as_millis(),
        s.election_url,
        plan::failsafe_window(s.ha_timeout, s.advert_interval).as_millis()
    )
}

/// The takeover as a duet service process (`duet_runtime::service`).
#[derive(Debug)]
pub struct Takeover;

impl duet_runtime::service::Service for Takeover {
    const NAME: &'static str = "duet-takeover";
    const ABOUT: &'static str = "The takeover service of a duet unit: shared addresses, gratuitous ARP and the virtual MAC, following the election's role";
    const LISTEN_SETTING: &'static str = "takeover.listen";
    const CAPABILITIES: &'static [duet_runtime::caps::Cap] = duet_runtime::caps::TAKEOVER;
    type Error = anyhow::Error;

    /// One thread: the service waits on the kernel and the election, it
    /// does not compute. On one thread, a role event, the netlink requests
    /// it makes and their answers pass from task to task without waking
    /// another thread, which keeps the takeover's latency low on a busy box.
    fn threads(_cfg: &Validated) -> duet_runtime::service::Threads {
        duet_runtime::service::Threads::One
    }

    fn listen(cfg: &Validated) -> Result<std::net::SocketAddr, Vec<duet_config::Problem>> {
        Ok(cfg.takeover_listen)
    }

    fn check(cfg: &Validated) -> Result<String, Vec<duet_config::Problem>> {
        Ok(format!("unit {}, takeover listening on {}; {}", cfg.raw.unit.name, cfg.takeover_listen, describe(cfg)))
    }

    async fn run(cfg: Validated, ctx: duet_runtime::service::Context) -> anyhow::Result<duet_runtime::service::Exit> {
        run(cfg, ctx.listener, ctx.shutdown).await.map(|()| duet_runtime::service::Exit::Shutdown)
    }
}

/// Runs the takeover service of the unit described by `cfg` until
/// `shutdown`; then releases everything, reports and returns.
pub async fn run(cfg: Validated, listener: TcpListener, shutdown: Shutdown) -> anyhow::Result<()> {
    let setup = setup(&cfg);
    let (router, health) = duet_runtime::grpc::router::<TakeoverServiceServer<api::Api>>(
        &duet_runtime::admin::AdminAuth::new(cfg.admin_tokens.clone()),
    )?;
    let mut tasks = Tasks::new();
    let shared = Arc::new(api::Shared {
        status: Default::default(),
        garp: Default::default(),
        failures: tasks.failure_log(),
        ifaces: setup.ifaces.clone(),
        vmac: setup.vmac,
    });
    let nl = Arc::new(Netlink::new()?);

    // The API outlives the driver: status stays readable while it
    // releases the addresses on shutdown.
    let (api_trigger, api_shutdown) = shutdown::channel();
    let api = api::Api { shared: Arc::clone(&shared), netlink: Arc::new(Netlink::new()?) };
    let router = router.add_service(TakeoverServiceServer::new(api));
    tasks.spawn("gRPC server", duet_runtime::grpc::serve(router, listener, api_shutdown));

    let (reports, reports_rx) = watch::channel(None);
    let url = setup.election_url.clone();
    tasks.spawn_restarting("reporter", Duration::from_millis(100), move || {
        election::reporter(url.clone(), reports_rx.clone())
    });

    let wiring = driver::Wiring {
        reports,
        report_client: election::report_client(&setup.election_url)?,
        shared,
        health,
        metrics: metrics::Metrics::new(),
    };
    tracing::info!(unit = %cfg.raw.unit.name, "takeover started: {}", describe(&cfg));
    let driver = driver::Driver::new(setup, nl, wiring).await?;
    driver.run(shutdown, &mut tasks).await;

    api_trigger.fire();
    tasks.shutdown(TASKS_GRACE).await;
    tracing::info!("takeover stopped");
    Ok(())
}
