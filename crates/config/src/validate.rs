//! Checks every field and derives what the services run with.

use std::fmt;
use std::net::{Ipv4Addr, SocketAddr};
use std::path::PathBuf;
use std::time::Duration;

use duet_carp::params::{AuthParams, Destination, HaMode, IfaceParams, Params, Preferred, Timing};
use duet_wire::auth::UCARP_MAX_PASSWORD;

use crate::addr::Cidr;
use crate::model::*;

/// One problem: the field, what is wrong, what to do.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FieldError {
    /// Dotted path of the field, e.g. `ha.timeout_s` or `interface[0].shared`.
    pub field: String,
    /// What is wrong and how to fix it.
    pub message: String,
}

impl fmt::Display for FieldError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.field, self.message)
    }
}

/// A configuration that passed every check, with what follows from it.
#[derive(Debug, Clone)]
pub struct Validated {
    pub raw: UnitConfig,
    /// The election core's parameters.
    pub election: Params,
    pub state_dir: PathBuf,
    pub election_listen: SocketAddr,
    pub takeover_listen: SocketAddr,
    pub pacify_window: Duration,
    pub handover_timeout: Duration,
    /// Per interface: the shared address with its prefix (empty in non-HA mode).
    pub shared: Vec<(String, Cidr)>,
    /// Problems that do not stop the unit but must be shown (no password...).
    pub warnings: Vec<String>,
}

impl Validated {
    /// The unit's own address on the first interface.
    pub fn own_address(&self) -> Ipv4Addr {
        self.election.interfaces.first().map_or(Ipv4Addr::UNSPECIFIED, |i| i.unit_addr)
    }
}

struct Errors(Vec<FieldError>);

impl Errors {
    fn add(&mut self, field: impl Into<String>, message: impl Into<String>) {
        self.0.push(FieldError { field: field.into(), message: message.into() });
    }
}

fn mode(m: Mode) -> HaMode {
    match m {
        Mode::NonHa => HaMode::NonHa,
        Mode::First => HaMode::First,
        Mode::Second => HaMode::Second,
    }
}

impl UnitConfig {
    /// Checks every field; returns every problem found.
    pub fn validate(&self) -> Result<Validated, Vec<FieldError>> {
        let mut e = Errors(Vec::new());
        let mut warnings = Vec::new();
        let ha_mode = mode(self.unit.mode);
        let is_ha = ha_mode != HaMode::NonHa;

        let name = &self.unit.name;
        if name.is_empty()
            || name.len() > 32
            || !name.chars().all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-'))
        {
            e.add("unit.name", format!("\"{name}\" is not a usable name: use 1-32 letters, digits, '.', '_' or '-'"));
        }

        // Interfaces and their addresses.
        if self.interfaces.is_empty() {
            e.add("interface", "no [[interface]] section: add one with name, unit1, unit2 and shared addresses");
        }
        let mut ifaces = Vec::new();
        let mut shared = Vec::new();
        for (k, i) in self.interfaces.iter().enumerate() {
            let f = |x: &str| format!("interface[{k}].{x}");
            if i.name.is_empty() || i.name.len() > 15 || i.name.contains(['/', ' ']) {
                e.add(
                    f("name"),
                    format!("\"{}\" is not a Linux interface name (1-15 characters, no '/' or spaces)", i.name),
                );
            }
            if self.interfaces[..k].iter().any(|o| o.name == i.name) {
                e.add(f("name"), format!("interface \"{}\" is listed twice: merge the two sections", i.name));
            }
            let Some(u1) = i.unit1 else {
                e.add(f("unit1"), "missing: set unit 1's address with its prefix, e.g. \"198.18.0.1/24\"");
                continue;
            };
            if !is_ha {
                ifaces.push(IfaceParams {
                    name: i.name.clone(),
                    unit_addr: u1.addr,
                    partner_addr: None,
                    shared: u1.addr,
                    ha_check: false,
                    destination: Destination::Multicast,
                });
                continue;
            }
            let (Some(u2), Some(sh)) = (i.unit2, i.shared) else {
                if i.unit2.is_none() {
                    e.add(f("unit2"), "missing: an HA unit needs unit 2's address on every interface");
                }
                if i.shared.is_none() {
                    e.add(f("shared"), "missing: an HA unit needs the shared address on every interface");
                }
                continue;
            };
            for (label, c) in [("unit2", u2), ("shared", sh)] {
                if !u1.contains(c.addr) || c.prefix != u1.prefix {
                    e.add(f(label), format!("{c} is not in the subnet of unit1 {u1}: the three addresses of an interface share one subnet"));
                }
            }
            if u1.addr == u2.addr || u1.addr == sh.addr || u2.addr == sh.addr {
                e.add(f("shared"), format!("unit1 {u1}, unit2 {u2} and shared {sh} must be three different addresses"));
            }
            for (label, c) in [("unit1", u1), ("unit2", u2), ("shared", sh)] {
                if c.addr == c.network() || c.addr == c.broadcast() || c.addr.is_multicast() || c.addr.is_unspecified()
                {
                    e.add(f(label), format!("{c} is a network, broadcast or multicast address: use a host address"));
                }
            }
            let (own, partner) = if ha_mode == HaMode::First { (u1, u2) } else { (u2, u1) };
            let unicast = i.unicast.unwrap_or(self.ha.unicast);
            if unicast && self.ha.use_broadcast {
                e.add(f("unicast"), "unicast adverts and ha.use_broadcast exclude each other: turn one off");
            }
            let destination = if unicast {
                Destination::Unicast
            } else if self.ha.use_broadcast {
                Destination::Broadcast
            } else {
                Destination::Multicast
            };
            ifaces.push(IfaceParams {
                name: i.name.clone(),
                unit_addr: own.addr,
                partner_addr: Some(partner.addr),
                shared: sh.addr,
                ha_check: i.ha_check,
                destination,
            });
            shared.push((i.name.clone(), sh));
        }
        if is_ha && !self.interfaces.is_empty() && !self.interfaces.iter().any(|i| i.ha_check) {
            e.add(
                "interface[*].ha_check",
                "no interface is used for HA checks: the last one cannot be turned off; set ha_check = true on the interface that reaches the partner",
            );
        }

        // vhid (E4).
        let vhid = match self.ha.vhid {
            Some(v) if (1..=255).contains(&v) => u8::try_from(v).unwrap_or(1),
            Some(v) => {
                e.add("ha.vhid", format!("{v} is out of range: use 1-255"));
                1
            }
            None => match shared.first() {
                Some((_, s)) if s.addr.octets()[3] != 0 => s.addr.octets()[3],
                Some((_, s)) => {
                    e.add("ha.vhid", format!("the default (last octet of {s}) is 0: set ha.vhid to 1-255"));
                    1
                }
                None => 1,
            },
        };

        // Timing (E3, E13).
        if ![3, 6, 9, 12, 15].contains(&self.ha.timeout_s) {
            e.add("ha.timeout_s", format!("{} is not allowed: use 3, 6, 9, 12 or 15 (seconds)", self.ha.timeout_s));
        }
        if self.ha.initial_wait_s > 300 {
            e.add("ha.initial_wait_s", format!("{} is too long: use 0-300 seconds", self.ha.initial_wait_s));
        }
        if self.ha.profile == Profile::Fast {
            if !(10..=500).contains(&self.ha.fast_interval_ms) {
                e.add("ha.fast_interval_ms", format!("{} is out of range: use 10-500 ms", self.ha.fast_interval_ms));
            }
            if !(3..=10).contains(&self.ha.fast_dead_factor) {
                e.add(
                    "ha.fast_dead_factor",
                    format!("{} is out of range: use 3-10 intervals", self.ha.fast_dead_factor),
                );
            }
        }
        let advskew = match self.ha.advskew {
            Some(s) if s <= 254 => Some(u8::try_from(s).unwrap_or(0)),
            Some(s) => {
                e.add("ha.advskew", format!("{s} is out of range: use 0-254 (255 means \"resigning\" on the wire)"));
                None
            }
            None => None,
        };
        let timing = match self.ha.profile {
            Profile::Standard => Timing::Standard { timeout: Duration::from_secs(self.ha.timeout_s) },
            Profile::Fast => Timing::Fast {
                interval: Duration::from_millis(self.ha.fast_interval_ms),
                dead_factor: self.ha.fast_dead_factor,
            },
        };
        let preferred = match self.ha.preferred {
            PreferredServer::None => Preferred::None,
            PreferredServer::First => Preferred::First,
            PreferredServer::Second => Preferred::Second,
        };

        // E8.
        if self.ha.hard_reboot_on_link_failure && preferred != Preferred::None {
            e.add(
                "ha.hard_reboot_on_link_failure",
                "allowed only with ha.preferred = \"none\" (with a preferred server the units could swap the role back and forth): set ha.preferred = \"none\" or turn hard reboot off",
            );
        }
        if self.ha.link_failure_action == LinkFailureAction::Command && self.ha.link_failure_command.is_empty() {
            e.add("ha.link_failure_command", "ha.link_failure_action is \"command\" but no command is set: give the program and its arguments as a list");
        }

        // E9.
        if self.ha.pacify_max_starts == 0 {
            e.add("ha.pacify_max_starts", "0 would pacify every start: use 1 or more (the reference uses 3)");
        }
        if !(10..=86_400).contains(&self.ha.pacify_window_s) {
            e.add(
                "ha.pacify_window_s",
                format!("{} is out of range: use 10-86400 seconds (the reference uses 300)", self.ha.pacify_window_s),
            );
        }
        if !(100..=60_000).contains(&self.ha.handover_timeout_ms) {
            e.add(
                "ha.handover_timeout_ms",
                format!("{} is out of range: use 100-60000 ms", self.ha.handover_timeout_ms),
            );
        }

        // Authentication (E2, E13, E15).
        let auth = match self.ha.auth.mode {
            AuthMode::UcarpSha1 => {
                if !self.ha.auth.keys.is_empty() {
                    e.add(
                        "ha.auth.keys",
                        "keys are used with ha.auth.mode = \"sha256\" only: remove them or change the mode",
                    );
                }
                let pw = self.ha.password.clone().unwrap_or_default();
                if pw.len() > UCARP_MAX_PASSWORD {
                    e.add(
                        "ha.password",
                        format!(
                            "{} bytes is too long: ucarp-compatible passwords have at most {UCARP_MAX_PASSWORD} bytes",
                            pw.len()
                        ),
                    );
                }
                if pw.is_empty() && is_ha {
                    warnings
                        .push("ha.password is not set: any host on the segment can take the active role".to_string());
                }
                AuthParams::Ucarp { password: pw.into_bytes() }
            }
            AuthMode::Sha256 => {
                if self.ha.password.is_some() {
                    e.add(
                        "ha.password",
                        "with ha.auth.mode = \"sha256\" the keys are in ha.auth.keys: remove ha.password",
                    );
                }
                let mut keys = Vec::new();
                for (k, key) in self.ha.auth.keys.iter().enumerate() {
                    if !(1..=255).contains(&key.id) {
                        e.add(format!("ha.auth.keys[{k}].id"), format!("{} is out of range: use 1-255", key.id));
                    }
                    if self.ha.auth.keys[..k].iter().any(|o| o.id == key.id) {
                        e.add(
                            format!("ha.auth.keys[{k}].id"),
                            format!("key id {} is used twice: give every key its own id", key.id),
                        );
                    }
                    if key.secret.len() < 16 {
                        e.add(format!("ha.auth.keys[{k}].secret"), "too short: use at least 16 bytes");
                    }
                    keys.push((u8::try_from(key.id).unwrap_or(0), key.secret.clone().into_bytes()));
                }
                if keys.is_empty() {
                    e.add(
                        "ha.auth.keys",
                        "sha256 mode needs at least one key: add [[ha.auth.keys]] with id and secret",
                    );
                }
                let send = match self.ha.auth.send_key {
                    Some(s) => u8::try_from(s).unwrap_or(0),
                    None if keys.len() == 1 => keys[0].0,
                    None => {
                        e.add("ha.auth.send_key", "several keys are configured: say which one signs (send_key = <id>)");
                        0
                    }
                };
                if !keys.is_empty() && !keys.iter().any(|(id, _)| *id == send) {
                    e.add("ha.auth.send_key", format!("{send} is not the id of a configured key"));
                }
                AuthParams::Sha256 { keys, send_key: send }
            }
        };

        // Service addresses.
        let listen = |e: &mut Errors, field: &str, v: &str| -> SocketAddr {
            v.parse().unwrap_or_else(|_| {
                e.add(field, format!("\"{v}\" is not an address:port, e.g. \"127.0.0.1:7870\""));
                SocketAddr::from(([127, 0, 0, 1], 0))
            })
        };
        let election_listen = listen(&mut e, "election.listen", &self.election.listen);
        let takeover_listen = listen(&mut e, "takeover.listen", &self.takeover.listen);
        if !(1..=3600).contains(&self.election.drop_log_window_s) {
            e.add(
                "election.drop_log_window_s",
                format!("{} is out of range: use 1-3600 seconds", self.election.drop_log_window_s),
            );
        }
        if let Some(p) = self.election.realtime_priority
            && p > 99
        {
            e.add("election.realtime_priority", format!("{p} is out of range: use 1-99, or 0 to turn it off"));
        }
        if !(1..=100).contains(&self.takeover.garp_count) {
            e.add("takeover.garp_count", format!("{} is out of range: use 1-100", self.takeover.garp_count));
        }
        if self.takeover.garp_spacing_ms > 10_000 {
            e.add("takeover.garp_spacing_ms", "above 10000 ms: a burst must end within seconds");
        }
        if self.takeover.garp_refresh_s > 3600 {
            e.add("takeover.garp_refresh_s", "above 3600 s: use 0 (off) to 3600");
        }
        if !(50..=60_000).contains(&self.takeover.reconcile_interval_ms) {
            e.add("takeover.reconcile_interval_ms", "out of range: use 50-60000 ms");
        }

        let state_dir =
            self.unit.state_dir.clone().unwrap_or_else(|| PathBuf::from("/var/lib/duet").join(&self.unit.name));
        let params = Params {
            mode: ha_mode,
            vhid,
            timing,
            preferred,
            initial_wait: Duration::from_secs(self.ha.initial_wait_s),
            auth,
            interfaces: ifaces,
            advskew,
            hard_reboot_on_link_failure: self.ha.hard_reboot_on_link_failure,
        };
        if e.0.is_empty()
            && let Err(why) = params.check()
        {
            e.add("ha", why);
        }
        if !e.0.is_empty() {
            return Err(e.0);
        }
        Ok(Validated {
            raw: self.clone(),
            election: params,
            state_dir,
            election_listen,
            takeover_listen,
            pacify_window: Duration::from_secs(self.ha.pacify_window_s),
            handover_timeout: Duration::from_millis(self.ha.handover_timeout_ms),
            shared,
            warnings,
        })
    }
}

#[cfg(test)]
mod tests {
    use crate::{ConfigError, from_toml};

    const GOOD: &str = r#"
[unit]
name = "lb1"
mode = "first"

[ha]
password = "secret"
timeout_s = 3

[[interface]]
name = "eth0"
unit1 = "198.18.0.1/24"
unit2 = "198.18.0.2/24"
shared = "198.18.0.10/24"
"#;

    fn errors(text: &str) -> Vec<String> {
        match from_toml(text) {
            Err(ConfigError::Invalid { errors, .. }) => errors.iter().map(ToString::to_string).collect(),
            Err(ConfigError::Parse { message, .. }) => vec![message],
            Ok(_) => vec![],
        }
    }

    #[test]
    fn good_config_derives_election_params() {
        let v = from_toml(GOOD).unwrap();
        assert_eq!(v.election.vhid, 10, "vhid defaults to the shared address's last octet");
        assert_eq!(v.election.interfaces[0].unit_addr.to_string(), "198.18.0.1");
        assert_eq!(v.election.interfaces[0].partner_addr.unwrap().to_string(), "198.18.0.2");
        assert_eq!(v.election.advskew(), 0);
        assert!(v.warnings.is_empty());
        let second = GOOD.replace("mode = \"first\"", "mode = \"second\"");
        let v2 = from_toml(&second).unwrap();
        assert_eq!(v2.election.interfaces[0].unit_addr.to_string(), "198.18.0.2");
    }

    #[test]
    fn timeout_must_be_a_multiple_of_three() {
        let e = errors(&GOOD.replace("timeout_s = 3", "timeout_s = 4"));
        assert_eq!(e, vec!["ha.timeout_s: 4 is not allowed: use 3, 6, 9, 12 or 15 (seconds)"]);
    }

    #[test]
    fn every_problem_is_reported_at_once() {
        let bad = GOOD
            .replace(
                "timeout_s = 3",
                "timeout_s = 5\nvhid = 300\npreferred = \"first\"\nhard_reboot_on_link_failure = true",
            )
            .replace("shared = \"198.18.0.10/24\"", "shared = \"198.18.1.10/24\"");
        let e = errors(&bad);
        assert!(e.iter().any(|l| l.starts_with("ha.timeout_s:")), "{e:?}");
        assert!(e.iter().any(|l| l.starts_with("ha.vhid: 300")), "{e:?}");
        assert!(
            e.iter().any(|l| l.starts_with("ha.hard_reboot_on_link_failure: allowed only with ha.preferred")),
            "{e:?}"
        );
        assert!(e.iter().any(|l| l.starts_with("interface[0].shared: 198.18.1.10/24 is not in the subnet")), "{e:?}");
    }

    #[test]
    fn last_ha_check_cannot_be_disabled() {
        let e = errors(&format!("{GOOD}ha_check = false\n"));
        assert!(
            e.iter().any(|l| l.starts_with("interface[*].ha_check:") && l.contains("cannot be turned off")),
            "{e:?}"
        );
    }

    #[test]
    fn unknown_fields_and_values_are_named() {
        let e = errors(&GOOD.replace("timeout_s = 3", "timout_s = 3"));
        assert!(e[0].contains("timout_s"), "{e:?}");
        let e = errors(&GOOD.replace("mode = \"first\"", "mode = \"frist\""));
        assert!(e[0].contains("unit.mode") && e[0].contains("first"), "{e:?}");
    }

    #[test]
    fn ucarp_password_length() {
        let e = errors(&GOOD.replace("\"secret\"", "\"01234567890123456789\""));
        assert!(e[0].starts_with("ha.password: 20 bytes is too long"), "{e:?}");
    }

    #[test]
    fn missing_password_is_a_warning() {
        let v = from_toml(&GOOD.replace("password = \"secret\"", "")).unwrap();
        assert!(v.warnings[0].contains("any host on the segment can take the active role"));
    }

    #[test]
    fn sha256_needs_keys_and_a_send_key() {
        let base = GOOD.replace("password = \"secret\"", "");
        let e = errors(&format!("{base}\n[ha.auth]\nmode = \"sha256\"\n"));
        assert!(e.iter().any(|l| l.starts_with("ha.auth.keys: sha256 mode needs")), "{e:?}");
        let ok = base.replace(
            "timeout_s = 3",
            "timeout_s = 3\n[ha.auth]\nmode = \"sha256\"\nsend_key = 2\nkeys = [{ id = 1, secret = \"0123456789abcdef\" }, { id = 2, secret = \"fedcba9876543210\" }]",
        );
        let v = from_toml(&ok).unwrap();
        assert_eq!(v.election.auth.mode_name(), "sha256");
    }

    #[test]
    fn broadcast_and_unicast_exclude_each_other() {
        let e = errors(&GOOD.replace("timeout_s = 3", "timeout_s = 3\nuse_broadcast = true\nunicast = true"));
        assert!(e.iter().any(|l| l.starts_with("interface[0].unicast:")), "{e:?}");
    }

    #[test]
    fn non_ha_needs_only_the_unit_address() {
        let v = from_toml(
            "[unit]\nname = \"solo\"\nmode = \"non-ha\"\n[[interface]]\nname = \"eth0\"\nunit1 = \"198.18.0.1/24\"\n",
        )
        .unwrap();
        assert_eq!(v.election.mode, duet_carp::HaMode::NonHa);
    }
}
