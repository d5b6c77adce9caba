//! The link to the unit's election service: the role stream the driver
//! follows, and the reports of what was applied.
//!
//! ```text
//!  connector task ── WatchRole stream ──► driver (reads it directly) ── ended(healthy) ──► connector
//!  driver ── latest report (watch) ──► reporter task ── ReportApplied (now, then every second) ──► election
//! ```
//!
//! The connector opens the stream and hands it to the driver, which reads
//! it itself: no task hop between a role event arriving and the driver
//! acting on it. When the driver sees the stream end it says so, and the
//! connector opens a new one after a backoff (50 ms doubling to 1 s; back
//! to 50 ms after a stream that delivered its snapshot).

use std::net::SocketAddr;
use std::time::Duration;

use duet_proto::election::v1 as pb;
use duet_proto::election::v1::election_service_client::ElectionServiceClient;
use tokio::sync::{mpsc, oneshot, watch};
use tonic::Streaming;
use tonic::transport::{Channel, Endpoint};

/// The follower name the election counts as its takeover service (T4).
pub(crate) const FOLLOWER: &str = "takeover";

/// First reconnect delay, doubled up to [`BACKOFF_MAX`].
pub(crate) const BACKOFF_MIN: Duration = Duration::from_millis(50);
pub(crate) const BACKOFF_MAX: Duration = Duration::from_secs(1);

/// Bound on connecting and on opening the stream.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(1);

/// Bound on one report.
pub(crate) const REPORT_TIMEOUT: Duration = Duration::from_millis(800);

/// How often the current report is repeated (the heartbeat).
const HEARTBEAT: Duration = Duration::from_secs(1);

/// The election's URL for `listen` (an unspecified address means this host).
pub(crate) fn url(listen: SocketAddr) -> String {
    let mut a = listen;
    if a.ip().is_unspecified() {
        a.set_ip(std::net::Ipv4Addr::LOCALHOST.into());
    }
    format!("http://{a}")
}

fn endpoint(url: &str) -> anyhow::Result<Endpoint> {
    Ok(Endpoint::from_shared(url.to_owned())?
        .connect_timeout(CONNECT_TIMEOUT)
        .tcp_nodelay(true)
        // A hung election (its TCP still up) is noticed by unanswered pings.
        .http2_keep_alive_interval(Duration::from_secs(1))
        .keep_alive_timeout(Duration::from_secs(1))
        .keep_alive_while_idle(true))
}

/// What the connector tells the driver.
#[derive(Debug)]
pub(crate) enum StreamNews {
    /// A new stream; tell `ended` when it ends (true if it delivered at
    /// least its first message).
    Opened { stream: Box<Streaming<pb::WatchRoleResponse>>, ended: oneshot::Sender<bool> },
    /// An attempt failed; another follows after the backoff.
    Failed(String),
}

async fn open(url: &str) -> Result<Streaming<pb::WatchRoleResponse>, String> {
    let ep = endpoint(url).map_err(|e| e.to_string())?;
    let channel = tokio::time::timeout(CONNECT_TIMEOUT * 2, ep.connect())
        .await
        .map_err(|_| "connecting timed out".to_owned())?
        .map_err(|e| format!("cannot connect: {}", source_chain(&e)))?;
    let mut client = ElectionServiceClient::new(channel);
    let req = pb::WatchRoleRequest { follower: FOLLOWER.into() };
    let resp = tokio::time::timeout(CONNECT_TIMEOUT * 2, client.watch_role(req))
        .await
        .map_err(|_| "WatchRole did not answer in time".to_owned())?
        .map_err(|s| format!("WatchRole refused: {}", s.message()))?;
    Ok(resp.into_inner())
}

fn source_chain(e: &dyn std::error::Error) -> String {
    let mut s = e.to_string();
    let mut cur = e.source();
    while let Some(c) = cur {
        s.push_str(": ");
        s.push_str(&c.to_string());
        cur = c.source();
    }
    s
}

/// The connector task: keeps one role stream open for the driver. Ends
/// when the driver is gone.
pub(crate) async fn connector(url: String, news: mpsc::Sender<StreamNews>) -> anyhow::Result<()> {
    let mut backoff = BACKOFF_MIN;
    loop {
        // The driver gone (stopping) ends any wait at once.
        let opened = tokio::select! {
            r = open(&url) => r,
            () = news.closed() => return Ok(()),
        };
        match opened {
            Ok(stream) => {
                let (ended, wait) = oneshot::channel();
                if news.send(StreamNews::Opened { stream: Box::new(stream), ended }).await.is_err() {
                    return Ok(());
                }
                match wait.await {
                    Ok(true) => backoff = BACKOFF_MIN,
                    Ok(false) => {}
                    // The driver dropped the stream without a word: stopping.
                    Err(_) => return Ok(()),
                }
            }
            Err(e) => {
                if news.send(StreamNews::Failed(e)).await.is_err() {
                    return Ok(());
                }
            }
        }
        tokio::select! {
            () = tokio::time::sleep(backoff) => {}
            () = news.closed() => return Ok(()),
        }
        backoff = (backoff * 2).min(BACKOFF_MAX);
    }
}

/// One `ReportApplied` to the election.
pub(crate) type Report = pb::ReportAppliedRequest;

/// Sends `report` once, bounded by [`REPORT_TIMEOUT`].
pub(crate) async fn send_report(client: &mut ElectionServiceClient<Channel>, report: Report) -> Result<(), String> {
    match tokio::time::timeout(REPORT_TIMEOUT, client.report_applied(report)).await {
        Ok(Ok(_)) => Ok(()),
        Ok(Err(s)) => Err(s.message().to_owned()),
        Err(_) => Err("no answer in time".into()),
    }
}

/// A client on a lazily (re)connected channel, for reports.
pub(crate) fn report_client(url: &str) -> anyhow::Result<ElectionServiceClient<Channel>> {
    Ok(ElectionServiceClient::new(endpoint(url)?.connect_lazy()))
}

/// The reporter task: sends each new report at once and repeats the
/// current one every second (the heartbeat the election watches, T4).
pub(crate) async fn reporter(url: String, mut reports: watch::Receiver<Option<Report>>) -> anyhow::Result<()> {
    let mut client = report_client(&url)?;
    let mut tick = tokio::time::interval(HEARTBEAT);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut failing = false;
    loop {
        tokio::select! {
            changed = reports.changed() => if changed.is_err() { return Ok(()) },
            _ = tick.tick() => {}
        }
        let Some(r) = reports.borrow_and_update().clone() else { continue };
        match send_report(&mut client, r).await {
            Ok(()) => {
                if failing {
                    tracing::info!("reports to the election get through again");
                }
                failing = false;
            }
            Err(e) => {
                if !failing {
                    tracing::debug!("cannot report to the election: {e}");
                }
                failing = true;
            }
        }
    }
}
