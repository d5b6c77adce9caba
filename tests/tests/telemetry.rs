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

/// The spans of one trace, by name (the first of each name).
fn span_named<'a>(spans: &[&'a Line], trace: &str, name: &str) -> Option<&'a Line> {
    spans.iter().copied().find(|l| matches!(l, Line::Span { trace_id, name: n, .. } if trace_id == trace && n == name))
}

fn span_fields(l: &Line) -> (&str, &str, &str, u64, u64, &std::collections::BTreeMap<String, String>) {
    match l {
        Line::Span { service, span_id, parent_span_id, start_ns, end_ns, attributes, .. } => {
            (service, span_id, parent_span_id, *start_ns, *end_ns, attributes)
        }
        Line::Metric { .. } => unreachable!("a span"),
    }
}

/// Whole units with configsync and the replicator, exporting to the sink
/// every second (spans within half a second).
fn start_exporting_pair(l: &mut PairLab) -> anyhow::Result<(Vec<Proc>, Proc, std::path::PathBuf)> {
    let (sink, out) = sink(l)?;
    let mut units = Vec::new();
    for (host, name, mode, partner) in [(l.a, "lb1", "first", "lb2"), (l.b, "lb2", "second", "lb1")] {
        let mut c = UnitConfig::new(name, mode, l.lab.dir());
        l.with_configsync(&mut c, name, partner, 60)?;
        c.extra.push_str("\n[replicator]\nenabled = true\n");
        let env = [
            &format!("OTEL_EXPORTER_OTLP_ENDPOINT=http://{SINK}") as &str,
            "OTEL_METRIC_EXPORT_INTERVAL=1000",
            "OTEL_BSP_SCHEDULE_DELAY=200",
        ];
        units.push(l.unit_with_env(host, &c, &env)?);
    }
    l.wait_role(l.a, Role::Active, T)?;
    l.wait_role(l.b, Role::Standby, T)?;
    Ok((units, sink, out))
}

#[test]
fn a_crash_failover_is_one_trace_from_the_decision_to_the_first_garp() {
    lab_test("telemetry_failover", false, |l| {
        let (mut units, _sink, out) = start_exporting_pair(l)?;
        // Let the replicator link so the takeover asks it for the state.
        std::thread::sleep(Duration::from_secs(2));
        let crash_ns = (epoch_now() * 1e9) as u64;
        units.remove(0).kill()?;
        duet_testkit::kill_all_in(&l.lab.ns(l.a))?;
        l.wait_role(l.b, Role::Active, T)?;
        let (root, got) =
            wait_for("the failover's spans", Duration::from_secs(10), Duration::from_millis(200), || {
                let r = Received::read(&out);
                let spans = r.spans();
                let root = spans.iter().copied().find(|s| {
                    matches!(s, Line::Span { name, instance, attributes, start_ns, .. }
                    if name == "duet.election.role_change" && instance == "lb2" && *start_ns > crash_ns
                        && attributes.get("duet.role").map(String::as_str) == Some("active"))
                })?;
                let Line::Span { trace_id, .. } = root else { return None };
                let complete = span_named(&spans, trace_id, "duet.takeover.hold").is_some()
                    && span_named(&spans, trace_id, "duet.replicator.wait_installed").is_some();
                complete.then(|| (root.clone(), r.clone()))
            })?;
        let Line::Span { trace_id, .. } = &root else { unreachable!() };
        let spans = got.spans();
        let (rs, root_id, root_parent, root_start, _, root_attrs) = span_fields(&root);
        ensure!(rs == "duet-election" && root_parent.is_empty(), "the root is the election's decision: {root:?}");
        ensure!(root_attrs.get("duet.reason").is_some_and(|r| !r.is_empty()), "the reason: {root_attrs:?}");
        let hold = span_named(&spans, trace_id, "duet.takeover.hold").expect("waited for");
        let wait = span_named(&spans, trace_id, "duet.replicator.wait_installed").expect("waited for");
        let (hs, _, hp, h_start, h_end, h_attrs) = span_fields(hold);
        let (ws, _, wp, w_start, w_end, w_attrs) = span_fields(wait);
        ensure!(hs == "duet-takeover" && hp == root_id, "the takeover's span under the decision: {hold:?}");
        ensure!(ws == "duet-replicator" && wp == root_id, "the replicator's span under the decision: {wait:?}");
        // In order: the decision, the state asked for and installed, the
        // addresses and the first gratuitous ARP.
        ensure!(
            root_start <= h_start && h_start <= w_start && w_end <= h_end,
            "out of order: {root:?} {wait:?} {hold:?}"
        );
        ensure!(w_attrs.get("duet.state_installed").map(String::as_str) == Some("true"), "{w_attrs:?}");
        for k in ["duet.first_garp_us", "duet.netlink_us", "duet.state_wait_us", "duet.addresses"] {
            ensure!(h_attrs.contains_key(k), "the takeover's span lacks {k}: {h_attrs:?}");
        }
        eprintln!(
            "crash failover trace {trace_id}: decision -> first GARP {} us (state wait {} us, netlink {} us)",
            h_attrs["duet.first_garp_us"], h_attrs["duet.state_wait_us"], h_attrs["duet.netlink_us"]
        );
        Ok(())
    });
}

#[test]
fn a_configuration_commit_is_one_trace_across_both_units() {
    lab_test("telemetry_commit", false, |l| {
        let (_units, _sink, out) = start_exporting_pair(l)?;
        // Both replicators and elections follow configsync's generations.
        std::thread::sleep(Duration::from_secs(2));
        let ctl = bin("duetctl").to_string_lossy().into_owned();
        let said = l.lab.run(l.a, &[&ctl, "config", "set", "timeout_s=6"])?;
        eprintln!("duetctl: {}", said.trim());
        let names = [
            ("duet.configsync.commit", "lb1"),
            ("duet.election.reload", "lb1"),
            ("duet.dataplane.apply", "lb1"),
            ("duet.configsync.push", "lb1"),
            ("duet.configsync.adopt", "lb2"),
            ("duet.election.reload", "lb2"),
            ("duet.dataplane.apply", "lb2"),
        ];
        let got = wait_for("the commit's spans", Duration::from_secs(15), Duration::from_millis(200), || {
            let r = Received::read(&out);
            let spans = r.spans();
            let root = spans.iter().copied().find(|s| {
                matches!(s, Line::Span { name, instance, attributes, .. }
                    if name == "duet.configsync.commit" && instance == "lb1"
                        && attributes.get("duet.origin").map(String::as_str) == Some("committed"))
            })?;
            let Line::Span { trace_id, .. } = root else { return None };
            let all = names.iter().all(|(n, u)| {
                spans.iter().any(|s| matches!(s, Line::Span { trace_id: t, name, instance, .. } if t == trace_id && name == n && instance == u))
            });
            all.then(|| (trace_id.clone(), r.clone()))
        });
        let (trace_id, r) = got.with_context(|| {
            let r = Received::read(&out);
            let seen: Vec<String> = r
                .spans()
                .iter()
                .filter_map(|s| match s {
                    Line::Span { name, instance, trace_id, .. } => {
                        Some(format!("{instance}:{name}:{}", &trace_id[..8]))
                    }
                    Line::Metric { .. } => None,
                })
                .collect();
            format!("spans seen: {seen:?}")
        })?;
        let spans = r.spans();
        let find = |n: &str, u: &str| {
            spans
                .iter()
                .copied()
                .find(|s| matches!(s, Line::Span { trace_id: t, name, instance, .. } if *t == trace_id && name == n && instance == u))
                .expect("waited for")
        };
        let id = |s: &Line| span_fields(s).1.to_owned();
        let parent = |s: &Line| span_fields(s).2.to_owned();
        let commit = find("duet.configsync.commit", "lb1");
        let push = find("duet.configsync.push", "lb1");
        let adopt = find("duet.configsync.adopt", "lb2");
        ensure!(parent(commit).is_empty(), "the commit is the root");
        ensure!(parent(push) == id(commit), "push under the commit");
        ensure!(parent(adopt) == id(push), "the standby's adoption under the push");
        for (u, above) in [("lb1", commit), ("lb2", adopt)] {
            for n in ["duet.election.reload", "duet.dataplane.apply"] {
                let s = find(n, u);
                ensure!(parent(s) == id(above), "{u}'s {n} under {:?}", span_fields(above).1);
                ensure!(span_fields(s).3 >= span_fields(above).3, "{u}'s {n} starts after its parent");
            }
        }
        let reload = find("duet.election.reload", "lb2");
        ensure!(
            span_fields(reload).5.get("duet.ha_changed").map(String::as_str) == Some("true"),
            "the standby's election reloaded the new timeout: {reload:?}"
        );
        ensure!(span_fields(adopt).3 >= span_fields(push).3, "adopted after the push started");
        Ok(())
    });
}
