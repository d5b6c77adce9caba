//! Following the pair's committed configuration generations
//! (configsync's `WatchGenerations`): the one generation follower every
//! service of a unit uses.
//!
//! ```text
//!  follower task ── WatchGenerations (reconnects, backoff) ── convert + validate ── watch ──► the service
//! ```
//!
//! [`generations`] keeps one stream open to the unit's configsync and
//! hands the service, through a watch, the newest generation as model
//! values ([`duet_model::ImageContent`]): each one is converted and
//! validated whole before it is offered, so a service never sees half of
//! one. A generation that does not convert or validate is logged with its
//! problems and skipped; the service keeps the last good one. A slow
//! service sees only the newest generation (a watch keeps one value), which
//! is all it needs: each generation is the whole image. It reconnects after
//! 50 ms, doubling to 1 s, back to 50 ms once a stream has delivered a
//! message; the first message of every stream is the current generation.

use std::net::SocketAddr;
use std::sync::Arc;

use duet_model::ImageContent;
use duet_proto::config::v1 as cpb;
use duet_proto::configsync::v1 as pb;
use duet_proto::configsync::v1::config_sync_service_client::ConfigSyncServiceClient;
use tokio::sync::watch;

use crate::follow::{BACKOFF_MAX, BACKOFF_MIN, FollowError, connect, open_stream};
use crate::shutdown::Shutdown;

/// Largest image accepted (tonic's default of 4 MiB is too small for tens
/// of thousands of virtual services).
const MAX_IMAGE: usize = 64 << 20;

/// One committed generation of the pair's image, converted and validated.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Generation {
    pub generation: u64,
    /// The image's content hash, as configsync stored it.
    pub hash: String,
    /// How it became current: "current" (the first message of a stream),
    /// "committed", "synced", "restored", "rolled-back" or "fleet" (taken
    /// from the pair's head in etcd, O7).
    pub origin: String,
    pub content: ImageContent,
    /// The W3C `traceparent` of the commit's trace ("" when none, O3).
    pub trace: String,
}

/// configsync's operator URL for its `listen` address (an unspecified
/// address means this host).
pub fn configsync_url(listen: SocketAddr) -> String {
    let mut a = listen;
    if a.ip().is_unspecified() {
        a.set_ip(std::net::Ipv4Addr::LOCALHOST.into());
    }
    format!("http://{a}")
}

/// Starts following configsync at `url`; generations are validated for a
/// unit in an HA mode (`ha_unit`) or not. The watch holds `None` until the
/// first usable generation (a pair with no image yet has none). The
/// follower task ends when `stop` fires or every receiver is dropped.
pub fn generations(url: String, ha_unit: bool, stop: Shutdown) -> watch::Receiver<Option<Arc<Generation>>> {
    let (tx, rx) = watch::channel(None);
    tokio::spawn(run(url, ha_unit, tx, stop));
    rx
}

async fn open(
    url: &str,
) -> Result<
    (ConfigSyncServiceClient<crate::admin::AdminChannel>, tonic::Streaming<pb::WatchGenerationsResponse>),
    FollowError,
> {
    let channel = connect(url, |ep| ep).await?;
    let mut client = ConfigSyncServiceClient::new(crate::admin::authed(channel)).max_decoding_message_size(MAX_IMAGE);
    let stream = open_stream("WatchGenerations", client.watch_generations(pb::WatchGenerationsRequest {})).await?;
    Ok((client, stream))
}

/// What a message of the stream gives the service, if anything.
enum Next {
    /// A generation to offer.
    Offer(Generation),
    /// Nothing new (no image yet, the one offered, one already refused).
    Nothing,
}

async fn run(url: String, ha_unit: bool, tx: watch::Sender<Option<Arc<Generation>>>, mut stop: Shutdown) {
    let mut backoff = BACKOFF_MIN;
    let mut attempt = 0u32;
    // The hash of the last generation refused, so it is logged once.
    let mut refused = String::new();
    loop {
        let opened = tokio::select! {
            r = open(&url) => r,
            () = stop.wait() => return,
            () = tx.closed() => return,
        };
        match opened {
            Ok((mut client, mut stream)) => {
                attempt = 0;
                tracing::debug!(%url, "following configsync's generations");
                let why = loop {
                    let msg = tokio::select! {
                        m = stream.message() => m,
                        () = stop.wait() => return,
                        () = tx.closed() => return,
                    };
                    let m = match msg {
                        Ok(Some(m)) => m,
                        Ok(None) => break "configsync closed it".to_owned(),
                        Err(s) if s.message().is_empty() => break format!("{:?}", s.code()),
                        Err(s) => break s.message().to_owned(),
                    };
                    backoff = BACKOFF_MIN;
                    let offered = tx.borrow().as_ref().map(|g| g.hash.clone());
                    match next(&mut client, m, ha_unit, offered.as_deref(), &mut refused).await {
                        Ok(Next::Offer(g)) => {
                            tracing::debug!(generation = g.generation, origin = %g.origin, "configuration generation followed");
                            tx.send_replace(Some(Arc::new(g)));
                        }
                        Ok(Next::Nothing) => {}
                        Err(why) => break why.to_string(),
                    }
                };
                tracing::debug!(%url, "generation stream from configsync lost: {why}");
            }
            Err(why) => {
                attempt += 1;
                // configsync may start after its followers: quiet at
                // first, then a warning now and then (about every minute).
                if attempt % 60 == 20 {
                    tracing::warn!(%url, attempt, "cannot follow configsync's generations (the last one stays in force): {why}");
                } else {
                    tracing::debug!(%url, attempt, "cannot follow configsync's generations yet: {why}");
                }
            }
        }
        tokio::select! {
            () = tokio::time::sleep(backoff) => {}
            () = stop.wait() => return,
            () = tx.closed() => return,
        }
        backoff = (backoff * 2).min(BACKOFF_MAX);
    }
}

/// Turns one message into a generation to offer. The image comes in the
/// message; from a configsync older than that field, from `GetConfig`.
async fn next(
    client: &mut ConfigSyncServiceClient<crate::admin::AdminChannel>,
    m: pb::WatchGenerationsResponse,
    ha_unit: bool,
    offered: Option<&str>,
    refused: &mut String,
) -> Result<Next, FollowError> {
    if m.generation == 0 || offered == Some(m.hash.as_str()) || *refused == m.hash {
        return Ok(Next::Nothing);
    }
    let image = match m.image {
        Some(i) => i,
        None => client
            .get_config(pb::GetConfigRequest { section: String::new() })
            .await
            .map_err(|status| FollowError::Call { call: "GetConfig", status })?
            .into_inner()
            .image
            .unwrap_or_default(),
    };
    Ok(convert(image, m.origin, m.traceparent, ha_unit, refused))
}

fn convert(image: cpb::Image, origin: String, trace: String, ha_unit: bool, refused: &mut String) -> Next {
    match ImageContent::checked(&image, ha_unit) {
        Ok(content) => {
            Next::Offer(Generation { generation: image.generation, hash: image.hash, origin, content, trace })
        }
        Err(problems) => {
            let lines: Vec<String> = problems.iter().map(ToString::to_string).collect();
            tracing::error!(
                generation = image.generation,
                "configuration generation {} cannot be used here and is skipped (the last good one stays): {}",
                image.generation,
                lines.join("; ")
            );
            refused.clone_from(&image.hash);
            Next::Nothing
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_invalid_generation_is_skipped_whole_and_remembered() {
        let mut refused = String::new();
        let bad = cpb::Image {
            generation: 4,
            hash: "h4".into(),
            ha: Some(cpb::HaSettings { timeout_s: 4, ..Default::default() }),
            ..Default::default()
        };
        assert!(matches!(convert(bad, "synced".into(), String::new(), true, &mut refused), Next::Nothing));
        assert_eq!(refused, "h4");
        let good = cpb::Image {
            generation: 5,
            hash: "h5".into(),
            ha: Some(cpb::HaSettings { timeout_s: 6, ..Default::default() }),
            ..Default::default()
        };
        let Next::Offer(g) = convert(good, "synced".into(), String::new(), true, &mut refused) else {
            panic!("a good generation")
        };
        assert_eq!((g.generation, g.hash.as_str(), g.content.ha.timeout_s), (5, "h5", 6));
    }

    #[test]
    fn unspecified_listen_addresses_mean_this_host() {
        assert_eq!(configsync_url("0.0.0.0:7872".parse().unwrap()), "http://127.0.0.1:7872");
    }
}
