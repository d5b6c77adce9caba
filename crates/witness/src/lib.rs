//! The witness's etcd adapter (E14): talks to etcd for the election and
//! decides nothing.
//!
//! [`spawn`] starts one task that keeps a *session* with one etcd member at
//! a time: a lease (granted, or the previous one kept if it is still alive)
//! kept alive every third of its TTL, a read of the witness's key, and a
//! watch of it from the revision read. It carries out the core's
//! [`WitnessRequest`]s (beat, acquire, release, each a transaction) and
//! reports every answer, every change of the key and every failure as a
//! [`WitnessEvent`] with the `Instant` the request was sent. The rules that
//! turn these into roles are `duet_carp::witness`'s.
//!
//! ```text
//!   election driver ── WitnessRequest (bounded) ──►┌──────────┐── txn, lease, watch ──► etcd member k
//!         ▲                                        │ session  │
//!         └──────────── Report (bounded) ──────────└──────────┘◄── watch events, keepalive answers
//! ```
//!
//! Every call to etcd is bounded by [`Settings::op_timeout`]. When a
//! session fails (a member died, lost its leader, a stream ended) the task
//! reports it, answers requests with a failure while it waits, and starts a
//! new session on the next member after a backoff (100 ms doubling to 1 s).
//! Why a crate of its own: the etcd client and its generated code (its
//! build script runs `protoc`) stay out of the election's other code and
//! tests, and the adapter can be tested against a real etcd on its own.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use duet_carp::witness::{Expect, Holder, KeyState, RequestKind, WitnessEvent, WitnessRequest};
use etcd_client::{
    Certificate, Client, Compare, CompareOp, ConnectOptions, EventType, Identity, KeyValue, PutOptions, TlsOptions,
    Txn, TxnOp, TxnOpResponse, WatchOptions,
};
use tokio::sync::mpsc;
use tokio::task::JoinHandle;

/// What the adapter needs.
#[derive(Debug, Clone)]
pub struct Settings {
    /// etcd members as URLs (`https://host:port`, or `http://`).
    pub endpoints: Vec<String>,
    /// TLS: the CA's PEM and, for client authentication, the certificate and
    /// key PEMs. `None`: plaintext.
    pub tls: Option<TlsPems>,
    /// The witness's key.
    pub key: String,
    /// The name this unit writes in the key.
    pub unit: String,
    /// The lease TTL asked for (rounded up to whole seconds).
    pub lease_ttl: Duration,
    /// Bound on each call to etcd.
    pub op_timeout: Duration,
}

/// TLS material, read by the caller.
#[derive(Clone)]
pub struct TlsPems {
    pub ca: Vec<u8>,
    pub identity: Option<(Vec<u8>, Vec<u8>)>,
}

impl std::fmt::Debug for TlsPems {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "TlsPems {{ client certificate: {} }}", self.identity.is_some())
    }
}

/// What the adapter tells the driver.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Report {
    /// For the core.
    Event(WitnessEvent<Instant>),
    /// A session started with the member `endpoint` (for the status).
    Connected { endpoint: String },
    /// The lease time left of the key's holder when another unit holds it
    /// (`None`: unknown or not held), for the status.
    HolderTtl(Option<Duration>),
}

/// Why a session ended.
#[derive(Debug, thiserror::Error)]
pub enum SessionError {
    /// A call to etcd failed.
    #[error("{what} ({endpoint}): {source}")]
    Etcd { what: &'static str, endpoint: String, source: etcd_client::Error },
    /// A call to etcd did not answer in time.
    #[error("{what} ({endpoint}): no answer within {} ms", .timeout.as_millis())]
    Timeout { what: &'static str, endpoint: String, timeout: Duration },
    /// A stream (watch, keepalive) ended or was cancelled by etcd.
    #[error("{what} ({endpoint}) ended: {why}")]
    Ended { what: &'static str, endpoint: String, why: String },
    /// The lease expired before it could be kept alive.
    #[error("the lease expired ({endpoint}): a new one is granted")]
    LeaseExpired { endpoint: String },
}

/// Starts the adapter. It stops when `requests` is closed (the driver is
/// gone) or `reports` is.
pub fn spawn(
    settings: Settings,
    requests: mpsc::Receiver<WitnessRequest>,
    reports: mpsc::Sender<Report>,
) -> JoinHandle<()> {
    tokio::spawn(run(settings, requests, reports))
}

const BACKOFF_FIRST: Duration = Duration::from_millis(100);
const BACKOFF_MAX: Duration = Duration::from_secs(1);
/// How often the holder's lease TTL is read for the status.
const HOLDER_TTL_EVERY: Duration = Duration::from_secs(1);

async fn run(s: Settings, mut requests: mpsc::Receiver<WitnessRequest>, reports: mpsc::Sender<Report>) {
    let s = Arc::new(s);
    let mut backoff = BACKOFF_FIRST;
    let mut member = 0usize;
    let mut lease: Option<i64> = None;
    loop {
        let endpoint = s.endpoints[member % s.endpoints.len().max(1)].clone();
        let started = Instant::now();
        match session(&s, &endpoint, &mut lease, &mut requests, &reports).await {
            Ok(()) => return,
            Err(e) => {
                tracing::warn!(target: "duet::witness", "witness session: {e}");
                let ev = WitnessEvent::Failed { request: None, error: e.to_string() };
                if reports.send(Report::Event(ev)).await.is_err() {
                    return;
                }
            }
        }
        // A session that ran a while earns a quick retry.
        if started.elapsed() > Duration::from_secs(5) {
            backoff = BACKOFF_FIRST;
        }
        member += 1;
        if !fail_requests_for(backoff, &mut requests, &reports).await {
            return;
        }
        backoff = (backoff * 2).min(BACKOFF_MAX);
    }
}

/// Between sessions: every request fails at once (the core retries), for `d`.
async fn fail_requests_for(
    d: Duration,
    requests: &mut mpsc::Receiver<WitnessRequest>,
    reports: &mpsc::Sender<Report>,
) -> bool {
    let until = tokio::time::Instant::now() + d;
    loop {
        tokio::select! {
            () = tokio::time::sleep_until(until) => return true,
            r = requests.recv() => {
                let Some(r) = r else { return false };
                let ev = WitnessEvent::Failed { request: Some(r.kind()), error: "not connected to etcd".into() };
                if reports.send(Report::Event(ev)).await.is_err() {
                    return false;
                }
            }
        }
    }
}

/// A call to etcd, bounded.
async fn call<T>(
    what: &'static str,
    endpoint: &str,
    timeout: Duration,
    f: impl Future<Output = Result<T, etcd_client::Error>>,
) -> Result<T, SessionError> {
    match tokio::time::timeout(timeout, f).await {
        Ok(Ok(v)) => Ok(v),
        Ok(Err(source)) => Err(SessionError::Etcd { what, endpoint: endpoint.to_owned(), source }),
        Err(_) => Err(SessionError::Timeout { what, endpoint: endpoint.to_owned(), timeout }),
    }
}

fn options(s: &Settings) -> ConnectOptions {
    connect_options(s.op_timeout, s.tls.as_ref())
}

/// How duet connects to one etcd member: calls bounded by `op_timeout`,
/// HTTP/2 keepalives so a dead member shows within seconds, a leader
/// required (a member cut off from the others fails instead of serving
/// what it last knew), TLS when given. The witness and the fleet use it.
pub fn connect_options(op_timeout: Duration, tls: Option<&TlsPems>) -> ConnectOptions {
    let mut o = ConnectOptions::new()
        .with_connect_timeout(op_timeout)
        // A member that died or hangs shows on the streams within seconds.
        .with_keep_alive(Duration::from_secs(1), op_timeout.max(Duration::from_millis(500)))
        .with_keep_alive_while_idle(true)
        // A member cut off from the others fails the calls and the watch
        // instead of serving what it last knew.
        .with_require_leader(true);
    if let Some(t) = tls {
        let mut tls = TlsOptions::new().ca_certificate(Certificate::from_pem(&t.ca));
        if let Some((cert, key)) = &t.identity {
            tls = tls.identity(Identity::from_pem(cert, key));
        }
        o = o.with_tls(tls);
    }
    o
}

/// The key as this unit sees it.
fn classify(kv: Option<&KeyValue>, unit: &str, lease: i64) -> KeyState {
    match kv {
        None => KeyState::Absent,
        Some(kv) => {
            let holder = if kv.value() != unit.as_bytes() {
                Holder::Other(String::from_utf8_lossy(kv.value()).into_owned())
            } else if kv.lease() == lease {
                Holder::This
            } else {
                Holder::ThisStale
            };
            KeyState::Held { holder, mod_revision: kv.mod_revision() }
        }
    }
}

async fn session(
    s: &Arc<Settings>,
    endpoint: &str,
    lease: &mut Option<i64>,
    requests: &mut mpsc::Receiver<WitnessRequest>,
    reports: &mpsc::Sender<Report>,
) -> Result<(), SessionError> {
    let t = s.op_timeout;
    let mut client = call("connect", endpoint, t, Client::connect([endpoint], Some(options(s)))).await?;
    let send = |r: Report| async move { reports.send(r).await.is_ok() };

    // The lease: the previous one if it is still alive (a unit that holds
    // the key keeps it across a change of member), else a new one.
    let ttl_s = i64::try_from(s.lease_ttl.as_millis().div_ceil(1000)).unwrap_or(i64::MAX).max(1);
    let mut kept = None;
    if let Some(id) = *lease {
        let sent = Instant::now();
        let (mut keeper, mut stream) = call("lease keepalive", endpoint, t, client.lease_keep_alive(id)).await?;
        call("lease keepalive", endpoint, t, keeper.keep_alive()).await?;
        match call("lease keepalive", endpoint, t, stream.message()).await? {
            Some(r) if r.ttl() > 0 => kept = Some((id, keeper, stream, sent, r.ttl())),
            _ => {
                *lease = None;
                if !send(Report::Event(WitnessEvent::LeaseLost)).await {
                    return Ok(());
                }
            }
        }
    }
    let (id, mut keeper, mut keepalives, sent, ttl) = match kept {
        Some(k) => k,
        None => {
            let sent = Instant::now();
            let g = call("lease grant", endpoint, t, client.lease_grant(ttl_s, None)).await?;
            let (keeper, stream) = call("lease keepalive", endpoint, t, client.lease_keep_alive(g.id())).await?;
            (g.id(), keeper, stream, sent, g.ttl())
        }
    };
    *lease = Some(id);
    let ttl = Duration::from_secs(u64::try_from(ttl).unwrap_or(1));
    if !send(Report::Event(WitnessEvent::LeaseKept { sent, ttl })).await {
        return Ok(());
    }

    // The key now, then every change from there.
    let got = call("read the key", endpoint, t, client.get(s.key.as_str(), None)).await?;
    let revision = got.header().map_or(0, |h| h.revision());
    let key = classify(got.kvs().first(), &s.unit, id);
    let mut holder_lease = got.kvs().first().map_or(0, KeyValue::lease);
    if !send(Report::Event(WitnessEvent::Observed { key, revision })).await {
        return Ok(());
    }
    let opts = WatchOptions::new().with_start_revision(revision + 1);
    let mut watch = call("watch the key", endpoint, t, client.watch(s.key.as_str(), Some(opts))).await?;
    if !send(Report::Connected { endpoint: endpoint.to_owned() }).await {
        return Ok(());
    }
    tracing::info!(target: "duet::witness", %endpoint, lease = id, key = %s.key, "witness session started");

    let mut keepalive = tokio::time::interval((ttl / 3).max(Duration::from_millis(200)));
    keepalive.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    keepalive.tick().await;
    let mut holder_ttl = tokio::time::interval(HOLDER_TTL_EVERY);
    holder_ttl.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    // Keepalives sent and not answered yet, oldest first.
    let mut keepalive_sent: std::collections::VecDeque<Instant> = std::collections::VecDeque::new();
    let beating = Arc::new(AtomicBool::new(false));
    let ended = |what: &'static str, why: String| SessionError::Ended { what, endpoint: endpoint.to_owned(), why };
    loop {
        tokio::select! {
            r = requests.recv() => {
                let Some(r) = r else { return Ok(()) };
                if r == WitnessRequest::Beat && beating.swap(true, Ordering::AcqRel) {
                    // One in flight already: it moves the key as well.
                    continue;
                }
                let (c, s2, reports, beating) = (client.clone(), Arc::clone(s), reports.clone(), Arc::clone(&beating));
                let endpoint = endpoint.to_owned();
                tokio::spawn(async move {
                    let ev = request(c, &s2, &endpoint, id, r).await;
                    if r == WitnessRequest::Beat {
                        beating.store(false, Ordering::Release);
                    }
                    let _ = reports.send(Report::Event(ev)).await;
                });
            }
            _ = keepalive.tick() => {
                keepalive_sent.push_back(Instant::now());
                call("lease keepalive", endpoint, t, keeper.keep_alive()).await?;
                // A keepalive unanswered for a whole TTL: the stream is dead.
                if keepalive_sent.front().is_some_and(|s| s.elapsed() > ttl) {
                    return Err(ended("lease keepalive", "no answer for the lease TTL".into()));
                }
            }
            m = keepalives.message() => {
                let r = m.map_err(|source| SessionError::Etcd { what: "lease keepalive", endpoint: endpoint.to_owned(), source })?;
                let Some(r) = r else { return Err(ended("lease keepalive", "stream closed".into())) };
                let sent = keepalive_sent.pop_front().unwrap_or_else(Instant::now);
                if r.ttl() <= 0 {
                    *lease = None;
                    let _ = send(Report::Event(WitnessEvent::LeaseLost)).await;
                    return Err(SessionError::LeaseExpired { endpoint: endpoint.to_owned() });
                }
                let ttl = Duration::from_secs(u64::try_from(r.ttl()).unwrap_or(1));
                if !send(Report::Event(WitnessEvent::LeaseKept { sent, ttl })).await {
                    return Ok(());
                }
            }
            m = watch.message() => {
                let r = m.map_err(|source| SessionError::Etcd { what: "watch", endpoint: endpoint.to_owned(), source })?;
                let Some(r) = r else { return Err(ended("watch", "stream closed".into())) };
                if r.canceled() {
                    return Err(ended("watch", format!("cancelled by etcd (compacted at {})", r.compact_revision())));
                }
                for e in r.events() {
                    let Some(kv) = e.kv() else { continue };
                    let (key, revision) = match e.event_type() {
                        EventType::Put => (classify(Some(kv), &s.unit, id), kv.mod_revision()),
                        EventType::Delete => (KeyState::Absent, kv.mod_revision()),
                    };
                    holder_lease = if e.event_type() == EventType::Put { kv.lease() } else { 0 };
                    if !send(Report::Event(WitnessEvent::Observed { key, revision })).await {
                        return Ok(());
                    }
                }
            }
            _ = holder_ttl.tick() => {
                let ttl = if holder_lease != 0 && holder_lease != id {
                    call("holder's lease", endpoint, t, client.lease_time_to_live(holder_lease, None))
                        .await
                        .ok()
                        .and_then(|r| u64::try_from(r.ttl()).ok())
                        .map(Duration::from_secs)
                } else {
                    None
                };
                if !send(Report::HolderTtl(ttl)).await {
                    return Ok(());
                }
            }
        }
    }
}

/// One request of the core, as a transaction; the answer as an event.
async fn request(mut c: Client, s: &Settings, endpoint: &str, lease: i64, r: WitnessRequest) -> WitnessEvent<Instant> {
    let key = s.key.as_str();
    let put = TxnOp::put(key, s.unit.as_str(), Some(PutOptions::new().with_lease(lease)));
    let read = TxnOp::get(key, None);
    let txn = match r {
        WitnessRequest::Beat => Txn::new()
            .when([
                Compare::value(key, CompareOp::Equal, s.unit.as_str()),
                Compare::lease(key, CompareOp::Equal, lease),
            ])
            .and_then([put])
            .or_else([read]),
        // A key that does not exist has create_revision 0.
        WitnessRequest::Acquire(Expect::Absent) => {
            Txn::new().when([Compare::create_revision(key, CompareOp::Equal, 0)]).and_then([put]).or_else([read])
        }
        WitnessRequest::Acquire(Expect::ModRevision(rev)) => {
            Txn::new().when([Compare::mod_revision(key, CompareOp::Equal, rev)]).and_then([put]).or_else([read])
        }
        WitnessRequest::Release => Txn::new()
            .when([Compare::value(key, CompareOp::Equal, s.unit.as_str())])
            .and_then([TxnOp::delete(key, None)]),
    };
    let kind = r.kind();
    let sent = Instant::now();
    let resp = match call(kind.as_str(), endpoint, s.op_timeout, c.txn(txn)).await {
        Ok(r) => r,
        Err(e) => return WitnessEvent::Failed { request: Some(kind), error: e.to_string() },
    };
    let revision = resp.header().map_or(0, |h| h.revision());
    match (r, resp.succeeded()) {
        (WitnessRequest::Release, _) => WitnessEvent::Released,
        (WitnessRequest::Beat, true) => WitnessEvent::BeatAcked { sent, mod_revision: revision },
        (WitnessRequest::Acquire(_), true) => WitnessEvent::Acquired { sent, mod_revision: revision },
        (_, false) => {
            let kv = resp.op_responses().into_iter().find_map(|o| match o {
                TxnOpResponse::Get(g) => g.kvs().first().cloned(),
                _ => None,
            });
            let request = if kind == RequestKind::Beat { RequestKind::Beat } else { RequestKind::Acquire };
            WitnessEvent::Refused { request, key: classify(kv.as_ref(), &s.unit, lease), revision }
        }
    }
}
