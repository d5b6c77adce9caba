//! `duetctl --etcd ... fleet status`: every pair of a fleet (O7) as its
//! etcd shows it: the head of its image, its units that are up (their
//! status keys live under their leases), the witness holder, and what is
//! wrong. Reading is [`read`]; the rest ([`judge`], [`render`]) is pure.

use std::fmt::Write as _;

use duet_fleet::{Fleet, FleetError, Head, UnitRecord};
use serde::Serialize;

use crate::client::short_hash;

/// What `fleet status --json` prints.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct FleetReport {
    /// The fleet's key prefix.
    pub prefix: String,
    /// The etcd member that answered.
    pub endpoint: String,
    pub pairs: Vec<PairReport>,
}

/// One pair.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct PairReport {
    pub pair: String,
    /// The pair's current generation in etcd (`null`: none there).
    pub head: Option<Head>,
    /// Its units that are up, by name.
    pub units: Vec<UnitRecord>,
    /// Who holds the pair's witness key ("" without a witness, or when
    /// nobody does).
    pub witness_holder: String,
    /// There is a head, at least one unit is up, and every unit up holds
    /// the head's generation and hash.
    pub in_sync: bool,
    /// What is wrong, each naming the unit and the likely cause.
    pub warnings: Vec<String>,
}

/// What was read of one pair, before it is judged.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct PairRead {
    pub pair: String,
    pub head: Option<Head>,
    pub units: Vec<UnitRecord>,
    pub witness_holder: String,
    /// Reads that failed (each a sentence).
    pub errors: Vec<String>,
}

/// Whether `u` holds the head `h`.
fn holds(u: &UnitRecord, h: &Head) -> bool {
    u.generation == h.generation && u.hash == h.hash
}

/// The pair's report: `r` with its warnings.
pub fn judge(r: PairRead) -> PairReport {
    let mut w: Vec<String> = r.errors.iter().map(|e| format!("could not read: {e}")).collect();
    let unreadable = |u: &UnitRecord| u.role.starts_with("unreadable status");
    for u in r.units.iter().filter(|u| unreadable(u)) {
        w.push(format!("{}: {} (not what a duet unit publishes)", u.unit, u.role));
    }
    // (A failed read is its own warning.)
    if r.head.is_none() && r.errors.is_empty() {
        w.push(
            "no image in etcd (no head): its units keep the image on the pair (configsync.store = \"local\"), or \
             its active has not put it there yet"
                .to_owned(),
        );
    }
    match r.units.as_slice() {
        [] => w.push("no unit up: neither unit publishes its status (both down, or both cut off from etcd)".to_owned()),
        [u] if u.mode != "non-ha" => w.push(format!(
            "only {} is up: its partner publishes no status (down, or cut off from etcd): no failover possible",
            u.unit
        )),
        _ => {}
    }
    let actives: Vec<&str> = r.units.iter().filter(|u| u.role == "active").map(|u| u.unit.as_str()).collect();
    if actives.len() > 1 {
        w.push(format!(
            "{} actives: {} all say active (a split: the units do not hear each other; `duetctl doctor` on each)",
            actives.len(),
            actives.join(" and ")
        ));
    } else if actives.is_empty() && r.units.iter().any(|u| !unreadable(u)) {
        let roles: Vec<String> = r.units.iter().map(|u| format!("{} {}", u.unit, u.role)).collect();
        w.push(format!("no unit is active ({}): the pair's addresses are not served", roles.join(", ")));
    }
    if let Some(h) = &r.head {
        for u in r.units.iter().filter(|u| !unreadable(u) && !holds(u, h)) {
            let (g, hash, hg, hh) = (u.generation, short_hash(&u.hash), h.generation, short_hash(&h.hash));
            w.push(if g < hg {
                format!("{} is behind: it holds generation {g} ({hash}), the head is {hg} ({hh})", u.unit)
            } else if g == hg {
                format!("{} holds generation {g} with hash {hash}, the head's is {hh}: the image differs", u.unit)
            } else {
                format!(
                    "{} holds generation {g} ({hash}), ahead of the head {hg} ({hh}): written on the unit, not \
                     through etcd",
                    u.unit
                )
            });
        }
    }
    let in_sync = r.head.as_ref().is_some_and(|h| !r.units.is_empty() && r.units.iter().all(|u| holds(u, h)));
    PairReport { pair: r.pair, head: r.head, units: r.units, witness_holder: r.witness_holder, in_sync, warnings: w }
}

/// The exit status: 0, or 1 when a pair has a warning.
pub fn exit_code(r: &FleetReport) -> i32 {
    i32::from(r.pairs.iter().any(|p| !p.warnings.is_empty()))
}

/// How long ago `then_ms` was, shortly (`-`: never said).
fn ago(now_ms: u64, then_ms: u64) -> String {
    if then_ms == 0 {
        return "-".to_owned();
    }
    let s = now_ms.saturating_sub(then_ms) / 1000;
    match s {
        0..120 => format!("{s}s"),
        120..7200 => format!("{}m", s / 60),
        7200..172_800 => format!("{}h", s / 3600),
        _ => format!("{}d", s / 86_400),
    }
}

/// The human report: one line for the fleet, one per pair, one per unit,
/// one per warning (`now_ms`: for the units' "changed ... ago").
pub fn render(r: &FleetReport, now_ms: u64) -> String {
    let mut out = String::new();
    let warned = r.pairs.iter().filter(|p| !p.warnings.is_empty()).count();
    let _ = writeln!(
        out,
        "fleet {} ({}): {} pair(s), {}",
        r.prefix,
        r.endpoint,
        r.pairs.len(),
        if warned == 0 { "no warnings".to_owned() } else { format!("{warned} with warnings") }
    );
    if r.pairs.is_empty() {
        let _ =
            writeln!(out, "no pair has keys under {}/pairs/ (is --fleet-prefix the units' fleet.prefix?)", r.prefix);
    }
    let pw = r.pairs.iter().map(|p| p.pair.len()).max().unwrap_or(0);
    let uw = r.pairs.iter().flat_map(|p| &p.units).map(|u| u.unit.len()).max().unwrap_or(0);
    let rw = r.pairs.iter().flat_map(|p| &p.units).map(|u| u.role.len()).max().unwrap_or(0).min(12);
    for p in &r.pairs {
        let head = p
            .head
            .as_ref()
            .map_or_else(|| "head none".to_owned(), |h| format!("head gen {} {}", h.generation, short_hash(&h.hash)));
        let witness = if p.witness_holder.is_empty() { "-" } else { p.witness_holder.as_str() };
        let state = match (p.in_sync, p.warnings.len()) {
            (true, 0) => "in sync".to_owned(),
            (true, n) => format!("in sync, {n} warning(s)"),
            (false, n) => format!("NOT in sync, {n} warning(s)"),
        };
        let _ = writeln!(out, "{:<pw$}  {head}  witness {witness}  {state}", p.pair);
        for u in &p.units {
            let mark = match &p.head {
                None => "",
                Some(h) if holds(u, h) => "=head",
                Some(h) if u.generation < h.generation => "BEHIND",
                Some(h) if u.generation == h.generation => "DIFFERS",
                Some(_) => "AHEAD",
            };
            let squares: Vec<String> = u.squares.iter().map(|q| format!("HA{} {}", q.unit, q.status)).collect();
            let squares = if squares.is_empty() { "squares ?".to_owned() } else { squares.join(", ") };
            let _ = writeln!(
                out,
                "  {:<uw$}  {:<6}  {:<rw$}  gen {} {} {mark:<7} {squares}  changed {} ago  repl {}",
                u.unit,
                u.mode,
                u.role,
                u.generation,
                short_hash(&u.hash),
                ago(now_ms, u.changed_at_ms),
                if u.replication.is_empty() { "?" } else { u.replication.as_str() },
            );
        }
        for w in &p.warnings {
            let _ = writeln!(out, "  ! {w}");
        }
    }
    out
}

/// Reads one pair: its head and units at once, then the witness key the
/// units name.
async fn read_pair(f: &Fleet, pair: String) -> PairRead {
    let (head, units) = tokio::join!(f.head(&pair), f.units(&pair));
    let mut r = PairRead { pair, ..PairRead::default() };
    match head {
        Ok(h) => r.head = h.map(|(h, _)| h),
        Err(e) => r.errors.push(format!("the head: {e}")),
    }
    match units {
        Ok(u) => r.units = u,
        Err(e) => r.errors.push(format!("the units: {e}")),
    }
    if let Some(key) = r.units.iter().map(|u| u.witness_key.as_str()).find(|k| !k.is_empty()) {
        match f.value(key).await {
            Ok(v) => r.witness_holder = v.unwrap_or_default(),
            Err(e) => {
                r.witness_holder = "?".to_owned();
                r.errors.push(format!("the witness key {key}: {e}"));
            }
        }
    }
    r
}

/// Reads every pair of the fleet (or only `only`), all at once.
pub async fn read(f: &Fleet, prefix: &str, only: Option<&str>) -> Result<FleetReport, FleetError> {
    let pairs = match only {
        Some(p) => vec![p.to_owned()],
        None => f.pairs().await?,
    };
    let reads = futures::future::join_all(pairs.into_iter().map(|p| read_pair(f, p))).await;
    Ok(FleetReport {
        prefix: prefix.to_owned(),
        endpoint: f.endpoint().to_owned(),
        pairs: reads.into_iter().map(judge).collect(),
    })
}

/// `fleet status`: prints the report; the exit status to end with.
pub async fn status(s: &duet_fleet::Settings, only: Option<&str>, json: bool) -> anyhow::Result<i32> {
    let f = Fleet::connect(s).await?;
    let r = read(&f, &s.prefix, only).await?;
    if json {
        println!("{}", serde_json::to_string_pretty(&r)?);
    } else {
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX));
        print!("{}", render(&r, now));
    }
    Ok(exit_code(&r))
}

#[cfg(test)]
mod tests {
    use duet_fleet::Square;

    use super::*;

    const NOW: u64 = 1_800_000_000_000;

    fn head(g: u64) -> Head {
        Head { generation: g, hash: format!("{g:0>12}abcdef") }
    }

    fn unit(name: &str, mode: &str, role: &str, g: u64) -> UnitRecord {
        UnitRecord {
            unit: name.into(),
            pair: "edge-a".into(),
            mode: mode.into(),
            role: role.into(),
            squares: vec![
                Square { unit: 1, status: "active".into(), detail: String::new() },
                Square { unit: 2, status: "standby".into(), detail: String::new() },
            ],
            generation: g,
            hash: head(g).hash,
            replication: "up".into(),
            witness_key: String::new(),
            changed_at_ms: NOW - 90_000,
            version: "0.1.0".into(),
        }
    }

    fn pair(name: &str, h: Option<u64>, units: Vec<UnitRecord>) -> PairReport {
        judge(PairRead {
            pair: name.into(),
            head: h.map(head),
            units,
            witness_holder: "lb1".into(),
            errors: Vec::new(),
        })
    }

    fn healthy(name: &str) -> PairReport {
        pair(name, Some(7), vec![unit("lb1", "first", "active", 7), unit("lb2", "second", "standby", 7)])
    }

    fn fleet(pairs: Vec<PairReport>) -> FleetReport {
        FleetReport { prefix: "/duet".into(), endpoint: "https://198.18.0.21:2379".into(), pairs }
    }

    #[test]
    fn a_healthy_pair_has_no_warning() {
        let p = healthy("edge-a");
        assert!(p.in_sync);
        assert_eq!(p.warnings, Vec::<String>::new());
        assert_eq!(exit_code(&fleet(vec![p])), 0);
    }

    #[test]
    fn two_actives_are_a_warning() {
        let p = pair("edge-a", Some(7), vec![unit("lb1", "first", "active", 7), unit("lb2", "second", "active", 7)]);
        assert!(p.in_sync, "both hold the head");
        assert_eq!(p.warnings.len(), 1, "{:?}", p.warnings);
        assert!(p.warnings[0].starts_with("2 actives: lb1 and lb2 all say active"), "{:?}", p.warnings);
        assert_eq!(exit_code(&fleet(vec![healthy("edge-b"), p])), 1);
    }

    #[test]
    fn a_unit_behind_the_head_is_named() {
        let p = pair("edge-a", Some(7), vec![unit("lb1", "first", "active", 7), unit("lb2", "second", "standby", 6)]);
        assert!(!p.in_sync);
        assert_eq!(p.warnings.len(), 1, "{:?}", p.warnings);
        assert!(p.warnings[0].starts_with("lb2 is behind: it holds generation 6 (000000000006)"), "{:?}", p.warnings);
        let text = render(&fleet(vec![p]), NOW);
        let lb2 = text.lines().find(|l| l.trim_start().starts_with("lb2")).unwrap();
        assert!(lb2.contains("BEHIND"), "{text}");
        assert!(text.contains("NOT in sync, 1 warning(s)"), "{text}");

        // The same generation with another hash, and one ahead.
        let mut other = unit("lb2", "second", "standby", 7);
        other.hash = "ffffffffffffffff".into();
        let p = pair("edge-a", Some(7), vec![unit("lb1", "first", "active", 8), other]);
        assert_eq!(p.warnings.len(), 2, "{:?}", p.warnings);
        assert!(p.warnings[0].contains("ahead of the head 7"), "{:?}", p.warnings);
        assert!(p.warnings[1].contains("the image differs"), "{:?}", p.warnings);
    }

    #[test]
    fn one_unit_up_no_unit_up_and_no_head() {
        let p = pair("edge-a", Some(7), vec![unit("lb1", "first", "active", 7)]);
        assert_eq!(p.warnings.len(), 1, "{:?}", p.warnings);
        assert!(p.warnings[0].starts_with("only lb1 is up"), "{:?}", p.warnings);
        assert!(p.in_sync, "the one unit up holds the head");

        let alone = pair("edge-a", Some(7), vec![unit("lb1", "non-ha", "active", 7)]);
        assert!(alone.warnings.is_empty(), "a non-HA unit is alone by design: {:?}", alone.warnings);

        let none = pair("edge-a", Some(7), vec![]);
        assert!(!none.in_sync);
        assert_eq!(none.warnings.len(), 1, "{:?}", none.warnings);
        assert!(none.warnings[0].starts_with("no unit up"), "{:?}", none.warnings);

        let headless =
            pair("edge-a", None, vec![unit("lb1", "first", "active", 3), unit("lb2", "second", "standby", 3)]);
        assert!(!headless.in_sync);
        assert_eq!(headless.warnings.len(), 1, "{:?}", headless.warnings);
        assert!(headless.warnings[0].starts_with("no image in etcd"), "{:?}", headless.warnings);

        let idle = pair("edge-a", Some(7), vec![unit("lb1", "first", "standby", 7), unit("lb2", "second", "init", 7)]);
        assert_eq!(idle.warnings, ["no unit is active (lb1 standby, lb2 init): the pair's addresses are not served"]);
    }

    #[test]
    fn failed_reads_and_unreadable_units_are_warnings() {
        let mut bad = unit("lb2", "", "unreadable status: expected value at line 1 column 1", 0);
        bad.squares.clear();
        let p = judge(PairRead {
            pair: "edge-a".into(),
            head: None,
            units: vec![unit("lb1", "first", "active", 7), bad],
            witness_holder: "?".into(),
            errors: vec!["the head: etcd refused read the head (permission denied)".into()],
        });
        assert!(!p.in_sync);
        assert_eq!(p.warnings.len(), 2, "{:?}", p.warnings);
        assert!(p.warnings[0].starts_with("could not read: the head: etcd refused"), "{:?}", p.warnings);
        assert!(p.warnings[1].starts_with("lb2: unreadable status"), "{:?}", p.warnings);
    }

    #[test]
    fn the_json_shape() {
        let v = serde_json::to_value(fleet(vec![healthy("edge-a"), pair("edge-b", None, vec![])])).unwrap();
        assert_eq!(v["prefix"], "/duet");
        assert_eq!(v["endpoint"], "https://198.18.0.21:2379");
        let a = &v["pairs"][0];
        assert_eq!(a["pair"], "edge-a");
        assert_eq!(a["head"]["generation"], 7);
        assert_eq!(a["head"]["hash"], head(7).hash);
        assert_eq!(a["units"][0]["unit"], "lb1");
        assert_eq!(a["units"][0]["role"], "active");
        assert_eq!(a["units"][1]["squares"][1]["status"], "standby");
        assert_eq!(a["units"][0]["changed_at_ms"], NOW - 90_000);
        assert_eq!(a["witness_holder"], "lb1");
        assert_eq!(a["in_sync"], true);
        assert_eq!(a["warnings"], serde_json::json!([]));
        let b = &v["pairs"][1];
        assert_eq!(b["head"], serde_json::Value::Null);
        assert_eq!(b["units"], serde_json::json!([]));
        assert_eq!(b["in_sync"], false);
        assert_eq!(b["warnings"].as_array().unwrap().len(), 2);
        let keys: Vec<&str> = a.as_object().unwrap().keys().map(String::as_str).collect();
        assert_eq!(keys.len(), 6, "{keys:?}");
    }

    #[test]
    fn ten_pairs_fit_one_screen() {
        let pairs: Vec<PairReport> = (0..10).map(|k| healthy(&format!("edge-{k}"))).collect();
        let text = render(&fleet(pairs), NOW);
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(lines.len(), 1 + 10 * 3, "{text}");
        assert!(lines.iter().all(|l| l.len() <= 120), "{text}");
        assert_eq!(lines[0], "fleet /duet (https://198.18.0.21:2379): 10 pair(s), no warnings");
        assert_eq!(lines[1], "edge-0  head gen 7 000000000007  witness lb1  in sync");
        assert_eq!(
            lines[2],
            "  lb1  first   active   gen 7 000000000007 =head   HA1 active, HA2 standby  changed 90s ago  repl up"
        );
    }

    #[test]
    fn ages() {
        assert_eq!(ago(NOW, 0), "-");
        assert_eq!(ago(NOW, NOW - 5_000), "5s");
        assert_eq!(ago(NOW, NOW - 600_000), "10m");
        assert_eq!(ago(NOW, NOW - 3 * 3_600_000), "3h");
        assert_eq!(ago(NOW, NOW - 3 * 86_400_000), "3d");
        assert_eq!(ago(NOW, NOW + 5_000), "0s", "a clock ahead");
    }
}
