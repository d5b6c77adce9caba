//! The configsync service of a duet unit (SPEC S1-S6).
//!
//! One configuration image per pair, stored crash-safe on each unit
//! (`duet-image`), written on the active unit only, pushed to the standby
//! over gRPC with mutual TLS on TCP 6973 at every commit, every
//! `sync_interval` in full, and on `ForceUpdate`. The rules live in
//! [`engine`]; this crate adds the adapters: the role followed from the
//! election, the operator API ([`api`]) and the peer link ([`peer`]). The
//! unit's other services follow the committed generations through the
//! operator API's `WatchGenerations` (`duet_runtime::generations`).

mod api;
pub mod engine;
mod fleet;
mod metrics;
mod peer;

use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime};

use duet_carp::{HaMode, Role};
use duet_config::{ConfigSync, Validated};
use duet_image::store::Store;
use duet_model::ImageContent;
use duet_proto::config::v1::Image;
use duet_proto::configsync::v1::config_sync_service_server::ConfigSyncServiceServer;
use duet_proto::configsync::v1::peer_sync_service_server::PeerSyncServiceServer;
use duet_runtime::service::CannotStart;
use duet_runtime::shutdown::{self, Shutdown};
use duet_runtime::tasks::Tasks;
use duet_runtime::tls::PeerTls;
use tokio::net::TcpListener;
use tokio::sync::{Notify, broadcast, mpsc, oneshot};

use crate::engine::{Committed, Engine};

/// What this unit knows of its partner's copy.
#[derive(Debug, Clone, Default)]
pub(crate) struct PartnerView {
    pub last_ok: Option<Instant>,
    pub generation: Option<u64>,
    pub hash: String,
    pub role: i32,
    pub last_sync: Option<(SystemTime, Duration)>,
    pub last_error: String,
    /// When a failure of the link was last logged (see `peer::failed`).
    pub warned_at: Option<Instant>,
    /// The partner's clock minus this unit's and the round trip it was
    /// measured over (ms), as last measured.
    pub clock: Option<(i64, u64)>,
}

impl PartnerView {
    /// Whether the partner answered recently.
    pub(crate) fn reachable(&self) -> bool {
        self.last_ok.is_some_and(|t| t.elapsed() < PROBE_EVERY * 3)
    }

    /// In sync: the partner holds the image `generation`/`hash` now, as far
    /// as can be known (an unreachable partner's last answer says nothing
    /// of now).
    pub(crate) fn in_sync(&self, generation: u64, hash: &str) -> bool {
        self.reachable() && self.generation == Some(generation) && self.hash == hash
    }
}

/// A request to push now (ForceUpdate), answered when done.
pub(crate) type ForceReply = oneshot::Sender<Result<peer::Pushed, peer::PushError>>;

/// State shared by the API, the peer server and the background tasks.
#[derive(Debug)]
pub(crate) struct Shared {
    pub engine: tokio::sync::Mutex<Engine>,
    pub generations: broadcast::Sender<Committed>,
    pub push_now: Notify,
    pub force: mpsc::Sender<ForceReply>,
    pub partner: Mutex<PartnerView>,
    pub cfg: ConfigSync,
    pub unit: String,
    pub unit_address: String,
    pub tls: Option<PeerTls>,
    pub bootstrap: Image,
    /// The generation and hash current here (for the exporter, which
    /// cannot wait for the engine's lock).
    pub held: Mutex<(u64, String)>,
    /// The newest generation's trace (O3): a push of it joins the trace.
    pub last_trace: Mutex<(u64, String)>,
    /// O7: the fleet's etcd, when this unit is in a fleet.
    pub fleet: Option<fleet::FleetLink>,
}

/// A commit's span attributes.
pub(crate) fn commit_attributes(c: &Committed) -> Vec<opentelemetry::KeyValue> {
    use opentelemetry::KeyValue;
    vec![
        KeyValue::new("duet.generation", i64::try_from(c.image.generation).unwrap_or(i64::MAX)),
        KeyValue::new("duet.hash", c.image.hash.clone()),
        KeyValue::new("duet.origin", c.origin),
    ]
}

pub(crate) use duet_runtime::sync::lock;

impl Shared {
    /// After a generation became current: tell watchers (the unit's
    /// election and replicator among them), wake the pusher.
    pub(crate) fn committed(&self, mut c: Committed) {
        tracing::info!(generation = c.image.generation, hash = %&c.image.hash[..12], origin = c.origin, "configuration generation current");
        // O3: a generation made here starts the commit's trace; one adopted
        // from the partner continues the partner's (its span is made by
        // the peer server, which knows the push's trace).
        if c.trace.is_empty() {
            let now = SystemTime::now();
            c.trace = duet_runtime::trace::record("duet.configsync.commit", "", now, now, commit_attributes(&c));
        }
        *lock(&self.last_trace) = (c.image.generation, c.trace.clone());
        *lock(&self.held) = (c.image.generation, c.image.hash.clone());
        let _ = self.generations.send(c);
        self.push_now.notify_one();
    }

    /// Whether the partner answered recently.
    pub(crate) fn partner_reachable(&self) -> bool {
        lock(&self.partner).reachable()
    }
}

/// How often each unit asks its partner what it holds (the partner counts
/// as unreachable after three unanswered: 15 s; a push answers sooner).
const PROBE_EVERY: Duration = Duration::from_secs(5);

/// The image a unit with an empty store starts the pair with: the HA
/// settings and interfaces of its unit file, through the one conversion.
fn bootstrap_image(cfg: &Validated) -> Image {
    Image::from(&ImageContent {
        ha: cfg.raw.ha.pair.clone(),
        interfaces: cfg.interfaces(),
        virtual_services: Vec::new(),
    })
}

/// The file in a unit's state directory through which configsync once
/// handed the image's HA settings to the election (the election now
/// follows the generations over gRPC).
const OLD_HA_OVERLAY: &str = "ha-image.toml";

/// Removes a leftover [`OLD_HA_OVERLAY`], which nothing reads any more.
fn remove_old_overlay(state_dir: &Path) {
    let path = state_dir.join(OLD_HA_OVERLAY);
    match std::fs::remove_file(&path) {
        Ok(()) => tracing::info!(
            file = %path.display(),
            "removed the old HA overlay: the election follows the pair's generations from configsync now"
        ),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => tracing::warn!(file = %path.display(), "cannot remove the old HA overlay (nothing reads it): {e}"),
    }
}

/// configsync as a duet service process (`duet_runtime::service`).
#[derive(Debug)]
pub struct ConfigSyncService;

impl duet_runtime::service::Service for ConfigSyncService {
    const NAME: &'static str = "duet-configsync";
    const ABOUT: &'static str = "The configsync service of a duet unit: one configuration image, synced to the partner";
    const LISTEN_SETTING: &'static str = "configsync.listen";
    type Error = anyhow::Error;

    /// It waits on its peer and its store; one thread, so an event does
    /// not wake a second one.
    fn threads(_cfg: &Validated) -> duet_runtime::service::Threads {
        duet_runtime::service::Threads::One
    }

    fn listen(cfg: &Validated) -> Result<std::net::SocketAddr, Vec<duet_config::Problem>> {
        cfg.configsync().map(|c| c.listen)
    }

    fn check(cfg: &Validated) -> Result<String, Vec<duet_config::Problem>> {
        let c = cfg.configsync()?;
        let store = match &cfg.fleet {
            Some(f) if f.store == duet_config::StoreKind::Etcd => format!(
                "the pair's image in etcd ({}/pairs/{}/, {} members) with a copy in {}",
                f.prefix,
                f.pair,
                f.endpoints.len(),
                c.store_dir.display()
            ),
            Some(f) => format!(
                "{} (status published to the fleet's etcd under {}/pairs/{}/)",
                c.store_dir.display(),
                f.prefix,
                f.pair
            ),
            None => c.store_dir.display().to_string(),
        };
        Ok(format!(
            "store {store}, peer {}",
            c.peer.map_or_else(|| "none (non-HA)".to_owned(), |p| format!("{} at {}", p.partner_name, p.partner))
        ))
    }

    async fn run(cfg: Validated, ctx: duet_runtime::service::Context) -> anyhow::Result<duet_runtime::service::Exit> {
        run(cfg, ctx.listener, ctx.shutdown).await.map(|()| duet_runtime::service::Exit::Shutdown)
    }
}

/// Runs configsync until `shutdown`. `listener` is the operator API's.
pub async fn run(cfg: Validated, listener: TcpListener, shutdown: Shutdown) -> anyhow::Result<()> {
    let cs = cfg.configsync().map_err(CannotStart::new("configsync"))?;
    let store = Store::open(&cs.store_dir, cs.keep_generations)?;
    let ha_unit = cfg.raw.unit.mode != HaMode::NonHa;
    let mode = cfg.raw.unit.mode;
    let first = cfg.election.interfaces.first();
    let active_hint = match (&cs.peer, first) {
        (Some(p), Some(i)) => format!(
            "the active unit (partner {} at {}, or the shared address {})",
            p.partner_name,
            p.partner.ip(),
            i.shared
        ),
        _ => "the active unit".to_string(),
    };
    let tls = cs.peer.as_ref().map(PeerTls::for_link).transpose()?;
    let engine = Engine {
        store,
        unit: cfg.raw.unit.name.clone(),
        ha_unit,
        mode,
        role: if ha_unit { None } else { Some(Role::Active) },
        active_hint,
        split_backups: Vec::new(),
    };
    let current = engine.store.current().clone();
    let (gen_tx, _) = broadcast::channel(1024);
    let (fleet_link, fleet_events, fleet_session) = match &cfg.fleet {
        Some(f) => {
            let (link, events, task) = fleet::start(f, cs.keep_generations)?;
            (Some(link), Some(events), Some(task))
        }
        None => (None, None, None),
    };
    let (force_tx, force_rx) = mpsc::channel(8);
    let shared = Arc::new(Shared {
        engine: tokio::sync::Mutex::new(engine),
        generations: gen_tx,
        push_now: Notify::new(),
        force: force_tx,
        partner: Mutex::new(PartnerView::default()),
        cfg: cs.clone(),
        unit: cfg.raw.unit.name.clone(),
        unit_address: first.map(|i| i.unit_addr.to_string()).unwrap_or_default(),
        tls,
        bootstrap: bootstrap_image(&cfg),
        held: Mutex::new((current.generation, current.hash.clone())),
        last_trace: Mutex::new((current.generation, String::new())),
        fleet: fleet_link,
    });
    let _metrics = metrics::Metrics::new(&shared);
    remove_old_overlay(&cfg.state_dir);

    let (stop_trigger, stop) = shutdown::channel();
    let (router, health) = duet_runtime::grpc::router::<ConfigSyncServiceServer<api::Api>>(
        &duet_runtime::admin::AdminAuth::new(cfg.admin_tokens.clone()),
    )?;
    let router = router
        .add_service(ConfigSyncServiceServer::new(api::Api { shared: Arc::clone(&shared), shutdown: stop.clone() }));
    let mut tasks = Tasks::new();
    tasks.spawn("operator API", duet_runtime::grpc::serve(router, listener, stop.clone()));

    if let (Some(p), Some(tls)) = (&cs.peer, &shared.tls) {
        let (l, mut server) = duet_runtime::grpc::peer_server(p, tls, "configsync.peer_port").await?;
        let server = server.add_service(PeerSyncServiceServer::new(peer::PeerServer { shared: Arc::clone(&shared) }));
        let s = stop.clone();
        tasks.spawn("peer link server", async move { server.serve_with_incoming_shutdown(l, s.future()).await });
        let sh = Arc::clone(&shared);
        let s = stop.clone();
        tasks.spawn("pusher", peer::pusher(sh, force_rx, s));
        let sh = Arc::clone(&shared);
        let s = stop.clone();
        tasks.spawn("partner prober", peer::prober(sh, s));
    } else {
        drop(force_rx);
    }
    let mut role_health = None;
    let roles = if ha_unit {
        let roles =
            duet_runtime::follow::role_watch(duet_runtime::follow::election_url(cfg.election_listen), stop.clone());
        role_health = Some(roles.clone());
        roles
    } else {
        tokio::sync::watch::channel(Some(Role::Active)).1
    };
    if let Some(events) = fleet_events {
        tasks.spawn("fleet follower", fleet::follow(Arc::clone(&shared), events, roles.clone()));
        tasks.spawn("fleet status", fleet::publish(Arc::clone(&shared), cfg.clone(), roles.clone(), stop.clone()));
    }
    if ha_unit {
        tasks.spawn("role follower", follow_role(Arc::clone(&shared), roles));
    } else {
        bootstrap_if_empty(&shared).await;
    }
    tracing::info!(unit = %shared.unit, store = %cs.store_dir.display(), generation = current.generation, "configsync started");

    duet_runtime::health::keep_until(health, &mut tasks, shutdown, role_health).await;
    stop_trigger.fire();
    tasks.shutdown(Duration::from_secs(3)).await;
    // The fleet session revokes its lease: the status key goes now.
    if let (Some(link), Some(t)) = (shared.fleet.as_ref(), fleet_session) {
        let _ = link.commands.try_send(duet_fleet::session::Command::Stop);
        if tokio::time::timeout(Duration::from_secs(2), t).await.is_err() {
            tracing::warn!("the fleet session did not stop within 2 s; its status key goes with its lease");
        }
    }
    tracing::info!("configsync stopped");
    Ok(())
}

/// A unit that becomes active with nothing stored takes the partner's
/// image if it has one, else starts the pair's image from its unit file.
pub(crate) async fn bootstrap_if_empty(shared: &Shared) {
    if shared.engine.lock().await.store.current().generation > 0 {
        return;
    }
    // O7: the pair's image in etcd comes first (the fleet follower takes it).
    if let Some(f) = shared.fleet.as_ref().filter(|f| f.is_store()) {
        fleet::wait_first_head(f).await;
        if f.head_known() {
            return;
        }
    }
    if let Some(img) = peer::fetch(shared).await
        && img.generation > 0
    {
        let mut e = shared.engine.lock().await;
        if e.store.current().generation == 0 {
            match e.adopt(&img, "taken from the partner: this unit had no configuration") {
                Ok(c) => {
                    drop(e);
                    shared.committed(c);
                }
                Err(err) => tracing::error!("cannot store the partner's image: {err}"),
            }
        }
        return;
    }
    let mut e = shared.engine.lock().await;
    if e.store.current().generation > 0 {
        return;
    }
    if let Err(p) = duet_image::validate(&shared.bootstrap, e.ha_unit) {
        let lines: Vec<String> = p.iter().map(ToString::to_string).collect();
        tracing::warn!(
            "the unit file's HA settings do not make a valid image; not bootstrapping: {}",
            lines.join("; ")
        );
        return;
    }
    let prov = duet_image::store::provenance(&shared.unit, "committed", "bootstrapped from the unit file");
    match e.store.commit(&shared.bootstrap, prov) {
        Ok(i) => {
            let c = Committed { image: i.clone(), origin: "committed", trace: String::new() };
            drop(e);
            shared.committed(c);
        }
        Err(err) => tracing::error!("cannot bootstrap the image: {err}"),
    }
}

/// Follows the election's role; writes are taken only while active.
async fn follow_role(shared: Arc<Shared>, mut roles: tokio::sync::watch::Receiver<Option<Role>>) -> anyhow::Result<()> {
    loop {
        let role = *roles.borrow_and_update();
        let became_active = {
            let mut e = shared.engine.lock().await;
            let was = e.role;
            e.role = role;
            role == Some(Role::Active) && was != Some(Role::Active)
        };
        if became_active {
            bootstrap_if_empty(&shared).await;
            shared.push_now.notify_one();
        }
        if roles.changed().await.is_err() {
            return Ok(());
        }
    }
}
