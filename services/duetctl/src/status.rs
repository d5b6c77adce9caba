//! `duetctl status`, `failover`, `clear-pacified`.

use duet_proto::common::v1::{Role, UnitStatus};
use duet_proto::election::v1 as el;

use crate::client::{self, Addrs, answer, print_json, short_hash};

/// `m` as protobuf JSON (`name` is its full name).
fn to_json<M: prost::Message>(m: &M, name: &str) -> anyhow::Result<String> {
    duet_proto::json::to_json(m, name).map_err(anyhow::Error::msg)
}

fn square(s: i32) -> &'static str {
    match UnitStatus::try_from(s).unwrap_or(UnitStatus::Unspecified) {
        UnitStatus::Active => "[A] green (active)",
        UnitStatus::Standby => "[ ] green (standby)",
        UnitStatus::Unreachable => "[ ] red (not heard)",
        UnitStatus::Pacified => "[ ] blue (pacified)",
        UnitStatus::NotSetUp => "[ ] gray (not set up)",
        UnitStatus::Indeterminate => "[ ] gray (indeterminate)",
        UnitStatus::Updating => "[?] (updating)",
        UnitStatus::Unspecified => "[-]",
    }
}

/// The role's word, as the logs' fields, the metrics and the hooks say it
/// (`active`, `standby`, `init`, `pacified`, `stopping`).
fn role(r: i32) -> &'static str {
    duet_proto::convert::role(r).map_or("?", duet_carp::Role::as_str)
}

/// Prints the unit's status: both squares, role, partner, configuration.
pub async fn status(a: &Addrs, json: bool) -> anyhow::Result<()> {
    let s = answer(client::election(a).await?.get_status(el::GetStatusRequest {})).await?;
    let cfg = match client::configsync(a).await {
        Ok(mut c) => {
            c.get_status(duet_proto::configsync::v1::GetStatusRequest {}).await.ok().map(tonic::Response::into_inner)
        }
        Err(_) => None,
    };
    let rep = match client::replicator(a).await {
        Ok(mut c) => {
            c.get_status(duet_proto::replicator::v1::GetStatusRequest {}).await.ok().map(tonic::Response::into_inner)
        }
        Err(_) => None,
    };
    if json {
        // One document: each service's answer under its name (null when
        // the service does not run or does not answer).
        let part = |m: Option<String>| -> anyhow::Result<serde_json::Value> {
            m.map_or(Ok(serde_json::Value::Null), |t| Ok(serde_json::from_str(&t)?))
        };
        let doc = serde_json::json!({
            "election": part(Some(to_json(&s, "duet.election.v1.GetStatusResponse")?))?,
            "configsync": part(cfg.as_ref().map(|c| to_json(c, "duet.configsync.v1.GetStatusResponse")).transpose()?)?,
            "replicator": part(rep.as_ref().map(|r| to_json(r, "duet.replicator.v1.GetStatusResponse")).transpose()?)?,
        });
        println!("{}", serde_json::to_string_pretty(&doc)?);
        return Ok(());
    }
    let unit = s.unit.clone().unwrap_or_default();
    println!("unit {} ({}), role {} — {}", unit.name, unit.address, role(s.role), s.role_reason);
    for q in &s.squares {
        println!("  HA{}  {}   {}", q.unit, square(q.status), q.detail);
    }
    if let Some(p) = &s.partner {
        // A standby partner sends no adverts: it is heard by its status
        // datagram, which has no timing fields.
        let timing = if p.advbase > 0 || p.advskew > 0 {
            format!(" (advbase {} advskew {})", p.advbase, p.advskew)
        } else {
            " (by its status datagram)".to_string()
        };
        println!(
            "partner {}: {}, last heard {} ms ago{timing}",
            p.address,
            if p.reachable { "reachable" } else { "NOT reachable" },
            p.silent_ms,
        );
    }
    if let Some(t) = &s.takeover {
        // R4: on the active, whether the partner's state was installed
        // before the addresses were added.
        let state = if t.applied_role == Role::Active as i32 && rep.is_some() {
            if t.state_installed {
                format!(
                    ", replicated state installed before the addresses (waited {:.1} ms)",
                    t.state_wait_us as f64 / 1000.0
                )
            } else {
                format!(", addresses added WITHOUT confirmed state (waited {:.1} ms)", t.state_wait_us as f64 / 1000.0)
            }
        } else {
            String::new()
        };
        println!(
            "takeover: {}, applied {} (seq {}){state}{}",
            if t.following { "following" } else { "NOT following" },
            role(t.applied_role),
            t.applied_seq,
            if t.error.is_empty() { String::new() } else { format!(", error: {}", t.error) }
        );
    }
    if let Some(w) = &s.witness {
        println!("{}", witness_line(w));
    }
    for l in check_lines(&s) {
        println!("{l}");
    }
    if let Some(c) = &cfg {
        let (l, p) = (c.local.clone().unwrap_or_default(), c.partner.clone().unwrap_or_default());
        let partner = match (c.partner_reachable, p.known) {
            (true, true) => format!(
                "partner {} {}{}",
                p.generation,
                short_hash(&p.hash),
                if c.in_sync { " (in sync)" } else { " (NOT in sync)" }
            ),
            (true, false) => "partner ? (not answered yet)".to_owned(),
            (false, true) => format!("partner unreachable, last known gen {} {}", p.generation, short_hash(&p.hash)),
            (false, false) => "partner unreachable".to_owned(),
        };
        println!("configuration: this unit gen {} {}, {partner}", l.generation, short_hash(&l.hash));
    }
    if let Some(r) = &rep {
        println!("{}", replication_line(r));
    }
    if let (Some(t), Some(r)) = (&s.timer_lateness, &s.receive_delay) {
        println!(
            "scheduling: timer late p50 {} us, p99 {} us, max {} us; received packets wait p99 {} us, max {} us",
            t.p50_us, t.p99_us, t.max_us, r.p99_us, r.max_us
        );
    }
    if !s.drops.is_empty() {
        let d: Vec<String> = s
            .drops
            .iter()
            .map(|d| {
                format!(
                    "{}={}",
                    el::DropReason::try_from(d.reason)
                        .map_or("?", |r| r.as_str_name().trim_start_matches("DROP_REASON_"))
                        .to_lowercase(),
                    d.count
                )
            })
            .collect();
        println!("dropped packets: {}", d.join(" "));
    }
    for w in s.warnings.iter().chain(cfg.iter().flat_map(|c| c.warnings.iter())) {
        println!("warning: {w}");
    }
    Ok(())
}

/// E16: one line per tracked check, failing ones with their last output,
/// and the partner's summary.
pub fn check_lines(s: &el::GetStatusResponse) -> Vec<String> {
    let mut out = Vec::new();
    for c in &s.checks {
        let state = match el::CheckState::try_from(c.state) {
            Ok(el::CheckState::Passing) => "passing",
            Ok(el::CheckState::Failing) => "FAILING",
            _ => "not run yet",
        };
        let mut line = format!(
            "check {} ({}, {}): {state} for {:.1} s, {} runs, {} failed",
            c.name,
            c.kind,
            c.effect,
            c.state_for_ms as f64 / 1000.0,
            c.runs,
            c.failures
        );
        if !c.last_output.is_empty() && (!c.last_passed || state != "passing") {
            line.push_str(&format!("; last: {} ({:.1} ms)", c.last_output, c.last_took_ms));
        }
        out.push(line);
    }
    if let Some(p) = &s.partner
        && (p.checks_failing > 0 || p.unhealthy)
    {
        out.push(format!(
            "partner checks: {} failing{}{}",
            p.checks_failing,
            if p.penalty > 0 { format!(", penalty {}", p.penalty) } else { String::new() },
            if p.unhealthy { ", UNHEALTHY (it will not take the role from a healthy unit)" } else { "" }
        ));
    }
    out
}

/// The witness (E14) in one line: policy, etcd, the key's holder, the
/// lease, and what is wrong (fallback, out of reach, the last error).
pub fn witness_line(w: &el::WitnessStatus) -> String {
    let etcd = match (w.reachable, w.since_answer_ms) {
        (true, _) if w.endpoint.is_empty() => "etcd reachable".to_string(),
        (true, _) => format!("etcd reachable ({})", w.endpoint),
        (false, Some(ms)) => format!("etcd NOT reachable (silent for {ms} ms)"),
        (false, None) => "etcd NOT reachable (never answered)".to_string(),
    };
    let holder = if !w.key_known {
        format!("key {} not read yet", w.key)
    } else if w.holder.is_empty() {
        format!("key {} free", w.key)
    } else {
        let who = if w.holder_is_self { format!("{} (this unit)", w.holder) } else { w.holder.clone() };
        let ttl =
            if w.remaining_ttl_ms > 0 { format!(", lease {} ms left", w.remaining_ttl_ms) } else { String::new() };
        format!("key {} held by {who}{ttl}, last beat {} ms ago", w.key, w.since_beat_ms)
    };
    let mut line = format!("witness: policy {}, {etcd}, {holder}", w.policy);
    if w.fallback {
        line.push_str("; FALLBACK: a silent partner is replaced by plain CARP (policy prefer)");
    } else if !w.reachable && w.policy == "required" {
        line.push_str("; this unit will NOT replace a silent partner (policy required)");
    }
    if w.insecure_plaintext {
        line.push_str("; WITHOUT TLS");
    }
    if !w.last_error.is_empty() {
        line.push_str(&format!("; last error: {}", w.last_error));
    }
    line
}

/// One line on the replicator: mode, link, entries, lag.
pub fn replication_line(r: &duet_proto::replicator::v1::GetStatusResponse) -> String {
    let link = if r.partner_connected { format!("linked to {}", r.partner) } else { "NO link to the partner".into() };
    let lag = if r.mode == "sending" && !r.partner_connected {
        // Not a lag: there is nobody to send to (a new active whose
        // partner is gone holds all of its state).
        format!(", {} changes waiting for the partner", r.lag_changes)
    } else if r.mode == "sending" {
        format!(
            ", lag {} changes / {} ms (p50 {:.1} ms, p99 {:.1} ms)",
            r.lag_changes,
            r.lag_ms,
            r.lag_p50_us as f64 / 1000.0,
            r.lag_p99_us as f64 / 1000.0
        )
    } else {
        String::new()
    };
    let ready = if r.ready { String::new() } else { format!(", NOT ready: {}", r.not_ready_reason) };
    let off: Vec<&str> = [("L4 updates", r.l4_updates), ("L7 updates", r.l7_updates)]
        .into_iter()
        .filter(|(_, on)| !on)
        .map(|(w, _)| w)
        .collect();
    let ready = if off.is_empty() { ready } else { format!("{ready}, {} OFF", off.join(" and ")) };
    let dropped: u64 = r.drops.values().sum();
    let dropped = if dropped > 0 { format!(", {dropped} dropped (see `duetctl replication`)") } else { String::new() };
    format!(
        "replication: {} ({link}), {} flows, {} persistence entries, resync {}{lag}{ready}{dropped}",
        r.mode, r.flows, r.persistence, r.resync
    )
}

/// `duetctl replication`: the replicator's whole status.
pub async fn replication(a: &Addrs, json: bool) -> anyhow::Result<()> {
    let r = answer(client::replicator(a).await?.get_status(duet_proto::replicator::v1::GetStatusRequest {})).await?;
    if json {
        return print_json(&r, "duet.replicator.v1.GetStatusResponse");
    }
    println!("{}", replication_line(&r));
    println!(
        "  sequence: last {} acknowledged {}; changes sent {} received {}; resyncs {}",
        r.last_seq, r.acked_seq, r.changes_sent, r.changes_received, r.resyncs
    );
    if r.mode == "sending" {
        println!(
            "  lag (change to partner's acknowledgement): p50 {} us, p99 {} us, max {} us",
            r.lag_p50_us, r.lag_p99_us, r.lag_max_us
        );
    }
    if let Some(d) = &r.dataplane {
        if d.generation > 0 {
            println!(
                "  data plane: generation {} ({}), {} virtual services, {} real servers; dropped invalid {} untracked {}",
                d.generation,
                short_hash(&d.hash),
                d.services,
                d.real_servers,
                d.dropped_invalid,
                d.dropped_untracked
            );
        }
        if !d.error.is_empty() {
            println!("  data plane error: {}", d.error);
        }
    }
    let mut drops: Vec<_> = r.drops.iter().filter(|(_, v)| **v > 0).collect();
    drops.sort();
    if !drops.is_empty() {
        let d: Vec<String> = drops.iter().map(|(k, v)| format!("{k}={v}")).collect();
        println!("  drops: {}", d.join(" "));
    }
    if !r.last_error.is_empty() {
        println!("  last error: {}", r.last_error);
    }
    Ok(())
}

/// `duetctl persistence [TABLE]`: the persistence entries this unit holds.
pub async fn persistence(a: &Addrs, table: String, json: bool) -> anyhow::Result<()> {
    let r = answer(
        client::replicator(a).await?.list_persistence(duet_proto::replicator::v1::ListPersistenceRequest { table }),
    )
    .await?;
    if json {
        return print_json(&r, "duet.replicator.v1.ListPersistenceResponse");
    }
    for e in &r.entries {
        println!("{:<24} {:<40} -> {:<24} {:>8.1} s left", e.table, e.key, e.server, e.ttl_ms as f64 / 1000.0);
    }
    println!("{} entries", r.entries.len());
    Ok(())
}

/// Planned handover from the active unit (E11).
pub async fn failover(a: &Addrs, timeout_ms: u64, json: bool) -> anyhow::Result<()> {
    let r = answer(client::election(a).await?.handover(el::HandoverRequest { timeout_ms })).await?;
    if json {
        print_json(&r, "duet.election.v1.HandoverResponse")?;
    } else if r.confirmed {
        println!("handed over to {} in {} ms", r.partner, r.took_ms);
    } else {
        anyhow::bail!("the partner did not confirm within {timeout_ms} ms; this unit stays active");
    }
    Ok(())
}

/// Leaves the pacified state (E9).
pub async fn clear_pacified(a: &Addrs) -> anyhow::Result<()> {
    let r = answer(client::election(a).await?.clear_pacified(el::ClearPacifiedRequest {})).await?;
    println!("pacified state cleared; role now {}", role(r.role));
    Ok(())
}

/// `duetctl health`: each service's gRPC health, one line each; an error
/// when the election or the takeover does not answer, or any service that
/// answers is not serving (configsync and the replicator may not run on a
/// unit: not answering is said, not counted).
pub async fn health(a: &Addrs) -> anyhow::Result<()> {
    use tonic_health::pb::health_check_response::ServingStatus;
    let services = [
        ("election", a.election, true),
        ("takeover", a.takeover, true),
        ("configsync", a.configsync, false),
        ("replicator", a.replicator, false),
    ];
    let mut bad = Vec::new();
    for (name, addr, required) in services {
        let state = async {
            let ch = tonic::transport::Endpoint::from_shared(format!("http://{addr}"))?
                .connect_timeout(std::time::Duration::from_secs(2))
                .timeout(std::time::Duration::from_secs(3))
                .connect()
                .await?;
            let r = tonic_health::pb::health_client::HealthClient::new(ch)
                .check(tonic_health::pb::HealthCheckRequest { service: String::new() })
                .await?;
            anyhow::Ok(r.into_inner().status)
        }
        .await;
        let line = match state {
            Ok(s) if s == ServingStatus::Serving as i32 => "serving".to_owned(),
            Ok(s) => {
                bad.push(name);
                ServingStatus::try_from(s).map_or("unknown".into(), |s| s.as_str_name().to_lowercase())
            }
            Err(e) if required => {
                bad.push(name);
                format!("not answering at {addr}: {e}")
            }
            Err(_) => "not running".to_owned(),
        };
        println!("{name}: {line}");
    }
    if bad.is_empty() { Ok(()) } else { anyhow::bail!("not healthy: {}", bad.join(", ")) }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_sender_without_a_partner_has_changes_waiting_not_a_lag() {
        let mut r = duet_proto::replicator::v1::GetStatusResponse {
            mode: "sending".into(),
            lag_changes: 50,
            lag_ms: 1506,
            ..Default::default()
        };
        let line = replication_line(&r);
        assert!(line.contains("50 changes waiting for the partner") && !line.contains("lag"), "{line}");
        r.partner_connected = true;
        r.partner = "lb2".into();
        assert!(replication_line(&r).contains("lag 50 changes / 1506 ms"));
        r.drops = [("refused_peers.unknown_ca".to_owned(), 2), ("overruns".to_owned(), 1)].into();
        assert!(replication_line(&r).contains(", 3 dropped"), "each drop in one counter");
    }

    #[test]
    fn a_failing_check_is_shown_by_name_with_its_last_output() {
        let s = el::GetStatusResponse {
            checks: vec![
                el::TrackedCheck {
                    name: "haproxy".into(),
                    kind: "process".into(),
                    effect: "demote".into(),
                    state: el::CheckState::Failing as i32,
                    last_output: "pid 412 exited".into(),
                    last_took_ms: 0.2,
                    state_for_ms: 2500,
                    runs: 40,
                    failures: 3,
                    ..Default::default()
                },
                el::TrackedCheck {
                    name: "uplink".into(),
                    kind: "interface".into(),
                    effect: "weight 50".into(),
                    state: el::CheckState::Passing as i32,
                    last_passed: true,
                    last_output: "eth1 is up".into(),
                    ..Default::default()
                },
            ],
            partner: Some(el::PartnerStatus { checks_failing: 1, unhealthy: true, ..Default::default() }),
            ..Default::default()
        };
        let l = check_lines(&s);
        assert_eq!(
            l[0],
            "check haproxy (process, demote): FAILING for 2.5 s, 40 runs, 3 failed; last: pid 412 exited (0.2 ms)"
        );
        assert_eq!(l[1], "check uplink (interface, weight 50): passing for 0.0 s, 0 runs, 0 failed");
        assert!(l[2].contains("1 failing, UNHEALTHY"), "{}", l[2]);
    }

    #[test]
    fn the_witness_line_says_who_holds_the_key_and_what_is_wrong() {
        let mut w = el::WitnessStatus {
            policy: "prefer".into(),
            reachable: true,
            endpoint: "https://198.18.0.21:2379".into(),
            key: "/duet/vhid-10/witness".into(),
            key_known: true,
            holder: "lb1".into(),
            holder_is_self: true,
            remaining_ttl_ms: 2500,
            since_beat_ms: 120,
            since_answer_ms: Some(100),
            ..Default::default()
        };
        assert_eq!(
            witness_line(&w),
            "witness: policy prefer, etcd reachable (https://198.18.0.21:2379), key /duet/vhid-10/witness held by lb1 \
             (this unit), lease 2500 ms left, last beat 120 ms ago"
        );
        w.reachable = false;
        w.fallback = true;
        w.since_answer_ms = Some(4000);
        w.last_error = "lease keepalive: no answer".into();
        let l = witness_line(&w);
        assert!(l.contains("etcd NOT reachable (silent for 4000 ms)") && l.contains("FALLBACK"), "{l}");
        assert!(l.ends_with("; last error: lease keepalive: no answer"), "{l}");
        w.fallback = false;
        w.policy = "required".into();
        assert!(witness_line(&w).contains("will NOT replace a silent partner"));
    }
}
