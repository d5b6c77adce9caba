//! The standby side: the partner's stream, applied in order to the shadow
//! table and installed in this unit's kernel (and HAProxy) ahead of time,
//! acknowledged only once installed. Nothing from a peer without the
//! partner's certificate is read (R5).

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use duet_net::conntrack::{Conntrack, Flow, IP_CT_TCP_FLAG_BE_LIBERAL, Tuple};
use duet_proto::replicator::v1 as pb;
use duet_repl::{Applied, Batch, Op};
use duet_runtime::shutdown::Shutdown;
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;
use tonic::{Request, Response, Status, Streaming};

use crate::haproxy;
use crate::model::{self, Key, Value};
use crate::state::{Shared, lock, now_ms};

/// The partner's side of the link, served on this unit.
#[derive(Debug)]
pub(crate) struct PeerServer {
    pub shared: Arc<Shared>,
    /// Ends the streams at shutdown, so that the server's graceful stop
    /// does not wait for a partner that keeps its stream open.
    pub stop: Shutdown,
}

/// Numbers the streams: a newer one ends the older.
static STREAMS: AtomicU64 = AtomicU64::new(0);

#[tonic::async_trait]
impl pb::replication_peer_service_server::ReplicationPeerService for PeerServer {
    type ReplicateStream = ReceiverStream<Result<pb::ReplicateResponse, Status>>;

    async fn replicate(
        &self,
        req: Request<Streaming<pb::ReplicateRequest>>,
    ) -> Result<Response<Self::ReplicateStream>, Status> {
        let checked = match &self.shared.tls {
            Some(t) => t.check_peer(&req),
            None => Err(Status::unauthenticated("this unit has no peer link configured")),
        };
        let checked = checked.and_then(|()| duet_proto::peer_protocol::refuse_unless_compatible(req.metadata()));
        if let Err(e) = checked {
            // With a link, check_peer counted it (by reason).
            if self.shared.tls.is_none() {
                self.shared.drops.refused_peers.fetch_add(1, Ordering::Relaxed);
            }
            lock(&self.shared.recv).last_error = format!("refused a peer: {}", e.message());
            return Err(e);
        }
        if self.shared.is_active() {
            return Err(Status::failed_precondition(
                "this unit is active: it sends its state and takes none from its partner",
            ));
        }
        let inbound = req.into_inner();
        let (tx, rx) = mpsc::channel(16);
        let no = STREAMS.fetch_add(1, Ordering::Relaxed) + 1;
        tokio::spawn(receive(Arc::clone(&self.shared), inbound, tx, no, self.stop.clone()));
        Ok(Response::new(ReceiverStream::new(rx)))
    }
}

fn response(shared: &Shared, ack: u64, need_resync: bool, error: String) -> Result<pb::ReplicateResponse, Status> {
    let held = lock(&shared.shadow);
    let flows = held.counted() as u64;
    let persistence = (held.len() - held.counted()) as u64;
    Ok(pb::ReplicateResponse { ack, need_resync, flows, persistence, error })
}

async fn receive(
    shared: Arc<Shared>,
    mut inbound: Streaming<pb::ReplicateRequest>,
    tx: mpsc::Sender<Result<pb::ReplicateResponse, Status>>,
    no: u64,
    mut stop: Shutdown,
) {
    let mut staging: Vec<(Key, Value, u64)> = Vec::new();
    let current = || STREAMS.load(Ordering::Relaxed) == no;
    loop {
        let next = tokio::select! {
            m = inbound.message() => m,
            () = stop.wait() => break,
        };
        let msg = match next {
            Ok(Some(m)) => m,
            Ok(None) => break,
            Err(e) => {
                lock(&shared.recv).last_error = format!("stream from the partner: {}", e.message());
                break;
            }
        };
        if !current() {
            return;
        }
        if shared.is_active() {
            let _ = tx.send(Err(Status::failed_precondition("this unit became active"))).await;
            break;
        }
        let reply = match msg.msg {
            Some(pb::replicate_request::Msg::Hello(h)) => {
                let mut r = lock(&shared.recv);
                r.connected = true;
                r.partner = h.unit;
                r.stream_id = h.stream_id;
                r.in_snapshot = true;
                r.last_error.clear();
                tracing::info!(partner = %r.partner, "replication stream from the partner");
                shared.readiness_changed.notify_one();
                None
            }
            Some(pb::replicate_request::Msg::Snapshot(c)) => {
                lock(&shared.recv).in_snapshot = true;
                let now = now_ms();
                let ops = decode(&shared, &c.changes, now);
                shared.changes_received.fetch_add(ops.len() as u64, Ordering::Relaxed);
                install(&shared, &ops, &[]).await;
                for op in ops {
                    if let Op::Upsert { key, value, expires_ms } = op {
                        staging.push((key, value, expires_ms));
                    }
                }
                if c.done {
                    let entries = std::mem::take(&mut staging);
                    let n = entries.len();
                    lock(&shared.shadow).load_snapshot(entries, c.seq, now_ms());
                    shared.entries_added.notify_one();
                    reconcile_kernel(&shared).await;
                    {
                        let mut r = lock(&shared.recv);
                        r.in_snapshot = false;
                        r.synced = true;
                    }
                    shared.readiness_changed.notify_one();
                    shared.installed.notify_waiters();
                    tracing::info!(entries = n, seq = c.seq, "bulk resync from the partner installed");
                    Some(response(&shared, c.seq, false, String::new()))
                } else {
                    None
                }
            }
            Some(pb::replicate_request::Msg::Batch(b)) => {
                let now = now_ms();
                let ops = decode(&shared, &b.changes, now);
                shared.changes_received.fetch_add(ops.len() as u64, Ordering::Relaxed);
                let batch = Batch { first: b.first, last: b.last, ops };
                let applied = lock(&shared.shadow).apply(&batch, now);
                shared.entries_added.notify_one();
                match applied {
                    Applied::Ok { ack, removed, .. } => {
                        let upserts: Vec<Op<Key, Value>> =
                            batch.ops.into_iter().filter(|op| matches!(op, Op::Upsert { .. })).collect();
                        install(&shared, &upserts, &removed).await;
                        Some(response(&shared, ack, false, String::new()))
                    }
                    Applied::Duplicate { ack } => Some(response(&shared, ack, false, String::new())),
                    Applied::Gap { expected, got } => {
                        tracing::warn!(expected, got, "changes missing from the partner's stream: asking for a resync");
                        Some(response(&shared, 0, true, format!("expected change {expected}, got {got}")))
                    }
                }
            }
            None => {
                shared.drops.malformed.fetch_add(1, Ordering::Relaxed);
                None
            }
        };
        if let Some(r) = reply
            && tx.send(r).await.is_err()
        {
            break;
        }
    }
    if current() {
        let mut r = lock(&shared.recv);
        r.connected = false;
        r.in_snapshot = false;
        tracing::info!(partner = %r.partner, "replication stream from the partner ended");
        drop(r);
        shared.readiness_changed.notify_one();
    }
    shared.installed.notify_waiters();
}

/// The changes of a message; malformed ones are counted and skipped.
fn decode(shared: &Shared, changes: &[pb::Change], now: u64) -> Vec<Op<Key, Value>> {
    let mut out = Vec::with_capacity(changes.len());
    for c in changes {
        match model::change_from(c, now) {
            Some(op) => out.push(op),
            None => {
                shared.drops.malformed.fetch_add(1, Ordering::Relaxed);
            }
        }
    }
    out
}

/// Puts `upserts` and the removal of `removed` into the kernel, the data
/// plane's persistence sets and HAProxy. Failures are counted and logged;
/// the shadow keeps the entry either way (a later refresh retries).
async fn install(shared: &Arc<Shared>, upserts: &[Op<Key, Value>], removed: &[Key]) {
    shared.installing.store(true, Ordering::Release);
    let mut flows: Vec<Flow> = Vec::new();
    let mut l4: Vec<duet_dataplane::PersistEntry> = Vec::new();
    let mut ha_cmds: HashMap<String, Vec<String>> = HashMap::new();
    let now = now_ms();
    for op in upserts {
        let Op::Upsert { key, value, expires_ms } = op else { continue };
        match (key, value) {
            (Key::Flow { .. }, Value::Flow(f)) => {
                let mut f = (**f).clone();
                // Sequence positions cannot be copied: this unit picks them
                // up from the next packets, without judging them by a
                // window it never saw (as conntrackd does).
                if let Some(t) = f.tcp.as_mut() {
                    t.flags_orig |= IP_CT_TCP_FLAG_BE_LIBERAL;
                    t.flags_reply |= IP_CT_TCP_FLAG_BE_LIBERAL;
                }
                flows.push(f);
            }
            (Key::Persist { table, key }, Value::Persist(server)) => {
                let ttl = expires_ms.saturating_sub(now);
                if let Some(t) = table.strip_prefix("haproxy:") {
                    if key.is_empty() || key.contains(|c: char| c.is_whitespace() || c == ';') {
                        shared.drops.malformed.fetch_add(1, Ordering::Relaxed);
                    } else if let Ok(id) = server.parse::<u32>() {
                        ha_cmds.entry(t.to_string()).or_default().push(haproxy::set_cmd(t, key, id));
                    }
                } else if table.starts_with("l4:")
                    && let Some(e) = model::l4_persist_from(table, key, server, ttl)
                {
                    l4.push(e);
                }
            }
            _ => {
                shared.drops.malformed.fetch_add(1, Ordering::Relaxed);
            }
        }
    }
    let mut deletes: Vec<(Tuple, u16)> = Vec::new();
    for k in removed {
        match k {
            Key::Flow { orig, zone } => deletes.push((*orig, *zone)),
            Key::Persist { table, key } => {
                if let Some(t) = table.strip_prefix("haproxy:")
                    && !key.contains(|c: char| c.is_whitespace() || c == ';')
                {
                    ha_cmds.entry(t.to_string()).or_default().push(haproxy::clear_cmd(t, key));
                }
                // The data plane's elements expire by their own timeout.
            }
        }
    }
    if shared.cfg.l4 && (!flows.is_empty() || !deletes.is_empty()) {
        let sh = Arc::clone(shared);
        let r = tokio::task::spawn_blocking(move || install_flows(&sh, &flows, &deletes)).await;
        match r {
            Ok(Ok(())) => {}
            Ok(Err(e)) => {
                shared.drops.install_failures.fetch_add(1, Ordering::Relaxed);
                tracing::warn!("installing flows: {e:#}");
                lock(&shared.recv).last_error = format!("installing flows: {e:#}");
            }
            Err(e) => tracing::error!("flow installer: {e}"),
        }
    }
    if shared.cfg.l7 && !l4.is_empty() {
        match tokio::task::spawn_blocking(move || duet_dataplane::install_persistence(&l4)).await {
            Ok(Ok(done)) => {
                if done.no_such_set > 0 {
                    tracing::debug!(missing = done.no_such_set, "persistence entries for services not programmed here");
                }
            }
            Ok(Err(e)) => {
                shared.drops.install_failures.fetch_add(1, Ordering::Relaxed);
                tracing::warn!("installing persistence entries: {e}");
            }
            Err(e) => tracing::error!("persistence installer: {e}"),
        }
    }
    if shared.cfg.l7
        && let Some(sock) = &shared.cfg.haproxy_socket
    {
        for (table, cmds) in ha_cmds {
            if !shared.cfg.haproxy_tables.contains(&table) {
                continue;
            }
            for chunk in cmds.chunks(100) {
                if let Err(e) = haproxy::run_many(sock, chunk).await {
                    shared.drops.haproxy_errors.fetch_add(1, Ordering::Relaxed);
                    tracing::warn!("HAProxy stick table {table}: {e:#}");
                }
            }
        }
    }
    shared.installing.store(false, Ordering::Release);
    shared.installed.notify_waiters();
}

/// Blocking: upserts and deletes in this unit's conntrack table.
fn install_flows(shared: &Shared, flows: &[Flow], deletes: &[(Tuple, u16)]) -> anyhow::Result<()> {
    let mut g = lock(&shared.conntrack);
    if g.is_none() {
        *g = Some(Conntrack::open()?);
    }
    let Some(ct) = g.as_mut() else { return Ok(()) };
    let r = (|| {
        if !flows.is_empty() {
            let report = ct.upsert(flows)?;
            if report.failed > 0 {
                shared.drops.install_failures.fetch_add(report.failed as u64, Ordering::Relaxed);
                let first: Vec<String> = report.errors.iter().take(3).map(ToString::to_string).collect();
                tracing::warn!(failed = report.failed, first = ?first, "the kernel refused some replicated flows");
            }
        }
        for (orig, zone) in deletes {
            ct.delete_in_zone(orig, *zone)?;
        }
        anyhow::Ok(())
    })();
    if r.is_err() {
        // A fresh socket next time.
        *g = None;
    }
    r
}

/// After a bulk resync: the kernel's flows of the replicated services that
/// the partner no longer has (or has bound elsewhere) are removed, and
/// those bound elsewhere installed again as the partner has them.
async fn reconcile_kernel(shared: &Arc<Shared>) {
    if !shared.cfg.l4 {
        return;
    }
    let filter = lock(&shared.filter).clone();
    if filter.is_empty() {
        return;
    }
    let sh = Arc::clone(shared);
    let r = tokio::task::spawn_blocking(move || {
        let mut g = lock(&sh.conntrack);
        if g.is_none() {
            *g = Some(Conntrack::open()?);
        }
        let Some(ct) = g.as_mut() else { return anyhow::Ok((0, 0)) };
        let here = ct.dump_filtered(|f| filter.wants(f))?;
        let shadow = lock(&sh.shadow);
        let mut stale = Vec::new();
        let mut rebind = Vec::new();
        for f in here {
            match shadow.get(&Key::Flow { orig: f.orig, zone: f.zone }).map(|h| &h.value) {
                None => stale.push((f.orig, f.zone)),
                Some(Value::Flow(want)) if want.reply != f.reply => {
                    stale.push((f.orig, f.zone));
                    rebind.push((**want).clone());
                }
                Some(_) => {}
            }
        }
        drop(shadow);
        for (orig, zone) in &stale {
            ct.delete_in_zone(orig, *zone)?;
        }
        if !rebind.is_empty() {
            ct.upsert(&rebind)?;
        }
        anyhow::Ok((stale.len(), rebind.len()))
    })
    .await;
    match r {
        Ok(Ok((0, 0))) => {}
        Ok(Ok((stale, rebound))) => tracing::info!(stale, rebound, "flows the partner does not have removed"),
        Ok(Err(e)) => tracing::warn!("reconciling the kernel's flows after a resync: {e:#}"),
        Err(e) => tracing::error!("reconcile task: {e}"),
    }
}

/// Drops expired entries from the shadow table (the kernel and HAProxy
/// expire their copies by their own timeouts) and from the local
/// persistence store, every second while either holds entries; while both
/// are empty it sleeps until one is added.
pub(crate) async fn expiry(shared: Arc<Shared>, mut stop: Shutdown) -> anyhow::Result<()> {
    loop {
        let empty = lock(&shared.shadow).is_empty() && lock(&shared.local).is_empty();
        tokio::select! {
            () = tokio::time::sleep(Duration::from_secs(1)), if !empty => {}
            // A permit stored since the look above is not lost.
            () = shared.entries_added.notified(), if empty => continue,
            () = stop.wait() => return Ok(()),
        }
        let now = now_ms();
        let gone = lock(&shared.shadow).expire(now);
        if !gone.is_empty() {
            tracing::debug!(entries = gone.len(), "replicated entries expired");
        }
        lock(&shared.local).retain(|_, (_, exp)| *exp > now);
        lock(&shared.tracked).persist.retain(|_, (_, exp)| *exp > now);
    }
}
