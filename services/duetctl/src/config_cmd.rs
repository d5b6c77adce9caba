//! `duetctl config ...`: the configuration image (S1-S6), of the unit this
//! runs on or, with `--etcd ... --pair NAME`, of a pair in a fleet's etcd
//! (O7): the same commands, the same output.

use std::path::Path;

use anyhow::Context;
use duet_fleet::{Fleet, FleetError, Written};
use duet_model::{HaSettings, Problem};
use duet_proto::common::v1::HaMode;
use duet_proto::config::v1::{Backup, Image, LocalSettings, VirtualService};
use duet_proto::configsync::v1 as cs;
use duet_proto::configsync::v1::apply_config_request::Change;
use duet_proto::json::from_json;
use prost::Message as _;

use crate::client::{self, Addrs, answer, print_json, short_hash};

/// The text of `path`, or of stdin for `-` (a read-only container has no
/// place for a file).
fn read(path: &Path) -> anyhow::Result<String> {
    if path == Path::new("-") {
        let mut s = String::new();
        std::io::Read::read_to_string(&mut std::io::stdin(), &mut s).context("reading stdin")?;
        return Ok(s);
    }
    std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))
}

/// Where `config` works: the unit this runs on (through its configsync
/// service), or a pair's image in a fleet's etcd (O7). Both print the
/// same; a write to etcd is a compare-and-swap on the pair's head, which
/// the pair's units follow.
#[derive(Debug)]
pub enum Target {
    /// The unit's services.
    Unit(Addrs),
    /// Pair `pair` in the fleet's etcd (the client is large: boxed).
    Fleet { fleet: Box<Fleet>, pair: String },
}

/// How many generations a pair keeps in etcd.
pub const FLEET_KEEP: u64 = 20;

/// Who writes to etcd, in the provenance: `duetctl@<hostname>`.
fn writer() -> String {
    let host = std::fs::read_to_string("/proc/sys/kernel/hostname").unwrap_or_default();
    let host = host.trim();
    format!("duetctl@{}", if host.is_empty() { "unknown" } else { host })
}

/// A fleet's error as the operator reads it (its message names the fix).
fn fleet_err(e: FleetError) -> anyhow::Error {
    anyhow::anyhow!("{e}")
}

/// Part `section` of the current image ("" for all).
async fn current(t: &Target, section: &str) -> anyhow::Result<Image> {
    match t {
        Target::Unit(a) => {
            let r = answer(client::configsync(a).await?.get_config(cs::GetConfigRequest { section: section.into() }))
                .await?;
            Ok(r.image.unwrap_or_default())
        }
        Target::Fleet { fleet, pair } => {
            let img = fleet.require(pair).await.map_err(fleet_err)?;
            duet_image::change::section(&img, section).map_err(|p| anyhow::anyhow!("{p}"))
        }
    }
}

/// The generation a change is based on: `base`, or the current one.
async fn base_generation(t: &Target, base: Option<u64>) -> anyhow::Result<u64> {
    if let Some(b) = base {
        return Ok(b);
    }
    Ok(current(t, "ha").await?.generation)
}

/// `config get [section]`.
pub async fn get(t: &Target, section: &str) -> anyhow::Result<()> {
    print_json(&current(t, section).await?, "duet.config.v1.Image")
}

/// The API's change as the image's rule takes it.
fn image_change(c: Change) -> duet_image::change::Change {
    use duet_image::change::Change as C;
    match c {
        Change::Image(i) => C::Replace(i),
        Change::Ha(h) => C::Ha(h),
        Change::Interfaces(i) => C::Interfaces(i.interfaces),
        Change::UpsertVirtualService(v) => C::UpsertVirtualService(v),
        Change::DeleteVirtualService(n) => C::DeleteVirtualService(n),
    }
}

/// Applies one change on `base` (the current generation when `None`).
async fn apply(t: &Target, base: Option<u64>, change: Change, comment: &str, json: bool) -> anyhow::Result<()> {
    let r = match t {
        Target::Unit(a) => {
            let base = base_generation(t, base).await?;
            answer(client::configsync(a).await?.apply_config(cs::ApplyConfigRequest {
                base_generation: base,
                comment: comment.into(),
                change: Some(change),
            }))
            .await?
        }
        Target::Fleet { fleet, pair } => {
            let prov = duet_image::store::provenance(&writer(), "committed", comment);
            let (img, unchanged) = match fleet.apply(pair, base, image_change(change), prov, FLEET_KEEP).await {
                Ok(Written::Committed(i)) => (i, false),
                Ok(Written::Unchanged(i)) => (i, true),
                Err(e) => return Err(fleet_err(e)),
            };
            cs::ApplyConfigResponse { generation: img.generation, hash: img.hash, synced: false, unchanged }
        }
    };
    if json {
        print_json(&r, "duet.configsync.v1.ApplyConfigResponse")
    } else if r.unchanged {
        println!(
            "unchanged: generation {} ({}) already says this; nothing committed",
            r.generation,
            short_hash(&r.hash)
        );
        Ok(())
    } else {
        println!("committed generation {} ({})", r.generation, short_hash(&r.hash));
        Ok(())
    }
}

/// `config set --file image.json`: replaces the whole image.
pub async fn set_file(t: &Target, file: &Path, base: Option<u64>, comment: &str, json: bool) -> anyhow::Result<()> {
    let img: Image =
        from_json(&read(file)?, "duet.config.v1.Image").map_err(|e| anyhow::anyhow!("{}: {e}", file.display()))?;
    apply(t, base, Change::Image(img), comment, json).await
}

/// `config set key=value ...`: changes HA settings in the unit file's
/// words (`timeout_s=6 preferred=first profile=fast`), starting from the
/// current ones.
pub async fn set_ha(t: &Target, pairs: &[String], base: Option<u64>, comment: &str, json: bool) -> anyhow::Result<()> {
    let img = current(t, "ha").await?;
    let base = base.unwrap_or(img.generation);
    let current =
        HaSettings::try_from(&img.ha.unwrap_or_default()).map_err(|p| problems(&duet_model::under("ha", p)))?;
    let ha = set_pairs(&current, pairs).map_err(|p| problems(&p))?;
    apply(t, Some(base), Change::Ha(duet_proto::config::v1::HaSettings::from(&ha)), comment, json).await
}

fn problems(p: &[Problem]) -> anyhow::Error {
    let lines: Vec<String> = p.iter().map(ToString::to_string).collect();
    anyhow::anyhow!("{}", lines.join("\n"))
}

/// `current` with each `key=value` of `pairs` set, read through the
/// model's serde in the unit file's words. Every problem names the key
/// (`ha.<key>`) and the allowed keys or values.
pub fn set_pairs(current: &HaSettings, pairs: &[String]) -> Result<HaSettings, Vec<Problem>> {
    let keys = duet_model::keys::<HaSettings>();
    let mut obj = match serde_json::to_value(current) {
        Ok(serde_json::Value::Object(o)) => o,
        _ => serde_json::Map::new(),
    };
    let mut problems = Vec::new();
    for p in pairs {
        let Some((k, v)) = p.split_once('=') else {
            problems.push(Problem::new(p.as_str(), "write settings as key=value, e.g. timeout_s=6"));
            continue;
        };
        let k = k.trim().strip_prefix("ha.").unwrap_or(k.trim());
        if !keys.contains(&k) {
            let list: Vec<String> = keys.iter().map(|k| format!("`{k}`")).collect();
            problems
                .push(Problem::new(format!("ha.{k}"), format!("not an HA setting: use one of {}", list.join(", "))));
            continue;
        }
        // A number or true/false as such; anything else is a word.
        let v = v.trim();
        let value = match serde_json::from_str::<serde_json::Value>(v) {
            Ok(n @ (serde_json::Value::Number(_) | serde_json::Value::Bool(_) | serde_json::Value::String(_))) => n,
            _ => serde_json::Value::String(v.to_owned()),
        };
        // Read this key alone, so an error names it (and, for a word,
        // lists the allowed ones).
        let mut one = serde_json::Map::new();
        one.insert(k.to_owned(), value.clone());
        match serde_json::from_value::<HaSettings>(serde_json::Value::Object(one)) {
            Ok(_) => {
                obj.insert(k.to_owned(), value);
            }
            Err(e) => problems.push(Problem::new(format!("ha.{k}"), e.to_string())),
        }
    }
    if !problems.is_empty() {
        return Err(problems);
    }
    serde_json::from_value(serde_json::Value::Object(obj)).map_err(|e| vec![Problem::new("ha", e.to_string())])
}

/// `config set-vs --file vs.json`.
pub async fn set_vs(t: &Target, file: &Path, base: Option<u64>, comment: &str, json: bool) -> anyhow::Result<()> {
    let vs: VirtualService = from_json(&read(file)?, "duet.config.v1.VirtualService")
        .map_err(|e| anyhow::anyhow!("{}: {e}", file.display()))?;
    apply(t, base, Change::UpsertVirtualService(vs), comment, json).await
}

/// `config delete-vs NAME`.
pub async fn delete_vs(t: &Target, name: &str, base: Option<u64>, comment: &str, json: bool) -> anyhow::Result<()> {
    apply(t, base, Change::DeleteVirtualService(name.into()), comment, json).await
}

/// An image from `file`: an image as `config get` prints it, or a backup
/// as `config backup` writes it (its image).
fn image_or_backup(file: &Path) -> anyhow::Result<Image> {
    let text = read(file)?;
    if let Ok(Backup { image: Some(img), .. }) = from_json::<Backup>(&text, BACKUP) {
        return Ok(img);
    }
    from_json(&text, "duet.config.v1.Image").map_err(|e| {
        anyhow::anyhow!("{}: neither an image (config get) nor a backup (config backup): {e}", file.display())
    })
}

/// The backup message's full name.
const BACKUP: &str = "duet.config.v1.Backup";

/// What `check_config` answers for `img`, checked here as a pair's units
/// check it (a pair in a fleet is in an HA mode).
fn check_here(img: &Image) -> cs::CheckConfigResponse {
    let problems = match duet_image::validate(img, true) {
        Ok(()) => Vec::new(),
        Err(p) => p.into_iter().map(|p| cs::FieldProblem { field: p.field, message: p.message }).collect(),
    };
    cs::CheckConfigResponse { valid: problems.is_empty(), problems, hash: duet_image::content_hash(img) }
}

/// `config check --file image.json` (or a backup).
pub async fn check(t: &Target, file: &Path, json: bool) -> anyhow::Result<()> {
    let img = image_or_backup(file)?;
    let r = match t {
        Target::Unit(a) => {
            answer(client::configsync(a).await?.check_config(cs::CheckConfigRequest { image: Some(img) })).await?
        }
        Target::Fleet { .. } => check_here(&img),
    };
    if json {
        return print_json(&r, "duet.configsync.v1.CheckConfigResponse");
    }
    if r.valid {
        println!("valid (hash {})", r.hash);
        Ok(())
    } else {
        for p in &r.problems {
            println!("{}: {}", p.field, p.message);
        }
        anyhow::bail!("{} problem(s)", r.problems.len())
    }
}

/// `config backup --out FILE`: the backup as JSON (what `config check`
/// and `config restore` read; `-` for stdout). A pair's backup from etcd
/// is of an HA unit (`mode` first), from unit `fleet:<pair>`.
pub async fn backup(t: &Target, out: &Path) -> anyhow::Result<()> {
    let (b, generation) = match t {
        Target::Unit(a) => {
            let r = answer(client::configsync(a).await?.backup(cs::BackupRequest {})).await?;
            (Backup::decode(r.backup.as_slice()).context("the unit's backup does not decode")?, r.generation)
        }
        Target::Fleet { fleet, pair } => {
            let img = fleet.require(pair).await.map_err(fleet_err)?;
            let generation = img.generation;
            let b = Backup {
                image: Some(img),
                mode: HaMode::First as i32,
                unit: format!("fleet:{pair}"),
                created_at: Some(prost_types::Timestamp::from(std::time::SystemTime::now())),
                version: env!("CARGO_PKG_VERSION").to_owned(),
            };
            (b, generation)
        }
    };
    let text = duet_proto::json::to_json(&b, BACKUP).map_err(anyhow::Error::msg)?;
    if out == Path::new("-") {
        println!("{text}");
        return Ok(());
    }
    std::fs::write(out, format!("{text}\n")).with_context(|| format!("writing {}", out.display()))?;
    println!("generation {generation} written to {}", out.display());
    Ok(())
}

/// Writes `content` as the pair's next generation on `base` (the head when
/// `None`), as `origin` (no change rule: a restore or a rollback commits
/// even what the head already says, as on a unit).
async fn write_whole(
    fleet: &Fleet,
    pair: &str,
    base: Option<u64>,
    content: &Image,
    origin: &str,
    comment: &str,
) -> anyhow::Result<Image> {
    let head = fleet.require(pair).await.map_err(fleet_err)?.generation;
    let prov = duet_image::store::provenance(&writer(), origin, comment);
    fleet.write(pair, base.unwrap_or(head), content, prov, FLEET_KEEP).await.map_err(fleet_err)
}

/// `config restore --file FILE`: a backup as `config backup` writes it
/// (JSON, or the binary of earlier versions).
pub async fn restore(t: &Target, file: &Path, base: Option<u64>) -> anyhow::Result<()> {
    let raw = if file == Path::new("-") {
        read(file)?.into_bytes()
    } else {
        std::fs::read(file).with_context(|| format!("reading {}", file.display()))?
    };
    let bytes = match std::str::from_utf8(&raw).ok().map(|t| from_json::<Backup>(t, BACKUP)) {
        Some(Ok(b)) => b.encode_to_vec(),
        Some(Err(e)) if raw.trim_ascii_start().starts_with(b"{") => {
            anyhow::bail!("{}: not a backup: {e}", file.display())
        }
        _ => raw,
    };
    let (generation, hash) = match t {
        Target::Unit(a) => {
            let base = base_generation(t, base).await?;
            let r = answer(
                client::configsync(a).await?.restore(cs::RestoreRequest { backup: bytes, base_generation: base }),
            )
            .await?;
            (r.generation, r.hash)
        }
        Target::Fleet { fleet, pair } => {
            let b = Backup::decode(bytes.as_slice()).ok().filter(|b| b.image.is_some()).ok_or_else(|| {
                anyhow::anyhow!(
                    "{}: not a duet configuration backup (make one with `duetctl config backup`)",
                    file.display()
                )
            })?;
            if b.mode == HaMode::NonHa as i32 {
                anyhow::bail!(
                    "this backup was taken on a non-HA unit ({}) and cannot be restored onto pair {pair}, whose \
                     units are in an HA mode",
                    b.unit
                );
            }
            let img = b.image.clone().unwrap_or_default();
            duet_image::validate(&img, true).map_err(|p| fleet_err(FleetError::Invalid(p)))?;
            let comment = format!("restored from a backup of {}", b.unit);
            let img = write_whole(fleet, pair, base, &img, "restored", &comment).await?;
            (img.generation, img.hash)
        }
    };
    println!("restored as generation {generation} ({})", short_hash(&hash));
    Ok(())
}

/// `config force-update`.
pub async fn force_update(a: &Addrs, json: bool) -> anyhow::Result<()> {
    let r = answer(client::configsync(a).await?.force_update(cs::ForceUpdateRequest {})).await?;
    if json {
        return print_json(&r, "duet.configsync.v1.ForceUpdateResponse");
    }
    println!("partner updated to generation {} in {} ms", r.generation, r.took_ms);
    Ok(())
}

/// `config history`: the generations kept (in etcd: the pair's last
/// [`FLEET_KEEP`]), oldest first.
pub async fn history(t: &Target, json: bool) -> anyhow::Result<()> {
    let r = match t {
        Target::Unit(a) => answer(client::configsync(a).await?.history(cs::HistoryRequest {})).await?,
        Target::Fleet { fleet, pair } => cs::HistoryResponse {
            generations: fleet
                .history(pair)
                .await
                .map_err(fleet_err)?
                .into_iter()
                .map(|i| cs::GenerationInfo {
                    generation: i.generation,
                    origin: i.provenance.as_ref().map(|p| p.origin.clone()).unwrap_or_default(),
                    hash: i.hash,
                    provenance: i.provenance,
                })
                .collect(),
            backups: Vec::new(),
        },
    };
    if json {
        return print_json(&r, "duet.configsync.v1.HistoryResponse");
    }
    for g in &r.generations {
        let p = g.provenance.clone().unwrap_or_default();
        println!("gen {:>6}  {}  {:<12} {:<10} {}", g.generation, short_hash(&g.hash), g.origin, p.unit, p.comment);
    }
    for b in &r.backups {
        println!("backup {} ({} generations): {}", b.name, b.generations.len(), b.reason);
    }
    Ok(())
}

/// `config rollback GEN`.
pub async fn rollback(t: &Target, to: u64, base: Option<u64>) -> anyhow::Result<()> {
    let generation = match t {
        Target::Unit(a) => {
            let base = base_generation(t, base).await?;
            answer(
                client::configsync(a).await?.rollback(cs::RollbackRequest { to_generation: to, base_generation: base }),
            )
            .await?
            .generation
        }
        Target::Fleet { fleet, pair } => {
            let old = fleet.image(pair, to).await.map_err(fleet_err)?;
            let comment = format!("rolled back to generation {to}");
            write_whole(fleet, pair, base, &old, "rolled-back", &comment).await?.generation
        }
    };
    println!("generation {to} committed again as {generation}");
    Ok(())
}

/// `config local [--set FILE]`: this unit's own settings (never synced).
pub async fn local(a: &Addrs, set: Option<&Path>) -> anyhow::Result<()> {
    let mut c = client::configsync(a).await?;
    if let Some(f) = set {
        let l: LocalSettings = from_json(&read(f)?, "duet.config.v1.LocalSettings")
            .map_err(|e| anyhow::anyhow!("{}: {e}", f.display()))?;
        answer(c.set_local(cs::SetLocalRequest { local: Some(l) })).await?;
    }
    let l = answer(c.get_local(cs::GetLocalRequest {})).await?.local.unwrap_or_default();
    print_json(&l, "duet.config.v1.LocalSettings")
}

#[cfg(test)]
mod tests {
    use duet_model::{HaSettings, Preferred, Profile};

    use super::set_pairs;

    fn set(pairs: &[&str]) -> Result<HaSettings, Vec<String>> {
        let pairs: Vec<String> = pairs.iter().map(|p| (*p).to_owned()).collect();
        let current = HaSettings { timeout_s: 3, vhid: Some(10), ..HaSettings::default() };
        set_pairs(&current, &pairs).map_err(|p| p.iter().map(ToString::to_string).collect())
    }

    #[test]
    fn settings_in_the_unit_files_words_from_the_current_ones() {
        let h = set(&["preferred=first", "profile=fast", "timeout_s=6", "ha.l4_updates=false"]).unwrap();
        assert_eq!((h.preferred, h.profile, h.timeout_s, h.l4_updates), (Preferred::First, Profile::Fast, 6, false));
        assert_eq!(h.vhid, Some(10), "the rest is kept");
        assert_eq!(set(&["vhid=0"]).unwrap().vhid, None, "0 is the default, as in the image");
    }

    #[test]
    fn errors_name_the_key_and_the_allowed_values() {
        let e = set(&["preferred=PREFERRED_SERVER_FIRST", "timeoutS=6", "timeout_s=six", "oops"]).unwrap_err();
        assert_eq!(e.len(), 4, "{e:#?}");
        assert!(
            e[0].starts_with(
                "ha.preferred: unknown variant `PREFERRED_SERVER_FIRST`, expected one of `none`, `first`, `second`"
            ),
            "{e:?}"
        );
        assert!(e[1].starts_with("ha.timeoutS: not an HA setting: use one of `vhid`, `timeout_s`"), "{e:?}");
        assert!(e[2].starts_with("ha.timeout_s: invalid type: string \"six\", expected u32"), "{e:?}");
        assert!(e[3].starts_with("oops: write settings as key=value"), "{e:?}");
        assert!(e.iter().all(|l| !l.contains("line") && !l.contains("column")), "{e:?}");
    }
}
