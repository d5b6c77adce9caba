//! The role follower against a scripted election on a local port: every
//! message arrives as a domain event, a reconnect ends the stream that is
//! open when it is asked, and one asked while no stream is open does not
//! end the next.

use std::time::Duration;

use duet_carp::{Role, RoleEventKind};
use duet_runtime::follow::{self, RoleNews};
use duet_runtime::shutdown;
use duet_testkit::ScriptedElection;
use tokio::sync::mpsc;

async fn next(news: &mut mpsc::Receiver<RoleNews>) -> RoleNews {
    tokio::time::timeout(Duration::from_secs(5), news.recv()).await.expect("news within 5 s").expect("follower alive")
}

#[tokio::test]
async fn a_reconnect_ends_the_open_stream_only() {
    let election = ScriptedElection::new(Role::Standby);
    let (stop_trigger, stop) = shutdown::channel();
    let at = election.clone().serve_on(std::net::Ipv4Addr::LOCALHOST, stop.clone().future()).await;
    let url = format!("http://{at}");
    let mut roles = follow::roles(url, "takeover", follow::Beat::EveryAdvert, stop);

    // The snapshot, as a domain event, first of its stream.
    let RoleNews::Event { event, first_of_stream: true, .. } = next(&mut roles.news).await else {
        panic!("no snapshot first");
    };
    assert_eq!((event.kind, event.role, event.seq), (RoleEventKind::Snapshot, Role::Standby, 1));
    assert_eq!(election.last_follower(), "takeover");

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
    election.refuse(true);
    roles.reconnect();
    let RoleNews::Lost { .. } = next(&mut roles.news).await else { panic!("not ended") };
    let RoleNews::ConnectFailed { attempt: 1, .. } = next(&mut roles.news).await else { panic!("not refused") };
    roles.reconnect();
    election.refuse(false);
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

/// A follower that asked for a slow beat judges a silent election hung
/// after three of them (the stand-in never beats) and opens a new stream.
#[tokio::test]
async fn a_follower_with_its_own_beat_ends_a_silent_stream_after_three() {
    let election = ScriptedElection::new(Role::Active);
    let (stop_trigger, stop) = shutdown::channel();
    let at = election.clone().serve_on(std::net::Ipv4Addr::LOCALHOST, stop.clone().future()).await;
    let beat = Duration::from_millis(100);
    let mut roles = follow::roles(format!("http://{at}"), "", follow::Beat::Every(beat), stop);
    let RoleNews::Event { first_of_stream: true, received, .. } = next(&mut roles.news).await else {
        panic!("no snapshot first");
    };
    let RoleNews::Lost { why, delivered: true } = next(&mut roles.news).await else {
        panic!("the silent stream was not ended");
    };
    let after = received.elapsed();
    assert_eq!(why, "no message, not even a heartbeat, for 300 ms (the election hangs?)");
    assert!(after >= beat * 3 && after < Duration::from_secs(3), "ended after {after:?}");
    let RoleNews::Event { event, first_of_stream: true, .. } = next(&mut roles.news).await else {
        panic!("no new stream");
    };
    assert_eq!(event.seq, 2);
    stop_trigger.fire();
}
