//! The session a unit keeps with its fleet's etcd: one task that holds a
//! lease with the unit's status key on it, watches the pair's head, and
//! carries out the unit's writes. It decides nothing: configsync turns its
//! events into generations (`duet_configsync`'s fleet follower).
//!
//! ```text
//!   configsync ── Command (publish, write, seed) ──►┌─────────┐── txn, put, lease, watch ──► etcd member k
//!        ▲                                          │ session │
//!        └──────────── Event (head, connected, lost)└─────────┘◄── watch events, keepalive answers
//! ```
//!
//! When a session fails (a member died, lost its leader, a stream ended)
//! the task reports it, answers writes with the failure while it waits,
//! and starts a new session on the next member after a backoff (100 ms
//! doubling to 2 s). The status key is put again on the new lease.

use std::time::Duration;

use duet_proto::config::v1::{Image, Provenance};
use etcd_client::{EventType, PutOptions, WatchOptions};
use tokio::sync::{mpsc, oneshot};
use tokio::task::JoinHandle;

use crate::client::{Fleet, FleetError, Settings, call};
use crate::record::{Head, UnitRecord};

/// What a unit's session needs.
#[derive(Debug, Clone)]
pub struct SessionSettings {
    pub fleet: Settings,
    pub pair: String,
    pub unit: String,
    /// The status key's lease: the key is gone this long after the unit.
    pub lease_ttl: Duration,
}

/// What the unit asks of the session.
#[derive(Debug)]
pub enum Command {
    /// Put the unit's status (again on every new lease).
    Publish(UnitRecord),
    /// [`Fleet::write`].
    Write {
        base: u64,
        content: Image,
        provenance: Provenance,
        keep: u64,
        reply: oneshot::Sender<Result<Image, FleetError>>,
    },
    /// [`Fleet::seed`].
    Seed { image: Image, reply: oneshot::Sender<Result<Option<Head>, FleetError>> },
    /// Revoke the lease (the status key goes at once) and stop.
    Stop,
}

/// What the session tells the unit.
#[derive(Debug, Clone, PartialEq)]
pub enum Event {
    /// A session started with `endpoint`.
    Connected { endpoint: String },
    /// The pair's head with its image (`None`: the pair has none in etcd),
    /// read when a session starts (`initial`) or when the head changed.
    Head { image: Option<Box<Image>>, initial: bool },
    /// The session ended; a new one is tried.
    Lost { error: String },
}

const BACKOFF_FIRST: Duration = Duration::from_millis(100);
const BACKOFF_MAX: Duration = Duration::from_secs(2);

/// Starts the session task; it stops when `commands` is closed (revoking
/// its lease, so the status key goes at once) or `events` is.
pub fn spawn(s: SessionSettings, commands: mpsc::Receiver<Command>, events: mpsc::Sender<Event>) -> JoinHandle<()> {
    tokio::spawn(run(s, commands, events))
}

async fn run(s: SessionSettings, mut commands: mpsc::Receiver<Command>, events: mpsc::Sender<Event>) {
    let mut member = 0usize;
    let mut backoff = BACKOFF_FIRST;
    let mut record: Option<UnitRecord> = None;
    loop {
        let endpoint = s.fleet.endpoints[member % s.fleet.endpoints.len().max(1)].clone();
        let started = tokio::time::Instant::now();
        let error = match session(&s, &endpoint, &mut record, &mut commands, &events).await {
            Ok(()) => return,
            Err(e) => e.to_string(),
        };
        tracing::warn!(target: "duet::fleet", %endpoint, "fleet session: {error}");
        if events.send(Event::Lost { error: error.clone() }).await.is_err() {
            return;
        }
        if started.elapsed() > Duration::from_secs(5) {
            backoff = BACKOFF_FIRST;
        }
        member += 1;
        let until = tokio::time::Instant::now() + backoff;
        loop {
            tokio::select! {
                () = tokio::time::sleep_until(until) => break,
                c = commands.recv() => match c {
                    None => return,
                    Some(Command::Stop) => return,
                Some(c) => refuse(c, &mut record, &error),
                },
            }
        }
        backoff = (backoff * 2).min(BACKOFF_MAX);
    }
}

/// Between sessions: writes fail at once, a status is kept for the next.
fn refuse(c: Command, record: &mut Option<UnitRecord>, error: &str) {
    let unavailable = || FleetError::NotConnected { last: error.to_owned() };
    match c {
        Command::Publish(r) => *record = Some(r),
        Command::Write { reply, .. } => drop(reply.send(Err(unavailable()))),
        Command::Seed { reply, .. } => drop(reply.send(Err(unavailable()))),
        Command::Stop => {}
    }
}

async fn session(
    s: &SessionSettings,
    endpoint: &str,
    record: &mut Option<UnitRecord>,
    commands: &mut mpsc::Receiver<Command>,
    events: &mpsc::Sender<Event>,
) -> Result<(), FleetError> {
    let fleet = Fleet::connect_to(&s.fleet, endpoint).await?;
    let t = fleet.timeout();
    let mut client = fleet.client();
    let ttl = i64::try_from(s.lease_ttl.as_secs().max(1)).unwrap_or(10);
    let lease = call("grant a lease", endpoint, t, client.lease_grant(ttl, None)).await?.id();
    let (mut keeper, mut keepalives) = call("keep the lease", endpoint, t, client.lease_keep_alive(lease)).await?;
    let unit_key = fleet.keys().unit(&s.pair, &s.unit);
    let put = |client: &mut etcd_client::Client, r: &UnitRecord| {
        let mut client = client.clone();
        let v = serde_json::to_string(r).unwrap_or_default();
        let key = unit_key.clone();
        async move {
            call("publish the status", endpoint, t, client.put(key, v, Some(PutOptions::new().with_lease(lease))))
                .await
                .map(drop)
        }
    };
    if let Some(r) = record.as_ref() {
        put(&mut client, r).await?;
    }
    let head_key = fleet.keys().head(&s.pair);
    let got = call("read the head", endpoint, t, client.get(head_key.as_str(), None)).await?;
    let revision = got.header().map_or(0, etcd_client::ResponseHeader::revision);
    let image = fleet.current(&s.pair).await?.map(Box::new);
    let opts = WatchOptions::new().with_start_revision(revision + 1);
    let mut watch = call("watch the head", endpoint, t, client.watch(head_key.as_str(), Some(opts))).await?;
    let ok = |e: Event| async move { events.send(e).await.is_ok() };
    if !ok(Event::Connected { endpoint: endpoint.to_owned() }).await || !ok(Event::Head { image, initial: true }).await
    {
        return Ok(());
    }
    tracing::info!(target: "duet::fleet", %endpoint, lease, pair = %s.pair, "fleet session started");
    let mut tick = tokio::time::interval(Duration::from_secs(u64::try_from(ttl).unwrap_or(10)) / 3);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    tick.tick().await;
    loop {
        tokio::select! {
            _ = tick.tick() => call("keep the lease", endpoint, t, keeper.keep_alive()).await?,
            k = keepalives.message() => match k {
                Ok(Some(r)) if r.ttl() > 0 => {}
                Ok(Some(_)) => return Err(FleetError::Unavailable { what: "keep the lease", endpoint: endpoint.to_owned(), detail: "the lease expired".into() }),
                Ok(None) => return Err(ended("the lease's keepalive stream", endpoint)),
                Err(e) => return Err(FleetError::Unavailable { what: "keep the lease", endpoint: endpoint.to_owned(), detail: e.to_string() }),
            },
            w = watch.message() => {
                let resp = match w {
                    Ok(Some(r)) if !r.canceled() => r,
                    Ok(Some(r)) => return Err(FleetError::Unavailable { what: "watch the head", endpoint: endpoint.to_owned(), detail: format!("cancelled: {}", r.cancel_reason()) }),
                    Ok(None) => return Err(ended("the head's watch", endpoint)),
                    Err(e) => return Err(FleetError::Unavailable { what: "watch the head", endpoint: endpoint.to_owned(), detail: e.to_string() }),
                };
                if resp.events().iter().any(|e| e.event_type() == EventType::Delete) {
                    tracing::warn!(target: "duet::fleet", key = %head_key, "the pair's head was deleted in etcd; this unit keeps its image");
                }
                // Only the newest head matters: read it (an image between
                // may already be gone).
                if resp.events().iter().any(|e| e.event_type() == EventType::Put) {
                    let image = fleet.current(&s.pair).await?.map(Box::new);
                    if !ok(Event::Head { image, initial: false }).await {
                        return Ok(());
                    }
                }
            },
            c = commands.recv() => match c {
                None | Some(Command::Stop) => {
                    // Stopping: the status key goes now, not a TTL later.
                    let _ = call("revoke the lease", endpoint, t, client.lease_revoke(lease)).await;
                    return Ok(());
                }
                Some(Command::Publish(r)) => {
                    put(&mut client, &r).await?;
                    *record = Some(r);
                }
                Some(Command::Write { base, content, provenance, keep, reply }) => {
                    let r = fleet.write(&s.pair, base, &content, provenance, keep).await;
                    let lost = matches!(&r, Err(e) if e.is_unavailable());
                    let _ = reply.send(r);
                    if lost {
                        return Err(ended("a write", endpoint));
                    }
                }
                Some(Command::Seed { image, reply }) => {
                    let _ = reply.send(fleet.seed(&s.pair, &image).await);
                }
            },
        }
    }
}

fn ended(what: &str, endpoint: &str) -> FleetError {
    FleetError::Unavailable { what: "session", endpoint: endpoint.to_owned(), detail: format!("{what} ended") }
}
