//! The sync rules, around the store: who may write, what a push does on
//! the receiving side, how a split is merged (S2, S3, S5). No network here:
//! the API and peer adapters call these methods under one lock.

use std::time::SystemTime;

use duet_carp::{HaMode, Role};
use duet_image::change::{Change, next};
use duet_image::store::{self, Store, StoreError};
use duet_image::{Problem, validate};
use duet_proto::config::v1::{Backup, Image, LocalSettings};
use duet_proto::configsync::v1::{PushRequest, PushResponse, PushResult};

/// Why a write was refused; the API maps each to a gRPC status.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Refusal {
    /// This unit is not the active one (S2).
    NotActive { role: Role, active_hint: String },
    /// The role is not known (the election is not reachable).
    RoleUnknown,
    /// The change was based on an older generation.
    StaleBase { base: u64, current: u64 },
    /// The image does not validate.
    Invalid(Vec<Problem>),
    /// Restoring a backup of the other kind of unit (S6).
    WrongKind(String),
    /// The state directory is full: nothing was committed.
    NoSpace(String),
    /// The pair's image lives in etcd (O7) and another writer committed
    /// `newer` there first.
    Overtaken { base: u64, newer: u64 },
    /// The pair's image lives in etcd (O7), which cannot be written now.
    StoreUnavailable(String),
    /// Anything else (the store failed).
    Failed(String),
}

impl From<StoreError> for Refusal {
    fn from(e: StoreError) -> Self {
        match &e {
            StoreError::Io { source, .. } if source.kind() == std::io::ErrorKind::StorageFull => Self::NoSpace(
                format!("{e}: nothing was committed; free space in the unit's state_dir and apply the change again"),
            ),
            _ => Self::Failed(e.to_string()),
        }
    }
}

impl std::fmt::Display for Refusal {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::NotActive { role, active_hint } => write!(
                f,
                "this unit is {role}: configuration changes are taken on the active unit only; write to {active_hint}"
            ),
            Self::RoleUnknown => f.write_str(
                "the election service is not reachable, so this unit cannot tell whether it is active; try again",
            ),
            Self::StaleBase { base, current } => write!(
                f,
                "stale base: the change was made on generation {base} but the current one is {current}; read it again and re-apply"
            ),
            Self::Invalid(p) => {
                write!(f, "{} problem(s): ", p.len())?;
                let lines: Vec<String> = p.iter().map(ToString::to_string).collect();
                f.write_str(&lines.join("; "))
            }
            Self::Overtaken { base, newer } => write!(
                f,
                "generation {newer} is the pair's head in etcd now, and the change was based on generation {base}: \
                 another writer committed first; read the image again and re-apply"
            ),
            Self::StoreUnavailable(why) => write!(
                f,
                "the pair's configuration lives in etcd (configsync.store = \"etcd\"), which cannot be written now: \
                 {why}; nothing was committed, the pair keeps running on its current generation; retry when etcd \
                 answers"
            ),
            Self::WrongKind(why) | Self::NoSpace(why) | Self::Failed(why) => f.write_str(why),
        }
    }
}

impl std::error::Error for Refusal {}

/// Why a pushed image was not taken (the receiving side of S3 and S5).
#[derive(Debug, thiserror::Error)]
pub enum PushRejected {
    /// The image does not match its hash.
    #[error("the pushed image does not match its hash")]
    Hash,
    /// This unit is active too: the election settles which one stays, then
    /// the configuration follows.
    #[error(
        "{unit} is active too: both units are active; the election settles which one stays, then the configuration follows"
    )]
    BothActive { unit: String },
    /// The diverged generations of this unit could not be kept as a backup.
    #[error("cannot set the diverged generations aside: {0}")]
    SetAside(#[source] StoreError),
    /// The store could not commit the image.
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// A committed or adopted generation, for the watchers.
#[derive(Debug, Clone)]
pub struct Committed {
    pub image: Image,
    pub origin: &'static str,
    /// The W3C `traceparent` of the commit's trace (O3); "" until the
    /// commit is recorded (`Shared::committed`).
    pub trace: String,
}

/// The engine of one unit.
#[derive(Debug)]
pub struct Engine {
    pub store: Store,
    pub unit: String,
    /// This unit is in an HA mode (first/second), not non-HA.
    pub ha_unit: bool,
    pub mode: HaMode,
    /// The role as the election last said; `None` when not known.
    pub role: Option<Role>,
    /// Where to send writers when this unit is not active.
    pub active_hint: String,
    /// Named backups made by split merges, for status.
    pub split_backups: Vec<String>,
}

impl Engine {
    /// Whether this unit takes writes now.
    pub fn writable(&self) -> Result<(), Refusal> {
        match self.role {
            None => Err(Refusal::RoleUnknown),
            Some(r) if r.takes_writes() || !self.ha_unit => Ok(()),
            Some(role) => Err(Refusal::NotActive { role, active_hint: self.active_hint.clone() }),
        }
    }

    /// Validates a candidate image.
    pub fn check(&self, image: &Image) -> Result<(), Refusal> {
        validate(image, self.ha_unit).map_err(Refusal::Invalid)
    }

    /// S1/S2: commits `change` on generation `base`.
    /// `None`: the change leaves the image as it is, and nothing is
    /// committed (re-applying a virtual service as it stands makes no new
    /// generation).
    pub fn apply(&mut self, base: u64, change: Change, comment: &str) -> Result<Option<Committed>, Refusal> {
        match self.draft_apply(base, change)? {
            None => Ok(None),
            Some(n) => self.commit(&n, "committed", comment).map(Some),
        }
    }

    /// Whether this unit takes a write based on generation `base` now.
    fn writable_on(&self, base: u64) -> Result<(), Refusal> {
        self.writable()?;
        let current = self.store.current().generation;
        if base != current {
            return Err(Refusal::StaleBase { base, current });
        }
        Ok(())
    }

    /// What [`apply`](Self::apply) would commit, committing nothing (the
    /// etcd store writes it there first).
    pub fn draft_apply(&self, base: u64, change: Change) -> Result<Option<Image>, Refusal> {
        self.writable_on(base)?;
        next(self.store.current(), change, self.ha_unit).map_err(Refusal::Invalid)
    }

    fn commit(&mut self, content: &Image, origin: &'static str, comment: &str) -> Result<Committed, Refusal> {
        let img = self.store.commit(content, store::provenance(&self.unit, origin, comment))?.clone();
        Ok(Committed { image: img, origin, trace: String::new() })
    }

    /// S6: the whole image as a backup.
    pub fn backup(&self) -> Backup {
        Backup {
            image: Some(self.store.current().clone()),
            mode: duet_proto::convert::ha_mode_i32(self.mode),
            unit: self.unit.clone(),
            created_at: Some(prost_types::Timestamp::from(SystemTime::now())),
            version: env!("CARGO_PKG_VERSION").to_string(),
        }
    }

    /// S6: restores a backup on generation `base`; a backup of a non-HA unit
    /// onto an HA unit (or the reverse) is refused.
    pub fn restore(&mut self, base: u64, b: &Backup) -> Result<Committed, Refusal> {
        let image = self.draft_restore(base, b)?;
        self.commit(&image, "restored", &format!("restored from a backup of {}", b.unit))
    }

    /// What [`restore`](Self::restore) would commit.
    pub fn draft_restore(&self, base: u64, b: &Backup) -> Result<Image, Refusal> {
        self.writable()?;
        let from_ha = b.mode != duet_proto::common::v1::HaMode::NonHa as i32;
        if from_ha != self.ha_unit {
            let (from, to) = if from_ha { ("an HA unit", "a non-HA unit") } else { ("a non-HA unit", "an HA unit") };
            return Err(Refusal::WrongKind(format!(
                "this backup was taken on {from} ({}) and cannot be restored onto {to}: put the unit in the same kind of mode first",
                b.unit
            )));
        }
        self.writable_on(base)?;
        let image = b.image.clone().unwrap_or_default();
        self.check(&image)?;
        Ok(image)
    }

    /// Commits a kept generation's content again.
    pub fn rollback(&mut self, base: u64, to: u64) -> Result<Committed, Refusal> {
        let old = self.draft_rollback(base, to)?;
        self.commit(&old, "rolled-back", &format!("rolled back to generation {to}"))
    }

    /// What [`rollback`](Self::rollback) would commit.
    pub fn draft_rollback(&self, base: u64, to: u64) -> Result<Image, Refusal> {
        self.writable_on(base)?;
        Ok(self.store.generation(to)?)
    }

    /// O7: takes the pair's head in etcd, `img`, as this unit's current
    /// generation, under etcd's number and the writer's provenance (origin
    /// `fleet`). etcd's head is the pair's truth: generations of this unit
    /// at or above its number that etcd does not have (a store that was
    /// local before) are set aside as a named backup first, as a split's
    /// loser's are (S5). A head older than this unit's generation that is
    /// not the session's first read is an event overtaken by a newer one
    /// and is skipped. `None`: nothing to do.
    pub fn follow_fleet(&mut self, img: &Image, initial: bool) -> Result<Option<Committed>, Refusal> {
        if !duet_image::hash_ok(img) {
            return Err(Refusal::Failed(format!(
                "generation {} in etcd does not match its hash: not taken",
                img.generation
            )));
        }
        let cur = self.store.current();
        if cur.generation == img.generation && cur.hash == img.hash {
            return Ok(None);
        }
        if img.generation <= cur.generation {
            if !initial {
                return Ok(None);
            }
            let name = format!("fleet-{}-{}", self.unit, humantime(SystemTime::now()));
            let reason = format!(
                "generations {}..={} of {} were not the pair's in etcd, whose head is generation {}; etcd's image wins",
                img.generation, cur.generation, self.unit, img.generation
            );
            let moved = self.store.set_aside(img.generation.saturating_sub(1), &name, &reason)?;
            if !moved.is_empty() {
                tracing::error!(backup = %name, generations = moved.len(), "{reason}; kept as backup {name}");
                self.split_backups.push(name);
            }
        }
        let mut prov = img.provenance.clone().unwrap_or_default();
        prov.origin = "fleet".into();
        let image = self.store.commit_at(img, img.generation, prov)?.clone();
        Ok(Some(Committed { image, origin: "fleet", trace: String::new() }))
    }

    /// What this unit (the active) does on finding that its partner holds a
    /// higher generation.
    pub fn behind(&self) -> Behind {
        if self.store.current().generation <= self.store.synced() { Behind::FastForward } else { Behind::Rebase }
    }

    /// Takes the partner's newer image as this unit's current one (a fast
    /// forward, [`Behind::FastForward`]), `reason` in its provenance.
    pub fn adopt(&mut self, img: &Image, reason: &str) -> Result<Committed, Refusal> {
        if !duet_image::hash_ok(img) {
            return Err(Refusal::Failed(format!(
                "the partner's generation {} does not match its hash",
                img.generation
            )));
        }
        let from = img.provenance.as_ref().map_or_else(String::new, |p| p.unit.clone());
        let image = self.store.commit_at(img, img.generation, store::provenance(&from, "synced", reason))?.clone();
        let _ = self.store.set_synced(image.generation);
        Ok(Committed { image, origin: "synced", trace: String::new() })
    }

    /// The active side re-commits its content above what the partner holds
    /// (after a STALE answer), so both converge on one number.
    pub fn rebase_above(&mut self, held: u64) -> Result<Committed, Refusal> {
        let content = self.store.current().clone();
        let img = self
            .store
            .commit_at(
                &content,
                held + 1,
                store::provenance(&self.unit, "committed", &format!("re-based above the partner's generation {held}")),
            )?
            .clone();
        Ok(Committed { image: img, origin: "committed", trace: String::new() })
    }

    /// The receiving side of a push (S3, S5). Returns the answer and, when
    /// the image was adopted, the new generation.
    pub fn receive(&mut self, req: &PushRequest) -> Result<(PushResponse, Option<Committed>), PushRejected> {
        let pushed = req.image.clone().unwrap_or_default();
        if !duet_image::hash_ok(&pushed) {
            return Err(PushRejected::Hash);
        }
        if self.role.is_some_and(Role::is_authoritative) && self.ha_unit {
            return Err(PushRejected::BothActive { unit: self.unit.clone() });
        }
        let cur = self.store.current().clone();
        let answer = |result: PushResult, img: &Image, backup: String| PushResponse {
            result: result as i32,
            held_generation: img.generation,
            held_hash: img.hash.clone(),
            backup_name: backup,
        };
        if cur.generation == pushed.generation && cur.hash == pushed.hash {
            let _ = self.store.set_synced(cur.generation);
            return Ok((answer(PushResult::Already, &cur, String::new()), None));
        }
        if pushed.generation <= cur.generation {
            return Ok((answer(PushResult::Stale, &cur, String::new()), None));
        }
        // Generations of ours the partner never had: written here while both
        // were active (a split), or changed by hand. They lose, but are kept.
        let synced = self.store.synced();
        let mut backup = String::new();
        if cur.generation > synced {
            let stamp = humantime(SystemTime::now());
            let name = format!("split-{}-{stamp}", self.unit);
            let reason = format!(
                "generations {}..={} of {} were not on the partner {} when it pushed generation {}; the active unit's image wins (S5)",
                synced + 1,
                cur.generation,
                self.unit,
                req.from_unit,
                pushed.generation
            );
            match self.store.set_aside(synced, &name, &reason) {
                Ok(moved) if !moved.is_empty() => {
                    tracing::error!(backup = %name, generations = moved.len(), "configuration split merged: {reason}; kept as backup {name}");
                    self.split_backups.push(name.clone());
                    backup = name;
                }
                Ok(_) => {}
                Err(e) => return Err(PushRejected::SetAside(e)),
            }
        }
        let prov = pushed.provenance.clone().map_or_else(
            || store::provenance(&req.from_unit, "synced", ""),
            |mut p| {
                p.origin = "synced".into();
                p
            },
        );
        let img = self.store.commit_at(&pushed, pushed.generation, prov)?.clone();
        let _ = self.store.set_synced(img.generation);
        Ok((
            answer(PushResult::Adopted, &img, backup),
            Some(Committed { image: img, origin: "synced", trace: String::new() }),
        ))
    }

    /// Local settings (S4), on either unit.
    pub fn set_local(&self, l: &LocalSettings) -> Result<(), Refusal> {
        self.store.set_local(l).map_err(Refusal::from)
    }
}

/// Whether `img` was committed on the unit named `partner` through its
/// API (a change, a restore, a rollback: what an active takes), not
/// written into its store by someone else.
pub fn committed_by(img: &Image, partner: &str) -> bool {
    img.provenance.as_ref().is_some_and(|p| {
        !partner.is_empty()
            && p.unit == partner
            && matches!(p.origin.as_str(), "committed" | "restored" | "rolled-back")
    })
}

/// What an active unit does when its push finds the partner holding a
/// higher generation.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Behind {
    /// Every generation of this unit reached the partner: the partner's
    /// higher ones are commits this unit never received (acknowledged on
    /// the partner while it was active, just before the role moved). This
    /// unit takes them if the partner committed them itself
    /// ([`committed_by`]): re-basing over them would lose an acknowledged
    /// commit into a split backup.
    FastForward,
    /// This unit holds generations the partner never had (written while
    /// both were active, or by hand): its image wins, re-based above the
    /// partner's, and the partner keeps its own as a backup (S5).
    Rebase,
}

/// `20261126T082315Z` (UTC), for backup names.
pub fn humantime(t: SystemTime) -> String {
    let secs = t.duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_secs());
    let days = secs / 86_400;
    let rem = secs % 86_400;
    // Civil date from days since 1970-01-01 (Howard Hinnant's algorithm).
    let z = days as i64 + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let y = yoe + era * 400;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = if m <= 2 { y + 1 } else { y };
    format!("{y:04}{m:02}{d:02}T{:02}{:02}{:02}Z", rem / 3600, rem % 3600 / 60, rem % 60)
}

#[cfg(test)]
mod tests {
    use duet_image::store::Store;
    use duet_proto::config::v1::{HaSettings, Interface};

    use super::*;

    fn engine(dir: &std::path::Path, unit: &str, role: Role) -> Engine {
        Engine {
            store: Store::open(dir, 20).unwrap(),
            unit: unit.into(),
            ha_unit: true,
            mode: HaMode::First,
            role: Some(role),
            active_hint: "lb1 at 198.18.0.1".into(),
            split_backups: vec![],
        }
    }

    fn image(t: u32) -> Image {
        Image {
            ha: Some(HaSettings { timeout_s: t, ..Default::default() }),
            interfaces: vec![Interface {
                name: "eth0".into(),
                unit1: "198.18.0.1/24".into(),
                unit2: "198.18.0.2/24".into(),
                shared: "198.18.0.10/24".into(),
                ha_check: true,
            }],
            ..Default::default()
        }
    }

    fn push(from: &Engine) -> PushRequest {
        PushRequest {
            image: Some(from.store.current().clone()),
            from_unit: from.unit.clone(),
            from_role: duet_proto::convert::role_i32(Role::Active),
            full: false,
        }
    }

    #[test]
    fn the_standby_refuses_writes_naming_the_active() {
        let d = tempfile::tempdir().unwrap();
        let mut s = engine(d.path(), "lb2", Role::Standby);
        let e = s.apply(0, Change::Replace(image(3)), "").unwrap_err().to_string();
        assert!(e.contains("standby") && e.contains("lb1 at 198.18.0.1"), "{e}");
    }

    #[test]
    fn a_change_that_changes_nothing_commits_nothing() {
        let d = tempfile::tempdir().unwrap();
        let mut a = engine(d.path(), "lb1", Role::Active);
        assert!(a.apply(0, Change::Replace(image(3)), "").unwrap().is_some());
        assert!(a.apply(1, Change::Replace(image(3)), "again").unwrap().is_none());
        assert_eq!(a.store.current().generation, 1);
        assert!(a.apply(1, Change::Replace(image(6)), "").unwrap().is_some(), "a real change still commits");
        assert_eq!(a.store.current().generation, 2);
    }

    #[test]
    fn stale_base_and_invalid_images_are_refused() {
        let d = tempfile::tempdir().unwrap();
        let mut a = engine(d.path(), "lb1", Role::Active);
        a.apply(0, Change::Replace(image(3)), "").unwrap();
        assert!(matches!(a.apply(0, Change::Replace(image(6)), ""), Err(Refusal::StaleBase { base: 0, current: 1 })));
        let e = a.apply(1, Change::Replace(image(4)), "").unwrap_err().to_string();
        assert!(e.contains("ha.timeout_s: 4 is not allowed"), "{e}");
        assert_eq!(a.store.current().generation, 1, "nothing half-applied");
    }

    #[test]
    fn push_adopts_then_a_split_is_merged_with_the_losers_kept() {
        let (da, db) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
        let mut a = engine(da.path(), "lb1", Role::Active);
        let mut b = engine(db.path(), "lb2", Role::Standby);
        a.apply(0, Change::Replace(image(3)), "").unwrap();
        let (r, c) = b.receive(&push(&a)).unwrap();
        assert_eq!(r.result, PushResult::Adopted as i32);
        assert_eq!(c.unwrap().image.hash, a.store.current().hash);
        // Split: both active, both write.
        b.role = Some(Role::Active);
        a.apply(1, Change::Replace(image(6)), "a during split").unwrap();
        b.apply(1, Change::Replace(image(9)), "b during split").unwrap();
        b.apply(2, Change::Replace(image(12)), "b again").unwrap();
        assert!(b.receive(&push(&a)).is_err(), "while both are active nothing is adopted");
        // The election settles on a; b becomes standby.
        b.role = Some(Role::Standby);
        let (r, _) = b.receive(&push(&a)).unwrap();
        assert_eq!(r.result, PushResult::Stale as i32);
        assert_eq!(r.held_generation, 3);
        a.rebase_above(r.held_generation).unwrap();
        let (r, c) = b.receive(&push(&a)).unwrap();
        assert_eq!(r.result, PushResult::Adopted as i32);
        assert!(r.backup_name.starts_with("split-lb2-"), "{r:?}");
        assert_eq!(c.unwrap().image.generation, 4);
        assert_eq!(b.store.current().hash, a.store.current().hash);
        let backups = b.store.backups();
        assert_eq!(backups[0].generations.iter().map(|g| g.generation).collect::<Vec<_>>(), vec![2, 3]);
    }

    #[test]
    fn a_commit_acknowledged_on_the_old_active_is_taken_by_the_new_one_not_lost() {
        let (da, db) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
        let mut a = engine(da.path(), "lb1", Role::Active);
        let mut b = engine(db.path(), "lb2", Role::Standby);
        a.apply(0, Change::Replace(image(3)), "").unwrap();
        b.receive(&push(&a)).unwrap();
        a.store.set_synced(1).unwrap();
        // a commits generation 2 and acknowledges it; the role moves to b
        // before the push reaches b.
        a.apply(1, Change::Replace(image(6)), "acknowledged").unwrap();
        a.role = Some(Role::Standby);
        b.role = Some(Role::Active);
        let (r, _) = a.receive(&push(&b)).unwrap();
        assert_eq!((r.result, r.held_generation), (PushResult::Stale as i32, 2));
        // b had everything it ever held in sync: it takes a's newer image,
        // which a committed itself (one written into a's store by hand is
        // not taken).
        assert_eq!(b.behind(), Behind::FastForward);
        let taken = a.store.current().clone();
        assert!(committed_by(&taken, "lb1"));
        assert!(!committed_by(&taken, "lb3") && !committed_by(&taken, ""));
        let mut by_hand = taken.clone();
        by_hand.provenance.as_mut().unwrap().unit = "someone".into();
        assert!(!committed_by(&by_hand, "lb1"));
        let c = b.adopt(&taken, "taken from the partner").unwrap();
        assert_eq!((c.image.generation, &c.image.hash), (2, &taken.hash));
        let (r, _) = a.receive(&push(&b)).unwrap();
        assert_eq!(r.result, PushResult::Already as i32);
        assert!(a.store.backups().is_empty(), "nothing set aside");
        // A real split (b wrote too, after the last sync) re-bases instead.
        b.apply(2, Change::Replace(image(9)), "b alone").unwrap();
        assert_eq!(b.behind(), Behind::Rebase);
        // A forged or damaged image is refused.
        let mut bad = taken.clone();
        bad.hash = "00".into();
        assert!(b.adopt(&bad, "").is_err());
    }

    /// An image as etcd holds it: generation `g`, written by `by`.
    fn in_etcd(content: &Image, g: u64, by: &str) -> Image {
        let mut i = content.clone();
        i.generation = g;
        i.provenance = Some(store::provenance(by, "committed", "through etcd"));
        i.hash = duet_image::content_hash(&i);
        i
    }

    #[test]
    fn the_fleets_head_is_taken_under_its_number_and_an_old_event_is_skipped() {
        let d = tempfile::tempdir().unwrap();
        let mut s = engine(d.path(), "lb2", Role::Standby);
        let g3 = in_etcd(&image(3), 3, "duetctl@ops");
        let c = s.follow_fleet(&g3, true).unwrap().expect("taken");
        assert_eq!((c.image.generation, c.origin), (3, "fleet"));
        let p = c.image.provenance.unwrap();
        assert_eq!((p.unit.as_str(), p.origin.as_str()), ("duetctl@ops", "fleet"), "the writer is kept");
        assert!(s.follow_fleet(&g3, false).unwrap().is_none(), "the same head again: nothing");
        let g4 = in_etcd(&image(6), 4, "lb1");
        s.follow_fleet(&g4, false).unwrap().expect("newer");
        // An event overtaken by a newer one (the watch delivers in order,
        // the unit took a newer head already): skipped, nothing set aside.
        assert!(s.follow_fleet(&g3, false).unwrap().is_none());
        assert_eq!(s.store.current().generation, 4);
        assert!(s.store.backups().is_empty());
        // Damaged in etcd: refused.
        let mut bad = in_etcd(&image(9), 5, "x");
        bad.hash = "00".into();
        assert!(s.follow_fleet(&bad, false).is_err());
        assert_eq!(s.store.current().generation, 4, "nothing taken");
    }

    #[test]
    fn a_local_history_etcd_lacks_is_kept_aside_and_etcds_head_wins() {
        let d = tempfile::tempdir().unwrap();
        let mut a = engine(d.path(), "lb1", Role::Active);
        for t in [3, 6, 9] {
            let g = a.store.current().generation;
            a.apply(g, Change::Replace(image(t)), "local").unwrap();
        }
        // The pair joined a fleet whose etcd already had it at generation 2.
        let head = in_etcd(&image(12), 2, "ops");
        let c = a.follow_fleet(&head, true).unwrap().expect("taken");
        assert_eq!((c.image.generation, c.image.hash.as_str()), (2, head.hash.as_str()));
        let b = a.store.backups();
        assert_eq!(b.len(), 1);
        assert!(b[0].name.starts_with("fleet-lb1-"), "{b:?}");
        assert_eq!(b[0].generations.iter().map(|g| g.generation).collect::<Vec<_>>(), vec![2, 3], "kept, not lost");
        assert_eq!(a.store.history().iter().map(|g| g.generation).collect::<Vec<_>>(), vec![1, 2]);
    }

    #[test]
    fn a_draft_commits_nothing_and_says_what_a_commit_would() {
        let d = tempfile::tempdir().unwrap();
        let mut a = engine(d.path(), "lb1", Role::Active);
        a.apply(0, Change::Replace(image(3)), "").unwrap();
        let n = a.draft_apply(1, Change::Replace(image(6))).unwrap().expect("a change");
        assert_eq!(n.ha.unwrap().timeout_s, 6);
        assert!(a.draft_apply(1, Change::Replace(image(3))).unwrap().is_none(), "unchanged");
        assert!(matches!(a.draft_apply(0, Change::Replace(image(6))), Err(Refusal::StaleBase { .. })));
        assert!(matches!(a.draft_rollback(1, 1), Ok(i) if i.ha.unwrap().timeout_s == 3));
        assert_eq!(a.store.current().generation, 1, "nothing committed");
        let mut s = engine(tempfile::tempdir().unwrap().path(), "lb2", Role::Standby);
        assert!(matches!(s.draft_apply(0, Change::Replace(image(3))), Err(Refusal::NotActive { .. })));
        s.role = None;
        assert!(matches!(s.draft_apply(0, Change::Replace(image(3))), Err(Refusal::RoleUnknown)));
    }

    #[test]
    fn etcds_refusals_say_what_happened_and_what_to_do() {
        let o = Refusal::Overtaken { base: 4, newer: 5 }.to_string();
        assert!(o.contains("generation 5 is the pair's head in etcd") && o.contains("read the image again"), "{o}");
        let u = Refusal::StoreUnavailable("no leader".into()).to_string();
        assert!(u.contains("nothing was committed") && u.contains("no leader") && u.contains("retry"), "{u}");
    }

    #[test]
    fn a_full_state_directory_is_said_with_its_fix_and_nothing_else_is() {
        let full = StoreError::Io { path: "/x/gen-3.pb".into(), source: std::io::ErrorKind::StorageFull.into() };
        let r = Refusal::from(full);
        assert!(matches!(r, Refusal::NoSpace(_)), "{r:?}");
        assert!(r.to_string().contains("nothing was committed; free space in the unit's state_dir"), "{r}");
        let other = StoreError::Io { path: "/x".into(), source: std::io::ErrorKind::PermissionDenied.into() };
        assert!(matches!(Refusal::from(other), Refusal::Failed(_)));
    }

    #[test]
    fn restore_refuses_the_other_kind_of_unit() {
        let d = tempfile::tempdir().unwrap();
        let mut a = engine(d.path(), "lb1", Role::Active);
        let mut b = a.backup();
        b.mode = duet_proto::common::v1::HaMode::NonHa as i32;
        let e = a.restore(0, &b).unwrap_err().to_string();
        assert!(e.contains("non-HA unit") && e.contains("cannot be restored onto an HA unit"), "{e}");
    }

    #[test]
    fn humantime_formats_utc() {
        let t = std::time::UNIX_EPOCH + std::time::Duration::from_secs(1_795_680_000);
        assert_eq!(humantime(t), "20261126T080000Z");
    }
}
