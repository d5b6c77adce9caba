//! The reports to the unit's election service: what was applied, sent at
//! once, and repeated every second while it is a failure (the election
//! resigns after a few, T4) or did not get through. The role stream itself
//! is followed with [`duet_runtime::follow`].
//!
//! ```text
//!  driver ── latest report (watch) ──► reporter task ── ReportApplied (at once; failures every second) ──► election
//! ```

use std::time::Duration;

use duet_proto::election::v1 as pb;
use duet_proto::election::v1::election_service_client::ElectionServiceClient;
use duet_runtime::admin::{AdminChannel, authed};
use tokio::sync::watch;
use tonic::transport::Endpoint;

/// The follower name the election counts as its takeover service (T4).
pub(crate) const FOLLOWER: &str = "takeover";

/// Bound on connecting.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(1);

/// Bound on one report.
pub(crate) const REPORT_TIMEOUT: Duration = Duration::from_millis(800);

/// How often a failure report, or one that did not get through, is
/// repeated.
const REPEAT: Duration = Duration::from_secs(1);

fn endpoint(url: &str) -> anyhow::Result<Endpoint> {
    Ok(Endpoint::from_shared(url.to_owned())?
        .connect_timeout(CONNECT_TIMEOUT)
        // No HTTP/2 keepalive pings: every report is bounded by
        // REPORT_TIMEOUT, so a hung election shows as failed reports.
        .tcp_nodelay(true))
}

/// One `ReportApplied` to the election.
pub(crate) type Report = pb::ReportAppliedRequest;

/// Why a report did not get through.
#[derive(Debug, thiserror::Error)]
pub(crate) enum ReportError {
    /// The election refused it or could not be reached (the status's message).
    #[error("{}", .0.message())]
    Refused(#[source] tonic::Status),
    /// No answer within [`REPORT_TIMEOUT`].
    #[error("no answer in time")]
    Timeout,
}

/// Sends `report` once, bounded by [`REPORT_TIMEOUT`].
pub(crate) async fn send_report(
    client: &mut ElectionServiceClient<AdminChannel>,
    report: Report,
) -> Result<(), ReportError> {
    match tokio::time::timeout(REPORT_TIMEOUT, client.report_applied(report)).await {
        Ok(Ok(_)) => Ok(()),
        Ok(Err(s)) => Err(ReportError::Refused(s)),
        Err(_) => Err(ReportError::Timeout),
    }
}

/// A client on a lazily (re)connected channel, for reports.
pub(crate) fn report_client(url: &str) -> anyhow::Result<ElectionServiceClient<AdminChannel>> {
    Ok(ElectionServiceClient::new(authed(endpoint(url)?.connect_lazy())))
}

/// The reporter task: sends each new report at once and repeats it every
/// second while it is a failure or did not get through.
pub(crate) async fn reporter(url: String, mut reports: watch::Receiver<Option<Report>>) -> anyhow::Result<()> {
    let mut client = report_client(&url)?;
    let mut failing = false;
    let mut first = true;
    loop {
        // Repeated only while it matters: a failure report (the election
        // counts them and resigns after a few, T4) or one that did not get
        // through. A good report that arrived stands; the election learns
        // of a dead takeover from its role stream closing.
        let repeat = failing || reports.borrow().as_ref().is_some_and(|r| !r.ok);
        if !std::mem::take(&mut first) {
            tokio::select! {
                changed = reports.changed() => if changed.is_err() { return Ok(()) },
                () = tokio::time::sleep(REPEAT), if repeat => {}
            }
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
