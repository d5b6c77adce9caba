//! The role follower against a stand-in election on a local port: every
//! message arrives as a domain event, a reconnect ends the stream that is
//! open when it is asked, and one asked while no stream is open does not
//! end the next.

use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use duet_carp::{Role, RoleEventKind};
use duet_proto::election::v1 as pb;
use duet_proto::election::v1::election_service_server::{ElectionService, ElectionServiceServer};
use duet_runtime::follow::{self, RoleNews};
use duet_runtime::shutdown;
use tokio::sync::mpsc;
use tokio_stream::wrappers::{ReceiverStream, TcpListenerStream};
use tonic::{Request, Response, Status};

type Item = Result<pb::WatchRoleResponse, Status>;

/// Answers WatchRole with a snapshot and then silence (no heartbeats), or
/// refuses it.
#[derive(Debug, Clone, Default)]
struct Election(Arc<Mutex<State>>);

#[derive(Debug, Default)]
struct State {
    refuse: bool,
    opened: u32,
    /// The streams' senders, kept so the streams stay open.
    open: Vec<mpsc::Sender<Item>>,
}

impl Election {
    fn with<T>(&self, f: impl FnOnce(&mut State) -> T) -> T {
        f(&mut self.0.lock().unwrap_or_else(PoisonError::into_inner))
    }
}

#[tonic::async_trait]
impl ElectionService for Election {
    async fn get_status(&self, _: Request<pb::GetStatusRequest>) -> Result<Response<pb::GetStatusResponse>, Status> {
        Err(Status::unimplemented("stand-in"))
    }

    type WatchRoleStream = ReceiverStream<Item>;

    async fn watch_role(&self, req: Request<pb::WatchRoleRequest>) -> Result<Response<Self::WatchRoleStream>, Status> {
        assert_eq!(req.get_ref().follower, "takeover");
        let (tx, rx) = mpsc::channel(4);
        let n = self.with(|s| {
            if s.refuse {
                return Err(Status::unavailable("stand-in: refusing"));
            }
            s.opened += 1;
            s.open.push(tx.clone());
            Ok(s.opened)
        })?;
        let snap = pb::WatchRoleResponse {
            epoch: 7,
            seq: u64::from(n),
            kind: pb::RoleEventKind::Snapshot as i32,
            role: duet_proto::convert::role_i32(Role::Standby),
            ha_timeout_ms: 3000,
            advert_interval_ms: 1000,
            vhid: 10,
            ..Default::default()
        };
        tx.send(Ok(snap)).await.map_err(|_| Status::internal("closed"))?;
        Ok(Response::new(ReceiverStream::new(rx)))
    }

    async fn handover(&self, _: Request<pb::HandoverRequest>) -> Result<Response<pb::HandoverResponse>, Status> {
        Err(Status::unimplemented("stand-in"))
    }

    async fn clear_pacified(
        &self,
        _: Request<pb::ClearPacifiedRequest>,
    ) -> Result<Response<pb::ClearPacifiedResponse>, Status> {
        Err(Status::unimplemented("stand-in"))
    }

    async fn report_applied(
        &self,
        _: Request<pb::ReportAppliedRequest>,
    ) -> Result<Response<pb::ReportAppliedResponse>, Status> {
        Ok(Response::new(pb::ReportAppliedResponse {}))
    }

    async fn set_readiness(
        &self,
        _: Request<pb::SetReadinessRequest>,
    ) -> Result<Response<pb::SetReadinessResponse>, Status> {
        Ok(Response::new(pb::SetReadinessResponse { ready: true }))
    }
}

async fn next(news: &mut mpsc::Receiver<RoleNews>) -> RoleNews {
    tokio::time::timeout(Duration::from_secs(5), news.recv()).await.expect("news within 5 s").expect("follower alive")
}

#[tokio::test]
async fn a_reconnect_ends_the_open_stream_only() {
    let election = Election::default();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    let server = tonic::transport::Server::builder()
        .add_service(ElectionServiceServer::new(election.clone()))
        .serve_with_incoming(TcpListenerStream::new(listener));
    tokio::spawn(server);
    let (stop_trigger, stop) = shutdown::channel();
    let mut roles = follow::roles(url, "takeover", stop);

    // The snapshot, as a domain event, first of its stream.
    let RoleNews::Event { event, first_of_stream: true, .. } = next(&mut roles.news).await else {
        panic!("no snapshot first");
    };
    assert_eq!((event.kind, event.role, event.seq), (RoleEventKind::Snapshot, Role::Standby, 1));

    // A reconnect ends it (the election sends nothing more: only the
    // reconnect can), and a new one follows.
    roles.reconnect();
    let RoleNews::Lost { why, delivered: true } = next(&mut roles.news).await else {
        panic!("the stream was not ended");
    };
    assert_eq!(why, "no sign of life from the election");
    let RoleNews::Event { event, first_of_stream: true, .. } = next(&mut roles.news).await else {
        panic!("no new stream");
    };
    assert_eq!(event.seq, 2);

    // A reconnect asked while no stream is open does not end the next one.
    election.with(|s| s.refuse = true);
    roles.reconnect();
    let RoleNews::Lost { .. } = next(&mut roles.news).await else { panic!("not ended") };
    let RoleNews::ConnectFailed { attempt: 1, .. } = next(&mut roles.news).await else { panic!("not refused") };
    roles.reconnect();
    election.with(|s| s.refuse = false);
    loop {
        match next(&mut roles.news).await {
            RoleNews::ConnectFailed { .. } => continue,
            RoleNews::Event { event, first_of_stream: true, .. } => {
                assert_eq!(event.seq, 3);
                break;
            }
            other => panic!("unexpected {other:?}"),
        }
    }
    let quiet = tokio::time::timeout(Duration::from_millis(300), roles.news.recv()).await;
    assert!(quiet.is_err(), "the new stream was ended by a reconnect asked before it opened: {quiet:?}");
    stop_trigger.fire();
}
