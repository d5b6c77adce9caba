//! A scripted election for in-process tests of the services that follow
//! it (configsync, replicator): it says one role on `WatchRole`, keeps the
//! stream open, accepts readiness and applied reports and refuses the rest.
//! Served on a loopback address of the test's choosing, no root needed.

use std::net::{Ipv4Addr, SocketAddr};
use std::pin::Pin;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, SystemTime};

use duet_carp::{Role, RoleEvent, RoleEventKind};
use duet_proto::election::v1 as epb;
use duet_proto::election::v1::election_service_server::{ElectionService, ElectionServiceServer};
use futures::Stream;
use tokio::net::TcpListener;
use tokio::sync::mpsc;
use tokio_stream::wrappers::{ReceiverStream, TcpListenerStream};
use tonic::{Request, Response, Status};

type RoleSender = mpsc::Sender<Result<epb::WatchRoleResponse, Status>>;
type RoleStream = Pin<Box<dyn Stream<Item = Result<epb::WatchRoleResponse, Status>> + Send>>;

/// An election that says one role and keeps every stream open.
#[derive(Debug, Clone)]
pub struct ScriptedElection {
    role: Role,
    /// Open streams, kept so they stay open.
    streams: Arc<Mutex<Vec<RoleSender>>>,
}

impl ScriptedElection {
    /// An election that says `role`.
    pub fn new(role: Role) -> Self {
        Self { role, streams: Arc::default() }
    }

    /// Serves it on `listener` until `stop` completes.
    pub fn serve(self, listener: TcpListener, stop: impl Future<Output = ()> + Send + 'static) {
        tokio::spawn(async move {
            let _ = tonic::transport::Server::builder()
                .add_service(ElectionServiceServer::new(self))
                .serve_with_incoming_shutdown(TcpListenerStream::new(listener), stop)
                .await;
        });
    }

    /// Serves it on a free port of `ip` until `stop` completes; returns the
    /// address.
    pub async fn serve_on(self, ip: Ipv4Addr, stop: impl Future<Output = ()> + Send + 'static) -> SocketAddr {
        let l = TcpListener::bind((ip, 0)).await.expect("bind the scripted election");
        let addr = l.local_addr().expect("the scripted election's address");
        self.serve(l, stop);
        addr
    }
}

#[tonic::async_trait]
impl ElectionService for ScriptedElection {
    async fn get_status(&self, _: Request<epb::GetStatusRequest>) -> Result<Response<epb::GetStatusResponse>, Status> {
        Err(Status::unimplemented("scripted"))
    }

    type WatchRoleStream = RoleStream;

    async fn watch_role(&self, _: Request<epb::WatchRoleRequest>) -> Result<Response<RoleStream>, Status> {
        let (tx, rx) = mpsc::channel(4);
        let snapshot = RoleEvent {
            epoch: 1,
            seq: 1,
            kind: RoleEventKind::Snapshot,
            role: self.role,
            previous: self.role,
            at: SystemTime::now(),
            reason: "scripted".into(),
            ha_timeout: Duration::from_secs(3),
            advert_interval: Duration::from_secs(1),
            vhid: 10,
            config_generation: 0,
        };
        tx.send(Ok(epb::WatchRoleResponse::from(&snapshot))).await.map_err(|_| Status::internal("closed"))?;
        self.streams.lock().unwrap_or_else(PoisonError::into_inner).push(tx);
        Ok(Response::new(Box::pin(ReceiverStream::new(rx))))
    }

    async fn handover(&self, _: Request<epb::HandoverRequest>) -> Result<Response<epb::HandoverResponse>, Status> {
        Err(Status::unimplemented("scripted"))
    }

    async fn clear_pacified(
        &self,
        _: Request<epb::ClearPacifiedRequest>,
    ) -> Result<Response<epb::ClearPacifiedResponse>, Status> {
        Err(Status::unimplemented("scripted"))
    }

    async fn report_applied(
        &self,
        _: Request<epb::ReportAppliedRequest>,
    ) -> Result<Response<epb::ReportAppliedResponse>, Status> {
        Ok(Response::new(epb::ReportAppliedResponse::default()))
    }

    async fn set_readiness(
        &self,
        _: Request<epb::SetReadinessRequest>,
    ) -> Result<Response<epb::SetReadinessResponse>, Status> {
        Ok(Response::new(epb::SetReadinessResponse::default()))
    }
}

/// Two loopback addresses of a block of their own per test process, and a
/// port free on both (the peer link's, which both units bind).
pub fn loopback_pair() -> (Ipv4Addr, Ipv4Addr, u16) {
    let block = u8::try_from(std::process::id() % 200 + 20).unwrap_or(77);
    let (a, b) = (Ipv4Addr::new(127, 81, block, 1), Ipv4Addr::new(127, 81, block, 2));
    for _ in 0..50 {
        let Ok(l) = std::net::TcpListener::bind((a, 0)) else { continue };
        let Ok(port) = l.local_addr().map(|s| s.port()) else { continue };
        if std::net::TcpListener::bind((b, port)).is_ok() {
            return (a, b, port);
        }
    }
    panic!("no port free on both {a} and {b}");
}
