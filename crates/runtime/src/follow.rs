//! Following the election's role stream (`WatchRole`): the one follower
//! every service of a unit uses.
//!
//! ```text
//!  follower task ── WatchRole (reconnects, backoff) ── RoleNews (bounded) ──► the service
//! ```
//!
//! [`roles`] keeps one stream open to the unit's election and hands the
//! service every message as a domain [`RoleEvent`] (heartbeats included,
//! so the service can judge the election's liveness itself), and says when
//! a stream is lost or cannot be opened. It reconnects after 50 ms,
//! doubling to 1 s, back to 50 ms once a stream has delivered a message.
//! What a message *means* for the service (sequence, fail-safe) is the
//! service's core to decide; services that only need the current role use
//! [`role_watch`], which is `None` whenever no stream is live.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use duet_carp::{Role, RoleEvent, RoleEventKind};
use duet_proto::election::v1 as pb;
use duet_proto::election::v1::election_service_client::ElectionServiceClient;
use tokio::sync::{Notify, mpsc, watch};
use tonic::transport::{Channel, Endpoint};

use crate::shutdown::Shutdown;

/// First reconnect delay, doubled up to [`BACKOFF_MAX`].
pub const BACKOFF_MIN: Duration = Duration::from_millis(50);
/// Longest reconnect delay.
pub const BACKOFF_MAX: Duration = Duration::from_secs(1);
/// Bound on connecting and on opening the stream.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(1);

/// The election's URL for its `listen` address (an unspecified address
/// means this host).
pub fn election_url(listen: SocketAddr) -> String {
    let mut a = listen;
    if a.ip().is_unspecified() {
        a.set_ip(std::net::Ipv4Addr::LOCALHOST.into());
    }
    format!("http://{a}")
}

/// What the follower tells the service.
#[derive(Debug, Clone)]
pub enum RoleNews {
    /// A message of the stream, heartbeats included. `first_of_stream` is
    /// true for the first message of a newly opened stream (a snapshot).
    Event { event: RoleEvent, first_of_stream: bool, received: Instant },
    /// The stream ended or failed. `delivered` is true when it had
    /// delivered at least one message (the service was following).
    Lost { why: String, delivered: bool },
    /// Opening a stream failed (`attempt` counts the failures in a row).
    ConnectFailed { why: String, attempt: u32 },
}

/// The service's end of a role follower.
#[derive(Debug)]
pub struct RoleStream {
    /// Everything the follower hears, in order.
    pub news: mpsc::Receiver<RoleNews>,
    reconnect: Arc<Notify>,
}

impl RoleStream {
    /// Drops the current stream and opens a new one (for a service that
    /// judged the stream dead although its connection is up: no heartbeat).
    /// The stream ends with [`RoleNews::Lost`]; messages it delivered
    /// before are still in the channel ahead of it. A stream that has
    /// ended already is not followed by anything: the next one is not
    /// touched by a reconnect asked about its predecessor.
    pub fn reconnect(&self) {
        // `notify_waiters` stores no permit: only a stream open now (whose
        // `Notified` exists) hears it; see `run`.
        self.reconnect.notify_waiters();
    }
}

/// An error and its sources on one line, without repeating a source whose
/// text the previous one already carries (tonic's transport errors repeat
/// their cause: "tcp connect error: tcp connect error: ...").
pub fn error_chain(e: &dyn std::error::Error) -> String {
    let mut s = e.to_string();
    let mut cur = e.source();
    while let Some(c) = cur {
        let t = c.to_string();
        if !s.ends_with(&t) {
            s.push_str(": ");
            s.push_str(&t);
        }
        cur = c.source();
    }
    s
}

/// Why a stream from one of the unit's services could not be opened or
/// followed; the text is what the followers log.
#[derive(Debug, thiserror::Error)]
pub enum FollowError {
    /// The service's URL does not parse.
    #[error("{url} is not a URL: {source}")]
    Url {
        url: String,
        #[source]
        source: tonic::transport::Error,
    },
    /// Connecting took longer than its bound.
    #[error("connecting timed out")]
    ConnectTimeout,
    /// Connecting failed (the service is not listening, ...).
    #[error("cannot connect: {}", error_chain(.0))]
    Connect(#[source] tonic::transport::Error),
    /// The call that opens the stream was not answered in time.
    #[error("{call} did not answer in time")]
    CallTimeout { call: &'static str },
    /// The service refused the call that opens the stream.
    #[error("{call} refused: {}", .status.message())]
    Refused {
        call: &'static str,
        #[source]
        status: tonic::Status,
    },
    /// A call the follower makes besides the stream failed.
    #[error("{call}: {}", .status.message())]
    Call {
        call: &'static str,
        #[source]
        status: tonic::Status,
    },
}

/// Connects to `url` with the endpoint's settings made by `configure`,
/// bounded by [`CONNECT_TIMEOUT`].
pub(crate) async fn connect(url: &str, configure: impl FnOnce(Endpoint) -> Endpoint) -> Result<Channel, FollowError> {
    let ep = Endpoint::from_shared(url.to_owned())
        .map_err(|source| FollowError::Url { url: url.to_owned(), source })?
        .connect_timeout(CONNECT_TIMEOUT)
        .tcp_nodelay(true);
    tokio::time::timeout(CONNECT_TIMEOUT * 2, configure(ep).connect())
        .await
        .map_err(|_| FollowError::ConnectTimeout)?
        .map_err(FollowError::Connect)
}

/// Makes `call`, the request that opens a stream, bounded like connecting.
pub(crate) async fn open_stream<T>(
    call: &'static str,
    request: impl Future<Output = Result<tonic::Response<T>, tonic::Status>>,
) -> Result<T, FollowError> {
    let resp = tokio::time::timeout(CONNECT_TIMEOUT * 2, request)
        .await
        .map_err(|_| FollowError::CallTimeout { call })?
        .map_err(|status| FollowError::Refused { call, status })?;
    Ok(resp.into_inner())
}

/// How a follower wants the election's liveness shown on a quiet stream.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Beat {
    /// A heartbeat every advert interval (at most every second, at least
    /// every [`ADVERT_BEAT_MIN`]) while the unit advertises (active or
    /// stopping), every [`IDLE_BEAT`] otherwise;
    /// the service judges the election's liveness from them itself (the
    /// takeover's core, T4: only the active's addresses need the fast beat).
    EveryAdvert,
    /// A heartbeat this often; the follower itself ends a stream that has
    /// been silent for [`STALE_BEATS`] of them (the election hangs with its
    /// connection up) and opens a new one.
    Every(Duration),
}

/// Missed heartbeats after which a [`Beat::Every`] follower judges the
/// election hung.
pub const STALE_BEATS: u32 = 3;

/// The shortest heartbeat of a [`Beat::EveryAdvert`] follower: its
/// judgement waits for [`STALE_BEATS`] of them, and a judgement sooner than
/// 300 ms would mistake a scheduling delay for a hung election, so faster
/// beats (an advert every 10 or 20 ms) would buy nothing.
pub const ADVERT_BEAT_MIN: Duration = Duration::from_millis(100);

/// A [`Beat::EveryAdvert`] follower's heartbeat while the unit does not
/// advertise.
pub const IDLE_BEAT: Duration = Duration::from_secs(5);

/// No HTTP/2 keepalive pings on these local streams: the heartbeats show
/// the election's liveness, and its death closes the connection at once.
async fn open(url: &str, follower: &str, beat: Beat) -> Result<tonic::Streaming<pb::WatchRoleResponse>, FollowError> {
    let channel = connect(url, |ep| ep).await?;
    let mut client = ElectionServiceClient::new(crate::admin::authed(channel));
    let ms = |d: Duration| u32::try_from(d.as_millis()).unwrap_or(u32::MAX).max(1);
    let (heartbeat_ms, heartbeat_idle_ms) = match beat {
        Beat::EveryAdvert => (ms(ADVERT_BEAT_MIN), ms(IDLE_BEAT)),
        Beat::Every(d) => (ms(d), 0),
    };
    let req = pb::WatchRoleRequest { follower: follower.to_owned(), heartbeat_ms, heartbeat_idle_ms };
    open_stream("WatchRole", client.watch_role(req)).await
}

/// Starts following the election at `url`; `follower` names the service
/// to the election (the election counts "takeover" as its fail-safe
/// follower, T4; others pass ""), `beat` says how often a quiet stream
/// shows the election alive. The follower task ends when `stop` fires or
/// the [`RoleStream`] is dropped.
pub fn roles(url: String, follower: &'static str, beat: Beat, stop: Shutdown) -> RoleStream {
    let (tx, rx) = mpsc::channel(64);
    let reconnect = Arc::new(Notify::new());
    tokio::spawn(run(url, follower, beat, tx, Arc::clone(&reconnect), stop));
    RoleStream { news: rx, reconnect }
}

async fn run(
    url: String,
    follower: &'static str,
    beat: Beat,
    tx: mpsc::Sender<RoleNews>,
    again: Arc<Notify>,
    mut stop: Shutdown,
) {
    // Beat::EveryAdvert: the service judges, the follower never does.
    let stale = match beat {
        Beat::EveryAdvert => None,
        Beat::Every(d) => Some(d * STALE_BEATS),
    };
    let mut backoff = BACKOFF_MIN;
    let mut attempt = 0u32;
    loop {
        let opened = tokio::select! {
            r = open(&url, follower, beat) => r,
            () = stop.wait() => return,
            () = tx.closed() => return,
        };
        let news = match opened {
            Ok(mut stream) => {
                attempt = 0;
                let mut delivered = false;
                // Registered for this stream now: a reconnect asked from
                // here on ends it, even one asked while a message is being
                // handed over below (a `Notified` hears `notify_waiters`
                // from its creation, polled or not).
                let reconnect = again.notified();
                tokio::pin!(reconnect);
                let why = loop {
                    let msg = tokio::select! {
                        m = stream.message() => m,
                        () = &mut reconnect => break "no sign of life from the election".to_owned(),
                        () = silence(stale) => break format!(
                            "no message, not even a heartbeat, for {} ms (the election hangs?)",
                            stale.unwrap_or_default().as_millis()
                        ),
                        () = stop.wait() => return,
                    };
                    let received = Instant::now();
                    match msg {
                        Ok(Some(m)) => match RoleEvent::try_from(&m) {
                            Ok(event) => {
                                let first_of_stream = !delivered;
                                delivered = true;
                                backoff = BACKOFF_MIN;
                                if tx.send(RoleNews::Event { event, first_of_stream, received }).await.is_err() {
                                    return;
                                }
                            }
                            Err(e) => break format!("unreadable message: {e}"),
                        },
                        Ok(None) => break "the election closed it".to_owned(),
                        Err(s) if s.message().is_empty() => break format!("{:?}", s.code()),
                        Err(s) => break s.message().to_owned(),
                    }
                };
                RoleNews::Lost { why, delivered }
            }
            Err(why) => {
                attempt += 1;
                RoleNews::ConnectFailed { why: why.to_string(), attempt }
            }
        };
        if tx.send(news).await.is_err() {
            return;
        }
        tokio::select! {
            () = tokio::time::sleep(backoff) => {}
            () = stop.wait() => return,
        }
        backoff = (backoff * 2).min(BACKOFF_MAX);
    }
}

/// Completes after `d` (never with `None`).
async fn silence(d: Option<Duration>) {
    match d {
        Some(d) => tokio::time::sleep(d).await,
        None => std::future::pending().await,
    }
}

/// The heartbeat [`role_watch`] asks for: the role stream of a service
/// that only needs the role is judged hung after [`STALE_BEATS`] of them
/// (15 s; only its health says so, the takeover's fail-safe is separate).
pub const ROLE_WATCH_BEAT: Duration = Duration::from_secs(5);

/// The current role as the election last said, `None` while no stream is
/// live (the role is then unknown: take no writes, send no state). For
/// services that need nothing else from the stream.
pub fn role_watch(url: String, stop: Shutdown) -> watch::Receiver<Option<Role>> {
    let (tx, rx) = watch::channel(None);
    let mut stream = roles(url, "", Beat::Every(ROLE_WATCH_BEAT), stop);
    tokio::spawn(async move {
        while let Some(n) = stream.news.recv().await {
            let role = match n {
                RoleNews::Event { event, .. } if event.kind == RoleEventKind::Heartbeat => continue,
                RoleNews::Event { event, .. } => Some(event.role),
                RoleNews::Lost { why, delivered } => {
                    if delivered {
                        tracing::debug!("role stream from the election lost: {why}");
                    }
                    None
                }
                RoleNews::ConnectFailed { .. } => None,
            };
            tx.send_if_modified(|r| std::mem::replace(r, role) != role);
            if tx.is_closed() {
                return;
            }
        }
    });
    rx
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug)]
    struct E(&'static str, Option<Box<Self>>);
    impl std::fmt::Display for E {
        fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
            f.write_str(self.0)
        }
    }
    impl std::error::Error for E {
        fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
            self.1.as_deref().map(|e| e as _)
        }
    }

    #[test]
    fn error_chains_say_each_cause_once() {
        let e = E(
            "transport error",
            Some(Box::new(E(
                "tcp connect error",
                Some(Box::new(E("tcp connect error", Some(Box::new(E("Connection refused", None)))))),
            ))),
        );
        assert_eq!(error_chain(&e), "transport error: tcp connect error: Connection refused");
    }

    #[test]
    fn unspecified_listen_addresses_mean_this_host() {
        assert_eq!(election_url("0.0.0.0:7870".parse().unwrap()), "http://127.0.0.1:7870");
        assert_eq!(election_url("127.0.0.2:7870".parse().unwrap()), "http://127.0.0.2:7870");
    }
}
