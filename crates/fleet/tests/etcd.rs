//! The fleet adapter against a real three-member etcd cluster with TLS in
//! a lab (needs root; skips without it, fails with `CI` set): a pair
//! seeded, changes written by compare-and-swap, two writers racing on one
//! base, the history bounded, a unit's session (status under a lease, the
//! head followed), and etcd's auth keeping a unit to its own pair's keys.

use std::time::Duration;

use duet_fleet::session::{Command, Event, SessionSettings};
use duet_fleet::{Fleet, FleetError, Settings, UnitRecord, Written};
use duet_image::change::Change;
use duet_proto::config::v1::{HaSettings, Image, Interface, Provenance};
use duet_testkit::{EtcdCluster, Lab, in_netns, require_root};
use duet_witness::TlsPems;
use tokio::sync::{mpsc, oneshot};

fn settings(c: &EtcdCluster, name: &str) -> Settings {
    let read = |f: &str| std::fs::read(c.certs().join(f)).expect("certificate");
    Settings {
        endpoints: c.endpoints().iter().map(|e| format!("https://{e}")).collect(),
        tls: Some(TlsPems {
            ca: read("ca.pem"),
            identity: Some((read(&format!("{name}.pem")), read(&format!("{name}.key")))),
        }),
        prefix: "/duet".into(),
        op_timeout: Duration::from_secs(2),
    }
}

fn image(timeout_s: u32) -> Image {
    Image {
        generation: 4,
        ha: Some(HaSettings { timeout_s, ..Default::default() }),
        interfaces: vec![Interface {
            name: "eth0".into(),
            unit1: "198.18.0.1/24".into(),
            unit2: "198.18.0.2/24".into(),
            shared: "198.18.0.10/24".into(),
            ha_check: true,
        }],
        provenance: Some(Provenance { unit: "lb1".into(), origin: "committed".into(), ..Default::default() }),
        ..Default::default()
    }
}

fn who(w: &str) -> Provenance {
    Provenance { unit: w.into(), origin: "committed".into(), ..Default::default() }
}

fn ha(timeout_s: u32) -> Change {
    Change::Ha(HaSettings { timeout_s, ..Default::default() })
}

async fn next_event(rx: &mut mpsc::Receiver<Event>, what: &str, pick: impl Fn(&Event) -> bool) -> Event {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    loop {
        match tokio::time::timeout_at(deadline, rx.recv()).await {
            Ok(Some(e)) if pick(&e) => return e,
            Ok(Some(_)) => {}
            Ok(None) => panic!("{what}: the session stopped"),
            Err(_) => panic!("{what}: not within 10 s"),
        }
    }
}

#[test]
fn the_fleet_adapter_against_a_real_etcd_cluster() {
    if !require_root("the_fleet_adapter_against_a_real_etcd_cluster") {
        return;
    }
    let mut lab = Lab::new("fleetad").unwrap();
    let lan = lab.segment("lan").unwrap();
    let u = lab.host("u").unwrap();
    lab.attach(u, lan, "eth0", &["198.18.0.1/24"]).unwrap();
    let addrs = ["198.18.0.21/24", "198.18.0.22/24", "198.18.0.23/24"];
    let c = EtcdCluster::start(&mut lab, lan, &addrs, &["root", "ops", "lb1", "lb3"], true).unwrap();
    let (ops, lb1, lb3) = (settings(&c, "ops"), settings(&c, "lb1"), settings(&c, "lb3"));
    let ns = lab.ns(u);
    let lb1_session = lb1.clone();
    in_netns(&ns, move || {
        let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
        rt.block_on(async move {
            let f = Fleet::connect(&ops).await.unwrap();
            // A pair joins with its image, under its own generation; a
            // second seed leaves it.
            assert_eq!(f.seed("edge-a", &image(3)).await.unwrap(), None);
            let head = f.seed("edge-a", &image(9)).await.unwrap().expect("already seeded");
            assert_eq!(head.generation, 4);
            assert_eq!(f.require("edge-a").await.unwrap().ha.unwrap().timeout_s, 3);

            // A change, then the same change again (nothing written), then
            // an invalid one (nothing written, the field named).
            let Written::Committed(g5) = f.apply("edge-a", None, ha(6), who("ops"), 3).await.unwrap() else {
                panic!("committed")
            };
            assert_eq!(g5.generation, 5);
            assert!(matches!(f.apply("edge-a", None, ha(6), who("ops"), 3).await.unwrap(), Written::Unchanged(_)));
            let e = f.apply("edge-a", None, ha(4), who("ops"), 3).await.unwrap_err();
            assert!(matches!(&e, FleetError::Invalid(p) if p[0].field == "ha.timeout_s"), "{e}");
            assert_eq!(f.require("edge-a").await.unwrap().generation, 5, "nothing half-applied");

            // Two writers on one base, many times: exactly one wins and
            // the other is told the winner's generation.
            for round in 0..20u32 {
                let base = f.require("edge-a").await.unwrap().generation;
                let (x, y) = (f.clone(), Fleet::connect(&ops).await.unwrap());
                let (a, b) = tokio::join!(
                    x.apply("edge-a", Some(base), ha(3 + 3 * (round % 2)), who("ops-x"), 3),
                    y.apply("edge-a", Some(base), ha(9 + 3 * (round % 2)), who("ops-y"), 3),
                );
                let won = [&a, &b].iter().filter(|r| matches!(r, Ok(Written::Committed(_)))).count();
                assert_eq!(won, 1, "round {round}: {a:?} {b:?}");
                let lost = if a.is_ok() { b } else { a };
                assert!(
                    matches!(lost, Err(FleetError::Overtaken { base: b, newer }) if b == base && newer == base + 1),
                    "round {round}: {lost:?}"
                );
            }
            // The history keeps the last three generations.
            let h = f.history("edge-a").await.unwrap();
            let head = f.require("edge-a").await.unwrap().generation;
            assert_eq!(h.iter().map(|i| i.generation).collect::<Vec<_>>(), vec![head - 2, head - 1, head]);
            assert!(matches!(f.image("edge-a", 5).await, Err(FleetError::NoSuchGeneration { .. })));
            assert!(matches!(f.require("nowhere").await, Err(FleetError::NoImage { .. })));

            // A unit's session: the head at start, its status under a
            // lease, a change by someone else followed, the key gone when
            // the unit stops.
            let (ctx, crx) = mpsc::channel(8);
            let (etx, mut erx) = mpsc::channel(8);
            let s = SessionSettings {
                fleet: lb1_session,
                pair: "edge-a".into(),
                unit: "lb1".into(),
                lease_ttl: Duration::from_secs(3),
            };
            let task = duet_fleet::session::spawn(s, crx, etx);
            let got =
                next_event(&mut erx, "the head at start", |e| matches!(e, Event::Head { initial: true, .. })).await;
            assert!(matches!(got, Event::Head { image: Some(i), .. } if i.generation == head));
            let record = UnitRecord {
                unit: "lb1".into(),
                pair: "edge-a".into(),
                role: "active".into(),
                generation: head,
                ..Default::default()
            };
            ctx.send(Command::Publish(record.clone())).await.unwrap();
            let Written::Committed(n) = f.apply("edge-a", None, ha(15), who("ops"), 3).await.unwrap() else { panic!() };
            let got = next_event(&mut erx, "the change", |e| matches!(e, Event::Head { initial: false, .. })).await;
            assert!(
                matches!(got, Event::Head { image: Some(i), .. } if i.generation == n.generation && i.hash == n.hash)
            );
            assert_eq!(f.units("edge-a").await.unwrap(), vec![record]);
            assert_eq!(f.pairs().await.unwrap(), vec!["edge-a".to_owned()]);
            // A write through the session, on a stale base.
            let (tx, rx) = oneshot::channel();
            ctx.send(Command::Write { base: head, content: image(3), provenance: who("lb1"), keep: 3, reply: tx })
                .await
                .unwrap();
            assert!(matches!(rx.await.unwrap(), Err(FleetError::Overtaken { newer, .. }) if newer == n.generation));
            drop(ctx);
            tokio::time::timeout(Duration::from_secs(5), task).await.expect("the session stops").unwrap();
            assert!(f.units("edge-a").await.unwrap().is_empty(), "the status key goes with the unit");

            // Another pair for the auth check.
            assert_eq!(f.seed("edge-b", &image(3)).await.unwrap(), None);
        });
    })
    .unwrap();

    // etcd's auth on: the role of pair edge-a may read and write its keys;
    // lb1 has it, lb3 (a unit of edge-b) does not.
    for args in [
        &["user", "add", "root", "--no-password"][..],
        &["user", "grant-role", "root", "root"],
        &["role", "add", "duet-pair-edge-a"],
        &["role", "grant-permission", "--prefix=true", "duet-pair-edge-a", "readwrite", "/duet/pairs/edge-a/"],
        &["user", "add", "lb1", "--no-password"],
        &["user", "grant-role", "lb1", "duet-pair-edge-a"],
        &["user", "add", "lb3", "--no-password"],
        &["auth", "enable"],
    ] {
        c.etcdctl(&lab, "root", args).unwrap_or_else(|e| panic!("etcdctl {args:?}: {e}"));
    }
    in_netns(&ns, move || {
        let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
        rt.block_on(async move {
            let own = Fleet::connect(&lb1).await.unwrap();
            assert!(matches!(own.apply("edge-a", None, ha(6), who("lb1"), 3).await, Ok(Written::Committed(_))));
            let e = own.current("edge-b").await.unwrap_err();
            assert!(matches!(e, FleetError::Denied { .. }), "{e}");
            assert!(e.to_string().contains("common name is the etcd user"), "{e}");
            let stranger = Fleet::connect(&lb3).await.unwrap();
            assert!(matches!(stranger.current("edge-a").await, Err(FleetError::Denied { .. })));
        });
    })
    .unwrap();
}
