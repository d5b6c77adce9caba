//! Mutual TLS between two units: the partner is accepted; a certificate
//! from the same CA for another name is refused; another CA fails the
//! handshake.

use std::time::Duration;

use duet_runtime::tls::{PeerTls, TlsFiles};
use tokio_stream::wrappers::TcpListenerStream;
use tonic::transport::{Channel, Server};
use tonic_health::pb::HealthCheckRequest;
use tonic_health::pb::health_client::HealthClient;

fn files(dir: &std::path::Path, unit: &str) -> TlsFiles {
    TlsFiles { ca: dir.join("ca.pem"), cert: dir.join(format!("{unit}.pem")), key: dir.join(format!("{unit}.key")) }
}

/// Why a health check over the peer link failed.
#[derive(Debug)]
enum CallError {
    /// The client's TLS settings were not taken.
    Tls(#[allow(dead_code)] tonic::transport::Error),
    /// The connection (the handshake) failed.
    Connect(#[allow(dead_code)] tonic::transport::Error),
    /// The server answered the call with this status.
    Refused(tonic::Status),
}

async fn call(addr: std::net::SocketAddr, tls: &PeerTls) -> Result<(), CallError> {
    let ch = Channel::from_shared(format!("https://{addr}"))
        .unwrap()
        .tls_config(tls.client())
        .map_err(CallError::Tls)?
        .connect_timeout(Duration::from_secs(3))
        .connect()
        .await
        .map_err(CallError::Connect)?;
    HealthClient::new(ch)
        .check(HealthCheckRequest { service: String::new() })
        .await
        .map(drop)
        .map_err(CallError::Refused)
}

#[tokio::test]
async fn partner_accepted_others_refused() {
    let d = tempfile::tempdir().unwrap();
    duet_testkit::write_certs(d.path(), &["lb1", "lb2", "lb3"]).unwrap();
    let other = tempfile::tempdir().unwrap();
    duet_testkit::write_certs(other.path(), &["lb2"]).unwrap();

    // lb1 serves and expects lb2.
    let server_tls = PeerTls::load(&files(d.path(), "lb1"), "lb2", "configsync").unwrap();
    let check = server_tls.clone();
    let (_reporter, health) = tonic_health::server::health_reporter();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let svc = tonic_health::pb::health_server::HealthServer::with_interceptor(
        tonic_health::server::HealthService::from_health_reporter(_reporter.clone()),
        move |req: tonic::Request<()>| {
            check.check_peer(&req)?;
            Ok(req)
        },
    );
    drop(health);
    tokio::spawn(
        Server::builder()
            .tls_config(server_tls.server())
            .unwrap()
            .add_service(svc)
            .serve_with_incoming(TcpListenerStream::new(listener)),
    );

    let lb2 = PeerTls::load(&files(d.path(), "lb2"), "lb1", "configsync").unwrap();
    call(addr, &lb2).await.expect("the partner is accepted");

    let lb3 = PeerTls::load(&files(d.path(), "lb3"), "lb1", "configsync").unwrap();
    let Err(CallError::Refused(s)) = call(addr, &lb3).await else { panic!("lb3 is refused by the server") };
    assert!(s.code() == tonic::Code::PermissionDenied && s.message().contains("partner \"lb2\""), "{s:?}");

    let foreign = PeerTls::load(&files(other.path(), "lb2"), "lb1", "configsync").unwrap();
    assert!(call(addr, &foreign).await.is_err(), "a certificate from another CA fails the handshake");

    // A client that expects a different server name refuses lb1's certificate.
    let wrong_name = PeerTls::load(&files(d.path(), "lb2"), "lb9", "configsync").unwrap();
    assert!(call(addr, &wrong_name).await.is_err());
}

#[test]
fn missing_files_name_the_field() {
    let e = PeerTls::load(&files(std::path::Path::new("/nonexistent"), "lb1"), "lb2", "configsync")
        .unwrap_err()
        .to_string();
    assert!(e.contains("configsync.tls_ca") && e.contains("duetctl certs"), "{e}");
}

/// What `duet check` finds in a link's material: nothing for the unit's
/// own files; another unit's certificate, another CA's, or another key,
/// each named with its setting.
#[test]
fn verify_finds_the_wrong_name_the_wrong_ca_and_the_wrong_key() {
    let d = tempfile::tempdir().unwrap();
    duet_testkit::write_certs(d.path(), &["lb1", "lb2"]).unwrap();
    let other = tempfile::tempdir().unwrap();
    duet_testkit::write_certs(other.path(), &["lb1"]).unwrap();
    let good = PeerTls::load(&files(d.path(), "lb1"), "lb2", "configsync").unwrap();
    assert_eq!(good.verify("lb1", "configsync"), Vec::<String>::new());
    let found = good.verify("lb3", "configsync");
    assert!(found.len() == 1 && found[0].contains("not issued to this unit's name \"lb3\""), "{found:?}");
    let mut f = files(d.path(), "lb1");
    f.ca = other.path().join("ca.pem");
    let found = PeerTls::load(&f, "lb2", "configsync").unwrap().verify("lb1", "configsync");
    assert!(found.len() == 1 && found[0].starts_with("configsync.tls_cert: not valid"), "{found:?}");
    let mut f = files(d.path(), "lb1");
    f.key = d.path().join("lb2.key");
    let found = PeerTls::load(&f, "lb2", "configsync").unwrap().verify("lb1", "configsync");
    assert!(found.len() == 1 && found[0].starts_with("configsync.tls_key: not the key"), "{found:?}");
}
