//! The replicator service of a duet unit (SPEC R1-R5) and the L4 data
//! plane it needs.
//!
//! On both units it programs the virtual services of the configuration
//! image into the kernel ([`duet_dataplane`], one nft transaction per
//! generation, following configsync). On the active unit it follows the
//! kernel's connection-tracking events for the flows of those services and
//! of the shared addresses ([`sender`]), reads the persistence entries of
//! the data plane, of HAProxy's stick tables and of any proxy that reports
//! them over the API, and streams every change to the partner over gRPC
//! with mutual TLS: numbered, coalesced, batched and acknowledged, with a
//! bounded outbox and a bulk resync whenever the link is (re)made. On the
//! standby it installs what it receives in its own kernel ahead of time
//! ([`receiver`]): conntrack entries with their NAT bindings, persistence
//! elements, HAProxy table entries. A failover then finds the state in
//! place: the takeover service asks [`api`]'s `WaitInstalled` before it
//! adds the addresses (R4), and a unit whose start-up resync is not done
//! tells the election it is not ready to take over from a healthy partner.

mod api;
mod haproxy;
mod metrics;
pub mod model;
mod receiver;
mod sender;
mod state;

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, SystemTime};

use duet_carp::{HaMode, Role};
use duet_config::Validated;
use duet_proto::election::v1::SetReadinessRequest;
use duet_proto::election::v1::election_service_client::ElectionServiceClient;
use duet_proto::replicator::v1::replication_peer_service_server::ReplicationPeerServiceServer;
use duet_proto::replicator::v1::replicator_service_server::ReplicatorServiceServer;
use duet_runtime::generations::Generation;
use duet_runtime::service::CannotStart;
use duet_runtime::shutdown::{self, Shutdown};
use duet_runtime::tasks::Tasks;
use duet_runtime::tls::PeerTls;
use tokio::net::TcpListener;

use crate::state::{Shared, lock};

/// Largest gRPC message on the peer link (a batch or a snapshot chunk).
pub(crate) const MAX_MESSAGE: usize = 64 << 20;

/// The replicator as a duet service process (`duet_runtime::service`).
#[derive(Debug)]
pub struct Replicator;

impl duet_runtime::service::Service for Replicator {
    const NAME: &'static str = "duet-replicator";
    const ABOUT: &'static str =
        "The replicator of a duet unit: connection and persistence state, kept ready on the standby";
    const LISTEN_SETTING: &'static str = "replicator.listen";
    const CAPABILITIES: &'static [duet_runtime::caps::Cap] = duet_runtime::caps::REPLICATOR;
    type Error = anyhow::Error;

    /// One worker: the kernel's table work runs on the blocking pool, and
    /// a second worker mostly woke the first for every event (idle cost,
    /// issue 14).
    fn threads(_cfg: &Validated) -> duet_runtime::service::Threads {
        duet_runtime::service::Threads::Workers(1)
    }

    fn listen(cfg: &Validated) -> Result<std::net::SocketAddr, Vec<duet_config::Problem>> {
        cfg.replicator().map(|c| c.listen)
    }

    fn check(cfg: &Validated) -> Result<String, Vec<duet_config::Problem>> {
        let c = cfg.replicator()?;
        Ok(format!(
            "listen {}, peer {}, l4 {}, l7 {}",
            c.listen,
            c.peer.map_or_else(|| "none (non-HA)".to_owned(), |p| p.partner.to_string()),
            c.l4,
            c.l7
        ))
    }

    async fn run(cfg: Validated, ctx: duet_runtime::service::Context) -> anyhow::Result<duet_runtime::service::Exit> {
        run(cfg, ctx.listener, ctx.shutdown).await.map(|()| duet_runtime::service::Exit::Shutdown)
    }
}

/// Runs the replicator until `shutdown`. `listener` is the local API's.
pub async fn run(cfg: Validated, listener: TcpListener, shutdown: Shutdown) -> anyhow::Result<()> {
    let rc = cfg.replicator().map_err(CannotStart::new("the replicator"))?;
    let tls = rc.peer.as_ref().map(PeerTls::for_link).transpose()?;
    let ha_unit = cfg.raw.unit.mode != HaMode::NonHa;
    let shared = Arc::new(Shared::new(cfg.raw.unit.name.clone(), rc.clone(), tls));
    {
        let mut f = lock(&shared.filter);
        f.shared = cfg.pair_at_start().0.shared().iter().map(|(_, c)| c.addr).collect();
    }
    if !ha_unit {
        shared.role.send_replace(Some(Role::Active));
    }

    let (stop_trigger, stop) = shutdown::channel();
    let (router, health) = duet_runtime::grpc::router::<ReplicatorServiceServer<api::Api>>(
        &duet_runtime::admin::AdminAuth::new(cfg.admin_tokens.clone()),
    )?;
    let router = router.add_service(ReplicatorServiceServer::new(api::Api { shared: Arc::clone(&shared) }));
    let mut tasks = Tasks::new();
    tasks.spawn("local API", duet_runtime::grpc::serve(router, listener, stop.clone()));

    if let (Some(p), Some(tls)) = (&rc.peer, &shared.tls) {
        let (l, mut server) = duet_runtime::grpc::peer_server(p, tls, "replicator.peer_port").await?;
        let server = server.add_service(
            ReplicationPeerServiceServer::new(receiver::PeerServer { shared: Arc::clone(&shared), stop: stop.clone() })
                .max_decoding_message_size(MAX_MESSAGE)
                .max_encoding_message_size(MAX_MESSAGE),
        );
        let s = stop.clone();
        tasks.spawn("peer link server", async move { server.serve_with_incoming_shutdown(l, s.future()).await });
        tasks.spawn("sender", sender::run(Arc::clone(&shared), stop.clone()));
    }
    tasks.spawn("expiry", receiver::expiry(Arc::clone(&shared), stop.clone()));
    if rc.l4 {
        tasks.spawn("conntrack events", sender::watch_conntrack(Arc::clone(&shared), stop.clone()));
        tasks.spawn("flow refresh", sender::refresh_flows(Arc::clone(&shared), stop.clone()));
    }
    if rc.l7 {
        tasks.spawn("persistence poller", sender::poll_persistence(Arc::clone(&shared), stop.clone()));
    }
    if let Some(cs) = rc.configsync_listen {
        let generations = duet_runtime::generations::generations(
            duet_runtime::generations::configsync_url(cs),
            ha_unit,
            stop.clone(),
        );
        tasks.spawn("data plane", follow_image(Arc::clone(&shared), generations, stop.clone()));
    } else {
        lock(&shared.dataplane).error =
            "configsync does not run on this unit: no virtual services are programmed".to_string();
    }
    let mut role_health = None;
    if ha_unit {
        let election = format!("http://{}", cfg.election_listen);
        let roles = duet_runtime::follow::role_watch(election.clone(), stop.clone());
        role_health = Some(roles.clone());
        tasks.spawn("role follower", follow_role(Arc::clone(&shared), roles));
        tasks.spawn("readiness", report_readiness(Arc::clone(&shared), election, stop.clone()));
    }
    let _metrics = metrics::Metrics::new(&shared);
    tracing::info!(
        unit = %shared.unit,
        peer = ?rc.peer.as_ref().map(|p| p.partner),
        l4 = rc.l4,
        l7 = rc.l7,
        "replicator started"
    );

    duet_runtime::health::keep_until(health, &mut tasks, shutdown, role_health).await;
    stop_trigger.fire();
    tasks.shutdown(Duration::from_secs(3)).await;
    tracing::info!("replicator stopped");
    Ok(())
}

/// Follows the election's role: changes are sent only while this unit's
/// state is the pair's. Without the election the role is unknown: nothing
/// is sent (the takeover drops the addresses on its own fail-safe).
async fn follow_role(shared: Arc<Shared>, mut roles: tokio::sync::watch::Receiver<Option<Role>>) -> anyhow::Result<()> {
    loop {
        let role = *roles.borrow_and_update();
        set_role(&shared, role);
        if roles.changed().await.is_err() {
            return Ok(());
        }
    }
}

fn set_role(shared: &Shared, role: Option<Role>) {
    // Only this task writes the role: read it, do the change's work, then
    // publish, so that a task woken by the change finds the work done.
    let was = shared.role();
    if was == role {
        return;
    }
    let authoritative = |r: Option<Role>| r.is_some_and(Role::is_authoritative);
    if authoritative(role) && !authoritative(was) {
        // Persistence reported by proxies on the old active now belongs
        // to this unit (the data plane's and HAProxy's are in their own
        // tables already and are read from there).
        let shadow = lock(&shared.shadow);
        let mut local = lock(&shared.local);
        for (k, h) in shadow.iter() {
            if let (model::Key::Persist { table, key }, model::Value::Persist(server)) = (k, &h.value)
                && !table.starts_with("l4:")
                && !table.starts_with("haproxy:")
            {
                local.insert((table.clone(), key.clone()), (server.clone(), h.expires_ms));
            }
        }
        drop(local);
        drop(shadow);
        *lock(&shared.tracked) = state::Tracked::default();
        shared.resync_wanted.store(true, Ordering::Relaxed);
    } else if authoritative(was) && !authoritative(role) {
        lock(&shared.outbox).reset_after_snapshot();
        lock(&shared.lag).reset_pending();
    }
    shared.role.send_replace(role);
    shared.readiness_changed.notify_one();
    shared.entries_added.notify_one();
    tracing::info!(role = role.map_or("unknown", Role::as_str), "replicator follows the role");
}

/// How often an unchanged readiness is reported again: well within the
/// election's 10 s (`duet_carp::readiness::READINESS_STALE`).
const READINESS_REFRESH: Duration = Duration::from_secs(4);

/// R4: tells the election whether this unit may take over from a healthy
/// partner: at every change (the receiver and the role say when,
/// [`Shared::readiness_changed`]), and again every [`READINESS_REFRESH`]
/// (the election forgets a component silent for 10 s). While not ready it
/// also looks every 200 ms (the start-up grace ends by time alone).
async fn report_readiness(shared: Arc<Shared>, election: String, mut stop: Shutdown) -> anyhow::Result<()> {
    let mut last: Option<bool> = None;
    let mut client: Option<ElectionServiceClient<duet_runtime::admin::AdminChannel>> = None;
    let mut since = tokio::time::Instant::now();
    let mut next = duet_net::timer::Timer::new();
    loop {
        let (ready, reason) = shared.readiness();
        if last != Some(ready) || since.elapsed() >= READINESS_REFRESH {
            if client.is_none() {
                client = tonic::transport::Endpoint::from_shared(election.clone())
                    .ok()
                    .map(|ep| ep.connect_timeout(Duration::from_secs(2)).connect_lazy())
                    .map(|ch| ElectionServiceClient::new(duet_runtime::admin::authed(ch)));
            }
            if let Some(c) = client.as_mut() {
                let req = SetReadinessRequest { component: "replicator".into(), ready, reason: reason.clone() };
                match tokio::time::timeout(Duration::from_secs(2), c.set_readiness(req)).await {
                    Ok(Ok(_)) => {
                        if last != Some(ready) {
                            tracing::info!(ready, reason = %reason, "readiness reported to the election");
                        }
                        last = Some(ready);
                        since = tokio::time::Instant::now();
                    }
                    _ => client = None,
                }
            }
        }
        let every = if last == Some(true) {
            READINESS_REFRESH.saturating_sub(since.elapsed())
        } else {
            Duration::from_millis(200)
        };
        next.set(Some(std::time::Instant::now() + every));
        tokio::select! {
            () = next.fired() => {}
            () = shared.readiness_changed.notified() => {}
            () = stop.wait() => return Ok(()),
        }
    }
}

/// Programs the virtual services of every generation configsync makes
/// current (one nft transaction each) and points the flow filter at them.
/// The generation follower hands over only generations that converted and
/// validated whole. At stop, the table it programmed goes with it: a
/// stopped unit balances nothing.
async fn follow_image(
    shared: Arc<Shared>,
    mut generations: tokio::sync::watch::Receiver<Option<Arc<Generation>>>,
    mut stop: Shutdown,
) -> anyhow::Result<()> {
    let mut sysctls_set = false;
    loop {
        let g = generations.borrow_and_update().clone();
        if let Some(g) = g
            && g.hash != lock(&shared.dataplane).hash
        {
            apply_image(&shared, &g, &mut sysctls_set).await;
        }
        tokio::select! {
            r = generations.changed() => {
                // The follower ends at the same stop (whichever is seen first).
                if r.is_err() && stop.fired() {
                    remove_table(&shared).await;
                    return Ok(());
                }
                if r.is_err() {
                    anyhow::bail!("the generation follower ended before the stop");
                }
            }
            () = stop.wait() => {
                remove_table(&shared).await;
                return Ok(());
            }
        }
    }
}

/// Removes duet's nftables table, if this process programmed one, within
/// [`REMOVE_TIMEOUT`].
async fn remove_table(shared: &Shared) {
    if lock(&shared.dataplane).hash.is_empty() {
        return;
    }
    let removed = tokio::time::timeout(REMOVE_TIMEOUT, tokio::task::spawn_blocking(duet_dataplane::remove)).await;
    match removed {
        Ok(Ok(Ok(_))) => lock(&shared.dataplane).hash.clear(),
        Ok(Ok(Err(e))) => tracing::error!("cannot remove the data plane's table at stop: {e}"),
        Ok(Err(e)) => tracing::error!("removing the data plane's table failed: {e}"),
        Err(_) => tracing::error!("removing the data plane's table took over {} ms", REMOVE_TIMEOUT.as_millis()),
    }
}

/// How long the stop waits for `nft` to remove the table.
const REMOVE_TIMEOUT: Duration = Duration::from_millis(1500);

async fn apply_image(shared: &Shared, g: &Generation, sysctls_set: &mut bool) {
    lock(&shared.filter).shared = g.content.interfaces.iter().filter_map(|i| Some(i.shared?.addr)).collect();
    let ha = &g.content.ha;
    for (what, on, local, pair) in [
        ("L4 updates (connections)", &shared.l4_on, shared.cfg.l4, ha.l4_updates),
        ("L7 updates (persistence)", &shared.l7_on, shared.cfg.l7, ha.l7_updates),
    ] {
        let now = local && pair;
        if on.swap(now, Ordering::Relaxed) != now {
            shared.persistence_changed.notify_one();
            tracing::warn!(
                generation = g.generation,
                "{what} {} (the pair's HA settings say {pair}, this unit's [replicator] {local})",
                if now { "on" } else { "off" }
            );
        }
    }
    let ruleset = duet_dataplane::ruleset(g.generation, &g.hash, &g.content.virtual_services);
    let rs = ruleset.clone();
    let started = SystemTime::now();
    let applied = tokio::task::spawn_blocking(move || duet_dataplane::apply(&rs)).await;
    // O3: the data plane's part of the commit's trace.
    if !g.trace.is_empty() {
        let outcome = match &applied {
            Ok(Ok(_)) => "applied".to_owned(),
            Ok(Err(e)) => format!("not applied: {e}"),
            Err(e) => format!("task failed: {e}"),
        };
        duet_runtime::trace::record(
            "duet.dataplane.apply",
            &g.trace,
            started,
            SystemTime::now(),
            vec![
                opentelemetry::KeyValue::new("duet.generation", i64::try_from(g.generation).unwrap_or(i64::MAX)),
                opentelemetry::KeyValue::new("duet.services", i64::try_from(ruleset.services().len()).unwrap_or(0)),
                opentelemetry::KeyValue::new("duet.outcome", outcome),
            ],
        );
    }
    match applied {
        Ok(Ok(a)) => {
            {
                let mut d = lock(&shared.dataplane);
                d.generation = a.generation;
                d.hash = a.image_hash.clone();
                d.services = u32::try_from(a.services).unwrap_or(u32::MAX);
                d.real_servers = u32::try_from(a.real_servers).unwrap_or(u32::MAX);
                d.source_persistence = ruleset.services().iter().any(|s| s.persistence_timeout_s.is_some());
                d.applied_at = Some(SystemTime::now());
                d.error.clear();
            }
            shared.persistence_changed.notify_one();
            let endpoints = ruleset
                .services()
                .iter()
                .map(|s| {
                    let proto = match s.protocol {
                        duet_model::Protocol::Tcp => duet_net::conntrack::PROTO_TCP,
                        duet_model::Protocol::Udp => duet_net::conntrack::PROTO_UDP,
                    };
                    (s.address, s.port, proto)
                })
                .collect();
            lock(&shared.filter).endpoints = endpoints;
            if !*sysctls_set {
                match tokio::task::spawn_blocking(duet_dataplane::set_sysctls).await {
                    Ok(Ok(_)) => *sysctls_set = true,
                    Ok(Err(e)) => tracing::error!("data plane: cannot set the kernel settings it needs: {e}"),
                    Err(e) => tracing::error!("data plane: {e}"),
                }
            }
            // New services: look for their flows now.
            shared.refresh_now.notify_one();
        }
        Ok(Err(e)) => {
            let e = format!("generation {} not programmed (the previous one stays in force): {e}", g.generation);
            tracing::error!("data plane: {e}");
            lock(&shared.dataplane).error = e;
        }
        Err(e) => lock(&shared.dataplane).error = format!("data plane task: {e}"),
    }
}
