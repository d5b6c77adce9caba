//! The adapter against a real three-member etcd cluster with TLS in a lab
//! (needs root; skips without it, fails with `CI` set): acquire, beat,
//! fencing, release, the watch, a member killed under a session, and the
//! lease running out behind a unit that is gone.

use std::time::{Duration, Instant};

use duet_carp::witness::{Expect, Holder, KeyState, RequestKind, WitnessEvent, WitnessRequest};
use duet_testkit::{EtcdCluster, Lab, in_netns, require_root};
use duet_witness::{Report, Settings, TlsPems};
use tokio::sync::mpsc;

struct Unit {
    requests: mpsc::Sender<WitnessRequest>,
    reports: mpsc::Receiver<Report>,
}

fn settings(c: &EtcdCluster, name: &str, ttl: Duration) -> Settings {
    let read = |f: &str| std::fs::read(c.certs().join(f)).expect("certificate");
    Settings {
        endpoints: c.endpoints().iter().map(|e| format!("https://{e}")).collect(),
        tls: Some(TlsPems {
            ca: read("ca.pem"),
            identity: Some((read(&format!("{name}.pem")), read(&format!("{name}.key")))),
        }),
        key: "/duet/test/witness".into(),
        unit: name.into(),
        lease_ttl: ttl,
        op_timeout: Duration::from_millis(500),
    }
}

impl Unit {
    fn start(settings: Settings) -> Self {
        let (tx, rx) = mpsc::channel(16);
        let (rtx, rrx) = mpsc::channel(64);
        duet_witness::spawn(settings, rx, rtx);
        Self { requests: tx, reports: rrx }
    }

    /// The next event that `pick` takes, within 5 s (others are skipped).
    async fn next<T>(&mut self, what: &str, mut pick: impl FnMut(&WitnessEvent<Instant>) -> Option<T>) -> T {
        let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
        loop {
            match tokio::time::timeout_at(deadline, self.reports.recv()).await {
                Ok(Some(Report::Event(e))) => {
                    if let Some(v) = pick(&e) {
                        return v;
                    }
                }
                Ok(Some(_)) => {}
                Ok(None) => panic!("{what}: the adapter stopped"),
                Err(_) => panic!("{what}: not within 5 s"),
            }
        }
    }

    async fn ask(&mut self, r: WitnessRequest) -> WitnessEvent<Instant> {
        self.requests.send(r).await.expect("adapter running");
        let kind = r.kind();
        self.next("an answer", |e| match e {
            WitnessEvent::BeatAcked { .. } if kind == RequestKind::Beat => Some(e.clone()),
            WitnessEvent::Acquired { .. } if kind == RequestKind::Acquire => Some(e.clone()),
            WitnessEvent::Released if kind == RequestKind::Release => Some(e.clone()),
            WitnessEvent::Refused { request, .. } if *request == kind => Some(e.clone()),
            WitnessEvent::Failed { request: Some(k), .. } if *k == kind => Some(e.clone()),
            _ => None,
        })
        .await
    }

    async fn observe(&mut self, want: impl Fn(&KeyState) -> bool) -> KeyState {
        self.next("the key as wanted", |e| match e {
            WitnessEvent::Observed { key, .. } if want(key) => Some(key.clone()),
            _ => None,
        })
        .await
    }
}

fn other(name: &str) -> impl Fn(&KeyState) -> bool + '_ {
    move |k| matches!(k, KeyState::Held { holder: Holder::Other(n), .. } if n == name)
}

#[test]
fn the_adapter_against_a_real_etcd_cluster() {
    if !require_root("the_adapter_against_a_real_etcd_cluster") {
        return;
    }
    let mut lab = Lab::new("witnessad").unwrap();
    let lan = lab.segment("lan").unwrap();
    let u = lab.host("u").unwrap();
    lab.attach(u, lan, "eth0", &["198.18.0.1/24"]).unwrap();
    let addrs = ["198.18.0.21/24", "198.18.0.22/24", "198.18.0.23/24"];
    let mut c = EtcdCluster::start(&mut lab, lan, &addrs, &["lb1", "lb2"], true).unwrap();
    let ttl = Duration::from_secs(2);
    let (s1, s2) = (settings(&c, "lb1", ttl), settings(&c, "lb2", ttl));
    // Both adapters run in the unit's namespace; the cluster's members are
    // killed from there too (a signal needs no namespace).
    in_netns(&lab.ns(u), move || {
        let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().unwrap();
        rt.block_on(async move {
            let mut a = Unit::start(s1);
            let mut b = Unit::start(s2);
            // Connected: each has a lease and sees no key.
            for u in [&mut a, &mut b] {
                u.next("a lease", |e| matches!(e, WitnessEvent::LeaseKept { .. }).then_some(())).await;
                u.observe(|k| *k == KeyState::Absent).await;
            }
            // lb1 takes the free key and beats; lb2 sees each beat.
            let WitnessEvent::Acquired { mod_revision: r1, .. } = a.ask(WitnessRequest::Acquire(Expect::Absent)).await
            else {
                panic!("acquired")
            };
            assert!(matches!(b.observe(other("lb1")).await, KeyState::Held { mod_revision, .. } if mod_revision == r1));
            let WitnessEvent::BeatAcked { mod_revision: r2, .. } = a.ask(WitnessRequest::Beat).await else {
                panic!("beat")
            };
            assert!(r2 > r1, "a beat moves the key's mod_revision");
            b.observe(|k| matches!(k, KeyState::Held { mod_revision, .. } if *mod_revision == r2)).await;
            // Fencing: lb2's transactions on what it no longer sees fail,
            // and say what is there.
            for expect in [Expect::Absent, Expect::ModRevision(r1)] {
                match b.ask(WitnessRequest::Acquire(expect)).await {
                    WitnessEvent::Refused {
                        key: KeyState::Held { holder: Holder::Other(n), mod_revision }, ..
                    } => {
                        assert_eq!((n.as_str(), mod_revision), ("lb1", r2));
                    }
                    e => panic!("{expect:?}: {e:?}"),
                }
            }
            // lb2 takes the key on the revision it saw last; lb1's next beat
            // is refused.
            assert!(matches!(
                b.ask(WitnessRequest::Acquire(Expect::ModRevision(r2))).await,
                WitnessEvent::Acquired { .. }
            ));
            match a.ask(WitnessRequest::Beat).await {
                WitnessEvent::Refused { key, .. } => assert!(other("lb2")(&key), "{key:?}"),
                e => panic!("{e:?}"),
            }
            // lb2 releases: gone for both; lb1 releasing what is not its own changes nothing.
            assert_eq!(a.ask(WitnessRequest::Release).await, WitnessEvent::Released);
            assert_eq!(b.ask(WitnessRequest::Release).await, WitnessEvent::Released);
            a.observe(|k| *k == KeyState::Absent).await;
            assert!(matches!(a.ask(WitnessRequest::Acquire(Expect::Absent)).await, WitnessEvent::Acquired { .. }));

            // The first member dies under both sessions: they move to the
            // next one, keep their leases, and lb1 still holds the key.
            c.kill(0).unwrap();
            a.next("the session failed", |e| matches!(e, WitnessEvent::Failed { request: None, .. }).then_some(()))
                .await;
            a.next("a lease again", |e| matches!(e, WitnessEvent::LeaseKept { .. }).then_some(())).await;
            let k = a.observe(|_| true).await;
            assert!(matches!(k, KeyState::Held { holder: Holder::This, .. }), "the same lease: {k:?}");
            assert!(matches!(a.ask(WitnessRequest::Beat).await, WitnessEvent::BeatAcked { .. }));

            // b catches up first: what its watch saw while member 0 went
            // away may still be queued (a delete and a put again, depending
            // on which member each session was on); the beat's put comes
            // after it.
            b.observe(other("lb1")).await;
            // lb1 goes away without releasing: the key goes with its lease,
            // a TTL later.
            let gone = Instant::now();
            drop(a);
            b.observe(|k| *k == KeyState::Absent).await;
            let took = gone.elapsed();
            assert!(took >= Duration::from_millis(1500) && took <= ttl + Duration::from_secs(2), "{took:?}");
            drop(c);
        });
    })
    .unwrap();
}
