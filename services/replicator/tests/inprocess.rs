//! In process, without root: an active and a standby replicator on loopback
//! addresses, with real mutual TLS on their peer link and a scripted
//! election each (L4 off: no kernel tables are touched). A persistence entry
//! a proxy reports on the active is on the standby in time, the active sees
//! it acknowledged, and each replicator's health follows its election.

use std::net::SocketAddr;
use std::time::Duration;

use duet_carp::Role;
use duet_proto::replicator::v1 as pb;
use duet_proto::replicator::v1::replicator_service_client::ReplicatorServiceClient;
use duet_runtime::shutdown;
use duet_testkit::{LoopbackPair, ScriptedElection, eventually, grpc_health};
use tokio::net::TcpListener;
use tonic_health::pb::health_check_response::ServingStatus;

fn unit_file(pair: &LoopbackPair, name: &str, election: SocketAddr) -> String {
    let base = pair.unit_file(name, election);
    format!("{base}[replicator]\nenabled = true\npeer_port = {}\nl4 = false\nl7 = true\n", pair.addrs.2)
}

const WITHIN: Duration = Duration::from_secs(15);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reported_entry_reaches_the_standby_and_is_acknowledged_health_follows_the_election() {
    let pair = LoopbackPair::new();
    let (trigger, stop) = shutdown::channel();

    let mut urls = Vec::new();
    let mut elections = Vec::new();
    for name in ["lb1", "lb2"] {
        let ip = pair.ip(name);
        // The election's address, served only later.
        let election = TcpListener::bind((ip, 0)).await.expect("bind the election");
        let at = election.local_addr().expect("address");
        let cfg = duet_config::from_toml(&unit_file(&pair, name, at)).expect("unit file");
        let api = TcpListener::bind((ip, 0)).await.expect("bind the API");
        urls.push(format!("http://{}", api.local_addr().expect("address")));
        let s = stop.clone();
        tokio::spawn(async move {
            if let Err(e) = duet_replicator::run(cfg, api, s).await {
                panic!("replicator: {e:#}");
            }
        });
        elections.push(election);
    }

    // No election yet: neither follows a role, neither says it serves.
    tokio::time::sleep(Duration::from_millis(300)).await;
    for url in &urls {
        let s = eventually("an answer from health", WITHIN, || grpc_health(url)).await;
        assert_eq!(s, ServingStatus::NotServing, "{url} serves without its election");
    }

    // The elections come up: lb1 active, lb2 standby.
    let mut it = elections.into_iter();
    let (e1, e2) = (it.next().expect("lb1's"), it.next().expect("lb2's"));
    ScriptedElection::new(Role::Active).serve(e1, stop.clone().future());
    ScriptedElection::new(Role::Standby).serve(e2, stop.clone().future());
    for url in &urls {
        eventually("SERVING once the role is followed", WITHIN, || async {
            (grpc_health(url).await == Some(ServingStatus::Serving)).then_some(())
        })
        .await;
    }

    let mut active = ReplicatorServiceClient::connect(urls[0].clone()).await.expect("the active's API");
    let mut standby = ReplicatorServiceClient::connect(urls[1].clone()).await.expect("the standby's API");
    eventually("the peer link", WITHIN, || {
        let mut c = active.clone();
        async move { c.get_status(pb::GetStatusRequest {}).await.ok()?.into_inner().partner_connected.then_some(()) }
    })
    .await;

    // Bad input is refused whole, naming the field.
    let bad = active
        .report_persistence(pb::ReportPersistenceRequest {
            entries: vec![
                pb::PersistenceEntry { table: "web".into(), key: "a".into(), server: "rs1".into(), ttl_ms: 60_000 },
                pb::PersistenceEntry { table: "web".into(), key: "b".into(), server: "rs1".into(), ttl_ms: 0 },
            ],
        })
        .await
        .expect_err("a zero TTL is refused");
    assert_eq!(bad.code(), tonic::Code::InvalidArgument);
    assert!(bad.message().contains("entries[1].ttl_ms"), "{}", bad.message());

    let entry =
        pb::PersistenceEntry { table: "web".into(), key: "198.18.0.77".into(), server: "rs2".into(), ttl_ms: 600_000 };
    let r = active
        .report_persistence(pb::ReportPersistenceRequest { entries: vec![entry.clone()] })
        .await
        .expect("ReportPersistence")
        .into_inner();
    assert_eq!(r.accepted, 1);

    let got = eventually("the entry on the standby", WITHIN, || {
        let (mut c, key) = (standby.clone(), entry.key.clone());
        async move {
            let l = c.list_persistence(pb::ListPersistenceRequest { table: "web".into() }).await.ok()?.into_inner();
            l.entries.into_iter().find(|e| e.key == key)
        }
    })
    .await;
    assert_eq!((got.table.as_str(), got.server.as_str()), ("web", "rs2"));
    assert!(got.ttl_ms > 500_000 && got.ttl_ms <= 600_000, "TTL carried: {}", got.ttl_ms);
    // Only the first entry of the refused request is nowhere.
    let none = standby.list_persistence(pb::ListPersistenceRequest { table: "web".into() }).await.expect("list");
    assert!(none.into_inner().entries.iter().all(|e| e.key != "a"), "a refused request was half-applied");

    let s = eventually("the change acknowledged", WITHIN, || {
        let mut c = active.clone();
        async move {
            let s = c.get_status(pb::GetStatusRequest {}).await.ok()?.into_inner();
            (s.last_seq > 0 && s.acked_seq == s.last_seq).then_some(s)
        }
    })
    .await;
    assert!(s.partner_connected && s.changes_sent >= 1, "{s:?}");
    let s = standby.get_status(pb::GetStatusRequest {}).await.expect("status").into_inner();
    assert!(s.changes_received >= 1 && s.persistence >= 1, "{s:?}");

    // U4: a partner two peer-protocol versions away is refused, saying so.
    let certs = pair.dir.path().join("certs");
    let files = duet_runtime::tls::TlsFiles {
        ca: certs.join("ca.pem"),
        cert: certs.join("lb1.pem"),
        key: certs.join("lb1.key"),
    };
    let tls = duet_runtime::tls::PeerTls::load(&files, "lb2", "replicator").expect("lb1's peer TLS");
    let ch = tonic::transport::Endpoint::from_shared(format!("https://{}:{}", pair.ip("lb2"), pair.addrs.2))
        .expect("url")
        .tls_config(tls.client())
        .expect("tls")
        .connect()
        .await
        .expect("the standby's peer port");
    let mut peer = pb::replication_peer_service_client::ReplicationPeerServiceClient::new(ch);
    let hello = pb::ReplicateRequest {
        msg: Some(pb::replicate_request::Msg::Hello(pb::Hello { unit: "lb1".into(), stream_id: 1 })),
    };
    let mut call = tonic::Request::new(tokio_stream::iter(vec![hello]));
    let future = duet_proto::peer_protocol::VERSION + 2;
    call.metadata_mut().insert(duet_proto::peer_protocol::METADATA, future.into());
    let refused = peer.replicate(call).await.expect_err("a partner two versions on is refused");
    assert_eq!(refused.code(), tonic::Code::FailedPrecondition);
    assert!(refused.message().contains(&format!("peer protocol {future}")), "{}", refused.message());
    trigger.fire();
}
