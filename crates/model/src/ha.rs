//! The pair's HA settings (E3-E13, S3, R1-R2): what both units of a pair
//! share. Each unit's own HA settings (its mode, password, advskew...) are
//! not here; they never leave the unit (`duet-config`).

use std::time::Duration;

use duet_carp::{Preferred, WitnessPolicy};
use serde::{Deserialize, Deserializer, Serialize};

use crate::Problem;

/// Timing profile (E3, E13).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Profile {
    /// One advert per second, takeover after `timeout_s` (the reference's behaviour).
    #[default]
    Standard,
    /// Sub-second adverts (E13), duet pairs only.
    Fast,
}

impl Profile {
    /// The unit file's word: `standard` or `fast`.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Standard => "standard",
            Self::Fast => "fast",
        }
    }
}

/// The pair's HA settings: every field of `duet.config.v1.HaSettings`, with
/// the unit file's defaults.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct HaSettings {
    /// Virtual host id 1-255; `None` (0 in the image and the file): the
    /// last octet of the first interface's shared address (E4).
    #[serde(deserialize_with = "zero_is_none", skip_serializing_if = "Option::is_none")]
    pub vhid: Option<u32>,
    /// Seconds without adverts before the standby takes over: 3, 6, 9, 12 or 15 (E3).
    pub timeout_s: u32,
    pub preferred: Preferred,
    /// Seconds a starting unit that hears no partner waits before it becomes active (0-300, E6).
    pub initial_wait_s: u32,
    /// Send adverts to 255.255.255.255 instead of 224.0.0.18 (E1).
    pub use_broadcast: bool,
    /// Send adverts to the partner's unit address only (E13).
    pub unicast: bool,
    pub profile: Profile,
    /// Fast profile: advert interval in ms (10-500).
    pub fast_interval_ms: u32,
    /// Fast profile: intervals without an advert before takeover (3-10).
    pub fast_dead_factor: u32,
    /// A checked link loss restarts the unit's services (E8).
    pub hard_reboot_on_link_failure: bool,
    /// configsync's full sync period in seconds (5-3600); `None` (0 in the
    /// image and the file): the unit's `configsync.sync_interval_s` (120).
    #[serde(deserialize_with = "zero_is_none", skip_serializing_if = "Option::is_none")]
    pub sync_interval_s: Option<u32>,
    /// Inter-HA L4 connection updates (the replicator, R1).
    pub l4_updates: bool,
    /// Inter-HA L7 persistence updates (the replicator, R2).
    pub l7_updates: bool,
    /// E14: the witness's policy (used by units with a `[witness]`).
    pub witness_policy: WitnessPolicy,
    /// E14: the witness's lease TTL in ms, whole seconds 2000-60000;
    /// `None` (0 in the image and the file): the HA timeout, at least 2 s.
    #[serde(deserialize_with = "zero_is_none", skip_serializing_if = "Option::is_none")]
    pub witness_lease_ttl_ms: Option<u32>,
}

impl Default for HaSettings {
    fn default() -> Self {
        Self {
            vhid: None,
            timeout_s: 9,
            preferred: Preferred::None,
            initial_wait_s: 0,
            use_broadcast: false,
            unicast: false,
            profile: Profile::Standard,
            fast_interval_ms: 20,
            fast_dead_factor: 4,
            hard_reboot_on_link_failure: false,
            sync_interval_s: None,
            l4_updates: true,
            l7_updates: true,
            witness_policy: WitnessPolicy::Prefer,
            witness_lease_ttl_ms: None,
        }
    }
}

/// 0 means "the default", as in the image: `None`.
fn zero_is_none<'de, D: Deserializer<'de>>(d: D) -> Result<Option<u32>, D::Error> {
    Ok(Option::<u32>::deserialize(d)?.filter(|v| *v != 0))
}

/// The allowed HA timeouts (E3).
pub(crate) const TIMEOUTS_S: [u32; 5] = [3, 6, 9, 12, 15];

/// The witness's lease TTL bounds: etcd counts whole seconds and raises a
/// TTL below its minimum (2 s with its default timing) without a word.
const WITNESS_TTL_MS: std::ops::RangeInclusive<u32> = 2000..=60_000;

impl HaSettings {
    /// The HA timeout as configured (standard) or derived (fast: the
    /// advert interval times the dead factor).
    pub fn ha_timeout(&self) -> Duration {
        match self.profile {
            Profile::Standard => Duration::from_secs(u64::from(self.timeout_s)),
            Profile::Fast => Duration::from_millis(u64::from(self.fast_interval_ms) * u64::from(self.fast_dead_factor)),
        }
    }

    /// The witness's lease TTL: as set, or the HA timeout in whole seconds
    /// (rounded up), at least 2 s.
    pub fn witness_lease_ttl(&self) -> Duration {
        match self.witness_lease_ttl_ms {
            Some(ms) => Duration::from_millis(u64::from(ms)),
            None => Duration::from_secs(self.ha_timeout().as_millis().div_ceil(1000).max(2) as u64),
        }
    }

    /// Checks every rule of the settings on their own (the rules that also
    /// need the interfaces are in [`crate::validate_pair`]); `path` is
    /// where they sit (`ha`).
    pub fn validate(&self, path: &str) -> Vec<Problem> {
        let mut p = Vec::new();
        let f = |x: &str| format!("{path}.{x}");
        if let Some(v) = self.vhid
            && !(1..=255).contains(&v)
        {
            p.push(Problem::new(f("vhid"), format!("{v} is out of range: use 1-255, or 0 for the default")));
        }
        if !TIMEOUTS_S.contains(&self.timeout_s) {
            p.push(Problem::new(
                f("timeout_s"),
                format!("{} is not allowed: use 3, 6, 9, 12 or 15 (seconds)", self.timeout_s),
            ));
        }
        if self.initial_wait_s > 300 {
            p.push(Problem::new(
                f("initial_wait_s"),
                format!("{} is too long: use 0-300 seconds", self.initial_wait_s),
            ));
        }
        if self.unicast && self.use_broadcast {
            p.push(Problem::new(
                f("unicast"),
                format!("unicast adverts and {path}.use_broadcast exclude each other: turn one off"),
            ));
        }
        if self.profile == Profile::Fast {
            if !(10..=500).contains(&self.fast_interval_ms) {
                p.push(Problem::new(
                    f("fast_interval_ms"),
                    format!("{} is out of range: use 10-500 ms", self.fast_interval_ms),
                ));
            }
            if !(3..=10).contains(&self.fast_dead_factor) {
                p.push(Problem::new(
                    f("fast_dead_factor"),
                    format!("{} is out of range: use 3-10 intervals", self.fast_dead_factor),
                ));
            }
        }
        // E8.
        if self.hard_reboot_on_link_failure && self.preferred != Preferred::None {
            p.push(Problem::new(
                f("hard_reboot_on_link_failure"),
                format!(
                    "allowed only with {path}.preferred = \"none\" (with a preferred server the units could swap the \
                     role back and forth): set {path}.preferred = \"none\" or turn hard reboot off"
                ),
            ));
        }
        if let Some(v) = self.sync_interval_s
            && !(5..=3600).contains(&v)
        {
            p.push(Problem::new(
                f("sync_interval_s"),
                format!("{v} is out of range: use 5-3600 seconds, or 0 for 120"),
            ));
        }
        // E14.
        if let Some(v) = self.witness_lease_ttl_ms
            && (!WITNESS_TTL_MS.contains(&v) || v % 1000 != 0)
        {
            p.push(Problem::new(
                f("witness_lease_ttl_ms"),
                format!(
                    "{v} is not allowed: use whole seconds from 2000 to 60000 ms (etcd counts leases in seconds), \
                     or 0 for the HA timeout"
                ),
            ));
        }
        p
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_unit_files_words_and_defaults() {
        let h: HaSettings =
            serde_json::from_str(r#"{"preferred": "first", "profile": "fast", "vhid": 0, "sync_interval_s": 30}"#)
                .unwrap();
        assert_eq!(
            (h.preferred, h.profile, h.vhid, h.sync_interval_s),
            (Preferred::First, Profile::Fast, None, Some(30))
        );
        assert_eq!((h.timeout_s, h.l4_updates), (9, true));
        let e = serde_json::from_str::<HaSettings>(r#"{"preferred": "frist"}"#).unwrap_err().to_string();
        assert!(e.contains("`none`, `first`, `second`"), "{e}");
        let e = serde_json::from_str::<HaSettings>(r#"{"witness_policy": "strict"}"#).unwrap_err().to_string();
        assert!(e.contains("`prefer` or `required`"), "{e}");
        let text = serde_json::to_string(&h).unwrap();
        assert!(text.contains(r#""preferred":"first""#) && !text.contains("vhid"), "{text}");
        assert_eq!(serde_json::from_str::<HaSettings>(&text).unwrap(), h);
    }

    #[test]
    fn the_witness_lease_ttl_defaults_to_the_ha_timeout() {
        let mut h = HaSettings { timeout_s: 3, ..HaSettings::default() };
        assert_eq!(h.witness_lease_ttl(), Duration::from_secs(3));
        h.profile = Profile::Fast;
        assert_eq!(h.witness_lease_ttl(), Duration::from_secs(2), "fast: etcd's minimum");
        h.witness_lease_ttl_ms = Some(5000);
        assert_eq!(h.witness_lease_ttl(), Duration::from_secs(5));
        let h: HaSettings =
            serde_json::from_str(r#"{"witness_policy": "required", "witness_lease_ttl_ms": 0}"#).unwrap();
        assert_eq!((h.witness_policy, h.witness_lease_ttl_ms), (WitnessPolicy::Required, None));
    }

    #[test]
    fn every_rule_names_its_field() {
        let h = HaSettings {
            vhid: Some(300),
            timeout_s: 4,
            initial_wait_s: 301,
            use_broadcast: true,
            unicast: true,
            profile: Profile::Fast,
            fast_interval_ms: 5,
            fast_dead_factor: 11,
            hard_reboot_on_link_failure: true,
            preferred: Preferred::Second,
            sync_interval_s: Some(4),
            witness_lease_ttl_ms: Some(2500),
            ..HaSettings::default()
        };
        let e: Vec<String> = h.validate("ha").iter().map(ToString::to_string).collect();
        assert_eq!(
            e,
            [
                "ha.vhid: 300 is out of range: use 1-255, or 0 for the default",
                "ha.timeout_s: 4 is not allowed: use 3, 6, 9, 12 or 15 (seconds)",
                "ha.initial_wait_s: 301 is too long: use 0-300 seconds",
                "ha.unicast: unicast adverts and ha.use_broadcast exclude each other: turn one off",
                "ha.fast_interval_ms: 5 is out of range: use 10-500 ms",
                "ha.fast_dead_factor: 11 is out of range: use 3-10 intervals",
                "ha.hard_reboot_on_link_failure: allowed only with ha.preferred = \"none\" (with a preferred server \
                 the units could swap the role back and forth): set ha.preferred = \"none\" or turn hard reboot off",
                "ha.sync_interval_s: 4 is out of range: use 5-3600 seconds, or 0 for 120",
                "ha.witness_lease_ttl_ms: 2500 is not allowed: use whole seconds from 2000 to 60000 ms (etcd counts \
                 leases in seconds), or 0 for the HA timeout",
            ]
        );
        assert!(HaSettings::default().validate("ha").is_empty());
    }
}
