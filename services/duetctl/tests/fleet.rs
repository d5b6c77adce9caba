//! `duetctl --etcd ...` against a real three-member etcd cluster with TLS
//! and client certificates in a lab (needs root; skips without it, fails
//! with `CI` set): ten pairs, each seeded with an image and its units'
//! status published under leases as a unit's session does; `fleet status`
//! (text, JSON, one pair, the exit status, the time for ten pairs); every
//! `config` command through etcd, a lost race, and the refusals.
//! The flag errors need no etcd and run without root.

use std::path::PathBuf;
use std::process::Output;
use std::time::{Duration, Instant};

use duet_fleet::session::{Command, SessionSettings};
use duet_fleet::{Fleet, Settings, Square, UnitRecord};
use duet_proto::config::v1::{HaSettings, Image, Interface, Provenance};
use duet_testkit::{EtcdCluster, Lab, in_netns, require_root};
use duet_witness::TlsPems;
use tokio::sync::mpsc;

const CTL: &str = env!("CARGO_BIN_EXE_duetctl");
const PAIRS: usize = 10;

fn image() -> Image {
    Image {
        generation: 4,
        ha: Some(HaSettings { timeout_s: 3, ..Default::default() }),
        interfaces: vec![Interface {
            name: "eth0".into(),
            unit1: "198.18.0.1/24".into(),
            unit2: "198.18.0.2/24".into(),
            shared: "198.18.0.10/24".into(),
            ha_check: true,
        }],
        provenance: Some(Provenance { unit: "lb".into(), origin: "committed".into(), ..Default::default() }),
        ..Default::default()
    }
}

fn record(pair: &str, unit: &str, mode: &str, role: &str, img: &Image) -> UnitRecord {
    UnitRecord {
        unit: unit.into(),
        pair: pair.into(),
        mode: mode.into(),
        role: role.into(),
        squares: vec![
            Square { unit: 1, status: "active".into(), detail: String::new() },
            Square { unit: 2, status: "standby".into(), detail: String::new() },
        ],
        generation: img.generation,
        hash: img.hash.clone(),
        replication: "up".into(),
        witness_key: format!("/duet/witness/{pair}"),
        changed_at_ms: std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(0))
            .saturating_sub(5_000),
        version: "test".into(),
    }
}

/// Runs duetctl with `args`, stdin from nowhere.
async fn ctl(args: &[&str]) -> Output {
    tokio::process::Command::new(CTL)
        .args(args)
        .env_remove("DUET_CONFIG")
        .env_remove("DUET_ETCD")
        .stdin(std::process::Stdio::null())
        .output()
        .await
        .expect("duetctl runs")
}

fn text(o: &Output) -> (i32, String, String) {
    (
        o.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&o.stdout).into_owned(),
        String::from_utf8_lossy(&o.stderr).into_owned(),
    )
}

/// duetctl with the etcd options `base` and `more`.
async fn run(base: &[String], more: &[&str]) -> (i32, String, String) {
    let args: Vec<&str> = base.iter().map(String::as_str).chain(more.iter().copied()).collect();
    text(&ctl(&args).await)
}

/// `duetctl ... --pair edge-0 config <more>`.
async fn cfg(base: &[String], more: &[&str]) -> (i32, String, String) {
    let args: Vec<&str> = ["--pair", "edge-0", "config"].into_iter().chain(more.iter().copied()).collect();
    run(base, &args).await
}

#[test]
fn flag_errors_name_the_flag_and_the_fix() {
    let plain = |args: &[&str]| {
        let o = std::process::Command::new(CTL)
            .args(args)
            .env_remove("DUET_ETCD")
            .env_remove("DUET_ETCD_CA")
            .output()
            .expect("duetctl runs");
        (o.status.code(), String::from_utf8_lossy(&o.stderr).into_owned())
    };
    let (code, e) = plain(&["--pair", "edge-a", "config", "get"]);
    assert_eq!(code, Some(1));
    assert!(e.contains("--pair names a pair in a fleet's etcd: give --etcd"), "{e}");
    let (code, e) = plain(&["--etcd", "198.18.0.21:2379", "config", "get"]);
    assert_eq!(code, Some(1));
    assert!(e.contains("--etcd without --pair") && e.contains("add --pair NAME"), "{e}");
    let (_, e) = plain(&["--etcd", "198.18.0.21:2379", "--pair", "edge-a", "config", "force-update"]);
    assert!(e.contains("config force-update is a unit's command: run it against the unit, without --etcd"), "{e}");
    let (_, e) = plain(&["--etcd", "198.18.0.21:2379", "--pair", "edge-a", "config", "get"]);
    assert!(e.contains("--etcd-ca: missing") && e.contains("--etcd-plaintext"), "{e}");
    let (_, e) = plain(&["--etcd", "198.18.0.21:2379", "--etcd-plaintext", "--etcd-ca", "ca.pem", "fleet", "status"]);
    assert!(e.contains("--etcd-ca and --etcd-plaintext exclude each other"), "{e}");
    let (_, e) = plain(&["fleet", "status"]);
    assert!(e.contains("fleet status reads a fleet's etcd: give --etcd ENDPOINTS"), "{e}");
    let (_, e) = plain(&["--etcd", "198.18.0.21:2379", "status"]);
    assert!(e.contains("talks to the unit this runs on, not to a fleet's etcd"), "{e}");
    let (_, e) =
        plain(&["--etcd", "198.18.0.21:2379", "--etcd-plaintext", "--fleet-prefix", "duet", "fleet", "status"]);
    assert!(e.contains("--fleet-prefix: \"duet\" must start with '/'"), "{e}");
}

#[test]
fn duetctl_against_a_fleet_in_etcd() {
    if !require_root("duetctl_against_a_fleet_in_etcd") {
        return;
    }
    let started = Instant::now();
    let mut lab = Lab::new("ctlfleet").unwrap();
    let lan = lab.segment("lan").unwrap();
    let ops = lab.host("ops").unwrap();
    lab.attach(ops, lan, "eth0", &["198.18.0.1/24"]).unwrap();
    let addrs = ["198.18.0.21/24", "198.18.0.22/24", "198.18.0.23/24"];
    let c = EtcdCluster::start(&mut lab, lan, &addrs, &["root", "ops", "lb"], true).unwrap();
    // Pair edge-0's witness is held by its first unit.
    c.etcdctl(&lab, "root", &["put", "/duet/witness/edge-0", "lb0a"]).unwrap();
    let certs = c.certs().to_owned();
    let read = |f: &str| std::fs::read(certs.join(f)).expect("certificate");
    let settings = |who: &str| Settings {
        endpoints: c.endpoints().iter().map(|e| format!("https://{e}")).collect(),
        tls: Some(TlsPems {
            ca: read("ca.pem"),
            identity: Some((read(&format!("{who}.pem")), read(&format!("{who}.key")))),
        }),
        prefix: "/duet".into(),
        op_timeout: Duration::from_secs(2),
    };
    let (ops_settings, lb_settings) = (settings("ops"), settings("lb"));
    let endpoints = c.endpoints().join(",");
    let dir = tempfile::tempdir().unwrap();
    let work = dir.path().to_owned();
    in_netns(&lab.ns(ops), move || {
        let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
        rt.block_on(scenario(ops_settings, lb_settings, endpoints, certs, work));
    })
    .unwrap();
    drop(dir);
    eprintln!("duetctl_against_a_fleet_in_etcd: {:.1} s", started.elapsed().as_secs_f64());
}

async fn scenario(ops: Settings, lb: Settings, endpoints: String, certs: PathBuf, work: PathBuf) {
    let f = Fleet::connect(&ops).await.unwrap();
    // Ten pairs, each with its image and its units up (edge-9 with one).
    let mut sessions = Vec::new();
    for k in 0..PAIRS {
        let pair = format!("edge-{k}");
        assert_eq!(f.seed(&pair, &image()).await.unwrap(), None);
        let img = f.require(&pair).await.unwrap();
        let units: &[(&str, &str, &str)] = if k == PAIRS - 1 {
            &[("a", "first", "active")]
        } else {
            &[("a", "first", "active"), ("b", "second", "standby")]
        };
        for (suffix, mode, role) in units {
            let unit = format!("lb{k}{suffix}");
            let (ctx, crx) = mpsc::channel(4);
            let (etx, erx) = mpsc::channel(64);
            let s = SessionSettings {
                fleet: lb.clone(),
                pair: pair.clone(),
                unit: unit.clone(),
                lease_ttl: Duration::from_secs(10),
            };
            let task = duet_fleet::session::spawn(s, crx, etx);
            ctx.send(Command::Publish(record(&pair, &unit, mode, role, &img))).await.unwrap();
            sessions.push((ctx, erx, task));
        }
    }
    let deadline = Instant::now() + Duration::from_secs(10);
    for k in 0..PAIRS {
        let want = if k == PAIRS - 1 { 1 } else { 2 };
        while f.units(&format!("edge-{k}")).await.unwrap().len() < want {
            assert!(Instant::now() < deadline, "edge-{k}'s units publish within 10 s");
            // Drain the sessions' events so none blocks.
            for (_, erx, _) in &mut sessions {
                while erx.try_recv().is_ok() {}
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    let cert = |f: &str| certs.join(f).display().to_string();
    let (ca, pem, key) = (cert("ca.pem"), cert("ops.pem"), cert("ops.key"));
    let base: Vec<String> = ["--etcd", endpoints.as_str(), "--etcd-ca", &ca, "--etcd-cert", &pem, "--etcd-key", &key]
        .map(String::from)
        .into();

    // The whole fleet on one screen: edge-9 has one unit up (exit 1).
    let mut best = Duration::MAX;
    let mut out = String::new();
    for _ in 0..3 {
        let t = Instant::now();
        let (code, o, e) = run(&base, &["fleet", "status"]).await;
        best = best.min(t.elapsed());
        assert_eq!(code, 1, "{o}{e}");
        out = o;
    }
    eprintln!("fleet status, {PAIRS} pairs: {} ms (best of 3)\n{out}", best.as_millis());
    assert!(best < Duration::from_secs(1), "fleet status on {PAIRS} pairs took {best:?}");
    let lines: Vec<&str> = out.lines().collect();
    assert_eq!(lines.len(), 1 + PAIRS + (2 * PAIRS - 1) + 1, "{out}");
    assert!(
        lines[0].starts_with("fleet /duet (https://198.18.0.2") && lines[0].ends_with("10 pair(s), 1 with warnings")
    );
    assert!(lines[1].starts_with("edge-0  head gen 4 ") && lines[1].contains("witness lb0a  in sync"), "{out}");
    assert!(out.contains("  ! only lb9a is up"), "{out}");

    let (code, o, e) = run(&base, &["fleet", "status", "--json"]).await;
    assert_eq!(code, 1, "{e}");
    let v: serde_json::Value = serde_json::from_str(&o).unwrap();
    let pairs = v["pairs"].as_array().unwrap();
    assert_eq!(pairs.len(), PAIRS);
    assert_eq!(pairs[0]["witness_holder"], "lb0a");
    assert_eq!(pairs[0]["in_sync"], true);
    assert_eq!(pairs[0]["units"][1]["unit"], "lb0b");
    assert_eq!(pairs[1]["witness_holder"], "", "nobody holds edge-1's witness key");
    assert_eq!(pairs[9]["warnings"].as_array().unwrap().len(), 1);

    let (code, o, e) = run(&base, &["--pair", "edge-0", "fleet", "status"]).await;
    assert_eq!(code, 0, "{o}{e}");
    assert_eq!(o.lines().count(), 4, "{o}");

    // The config commands through etcd, on edge-0.
    let (code, o, e) = cfg(&base, &["get", "ha"]).await;
    assert_eq!(code, 0, "{e}");
    let got: serde_json::Value = serde_json::from_str(&o).unwrap();
    assert_eq!((got["generation"].as_str(), got["ha"]["timeoutS"].as_u64()), (Some("4"), Some(3)), "{o}");
    assert!(got["interfaces"].is_null(), "only the section: {o}");

    let (code, o, e) = cfg(&base, &["set", "timeout_s=6", "--comment", "from ops"]).await;
    assert_eq!(code, 0, "{e}");
    assert!(o.starts_with("committed generation 5 ("), "{o}");
    let (_, o, _) = cfg(&base, &["set", "timeout_s=6"]).await;
    assert!(o.starts_with("unchanged: generation 5 ("), "{o}");
    let (code, o, _) = cfg(&base, &["set", "timeout_s=6", "--json"]).await;
    assert_eq!(code, 0);
    let r: serde_json::Value = serde_json::from_str(&o).unwrap();
    assert_eq!(r["unchanged"], true, "{o}");

    // A lost race: the change was based on generation 4.
    let (code, _, e) = cfg(&base, &["set", "timeout_s=9", "--base", "4"]).await;
    assert_eq!(code, 1);
    assert!(
        e.contains("generation 5 is the pair's head now, and the change was based on generation 4: another writer"),
        "{e}"
    );
    let (code, _, e) = cfg(&base, &["set", "timeout_s=4"]).await;
    assert_eq!(code, 1);
    assert!(e.contains("ha.timeout_s"), "an invalid change names its field: {e}");

    let vs = work.join("vs.json");
    std::fs::write(
        &vs,
        r#"{"name": "web", "address": "198.18.0.10", "port": 80, "protocol": "PROTOCOL_TCP",
            "scheduler": "SCHEDULER_ROUND_ROBIN", "enabled": true,
            "realServers": [{"address": "198.18.1.10", "port": 8080, "weight": 1, "enabled": true}]}"#,
    )
    .unwrap();
    let vs = vs.display().to_string();
    let (code, o, e) = cfg(&base, &["set-vs", "--file", &vs, "--comment", "web farm"]).await;
    assert_eq!(code, 0, "{e}");
    assert!(o.starts_with("committed generation 6 ("), "{o}");
    let (_, o, _) = cfg(&base, &["get", "virtual_services/web"]).await;
    assert!(o.contains("\"198.18.1.10\""), "{o}");
    let (code, o, e) = cfg(&base, &["delete-vs", "web"]).await;
    assert_eq!(code, 0, "{e}");
    assert!(o.starts_with("committed generation 7 ("), "{o}");

    let (code, o, e) = cfg(&base, &["rollback", "6"]).await;
    assert_eq!(code, 0, "{e}");
    assert_eq!(o.trim(), "generation 6 committed again as 8");
    let (code, _, e) = cfg(&base, &["rollback", "1"]).await;
    assert_eq!(code, 1);
    assert!(e.contains("generation 1 of pair edge-0 is not kept in etcd"), "{e}");

    let backup = work.join("edge-0.json");
    let b = backup.display().to_string();
    let (code, o, e) = cfg(&base, &["backup", "--out", &b]).await;
    assert_eq!(code, 0, "{e}");
    assert_eq!(o.trim(), format!("generation 8 written to {b}"));
    let saved: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(&backup).unwrap()).unwrap();
    assert_eq!((saved["mode"].as_str(), saved["unit"].as_str()), (Some("HA_MODE_FIRST"), Some("fleet:edge-0")));
    let (code, o, e) = cfg(&base, &["check", "--file", &b]).await;
    assert_eq!(code, 0, "{e}");
    assert!(o.starts_with("valid (hash "), "{o}");
    let (code, o, e) = cfg(&base, &["restore", "--file", &b]).await;
    assert_eq!(code, 0, "{e}");
    assert!(o.starts_with("restored as generation 9 ("), "{o}");

    let (code, o, e) = cfg(&base, &["history"]).await;
    assert_eq!(code, 0, "{e}");
    let gens: Vec<&str> = o.lines().collect();
    assert_eq!(gens.len(), 6, "generations 4 to 9: {o}");
    assert!(gens[0].starts_with("gen      4  "), "{o}");
    assert!(gens[1].contains("committed") && gens[1].contains("duetctl@") && gens[1].ends_with("from ops"), "{o}");
    assert!(gens[4].contains("rolled-back") && gens[4].ends_with("rolled back to generation 6"), "{o}");
    assert!(gens[5].contains("restored") && gens[5].ends_with("restored from a backup of fleet:edge-0"), "{o}");

    // The units still say generation 4: both behind the head now.
    let (code, o, _) = run(&base, &["--pair", "edge-0", "fleet", "status"]).await;
    assert_eq!(code, 1, "{o}");
    assert!(o.contains("! lb0a is behind: it holds generation 4") && o.contains("! lb0b is behind"), "{o}");
    assert!(o.contains("NOT in sync"), "{o}");

    let (code, _, e) = run(&base, &["--pair", "nowhere", "config", "get"]).await;
    assert_eq!(code, 1);
    assert!(e.contains("pair nowhere has no image in etcd"), "{e}");
    let (code, _, e) = run(&base, &["--pair", "edge-0", "config", "local"]).await;
    assert_eq!(code, 1);
    assert!(e.contains("config local is a unit's command"), "{e}");

    for (ctx, _, task) in sessions {
        drop(ctx);
        let _ = tokio::time::timeout(Duration::from_secs(5), task).await;
    }
}
