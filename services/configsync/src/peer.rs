//! The peer link (S3): the server the partner pushes to, and the pusher
//! and prober that talk to the partner. Mutual TLS on both sides; the
//! server also checks, per request, that the client certificate is the
//! partner's (R5, O5).

use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use duet_carp::Role;
use duet_proto::config::v1::Image;
use duet_proto::configsync::v1 as pb;
use duet_proto::configsync::v1::peer_sync_service_client::PeerSyncServiceClient;
use duet_proto::convert::role_i32;
use duet_runtime::shutdown::Shutdown;
use tokio::sync::mpsc;
use tonic::transport::{Channel, Endpoint};
use tonic::{Request, Response, Status};

use crate::engine::{Behind, Refusal};
use crate::{ForceReply, PROBE_EVERY, Shared, lock};

/// The partner's side of the link, served on this unit.
#[derive(Debug)]
pub(crate) struct PeerServer {
    pub shared: Arc<Shared>,
}

impl PeerServer {
    fn check<T>(&self, req: &Request<T>) -> Result<(), Status> {
        match &self.shared.tls {
            Some(t) => t.check_peer(req)?,
            None => return Err(Status::unauthenticated("this unit has no peer link configured")),
        }
        duet_proto::peer_protocol::refuse_unless_compatible(req.metadata()).inspect_err(|e| {
            tracing::warn!("peer link: {}", e.message());
        })
    }

    fn heard(&self) {
        let mut p = lock(&self.shared.partner);
        p.last_ok = Some(Instant::now());
    }
}

#[tonic::async_trait]
impl pb::peer_sync_service_server::PeerSyncService for PeerServer {
    async fn push(&self, req: Request<pb::PushRequest>) -> Result<Response<pb::PushResponse>, Status> {
        self.check(&req)?;
        self.heard();
        let trace = duet_runtime::trace::extract(req.metadata());
        let received = SystemTime::now();
        let r = req.into_inner();
        let outcome = self.shared.engine.lock().await.receive(&r);
        match outcome {
            Ok((resp, committed)) => {
                {
                    let mut p = lock(&self.shared.partner);
                    p.generation = Some(resp.held_generation);
                    p.hash.clone_from(&resp.held_hash);
                    p.role = r.from_role;
                }
                if let Some(mut c) = committed {
                    // O3: adopting the partner's push, in its trace.
                    if !trace.is_empty() {
                        let attrs = crate::commit_attributes(&c);
                        c.trace = duet_runtime::trace::record(
                            "duet.configsync.adopt",
                            &trace,
                            received,
                            SystemTime::now(),
                            attrs,
                        );
                    }
                    self.shared.committed(c);
                }
                Ok(Response::new(resp))
            }
            Err(e) => {
                tracing::warn!(from = %r.from_unit, "push refused: {e}");
                Err(Status::failed_precondition(e.to_string()))
            }
        }
    }

    async fn held(&self, req: Request<pb::HeldRequest>) -> Result<Response<pb::HeldResponse>, Status> {
        self.check(&req)?;
        self.heard();
        let e = self.shared.engine.lock().await;
        let cur = e.store.current();
        Ok(Response::new(pb::HeldResponse {
            generation: cur.generation,
            hash: cur.hash.clone(),
            unit: e.unit.clone(),
            role: e.role.map_or(0, role_i32),
            unix_ms: unix_ms(SystemTime::now()),
        }))
    }

    async fn fetch(&self, req: Request<pb::FetchRequest>) -> Result<Response<pb::FetchResponse>, Status> {
        self.check(&req)?;
        self.heard();
        let e = self.shared.engine.lock().await;
        Ok(Response::new(pb::FetchResponse { image: Some(e.store.current().clone()) }))
    }
}

fn client(shared: &Shared) -> Option<PeerSyncServiceClient<Channel>> {
    let p = shared.cfg.peer.as_ref()?;
    let tls = shared.tls.as_ref()?;
    // The partner is reached by its address; the certificate is checked
    // against its name (`domain_name` in the TLS config).
    let ep = Endpoint::from_shared(format!("https://{}", p.partner))
        .ok()?
        .tls_config(tls.client())
        .ok()?
        .connect_timeout(Duration::from_secs(2))
        .tcp_nodelay(true)
        .http2_keep_alive_interval(duet_runtime::grpc::PEER_KEEPALIVE)
        .keep_alive_timeout(duet_runtime::grpc::PEER_KEEPALIVE_TIMEOUT);
    Some(
        PeerSyncServiceClient::new(ep.connect_lazy())
            .max_decoding_message_size(256 << 20)
            .max_encoding_message_size(256 << 20),
    )
}

fn failed(shared: &Shared, e: &str) {
    let mut p = lock(&shared.partner);
    // A failed call means the partner is not reachable now, whatever
    // answered a moment ago.
    p.last_ok = None;
    // Logged when the link starts failing, then at most every
    // FAILURE_LOG_EVERY while it keeps failing (the probe and the pusher
    // fail with different words; status shows the latest at all times).
    let now = Instant::now();
    if p.last_error.is_empty() || p.warned_at.is_none_or(|t| now.duration_since(t) >= FAILURE_LOG_EVERY) {
        tracing::warn!("peer link: {e}");
        p.warned_at = Some(now);
    }
    p.last_error = e.to_string();
}

/// The partner answered: the link works (said once, when it had failed).
fn answered(p: &mut crate::PartnerView) {
    if !p.last_error.is_empty() {
        tracing::info!("peer link: the partner answers again");
        p.last_error.clear();
        p.warned_at = None;
    }
}

/// While the peer link keeps failing, it is logged at most this often.
const FAILURE_LOG_EVERY: Duration = Duration::from_secs(60);

/// The partner's current image, if it answers.
pub(crate) async fn fetch(shared: &Shared) -> Option<Image> {
    let mut c = client(shared)?;
    match tokio::time::timeout(shared.cfg.push_timeout, c.fetch(stamped(pb::FetchRequest {}))).await {
        Ok(Ok(r)) => r.into_inner().image.filter(duet_image::hash_ok),
        _ => None,
    }
}

/// A peer call carrying this build's peer-protocol version (U4).
fn stamped<T>(msg: T) -> Request<T> {
    let mut r = Request::new(msg);
    duet_proto::peer_protocol::stamp(r.metadata_mut());
    r
}

/// Milliseconds since the UNIX epoch.
fn unix_ms(t: SystemTime) -> u64 {
    t.duration_since(std::time::UNIX_EPOCH).map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
}

/// The partner's clock minus this unit's (ms), from a question asked at
/// `asked` and answered at `answered` carrying the partner's `partner_ms`
/// (taken as the middle of the round trip), with the round trip (ms).
pub(crate) fn clock_offset(asked: SystemTime, answered: SystemTime, partner_ms: u64) -> (i64, u64) {
    let (a, b) = (unix_ms(asked), unix_ms(answered).max(unix_ms(asked)));
    let middle = a + (b - a) / 2;
    let offset = i64::try_from(partner_ms).unwrap_or(i64::MAX) - i64::try_from(middle).unwrap_or(i64::MAX);
    (offset, b - a)
}

/// Asks the partner what it holds every few seconds (both roles), so the
/// status shows both units' generation and hash.
pub(crate) async fn prober(shared: Arc<Shared>, mut stop: Shutdown) -> anyhow::Result<()> {
    let Some(mut c) = client(&shared) else { return Ok(()) };
    // The kernel's timer: one wakeup per probe (tokio's wakes three times
    // for a sleep this long).
    let mut next = duet_net::timer::Timer::new();
    loop {
        let asked = SystemTime::now();
        match tokio::time::timeout(shared.cfg.push_timeout, c.held(stamped(pb::HeldRequest {}))).await {
            Ok(Ok(r)) => {
                let r = r.into_inner();
                let answered_at = SystemTime::now();
                let mut p = lock(&shared.partner);
                if r.unix_ms > 0 {
                    p.clock = Some(clock_offset(asked, answered_at, r.unix_ms));
                }
                p.last_ok = Some(Instant::now());
                p.generation = Some(r.generation);
                p.hash = r.hash;
                p.role = r.role;
                answered(&mut p);
            }
            Ok(Err(s)) if unreachable(&s) => failed(&shared, &format!("the partner is unreachable ({})", s.message())),
            Ok(Err(s)) => failed(&shared, &format!("the partner refused: {}", s.message())),
            Err(_) => failed(&shared, "the partner did not answer in time"),
        }
        next.set(Some(Instant::now() + PROBE_EVERY));
        tokio::select! {
            () = next.fired() => {}
            () = stop.wait() => return Ok(()),
        }
    }
}

/// Pushes on commit, in full every sync interval, and on ForceUpdate,
/// while this unit is active.
pub(crate) async fn pusher(
    shared: Arc<Shared>,
    mut force: mpsc::Receiver<ForceReply>,
    mut stop: Shutdown,
) -> anyhow::Result<()> {
    let Some(mut c) = client(&shared) else { return Ok(()) };
    let pushes = crate::metrics::pushes();
    let mut next_full = Instant::now() + shared.cfg.sync_interval;
    let mut pending = false;
    let mut timer = duet_net::timer::Timer::new();
    loop {
        let interval = {
            let e = shared.engine.lock().await;
            e.store.current().ha.map_or(0, |h| h.sync_interval_s)
        };
        let interval = if interval == 0 { shared.cfg.sync_interval } else { Duration::from_secs(u64::from(interval)) };
        let retry = pending.then(|| Instant::now() + Duration::from_millis(500));
        timer.set(Some(retry.map_or(next_full, |r| r.min(next_full))));
        let (full, reply) = tokio::select! {
            () = shared.push_now.notified() => (false, None),
            () = timer.fired() => (Instant::now() >= next_full, None),
            Some(r) = force.recv() => (true, Some(r)),
            () = stop.wait() => return Ok(()),
        };
        if full {
            next_full = Instant::now() + interval;
        }
        let active = shared.engine.lock().await.role.is_some_and(Role::is_authoritative);
        if !active {
            pending = false;
            if let Some(r) = reply {
                let _ = r.send(Err(PushError::NotActive));
            }
            continue;
        }
        let outcome = push_once(&shared, &mut c, full).await;
        crate::metrics::pushed(&pushes, full, outcome.is_ok());
        pending = outcome.is_err();
        if let Some(r) = reply {
            let _ = r.send(outcome);
        }
    }
}

/// A push the partner took: the generation it holds now and how long it
/// took.
#[derive(Debug, Clone)]
pub(crate) struct Pushed {
    pub generation: u64,
    pub hash: String,
    pub took: Duration,
}

/// Why a push to the partner did not go through.
#[derive(Debug, thiserror::Error)]
pub(crate) enum PushError {
    /// A force update asked of a unit that is not active.
    #[error("this unit is not active: force update is done from the active unit")]
    NotActive,
    /// The partner refused the push.
    #[error("push of generation {generation} refused by the partner: {}", .status.message())]
    Refused {
        generation: u64,
        #[source]
        status: Status,
    },
    /// The partner could not be reached (not up, or the link is down).
    #[error("push of generation {generation} not delivered: the partner is unreachable ({})", .status.message())]
    Unreachable {
        generation: u64,
        #[source]
        status: Status,
    },
    /// The partner did not answer within the push timeout.
    #[error("push of generation {generation} timed out")]
    TimedOut { generation: u64 },
    /// This unit's image could not be re-based above the partner's.
    #[error(transparent)]
    Rebase(#[from] Refusal),
    /// The partner's answer is none this unit knows.
    #[error("the partner gave an unknown answer")]
    UnknownAnswer,
    /// The pair's image is in etcd and the partner took a newer head
    /// first; this unit follows etcd's head too.
    #[error("the partner holds generation {held}, newer in etcd; this unit takes it from etcd")]
    FleetAhead { held: u64 },
    /// The partner still held a higher generation after three re-bases.
    #[error("the partner kept holding a higher generation")]
    KeptHigher,
}

/// One push of the current generation; re-bases and pushes again when the
/// partner holds a higher generation (after a split or a hand change).
async fn push_once(shared: &Shared, c: &mut PeerSyncServiceClient<Channel>, full: bool) -> Result<Pushed, PushError> {
    let start = Instant::now();
    for _ in 0..3 {
        let (image, from_role) = {
            let e = shared.engine.lock().await;
            (e.store.current().clone(), e.role)
        };
        let mut req = stamped(pb::PushRequest {
            image: Some(image.clone()),
            from_unit: shared.unit.clone(),
            from_role: from_role.map_or(0, role_i32),
            full,
        });
        // O3: a push of the newest commit is part of its trace.
        let parent = {
            let t = lock(&shared.last_trace);
            if t.0 == image.generation { t.1.clone() } else { String::new() }
        };
        let span = (!parent.is_empty()).then(|| {
            duet_runtime::trace::start(
                "duet.configsync.push",
                &parent,
                opentelemetry::trace::SpanKind::Client,
                vec![
                    opentelemetry::KeyValue::new(
                        "duet.generation",
                        i64::try_from(image.generation).unwrap_or(i64::MAX),
                    ),
                    opentelemetry::KeyValue::new("duet.full", full),
                ],
            )
        });
        if let Some(s) = &span {
            duet_runtime::trace::inject(&s.traceparent(), req.metadata_mut());
        }
        let sent = tokio::time::timeout(shared.cfg.push_timeout, c.push(req)).await;
        if let Some(s) = span {
            s.set(vec![opentelemetry::KeyValue::new("duet.delivered", matches!(sent, Ok(Ok(_))))]);
            s.end();
        }
        let resp = match sent {
            Ok(Ok(r)) => r.into_inner(),
            Ok(Err(status)) => {
                let generation = image.generation;
                let e = if unreachable(&status) {
                    PushError::Unreachable { generation, status }
                } else {
                    PushError::Refused { generation, status }
                };
                failed(shared, &e.to_string());
                return Err(e);
            }
            Err(_) => {
                let e = PushError::TimedOut { generation: image.generation };
                failed(shared, &e.to_string());
                return Err(e);
            }
        };
        {
            let mut p = lock(&shared.partner);
            p.last_ok = Some(Instant::now());
            p.generation = Some(resp.held_generation);
            p.hash.clone_from(&resp.held_hash);
            answered(&mut p);
        }
        match pb::PushResult::try_from(resp.result) {
            Ok(pb::PushResult::Adopted | pb::PushResult::Already) => {
                let took = start.elapsed();
                lock(&shared.partner).last_sync = Some((SystemTime::now(), took));
                let _ = shared.engine.lock().await.store.set_synced(image.generation);
                if !resp.backup_name.is_empty() {
                    tracing::error!(backup = %resp.backup_name, "the partner kept its diverged generations as a backup (split merge, S5)");
                }
                return Ok(Pushed { generation: image.generation, hash: image.hash, took });
            }
            Ok(pb::PushResult::Stale) => {
                // O7: with the image in etcd both units follow its head; a
                // partner ahead took a newer head first, which this unit
                // takes from etcd too (re-basing would leave etcd's numbers).
                if shared.fleet.as_ref().is_some_and(crate::fleet::FleetLink::is_store) {
                    return Err(PushError::FleetAhead { held: resp.held_generation });
                }
                if shared.engine.lock().await.behind() == Behind::FastForward {
                    // The partner's image, if it is still the one it said it
                    // holds (else the next round asks again).
                    let partner = shared.cfg.peer.as_ref().map_or("", |p| p.partner_name.as_str());
                    match fetch(shared)
                        .await
                        .filter(|i| i.generation == resp.held_generation && i.hash == resp.held_hash)
                    {
                        None => continue,
                        Some(img) if crate::engine::committed_by(&img, partner) => {
                            let c = shared.engine.lock().await.adopt(
                                &img,
                                &format!(
                                    "taken from the partner: generation {} was committed there and had not reached \
                                     this unit",
                                    img.generation
                                ),
                            )?;
                            tracing::warn!(
                                generation = img.generation,
                                from = %image.generation,
                                "the partner holds newer generations this unit never received: took them"
                            );
                            let took = start.elapsed();
                            lock(&shared.partner).last_sync = Some((SystemTime::now(), took));
                            let (generation, hash) = (c.image.generation, c.image.hash.clone());
                            shared.committed(c);
                            return Ok(Pushed { generation, hash, took });
                        }
                        // Written there by someone else (by hand): this
                        // unit's image wins, as below.
                        Some(_) => {}
                    }
                }
                let c = shared.engine.lock().await.rebase_above(resp.held_generation)?;
                tracing::warn!(
                    partner_generation = resp.held_generation,
                    generation = c.image.generation,
                    "the partner holds a higher generation: re-based this unit's image above it"
                );
                shared.committed(c);
            }
            _ => return Err(PushError::UnknownAnswer),
        }
    }
    Err(PushError::KeptHigher)
}

/// Whether a call failed for want of the partner (no connection, the link
/// gone), rather than being refused by it (a TLS handshake that failed on
/// a certificate is a refusal too, though the transport reports it as
/// unavailable).
fn unreachable(s: &Status) -> bool {
    let m = s.message();
    s.code() == tonic::Code::Unavailable && !m.contains("certificate") && !m.contains("handshake")
}

#[cfg(test)]
mod clock_tests {
    use std::time::{Duration, UNIX_EPOCH};

    #[test]
    fn the_offset_is_taken_at_the_middle_of_the_round_trip() {
        let t = |ms: u64| UNIX_EPOCH + Duration::from_millis(ms);
        assert_eq!(super::clock_offset(t(1000), t(1010), 6005), (5000, 10));
        assert_eq!(super::clock_offset(t(1000), t(1004), 502), (-500, 4));
        // A clock stepped back under the question: no negative round trip.
        assert_eq!(super::clock_offset(t(1000), t(990), 1000).1, 0);
    }
}
