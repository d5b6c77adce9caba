//! Generations on disk, crash-safe.
//!
//! ```text
//! <dir>/gen-00000000000000000042.pb   one file per generation kept (Image, protobuf)
//! <dir>/synced                        the highest generation both units held
//! <dir>/local.pb                      this unit's own settings (never synced)
//! <dir>/backups/<name>/gen-*.pb       generations set aside (a split's loser)
//! <dir>/backups/<name>/reason
//! ```
//!
//! Each file is written to a temporary name, fsynced, renamed over the
//! target and the directory fsynced, so a crash (kill -9, power) at any
//! moment leaves a whole file or none. The current generation is the
//! highest-numbered file whose content matches its hash: a torn write
//! cannot exist, and a damaged file is skipped (and logged), so the store
//! falls back to the previous generation instead of failing.

use std::fs;
use std::io;
use std::path::{Path, PathBuf};
use std::time::SystemTime;

use duet_files::{read_optional, write_atomic};
use duet_proto::config::v1::{Image, LocalSettings, Provenance};
use prost::Message;

use crate::content_hash;

/// Why the store failed.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// Reading or writing a file failed.
    #[error("{path}: {source}")]
    Io {
        path: String,
        #[source]
        source: io::Error,
    },
    /// A generation number that does not follow the current one.
    #[error("generation {got} is not above the current generation {current}")]
    NotNewer { got: u64, current: u64 },
    /// No such generation is kept.
    #[error("generation {0} is not kept (see the history)")]
    NoSuchGeneration(u64),
}

fn io_err(path: &Path) -> impl FnOnce(io::Error) -> StoreError + '_ {
    move |source| StoreError::Io { path: path.display().to_string(), source }
}

/// Summary of one kept generation.
#[derive(Debug, Clone, PartialEq)]
pub struct GenInfo {
    pub generation: u64,
    pub hash: String,
    pub provenance: Option<Provenance>,
}

/// A set of generations put aside.
#[derive(Debug, Clone, PartialEq)]
pub struct BackupInfo {
    pub name: String,
    pub reason: String,
    pub generations: Vec<GenInfo>,
}

/// The store of one unit.
#[derive(Debug)]
pub struct Store {
    dir: PathBuf,
    keep: usize,
    current: Image,
}

fn gen_file(dir: &Path, g: u64) -> PathBuf {
    dir.join(format!("gen-{g:020}.pb"))
}

fn gen_numbers(dir: &Path) -> io::Result<Vec<u64>> {
    let mut v = Vec::new();
    for e in fs::read_dir(dir)? {
        let name = e?.file_name();
        let name = name.to_string_lossy();
        if let Some(n) = name.strip_prefix("gen-").and_then(|r| r.strip_suffix(".pb"))
            && let Ok(g) = n.parse()
        {
            v.push(g);
        }
    }
    v.sort_unstable();
    Ok(v)
}

fn read_gen(path: &Path, g: u64) -> Option<Image> {
    let bytes = fs::read(path).ok()?;
    let img = Image::decode(bytes.as_slice()).ok()?;
    (img.generation == g && img.hash == content_hash(&img)).then_some(img)
}

/// The current generation stored in `dir`, read without creating or
/// writing anything: for a reader beside the store's owner (the election
/// at start). `None` when `dir` holds no readable generation (or does not
/// exist); a damaged newest file falls back to the one before, as in
/// [`Store::open`].
pub fn read_current(dir: &Path) -> Option<Image> {
    let gens = gen_numbers(dir).ok()?;
    gens.into_iter().rev().find_map(|g| read_gen(&gen_file(dir, g), g))
}

/// The empty image a unit starts with (generation 0).
pub fn empty() -> Image {
    let mut i = Image::default();
    i.hash = content_hash(&i);
    i
}

impl Store {
    /// Opens (creating) the store in `dir`, keeping the last `keep` generations.
    pub fn open(dir: &Path, keep: usize) -> Result<Self, StoreError> {
        fs::create_dir_all(dir).map_err(io_err(dir))?;
        // A kill during a write leaves its temporary file; the store has one
        // writer, this process.
        match duet_files::remove_leftovers(dir) {
            Ok(r) if !r.is_empty() => tracing::info!(files = ?r, "removed temporary files an interrupted write left"),
            Ok(_) => {}
            Err(e) => tracing::warn!("cannot clear temporary files in {}: {e}", dir.display()),
        }
        let mut current = empty();
        for g in gen_numbers(dir).map_err(io_err(dir))?.into_iter().rev() {
            let p = gen_file(dir, g);
            match read_gen(&p, g) {
                Some(img) => {
                    current = img;
                    break;
                }
                None => {
                    tracing::error!(file = %p.display(), "configuration generation unreadable or damaged; using the one before")
                }
            }
        }
        Ok(Self { dir: dir.to_path_buf(), keep: keep.max(2), current })
    }

    /// The current generation.
    pub fn current(&self) -> &Image {
        &self.current
    }

    /// Commits `content` (ha, interfaces, virtual services) as the next
    /// generation with `provenance`.
    pub fn commit(&mut self, content: &Image, provenance: Provenance) -> Result<&Image, StoreError> {
        let g = self.current.generation + 1;
        self.commit_at(content, g, provenance)
    }

    /// Commits `content` as generation `g` (above the current one), e.g.
    /// when adopting what the partner pushed under its number.
    pub fn commit_at(&mut self, content: &Image, g: u64, provenance: Provenance) -> Result<&Image, StoreError> {
        if g <= self.current.generation {
            return Err(StoreError::NotNewer { got: g, current: self.current.generation });
        }
        let img = crate::stamped(content, g, provenance);
        let p = gen_file(&self.dir, g);
        write_atomic(&p, &img.encode_to_vec()).map_err(io_err(&p))?;
        self.current = img;
        self.prune();
        Ok(&self.current)
    }

    fn prune(&self) {
        let Ok(gens) = gen_numbers(&self.dir) else { return };
        if gens.len() > self.keep {
            for g in &gens[..gens.len() - self.keep] {
                let _ = fs::remove_file(gen_file(&self.dir, *g));
            }
        }
    }

    /// The generations kept, oldest first.
    pub fn history(&self) -> Vec<GenInfo> {
        gen_numbers(&self.dir)
            .unwrap_or_default()
            .into_iter()
            .filter_map(|g| read_gen(&gen_file(&self.dir, g), g))
            .map(|i| GenInfo { generation: i.generation, hash: i.hash, provenance: i.provenance })
            .collect()
    }

    /// A kept generation.
    pub fn generation(&self, g: u64) -> Result<Image, StoreError> {
        read_gen(&gen_file(&self.dir, g), g).ok_or(StoreError::NoSuchGeneration(g))
    }

    /// Moves every generation above `above` into `backups/<name>` (with the
    /// reason), and makes the highest remaining one current. Returns the
    /// generations moved (none: no backup is made).
    pub fn set_aside(&mut self, above: u64, name: &str, reason: &str) -> Result<Vec<GenInfo>, StoreError> {
        let gens: Vec<u64> =
            gen_numbers(&self.dir).map_err(io_err(&self.dir))?.into_iter().filter(|g| *g > above).collect();
        if gens.is_empty() {
            return Ok(Vec::new());
        }
        let bdir = self.dir.join("backups").join(name);
        fs::create_dir_all(&bdir).map_err(io_err(&bdir))?;
        write_atomic(&bdir.join("reason"), reason.as_bytes()).map_err(io_err(&bdir))?;
        let mut moved = Vec::new();
        for g in gens {
            let from = gen_file(&self.dir, g);
            if let Some(i) = read_gen(&from, g) {
                moved.push(GenInfo {
                    generation: i.generation,
                    hash: i.hash.clone(),
                    provenance: i.provenance.clone(),
                });
            }
            // Copy durably first, then remove: a crash leaves the generation
            // in both places, never in neither.
            let bytes = fs::read(&from).map_err(io_err(&from))?;
            write_atomic(&gen_file(&bdir, g), &bytes).map_err(io_err(&bdir))?;
            fs::remove_file(&from).map_err(io_err(&from))?;
        }
        let reopened = Self::open(&self.dir, self.keep)?;
        self.current = reopened.current;
        Ok(moved)
    }

    /// Named backups, oldest name first.
    pub fn backups(&self) -> Vec<BackupInfo> {
        let root = self.dir.join("backups");
        let Ok(rd) = fs::read_dir(&root) else { return Vec::new() };
        let mut out: Vec<BackupInfo> = rd
            .filter_map(Result::ok)
            .filter(|e| e.path().is_dir())
            .map(|e| {
                let d = e.path();
                let reason = fs::read_to_string(d.join("reason")).unwrap_or_default();
                let generations = gen_numbers(&d)
                    .unwrap_or_default()
                    .into_iter()
                    .filter_map(|g| read_gen(&gen_file(&d, g), g))
                    .map(|i| GenInfo { generation: i.generation, hash: i.hash, provenance: i.provenance })
                    .collect();
                BackupInfo { name: e.file_name().to_string_lossy().into_owned(), reason, generations }
            })
            .collect();
        out.sort_by(|a, b| a.name.cmp(&b.name));
        out
    }

    /// The highest generation both units are known to have held.
    pub fn synced(&self) -> u64 {
        fs::read_to_string(self.dir.join("synced")).ok().and_then(|s| s.trim().parse().ok()).unwrap_or(0)
    }

    /// Records that both units hold generation `g`.
    pub fn set_synced(&self, g: u64) -> Result<(), StoreError> {
        let p = self.dir.join("synced");
        write_atomic(&p, g.to_string().as_bytes()).map_err(io_err(&p))
    }

    /// This unit's own settings.
    pub fn local(&self) -> LocalSettings {
        read_optional(&self.dir.join("local.pb"))
            .ok()
            .flatten()
            .and_then(|b| LocalSettings::decode(b.as_slice()).ok())
            .unwrap_or_default()
    }

    /// Replaces this unit's own settings.
    pub fn set_local(&self, l: &LocalSettings) -> Result<(), StoreError> {
        let p = self.dir.join("local.pb");
        write_atomic(&p, &l.encode_to_vec()).map_err(io_err(&p))
    }
}

/// A provenance stamped now.
pub fn provenance(unit: &str, origin: &str, comment: &str) -> Provenance {
    Provenance {
        committed_at: Some(prost_types::Timestamp::from(SystemTime::now())),
        unit: unit.into(),
        comment: comment.into(),
        origin: origin.into(),
    }
}

#[cfg(test)]
mod tests {
    use duet_proto::config::v1::HaSettings;

    use super::*;

    fn content(t: u32) -> Image {
        Image { ha: Some(HaSettings { timeout_s: t, ..Default::default() }), ..Default::default() }
    }

    #[test]
    fn commit_reopen_prune_and_fall_back_over_damage() {
        let d = tempfile::tempdir().unwrap();
        let mut s = Store::open(d.path(), 3).unwrap();
        assert_eq!(s.current().generation, 0);
        for t in [3, 6, 9, 12] {
            s.commit(&content(t), provenance("lb1", "committed", "")).unwrap();
        }
        assert_eq!(s.current().generation, 4);
        assert_eq!(s.history().iter().map(|g| g.generation).collect::<Vec<_>>(), vec![2, 3, 4]);
        let s2 = Store::open(d.path(), 3).unwrap();
        assert_eq!(s2.current(), s.current());
        // Damage the newest file: the store falls back to generation 3.
        fs::write(gen_file(d.path(), 4), b"garbage").unwrap();
        let s3 = Store::open(d.path(), 3).unwrap();
        assert_eq!(s3.current().generation, 3);
        assert_eq!(read_current(d.path()).as_ref(), Some(s3.current()), "a reader sees what the owner sees");
        assert_eq!(read_current(&d.path().join("nothing here")), None);
        assert_eq!(s3.current().ha.unwrap().timeout_s, 9);
    }

    #[test]
    fn set_aside_keeps_the_losers_and_adopts_below() {
        let d = tempfile::tempdir().unwrap();
        let mut s = Store::open(d.path(), 10).unwrap();
        s.commit(&content(3), provenance("lb1", "synced", "")).unwrap();
        s.set_synced(1).unwrap();
        s.commit(&content(6), provenance("lb2", "committed", "during the split")).unwrap();
        s.commit(&content(9), provenance("lb2", "committed", "")).unwrap();
        let moved = s.set_aside(s.synced(), "split-lb2-test", "lost the split merge").unwrap();
        assert_eq!(moved.iter().map(|g| g.generation).collect::<Vec<_>>(), vec![2, 3]);
        assert_eq!(s.current().generation, 1);
        let b = s.backups();
        assert_eq!(b.len(), 1);
        assert_eq!(b[0].reason, "lost the split merge");
        assert_eq!(b[0].generations.len(), 2);
        s.commit_at(&content(12), 4, provenance("lb1", "synced", "")).unwrap();
        assert_eq!(s.current().generation, 4);
        assert!(s.commit_at(&content(15), 4, provenance("x", "synced", "")).is_err());
    }
}
