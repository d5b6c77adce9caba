//! `duetctl status`, `failover`, `clear-pacified`.

use duet_proto::common::v1::{Role, UnitStatus};
use duet_proto::election::v1 as el;

use crate::client::{self, Addrs, explain};

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

fn role(r: i32) -> &'static str {
    Role::try_from(r).map_or("?", |r| r.as_str_name().trim_start_matches("ROLE_"))
}

/// Prints the unit's status: both squares, role, partner, configuration.
pub async fn status(a: &Addrs, json: bool) -> anyhow::Result<()> {
    let s = client::election(a).await?.get_status(el::GetStatusRequest {}).await.map_err(explain)?.into_inner();
    let cfg = match client::configsync(a).await {
        Ok(mut c) => {
            c.get_status(duet_proto::configsync::v1::GetStatusRequest {}).await.ok().map(tonic::Response::into_inner)
        }
        Err(_) => None,
    };
    if json {
        println!(
            "{}",
            duet_proto::json::to_json(&s, "duet.election.v1.GetStatusResponse").map_err(anyhow::Error::msg)?
        );
        if let Some(c) = &cfg {
            println!(
                "{}",
                duet_proto::json::to_json(c, "duet.configsync.v1.GetStatusResponse").map_err(anyhow::Error::msg)?
            );
        }
        return Ok(());
    }
    let unit = s.unit.clone().unwrap_or_default();
    println!("unit {} ({}), role {} — {}", unit.name, unit.address, role(s.role), s.role_reason);
    for q in &s.squares {
        println!("  HA{}  {}   {}", q.unit, square(q.status), q.detail);
    }
    if let Some(p) = &s.partner {
        println!(
            "partner {}: {}, last advert {} ms ago (advbase {} advskew {})",
            p.address,
            if p.reachable { "reachable" } else { "NOT reachable" },
            p.silent_ms,
            p.advbase,
            p.advskew
        );
    }
    if let Some(t) = &s.takeover {
        println!(
            "takeover: {}, applied {} (seq {}){}",
            if t.following { "following" } else { "NOT following" },
            role(t.applied_role),
            t.applied_seq,
            if t.error.is_empty() { String::new() } else { format!(", error: {}", t.error) }
        );
    }
    if let Some(c) = &cfg {
        let (l, p) = (c.local.clone().unwrap_or_default(), c.partner.clone().unwrap_or_default());
        println!(
            "configuration: this unit gen {} {}, partner {} {}{}",
            l.generation,
            &l.hash[..12.min(l.hash.len())],
            if p.known { p.generation.to_string() } else { "?".into() },
            &p.hash[..12.min(p.hash.len())],
            if c.in_sync { " (in sync)" } else { " (NOT in sync)" }
        );
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

/// Planned handover from the active unit (E11).
pub async fn failover(a: &Addrs, timeout_ms: u64, json: bool) -> anyhow::Result<()> {
    let r =
        client::election(a).await?.handover(el::HandoverRequest { timeout_ms }).await.map_err(explain)?.into_inner();
    if json {
        println!("{}", duet_proto::json::to_json(&r, "duet.election.v1.HandoverResponse").map_err(anyhow::Error::msg)?);
    } else if r.confirmed {
        println!("handed over to {} in {} ms", r.partner, r.took_ms);
    } else {
        anyhow::bail!("the partner did not confirm within {timeout_ms} ms; this unit stays active");
    }
    Ok(())
}

/// Leaves the pacified state (E9).
pub async fn clear_pacified(a: &Addrs) -> anyhow::Result<()> {
    let r = client::election(a).await?.clear_pacified(el::ClearPacifiedRequest {}).await.map_err(explain)?.into_inner();
    println!("pacified state cleared; role now {}", role(r.role));
    Ok(())
}
