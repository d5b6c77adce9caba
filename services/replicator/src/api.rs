//! The local API: status for the operator (and `duetctl`), persistence
//! for proxies, and `WaitInstalled` for the takeover service (R4).

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use duet_proto::replicator::v1 as pb;
use duet_repl::Op;
use tonic::{Request, Response, Status};

use crate::model::{Key, Value};
use crate::state::{Shared, lock, now_ms};

/// Longest `WaitInstalled` wait.
const MAX_WAIT: Duration = Duration::from_secs(30);
/// Longest time to live a proxy may report.
const MAX_TTL_MS: u64 = 7 * 24 * 3600 * 1000;

#[derive(Debug)]
pub(crate) struct Api {
    pub shared: Arc<Shared>,
}

#[tonic::async_trait]
impl pb::replicator_service_server::ReplicatorService for Api {
    async fn get_status(&self, _: Request<pb::GetStatusRequest>) -> Result<Response<pb::GetStatusResponse>, Status> {
        let mut st = status(&self.shared);
        if let Some(d) = st.dataplane.as_mut()
            && d.generation > 0
            && let Ok(Ok(c)) = tokio::task::spawn_blocking(duet_dataplane::counters).await
        {
            d.dropped_invalid = c.dropped_invalid;
            d.dropped_untracked = c.dropped_untracked;
        }
        Ok(Response::new(st))
    }

    async fn report_persistence(
        &self,
        req: Request<pb::ReportPersistenceRequest>,
    ) -> Result<Response<pb::ReportPersistenceResponse>, Status> {
        let r = req.into_inner();
        // All or nothing: every entry is checked before any is taken.
        for (i, e) in r.entries.iter().enumerate() {
            let field = |f: &str| format!("entries[{i}].{f}");
            if e.table.is_empty() || e.table.starts_with("l4:") || e.table.starts_with("haproxy:") {
                return Err(Status::invalid_argument(format!(
                    "{}: \"{}\" is empty or reserved (l4:, haproxy: are read by duet itself); name the proxy's table",
                    field("table"),
                    e.table
                )));
            }
            if e.key.is_empty() || e.key.len() > 1024 {
                return Err(Status::invalid_argument(format!("{}: must be 1-1024 bytes", field("key"))));
            }
            if e.server.is_empty() || e.server.len() > 256 {
                return Err(Status::invalid_argument(format!("{}: must be 1-256 bytes", field("server"))));
            }
            if e.ttl_ms == 0 || e.ttl_ms > MAX_TTL_MS {
                return Err(Status::invalid_argument(format!(
                    "{}: {} is out of range: 1 ms to 7 days",
                    field("ttl_ms"),
                    e.ttl_ms
                )));
            }
        }
        let now = now_ms();
        let active = self.shared.is_active() && self.shared.l7();
        for e in &r.entries {
            let exp = now.saturating_add(e.ttl_ms);
            lock(&self.shared.local).insert((e.table.clone(), e.key.clone()), (e.server.clone(), exp));
            self.shared.entries_added.notify_one();
            if active {
                self.shared.push(Op::Upsert {
                    key: Key::Persist { table: e.table.clone(), key: e.key.clone() },
                    value: Value::Persist(e.server.clone()),
                    expires_ms: exp,
                });
            }
        }
        Ok(Response::new(pb::ReportPersistenceResponse { accepted: r.entries.len() as u64 }))
    }

    async fn list_persistence(
        &self,
        req: Request<pb::ListPersistenceRequest>,
    ) -> Result<Response<pb::ListPersistenceResponse>, Status> {
        let table = req.into_inner().table;
        let now = now_ms();
        let mut out = std::collections::BTreeMap::new();
        for ((t, k), (server, exp)) in lock(&self.shared.local).iter() {
            if (table.is_empty() || *t == table) && *exp > now {
                out.insert((t.clone(), k.clone()), (server.clone(), *exp));
            }
        }
        for ((t, k), (server, exp)) in lock(&self.shared.tracked).persist.iter() {
            if (table.is_empty() || *t == table) && *exp > now {
                out.insert((t.clone(), k.clone()), (server.clone(), *exp));
            }
        }
        if !self.shared.is_active() {
            for (k, h) in lock(&self.shared.shadow).iter() {
                if let (Key::Persist { table: t, key }, Value::Persist(server)) = (k, &h.value)
                    && (table.is_empty() || *t == table)
                    && h.expires_ms > now
                {
                    out.insert((t.clone(), key.clone()), (server.clone(), h.expires_ms));
                }
            }
        }
        let entries = out
            .into_iter()
            .map(|((table, key), (server, exp))| pb::PersistenceEntry {
                table,
                key,
                server,
                ttl_ms: exp.saturating_sub(now),
            })
            .collect();
        Ok(Response::new(pb::ListPersistenceResponse { entries }))
    }

    async fn wait_installed(
        &self,
        req: Request<pb::WaitInstalledRequest>,
    ) -> Result<Response<pb::WaitInstalledResponse>, Status> {
        let trace = duet_runtime::trace::extract(req.metadata());
        let wait = Duration::from_millis(req.into_inner().timeout_ms).min(MAX_WAIT);
        let t = Instant::now();
        let started = std::time::SystemTime::now();
        let deadline = tokio::time::Instant::now() + wait;
        let installed = loop {
            let notified = self.shared.installed.notified();
            if self.shared.installed_now() {
                break true;
            }
            if tokio::time::timeout_at(deadline, notified).await.is_err() {
                break self.shared.installed_now();
            }
        };
        let flows = lock(&self.shared.shadow).counted() as u64;
        // O3: the replicator's part of the role change's trace.
        if !trace.is_empty() {
            duet_runtime::trace::record(
                "duet.replicator.wait_installed",
                &trace,
                started,
                std::time::SystemTime::now(),
                vec![
                    opentelemetry::KeyValue::new("duet.state_installed", installed),
                    opentelemetry::KeyValue::new("duet.flows", i64::try_from(flows).unwrap_or(i64::MAX)),
                ],
            );
        }
        Ok(Response::new(pb::WaitInstalledResponse {
            installed,
            waited_us: u64::try_from(t.elapsed().as_micros()).unwrap_or(u64::MAX),
            flows,
        }))
    }
}

/// The service's status.
pub(crate) fn status(shared: &Shared) -> pb::GetStatusResponse {
    let active = shared.is_active();
    let (mode, partner_connected, resync) = if active {
        let s = lock(&shared.send);
        let resync = if s.resyncing { "sending" } else { "done" };
        ("sending", s.connected, if s.resyncs == 0 { "none" } else { resync })
    } else if shared.role().is_some() {
        let r = lock(&shared.recv);
        let resync = if r.in_snapshot {
            "receiving"
        } else if r.synced {
            "done"
        } else {
            "none"
        };
        ("receiving", r.connected, resync)
    } else {
        ("idle", false, "none")
    };
    let (flows, persistence) = if active {
        let t = lock(&shared.tracked);
        (t.flows.len() as u64, (t.persist.len() + lock(&shared.local).len()) as u64)
    } else {
        let s = lock(&shared.shadow);
        (s.counted() as u64, (s.len() - s.counted()) as u64)
    };
    let (last_seq, acked_seq, lag_changes) = if active {
        let o = lock(&shared.outbox);
        (o.last_seq(), o.acked(), o.lag())
    } else {
        let s = lock(&shared.shadow).last_seq();
        (s, s, 0)
    };
    let (lag_p50_us, lag_p99_us, lag_max_us) = lock(&shared.lag).percentiles();
    let lag_ms = if active { lock(&shared.lag).oldest_ms() } else { 0 };
    let (partner, last_error, last_ack, resyncs) = if active {
        let s = lock(&shared.send);
        (
            shared.tls.as_ref().map(|t| t.partner().to_string()).unwrap_or_default(),
            s.last_error.clone(),
            s.last_ack.map(prost_types::Timestamp::from),
            s.resyncs,
        )
    } else {
        let r = lock(&shared.recv);
        let name = if r.partner.is_empty() {
            shared.tls.as_ref().map(|t| t.partner().to_string()).unwrap_or_default()
        } else {
            r.partner.clone()
        };
        (name, r.last_error.clone(), None, 0)
    };
    let d = lock(&shared.dataplane).clone();
    let (ready, not_ready_reason) = shared.readiness();
    pb::GetStatusResponse {
        unit: shared.unit.clone(),
        mode: mode.into(),
        partner_connected,
        partner,
        flows,
        persistence,
        last_seq,
        acked_seq,
        lag_changes,
        lag_ms,
        last_ack,
        resync: resync.into(),
        resyncs,
        drops: shared.drops.map(shared.tls.as_ref()),
        ready,
        last_error,
        lag_p50_us,
        lag_p99_us,
        lag_max_us,
        changes_sent: shared.changes_sent.load(Ordering::Relaxed),
        changes_received: shared.changes_received.load(Ordering::Relaxed),
        dataplane: Some(pb::Dataplane {
            generation: d.generation,
            hash: d.hash,
            services: d.services,
            real_servers: d.real_servers,
            applied_at: d.applied_at.map(prost_types::Timestamp::from),
            error: d.error,
            dropped_invalid: 0,
            dropped_untracked: 0,
        }),
        not_ready_reason,
        l4_updates: shared.l4(),
        l7_updates: shared.l7(),
    }
}
