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

/// An election that says one role and keeps every stream open; it can be
/// told to refuse new streams, and counts those it opened (each stream's
/// snapshot carries its number as `seq`).
#[derive(Debug, Clone)]
pub struct ScriptedElection {
    role: Role,
    state: Arc<Mutex<Streams>>,
}

#[derive(Debug, Default)]
struct Streams {
    refuse: bool,
    opened: u64,
    /// The follower named by the last `WatchRole`.
    follower: String,
    /// Open streams, kept so they stay open.
    open: Vec<RoleSender>,
}

impl ScriptedElection {
    /// An election that says `role`.
    pub fn new(role: Role) -> Self {
        Self { role, state: Arc::default() }
    }

    fn with<T>(&self, f: impl FnOnce(&mut Streams) -> T) -> T {
        f(&mut self.state.lock().unwrap_or_else(PoisonError::into_inner))
    }

    /// Refuse new `WatchRole` streams (UNAVAILABLE) or accept them again.
    pub fn refuse(&self, refuse: bool) {
        self.with(|s| s.refuse = refuse);
    }

    /// Streams opened so far.
    pub fn opened(&self) -> u64 {
        self.with(|s| s.opened)
    }

    /// The follower named by the last `WatchRole` request.
    pub fn last_follower(&self) -> String {
        self.with(|s| s.follower.clone())
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

    async fn watch_role(&self, req: Request<epb::WatchRoleRequest>) -> Result<Response<RoleStream>, Status> {
        let (tx, rx) = mpsc::channel(4);
        let seq = self.with(|s| {
            s.follower.clone_from(&req.get_ref().follower);
            if s.refuse {
                return Err(Status::unavailable("scripted: refusing"));
            }
            s.opened += 1;
            s.open.push(tx.clone());
            Ok(s.opened)
        })?;
        let snapshot = RoleEvent {
            epoch: 1,
            seq,
            kind: RoleEventKind::Snapshot,
            role: self.role,
            previous: self.role,
            at: SystemTime::now(),
            reason: "scripted".into(),
            ha_timeout: Duration::from_secs(3),
            advert_interval: Duration::from_secs(1),
            vhid: 10,
            config_generation: 0,
            trace: String::new(),
        };
        tx.send(Ok(epb::WatchRoleResponse::from(&snapshot))).await.map_err(|_| Status::internal("closed"))?;
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

/// A pair for in-process tests: two loopback addresses with a peer port
/// free on both ([`loopback_pair`]), a temporary directory with the units'
/// state and their peer-link certificates ([`crate::write_certs`], in
/// `certs/`). `lb1` is `first` on the first address, `lb2` `second` on the
/// second.
#[derive(Debug)]
pub struct LoopbackPair {
    /// State directories and certificates; removed on drop.
    pub dir: tempfile::TempDir,
    /// lb1's address, lb2's, and the peer port.
    pub addrs: (Ipv4Addr, Ipv4Addr, u16),
}

impl LoopbackPair {
    /// Makes the directory, the certificates and picks the addresses.
    pub fn new() -> Self {
        let dir = tempfile::tempdir().expect("temporary directory");
        crate::write_certs(&dir.path().join("certs"), &["lb1", "lb2"]).expect("certificates");
        Self { dir, addrs: loopback_pair() }
    }

    /// The unit's address: `lb1` the first, any other the second.
    pub fn ip(&self, name: &str) -> Ipv4Addr {
        if name == "lb1" { self.addrs.0 } else { self.addrs.1 }
    }

    /// The start of `name`'s unit file: one interface `lo`, the election at
    /// `election`, and the peer link's identity (`[configsync]` partner and
    /// certificates). It ends inside `[configsync]`: append that section's
    /// other keys, then any other sections.
    pub fn unit_file(&self, name: &str, election: SocketAddr) -> String {
        let (a, b, _) = self.addrs;
        let (mode, partner) = if name == "lb1" { ("first", "lb2") } else { ("second", "lb1") };
        let dir = self.dir.path();
        format!(
            "[unit]\nname = \"{name}\"\nmode = \"{mode}\"\nstate_dir = \"{state}\"\n\
             [ha]\npassword = \"secret\"\ntimeout_s = 3\n\
             [[interface]]\nname = \"lo\"\nunit1 = \"{a}/24\"\nunit2 = \"{b}/24\"\nshared = \"{shared}/24\"\n\
             [election]\nlisten = \"{election}\"\n\
             [configsync]\npartner_name = \"{partner}\"\n\
             tls_ca = \"{certs}/ca.pem\"\ntls_cert = \"{certs}/{name}.pem\"\ntls_key = \"{certs}/{name}.key\"\n",
            state = dir.join(name).display(),
            shared = Ipv4Addr::from(u32::from(a) + 9),
            certs = dir.join("certs").display(),
        )
    }
}

impl Default for LoopbackPair {
    fn default() -> Self {
        Self::new()
    }
}

/// Polls `f` every 50 ms until it says `Some`, for at most `within`;
/// panics naming `what` when it never does.
pub async fn eventually<T, F: Future<Output = Option<T>>>(what: &str, within: Duration, mut f: impl FnMut() -> F) -> T {
    let deadline = tokio::time::Instant::now() + within;
    loop {
        if let Some(v) = f().await {
            return v;
        }
        assert!(tokio::time::Instant::now() < deadline, "timed out after {within:?} waiting for {what}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// What the gRPC health service at `url` says of the whole server, or
/// `None` when it cannot be asked.
pub async fn grpc_health(url: &str) -> Option<tonic_health::pb::health_check_response::ServingStatus> {
    use tonic_health::pb::health_check_response::ServingStatus;
    let channel = tonic::transport::Endpoint::from_shared(url.to_owned()).ok()?.connect().await.ok()?;
    let r = tonic_health::pb::health_client::HealthClient::new(channel)
        .check(tonic_health::pb::HealthCheckRequest { service: String::new() })
        .await
        .ok()?;
    ServingStatus::try_from(r.into_inner().status).ok()
}
