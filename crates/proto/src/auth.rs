//! The client half of access to the unit's gRPC APIs (O5): the token a
//! process presents on every call, as `authorization: Bearer <token>`.
//! The server half is `duet_runtime::admin`.

use std::sync::OnceLock;

use tonic::metadata::{Ascii, MetadataValue};
use tonic::service::Interceptor;
use tonic::service::interceptor::InterceptedService;
use tonic::transport::Channel;
use tonic::{Request, Status};

/// The token this process's clients present to the unit's services (the
/// unit's internal one, or an operator's for duetctl); set once at start.
static CLIENT_TOKEN: OnceLock<Option<MetadataValue<Ascii>>> = OnceLock::new();

/// Sets the token this process's clients present; the first call wins.
pub fn set_client_token(token: Option<&str>) {
    let value = token.and_then(|t| format!("Bearer {t}").parse().ok());
    let _ = CLIENT_TOKEN.set(value);
}

/// Adds this process's token (if any) to every call.
#[derive(Debug, Clone, Copy, Default)]
pub struct ClientToken;

impl Interceptor for ClientToken {
    fn call(&mut self, mut req: Request<()>) -> Result<Request<()>, Status> {
        if let Some(Some(v)) = CLIENT_TOKEN.get() {
            req.metadata_mut().insert("authorization", v.clone());
        }
        Ok(req)
    }
}

/// A channel to one of the unit's services, with this process's token.
pub type AdminChannel = InterceptedService<Channel, ClientToken>;

/// `channel` with this process's token on every call.
pub fn authed(channel: Channel) -> AdminChannel {
    InterceptedService::new(channel, ClientToken)
}
