//! O3 end to end: a pair of whole units (all four services and the
//! supervisor, configsync and the replicator linked, a witness on a real
//! etcd cluster, a tracked check, a notify hook) export over OTLP/gRPC to a
//! real receiver built on the official protobuf messages. Every instrument
//! of the catalogue (`duet_runtime::instruments`, which the README's table
//! is made from) arrives, from the service that owns it, with its unit; the
//! role is one series per role word.

use std::collections::BTreeSet;
use std::time::Duration;

use anyhow::{Context, ensure};
use duet_proto::common::v1::Role;
use duet_runtime::instruments::{ALL, Kind};
use duet_testkit::{Proc, wait_for};
use duet_tests::otlp::{Line, Received};
use duet_tests::*;

const T: Duration = Duration::from_secs(20);
const SINK: &str = "198.18.0.100:4317";

/// Starts the receiver in the client's namespace; its file.
fn sink(l: &mut PairLab) -> anyhow::Result<(Proc, std::path::PathBuf)> {
    let out = l.lab.dir().join("otlp.jsonl");
    let exe = bin("duet-otlp-sink").to_string_lossy().into_owned();
    let p = l.lab.spawn(l.c, "otlp-sink", &[&exe, "--listen", SINK, "--out", &out.to_string_lossy()], &[])?;
    Ok((p, out))
}

/// The names of the instruments received from `service` (any service for `*`).
fn names_from(r: &Received, service: &str) -> BTreeSet<String> {
    r.lines
        .iter()
        .filter_map(|l| match l {
            Line::Metric { service: s, name, .. } if service == "*" || s == service => Some(name.clone()),
            _ => None,
        })
        .collect()
}

#[test]
fn a_pair_exports_every_instrument_of_the_catalogue_with_its_unit() {
    lab_test("telemetry_all", false, |l| {
        let etcd = l.etcd()?;
        let (_sink, out) = sink(l)?;
        let health = l.lab.dir().join("health");
        std::fs::write(&health, "0\n")?;
        let mut units = Vec::new();
        for (host, name, mode, partner) in [(l.a, "lb1", "first", "lb2"), (l.b, "lb2", "second", "lb1")] {
            let mut c = UnitConfig::new(name, mode, l.lab.dir());
            c.with_witness(&etcd, "");
            l.with_configsync(&mut c, name, partner, 5)?;
            c.extra.push_str(&format!(
                "\n[replicator]\nenabled = true\n\n[hooks]\non_active = [\"/bin/true\"]\non_standby = [\"/bin/true\"]\n\n\
                 [[track]]\nname = \"health-file\"\nkind = \"file\"\nfile = \"{}\"\ninterval_ms = 500\n",
                health.display()
            ));
            let env =
                [&format!("OTEL_EXPORTER_OTLP_ENDPOINT=http://{SINK}") as &str, "OTEL_METRIC_EXPORT_INTERVAL=1000"];
            units.push(l.unit_with_env(host, &c, &env)?);
        }
        l.wait_role(l.a, Role::Active, T)?;
        l.wait_role(l.b, Role::Standby, T)?;
        // Events behind the counters made on use: a drift repaired (the
        // shared address deleted by hand), then the fail-safe release (the
        // active's election frozen past the fail-safe window).
        l.lab.run(l.a, &["ip", "addr", "del", &format!("{SHARED}/24"), "dev", "eth0"])?;
        wait_for("the drift repaired", Duration::from_secs(5), Duration::from_millis(50), || {
            l.lab.addr_present(l.a, "eth0", SHARED).ok().filter(|p| *p).map(drop)
        })?;
        let election = pids_of(&l.lab, l.a, "duet-election");
        ensure!(election.len() == 1, "one election in a: {election:?}");
        let pid = nix::unistd::Pid::from_raw(i32::try_from(election[0])?);
        nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGSTOP)?;
        let released = wait_for("the fail-safe release", Duration::from_secs(5), Duration::from_millis(50), || {
            l.lab.addr_present(l.a, "eth0", SHARED).ok().filter(|p| !*p).map(drop)
        });
        nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGCONT)?;
        released?;

        // Every instrument arrives (exports every second).
        let wanted: Vec<_> = ALL.iter().collect();
        let got = wait_for("every instrument exported", Duration::from_secs(20), Duration::from_millis(500), || {
            let r = Received::read(&out);
            let missing: Vec<&str> =
                wanted.iter().filter(|i| !names_from(&r, i.service).contains(i.name)).map(|i| i.name).collect();
            missing.is_empty().then_some(r)
        })
        .with_context(|| {
            let r = Received::read(&out);
            let missing: Vec<String> = wanted
                .iter()
                .filter(|i| !names_from(&r, i.service).contains(i.name))
                .map(|i| format!("{} (from {})", i.name, i.service))
                .collect();
            format!("missing: {missing:?}; received: {:?}", names_from(&r, "*"))
        })?;
        eprintln!(
            "received {} data points of {} instruments from {} services",
            got.lines.len(),
            names_from(&got, "*").len(),
            got.lines
                .iter()
                .filter_map(|l| match l {
                    Line::Metric { service, .. } => Some(service.as_str()),
                    Line::Span { .. } => None,
                })
                .collect::<BTreeSet<_>>()
                .len()
        );
        for i in ALL {
            for p in got.metric(i.name) {
                let Line::Metric { unit, shape, attributes, service, pair, .. } = p else { continue };
                ensure!(pair == "vhid-10", "{} from {service} names the pair {pair:?}", i.name);
                ensure!(unit == i.unit, "{} arrived with unit {unit:?}, the catalogue says {:?}", i.name, i.unit);
                let kind = match shape.as_str() {
                    "counter" => Kind::Counter,
                    "gauge" => Kind::Gauge,
                    _ => Kind::Histogram,
                };
                ensure!(kind == i.kind, "{} arrived as a {shape}", i.name);
                ensure!(i.service == "*" || service == i.service, "{} came from {service}", i.name);
                for k in attributes.keys() {
                    ensure!(i.attributes.contains(&k.as_str()), "{} has attribute {k} not in the catalogue", i.name);
                }
            }
        }
        // The role: one series per role word on each election, one at 1.
        for instance in ["lb1", "lb2"] {
            let last: std::collections::BTreeMap<String, f64> = got
                .metric("duet.election.role")
                .into_iter()
                .filter_map(|p| match p {
                    Line::Metric { instance: i, attributes, value, .. } if i == instance => {
                        Some((attributes.get("role").cloned().unwrap_or_default(), *value))
                    }
                    _ => None,
                })
                .collect();
            let words: BTreeSet<&str> = last.keys().map(String::as_str).collect();
            ensure!(
                words == BTreeSet::from(["init", "standby", "active", "pacified", "stopping"]),
                "{instance}: role series {words:?}"
            );
            ensure!(last.values().filter(|v| **v == 1.0).count() == 1, "{instance}: one role at 1: {last:?}");
        }
        drop(units);
        Ok(())
    });
}
