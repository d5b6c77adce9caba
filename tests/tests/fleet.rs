//! Issue 13 in namespaces: two pairs of whole units keep their images in
//! a real three-member etcd cluster (TLS, client certificates) with
//! `configsync.store = "etcd"`. A change written through etcd reaches both
//! units of its pair and no other; a writer through etcd and one through
//! the active's API race on one base and exactly one wins; each unit
//! publishes its status under a lease; etcd's quorum lost for 30 s leaves
//! the pairs serving and failing over, writes fail clearly, and on return
//! every pair converges on its head; a unit started with an empty store
//! comes up with its pair's image. etcd's auth is on throughout: each
//! unit may touch its own pair's keys only.

use std::path::Path;
use std::time::{Duration, Instant};

use anyhow::{Context, ensure};
use duet_fleet::{Fleet, FleetError, Settings, Written};
use duet_image::change::Change;
use duet_proto::common::v1::Role;
use duet_proto::config::v1::{Protocol, Provenance, RealServer, Scheduler, VirtualService};
use duet_proto::configsync::v1 as cs;
use duet_testkit::{EtcdCluster, HostId, Proc, in_netns, wait_for};
use duet_tests::*;
use duet_witness::TlsPems;

const T: Duration = Duration::from_secs(20);
const POLL: Duration = Duration::from_millis(50);

/// One pair: its name, its units' hosts and names, its addresses.
struct Pair {
    name: &'static str,
    hosts: [HostId; 2],
    units: [&'static str; 2],
    addresses: [&'static str; 3],
}

fn fleet_settings(etcd: &EtcdCluster, client: &str) -> Settings {
    let read = |f: &str| std::fs::read(etcd.certs().join(f)).expect("certificate");
    Settings {
        endpoints: etcd.endpoints().iter().map(|e| format!("https://{e}")).collect(),
        tls: Some(TlsPems {
            ca: read("ca.pem"),
            identity: Some((read(&format!("{client}.pem")), read(&format!("{client}.key")))),
        }),
        prefix: "/duet".into(),
        op_timeout: Duration::from_secs(2),
    }
}

/// Runs `f` with a fleet client in namespace `ns`.
fn with_fleet<T: Send + 'static, Fut: Future<Output = anyhow::Result<T>>>(
    ns: &str,
    s: &Settings,
    f: impl FnOnce(Fleet) -> Fut + Send + 'static,
) -> anyhow::Result<T> {
    let s = s.clone();
    in_netns(ns, move || {
        let rt = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
        rt.block_on(async move {
            let fleet = Fleet::connect(&s).await?;
            tokio::time::timeout(Duration::from_secs(30), f(fleet)).await.context("fleet call timed out")?
        })
    })?
}

fn unit_config(l: &PairLab, etcd: &EtcdCluster, p: &Pair, k: usize, state: &Path) -> anyhow::Result<UnitConfig> {
    let (name, partner) = (p.units[k], p.units[1 - k]);
    let mut cfg = UnitConfig::new(name, if k == 0 { "first" } else { "second" }, l.lab.dir());
    cfg.state_dir = state.to_path_buf();
    cfg.addresses = p.addresses.map(str::to_owned);
    cfg.pair = Some(p.name.to_owned());
    let peer = l.lab.dir().join("peer-certs");
    let e = etcd.certs();
    let eps: Vec<String> = etcd.endpoints().iter().map(|e| format!("\"{e}\"")).collect();
    cfg.extra = format!(
        "[configsync]\npartner_name = \"{partner}\"\ntls_ca = \"{}\"\ntls_cert = \"{}\"\ntls_key = \"{}\"\nstore = \"etcd\"\n\n\
         [fleet]\nendpoints = [{}]\ntls_ca = \"{}\"\ntls_cert = \"{}\"\ntls_key = \"{}\"\n",
        peer.join("ca.pem").display(),
        peer.join(format!("{name}.pem")).display(),
        peer.join(format!("{name}.key")).display(),
        eps.join(", "),
        e.join("ca.pem").display(),
        e.join(format!("{name}.pem")).display(),
        e.join(format!("{name}.key")).display(),
    );
    Ok(cfg)
}

/// What `host`'s configsync holds.
fn held(l: &PairLab, host: HostId) -> anyhow::Result<(u64, String)> {
    configsync_call(&l.lab.ns(host), |mut c| async move {
        let s = c.get_status(cs::GetStatusRequest {}).await?.into_inner();
        Ok(s.local.map(|u| (u.generation, u.hash)).unwrap_or_default())
    })
}

fn vs(shared: &str, port: u16) -> VirtualService {
    VirtualService {
        name: format!("web{port}"),
        address: shared.into(),
        port: u32::from(port),
        protocol: Protocol::Tcp as i32,
        scheduler: Scheduler::RoundRobin as i32,
        real_servers: vec![RealServer { address: "198.18.1.10".into(), port: 8080, weight: 1, enabled: true }],
        persistence: None,
        enabled: true,
    }
}

fn ops() -> Provenance {
    Provenance { unit: "ops".into(), origin: "committed".into(), ..Default::default() }
}

/// The pair's head in etcd.
fn head(l: &PairLab, fs: &Settings, pair: &'static str) -> anyhow::Result<(u64, String)> {
    with_fleet(&l.lab.ns(l.c), fs, move |f| async move {
        let i = f.require(pair).await?;
        Ok((i.generation, i.hash))
    })
}

/// Waits until both units of `p` hold the pair's head; returns it.
fn converged(l: &PairLab, fs: &Settings, p: &Pair, within: Duration) -> anyhow::Result<(u64, String)> {
    let name = p.name;
    wait_for(&format!("both units of {name} on its head"), within, POLL, || {
        let h = head(l, fs, name).ok()?;
        p.hosts.iter().all(|&u| held(l, u).ok().as_ref() == Some(&h)).then_some(h)
    })
    .map_err(Into::into)
}

/// Writes a virtual service to `p` through etcd; the new head.
fn write(l: &PairLab, fs: &Settings, p: &Pair, port: u16) -> anyhow::Result<u64> {
    let (pair, v) = (p.name, vs(p.addresses[2], port));
    with_fleet(&l.lab.ns(l.c), fs, move |f| async move {
        match f.apply(pair, None, Change::UpsertVirtualService(v), ops(), 20).await? {
            Written::Committed(i) => Ok(i.generation),
            Written::Unchanged(_) => anyhow::bail!("the change changed nothing"),
        }
    })
}

/// etcd's auth on, as the README's fleet section says: each pair's units
/// may read and write their pair's keys only, the operators the fleet's.
/// A client certificate's common name is its etcd user.
fn enable_auth(l: &PairLab, etcd: &EtcdCluster, pairs: &[Pair]) -> anyhow::Result<()> {
    let mut cmds: Vec<Vec<String>> = Vec::new();
    let mut add = |args: &[&str]| cmds.push(args.iter().map(|a| (*a).to_owned()).collect());
    add(&["user", "add", "root", "--no-password"]);
    add(&["user", "grant-role", "root", "root"]);
    add(&["role", "add", "duet-fleet-ops"]);
    add(&["role", "grant-permission", "--prefix=true", "duet-fleet-ops", "readwrite", "/duet/pairs/"]);
    add(&["user", "add", "ops", "--no-password"]);
    add(&["user", "grant-role", "ops", "duet-fleet-ops"]);
    for p in pairs {
        let role = format!("duet-pair-{}", p.name);
        let keys = format!("/duet/pairs/{}/", p.name);
        add(&["role", "add", &role]);
        add(&["role", "grant-permission", "--prefix=true", &role, "readwrite", &keys]);
        for u in p.units {
            add(&["user", "add", u, "--no-password"]);
            add(&["user", "grant-role", u, &role]);
        }
    }
    add(&["auth", "enable"]);
    for c in &cmds {
        let args: Vec<&str> = c.iter().map(String::as_str).collect();
        etcd.etcdctl(&l.lab, "root", &args).with_context(|| format!("etcdctl {}", c.join(" ")))?;
    }
    Ok(())
}

fn start_unit(l: &mut PairLab, host: HostId, cfg: &UnitConfig) -> anyhow::Result<Proc> {
    l.unit(host, cfg)
}

#[test]
fn pairs_keep_their_images_in_etcd() {
    lab_test("fleet", false, |l| {
        // Pair edge-a is the standard pair (a, b); edge-b two more hosts.
        let d = l.lab.host("d")?;
        let e = l.lab.host("e")?;
        l.lab.attach(d, l.lan, "eth0", &["198.18.0.3/24"])?;
        l.lab.attach(e, l.lan, "eth0", &["198.18.0.4/24"])?;
        let pairs = [
            Pair { name: "edge-a", hosts: [l.a, l.b], units: ["a1", "a2"], addresses: [UNIT1, UNIT2, SHARED] },
            Pair {
                name: "edge-b",
                hosts: [d, e],
                units: ["b1", "b2"],
                addresses: ["198.18.0.3", "198.18.0.4", "198.18.0.20"],
            },
        ];
        duet_testkit::write_certs(&l.lab.dir().join("peer-certs"), &["a1", "a2", "b1", "b2"])?;
        let etcd = EtcdCluster::start(&mut l.lab, l.lan, &ETCD, &["a1", "a2", "b1", "b2", "ops", "root"], true)?;
        enable_auth(l, &etcd, &pairs)?;
        let fs = fleet_settings(&etcd, "ops");
        let mut procs: Vec<Vec<Proc>> = Vec::new();
        for p in &pairs {
            let mut ps = Vec::new();
            for k in 0..2 {
                let state = l.lab.dir().join(format!("state-{}", p.units[k]));
                let cfg = unit_config(l, &etcd, p, k, &state)?;
                ps.push(start_unit(l, p.hosts[k], &cfg)?);
                let role = if k == 0 { Role::Active } else { Role::Standby };
                l.wait_role(p.hosts[k], role, T).with_context(|| p.units[k])?;
            }
            procs.push(ps);
        }
        // Each pair's active put its image in etcd; both units hold it.
        let mut heads = Vec::new();
        for p in &pairs {
            heads.push(converged(l, &fs, p, T)?);
        }
        eprintln!("seeded: edge-a {:?}, edge-b {:?}", heads[0].0, heads[1].0);

        // A change through etcd: both units of its pair take it, the other
        // pair does not move.
        let start = Instant::now();
        let g = write(l, &fs, &pairs[0], 8001)?;
        let h = converged(l, &fs, &pairs[0], Duration::from_secs(10))?;
        ensure!(h.0 == g, "edge-a on {h:?}, the write made {g}");
        eprintln!("a change through etcd on both units of edge-a in {:?}", start.elapsed());
        for &u in &pairs[1].hosts {
            ensure!(held(l, u)? == heads[1], "edge-b moved");
        }

        // etcd's auth keeps a unit to its own pair's keys.
        let a1 = fleet_settings(&etcd, "a1");
        let denied = with_fleet(&l.lab.ns(l.a), &a1, |f| async move { Ok(f.current("edge-b").await) })?;
        ensure!(matches!(denied, Err(FleetError::Denied { .. })), "a1 read edge-b's image: {denied:?}");

        // The unit's own status under its lease.
        let units = with_fleet(&l.lab.ns(l.c), &fs, |f| async move { Ok(f.units("edge-a").await?) })?;
        let roles: Vec<(&str, &str, u64)> =
            units.iter().map(|u| (u.unit.as_str(), u.role.as_str(), u.generation)).collect();
        wait_for("edge-a's status published", Duration::from_secs(10), POLL, || {
            let u = with_fleet(&l.lab.ns(l.c), &fs, |f| async move { Ok(f.units("edge-a").await?) }).ok()?;
            let r: Vec<(String, String, u64)> = u.into_iter().map(|u| (u.unit, u.role, u.generation)).collect();
            (r == [("a1".into(), "active".into(), g), ("a2".into(), "standby".into(), g)]).then_some(())
        })
        .with_context(|| format!("published {roles:?}"))?;

        // Two writers on one base: an operator through etcd and one through
        // the active's API. Exactly one wins; the loser is told the newer
        // generation.
        let (ns_c, ns_a) = (l.lab.ns(l.c), l.lab.ns(l.a));
        let (v1, v2) = (vs(SHARED, 8002), vs(SHARED, 8003));
        let fs2 = fs.clone();
        let via_etcd = std::thread::spawn(move || {
            with_fleet(&ns_c, &fs2, move |f| async move {
                Ok(f.apply("edge-a", Some(g), Change::UpsertVirtualService(v1), ops(), 20).await)
            })
        });
        let via_unit = std::thread::spawn(move || {
            configsync_call(&ns_a, move |mut c| async move {
                let r = c
                    .apply_config(cs::ApplyConfigRequest {
                        base_generation: g,
                        comment: "race".into(),
                        change: Some(cs::apply_config_request::Change::UpsertVirtualService(v2)),
                    })
                    .await;
                Ok(r.map(|r| r.into_inner().generation))
            })
        });
        let a = via_etcd.join().expect("thread")?;
        let b = via_unit.join().expect("thread")?;
        match (&a, &b) {
            (Ok(Written::Committed(i)), Err(s)) => {
                ensure!(s.code() == tonic::Code::FailedPrecondition, "{s:?}");
                let want = format!("generation {} is the pair's head in etcd", i.generation);
                ensure!(s.message().contains(&want), "{}", s.message());
            }
            (Err(FleetError::Overtaken { base, newer }), Ok(n)) => ensure!(*base == g && newer == n, "{a:?} {b:?}"),
            _ => anyhow::bail!("not exactly one winner: through etcd {a:?}, through the unit {b:?}"),
        }
        let g = converged(l, &fs, &pairs[0], Duration::from_secs(10))?.0;
        ensure!(g == heads[0].0 + 2, "one more generation, not two: {g}");
        eprintln!("a race on one base: one winner, the loser told generation {g}");

        // duetctl sees the whole fleet in one look, in under a second.
        let certs = etcd.certs();
        let eps = etcd.endpoints().join(",");
        let (ca, cert, key) = (certs.join("ca.pem"), certs.join("ops.pem"), certs.join("ops.key"));
        let ctl = bin("duetctl").to_string_lossy().into_owned();
        let argv = [
            ctl.as_str(),
            "--etcd",
            &eps,
            "--etcd-ca",
            &ca.to_string_lossy(),
            "--etcd-cert",
            &cert.to_string_lossy(),
            "--etcd-key",
            &key.to_string_lossy(),
            "fleet",
            "status",
            "--json",
        ]
        .map(str::to_owned);
        let argv: Vec<&str> = argv.iter().map(String::as_str).collect();
        let asked = Instant::now();
        let out = l.lab.run(l.c, &argv)?;
        let took = asked.elapsed();
        let v: serde_json::Value = serde_json::from_str(&out).with_context(|| out.clone())?;
        let seen: Vec<(String, bool, usize)> = v["pairs"]
            .as_array()
            .context("pairs")?
            .iter()
            .map(|p| {
                let units = p["units"].as_array().map_or(0, Vec::len);
                (p["pair"].as_str().unwrap_or("").to_owned(), p["in_sync"].as_bool().unwrap_or(false), units)
            })
            .collect();
        ensure!(seen == [("edge-a".into(), true, 2), ("edge-b".into(), true, 2)], "{out}");
        ensure!(took < Duration::from_secs(1), "duetctl fleet status took {took:?}");
        eprintln!("duetctl fleet status: 2 pairs in sync, 4 units, in {took:?}");

        // etcd loses its quorum for 30 s.
        let before = with_fleet(&l.lab.ns(l.c), &fs, |f| async move { Ok(f.history("edge-a").await?) })?;
        etcd.pause(1)?;
        etcd.pause(2)?;
        let lost = Instant::now();
        // A write through the active's API fails, saying why; nothing changes.
        let r = configsync_call(&l.lab.ns(l.a), move |mut c| async move {
            let r = c
                .apply_config(cs::ApplyConfigRequest {
                    base_generation: g,
                    comment: "during the outage".into(),
                    change: Some(cs::apply_config_request::Change::UpsertVirtualService(vs(SHARED, 8004))),
                })
                .await;
            Ok(r.map(|r| r.into_inner().generation))
        })?;
        let s = r.err().context("a write without etcd's quorum went through")?;
        ensure!(s.code() == tonic::Code::Unavailable && s.message().contains("nothing was committed"), "{s:?}");
        ensure!(held(l, l.a)?.0 == g, "nothing committed");
        eprintln!("without quorum a write fails in {:?}: {}", lost.elapsed(), s.message());
        // The pairs fail over: edge-a's active stops (its supervisor killed;
        // its services hand over), edge-a's standby takes over.
        procs[0][0].kill()?;
        l.wait_role(l.b, Role::Active, T).context("edge-a's standby takes over without etcd")?;
        let cfg = unit_config(l, &etcd, &pairs[0], 0, &l.lab.dir().join("state-a1"))?;
        procs[0][0] = l.unit_from(l.a, &cfg, &bin("duet"), &[])?;
        l.wait_role(l.a, Role::Standby, T).context("a1 back as the standby")?;
        ensure!(l.role(d) == Some(Role::Active) && l.role(e) == Some(Role::Standby), "edge-b serves on");
        let waited = lost.elapsed();
        std::thread::sleep(Duration::from_secs(30).saturating_sub(waited));
        etcd.resume(1)?;
        etcd.resume(2)?;
        etcd.wait_healthy(&l.lab, T)?;
        eprintln!("quorum back after {:?}", lost.elapsed());

        // Nothing lost; writes resume; every pair converges on its head.
        let after = with_fleet(&l.lab.ns(l.c), &fs, |f| async move { Ok(f.history("edge-a").await?) })?;
        ensure!(after == before, "etcd's history of edge-a changed while it had no quorum");
        let g = wait_for("a write through etcd after the outage", T, Duration::from_millis(500), || {
            write(l, &fs, &pairs[0], 8005).ok()
        })?;
        ensure!(converged(l, &fs, &pairs[0], T)?.0 == g);
        write(l, &fs, &pairs[1], 8006)?;
        converged(l, &fs, &pairs[1], T)?;

        // A unit with an empty store comes up with its pair's image.
        procs[1][1].kill()?;
        let cfg = unit_config(l, &etcd, &pairs[1], 1, &l.lab.dir().join("state-b2-empty"))?;
        procs[1][1] = l.unit_from(e, &cfg, &bin("duet"), &[])?;
        let h = converged(l, &fs, &pairs[1], T)?;
        eprintln!("a unit started with an empty store holds edge-b's generation {}", h.0);
        Ok(())
    });
}
