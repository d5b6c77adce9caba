//! `duetctl doctor` on a real pair (whole units, configsync and the
//! replicator linked): nothing wrong on a healthy pair, then each fault
//! injected in the namespaces is named with its fix: another group's
//! adverts on the wire, adverts signed with another password, a host that
//! answers for the shared address, peer-link certificates of another CA,
//! the partner gone. Every finding of doctor also has a test without
//! sockets (`duet_ctl::doctor`'s own tests).

use std::net::Ipv4Addr;
use std::time::Duration;

use anyhow::ensure;
use duet_proto::common::v1::Role;
use duet_testkit::{HostId, Proc, wait_for};
use duet_tests::*;
use duet_wire::auth::Sha1Key;
use duet_wire::{Advert, AuthData};

const T: Duration = Duration::from_secs(20);
const GROUP: Ipv4Addr = Ipv4Addr::new(224, 0, 0, 18);

/// `duetctl doctor` (with `args`) in `host`: its exit code and output.
fn doctor(l: &PairLab, host: HostId, args: &[&str]) -> anyhow::Result<(i32, String)> {
    let exe = bin("duetctl").to_string_lossy().into_owned();
    let mut argv = vec![exe.as_str()];
    argv.extend_from_slice(args);
    argv.push("doctor");
    let out = l.lab.run_status(host, &argv)?;
    let text = format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    Ok((out.status.code().unwrap_or(-1), text))
}

/// Waits until doctor in `host` names `code`; returns its output.
fn names(l: &PairLab, host: HostId, code: &str, args: &[&str]) -> anyhow::Result<String> {
    let mut last = String::new();
    let found = wait_for(code, Duration::from_secs(10), Duration::from_millis(300), || {
        let (_, out) = doctor(l, host, args).ok()?;
        last.clone_from(&out);
        out.contains(&format!("{code}:")).then_some(out)
    });
    match found {
        Ok(out) => {
            eprintln!("--- doctor, {code}:\n{out}");
            Ok(out)
        }
        Err(e) => anyhow::bail!("{e}; doctor said:\n{last}"),
    }
}

/// An advert of `vhid` signed with `password`, from `src`.
fn advert(src: &str, vhid: u8, password: &[u8], counter: u64) -> Vec<u8> {
    let key = Sha1Key::new(password, vhid, SHARED.parse().expect("address"));
    let a = Advert { vhid, advskew: 0, advbase: 1, counter, auth: AuthData::Sha1(key.digest(counter)) };
    ip_packet(src.parse().expect("address"), GROUP, 255, &a.to_bytes())
}

#[test]
fn doctor_finds_nothing_on_a_healthy_pair_and_names_each_injected_fault() {
    lab_test("doctor", true, |l| {
        let mut units: Vec<Proc> = Vec::new();
        let mut cfgs = Vec::new();
        for (host, name, mode, partner) in [(l.a, "lb1", "first", "lb2"), (l.b, "lb2", "second", "lb1")] {
            let mut c = UnitConfig::new(name, mode, l.lab.dir());
            l.with_configsync(&mut c, name, partner, 60)?;
            c.extra.push_str("\n[replicator]\nenabled = true\n");
            units.push(l.unit(host, &c)?);
            cfgs.push(c);
        }
        l.wait_role(l.a, Role::Active, T)?;
        l.wait_role(l.b, Role::Standby, T)?;
        let cfg_a = l.lab.dir().join("lb1.toml").to_string_lossy().into_owned();
        // Healthy: nothing wrong on either unit (once the links are up).
        for h in [l.a, l.b] {
            let mut last = String::new();
            wait_for("a clean doctor", Duration::from_secs(15), Duration::from_millis(500), || {
                let (code, out) = doctor(l, h, &["--config", &cfg_a]).ok()?;
                last = out.clone();
                (code == 0).then_some(())
            })
            .map_err(|e| anyhow::anyhow!("{e}: {last}"))?;
        }
        let (code, out) = doctor(l, l.a, &["--config", &cfg_a])?;
        eprintln!("--- doctor, healthy pair:\n{out}");
        ensure!(code == 0 && out.contains("nothing wrong found"), "{out}");
        let (_, json) = doctor(l, l.a, &["--json"])?;
        let v: serde_json::Value = serde_json::from_str(&json)?;
        ensure!(v["findings"].as_array().is_some_and(Vec::is_empty), "{json}");

        // Another group's adverts on the wire: a warning.
        let x = l.ns_attacker();
        let theirs = (0..3).map(|c| advert(ATTACKER, 77, b"theirs", (1 << 40) + c)).collect();
        send_raw(&x, theirs, Duration::from_millis(50))?;
        let out = names(l, l.a, "foreign-vhid", &[])?;
        ensure!(out.contains("vhid 77 from 198.18.0.66") && out.contains("fix:"), "{out}");
        let (code, _) = doctor(l, l.a, &[])?;
        ensure!(code == 1, "a warning only: exit 1, got {code}");

        // Adverts of this vhid from the partner's address signed with
        // another password (as a partner with another ha.password sends
        // them): critical.
        let wrong = (0..3).map(|c| advert(UNIT1, 10, b"wrong", (1 << 41) + c)).collect();
        send_raw(&x, wrong, Duration::from_millis(50))?;
        let out = names(l, l.b, "password-mismatch", &[])?;
        ensure!(out.contains("Bad digest") && out.contains("ha.password"), "{out}");
        ensure!(doctor(l, l.b, &[])?.0 == 2, "critical: exit 2");

        // A host answering for the shared address.
        l.lab.run(l.x.expect("an attacker"), &["ip", "addr", "add", &format!("{SHARED}/32"), "dev", "eth0"])?;
        let out = names(l, l.a, "address-conflict", &[])?;
        ensure!(out.contains(&format!("another host answers ARP for the shared address {SHARED}")), "{out}");
        l.lab.run(l.x.expect("an attacker"), &["ip", "addr", "del", &format!("{SHARED}/32"), "dev", "eth0"])?;

        // The unit file names peer-link certificates of another CA.
        let other = l.lab.dir().join("other-ca");
        duet_testkit::write_certs(&other, &["lb1"])?;
        let mut bad = cfgs[0].clone();
        bad.name = "lb1-other".into();
        let ours = l.certs()?;
        bad.extra =
            bad.extra.replace(&ours.join("ca.pem").display().to_string(), &other.join("ca.pem").display().to_string());
        let bad_path = bad.write(l.lab.dir())?.to_string_lossy().into_owned();
        let text = std::fs::read_to_string(&bad_path)?.replace("name = \"lb1-other\"", "name = \"lb1\"");
        std::fs::write(&bad_path, text)?;
        let out = names(l, l.a, "peer-certificate", &["--config", &bad_path])?;
        ensure!(out.contains("configsync.tls_cert"), "{out}");

        // The partner gone.
        units.pop().expect("b").kill()?;
        duet_testkit::kill_all_in(&l.lab.ns(l.b))?;
        let out = names(l, l.a, "partner-unreachable", &[])?;
        ensure!(out.contains("198.18.0.2") && out.contains("protocol 112"), "{out}");
        Ok(())
    });
}

/// A half-set-up pair: both units configured `first`, and the second
/// without its takeover service.
#[test]
fn doctor_names_the_same_mode_and_a_takeover_that_does_not_follow() {
    lab_test("doctor_setup", false, |l| {
        let a = UnitConfig::new("lb1", "first", l.lab.dir());
        let _ea = l.election(l.a, &a)?;
        let _ta = l.takeover(l.a, &a)?;
        l.wait_role(l.a, Role::Active, T)?;
        // lb2 also says `first` (its own address then comes first).
        let b = UnitConfig::new("lb2", "first", l.lab.dir()).toml().replace(
            &format!("unit1 = \"{UNIT1}/24\"\nunit2 = \"{UNIT2}/24\""),
            &format!("unit1 = \"{UNIT2}/24\"\nunit2 = \"{UNIT1}/24\""),
        );
        let path = l.lab.dir().join("lb2-first.toml");
        std::fs::write(&path, b)?;
        let exe = bin("duet-election").to_string_lossy().into_owned();
        let _eb = l.lab.spawn(l.b, "election-lb2", &[&exe, "--config", &path.to_string_lossy()], &[])?;
        let out = names(l, l.b, "same-mode", &[])?;
        ensure!(out.contains("unit.mode"), "{out}");
        let out = names(l, l.b, "takeover-not-following", &[])?;
        ensure!(out.contains("start the takeover service"), "{out}");
        ensure!(doctor(l, l.b, &[])?.0 == 2, "critical: exit 2");
        Ok(())
    });
}

/// Adverts lost one way (the switch drops the active's) while a witness
/// (policy required) keeps the standby from taking over: the active's
/// doctor names it from the partner's peer status.
#[test]
fn doctor_names_adverts_lost_one_way() {
    lab_test("doctor_oneway", false, |l| {
        let etcd = l.etcd()?;
        let mut procs = Vec::new();
        for (host, name, mode) in [(l.a, "lb1", "first"), (l.b, "lb2", "second")] {
            let mut c = UnitConfig::new(name, mode, l.lab.dir());
            c.with_witness(&etcd, "witness_policy = \"required\"");
            procs.push(l.election(host, &c)?);
            procs.push(l.takeover(host, &c)?);
            l.wait_role(host, if name == "lb1" { Role::Active } else { Role::Standby }, T)?;
        }
        let (code, out) = doctor(l, l.a, &[])?;
        ensure!(code == 0, "a healthy pair first: {out}");
        // The active's adverts are lost on the way (multicast filtered on
        // the switch); the peer-status datagrams still pass.
        let _rule = l.lab.add_switch_rule(&format!("ip saddr {UNIT1} ip protocol 112 drop"))?;
        let out = names(l, l.a, "adverts-one-way", &[])?;
        ensure!(out.contains("IGMP snooping") && out.contains("use_broadcast"), "{out}");
        // The standby's side: the partner heard by its status, not its adverts.
        let out = names(l, l.b, "adverts-one-way", &[])?;
        ensure!(out.contains("heard by its status, but none of its adverts"), "{out}");
        ensure!(l.role(l.a) == Some(Role::Active) && l.role(l.b) == Some(Role::Standby), "the witness held the roles");
        Ok(())
    });
}
