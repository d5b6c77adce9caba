//! What the election keeps on disk in the unit's state directory: the
//! start history (pacified rule, E9), the replay windows (E15) and the last
//! advert counter sent (HMAC-SHA256 mode). Every write is crash-safe.

use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use anyhow::Context;
use duet_carp::pacify::{StartHistory, Starts};
use duet_carp::replay::ReplayState;
use duet_files::{read_optional, write_atomic};
use duet_net::watch::FileWatch;
use serde::{Deserialize, Serialize};

/// The state directory of one unit.
/// How a state file is written.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Durability {
    /// Renamed into place after an fsync of the file and of the directory.
    Synced,
    /// Renamed into place with no fsync: kept across a process crash, may
    /// lose the last seconds on a power loss ([`duet_files::write_atomic_cached`]).
    Cached,
}

#[derive(Debug, Clone)]
pub struct StateDir {
    dir: PathBuf,
}

#[derive(Debug, Default, Serialize, Deserialize)]
struct Counter {
    last_sent: u64,
}

/// Seconds since the UNIX epoch.
pub fn unix_now() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs())
}

/// Milliseconds since the UNIX epoch.
pub fn unix_ms() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
}

impl StateDir {
    /// Opens (creating) the directory.
    pub fn open(dir: &Path) -> anyhow::Result<Self> {
        std::fs::create_dir_all(dir).with_context(|| {
            format!("cannot create the state directory {}: set unit.state_dir to a writable directory", dir.display())
        })?;
        Ok(Self { dir: dir.to_path_buf() })
    }

    fn path(&self, name: &str) -> PathBuf {
        self.dir.join(name)
    }

    /// Watches the directory for new versions of the start history (the
    /// unit supervisor records the other services' restarts there, E9).
    pub fn watch_starts(&self) -> std::io::Result<FileWatch> {
        FileWatch::new(&self.dir, HISTORY_FILE)
    }

    fn load<T: for<'de> Deserialize<'de> + Default>(&self, name: &str) -> anyhow::Result<T> {
        let p = self.path(name);
        match read_optional(&p).with_context(|| format!("reading {}", p.display()))? {
            None => Ok(T::default()),
            Some(b) => serde_json::from_slice(&b).or_else(|e| {
                // A damaged file must not keep the unit from starting; the
                // atomic writes make this unlikely. Keep a copy to look at.
                let bad = p.with_extension("damaged");
                let _ = std::fs::rename(&p, &bad);
                tracing::error!(file = %p.display(), error = %e, moved_to = %bad.display(), "state file unreadable; starting from empty");
                Ok(T::default())
            }),
        }
    }

    fn save<T: Serialize>(&self, name: &str, v: &T) -> anyhow::Result<()> {
        self.save_as(name, v, Durability::Synced)
    }

    fn save_as<T: Serialize>(&self, name: &str, v: &T, d: Durability) -> anyhow::Result<()> {
        let p = self.path(name);
        let b = serde_json::to_vec_pretty(v)?;
        let r = match d {
            Durability::Synced => write_atomic(&p, &b),
            Durability::Cached => duet_files::write_atomic_cached(&p, &b),
        };
        r.with_context(|| format!("writing {}", p.display()))
    }

    /// Records a start of `what` and returns the history. The election
    /// and the unit supervisor both record starts: a lock file keeps their
    /// read-modify-write cycles apart.
    pub fn record_start(&self, what: &str) -> anyhow::Result<StartHistory> {
        let _lock = self.lock()?;
        let mut h: StartHistory = self.load(HISTORY_FILE)?;
        h.record(unix_now(), what);
        self.save(HISTORY_FILE, &h)?;
        Ok(h)
    }

    /// An exclusive lock on the history, waited for at most 2 s.
    fn lock(&self) -> anyhow::Result<nix::fcntl::Flock<std::fs::File>> {
        use nix::fcntl::{Flock, FlockArg};
        let path = self.path("start-history.lock");
        let mut file = std::fs::OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(&path)
            .with_context(|| format!("opening {}", path.display()))?;
        let deadline = std::time::Instant::now() + Duration::from_secs(2);
        loop {
            match Flock::lock(file, FlockArg::LockExclusiveNonblock) {
                Ok(l) => return Ok(l),
                Err((f, _)) if std::time::Instant::now() < deadline => {
                    file = f;
                    std::thread::sleep(Duration::from_millis(10));
                }
                Err((_, e)) => anyhow::bail!("cannot lock {}: {e}", path.display()),
            }
        }
    }

    /// The history as it is.
    pub fn start_history(&self) -> anyhow::Result<StartHistory> {
        self.load(HISTORY_FILE)
    }

    /// The history as it is, with the time it was read at, for the core.
    pub fn starts(&self) -> anyhow::Result<Starts> {
        Ok(Starts { history: self.start_history()?, unix_now: unix_now() })
    }

    /// Marks the history cleared now (ClearPacified).
    pub fn clear_starts(&self) -> anyhow::Result<()> {
        let _lock = self.lock()?;
        let mut h: StartHistory = self.load(HISTORY_FILE)?;
        h.clear(unix_now());
        self.save(HISTORY_FILE, &h)
    }

    /// The replay windows of the last run.
    pub fn replay(&self) -> anyhow::Result<ReplayState> {
        self.load("replay.json")
    }

    /// Saves the replay windows.
    pub fn save_replay(&self, r: &ReplayState, d: Durability) -> anyhow::Result<()> {
        self.save_as("replay.json", r, d)
    }

    /// A bound on every counter sent so far (SHA-256 mode): the driver
    /// saves a ceiling ahead of the counter, not each counter sent.
    pub fn last_counter(&self) -> anyhow::Result<Option<u64>> {
        let c: Counter = self.load("counter.json")?;
        Ok((c.last_sent != 0).then_some(c.last_sent))
    }

    /// Saves a bound on the counters sent (no counter above it was sent).
    pub fn save_counter(&self, last_sent: u64) -> anyhow::Result<()> {
        self.save("counter.json", &Counter { last_sent })
    }

    /// Whether the last run of the election held the role when it ended
    /// (it was killed or crashed while active: a clean stop hands over
    /// first, and leaving the role clears the mark).
    pub fn was_active(&self) -> anyhow::Result<bool> {
        let m: ActiveMark = self.load(ACTIVE_FILE)?;
        Ok(m.active)
    }

    /// Marks whether this run holds the role now (no fsync: it matters
    /// after a process crash, which keeps the page cache).
    pub fn mark_active(&self, active: bool) -> anyhow::Result<()> {
        self.save_as(ACTIVE_FILE, &ActiveMark { active }, Durability::Cached)
    }
}

/// Whether the election held the role, in the state directory.
const ACTIVE_FILE: &str = "active.json";

#[derive(Debug, Default, Serialize, Deserialize)]
struct ActiveMark {
    active: bool,
}

/// The start history's file name in the state directory.
const HISTORY_FILE: &str = "start-history.json";
