//! Readiness (R4): whether this unit may take the role from a healthy
//! partner. Each component of the unit (the replicator, health checks)
//! reports whether its state is ready; the unit is ready when every
//! component heard from lately is. A component silent for
//! [`READINESS_STALE`] no longer holds the unit back: a crashed reporter
//! must not keep a unit from ever taking over. (A silent partner is
//! replaced whatever this says: readiness only gates preemption and
//! handovers to this unit.)

use std::collections::BTreeMap;
use std::time::Duration;

use crate::notice::Notice;
use crate::time::Time;

/// A component silent this long no longer holds the unit back.
pub const READINESS_STALE: Duration = Duration::from_secs(10);

/// A component's last report.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Report {
    ready: bool,
    reason: String,
    at: Time,
}

/// The components' reports.
#[derive(Debug, Clone, Default)]
pub struct Readiness {
    components: BTreeMap<String, Report>,
}

impl Readiness {
    /// `component` says it is `ready` (or why not) at `now`. Returns the
    /// operator's line when its readiness changed.
    pub fn set(&mut self, now: Time, component: String, ready: bool, reason: String) -> Option<Notice> {
        let was = self.components.get(&component).map(|r| r.ready);
        let notice = (was != Some(ready)).then(|| Notice::Readiness {
            component: component.clone(),
            ready,
            reason: reason.clone(),
        });
        self.components.insert(component, Report { ready, reason, at: now });
        notice
    }

    /// Forgets the components silent for [`READINESS_STALE`] at `now`, with
    /// a line for each.
    pub fn expire(&mut self, now: Time) -> Vec<Notice> {
        let mut gone = Vec::new();
        self.components.retain(|c, r| {
            let fresh = now.since(r.at) < READINESS_STALE;
            if !fresh {
                gone.push(Notice::ReadinessStale { component: c.clone() });
            }
            fresh
        });
        gone
    }

    /// Every component heard from is ready (none heard from: ready).
    pub fn ready(&self) -> bool {
        self.components.values().all(|r| r.ready)
    }

    /// When the next component goes stale.
    pub fn next_expiry(&self) -> Option<Time> {
        self.components.values().map(|r| r.at + READINESS_STALE).min()
    }

    /// The components not ready, with their reasons.
    pub fn not_ready(&self) -> Vec<(String, String)> {
        self.components.iter().filter(|(_, r)| !r.ready).map(|(c, r)| (c.clone(), r.reason.clone())).collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_unit_is_ready_when_every_fresh_component_is() {
        let mut r = Readiness::default();
        assert!(r.ready() && r.next_expiry().is_none());
        let t0 = Time::from_millis(1000);
        assert!(r.set(t0, "replicator".into(), false, "bulk resync".into()).is_some());
        assert!(!r.ready());
        // The same answer again says nothing new.
        assert!(r.set(t0 + Duration::from_secs(2), "replicator".into(), false, "bulk resync".into()).is_none());
        assert!(r.set(t0 + Duration::from_secs(2), "health".into(), true, "ok".into()).is_some());
        assert_eq!(r.not_ready(), vec![("replicator".to_owned(), "bulk resync".to_owned())]);
        assert_eq!(r.next_expiry(), Some(t0 + Duration::from_secs(12)));
        // Ten seconds after its last report the replicator stops counting.
        assert!(r.expire(t0 + Duration::from_millis(11_999)).is_empty());
        let gone = r.expire(t0 + Duration::from_secs(12));
        assert_eq!(gone.len(), 2);
        assert!(r.ready());
    }
}
