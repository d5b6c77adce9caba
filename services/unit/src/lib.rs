//! The unit supervisor: one command runs a whole duet unit.
//!
//! `duet unit --config unit.toml` starts the unit's services as separate
//! processes (election first, then takeover), restarts a crashed one with
//! backoff and records every restart in the unit's start history, so that a
//! unit that keeps crashing is pacified (E9). On SIGTERM it asks the
//! election for a planned handover (E11), then stops the services in order.
//! When the election exits asking for a restart of the services (a checked
//! link lost with hard reboot on, E8), it restarts them all, or runs the
//! configured command.
//!
//! It holds no HA state of its own and talks to the services only through
//! process signals and the election's gRPC API.

pub mod check;
mod metrics;

use std::path::PathBuf;
use std::process::ExitStatus;
use std::time::{Duration, Instant};

use anyhow::Context;
use duet_config::{LinkFailureAction, Validated};
use duet_proto::election::v1::HandoverRequest;
use duet_proto::election::v1::election_service_client::ElectionServiceClient;
use duet_runtime::shutdown::Shutdown;
use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;
use tokio::process::{Child, Command};

/// A service that ran this long before crashing starts again from the
/// shortest backoff.
const HEALTHY_RUN: Duration = Duration::from_secs(60);

/// One service of the unit.
#[derive(Debug, Clone)]
pub struct ServiceSpec {
    /// Short name ("election").
    pub name: &'static str,
    /// Binary file name ("duet-election").
    pub binary: &'static str,
    /// Its gRPC address: the next service starts once it accepts there
    /// (the takeover, configsync and the replicator follow the election).
    pub listen: Option<std::net::SocketAddr>,
}

/// How long a started service may take to listen before the next one is
/// started anyway (it then retries on its own).
const LISTEN_WAIT: Duration = Duration::from_secs(5);

/// The services a unit runs, in start order: election and takeover
/// always; configsync when `[configsync]` is enabled and complete (a unit
/// without certificates yet still runs, and the log says what is missing);
/// the replicator likewise when `[replicator]` is enabled.
pub fn services(cfg: &Validated) -> Vec<ServiceSpec> {
    use duet_runtime::service::Service;
    // Which run is [`check::findings`]'s (the unit does not start with a
    // problem; without one, every service listed resolves).
    let run = check::findings(cfg, None).services;
    let mut v = vec![
        ServiceSpec { name: "election", binary: duet_election::Election::NAME, listen: Some(cfg.election_listen) },
        ServiceSpec { name: "takeover", binary: duet_takeover::Takeover::NAME, listen: Some(cfg.takeover_listen) },
    ];
    if run.contains(&"configsync") {
        let listen = cfg.configsync().ok().map(|s| s.listen);
        v.push(ServiceSpec { name: "configsync", binary: duet_configsync::ConfigSyncService::NAME, listen });
    }
    if run.contains(&"replicator") {
        let listen = cfg.replicator().ok().map(|s| s.listen);
        v.push(ServiceSpec { name: "replicator", binary: duet_replicator::Replicator::NAME, listen });
    }
    v
}

struct Running {
    spec: ServiceSpec,
    child: Option<Child>,
    started: Instant,
    backoff: Duration,
    restart_at: Option<Instant>,
    starts: u32,
}

/// The supervisor of one unit.
pub struct Supervisor {
    cfg: Validated,
    config_path: PathBuf,
    binaries: Binaries,
    services: Vec<Running>,
    /// Each service's starts and whether it runs, for the exporter.
    metrics: metrics::Metrics,
}

impl std::fmt::Debug for Supervisor {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Supervisor").field("unit", &self.cfg.raw.unit.name).field("binaries", &self.binaries).finish()
    }
}

/// Where the services are run from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Binaries {
    /// The `duet` binary itself, started under each service's name
    /// (`argv[0]`): one program in memory for the unit's five processes.
    /// The default.
    This(PathBuf),
    /// A directory of the separate service binaries (`supervisor.bin_dir`).
    Dir(PathBuf),
}

impl Binaries {
    /// The program to start for `spec`, and the `argv[0]` to give it.
    fn program(&self, spec: &ServiceSpec) -> PathBuf {
        match self {
            Self::This(exe) => exe.clone(),
            Self::Dir(d) => d.join(spec.binary),
        }
    }
}

/// Where the services are run from: `supervisor.bin_dir` when set, else
/// this very binary.
pub fn binaries(cfg: &Validated) -> anyhow::Result<Binaries> {
    if let Some(d) = &cfg.raw.supervisor.bin_dir {
        return Ok(Binaries::Dir(d.clone()));
    }
    Ok(Binaries::This(std::env::current_exe().context("finding the duet binary")?))
}

impl Supervisor {
    /// Checks that every service's program is there.
    pub fn new(cfg: Validated, config_path: PathBuf, binaries: Binaries) -> anyhow::Result<Self> {
        let base = Duration::from_millis(cfg.raw.supervisor.restart_backoff_ms);
        let mut running = Vec::new();
        for spec in services(&cfg) {
            let p = binaries.program(&spec);
            if !p.exists() {
                anyhow::bail!(
                    "{} not found: install the service binaries in supervisor.bin_dir or unset it (the services then run from duet itself)",
                    p.display()
                );
            }
            running.push(Running {
                spec,
                child: None,
                started: Instant::now(),
                backoff: base,
                restart_at: None,
                starts: 0,
            });
        }
        let metrics = metrics::Metrics::new(running.iter().map(|r| r.spec.name).collect());
        Ok(Self { cfg, config_path, binaries, services: running, metrics })
    }

    fn spawn(&mut self, k: usize) -> anyhow::Result<()> {
        let r = &mut self.services[k];
        let exe = self.binaries.program(&r.spec);
        // Its own process group: a signal to the supervisor's group (a
        // terminal's Ctrl-C, `kill -- -pgid`) reaches the supervisor alone,
        // which then stops the services in order. The service watches for
        // the supervisor to disappear instead (SUPERVISOR_ENV).
        let child = Command::new(&exe)
            .arg0(r.spec.binary)
            .arg("--config")
            .arg(&self.config_path)
            .env(duet_runtime::shutdown::SUPERVISOR_ENV, std::process::id().to_string())
            .process_group(0)
            .kill_on_drop(true)
            .spawn()
            .with_context(|| format!("starting {}", exe.display()))?;
        tracing::info!(service = r.spec.name, pid = child.id().unwrap_or(0), "service started");
        r.child = Some(child);
        r.started = Instant::now();
        r.restart_at = None;
        r.starts += 1;
        self.metrics.started(k);
        Ok(())
    }

    /// Starts the services in order, each once the one before listens.
    async fn start_all(&mut self) -> anyhow::Result<()> {
        for k in 0..self.services.len() {
            self.spawn(k)?;
            if let Some(addr) = self.services[k].spec.listen {
                let name = self.services[k].spec.name;
                if !wait_listening(addr, &mut self.services[k], LISTEN_WAIT).await {
                    tracing::warn!(
                        service = name,
                        %addr,
                        "not listening after {} s; starting the next service anyway",
                        LISTEN_WAIT.as_secs()
                    );
                }
            }
        }
        Ok(())
    }

    /// Runs the unit until `shutdown`; then hands over and stops everything.
    pub async fn run(mut self, mut shutdown: Shutdown) -> anyhow::Result<()> {
        self.start_all().await?;
        loop {
            let next_restart = self.services.iter().filter_map(|r| r.restart_at).min();
            tokio::select! {
                () = shutdown.wait() => break,
                (k, status) = wait_any(&mut self.services) => self.exited(k, status).await?,
                () = sleep_until(next_restart) => {
                    let now = Instant::now();
                    for k in 0..self.services.len() {
                        if self.services[k].restart_at.is_some_and(|t| t <= now)
                            && let Err(e) = self.spawn(k) {
                                tracing::error!("{e:#}");
                                self.schedule_restart(k);
                            }
                    }
                }
            }
        }
        self.stop().await;
        Ok(())
    }

    async fn exited(&mut self, k: usize, status: std::io::Result<ExitStatus>) -> anyhow::Result<()> {
        let name = self.services[k].spec.name;
        self.services[k].child = None;
        self.metrics.stopped(k);
        let code = status.as_ref().ok().and_then(ExitStatus::code);
        if name == "election" && code == Some(i32::from(duet_runtime::service::EXIT_RESTART_SERVICES)) {
            tracing::error!("the election lost a checked link with hard reboot on (E8)");
            return self.link_failure().await;
        }
        match &status {
            Ok(s) => tracing::error!(service = name, status = %s, "service exited; restarting it"),
            Err(e) => tracing::error!(service = name, error = %e, "lost track of the service; restarting it"),
        }
        // The election records its own starts; restarts of the others are
        // recorded here, so a unit whose services keep crashing is pacified.
        if name != "election"
            && let Err(e) =
                duet_election::state::StateDir::open(&self.cfg.state_dir).and_then(|s| s.record_start(name).map(|_| ()))
        {
            tracing::error!("cannot record the restart in the start history: {e:#}");
        }
        self.schedule_restart(k);
        Ok(())
    }

    fn schedule_restart(&mut self, k: usize) {
        let max = Duration::from_millis(self.cfg.raw.supervisor.restart_backoff_max_ms);
        let base = Duration::from_millis(self.cfg.raw.supervisor.restart_backoff_ms);
        let r = &mut self.services[k];
        if r.started.elapsed() >= HEALTHY_RUN {
            r.backoff = base;
        }
        let delay = r.backoff;
        r.backoff = (r.backoff * 2).min(max);
        r.restart_at = Some(Instant::now() + delay);
        tracing::warn!(service = r.spec.name, delay_ms = delay.as_millis() as u64, "restart scheduled");
    }

    /// E8: a checked link was lost and hard reboot is on.
    async fn link_failure(&mut self) -> anyhow::Result<()> {
        match self.cfg.raw.ha.unit.link_failure_action {
            LinkFailureAction::Command => {
                let argv = &self.cfg.raw.ha.unit.link_failure_command;
                tracing::error!(command = ?argv, "running the link-failure command");
                let run = Command::new(&argv[0]).args(&argv[1..]).status();
                match tokio::time::timeout(Duration::from_secs(60), run).await {
                    Ok(Ok(s)) => tracing::info!(status = %s, "link-failure command finished"),
                    Ok(Err(e)) => tracing::error!("link-failure command failed to run: {e}"),
                    Err(_) => tracing::error!("link-failure command did not finish within 60 s"),
                }
            }
            LinkFailureAction::RestartServices => tracing::error!("restarting all services of the unit"),
        }
        self.stop_services().await;
        self.start_all().await
    }

    /// Planned handover, then every service stopped in order.
    async fn stop(&mut self) {
        tracing::info!("stopping the unit: planned handover first");
        match self.handover().await {
            Ok(msg) => tracing::info!("{msg}"),
            Err(e) => tracing::warn!("no planned handover: {e:#}"),
        }
        self.stop_services().await;
        tracing::info!("unit stopped");
    }

    async fn handover(&self) -> anyhow::Result<String> {
        let url = format!("http://{}", self.cfg.election_listen);
        let timeout = self.cfg.handover_timeout;
        let call = async {
            let ch = tonic::transport::Endpoint::from_shared(url)?.connect().await?;
            let mut c = ElectionServiceClient::new(duet_runtime::admin::authed(ch));
            let r =
                c.handover(HandoverRequest { timeout_ms: u64::try_from(timeout.as_millis()).unwrap_or(3000) }).await;
            match r {
                Ok(r) => {
                    let r = r.into_inner();
                    Ok(if r.confirmed {
                        format!("handed over to {} in {} ms", r.partner, r.took_ms)
                    } else {
                        "handover not confirmed by the partner".to_string()
                    })
                }
                // Not active (or no partner ready): nothing to hand over.
                Err(s) if s.code() == tonic::Code::FailedPrecondition => {
                    Ok(format!("nothing to hand over: {}", s.message()))
                }
                Err(s) => Err(anyhow::anyhow!("handover failed: {}", s.message())),
            }
        };
        tokio::time::timeout(timeout + Duration::from_secs(2), call)
            .await
            .context("the handover did not finish in time")?
    }

    /// Stops the services in start order (the election first, so that it no
    /// longer hands the role out; the takeover last, releasing the addresses).
    async fn stop_services(&mut self) {
        let grace = Duration::from_millis(self.cfg.raw.supervisor.stop_grace_ms);
        for (k, r) in self.services.iter_mut().enumerate() {
            r.restart_at = None;
            self.metrics.stopped(k);
            let Some(mut child) = r.child.take() else { continue };
            if let Some(pid) = child.id() {
                let _ = kill(Pid::from_raw(i32::try_from(pid).unwrap_or(0)), Signal::SIGTERM);
            }
            match tokio::time::timeout(grace, child.wait()).await {
                Ok(Ok(s)) => tracing::info!(service = r.spec.name, status = %s, "service stopped"),
                Ok(Err(e)) => tracing::warn!(service = r.spec.name, "waiting for the service: {e}"),
                Err(_) => {
                    tracing::error!(
                        service = r.spec.name,
                        grace_ms = grace.as_millis() as u64,
                        "service did not stop in time; killing it"
                    );
                    let _ = child.kill().await;
                }
            }
        }
    }
}

/// Whether a TCP connection to `addr` succeeds within `limit` (tried every
/// 20 ms): the service listens. Gives up at once when the service exits
/// (its exit is then handled by the supervisor's loop).
async fn wait_listening(addr: std::net::SocketAddr, service: &mut Running, limit: Duration) -> bool {
    let mut target = addr;
    if target.ip().is_unspecified() {
        target.set_ip(std::net::Ipv4Addr::LOCALHOST.into());
    }
    let deadline = Instant::now() + limit;
    while Instant::now() < deadline {
        if tokio::net::TcpStream::connect(target).await.is_ok() {
            return true;
        }
        if service.child.as_mut().is_none_or(|c| !matches!(c.try_wait(), Ok(None))) {
            return true;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    false
}

/// Waits until any running child exits.
async fn wait_any(services: &mut [Running]) -> (usize, std::io::Result<ExitStatus>) {
    let waits: Vec<_> = services
        .iter_mut()
        .enumerate()
        .filter_map(|(k, r)| r.child.as_mut().map(|c| Box::pin(async move { (k, c.wait().await) })))
        .collect();
    if waits.is_empty() {
        return std::future::pending().await;
    }
    futures_select_all(waits).await
}

async fn futures_select_all<F: Future + Unpin>(futs: Vec<F>) -> F::Output {
    let mut futs = futs;
    std::future::poll_fn(move |cx| {
        for f in &mut futs {
            if let std::task::Poll::Ready(v) = std::pin::Pin::new(f).poll(cx) {
                return std::task::Poll::Ready(v);
            }
        }
        std::task::Poll::Pending
    })
    .await
}

async fn sleep_until(t: Option<Instant>) {
    match t {
        Some(t) => tokio::time::sleep_until(t.into()).await,
        None => std::future::pending().await,
    }
}
