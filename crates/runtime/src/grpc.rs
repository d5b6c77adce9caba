//! A gRPC server with what every duet service serves besides its own
//! service: the standard health service (`grpc.health.v1`) and server
//! reflection in both v1 and v1alpha (grpcurl and `buf curl` use v1; the
//! Python reflection client still speaks v1alpha only).

use std::net::SocketAddr;

use std::time::Duration;

use tokio::net::TcpListener;
use tonic::server::NamedService;
use tonic::transport::Server;
use tonic::transport::server::{Router, TcpIncoming};
use tonic_health::ServingStatus;
use tonic_health::server::HealthReporter;
use tower::layer::util::{Identity, Stack};

use crate::shutdown::Shutdown;

/// Health of one process: the overall status ("") and its own service.
#[derive(Debug, Clone)]
pub struct Health {
    reporter: HealthReporter,
    service: &'static str,
}

impl Health {
    /// Sets both the overall status and the named service's status.
    pub async fn set(&self, serving: bool) {
        let s = if serving { ServingStatus::Serving } else { ServingStatus::NotServing };
        self.reporter.set_service_status("", s).await;
        self.reporter.set_service_status(self.service, s).await;
    }
}

/// Why a gRPC server could not be set up or stopped serving.
#[derive(Debug, thiserror::Error)]
pub enum GrpcError {
    /// The reflection service cannot read duet's descriptor set (a bug).
    #[error("gRPC reflection: {0}")]
    Reflection(#[from] tonic_reflection::server::Error),
    /// The address cannot be bound.
    #[error("cannot listen on {addr}: {source}{}", setting.as_ref().map(|s| format!("; set {s} to a free address")).unwrap_or_default())]
    Bind {
        addr: SocketAddr,
        /// The setting to change, when known.
        setting: Option<String>,
        source: std::io::Error,
    },
    /// A peer link's end cannot be bound.
    #[error(
        "cannot listen for the partner on {addr}: {source}; the unit address must be on {interface} and the port ({}) free ({setting})",
        addr.port()
    )]
    PeerBind { addr: SocketAddr, interface: String, setting: String, source: std::io::Error },
    /// The server failed while serving.
    #[error("gRPC server: {0}")]
    Serve(#[from] tonic::transport::Error),
    /// The peer link's TLS material cannot make a server.
    #[error("the peer link's TLS: {0}")]
    Tls(String),
}

/// The longest an admin call may take before it is answered (the longest
/// planned handover, 60 s, and its margin); streams are not bounded.
pub const CALL_TIMEOUT: Duration = Duration::from_secs(75);
/// Calls served at once on one admin connection.
pub const CALLS_PER_CONNECTION: usize = 64;

/// An admin API's router: every call passes [`crate::admin::AdminAuth`].
pub type AdminRouter = Router<Stack<crate::admin::AdminAuth, Identity>>;

/// A server builder with health (starting NOT_SERVING) and reflection
/// registered, for the service `S`, every call checked by `auth`, bounded
/// by [`CALL_TIMEOUT`] and [`CALLS_PER_CONNECTION`]. Add the service
/// itself with `router.add_service(..)`.
pub fn router<S: NamedService>(auth: &crate::admin::AdminAuth) -> Result<(AdminRouter, Health), GrpcError> {
    let (reporter, health_service) = tonic_health::server::health_reporter();
    // Reflection lists what this port serves: the service, health and
    // reflection itself (the descriptors of the others stay resolvable).
    let reflection = || {
        tonic_reflection::server::Builder::configure()
            .register_encoded_file_descriptor_set(duet_proto::FILE_DESCRIPTOR_SET)
            .register_encoded_file_descriptor_set(tonic_health::pb::FILE_DESCRIPTOR_SET)
            .with_service_name(S::NAME)
            .with_service_name("grpc.health.v1.Health")
            .with_service_name("grpc.reflection.v1.ServerReflection")
            .with_service_name("grpc.reflection.v1alpha.ServerReflection")
    };
    let reflection_v1 = reflection().build_v1()?;
    let reflection_v1alpha = reflection().build_v1alpha()?;
    let router = Server::builder()
        .timeout(CALL_TIMEOUT)
        .concurrency_limit_per_connection(CALLS_PER_CONNECTION)
        .layer(auth.clone())
        .add_service(health_service)
        .add_service(reflection_v1)
        .add_service(reflection_v1alpha);
    Ok((router, Health { reporter, service: S::NAME }))
}

/// Binds `addr` (port 0 picks one) and reports the address actually bound.
pub async fn bind(addr: SocketAddr) -> Result<(TcpListener, SocketAddr), GrpcError> {
    let bind_error = |source| GrpcError::Bind { addr, setting: None, source };
    let l = TcpListener::bind(addr).await.map_err(bind_error)?;
    let local = l.local_addr().map_err(bind_error)?;
    Ok((l, local))
}

/// A service's gRPC listener on `addr`, logged once bound; the error names
/// `setting`, the configuration key to change.
pub async fn listen(addr: SocketAddr, setting: &str) -> Result<TcpListener, GrpcError> {
    let (listener, local) = bind(addr).await.map_err(|e| match e {
        GrpcError::Bind { addr, source, .. } => GrpcError::Bind { addr, setting: Some(setting.to_owned()), source },
        other => other,
    })?;
    tracing::info!(addr = %local, "gRPC listening");
    Ok(listener)
}

/// Accepted connections with TCP_NODELAY: role events and pushes are
/// small messages that must not wait for Nagle.
pub fn incoming(listener: TcpListener) -> TcpIncoming {
    TcpIncoming::from(listener).with_nodelay(Some(true))
}

/// HTTP/2 keepalive pings on the peer links (both ends, idle or not): a
/// partner gone without closing its connection is noticed within
/// [`PEER_KEEPALIVE`] + [`PEER_KEEPALIVE_TIMEOUT`]. Failover does not wait
/// for it (the election sees a dead partner by its adverts); the links'
/// status does.
pub const PEER_KEEPALIVE: Duration = Duration::from_secs(10);
/// See [`PEER_KEEPALIVE`].
pub const PEER_KEEPALIVE_TIMEOUT: Duration = Duration::from_secs(5);

/// How long a peer has to finish its TLS handshake.
pub const PEER_HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(5);

/// The connections of a peer link's server, each through its TLS
/// handshake (see [`peer_server`]).
pub type PeerIncoming = tokio_stream::wrappers::ReceiverStream<
    Result<tokio_rustls::server::TlsStream<tokio::net::TcpStream>, std::io::Error>,
>;

/// The server of a peer link (configsync's, the replicator's), bound on
/// this unit's end of the link (`link.listen`): mutual TLS with the pair's
/// CA, and HTTP/2 keepalive so that a partner gone mid-stream is noticed
/// within seconds. `port_setting` names the port's setting in errors.
///
/// The TLS handshakes are done here, not in the server, so that every
/// refused peer (another CA, no certificate, an invalid one) is counted
/// and logged by reason ([`crate::peer_refusals`]); the server gets the
/// connections that passed. Serve it with `serve_with_incoming_shutdown`.
pub async fn peer_server(
    link: &duet_config::PeerLink,
    tls: &crate::tls::PeerTls,
    port_setting: &str,
) -> Result<(PeerIncoming, Server), GrpcError> {
    let listener = TcpListener::bind(link.listen).await.map_err(|source| GrpcError::PeerBind {
        addr: link.listen,
        interface: link.interface.clone(),
        setting: port_setting.to_owned(),
        source,
    })?;
    let acceptor = tokio_rustls::TlsAcceptor::from(std::sync::Arc::new(tls.rustls_server().map_err(GrpcError::Tls)?));
    let (tx, rx) = tokio::sync::mpsc::channel(16);
    let tls = tls.clone();
    // Ends when the server drops the connections' receiver.
    tokio::spawn(async move {
        loop {
            let accepted = tokio::select! {
                a = listener.accept() => a,
                () = tx.closed() => return,
            };
            let (tcp, from) = match accepted {
                Ok(a) => a,
                Err(e) => {
                    tracing::warn!("peer link: accept failed: {e}");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    continue;
                }
            };
            let _ = tcp.set_nodelay(true);
            let (acceptor, tx, tls) = (acceptor.clone(), tx.clone(), tls.clone());
            tokio::spawn(async move {
                use crate::peer_refusals::Reason;
                match tokio::time::timeout(PEER_HANDSHAKE_TIMEOUT, acceptor.accept(tcp)).await {
                    Ok(Ok(s)) => {
                        let _ = tx.send(Ok(s)).await;
                    }
                    Ok(Err(e)) => tls.refusals().record(Some(from.ip()), Reason::of_handshake(&e), &e.to_string()),
                    Err(_) => tls.refusals().record(Some(from.ip()), Reason::Handshake, "no handshake within 5 s"),
                }
            });
        }
    });
    let server = Server::builder()
        .http2_keepalive_interval(Some(PEER_KEEPALIVE))
        .http2_keepalive_timeout(Some(PEER_KEEPALIVE_TIMEOUT));
    Ok((tokio_stream::wrappers::ReceiverStream::new(rx), server))
}

/// Serves `router` on `listener` until `shutdown` fires.
pub async fn serve(router: AdminRouter, listener: TcpListener, shutdown: Shutdown) -> Result<(), GrpcError> {
    router.serve_with_incoming_shutdown(incoming(listener), shutdown.future()).await?;
    Ok(())
}
