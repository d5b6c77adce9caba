//! O7: the pair in a fleet's etcd. Turns the fleet session's events
//! (`duet_fleet::session`) into generations by the engine's rule
//! ([`Engine::follow_fleet`](crate::engine::Engine::follow_fleet)), writes
//! the operator's changes there first when the pair's store is etcd,
//! seeds a pair that has no image there yet, and publishes this unit's
//! status under its lease.
//!
//! Both units follow the head, so the peer link is a second path to the
//! standby, not the only one. An etcd outage changes nothing running:
//! the local store keeps its copy, the pair keeps failing over, writes
//! fail with a clear error until etcd answers again.

use std::sync::Arc;
use std::time::{Duration, SystemTime};

use duet_carp::Role;
use duet_config::{FleetConfig, StoreKind, Validated};
use duet_fleet::session::{Command, Event, SessionSettings};
use duet_fleet::{FleetError, Square, UnitRecord};
use duet_proto::config::v1::{Image, Provenance};
use duet_proto::election::v1::election_service_client::ElectionServiceClient;
use duet_proto::replicator::v1::replicator_service_client::ReplicatorServiceClient;
use duet_runtime::admin::{AdminChannel, authed};
use duet_runtime::shutdown::Shutdown;
use duet_witness::TlsPems;
use tokio::sync::{Notify, mpsc, oneshot, watch};

use crate::engine::{Committed, Refusal};
use crate::{Shared, lock};

/// The status key's lease: a unit that is gone leaves the fleet's status
/// this long after.
const LEASE_TTL: Duration = Duration::from_secs(10);
/// Bound on each call to etcd.
const OP_TIMEOUT: Duration = Duration::from_secs(2);
/// How often the status is read again from the election and the
/// replicator (a change of role or generation is published at once).
const REFRESH: Duration = Duration::from_secs(5);
/// How long a unit with nothing stored waits for its pair's image in etcd
/// before it starts the pair from its unit file.
const FIRST_HEAD_WAIT: Duration = Duration::from_secs(3);

/// What configsync knows of its fleet session.
#[derive(Debug, Default, Clone)]
pub(crate) struct FleetView {
    /// The member of the live session ("" while none).
    pub endpoint: String,
    /// Why the last session ended ("" after a session started).
    pub error: String,
    /// The pair's head as last read (`None`: none in etcd, or not read yet).
    pub head: Option<(u64, String)>,
    /// A session has read the head at least once.
    pub head_read: bool,
}

/// The link from configsync to its fleet session.
#[derive(Debug)]
pub(crate) struct FleetLink {
    pub cfg: FleetConfig,
    pub commands: mpsc::Sender<Command>,
    pub view: std::sync::Mutex<FleetView>,
    /// Fired when a session read the head (for the first-start wait).
    pub head_read: Notify,
    /// Generations etcd keeps of the pair (the store's `keep_generations`).
    pub keep: u64,
}

impl FleetLink {
    /// The pair's image lives in etcd.
    pub(crate) fn is_store(&self) -> bool {
        self.cfg.store == StoreKind::Etcd
    }

    /// The pair has an image in etcd, as last read.
    pub(crate) fn head_known(&self) -> bool {
        lock(&self.view).head.is_some()
    }

    /// A warning for the status while the session is down.
    pub(crate) fn warning(&self) -> Option<String> {
        let v = lock(&self.view);
        if !v.endpoint.is_empty() {
            return None;
        }
        let what = if self.is_store() {
            "the pair runs on its local copy; configuration writes fail until etcd answers"
        } else {
            "this unit's status is not published"
        };
        let why = if v.error.is_empty() { "no session yet".to_owned() } else { v.error.clone() };
        Some(format!("the fleet's etcd is not reachable ({why}): {what}"))
    }
}

/// Reads the fleet's TLS files and makes the session's settings.
fn session_settings(cfg: &FleetConfig) -> anyhow::Result<SessionSettings> {
    let tls = match &cfg.tls {
        None => None,
        Some(t) => {
            let read = |p: &std::path::Path| {
                std::fs::read(p).map_err(|e| anyhow::anyhow!("fleet TLS file {}: {e}", p.display()))
            };
            let identity = match &t.identity {
                Some((c, k)) => Some((read(c)?, read(k)?)),
                None => None,
            };
            Some(TlsPems { ca: read(&t.ca)?, identity })
        }
    };
    Ok(SessionSettings {
        fleet: duet_fleet::Settings {
            endpoints: cfg.endpoints.clone(),
            tls,
            prefix: cfg.prefix.clone(),
            op_timeout: OP_TIMEOUT,
        },
        pair: cfg.pair.clone(),
        unit: cfg.unit.clone(),
        lease_ttl: LEASE_TTL,
    })
}

/// Starts the session; the link and its event receiver.
pub(crate) fn start(
    cfg: &FleetConfig,
    keep: usize,
) -> anyhow::Result<(FleetLink, mpsc::Receiver<Event>, tokio::task::JoinHandle<()>)> {
    let settings = session_settings(cfg)?;
    let (ctx, crx) = mpsc::channel(16);
    let (etx, erx) = mpsc::channel(16);
    let task = duet_fleet::session::spawn(settings, crx, etx);
    let link = FleetLink {
        cfg: cfg.clone(),
        commands: ctx,
        view: std::sync::Mutex::new(FleetView::default()),
        head_read: Notify::new(),
        keep: u64::try_from(keep).unwrap_or(20),
    };
    Ok((link, erx, task))
}

/// Follows the session's events: the head taken by the engine's rule, a
/// pair without an image in etcd seeded by its active unit (looked at
/// again when the role or the unit's generation changes: a unit that has
/// just started becomes active and makes its first generation after the
/// session read the head).
pub(crate) async fn follow(
    shared: Arc<Shared>,
    mut events: mpsc::Receiver<Event>,
    mut roles: watch::Receiver<Option<Role>>,
) -> anyhow::Result<()> {
    let Some(link) = shared.fleet.as_ref() else { return Ok(()) };
    let mut generations = shared.generations.subscribe();
    loop {
        tokio::select! {
            e = events.recv() => {
                let Some(e) = e else { return Ok(()) };
                match e {
                    Event::Connected { endpoint } => {
                        tracing::info!(%endpoint, pair = %link.cfg.pair, "fleet: connected to etcd");
                        let mut v = lock(&link.view);
                        v.endpoint = endpoint;
                        v.error.clear();
                    }
                    Event::Lost { error } => {
                        let mut v = lock(&link.view);
                        v.endpoint.clear();
                        v.error = error;
                    }
                    Event::Head { image, initial } => {
                        {
                            let mut v = lock(&link.view);
                            v.head = image.as_ref().map(|i| (i.generation, i.hash.clone()));
                            v.head_read = true;
                        }
                        link.head_read.notify_waiters();
                        if link.is_store()
                            && let Some(img) = image
                        {
                            take(&shared, &img, initial).await;
                        }
                    }
                }
            }
            r = roles.changed() => if r.is_err() { return Ok(()) },
            r = generations.recv() => if matches!(r, Err(tokio::sync::broadcast::error::RecvError::Closed)) { return Ok(()) },
        }
        let no_head = {
            let v = lock(&link.view);
            v.head_read && v.head.is_none() && !v.endpoint.is_empty()
        };
        let active = *roles.borrow() == Some(Role::Active);
        if link.is_store() && no_head && active {
            seed(&shared, link).await;
        }
    }
}

/// The head taken as the unit's generation.
async fn take(shared: &Shared, img: &Image, initial: bool) {
    let mut e = shared.engine.lock().await;
    match e.follow_fleet(img, initial) {
        Ok(Some(c)) => {
            drop(e);
            tracing::info!(generation = c.image.generation, "fleet: took the pair's head from etcd");
            shared.committed(c);
        }
        Ok(None) => {}
        Err(err) => tracing::error!(generation = img.generation, "fleet: cannot take the pair's head: {err}"),
    }
}

/// The pair has no image in etcd: its active unit puts its own there
/// (under its generation) if it has one.
async fn seed(shared: &Shared, link: &FleetLink) {
    let image = {
        let e = shared.engine.lock().await;
        if e.store.current().generation == 0 {
            return;
        }
        e.store.current().clone()
    };
    let (tx, rx) = oneshot::channel();
    if link.commands.send(Command::Seed { image: image.clone(), reply: tx }).await.is_err() {
        return;
    }
    match tokio::time::timeout(OP_TIMEOUT * 3, rx).await {
        Ok(Ok(Ok(None))) => {
            lock(&link.view).head = Some((image.generation, image.hash.clone()));
            tracing::info!(
                generation = image.generation,
                pair = %link.cfg.pair,
                "fleet: the pair had no image in etcd; this unit's is the pair's now"
            );
        }
        Ok(Ok(Ok(Some(head)))) => tracing::info!(generation = head.generation, "fleet: the pair has an image in etcd"),
        Ok(Ok(Err(e))) => tracing::warn!("fleet: cannot put the pair's image in etcd: {e}"),
        _ => tracing::warn!("fleet: putting the pair's image in etcd did not finish"),
    }
}

/// Waits (at most [`FIRST_HEAD_WAIT`]) until a session read the pair's
/// head: a unit with nothing stored takes the pair's image from etcd
/// rather than starting one from its file.
pub(crate) async fn wait_first_head(link: &FleetLink) {
    let wait = link.head_read.notified();
    if lock(&link.view).head_read {
        return;
    }
    let _ = tokio::time::timeout(FIRST_HEAD_WAIT, wait).await;
}

/// Writes `content` to etcd as the generation after `base`, then takes it
/// here as the engine's rule takes any head. The caller holds the
/// engine's lock (so nothing else commits in between) and passes it.
pub(crate) async fn write(
    link: &FleetLink,
    engine: &mut crate::engine::Engine,
    base: u64,
    content: Image,
    origin: &str,
    comment: &str,
) -> Result<Committed, Refusal> {
    let provenance = Provenance {
        committed_at: Some(prost_types::Timestamp::from(SystemTime::now())),
        unit: engine.unit.clone(),
        comment: comment.to_owned(),
        origin: origin.to_owned(),
    };
    let (tx, rx) = oneshot::channel();
    let cmd = Command::Write { base, content, provenance, keep: link.keep, reply: tx };
    link.commands.send(cmd).await.map_err(|_| Refusal::StoreUnavailable("the fleet session has stopped".into()))?;
    let img = match tokio::time::timeout(OP_TIMEOUT * 3, rx).await {
        Ok(Ok(Ok(img))) => img,
        Ok(Ok(Err(FleetError::Overtaken { base, newer }))) => return Err(Refusal::Overtaken { base, newer }),
        Ok(Ok(Err(FleetError::Invalid(p)))) => return Err(Refusal::Invalid(p)),
        Ok(Ok(Err(FleetError::AheadOfHead { base, head }))) => {
            return Err(Refusal::StaleBase { base, current: head });
        }
        Ok(Ok(Err(e))) if e.is_unavailable() => return Err(Refusal::StoreUnavailable(e.to_string())),
        Ok(Ok(Err(e))) => return Err(Refusal::Failed(e.to_string())),
        Ok(Err(_)) => return Err(Refusal::StoreUnavailable("the fleet session has stopped".into())),
        Err(_) => return Err(Refusal::StoreUnavailable("etcd did not answer the write in time".into())),
    };
    lock(&link.view).head = Some((img.generation, img.hash.clone()));
    let mut c = engine.follow_fleet(&img, false)?.ok_or_else(|| {
        Refusal::Failed(format!("generation {} was written to etcd but is already here", img.generation))
    })?;
    // The origin the writer asked for, as a local commit says it.
    c.origin = match origin {
        "restored" => "restored",
        "rolled-back" => "rolled-back",
        _ => "committed",
    };
    Ok(c)
}

/// The words of a role and a square's status, as the fleet shows them.
fn word(name: &str, prefix: &str) -> String {
    name.strip_prefix(prefix).unwrap_or(name).to_ascii_lowercase()
}

/// This unit's status as published: the role and squares from the
/// election, the generation here, the replication link from the
/// replicator.
struct Sources {
    election: ElectionServiceClient<AdminChannel>,
    replicator: Option<ReplicatorServiceClient<AdminChannel>>,
}

fn lazy(url: &str) -> Option<tonic::transport::Channel> {
    tonic::transport::Endpoint::from_shared(url.to_owned())
        .ok()
        .map(|ep| ep.connect_timeout(Duration::from_secs(1)).connect_lazy())
}

impl Sources {
    fn new(cfg: &Validated) -> Option<Self> {
        let election =
            ElectionServiceClient::new(authed(lazy(&duet_runtime::follow::election_url(cfg.election_listen))?));
        let replicator = if cfg.raw.replicator.enabled {
            cfg.raw
                .replicator
                .listen
                .parse::<std::net::SocketAddr>()
                .ok()
                .and_then(|a| lazy(&duet_runtime::follow::election_url(a)))
                .map(|ch| ReplicatorServiceClient::new(authed(ch)))
        } else {
            None
        };
        Some(Self { election, replicator })
    }

    async fn record(&mut self, shared: &Shared, link: &FleetLink, mode: &str, witness_key: &str) -> UnitRecord {
        let t = Duration::from_secs(1);
        let status = tokio::time::timeout(t, self.election.get_status(duet_proto::election::v1::GetStatusRequest {}))
            .await
            .ok()
            .and_then(Result::ok)
            .map(tonic::Response::into_inner);
        let (role, squares) = match &status {
            Some(s) => (
                duet_proto::convert::role(s.role).map_or("unknown", Role::as_str).to_owned(),
                s.squares
                    .iter()
                    .map(|q| Square {
                        unit: q.unit,
                        status: duet_proto::common::v1::UnitStatus::try_from(q.status)
                            .map_or("unknown".into(), |u| word(u.as_str_name(), "UNIT_STATUS_")),
                        detail: q.detail.clone(),
                    })
                    .collect(),
            ),
            None => ("unknown".into(), Vec::new()),
        };
        let replication = match self.replicator.as_mut() {
            None => "off".to_owned(),
            Some(c) => {
                match tokio::time::timeout(t, c.get_status(duet_proto::replicator::v1::GetStatusRequest {})).await {
                    Ok(Ok(r)) => {
                        let r = r.into_inner();
                        if r.partner_connected {
                            "up".to_owned()
                        } else if r.last_error.is_empty() {
                            "down".to_owned()
                        } else {
                            format!("down: {}", r.last_error)
                        }
                    }
                    _ => "down: the replicator does not answer".to_owned(),
                }
            }
        };
        let (generation, hash) = lock(&shared.held).clone();
        UnitRecord {
            unit: link.cfg.unit.clone(),
            pair: link.cfg.pair.clone(),
            mode: mode.to_owned(),
            role,
            squares,
            generation,
            hash,
            replication,
            witness_key: witness_key.to_owned(),
            changed_at_ms: 0,
            version: duet_version::VERSION.to_owned(),
        }
    }
}

fn now_ms() -> u64 {
    SystemTime::now().duration_since(SystemTime::UNIX_EPOCH).map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(0))
}

/// Publishes this unit's status: at start, at every role or generation
/// change, and when a look every [`REFRESH`] finds something else.
pub(crate) async fn publish(
    shared: Arc<Shared>,
    cfg: Validated,
    mut roles: watch::Receiver<Option<Role>>,
    mut stop: Shutdown,
) -> anyhow::Result<()> {
    let Some(link) = shared.fleet.as_ref() else { return Ok(()) };
    let Some(mut sources) = Sources::new(&cfg) else {
        anyhow::bail!("the election's address {} does not make a URL", cfg.election_listen)
    };
    let mode = cfg.raw.unit.mode.as_str().to_owned();
    let witness_key = cfg.witness.as_ref().map(|w| w.key(cfg.election.vhid)).unwrap_or_default();
    let mut generations = shared.generations.subscribe();
    let mut last: Option<UnitRecord> = None;
    let mut tick = tokio::time::interval(REFRESH);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        let mut r = sources.record(&shared, link, &mode, &witness_key).await;
        let changed = last.as_ref().is_none_or(|l| l.differs(&r));
        if changed {
            r.changed_at_ms = now_ms();
            if link.commands.send(Command::Publish(r.clone())).await.is_err() {
                return Ok(());
            }
            last = Some(r);
        }
        tokio::select! {
            _ = tick.tick() => {}
            r = roles.changed() => if r.is_err() { return Ok(()) },
            _ = generations.recv() => {}
            () = stop.wait() => return Ok(()),
        }
    }
}
