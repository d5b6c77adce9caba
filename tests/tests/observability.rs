//! The shipped dashboard and alert rules (deploy/observability) cannot drift
//! from the code: every series they name is an instrument of the catalogue
//! (`duet_runtime::instruments`, which the end-to-end telemetry test checks a
//! pair exports), every label they use is one of its attributes or of the
//! resource, and the dashboard has the panels the pair overview needs.

use std::collections::BTreeSet;
use std::path::PathBuf;

use duet_runtime::instruments::{ALL, Instrument, Kind};

fn deploy(file: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../deploy/observability").join(file)
}

/// Labels every series has besides its own attributes: the resource's (the
/// collector's `resource_to_telemetry_conversion`) and the histogram buckets'.
const RESOURCE_LABELS: &[&str] =
    &["duet_pair", "service_name", "service_instance_id", "service_version", "job", "instance"];

/// The instrument a series name stands for (a histogram's `_bucket`,
/// `_sum` and `_count` included).
fn instrument_of(series: &str) -> Option<&'static Instrument> {
    ALL.iter().find(|i| {
        let p = i.prometheus();
        series == p
            || (i.kind == Kind::Histogram && ["_bucket", "_sum", "_count"].iter().any(|s| series == format!("{p}{s}")))
    })
}

/// The `duet_...` series named in a PromQL expression.
fn series_in(expr: &str) -> Vec<String> {
    let mut out = Vec::new();
    let b = expr.as_bytes();
    let mut k = 0;
    while let Some(off) = expr[k..].find("duet_") {
        let start = k + off;
        let before_ok = start == 0 || !(b[start - 1].is_ascii_alphanumeric() || b[start - 1] == b'_');
        let mut end = start;
        while end < b.len() && (b[end].is_ascii_alphanumeric() || b[end] == b'_') {
            end += 1;
        }
        // `duet_pair` is a label, not a series.
        if before_ok && &expr[start..end] != "duet_pair" {
            out.push(expr[start..end].to_owned());
        }
        k = end;
    }
    out
}

/// Label names used in an expression: matchers `{a="x", b=~"y"}` and
/// `by (a, b)` / `without (...)` clauses.
fn labels_in(expr: &str) -> BTreeSet<String> {
    let mut out = BTreeSet::new();
    for (open, close) in [('{', '}'), ('(', ')')] {
        let mut rest = expr;
        while let Some(a) = rest.find(open) {
            let Some(b) = rest[a..].find(close) else { break };
            let inner = &rest[a + 1..a + b];
            let is_grouping = open == '(' && {
                let head = rest[..a].trim_end();
                head.ends_with(" by") || head.ends_with("without") || head.ends_with("by")
            };
            if open == '{' {
                for m in inner.split(',') {
                    if let Some(name) = m.split(['=', '!', '~']).next() {
                        let name = name.trim();
                        if !name.is_empty() {
                            out.insert(name.to_owned());
                        }
                    }
                }
            } else if is_grouping {
                out.extend(inner.split(',').map(|s| s.trim().to_owned()).filter(|s| !s.is_empty()));
            }
            rest = &rest[a + 1..];
        }
    }
    out
}

/// Checks one expression; returns the instruments it names.
fn check_expr(where_: &str, expr: &str) -> Vec<&'static Instrument> {
    let series = series_in(expr);
    assert!(!series.is_empty(), "{where_}: no duet series in {expr:?}");
    let found: Vec<&Instrument> = series
        .iter()
        .map(|s| instrument_of(s).unwrap_or_else(|| panic!("{where_}: {s} is no instrument of the catalogue ({expr})")))
        .collect();
    for l in labels_in(expr) {
        let known = RESOURCE_LABELS.contains(&l.as_str())
            || l == "le"
            || found.iter().any(|i| i.attributes.contains(&l.as_str()));
        assert!(known, "{where_}: label {l} is neither an attribute of {series:?} nor a resource label ({expr})");
    }
    found
}

#[test]
fn every_alert_rule_names_exported_series_and_labels() {
    let text = std::fs::read_to_string(deploy("duet-alerts.yaml")).expect("the alert rules");
    let mut alerts = Vec::new();
    let mut current = String::new();
    for line in text.lines() {
        let t = line.trim();
        if let Some(a) = t.strip_prefix("- alert: ") {
            current = a.to_owned();
            alerts.push(a.to_owned());
        } else if let Some(e) = t.strip_prefix("expr: ") {
            check_expr(&current, e);
        }
    }
    for want in [
        "DuetTwoActives",
        "DuetNoActive",
        "DuetPacified",
        "DuetPartnerUnreachable",
        "DuetConfigOutOfSync",
        "DuetReplicationLinkDown",
        "DuetDropsRising",
    ] {
        assert!(alerts.iter().any(|a| a == want), "no {want} rule in {alerts:?}");
    }
}

#[test]
fn every_dashboard_panel_names_exported_series_and_the_overview_is_complete() {
    let text = std::fs::read_to_string(deploy("grafana/duet-pair.json")).expect("the dashboard");
    let d: serde_json::Value = serde_json::from_str(&text).expect("the dashboard is JSON");
    let mut used = BTreeSet::new();
    let panels = d["panels"].as_array().expect("panels");
    for p in panels.iter().filter(|p| p["type"] != "row") {
        let title = p["title"].as_str().unwrap_or("?");
        let targets = p["targets"].as_array().unwrap_or_else(|| panic!("panel {title} has no targets"));
        assert!(!targets.is_empty(), "panel {title} has no targets");
        assert_eq!(p["datasource"]["uid"], "duet-prometheus", "panel {title}'s data source");
        for t in targets {
            let expr = t["expr"].as_str().unwrap_or_else(|| panic!("panel {title}: a target without expr"));
            used.extend(check_expr(title, expr).into_iter().map(|i| i.name));
        }
    }
    // The pair overview: roles over time, failovers, advert rates and drops,
    // timer lateness, GARPs, generations side by side, replication lag and
    // link, the witness, the tracked checks.
    for want in [
        "duet.election.role",
        "duet.election.role.changes",
        "duet.election.adverts",
        "duet.election.packets.dropped",
        "duet.election.timer.lateness",
        "duet.takeover.garps",
        "duet.configsync.generation",
        "duet.replicator.lag",
        "duet.replicator.link.up",
        "duet.election.witness.beats",
        "duet.track.state",
    ] {
        assert!(used.contains(want), "the dashboard shows no {want}");
    }
    let var = &d["templating"]["list"][0];
    assert_eq!(var["name"], "pair");
    check_expr("the pair variable", var["definition"].as_str().expect("a definition"));
}

#[test]
fn the_collector_exports_the_names_the_rules_use() {
    let c = std::fs::read_to_string(deploy("otel-collector.yaml")).expect("the collector config");
    assert!(c.contains("add_metric_suffixes: false"), "series names are the instruments' with dots as underscores");
    assert!(c.contains("resource_to_telemetry_conversion:") && c.contains("enabled: true"), "duet_pair as a label");
    let p = std::fs::read_to_string(deploy("prometheus.yml")).expect("prometheus.yml");
    assert!(p.contains("duet-alerts.yaml") && p.contains("honor_labels: true"));
}

#[test]
fn the_expression_parser_finds_series_and_labels() {
    let e = r#"sum by (duet_pair, reason) (rate(duet_election_packets_dropped{duet_pair=~"$pair", reason!="x"}[5m]))"#;
    assert_eq!(series_in(e), ["duet_election_packets_dropped"]);
    assert_eq!(labels_in(e), BTreeSet::from(["duet_pair".to_owned(), "reason".to_owned()]));
    assert!(instrument_of("duet_takeover_garp_latency_bucket").is_some());
    assert!(instrument_of("duet_no_such_thing").is_none());
}
