//! `duetctl config ...`: the configuration image (S1-S6).

use std::path::Path;

use anyhow::Context;
use duet_proto::config::v1::{HaSettings, Image, LocalSettings, VirtualService};
use duet_proto::configsync::v1 as cs;
use duet_proto::configsync::v1::apply_config_request::Change;
use duet_proto::json::{from_json, to_json};

use crate::client::{self, Addrs, explain};

fn print<M: prost::Message>(m: &M, name: &str) -> anyhow::Result<()> {
    println!("{}", to_json(m, name).map_err(anyhow::Error::msg)?);
    Ok(())
}

fn read(path: &Path) -> anyhow::Result<String> {
    std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))
}

async fn current_generation(a: &Addrs) -> anyhow::Result<u64> {
    let r = client::configsync(a)
        .await?
        .get_config(cs::GetConfigRequest { section: "ha".into() })
        .await
        .map_err(explain)?;
    Ok(r.into_inner().image.map_or(0, |i| i.generation))
}

/// `config get [section]`.
pub async fn get(a: &Addrs, section: &str) -> anyhow::Result<()> {
    let r = client::configsync(a)
        .await?
        .get_config(cs::GetConfigRequest { section: section.into() })
        .await
        .map_err(explain)?;
    print(&r.into_inner().image.unwrap_or_default(), "duet.config.v1.Image")
}

/// Applies one change on `base` (the current generation when `None`).
async fn apply(a: &Addrs, base: Option<u64>, change: Change, comment: &str, json: bool) -> anyhow::Result<()> {
    let base = match base {
        Some(b) => b,
        None => current_generation(a).await?,
    };
    let r = client::configsync(a)
        .await?
        .apply_config(cs::ApplyConfigRequest { base_generation: base, comment: comment.into(), change: Some(change) })
        .await
        .map_err(explain)?
        .into_inner();
    if json {
        print(&r, "duet.configsync.v1.ApplyConfigResponse")
    } else {
        println!("committed generation {} ({})", r.generation, &r.hash[..12.min(r.hash.len())]);
        Ok(())
    }
}

/// `config set --file image.json`: replaces the whole image.
pub async fn set_file(a: &Addrs, file: &Path, base: Option<u64>, comment: &str, json: bool) -> anyhow::Result<()> {
    let img: Image =
        from_json(&read(file)?, "duet.config.v1.Image").map_err(|e| anyhow::anyhow!("{}: {e}", file.display()))?;
    apply(a, base, Change::Image(img), comment, json).await
}

/// `config set key=value ...`: changes HA settings (`timeout_s=6`,
/// `preferred=PREFERRED_SERVER_FIRST`...).
pub async fn set_ha(a: &Addrs, pairs: &[String], base: Option<u64>, comment: &str, json: bool) -> anyhow::Result<()> {
    let mut c = client::configsync(a).await?;
    let img = c
        .get_config(cs::GetConfigRequest { section: "ha".into() })
        .await
        .map_err(explain)?
        .into_inner()
        .image
        .unwrap_or_default();
    let base = base.unwrap_or(img.generation);
    let mut obj: serde_json::Value = serde_json::from_str(
        &to_json(&img.ha.unwrap_or_default(), "duet.config.v1.HaSettings").map_err(anyhow::Error::msg)?,
    )?;
    for p in pairs {
        let (k, v) =
            p.split_once('=').with_context(|| format!("\"{p}\": write settings as key=value, e.g. timeout_s=6"))?;
        let k = k.strip_prefix("ha.").unwrap_or(k);
        let value = serde_json::from_str(v).unwrap_or_else(|_| serde_json::Value::String(v.to_string()));
        // The JSON has the camelCase names; `timeout_s` and `timeoutS` are
        // the same field and must not both be there.
        let camel = camel_case(k);
        if let Some(o) = obj.as_object_mut() {
            o.remove(k);
        }
        obj[camel] = value;
    }
    let ha: HaSettings =
        from_json(&obj.to_string(), "duet.config.v1.HaSettings").map_err(|e| anyhow::anyhow!("ha: {e}"))?;
    apply(a, Some(base), Change::Ha(ha), comment, json).await
}

/// `timeout_s` as protobuf's JSON names it: `timeoutS`.
fn camel_case(k: &str) -> String {
    let mut out = String::with_capacity(k.len());
    let mut up = false;
    for c in k.chars() {
        if c == '_' {
            up = true;
        } else if up {
            out.extend(c.to_uppercase());
            up = false;
        } else {
            out.push(c);
        }
    }
    out
}

/// `config set-vs --file vs.json`.
pub async fn set_vs(a: &Addrs, file: &Path, base: Option<u64>, comment: &str, json: bool) -> anyhow::Result<()> {
    let vs: VirtualService = from_json(&read(file)?, "duet.config.v1.VirtualService")
        .map_err(|e| anyhow::anyhow!("{}: {e}", file.display()))?;
    apply(a, base, Change::UpsertVirtualService(vs), comment, json).await
}

/// `config delete-vs NAME`.
pub async fn delete_vs(a: &Addrs, name: &str, base: Option<u64>, comment: &str, json: bool) -> anyhow::Result<()> {
    apply(a, base, Change::DeleteVirtualService(name.into()), comment, json).await
}

/// `config check --file image.json`.
pub async fn check(a: &Addrs, file: &Path, json: bool) -> anyhow::Result<()> {
    let img: Image =
        from_json(&read(file)?, "duet.config.v1.Image").map_err(|e| anyhow::anyhow!("{}: {e}", file.display()))?;
    let r = client::configsync(a)
        .await?
        .check_config(cs::CheckConfigRequest { image: Some(img) })
        .await
        .map_err(explain)?
        .into_inner();
    if json {
        return print(&r, "duet.configsync.v1.CheckConfigResponse");
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

/// `config backup --out FILE`.
pub async fn backup(a: &Addrs, out: &Path) -> anyhow::Result<()> {
    let r = client::configsync(a).await?.backup(cs::BackupRequest {}).await.map_err(explain)?.into_inner();
    std::fs::write(out, &r.backup).with_context(|| format!("writing {}", out.display()))?;
    println!("generation {} written to {}", r.generation, out.display());
    Ok(())
}

/// `config restore --file FILE`.
pub async fn restore(a: &Addrs, file: &Path, base: Option<u64>) -> anyhow::Result<()> {
    let bytes = std::fs::read(file).with_context(|| format!("reading {}", file.display()))?;
    let base = match base {
        Some(b) => b,
        None => current_generation(a).await?,
    };
    let r = client::configsync(a)
        .await?
        .restore(cs::RestoreRequest { backup: bytes, base_generation: base })
        .await
        .map_err(explain)?
        .into_inner();
    println!("restored as generation {} ({})", r.generation, &r.hash[..12.min(r.hash.len())]);
    Ok(())
}

/// `config force-update`.
pub async fn force_update(a: &Addrs, json: bool) -> anyhow::Result<()> {
    let r = client::configsync(a).await?.force_update(cs::ForceUpdateRequest {}).await.map_err(explain)?.into_inner();
    if json {
        return print(&r, "duet.configsync.v1.ForceUpdateResponse");
    }
    println!("partner updated to generation {} in {} ms", r.generation, r.took_ms);
    Ok(())
}

/// `config history`.
pub async fn history(a: &Addrs, json: bool) -> anyhow::Result<()> {
    let r = client::configsync(a).await?.history(cs::HistoryRequest {}).await.map_err(explain)?.into_inner();
    if json {
        return print(&r, "duet.configsync.v1.HistoryResponse");
    }
    for g in &r.generations {
        let p = g.provenance.clone().unwrap_or_default();
        println!(
            "gen {:>6}  {}  {:<12} {:<10} {}",
            g.generation,
            &g.hash[..12.min(g.hash.len())],
            g.origin,
            p.unit,
            p.comment
        );
    }
    for b in &r.backups {
        println!("backup {} ({} generations): {}", b.name, b.generations.len(), b.reason);
    }
    Ok(())
}

/// `config rollback GEN`.
pub async fn rollback(a: &Addrs, to: u64, base: Option<u64>) -> anyhow::Result<()> {
    let base = match base {
        Some(b) => b,
        None => current_generation(a).await?,
    };
    let r = client::configsync(a)
        .await?
        .rollback(cs::RollbackRequest { to_generation: to, base_generation: base })
        .await
        .map_err(explain)?
        .into_inner();
    println!("generation {to} committed again as {}", r.generation);
    Ok(())
}

/// `config local [--set FILE]`: this unit's own settings (never synced).
pub async fn local(a: &Addrs, set: Option<&Path>) -> anyhow::Result<()> {
    let mut c = client::configsync(a).await?;
    if let Some(f) = set {
        let l: LocalSettings = from_json(&read(f)?, "duet.config.v1.LocalSettings")
            .map_err(|e| anyhow::anyhow!("{}: {e}", f.display()))?;
        c.set_local(cs::SetLocalRequest { local: Some(l) }).await.map_err(explain)?;
    }
    let l = c.get_local(cs::GetLocalRequest {}).await.map_err(explain)?.into_inner().local.unwrap_or_default();
    print(&l, "duet.config.v1.LocalSettings")
}

#[cfg(test)]
mod tests {
    #[test]
    fn settings_keys_become_json_names() {
        assert_eq!(super::camel_case("timeout_s"), "timeoutS");
        assert_eq!(super::camel_case("l4_updates"), "l4Updates");
        assert_eq!(super::camel_case("timeoutS"), "timeoutS");
        assert_eq!(super::camel_case("preferred"), "preferred");
    }
}
