//! The operator's API, `duet.configsync.v1.ConfigSyncService`. gRPC status
//! codes are chosen here: a standby write is FAILED_PRECONDITION naming the
//! active unit, a stale base ABORTED, an invalid image INVALID_ARGUMENT
//! listing every field.

use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use duet_image::change::{Change, section};
use duet_proto::config::v1::Backup;
use duet_proto::configsync::v1 as pb;
use duet_proto::configsync::v1::apply_config_request::Change as PbChange;
use duet_runtime::shutdown::Shutdown;
use futures::Stream;
use prost::Message;
use tokio::sync::{broadcast, mpsc, oneshot};
use tokio_stream::wrappers::ReceiverStream;
use tonic::{Request, Response, Status};

use crate::engine::{Committed, Refusal};
use crate::peer::Pushed;
use crate::{Shared, lock};

#[derive(Debug)]
pub(crate) struct Api {
    pub shared: Arc<Shared>,
    pub shutdown: Shutdown,
}

fn status(r: &Refusal) -> Status {
    let m = r.to_string();
    match r {
        Refusal::NotActive { .. } | Refusal::WrongKind(_) | Refusal::Overtaken { .. } => Status::failed_precondition(m),
        Refusal::RoleUnknown | Refusal::StoreUnavailable(_) => Status::unavailable(m),
        Refusal::StaleBase { .. } => Status::aborted(m),
        Refusal::Invalid(_) => Status::invalid_argument(m),
        Refusal::NoSpace(_) => Status::resource_exhausted(m),
        Refusal::Failed(_) => Status::internal(m),
    }
}

/// With the image in etcd, a stale base is another writer's win there:
/// said as etcd's refusal is.
fn overtaken(r: Refusal) -> Refusal {
    match r {
        Refusal::StaleBase { base, current } if base < current => Refusal::Overtaken { base, newer: current },
        r => r,
    }
}

fn gen_info(g: &duet_image::store::GenInfo) -> pb::GenerationInfo {
    pb::GenerationInfo {
        generation: g.generation,
        hash: g.hash.clone(),
        provenance: g.provenance.clone(),
        origin: g.provenance.as_ref().map(|p| p.origin.clone()).unwrap_or_default(),
    }
}

impl Api {
    fn done(&self, r: Result<Committed, Refusal>) -> Result<(u64, String), Status> {
        let c = r.map_err(|e| status(&e))?;
        let out = (c.image.generation, c.image.hash.clone());
        self.shared.committed(c);
        Ok(out)
    }
}

type GenStream = Pin<Box<dyn Stream<Item = Result<pb::WatchGenerationsResponse, Status>> + Send>>;

#[tonic::async_trait]
impl pb::config_sync_service_server::ConfigSyncService for Api {
    async fn get_config(&self, req: Request<pb::GetConfigRequest>) -> Result<Response<pb::GetConfigResponse>, Status> {
        let e = self.shared.engine.lock().await;
        let img =
            section(e.store.current(), &req.get_ref().section).map_err(|p| Status::invalid_argument(p.to_string()))?;
        Ok(Response::new(pb::GetConfigResponse { image: Some(img) }))
    }

    async fn apply_config(
        &self,
        req: Request<pb::ApplyConfigRequest>,
    ) -> Result<Response<pb::ApplyConfigResponse>, Status> {
        let r = req.into_inner();
        let change = match r.change {
            Some(PbChange::Image(i)) => Change::Replace(i),
            Some(PbChange::Ha(h)) => Change::Ha(h),
            Some(PbChange::Interfaces(i)) => Change::Interfaces(i.interfaces),
            Some(PbChange::UpsertVirtualService(v)) => Change::UpsertVirtualService(v),
            Some(PbChange::DeleteVirtualService(n)) => Change::DeleteVirtualService(n),
            None => {
                return Err(Status::invalid_argument(
                    "change: missing; set one of image, ha, interfaces, upsert_virtual_service, delete_virtual_service",
                ));
            }
        };
        let mut engine = self.shared.engine.lock().await;
        if engine.store.current().generation == 0 && !matches!(change, Change::Replace(_)) {
            // A partial change needs an image to change: the unit makes
            // generation 1 from its file (or gets it from the partner)
            // right after it starts.
            return Err(Status::unavailable(
                "there is no configuration image yet (generation 0): the unit makes one from its file or gets \
                 it from the partner just after it starts; retry in a moment, or apply a whole image",
            ));
        }
        let outcome = match self.shared.fleet.as_ref().filter(|f| f.is_store()) {
            None => engine.apply(r.base_generation, change, &r.comment),
            // O7: written to etcd first, then taken here.
            Some(link) => match engine.draft_apply(r.base_generation, change).map_err(overtaken) {
                Ok(Some(content)) => {
                    crate::fleet::write(link, &mut engine, r.base_generation, content, "committed", &r.comment)
                        .await
                        .map(Some)
                }
                other => other.map(|_| None),
            },
        };
        let (current, current_hash) = (engine.store.current().generation, engine.store.current().hash.clone());
        drop(engine);
        match outcome {
            Ok(None) => Ok(Response::new(pb::ApplyConfigResponse {
                generation: current,
                hash: current_hash,
                synced: false,
                unchanged: true,
            })),
            Ok(Some(c)) => {
                let (generation, hash) = self.done(Ok(c))?;
                Ok(Response::new(pb::ApplyConfigResponse { generation, hash, synced: false, unchanged: false }))
            }
            Err(e) => Err(status(&e)),
        }
    }

    async fn check_config(
        &self,
        req: Request<pb::CheckConfigRequest>,
    ) -> Result<Response<pb::CheckConfigResponse>, Status> {
        let img = req.into_inner().image.unwrap_or_default();
        let ha_unit = self.shared.engine.lock().await.ha_unit;
        let problems = match duet_image::validate(&img, ha_unit) {
            Ok(()) => Vec::new(),
            Err(p) => p.into_iter().map(|p| pb::FieldProblem { field: p.field, message: p.message }).collect(),
        };
        Ok(Response::new(pb::CheckConfigResponse {
            valid: problems.is_empty(),
            problems,
            hash: duet_image::content_hash(&img),
        }))
    }

    type WatchGenerationsStream = GenStream;

    async fn watch_generations(&self, _: Request<pb::WatchGenerationsRequest>) -> Result<Response<GenStream>, Status> {
        let mut rx = self.shared.generations.subscribe();
        let first = self.shared.engine.lock().await.store.current().clone();
        let (tx, out) = mpsc::channel(64);
        let mut stop = self.shutdown.clone();
        tokio::spawn(async move {
            let msg = |i: &duet_proto::config::v1::Image, origin: &str, trace: &str| pb::WatchGenerationsResponse {
                generation: i.generation,
                hash: i.hash.clone(),
                provenance: i.provenance.clone(),
                origin: origin.to_string(),
                image: Some(i.clone()),
                traceparent: trace.to_owned(),
            };
            let mut last = first.generation;
            if tx.send(Ok(msg(&first, "current", ""))).await.is_err() {
                return;
            }
            loop {
                let c = tokio::select! {
                    r = rx.recv() => r,
                    () = tx.closed() => return,
                    () = stop.wait() => return,
                };
                match c {
                    Ok(c) if c.image.generation <= last && c.origin != "synced" => continue,
                    Ok(c) => {
                        last = c.image.generation;
                        if tx.send(Ok(msg(&c.image, c.origin, &c.trace))).await.is_err() {
                            return;
                        }
                    }
                    Err(broadcast::error::RecvError::Lagged(n)) => {
                        let _ = tx.send(Err(Status::data_loss(format!("{n} generations missed: watch again")))).await;
                        return;
                    }
                    Err(broadcast::error::RecvError::Closed) => return,
                }
            }
        });
        Ok(Response::new(Box::pin(ReceiverStream::new(out))))
    }

    async fn force_update(
        &self,
        _: Request<pb::ForceUpdateRequest>,
    ) -> Result<Response<pb::ForceUpdateResponse>, Status> {
        {
            let e = self.shared.engine.lock().await;
            if !e.ha_unit {
                return Err(Status::failed_precondition(
                    "this unit is not in an HA mode: there is no partner to update",
                ));
            }
            e.writable().map_err(|r| status(&r))?;
        }
        let unreachable = |why: &str| {
            let addr = self
                .shared
                .cfg
                .peer
                .as_ref()
                .map(|p| format!("{} at {}", p.partner_name, p.partner))
                .unwrap_or_default();
            Status::unavailable(format!(
                "the partner {addr} is not reachable ({why}): a force update needs both units up and talking; check the peer link"
            ))
        };
        if !self.shared.partner_reachable() {
            let why = {
                let p = lock(&self.shared.partner);
                if p.last_error.is_empty() { "no answer yet".to_string() } else { p.last_error.clone() }
            };
            return Err(unreachable(&why));
        }
        let (tx, rx) = oneshot::channel();
        self.shared.force.send(tx).await.map_err(|_| Status::unavailable("configsync is stopping"))?;
        let r = tokio::time::timeout(self.shared.cfg.push_timeout * 3 + Duration::from_secs(1), rx)
            .await
            .map_err(|_| Status::deadline_exceeded("the force update did not finish in time"))?
            .map_err(|_| Status::unavailable("configsync is stopping"))?;
        match r {
            Ok(Pushed { generation, hash, took }) => Ok(Response::new(pb::ForceUpdateResponse {
                generation,
                hash,
                took_ms: u64::try_from(took.as_millis()).unwrap_or(u64::MAX),
            })),
            Err(e) => Err(unreachable(&e.to_string())),
        }
    }

    async fn backup(&self, _: Request<pb::BackupRequest>) -> Result<Response<pb::BackupResponse>, Status> {
        let e = self.shared.engine.lock().await;
        let b = e.backup();
        Ok(Response::new(pb::BackupResponse { generation: e.store.current().generation, backup: b.encode_to_vec() }))
    }

    async fn restore(&self, req: Request<pb::RestoreRequest>) -> Result<Response<pb::RestoreResponse>, Status> {
        let r = req.into_inner();
        let b = Backup::decode(r.backup.as_slice()).ok().filter(|b| b.image.is_some()).ok_or_else(|| {
            Status::invalid_argument("backup: not a duet configuration backup (make one with `duetctl config backup`)")
        })?;
        let mut engine = self.shared.engine.lock().await;
        let outcome = match self.shared.fleet.as_ref().filter(|f| f.is_store()) {
            None => engine.restore(r.base_generation, &b),
            Some(link) => match engine.draft_restore(r.base_generation, &b).map_err(overtaken) {
                Ok(content) => {
                    let why = format!("restored from a backup of {}", b.unit);
                    crate::fleet::write(link, &mut engine, r.base_generation, content, "restored", &why).await
                }
                Err(e) => Err(e),
            },
        };
        drop(engine);
        let (generation, hash) = self.done(outcome)?;
        Ok(Response::new(pb::RestoreResponse { generation, hash }))
    }

    async fn history(&self, _: Request<pb::HistoryRequest>) -> Result<Response<pb::HistoryResponse>, Status> {
        let e = self.shared.engine.lock().await;
        Ok(Response::new(pb::HistoryResponse {
            generations: e.store.history().iter().map(gen_info).collect(),
            backups: e
                .store
                .backups()
                .into_iter()
                .map(|b| pb::NamedBackup {
                    name: b.name,
                    reason: b.reason,
                    created_at: None,
                    generations: b.generations.iter().map(gen_info).collect(),
                })
                .collect(),
        }))
    }

    async fn rollback(&self, req: Request<pb::RollbackRequest>) -> Result<Response<pb::RollbackResponse>, Status> {
        let r = req.into_inner();
        let mut engine = self.shared.engine.lock().await;
        let outcome = match self.shared.fleet.as_ref().filter(|f| f.is_store()) {
            None => engine.rollback(r.base_generation, r.to_generation),
            Some(link) => match engine.draft_rollback(r.base_generation, r.to_generation).map_err(overtaken) {
                Ok(content) => {
                    let why = format!("rolled back to generation {}", r.to_generation);
                    crate::fleet::write(link, &mut engine, r.base_generation, content, "rolled-back", &why).await
                }
                Err(e) => Err(e),
            },
        };
        drop(engine);
        let (generation, hash) = self.done(outcome)?;
        Ok(Response::new(pb::RollbackResponse { generation, hash }))
    }

    async fn get_local(&self, _: Request<pb::GetLocalRequest>) -> Result<Response<pb::GetLocalResponse>, Status> {
        let e = self.shared.engine.lock().await;
        Ok(Response::new(pb::GetLocalResponse { local: Some(e.store.local()) }))
    }

    async fn set_local(&self, req: Request<pb::SetLocalRequest>) -> Result<Response<pb::SetLocalResponse>, Status> {
        let l = req.into_inner().local.unwrap_or_default();
        self.shared.engine.lock().await.set_local(&l).map_err(|e| status(&e))?;
        Ok(Response::new(pb::SetLocalResponse {}))
    }

    async fn get_status(&self, _: Request<pb::GetStatusRequest>) -> Result<Response<pb::GetStatusResponse>, Status> {
        let e = self.shared.engine.lock().await;
        let cur = e.store.current();
        let p = lock(&self.shared.partner).clone();
        let reachable = p.reachable();
        let local = pb::UnitConfigState {
            unit: e.unit.clone(),
            address: self.shared.unit_address.clone(),
            role: e.role.map_or(0, duet_proto::convert::role_i32),
            generation: cur.generation,
            hash: cur.hash.clone(),
            known: true,
        };
        let peer = self.shared.cfg.peer.as_ref();
        let partner = pb::UnitConfigState {
            unit: peer.map(|p| p.partner_name.clone()).unwrap_or_default(),
            address: peer.map(|p| p.partner.ip().to_string()).unwrap_or_default(),
            role: p.role,
            generation: p.generation.unwrap_or(0),
            hash: p.hash.clone(),
            known: p.generation.is_some(),
        };
        let in_sync = p.in_sync(local.generation, &local.hash);
        let mut warnings = Vec::new();
        if peer.is_some() && !reachable {
            warnings.push(format!("the partner is not reachable over the peer link: {}", p.last_error));
        }
        if let Some(t) = &self.shared.tls
            && t.refusals().total() > 0
        {
            warnings.push(format!(
                "the peer link refused {} connection(s): {} (see the log for who)",
                t.refusals().total(),
                t.refusals().summary()
            ));
        }
        if partner.known && !in_sync {
            warnings.push(format!(
                "the units differ: this unit holds generation {} ({}), the partner {} ({})",
                local.generation,
                &local.hash[..12.min(local.hash.len())],
                partner.generation,
                &partner.hash[..12.min(partner.hash.len())]
            ));
        }
        if let Some(w) = self.shared.fleet.as_ref().and_then(crate::fleet::FleetLink::warning) {
            warnings.push(w);
        }
        let backups: Vec<String> = e
            .store
            .backups()
            .into_iter()
            .map(|b| b.name)
            .filter(|n| n.starts_with("split-") || n.starts_with("fleet-"))
            .collect();
        if !backups.is_empty() {
            warnings.push(format!("{} split backup(s) kept: see `duetctl config history`", backups.len()));
        }
        Ok(Response::new(pb::GetStatusResponse {
            local: Some(local),
            partner: Some(partner),
            partner_reachable: reachable,
            in_sync,
            last_sync: p.last_sync.map(|(t, _)| prost_types::Timestamp::from(t)),
            last_sync_ms: p.last_sync.map_or(0, |(_, d)| u64::try_from(d.as_millis()).unwrap_or(u64::MAX)),
            last_error: p.last_error,
            warnings,
            split_backups: backups,
            partner_clock_offset_ms: p.clock.map(|(o, _)| o),
            partner_clock_rtt_ms: p.clock.map_or(0, |(_, r)| r),
        }))
    }
}
