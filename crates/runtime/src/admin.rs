//! Access to the unit's gRPC APIs (O5), as a tower layer every service's
//! server is built with ([`crate::grpc::router`]); the credentials the
//! unit's own clients present are [`duet_proto::auth`]'s.
//!
//! With a tokens file (`admin.tokens_file`), every call carries
//! `authorization: Bearer <token>`: a `viewer` may read (status,
//! configuration, history, watches, reflection), an `operator` may also
//! change (handover, configuration, pacification, reports). Health stays
//! open (container and systemd checks). A refused call is counted (the
//! metric `duet.admin.refused`, by reason) and logged with the caller's
//! address, once per caller and reason every [`LOG_EVERY`]. Without a
//! tokens file the APIs are open, to loopback unless
//! `admin.allow_plaintext_remote` (checked with the unit file).

use std::net::IpAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::task::{Context, Poll};
use std::time::Duration;

use duet_config::{AdminRole, AdminTokens};
use futures::future::Either;
use tonic::Status;
use tonic::transport::server::TcpConnectInfo;

use crate::log_limit::LogLimit;

/// A refusal is logged at most this often per caller and reason.
pub const LOG_EVERY: Duration = Duration::from_secs(10);

/// The role a method needs; `None`: open to all (health).
pub fn needs(path: &str) -> Option<AdminRole> {
    let (service, method) = path.trim_start_matches('/').split_once('/').unwrap_or(("", path));
    if service == "grpc.health.v1.Health" {
        return None;
    }
    if service.starts_with("grpc.reflection.") {
        return Some(AdminRole::Viewer);
    }
    // Reads; anything not listed changes something (so a new method is an
    // operator's until it is listed here).
    const READS: [&str; 10] = [
        "GetStatus",
        "GetConfig",
        "GetLocal",
        "CheckConfig",
        "ListPersistence",
        "WatchRole",
        "WatchGenerations",
        "WaitInstalled",
        "History",
        "Backup",
    ];
    Some(if READS.contains(&method) { AdminRole::Viewer } else { AdminRole::Operator })
}

/// Why a call was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Refusal {
    /// No `authorization` header, or not a bearer token.
    NoToken,
    /// A token that is not in the tokens file.
    UnknownToken,
    /// A viewer's token on an operator's method.
    NotAllowed,
}

impl Refusal {
    /// The reason's word in logs and metrics.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::NoToken => "no_token",
            Self::UnknownToken => "unknown_token",
            Self::NotAllowed => "not_allowed",
        }
    }

    fn status(self, path: &str) -> Status {
        match self {
            Self::NoToken => Status::unauthenticated(
                "this unit's API needs a token: send \"authorization: Bearer <token>\" (duetctl --token-file, or DUET_TOKEN)",
            ),
            Self::UnknownToken => {
                Status::unauthenticated("the token is not one of this unit's (admin.tokens_file): check it")
            }
            Self::NotAllowed => {
                Status::permission_denied(format!("{path} needs an operator's token; this one is a viewer's"))
            }
        }
    }
}

/// The server side: who may call what, and what was refused.
#[derive(Debug, Clone)]
pub struct AdminAuth {
    tokens: Option<Arc<AdminTokens>>,
    refused: Arc<Refused>,
    /// `duet.admin.refused`, observed by the exporter while it is held.
    _metric: Arc<opentelemetry::metrics::ObservableCounter<u64>>,
}

#[derive(Debug)]
struct Refused {
    counts: [AtomicU64; 3],
    logged: LogLimit<(Option<IpAddr>, Refusal)>,
}

impl AdminAuth {
    /// Checks calls against `tokens`; lets everything through without.
    pub fn new(tokens: Option<AdminTokens>) -> Self {
        let refused = Arc::new(Refused { counts: Default::default(), logged: LogLimit::new(LOG_EVERY) });
        let counted = Arc::clone(&refused);
        let i = &crate::instruments::ADMIN_REFUSED;
        let metric = crate::telemetry::meter()
            .u64_observable_counter(i.name)
            .with_description(i.about)
            .with_unit(i.unit)
            .with_callback(move |o| {
                for r in [Refusal::NoToken, Refusal::UnknownToken, Refusal::NotAllowed] {
                    let n = counted.counts[r as usize].load(Ordering::Relaxed);
                    o.observe(n, &[opentelemetry::KeyValue::new("reason", r.as_str())]);
                }
            })
            .build();
        Self { tokens: tokens.map(Arc::new), refused, _metric: Arc::new(metric) }
    }

    /// Calls refused so far for `reason`.
    pub fn refused(&self, reason: Refusal) -> u64 {
        self.refused.counts[reason as usize].load(Ordering::Relaxed)
    }

    /// Whether a call to `path` with these headers may go on.
    fn check(&self, path: &str, headers: &http::HeaderMap, peer: Option<IpAddr>) -> Result<(), Status> {
        let Some(tokens) = &self.tokens else { return Ok(()) };
        let Some(need) = needs(path) else { return Ok(()) };
        let presented = headers
            .get(http::header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.strip_prefix("Bearer "))
            .map(str::trim);
        let refusal = match presented.map(|t| tokens.role_of(t)) {
            None => Refusal::NoToken,
            Some(None) => Refusal::UnknownToken,
            Some(Some(role)) if role < need => Refusal::NotAllowed,
            Some(Some(_)) => return Ok(()),
        };
        self.refused.counts[refusal as usize].fetch_add(1, Ordering::Relaxed);
        if self.refused.logged.due((peer, refusal)) {
            let peer = peer.map_or_else(|| "unknown".to_owned(), |p| p.to_string());
            tracing::warn!(
                peer = %peer,
                method = path,
                reason = refusal.as_str(),
                "refused a call to the admin API ({} so far for this reason; logged once per caller and reason every {} s)",
                self.refused(refusal),
                LOG_EVERY.as_secs()
            );
        }
        Err(refusal.status(path))
    }
}

impl<S> tower::Layer<S> for AdminAuth {
    type Service = Guarded<S>;

    fn layer(&self, inner: S) -> Guarded<S> {
        Guarded { inner, auth: self.clone() }
    }
}

/// A service behind [`AdminAuth`].
#[derive(Debug, Clone)]
pub struct Guarded<S> {
    inner: S,
    auth: AdminAuth,
}

impl<S, B, R> tower::Service<http::Request<B>> for Guarded<S>
where
    S: tower::Service<http::Request<B>, Response = http::Response<R>>,
    R: Default,
{
    type Response = S::Response;
    type Error = S::Error;
    type Future = Either<std::future::Ready<Result<S::Response, S::Error>>, S::Future>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, req: http::Request<B>) -> Self::Future {
        let peer = req.extensions().get::<TcpConnectInfo>().and_then(|i| i.remote_addr()).map(|a| a.ip());
        match self.auth.check(req.uri().path(), req.headers(), peer) {
            Ok(()) => Either::Right(self.inner.call(req)),
            Err(status) => Either::Left(std::future::ready(Ok(status.into_http()))),
        }
    }
}

pub use duet_proto::auth::{AdminChannel, ClientToken, authed, set_client_token};

#[cfg(test)]
mod tests {
    use super::*;

    const OP: &str = "0123456789abcdef0123456789abcdef";
    const VIEW: &str = "fedcba9876543210fedcba9876543210";

    fn headers(token: Option<&str>) -> http::HeaderMap {
        let mut h = http::HeaderMap::new();
        if let Some(t) = token {
            h.insert(http::header::AUTHORIZATION, format!("Bearer {t}").parse().unwrap());
        }
        h
    }

    #[test]
    fn methods_need_a_viewer_to_read_an_operator_to_change_and_nothing_for_health() {
        assert_eq!(needs("/grpc.health.v1.Health/Check"), None);
        assert_eq!(needs("/grpc.reflection.v1.ServerReflection/ServerReflectionInfo"), Some(AdminRole::Viewer));
        assert_eq!(needs("/duet.election.v1.ElectionService/GetStatus"), Some(AdminRole::Viewer));
        assert_eq!(needs("/duet.election.v1.ElectionService/WatchRole"), Some(AdminRole::Viewer));
        for m in ["Handover", "ClearPacified", "SetReadiness", "ReportApplied"] {
            assert_eq!(needs(&format!("/duet.election.v1.ElectionService/{m}")), Some(AdminRole::Operator), "{m}");
        }
        for m in ["ApplyConfig", "Restore", "Rollback", "ForceUpdate", "SetLocal", "SomethingNew"] {
            assert_eq!(needs(&format!("/duet.configsync.v1.ConfigSyncService/{m}")), Some(AdminRole::Operator), "{m}");
        }
    }

    #[tokio::test]
    async fn tokens_are_checked_per_role_and_refusals_counted() {
        let tokens = AdminTokens::parse(&format!("operator {OP}\nviewer {VIEW}\n")).unwrap();
        let internal = tokens.internal().to_owned();
        let auth = AdminAuth::new(Some(tokens));
        let status = "/duet.election.v1.ElectionService/GetStatus";
        let handover = "/duet.election.v1.ElectionService/Handover";
        let peer = Some(IpAddr::from([198, 18, 0, 9]));
        assert!(auth.check(status, &headers(Some(VIEW)), peer).is_ok());
        assert!(auth.check(handover, &headers(Some(OP)), peer).is_ok());
        assert!(auth.check(handover, &headers(Some(&internal)), peer).is_ok());
        assert!(auth.check("/grpc.health.v1.Health/Check", &headers(None), peer).is_ok());
        let e = auth.check(handover, &headers(Some(VIEW)), peer).unwrap_err();
        assert_eq!(e.code(), tonic::Code::PermissionDenied);
        assert!(e.message().contains("operator"), "{}", e.message());
        let e = auth.check(status, &headers(None), peer).unwrap_err();
        assert_eq!(e.code(), tonic::Code::Unauthenticated);
        assert!(e.message().contains("authorization: Bearer"), "{}", e.message());
        assert_eq!(auth.check(status, &headers(Some("x")), peer).unwrap_err().code(), tonic::Code::Unauthenticated);
        assert_eq!([Refusal::NoToken, Refusal::UnknownToken, Refusal::NotAllowed].map(|r| auth.refused(r)), [1, 1, 1]);
        // Without tokens, everything goes.
        let open = AdminAuth::new(None);
        assert!(open.check(handover, &headers(None), peer).is_ok());
    }
}
