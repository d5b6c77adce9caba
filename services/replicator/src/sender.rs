//! The active side: what changes (kernel conntrack events, a periodic
//! refresh, the persistence pollers) goes into the outbox, and the peer
//! link streams it to the partner: a bulk snapshot when the link is made
//! (or the partner asks, or the outbox overflowed), then numbered batches,
//! a window of them in flight, each acknowledged once installed.

use std::collections::{HashMap, HashSet, VecDeque};
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant, SystemTime};

use duet_net::conntrack::{CtEvent, EventKind, Flow, PROTO_TCP};
use duet_proto::replicator::v1 as pb;
use duet_proto::replicator::v1::replication_peer_service_client::ReplicationPeerServiceClient;
use duet_repl::Op;
use duet_runtime::shutdown::Shutdown;
use tokio::sync::mpsc;
use tonic::transport::Endpoint;

use crate::haproxy;
use crate::model::{self, Key, Value};
use crate::state::{Seen, Shared, lock, now_ms};

/// Batches in flight before waiting for an acknowledgement.
const WINDOW: usize = 8;
/// A batch not acknowledged in this time means the link is broken.
const ACK_TIMEOUT: Duration = Duration::from_secs(5);

fn flow_op(f: &Flow, now: u64) -> Op<Key, Value> {
    Op::Upsert {
        key: Key::Flow { orig: f.orig, zone: f.zone },
        value: Value::Flow(Box::new(f.clone())),
        expires_ms: now + u64::from(f.timeout_s) * 1000,
    }
}

/// Follows the kernel's conntrack events while this unit is active: the
/// flows the filter wants go to the outbox. A standby does not listen (its
/// own table fills with the partner's flows; decoding those would be
/// wasted): what happens before the subscription is in the snapshot dump
/// every new link starts with.
pub(crate) async fn watch_conntrack(shared: Arc<Shared>, mut stop: Shutdown) -> anyhow::Result<()> {
    loop {
        if !shared.until_active(&mut stop).await {
            return Ok(());
        }
        let mut events = duet_net::conntrack::events()
            .map_err(|e| anyhow::anyhow!("cannot follow the kernel's conntrack events (CAP_NET_ADMIN needed): {e}"))?;
        tracing::debug!(buffer = events.buffer_size(), "following conntrack events");
        // Anything between the role change and now: the next dump.
        shared.refresh_now.notify_one();
        // Subscribed before the first look at the role: no change missed.
        let mut roles = shared.role.subscribe();
        // The loop's checks see a demotion or a stop even while events
        // flood in (the select is biased to them).
        while shared.is_active() {
            if stop.fired() {
                return Ok(());
            }
            let ev = tokio::select! {
                biased;
                ev = events.next() => ev?,
                r = roles.changed() => {
                    if r.is_err() {
                        return Ok(());
                    }
                    continue;
                }
                () = stop.wait() => return Ok(()),
            };
            match ev {
                CtEvent::Overrun => {
                    shared.drops.overruns.fetch_add(1, Ordering::Relaxed);
                    tracing::warn!("conntrack events were lost (socket buffer full): refreshing from a dump");
                    shared.refresh_now.notify_one();
                }
                CtEvent::Flow(kind, flow) => {
                    if shared.l4() && lock(&shared.filter).wants(&flow) {
                        on_event(&shared, kind, flow);
                    }
                }
            }
        }
        tracing::debug!("no longer active: not following conntrack events");
    }
}

fn on_event(shared: &Shared, kind: EventKind, mut flow: Flow) {
    let key = (flow.orig, flow.zone);
    let now = now_ms();
    let mut tracked = lock(&shared.tracked);
    if kind == EventKind::Destroy {
        tracked.flows.remove(&key);
        drop(tracked);
        shared.push(Op::Delete { key: Key::Flow { orig: key.0, zone: key.1 } });
        return;
    }
    // Update events carry the TCP state only when it changed.
    if let Some(prev) = tracked.flows.get(&key) {
        if flow.tcp.is_none() {
            flow.tcp = prev.flow.tcp;
        }
        if flow.timeout_s == 0 {
            flow.timeout_s = prev.flow.timeout_s;
        }
    }
    if (flow.orig.proto == PROTO_TCP && flow.tcp.is_none()) || flow.timeout_s == 0 {
        // Not enough to build the entry: the next refresh dump has it.
        shared.drops.partial_events.fetch_add(1, Ordering::Relaxed);
        return;
    }
    let op = flow_op(&flow, now);
    tracked.flows.insert(key, Seen { flow, sent_ms: now });
    drop(tracked);
    shared.push(op);
}

/// On the active unit, every `refresh_interval` (and at once after lost
/// events or a new image): dumps the flows and sends what the partner's
/// copy lacks or would let expire too early, and deletions missed.
pub(crate) async fn refresh_flows(shared: Arc<Shared>, mut stop: Shutdown) -> anyhow::Result<()> {
    let every = shared.cfg.refresh_interval;
    let mut next = duet_net::timer::Timer::new();
    loop {
        next.set(Some(Instant::now() + every));
        tokio::select! {
            () = next.fired() => {}
            () = shared.refresh_now.notified() => {}
            () = stop.wait() => return Ok(()),
        }
        if !shared.is_active() || shared.cfg.peer.is_none() || !shared.l4() {
            continue;
        }
        if let Err(e) = refresh_once(&shared).await {
            tracing::warn!("flow refresh: {e:#}");
        }
    }
}

/// Dumps the kernel's flows the filter wants (in a blocking thread).
async fn dump(shared: &Arc<Shared>) -> anyhow::Result<Vec<Flow>> {
    let filter = lock(&shared.filter).clone();
    tokio::task::spawn_blocking(move || {
        let mut ct = duet_net::conntrack::Conntrack::open()?;
        anyhow::Ok(ct.dump_filtered(|f| filter.wants(f))?)
    })
    .await?
}

async fn refresh_once(shared: &Arc<Shared>) -> anyhow::Result<()> {
    let started = now_ms();
    let flows = dump(shared).await?;
    let every_ms = u64::try_from(shared.cfg.refresh_interval.as_millis()).unwrap_or(u64::MAX);
    let now = now_ms();
    let mut ops = Vec::new();
    let mut tracked = lock(&shared.tracked);
    let mut seen = HashSet::with_capacity(flows.len());
    for f in flows {
        let key = (f.orig, f.zone);
        seen.insert(key);
        let send = match tracked.flows.get(&key) {
            None => true,
            Some(prev) => {
                let p = &prev.flow;
                let changed = p.status != f.status
                    || p.mark != f.mark
                    || p.reply != f.reply
                    || p.tcp.map(|t| t.state) != f.tcp.map(|t| t.state);
                let left = (u64::from(p.timeout_s) * 1000).saturating_sub(now.saturating_sub(prev.sent_ms));
                let refreshed = u64::from(f.timeout_s) * 1000 > left + 2000;
                changed || (refreshed && left < 3 * every_ms)
            }
        };
        if send {
            ops.push(flow_op(&f, now));
            tracked.flows.insert(key, Seen { flow: f, sent_ms: now });
        }
    }
    // Gone from the kernel without a destroy event reaching us (lost in an
    // overrun); entries tracked after the dump began are left alone.
    let gone: Vec<_> =
        tracked.flows.iter().filter(|(k, s)| s.sent_ms < started && !seen.contains(k)).map(|(k, _)| *k).collect();
    for k in &gone {
        tracked.flows.remove(k);
        ops.push(Op::Delete { key: Key::Flow { orig: k.0, zone: k.1 } });
    }
    drop(tracked);
    if !ops.is_empty() {
        tracing::debug!(changes = ops.len(), "flow refresh");
    }
    for op in ops {
        shared.push(op);
    }
    Ok(())
}

/// On the active unit: reads the data plane's source persistence (every
/// second) and HAProxy's stick tables (every `haproxy_poll`), and sends
/// new, moved or refreshed entries.
pub(crate) async fn poll_persistence(shared: Arc<Shared>, mut stop: Shutdown) -> anyhow::Result<()> {
    let haproxy_every = shared.cfg.haproxy_poll;
    let l4_every = Duration::from_secs(1);
    let mut last_l4 = Instant::now() - l4_every;
    let mut warned: HashSet<String> = HashSet::new();
    // Without HAProxy only the data plane's table is read, every second.
    let every = if shared.cfg.haproxy_socket.is_some() { haproxy_every.min(l4_every) } else { l4_every };
    let mut next = duet_net::timer::Timer::new();
    loop {
        // A standby has nothing to read: it sleeps until it is active.
        if !shared.until_active(&mut stop).await {
            return Ok(());
        }
        // Nor has an active one without L7 updates, HAProxy or a service
        // with source persistence: it sleeps until the image or the
        // switches change.
        let source = lock(&shared.dataplane).source_persistence;
        let work = shared.cfg.peer.is_some() && shared.l7() && (shared.cfg.haproxy_socket.is_some() || source);
        if !work {
            tokio::select! {
                () = shared.persistence_changed.notified() => {}
                () = stop.wait() => return Ok(()),
            }
            continue;
        }
        next.set(Some(Instant::now() + every));
        tokio::select! {
            () = next.fired() => {}
            () = stop.wait() => return Ok(()),
        }
        if !shared.is_active() || shared.cfg.peer.is_none() || !shared.l7() {
            continue;
        }
        if last_l4.elapsed() >= l4_every {
            last_l4 = Instant::now();
            if let Err(e) = poll_l4(&shared).await
                && warned.insert(format!("l4 {e}"))
            {
                tracing::warn!("data plane persistence: {e:#}");
            }
        }
        if let Some(sock) = shared.cfg.haproxy_socket.clone() {
            for t in shared.cfg.haproxy_tables.clone() {
                match haproxy::show(&sock, &t).await {
                    Ok(entries) => {
                        let now = now_ms();
                        let read: Vec<_> = entries
                            .into_iter()
                            .map(|e| ((format!("haproxy:{t}"), e.key), e.server_id.to_string(), now + e.exp_ms))
                            .collect();
                        merge_persist(&shared, &format!("haproxy:{t}"), read, now);
                    }
                    Err(e) => {
                        shared.drops.haproxy_errors.fetch_add(1, Ordering::Relaxed);
                        if warned.insert(format!("haproxy {t}")) {
                            tracing::warn!("HAProxy stick table {t}: {e:#} (logged once)");
                        }
                    }
                }
            }
        }
    }
}

async fn poll_l4(shared: &Arc<Shared>) -> anyhow::Result<()> {
    // Nothing to read before the first image, or when no service has
    // source persistence (its entries left over expire by their TTL).
    {
        let d = lock(&shared.dataplane);
        if d.generation == 0 || !d.source_persistence {
            return Ok(());
        }
    }
    let entries = tokio::task::spawn_blocking(duet_dataplane::persistence).await??;
    let now = now_ms();
    // One table per service: entries of services no longer read are left
    // to expire.
    let mut by_table: HashMap<String, Vec<_>> = HashMap::new();
    for e in &entries {
        let (k, v, exp) = model::l4_persist(e, now);
        if let (Key::Persist { table, key }, Value::Persist(server)) = (k, v) {
            by_table.entry(table.clone()).or_default().push(((table, key), server, exp));
        }
    }
    let known: Vec<String> = {
        let t = lock(&shared.tracked);
        t.persist.keys().filter(|(t, _)| t.starts_with("l4:")).map(|(t, _)| t.clone()).collect()
    };
    for t in known {
        by_table.entry(t).or_default();
    }
    for (table, read) in by_table {
        merge_persist(shared, &table, read, now);
    }
    Ok(())
}

/// Compares what a table holds now with what was sent, and sends the
/// difference: new keys, keys bound to another server, keys whose expiry
/// moved on by more than a second (refreshed), keys gone early.
fn merge_persist(shared: &Shared, table: &str, read: Vec<((String, String), String, u64)>, now: u64) {
    let mut ops = Vec::new();
    let mut tracked = lock(&shared.tracked);
    let mut present = HashSet::with_capacity(read.len());
    for (key, server, exp) in read {
        present.insert(key.clone());
        let send = match tracked.persist.get(&key) {
            None => true,
            Some((s, e)) => *s != server || exp > e + 1000,
        };
        if send {
            ops.push(Op::Upsert {
                key: Key::Persist { table: key.0.clone(), key: key.1.clone() },
                value: Value::Persist(server.clone()),
                expires_ms: exp,
            });
            tracked.persist.insert(key, (server, exp));
        }
    }
    let gone: Vec<_> =
        tracked.persist.keys().filter(|(t, _)| t == table).filter(|k| !present.contains(*k)).cloned().collect();
    for k in gone {
        if let Some((_, exp)) = tracked.persist.remove(&k)
            && exp > now + 1000
        {
            ops.push(Op::Delete { key: Key::Persist { table: k.0, key: k.1 } });
        }
    }
    drop(tracked);
    for op in ops {
        shared.push(op);
    }
}

/// Keeps a link to the partner while this unit is active.
pub(crate) async fn run(shared: Arc<Shared>, mut stop: Shutdown) -> anyhow::Result<()> {
    let Some(peer) = shared.cfg.peer.clone() else { return Ok(()) };
    let Some(tls) = shared.tls.clone() else { return Ok(()) };
    let mut backoff = Duration::from_millis(100);
    loop {
        if !shared.until_active(&mut stop).await {
            return Ok(());
        }
        let url = format!("https://{}", peer.partner);
        let link = async {
            let ch = Endpoint::from_shared(url)?
                .tls_config(tls.client())?
                .connect_timeout(Duration::from_secs(1))
                .tcp_nodelay(true)
                // A partner gone without a word shows within 15 s
                // (grpc::PEER_KEEPALIVE + its timeout, as on configsync's
                // link); batches in flight time out sooner.
                .http2_keep_alive_interval(duet_runtime::grpc::PEER_KEEPALIVE)
                .keep_alive_timeout(duet_runtime::grpc::PEER_KEEPALIVE_TIMEOUT)
                .keep_alive_while_idle(true)
                .connect()
                .await?;
            stream(&shared, ch).await
        };
        let r = tokio::select! {
            r = link => r,
            () = stop.wait() => return Ok(()),
        };
        {
            let mut s = lock(&shared.send);
            if s.connected {
                tracing::warn!(partner = %peer.partner_name, "replication link to the partner lost");
            }
            s.connected = false;
            s.resyncing = false;
            if let Err(e) = &r {
                // Without the repeats of tonic's transport errors.
                s.last_error = duet_runtime::follow::error_chain(e.as_ref());
            }
        }
        match r {
            Ok(()) => backoff = Duration::from_millis(100),
            Err(e) => tracing::debug!("replication link: {}", duet_runtime::follow::error_chain(e.as_ref())),
        }
        tokio::select! {
            () = tokio::time::sleep(backoff) => {}
            () = stop.wait() => return Ok(()),
        }
        backoff = (backoff * 2).min(Duration::from_secs(1));
    }
}

/// One stream to the partner: hello, snapshot, then batches. Returns when
/// this unit is no longer active; an error when the link broke.
async fn stream(shared: &Arc<Shared>, ch: tonic::transport::Channel) -> anyhow::Result<()> {
    wait_for_image(shared).await?;
    let mut client = ReplicationPeerServiceClient::new(ch)
        .max_decoding_message_size(crate::MAX_MESSAGE)
        .max_encoding_message_size(crate::MAX_MESSAGE);
    let (tx, rx) = mpsc::channel::<pb::ReplicateRequest>(4);
    let stream_id = rand_id();
    let hello = pb::ReplicateRequest {
        msg: Some(pb::replicate_request::Msg::Hello(pb::Hello { unit: shared.unit.clone(), stream_id })),
    };
    tx.send(hello).await?;
    let mut call = tonic::Request::new(tokio_stream::wrappers::ReceiverStream::new(rx));
    duet_proto::peer_protocol::stamp(call.metadata_mut());
    let mut responses = client.replicate(call).await?.into_inner();
    {
        let mut s = lock(&shared.send);
        s.connected = true;
        s.last_error.clear();
    }
    tracing::info!(partner = %shared.tls.as_ref().map(|t| t.partner()).unwrap_or_default(), "replication link up");
    send_snapshot(shared, &tx).await?;
    let mut inflight: VecDeque<(u64, Instant)> = VecDeque::new();
    let batch_max = shared.cfg.batch_max;
    let mut roles = shared.role.subscribe();
    loop {
        if !shared.is_active() {
            return Ok(());
        }
        if shared.resync_wanted.swap(false, Ordering::Relaxed) {
            send_snapshot(shared, &tx).await?;
            inflight.clear();
        }
        while inflight.len() < WINDOW {
            let Some(b) = lock(&shared.outbox).next_batch(batch_max) else { break };
            let now = now_ms();
            let changes: Vec<pb::Change> = b.ops.iter().map(|op| model::change_pb(op, now)).collect();
            shared.changes_sent.fetch_add(changes.len() as u64, Ordering::Relaxed);
            let msg = pb::ReplicateRequest {
                msg: Some(pb::replicate_request::Msg::Batch(pb::Batch { first: b.first, last: b.last, changes })),
            };
            tx.send(msg).await?;
            inflight.push_back((b.last, Instant::now()));
        }
        let ack_deadline = inflight.front().map(|(_, t)| *t + ACK_TIMEOUT);
        tokio::select! {
            r = responses.message() => {
                let Some(resp) = r? else { anyhow::bail!("the partner closed the replication stream") };
                if !resp.error.is_empty() {
                    lock(&shared.send).last_error = format!("partner: {}", resp.error);
                }
                if resp.need_resync {
                    tracing::info!("the partner missed changes: resyncing it in bulk");
                    shared.resync_wanted.store(true, Ordering::Relaxed);
                } else {
                    lock(&shared.outbox).ack(resp.ack);
                    lock(&shared.lag).acked(resp.ack);
                    inflight.retain(|(last, _)| *last > resp.ack);
                    let mut s = lock(&shared.send);
                    s.last_ack = Some(SystemTime::now());
                    s.resyncing = false;
                }
            }
            () = shared.outbox_changed.notified(), if inflight.len() < WINDOW => {}
            () = shared.resync_now.notified() => {}
            r = roles.changed() => if r.is_err() { return Ok(()) },
            // Every wake-up above is an event that keeps its permit or its
            // version; this is a bound, not a poll.
            () = tokio::time::sleep(Duration::from_secs(30)) => {}
            () = async {
                match ack_deadline {
                    Some(d) => tokio::time::sleep_until(d.into()).await,
                    None => std::future::pending().await,
                }
            } => anyhow::bail!("the partner acknowledged nothing for {} s", ACK_TIMEOUT.as_secs()),
        }
    }
}

/// How long a new link waits for the configuration image before it gives
/// up (and the link loop tries again after its backoff).
const IMAGE_WAIT: Duration = Duration::from_secs(5);

/// A snapshot reads the kernel through the filter the image makes (the
/// shared addresses and the virtual services). A replicator that has just
/// started and become active before its image arrived would send an empty
/// snapshot, and the partner would remove every flow it holds as one the
/// active no longer has: connections a later failover needs. So a link
/// waits for the image (at most [`IMAGE_WAIT`]) before its snapshot.
async fn wait_for_image(shared: &Shared) -> anyhow::Result<()> {
    if shared.cfg.configsync_listen.is_none() {
        // No configsync on this unit: no image will come.
        return Ok(());
    }
    let start = Instant::now();
    while lock(&shared.filter).is_empty() {
        if start.elapsed() >= IMAGE_WAIT {
            anyhow::bail!(
                "no configuration image after {} s: no snapshot is sent without one (it would empty the partner's \
                 table); is configsync running?",
                IMAGE_WAIT.as_secs()
            );
        }
        if !shared.is_active() {
            return Ok(());
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    Ok(())
}

fn rand_id() -> u64 {
    let t = SystemTime::now().duration_since(SystemTime::UNIX_EPOCH).map_or(0, |d| d.as_nanos());
    (t as u64) ^ (u64::from(std::process::id()) << 40)
}

/// The whole state, in chunks, then `done` with the number the stream
/// continues from. The outbox is emptied first, so a change made while
/// the snapshot is read is sent again after it (harmless: upserts and
/// deletes are idempotent).
async fn send_snapshot(shared: &Arc<Shared>, tx: &mpsc::Sender<pb::ReplicateRequest>) -> anyhow::Result<()> {
    let t = Instant::now();
    {
        let mut s = lock(&shared.send);
        s.resyncing = true;
        s.resyncs += 1;
    }
    shared.resync_wanted.store(false, Ordering::Relaxed);
    let seq = lock(&shared.outbox).reset_after_snapshot();
    lock(&shared.lag).reset_pending();
    let now = now_ms();
    let flows = if shared.l4() { dump(shared).await? } else { Vec::new() };
    {
        let mut tracked = lock(&shared.tracked);
        tracked.flows.clear();
        for f in &flows {
            tracked.flows.insert((f.orig, f.zone), Seen { flow: f.clone(), sent_ms: now });
        }
    }
    let mut persist: Vec<Op<Key, Value>> = Vec::new();
    if shared.l7() {
        let tracked = lock(&shared.tracked);
        let local = lock(&shared.local);
        for ((table, key), (server, exp)) in tracked.persist.iter().chain(local.iter()) {
            if *exp > now {
                persist.push(Op::Upsert {
                    key: Key::Persist { table: table.clone(), key: key.clone() },
                    value: Value::Persist(server.clone()),
                    expires_ms: *exp,
                });
            }
        }
    }
    let total = flows.len() + persist.len();
    // Converted chunk by chunk: the whole table is never held twice.
    let chunk = shared.cfg.batch_max.max(1);
    let mut next_flow = 0;
    let mut rest = persist.into_iter();
    loop {
        let mut part: Vec<pb::Change> = Vec::with_capacity(chunk.min(total));
        while part.len() < chunk && next_flow < flows.len() {
            part.push(model::change_pb(&flow_op(&flows[next_flow], now), now));
            next_flow += 1;
        }
        while part.len() < chunk
            && let Some(op) = rest.next()
        {
            part.push(model::change_pb(&op, now));
        }
        let done = next_flow >= flows.len() && rest.len() == 0;
        shared.changes_sent.fetch_add(part.len() as u64, Ordering::Relaxed);
        let msg = pb::ReplicateRequest {
            msg: Some(pb::replicate_request::Msg::Snapshot(pb::SnapshotChunk { changes: part, done, seq })),
        };
        tx.send(msg).await?;
        if done {
            break;
        }
    }
    tracing::info!(entries = total, seq, took_ms = t.elapsed().as_millis() as u64, "bulk resync sent to the partner");
    Ok(())
}
