//! The election service of a duet unit: CARP on the wire, the unit's role
//! over gRPC.
//!
//! [`run`] opens the raw sockets of the HA-check interfaces, drives the
//! `duet-carp` core ([`driver`]), serves `duet.election.v1.ElectionService`
//! with health and reflection ([`api`]), keeps the start history and replay
//! windows on disk ([`state`]) and reloads the HA parameters live (E12):
//! the pair's settings from every generation configsync commits or adopts
//! (followed over gRPC, `duet_runtime::generations`), the unit's own from
//! its file on SIGHUP. It returns when shutdown fires (after a planned
//! handover if the unit is active) or when a checked link loss asks for the
//! services to be restarted (E8).
//!
//! Where the pair's settings come from: when configsync runs on the unit
//! (`configsync.enabled` and its section complete), the pair's image; at
//! start the current generation in configsync's store on disk (read only),
//! so a restarted election never runs on stale settings of its file, then
//! each new one. Without configsync, or before the pair has an image, the
//! unit file's. The parameters are always made by one function,
//! `duet_config::election_params`, from the unit's own settings and the
//! pair's.
//!
//! With a `[witness]` (E14) the driver starts the witness's etcd adapter
//! (`duet-witness`); its endpoints, TLS and key are read at start (a change
//! needs a restart), the pair's policy and lease TTL follow the image.

mod api;
pub mod driver;
mod metrics;
pub mod state;
mod track;

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use duet_carp::Params;
use duet_config::{LocalHa, PairSettings, Validated, problem_lines};
use duet_proto::election::v1::election_service_server::ElectionServiceServer;
use duet_runtime::generations::Generation;
use duet_runtime::shutdown::{self, Shutdown};
use duet_runtime::tasks::Tasks;
use tokio::net::TcpListener;
use tokio::sync::watch;

pub use driver::Exit;

/// The election as a duet service process (`duet_runtime::service`).
#[derive(Debug)]
pub struct Election;

impl duet_runtime::service::Service for Election {
    const NAME: &'static str = "duet-election";
    const ABOUT: &'static str = "The election service of a duet unit: CARP on the wire, the unit's role over gRPC";
    const LISTEN_SETTING: &'static str = "election.listen";
    const CAPABILITIES: &'static [duet_runtime::caps::Cap] = duet_runtime::caps::ELECTION;
    type Error = anyhow::Error;

    /// One thread: the driver, the receive tasks and the API pass events
    /// to each other without waking a second thread (each handoff between
    /// workers cost wakeups at every advert); the driver's select is biased
    /// to its timer, so the API and the witness cannot starve adverts.
    fn threads(_cfg: &Validated) -> duet_runtime::service::Threads {
        duet_runtime::service::Threads::One
    }

    fn listen(cfg: &Validated) -> Result<std::net::SocketAddr, Vec<duet_config::Problem>> {
        Ok(cfg.election_listen)
    }

    fn check(cfg: &Validated) -> Result<String, Vec<duet_config::Problem>> {
        let p = &cfg.election;
        let checks = if cfg.tracks.is_empty() {
            String::new()
        } else {
            let names: Vec<String> = cfg.tracks.iter().map(|t| format!("{} ({})", t.name, t.probe.kind())).collect();
            format!(", tracked checks: {}", names.join(", "))
        };
        Ok(format!(
            "unit {}, mode {}, vhid {}, {} profile, advert every {} ms, takeover after {} ms, auth {}{checks}",
            cfg.raw.unit.name,
            p.mode.as_str(),
            p.vhid,
            p.profile_name(),
            p.interval().as_millis(),
            p.down_interval(None).as_millis(),
            p.auth.mode_name()
        ))
    }

    /// Records the start (E9) first thing, so that a process killed early
    /// still counts, and sets real-time scheduling before the runtime's
    /// threads exist, so that they inherit it.
    fn before_runtime(cfg: &Validated) -> anyhow::Result<Vec<duet_runtime::service::Note>> {
        use duet_runtime::service::Note;
        record_start(cfg)?;
        let fast = cfg.election.profile_name() == "fast";
        let priority = cfg.raw.election.realtime_priority.unwrap_or(if fast { 10 } else { 0 });
        if priority == 0 {
            return Ok(Vec::new());
        }
        Ok(vec![match duet_net::sched::set_realtime(priority) {
            Ok(()) => Note::Info(format!("real-time scheduling (SCHED_RR) for the election, priority {priority}")),
            Err(e) => Note::Warn(format!(
                "cannot use real-time scheduling (priority {priority}: {e}): timers may be delayed on a busy machine; \
                 grant CAP_SYS_NICE or set election.realtime_priority = 0"
            )),
        }])
    }

    async fn run(cfg: Validated, ctx: duet_runtime::service::Context) -> anyhow::Result<Exit> {
        run(cfg, Some(ctx.config_path), ctx.listener, ctx.shutdown).await
    }
}

/// Records a start of the election in the unit's start history (E9). Call
/// it first thing, so that a process killed early still counts.
pub fn record_start(cfg: &Validated) -> anyhow::Result<()> {
    state::StateDir::open(&cfg.state_dir)?.record_start("election").map(|_| ())
}

/// Runs the election of the unit described by `cfg` until `shutdown`.
/// `config_path`, when given, is read again on SIGHUP (the unit's own
/// settings, such as the password, and the pair's while there is no
/// image). The pair's settings follow configsync when it runs here.
pub async fn run(
    cfg: Validated,
    config_path: Option<PathBuf>,
    listener: TcpListener,
    shutdown: Shutdown,
) -> anyhow::Result<Exit> {
    let state = state::StateDir::open(&cfg.state_dir)?;
    let (router, health) = duet_runtime::grpc::router::<ElectionServiceServer<api::Api>>(
        &duet_runtime::admin::AdminAuth::new(cfg.admin_tokens.clone()),
    )?;
    let configsync = cfg.configsync_listen();
    let (pair, params, unusable) = cfg.pair_at_start();
    if let Some(why) = unusable {
        tracing::error!("{why}");
    }
    if pair.generation > 0 {
        tracing::info!(generation = pair.generation, "HA settings from the pair's image (configsync's store)");
    }
    let setup = driver::Setup {
        params: params.clone(),
        config_generation: pair.generation,
        state,
        status_port: cfg.raw.election.status_port,
        handover_timeout: cfg.handover_timeout,
        pacify: duet_carp::PacifyRule { window: cfg.pacify_window, max_starts: cfg.raw.ha.unit.pacify_max_starts },
        shared_addrs: pair.shared().iter().map(|(i, c)| (i.clone(), c.addr, c.prefix)).collect(),
        vmac: cfg.raw.takeover.vmac,
        drop_log_window: Duration::from_secs(cfg.raw.election.drop_log_window_s),
        witness: witness_setup(&cfg, &params)?,
        tracks: cfg.tracks.iter().map(duet_config::Track::params).collect(),
    };
    let epoch: u64 = rand::random();
    let (mut driver, handles) = driver::Driver::new(setup, epoch, health)?;
    let mut tasks = Tasks::new();
    driver.open(&handles.inbound, &mut tasks).await?;
    // E16: one task per tracked check; they end with the driver.
    if !cfg.tracks.is_empty() {
        let (tx, rx) = tokio::sync::mpsc::channel(64);
        for t in cfg.tracks.iter().cloned() {
            let tx = tx.clone();
            let name = format!("tracked check {}", t.name);
            tasks.spawn(&name, async move {
                track::run(t, tx).await;
                Ok::<(), std::convert::Infallible>(())
            });
        }
        driver.follow_checks(rx);
    }

    // The API outlives the driver's handover on shutdown: it stops only
    // once the driver is done, so status stays readable meanwhile.
    let (api_trigger, api_shutdown) = shutdown::channel();
    let api = api::Api {
        shared: Arc::clone(&handles.shared),
        unit_name: cfg.raw.unit.name.clone(),
        shutdown: api_shutdown.clone(),
        admin_warnings: cfg.admin_warnings.clone(),
        check_kinds: cfg.tracks.iter().map(|t| (t.name.clone(), t.probe.kind())).collect(),
    };
    let router = router.add_service(ElectionServiceServer::new(api));
    let server = tokio::spawn(duet_runtime::grpc::serve(router, listener, api_shutdown.clone()));

    let generations = configsync.map(|listen| {
        let ha_unit = cfg.election.mode != duet_carp::HaMode::NonHa;
        duet_runtime::generations::generations(
            duet_runtime::generations::configsync_url(listen),
            ha_unit,
            api_shutdown.clone(),
        )
    });
    let hup = match &config_path {
        Some(_) => Some(tokio::signal::unix::signal(tokio::signal::unix::SignalKind::hangup())?),
        None => None,
    };
    let follower = Follower {
        path: config_path,
        witness_at_start: cfg.local.witness,
        local: cfg.local.clone(),
        in_force: (params, pair.generation),
        pair,
        shared: Arc::clone(&handles.shared),
    };
    tasks.spawn("configuration follower", follower.run(generations, hup));
    tracing::info!(
        unit = %cfg.raw.unit.name,
        mode = cfg.election.mode.as_str(),
        vhid = cfg.election.vhid,
        profile = cfg.election.profile_name(),
        auth = cfg.election.auth.mode_name(),
        follows_configsync = configsync.is_some(),
        "election started"
    );
    for w in &cfg.warnings {
        tracing::warn!("{w}");
    }

    let exit = driver.run(shutdown).await;
    api_trigger.fire();
    // The remaining tasks (receive loops, followers) hold no state.
    tasks.abort().await;
    match tokio::time::timeout(Duration::from_secs(3), server).await {
        Ok(Ok(Err(e))) => tracing::error!("gRPC server: {e:#}"),
        Err(_) => tracing::warn!("gRPC server did not stop within 3 s"),
        _ => {}
    }
    tracing::info!(?exit, "election stopped");
    Ok(exit)
}

/// E14: the witness's adapter settings from `[witness]` and the parameters
/// at start; `None` without a witness. Certificates that cannot be read
/// stop the start, naming the setting.
fn witness_setup(cfg: &Validated, params: &Params) -> anyhow::Result<Option<driver::WitnessSetup>> {
    let (Some(w), Some(wp)) = (&cfg.witness, &params.witness) else {
        return Ok(None);
    };
    let read = |field: &str, p: &std::path::Path| {
        std::fs::read(p).map_err(|e| anyhow::anyhow!("witness.{field}: cannot read {}: {e}", p.display()))
    };
    let tls = match &w.tls {
        None => None,
        Some(t) => Some(duet_witness::TlsPems {
            ca: read("tls_ca", &t.ca)?,
            identity: match &t.identity {
                Some((c, k)) => Some((read("tls_cert", c)?, read("tls_key", k)?)),
                None => None,
            },
        }),
    };
    let key = w.key(params.vhid);
    tracing::info!(
        key = %key,
        policy = wp.policy.as_str(),
        lease_ttl_ms = wp.lease_ttl.as_millis() as u64,
        endpoints = ?w.endpoints,
        "witness (etcd) configured"
    );
    Ok(Some(driver::WitnessSetup {
        settings: duet_witness::Settings {
            endpoints: w.endpoints.clone(),
            tls,
            key,
            unit: w.unit.clone(),
            lease_ttl: wp.lease_ttl,
            // Long enough for a loaded etcd, short enough to fail over to
            // another member well within the HA timeout.
            op_timeout: params.down_interval(None).clamp(Duration::from_millis(200), Duration::from_secs(1)),
        },
        insecure: w.tls.is_none(),
    }))
}

/// E12: keeps the driver's parameters those of the unit's own settings
/// (its file, read again on SIGHUP) and the pair's (the newest generation
/// of the image when there is one, else the file's). Whatever does not
/// make valid parameters changes nothing and says why.
struct Follower {
    path: Option<PathBuf>,
    /// Whether the unit started with a witness: the adapter runs from the
    /// start, so a `[witness]` added or removed later waits for a restart.
    witness_at_start: bool,
    local: LocalHa,
    pair: PairSettings,
    /// The parameters last handed to the driver, and their generation.
    in_force: (Params, u64),
    shared: Arc<driver::Shared>,
}

impl Follower {
    async fn run(
        mut self,
        mut generations: Option<watch::Receiver<Option<Arc<Generation>>>>,
        mut hup: Option<tokio::signal::unix::Signal>,
    ) -> anyhow::Result<()> {
        loop {
            // O3: the generation's trace and when it arrived, for the span
            // of its reload.
            let mut traced: Option<(String, std::time::SystemTime, u64)> = None;
            tokio::select! {
                r = changed(generations.as_mut()) => {
                    let Some(g) = r else {
                        // The follower stopped (shutdown): keep what is in force.
                        generations = None;
                        continue;
                    };
                    self.pair = PairSettings::of_image(g.generation, &g.content);
                    traced = (!g.trace.is_empty()).then(|| (g.trace.clone(), std::time::SystemTime::now(), g.generation));
                }
                () = hangup(hup.as_mut()) => {
                    let Some(path) = &self.path else { continue };
                    match duet_config::load(path) {
                        Ok(v) => {
                            tracing::info!("SIGHUP: unit file read again");
                            self.local = v.local.clone();
                            if self.local.witness != self.witness_at_start {
                                tracing::warn!(
                                    "[witness] was added or removed: restart the election to apply it (the rest applies now)"
                                );
                                self.local.witness = self.witness_at_start;
                            }
                            if self.pair.generation == 0 {
                                self.pair = PairSettings::of_file(&v);
                            } else {
                                tracing::info!(
                                    generation = self.pair.generation,
                                    "the pair's HA settings come from its image; the file's apply only before there is one"
                                );
                            }
                        }
                        Err(e) => {
                            tracing::error!("configuration changed but is not valid; nothing applied: {e}");
                            continue;
                        }
                    }
                }
            }
            let params = match self.pair.params(&self.local) {
                Ok(p) => p,
                Err(p) => {
                    tracing::error!(
                        generation = self.pair.generation,
                        "HA settings not applied: {}",
                        problem_lines(&p)
                    );
                    continue;
                }
            };
            let next = (params, self.pair.generation);
            let changed = next != self.in_force;
            if changed {
                self.in_force = next.clone();
                let (params, generation) = next;
                let req = driver::Request::Reload { params: Box::new(params), generation };
                if self.shared.requests.send(req).await.is_err() {
                    return Ok(());
                }
            }
            if let Some((trace, at, generation)) = traced {
                duet_runtime::trace::record(
                    "duet.election.reload",
                    &trace,
                    at,
                    std::time::SystemTime::now(),
                    vec![
                        opentelemetry::KeyValue::new("duet.generation", i64::try_from(generation).unwrap_or(i64::MAX)),
                        opentelemetry::KeyValue::new("duet.ha_changed", changed),
                    ],
                );
            }
        }
    }
}

/// The next generation, or `None` once the follower is gone. Without a
/// follower it never resolves (a `None` at once would make the caller's
/// loop spin).
async fn changed(rx: Option<&mut watch::Receiver<Option<Arc<Generation>>>>) -> Option<Arc<Generation>> {
    let Some(rx) = rx else {
        return std::future::pending().await;
    };
    loop {
        rx.changed().await.ok()?;
        if let Some(g) = rx.borrow_and_update().clone() {
            return Some(g);
        }
    }
}

async fn hangup(sig: Option<&mut tokio::signal::unix::Signal>) {
    match sig {
        Some(s) => {
            if s.recv().await.is_none() {
                std::future::pending::<()>().await;
            }
        }
        None => std::future::pending().await,
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    #[tokio::test]
    async fn without_a_follower_or_a_signal_the_follower_waits_instead_of_spinning() {
        let wait = Duration::from_millis(20);
        assert!(tokio::time::timeout(wait, super::changed(None)).await.is_err());
        assert!(tokio::time::timeout(wait, super::hangup(None)).await.is_err());
        // A follower that is gone says so once.
        let (tx, mut rx) = tokio::sync::watch::channel(None);
        drop(tx);
        assert!(super::changed(Some(&mut rx)).await.is_none());
    }
}
