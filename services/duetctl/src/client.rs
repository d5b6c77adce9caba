//! Connections to the unit's services.

use std::net::SocketAddr;
use std::path::Path;
use std::time::Duration;

use anyhow::Context;
use duet_config::{AdminRole, AdminTokens};
use duet_proto::auth::{AdminChannel, authed};
use duet_proto::configsync::v1::config_sync_service_client::ConfigSyncServiceClient;
use duet_proto::election::v1::election_service_client::ElectionServiceClient;
use duet_proto::replicator::v1::replicator_service_client::ReplicatorServiceClient;
use duet_proto::takeover::v1::takeover_service_client::TakeoverServiceClient;
use tonic::transport::Endpoint;

/// Where the unit's services listen.
#[derive(Debug, Clone)]
pub struct Addrs {
    pub election: SocketAddr,
    pub takeover: SocketAddr,
    pub configsync: SocketAddr,
    pub replicator: SocketAddr,
}

impl Default for Addrs {
    fn default() -> Self {
        Self {
            election: "127.0.0.1:7870".parse().expect("literal"),
            takeover: "127.0.0.1:7871".parse().expect("literal"),
            configsync: "127.0.0.1:7872".parse().expect("literal"),
            replicator: "127.0.0.1:7873".parse().expect("literal"),
        }
    }
}

impl Addrs {
    /// From a unit file, when given; the defaults otherwise.
    pub fn from_config(path: Option<&Path>) -> anyhow::Result<Self> {
        let Some(p) = path else { return Ok(Self::default()) };
        let raw = duet_config::load_raw(p).map_err(|e| anyhow::anyhow!("{e}"))?;
        let parse = |field: &str, v: &str| {
            v.parse::<SocketAddr>().with_context(|| format!("{field} \"{v}\" in {}", p.display()))
        };
        Ok(Self {
            election: parse("election.listen", &raw.election.listen)?,
            takeover: parse("takeover.listen", &raw.takeover.listen)?,
            configsync: parse("configsync.listen", &raw.configsync.listen)?,
            replicator: parse("replicator.listen", &raw.replicator.listen)?,
        })
    }
}

async fn channel(addr: SocketAddr, what: &str) -> anyhow::Result<AdminChannel> {
    Endpoint::from_shared(format!("http://{addr}"))?
        .connect_timeout(Duration::from_secs(3))
        .timeout(Duration::from_secs(30))
        .connect()
        .await
        .map(authed)
        .with_context(|| format!("cannot reach the {what} service at {addr}: is the unit running here?"))
}

/// The token to present (O5), from the first of: `DUET_TOKEN`, the file
/// `token_file` (a bare token, or a tokens file: its first operator's,
/// else its first viewer's), the unit file's `admin.tokens_file` when it
/// can be read (root on the unit). None: calls go without one.
pub fn token(config: Option<&Path>, token_file: Option<&Path>) -> anyhow::Result<Option<String>> {
    if let Ok(t) = std::env::var("DUET_TOKEN")
        && !t.trim().is_empty()
    {
        return Ok(Some(t.trim().to_owned()));
    }
    let pick = |t: &AdminTokens| t.first(AdminRole::Operator).or_else(|| t.first(AdminRole::Viewer)).map(str::to_owned);
    if let Some(p) = token_file {
        let text = std::fs::read_to_string(p).with_context(|| format!("--token-file {}", p.display()))?;
        if let Ok(t) = AdminTokens::parse(&text) {
            return Ok(pick(&t));
        }
        let bare = text.lines().map(|l| l.split('#').next().unwrap_or("").trim()).find(|l| !l.is_empty());
        return match bare {
            Some(t) if !t.contains(char::is_whitespace) => Ok(Some(t.to_owned())),
            _ => anyhow::bail!(
                "--token-file {}: expected a token on its own line, or \"<role> <token>\" lines",
                p.display()
            ),
        };
    }
    let Some(c) = config else { return Ok(None) };
    let raw = duet_config::load_raw(c).map_err(|e| anyhow::anyhow!("{e}"))?;
    Ok(raw.admin.tokens_file.and_then(|f| AdminTokens::load(&f).ok()).and_then(|t| pick(&t)))
}

pub async fn election(a: &Addrs) -> anyhow::Result<ElectionServiceClient<AdminChannel>> {
    Ok(ElectionServiceClient::new(channel(a.election, "election").await?))
}

pub async fn takeover(a: &Addrs) -> anyhow::Result<TakeoverServiceClient<AdminChannel>> {
    Ok(TakeoverServiceClient::new(channel(a.takeover, "takeover").await?))
}

pub async fn configsync(a: &Addrs) -> anyhow::Result<ConfigSyncServiceClient<AdminChannel>> {
    Ok(ConfigSyncServiceClient::new(channel(a.configsync, "configsync").await?)
        .max_decoding_message_size(256 << 20)
        .max_encoding_message_size(256 << 20))
}

pub async fn replicator(a: &Addrs) -> anyhow::Result<ReplicatorServiceClient<AdminChannel>> {
    Ok(ReplicatorServiceClient::new(channel(a.replicator, "replicator").await?))
}

/// The answer to `call`, or its error as the operator should read it.
pub async fn answer<T>(call: impl Future<Output = Result<tonic::Response<T>, tonic::Status>>) -> anyhow::Result<T> {
    call.await.map(tonic::Response::into_inner).map_err(explain)
}

/// A gRPC error as the operator should read it.
pub fn explain(s: tonic::Status) -> anyhow::Error {
    anyhow::anyhow!("{}", s.message())
}

/// Prints `m`, a message of type `name` ("duet.config.v1.Image"), as
/// protobuf JSON.
pub fn print_json<M: prost::Message>(m: &M, name: &str) -> anyhow::Result<()> {
    println!("{}", duet_proto::json::to_json(m, name).map_err(anyhow::Error::msg)?);
    Ok(())
}

/// A content hash as the operator reads it: its first 12 characters.
pub fn short_hash(hash: &str) -> &str {
    &hash[..12.min(hash.len())]
}
