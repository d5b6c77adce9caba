//! In process, without root: an active and a standby configsync on
//! loopback addresses, with real mutual TLS on their peer link and a
//! scripted election each; the generation follower on the standby. A
//! change of the HA settings committed on the active reaches the standby's
//! follower as the equal model value.

use std::net::{Ipv4Addr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

use duet_carp::Role;
use duet_model::HaSettings;
use duet_proto::configsync::v1 as cs;
use duet_proto::configsync::v1::apply_config_request::Change;
use duet_proto::configsync::v1::config_sync_service_client::ConfigSyncServiceClient;
use duet_runtime::generations::{Generation, generations};
use duet_runtime::shutdown;
use duet_testkit::{LoopbackPair, ScriptedElection, eventually, grpc_health};
use tokio::net::TcpListener;
use tokio::sync::watch;

fn unit_file(pair: &LoopbackPair, name: &str, election: SocketAddr) -> String {
    let base = pair.unit_file(name, election);
    format!("{base}listen = \"{}:0\"\npeer_port = {}\nsync_interval_s = 5\n", pair.ip(name), pair.addrs.2)
}

/// Serves a scripted election on `ip`; returns its address.
async fn election(ip: Ipv4Addr, role: Role, stop: &shutdown::Shutdown) -> SocketAddr {
    ScriptedElection::new(role).serve_on(ip, stop.clone().future()).await
}

/// Waits until the follower offers a generation that `f` accepts.
async fn wait_for(
    rx: &mut watch::Receiver<Option<Arc<Generation>>>,
    what: &str,
    f: impl Fn(&Generation) -> bool,
) -> Arc<Generation> {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    loop {
        let last = rx.borrow_and_update().clone();
        if let Some(g) = last.filter(|g| f(g)) {
            return g;
        }
        match tokio::time::timeout_at(deadline, rx.changed()).await {
            Ok(r) => r.expect("the follower runs"),
            Err(_) => panic!("timed out waiting for {what}; last: {:?}", rx.borrow().as_deref()),
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_ha_change_on_the_active_reaches_the_standbys_follower_as_the_equal_model_value() {
    let pair = LoopbackPair::new();
    let (trigger, stop) = shutdown::channel();

    let mut units = Vec::new();
    for (name, role) in [("lb1", Role::Active), ("lb2", Role::Standby)] {
        let ip = pair.ip(name);
        let e = election(ip, role, &stop).await;
        let cfg = duet_config::from_toml(&unit_file(&pair, name, e)).expect("unit file");
        let api = TcpListener::bind((ip, 0)).await.expect("bind the API");
        let url = format!("http://{}", api.local_addr().expect("address"));
        let s = stop.clone();
        tokio::spawn(async move {
            if let Err(e) = duet_configsync::run(cfg, api, s).await {
                panic!("configsync: {e:#}");
            }
        });
        units.push(url);
    }
    let mut standby = generations(units[1].clone(), true, stop.clone());

    // The active makes generation 1 from its file and pushes it.
    let first = wait_for(&mut standby, "generation 1 on the standby", |g| g.generation >= 1).await;
    assert_eq!(first.content.ha.timeout_s, 3);
    assert_eq!(first.content.interfaces[0].name, "lo");

    // An HA change committed on the active.
    let mut active = ConfigSyncServiceClient::connect(units[0].clone()).await.expect("the active's API");
    let current = active
        .get_config(cs::GetConfigRequest { section: "ha".into() })
        .await
        .expect("GetConfig")
        .into_inner()
        .image
        .expect("an image");
    let want = HaSettings { timeout_s: 6, initial_wait_s: 12, l7_updates: false, ..first.content.ha.clone() };
    let r = active
        .apply_config(cs::ApplyConfigRequest {
            base_generation: current.generation,
            comment: "test".into(),
            change: Some(Change::Ha(duet_proto::config::v1::HaSettings::from(&want))),
        })
        .await
        .expect("the change is committed")
        .into_inner();

    let got = wait_for(&mut standby, "the change on the standby", |g| g.generation >= r.generation).await;
    assert_eq!(got.content.ha, want);
    assert_eq!((got.generation, got.hash.as_str(), got.origin.as_str()), (r.generation, r.hash.as_str(), "synced"));
    assert_eq!(got.content.interfaces, first.content.interfaces);
    trigger.fire();
}

/// Health tells the truth: NOT_SERVING while configsync does not follow the
/// election's role (the election is not there), SERVING once it does.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn health_is_serving_only_while_the_role_is_followed() {
    use tonic_health::pb::health_check_response::ServingStatus;
    let pair = LoopbackPair::new();
    let (trigger, stop) = shutdown::channel();
    // The election's address, free for now.
    let election_addr = TcpListener::bind((pair.addrs.0, 0)).await.expect("bind").local_addr().expect("address");
    let cfg = duet_config::from_toml(&unit_file(&pair, "lb1", election_addr)).expect("unit file");
    let api = TcpListener::bind((pair.addrs.0, 0)).await.expect("bind the API");
    let url = format!("http://{}", api.local_addr().expect("address"));
    let s = stop.clone();
    tokio::spawn(async move { duet_configsync::run(cfg, api, s).await });
    let wait = |want: ServingStatus| {
        let url = url.clone();
        async move {
            let what = format!("health {want:?}");
            eventually(&what, Duration::from_secs(10), || async {
                (grpc_health(&url).await == Some(want)).then_some(())
            })
            .await;
        }
    };
    tokio::time::sleep(Duration::from_millis(500)).await;
    wait(ServingStatus::NotServing).await;
    // The election comes up on its address: configsync follows it.
    let l = TcpListener::bind(election_addr).await.expect("bind the election");
    ScriptedElection::new(Role::Standby).serve(l, stop.clone().future());
    wait(ServingStatus::Serving).await;
    trigger.fire();
}
