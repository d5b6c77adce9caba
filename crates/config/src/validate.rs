//! Checks every field and derives what the services run with.
//!
//! The pair's part of the file (`[ha]`'s pair settings, `[[interface]]`)
//! is checked by the model's validators (`duet_model`), the same ones that
//! check an image; this module keeps only the rules of the unit's own
//! settings. [`election_params`] is the one way to the election's
//! [`Params`]: from this unit's own settings and the pair's, whether these
//! come from the file or from a generation of the image.
//!
//! Over 600 lines: every rule of the unit's own settings in one place, one
//! check per field, so that `duet check` names every problem at once; the
//! pair's rules are in `duet_model`.

use std::net::{Ipv4Addr, SocketAddr};
use std::path::PathBuf;
use std::time::Duration;

use duet_carp::WitnessParams;
use duet_carp::params::{AuthParams, Destination, HaMode, IfaceParams, Params, Timing};
use duet_model::{HaSettings, Interface, Problem, Profile};
use duet_wire::auth::UCARP_MAX_PASSWORD;

use crate::model::*;
use crate::problems::Problems;
use crate::witness::{WitnessConfig, valid_pair_name};

/// A configuration that passed every check, with what follows from it.
#[derive(Debug, Clone)]
pub struct Validated {
    pub raw: UnitConfig,
    /// The election core's parameters (from the file's pair settings).
    pub election: Params,
    /// This unit's own part of them, to rebuild them from an image.
    pub local: LocalHa,
    pub state_dir: PathBuf,
    pub election_listen: SocketAddr,
    pub takeover_listen: SocketAddr,
    pub pacify_window: Duration,
    pub handover_timeout: Duration,
    /// Problems that do not stop the unit but must be shown (no password...).
    pub warnings: Vec<String>,
    /// O5: the tokens callers must present (none: the APIs are open, on
    /// loopback unless allowed).
    pub admin_tokens: Option<crate::AdminTokens>,
    /// O5: the warnings about who may call the APIs (also in `warnings`),
    /// which the election's status repeats.
    pub admin_warnings: Vec<String>,
    /// O6: the notify hooks, checked.
    pub hooks: crate::Hooks,
    /// E16: the tracked checks, checked.
    pub tracks: Vec<crate::Track>,
    /// E14: this unit's way to the witness, when it has one.
    pub witness: Option<WitnessConfig>,
    /// O7: this unit's fleet, when it is in one.
    pub fleet: Option<crate::FleetConfig>,
}

impl Validated {
    /// The pair's name: `unit.pair`, or `vhid-<vhid>`.
    pub fn pair_name(&self) -> String {
        self.raw.unit.pair.clone().unwrap_or_else(|| format!("vhid-{}", self.election.vhid))
    }

    /// The unit's own address on the first interface.
    pub fn own_address(&self) -> Ipv4Addr {
        self.election.interfaces.first().map_or(Ipv4Addr::UNSPECIFIED, |i| i.unit_addr)
    }

    /// The pair's interfaces as the file gives them.
    pub fn interfaces(&self) -> Vec<Interface> {
        self.raw.interfaces.iter().map(|i| i.iface.clone()).collect()
    }
}

/// This unit's own part of the election's parameters: never synced, read
/// from the unit file only.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LocalHa {
    pub mode: HaMode,
    pub auth: AuthParams,
    /// Override of the derived advskew.
    pub advskew: Option<u8>,
    /// Per-interface overrides of `ha.unicast`.
    pub unicast: Vec<UnicastOverride>,
    /// E14: the unit has a `[witness]` (the pair's policy and TTL apply).
    pub witness: bool,
}

/// `unicast = ...` in one `[[interface]]` of the unit file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UnicastOverride {
    /// The interface's name (an image's interface of that name gets it).
    pub interface: String,
    /// Its `[[interface]]` in the file, to name the field.
    pub index: usize,
    pub unicast: bool,
}

/// The election's parameters from this unit's own settings and the pair's
/// HA settings and interfaces (from the unit file, or from a generation of
/// the image): the one function that builds them, at start and for every
/// new generation. The pair's part is checked first with the model's
/// validators; `interfaces_at` names where the interfaces sit
/// (`interface` in the unit file, `interfaces` in the image).
pub fn election_params(
    local: &LocalHa,
    ha: &HaSettings,
    interfaces: &[Interface],
    interfaces_at: &str,
) -> Result<Params, Vec<Problem>> {
    let is_ha = local.mode != HaMode::NonHa;
    let mut problems = duet_model::validate_pair(ha, interfaces, is_ha, interfaces_at);
    if !problems.is_empty() {
        return Err(problems);
    }
    let mut ifaces = Vec::with_capacity(interfaces.len());
    for i in interfaces {
        // The validators made sure of the addresses each mode needs.
        let Some(u1) = i.unit1 else { continue };
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
        let (Some(u2), Some(sh)) = (i.unit2, i.shared) else { continue };
        let (own, partner) = if local.mode == HaMode::First { (u1, u2) } else { (u2, u1) };
        let over = local.unicast.iter().find(|o| o.interface == i.name);
        let unicast = over.map_or(ha.unicast, |o| o.unicast);
        if let Some(o) = over
            && unicast
            && ha.use_broadcast
        {
            problems.push(Problem::new(
                format!("interface[{}].unicast", o.index),
                "unicast adverts and ha.use_broadcast exclude each other: turn one off",
            ));
        }
        let destination = if unicast {
            Destination::Unicast
        } else if ha.use_broadcast {
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
    }
    // E4: validated 1-255, or a non-zero last octet of the first shared address.
    let vhid = match ha.vhid {
        Some(v) => u8::try_from(v).unwrap_or(1),
        None if is_ha => interfaces.first().and_then(|i| i.shared).map_or(1, |s| s.addr.octets()[3]),
        None => 1,
    };
    let timing = match ha.profile {
        Profile::Standard => Timing::Standard { timeout: Duration::from_secs(u64::from(ha.timeout_s)) },
        Profile::Fast => Timing::Fast {
            interval: Duration::from_millis(u64::from(ha.fast_interval_ms)),
            dead_factor: ha.fast_dead_factor,
        },
    };
    let params = Params {
        mode: local.mode,
        vhid,
        timing,
        preferred: ha.preferred,
        initial_wait: Duration::from_secs(u64::from(ha.initial_wait_s)),
        auth: local.auth.clone(),
        interfaces: ifaces,
        advskew: local.advskew,
        hard_reboot_on_link_failure: ha.hard_reboot_on_link_failure,
        witness: (local.witness && is_ha)
            .then(|| WitnessParams { policy: ha.witness_policy, lease_ttl: ha.witness_lease_ttl() }),
    };
    if problems.is_empty()
        && let Err(why) = params.check()
    {
        problems.push(Problem::new("ha", why.to_string()));
    }
    if problems.is_empty() { Ok(params) } else { Err(problems) }
}

impl UnitConfig {
    /// Checks every field; returns every problem found.
    pub fn validate(&self) -> Result<Validated, Vec<Problem>> {
        let mut e = Problems::default();
        let mut warnings = Vec::new();
        let ha_mode = self.unit.mode;
        let is_ha = ha_mode != HaMode::NonHa;
        let ha = &self.ha.unit;

        let name = &self.unit.name;
        if name.is_empty()
            || name.len() > 32
            || !name.chars().all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-'))
        {
            e.add("unit.name", format!("\"{name}\" is not a usable name: use 1-32 letters, digits, '.', '_' or '-'"));
        }
        if let Some(p) = &self.unit.pair
            && !valid_pair_name(p)
        {
            e.add(
                "unit.pair",
                format!("\"{p}\" is not a usable pair name: use 1-64 letters, digits, '.', '_' or '-' (the same on both units)"),
            );
        }
        let witness = self.witness.as_ref().and_then(|w| crate::witness::resolve(self, w, &mut e.0, &mut warnings));
        let fleet = crate::fleet::resolve(self, &mut e.0, &mut warnings);
        let listens = [
            ("election.listen", self.election.listen.as_str()),
            ("takeover.listen", self.takeover.listen.as_str()),
            ("configsync.listen", self.configsync.listen.as_str()),
            ("replicator.listen", self.replicator.listen.as_str()),
        ];
        let before = warnings.len();
        let admin_tokens = crate::admin::resolve(&self.admin, &listens, &mut e, &mut warnings);
        let admin_warnings = warnings[before..].to_vec();
        let hooks = crate::hooks::resolve(&self.hooks, &mut e);
        telemetry_tls(&self.telemetry, &mut e);
        let tracks = crate::track::resolve(&self.tracks, &mut e);

        let ha_keys: Vec<&str> =
            duet_model::keys::<HaSettings>().iter().chain(duet_model::keys::<UnitHaSettings>()).copied().collect();
        e.unknown("ha", &self.ha.unknown, &ha_keys);
        let iface_keys: Vec<&str> = duet_model::keys::<Interface>().iter().copied().chain(["unicast"]).collect();
        for (k, i) in self.interfaces.iter().enumerate() {
            e.unknown(&format!("interface[{k}]"), &i.unknown, &iface_keys);
        }
        if self.interfaces.is_empty() {
            e.add("interface", "no [[interface]] section: add one with name, unit1, unit2 and shared addresses");
        }

        let advskew = match ha.advskew {
            Some(s) if s <= 254 => Some(u8::try_from(s).unwrap_or(0)),
            Some(s) => {
                e.add("ha.advskew", format!("{s} is out of range: use 0-254 (255 means \"resigning\" on the wire)"));
                None
            }
            None => None,
        };
        if ha.link_failure_action == LinkFailureAction::Command && ha.link_failure_command.is_empty() {
            e.add("ha.link_failure_command", "ha.link_failure_action is \"command\" but no command is set: give the program and its arguments as a list");
        }

        // E9.
        if ha.pacify_max_starts == 0 {
            e.add("ha.pacify_max_starts", "0 would pacify every start: use 1 or more (the reference uses 3)");
        }
        if !(10..=86_400).contains(&ha.pacify_window_s) {
            e.add(
                "ha.pacify_window_s",
                format!("{} is out of range: use 10-86400 seconds (the reference uses 300)", ha.pacify_window_s),
            );
        }
        e.in_range("ha.handover_timeout_ms", ha.handover_timeout_ms, 100..=60_000, "ms");

        // Authentication (E2, E13, E15).
        let auth = match ha.auth.mode {
            AuthMode::UcarpSha1 => {
                if !ha.auth.keys.is_empty() {
                    e.add(
                        "ha.auth.keys",
                        "keys are used with ha.auth.mode = \"sha256\" only: remove them or change the mode",
                    );
                }
                let pw = ha.password.clone().unwrap_or_default();
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
                let before = e.0.len();
                if ha.password.is_some() {
                    e.add(
                        "ha.password",
                        "with ha.auth.mode = \"sha256\" the keys are in ha.auth.keys: remove ha.password",
                    );
                }
                let mut keys = Vec::new();
                for (k, key) in ha.auth.keys.iter().enumerate() {
                    if !(1..=255).contains(&key.id) {
                        e.add(format!("ha.auth.keys[{k}].id"), format!("{} is out of range: use 1-255", key.id));
                    }
                    if ha.auth.keys[..k].iter().any(|o| o.id == key.id) {
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
                let send = match ha.auth.send_key {
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
                if e.0.len() > before {
                    // Said above; a stand-in keeps the pair's checks below
                    // from repeating it.
                    AuthParams::Ucarp { password: Vec::new() }
                } else {
                    AuthParams::Sha256 { keys, send_key: send }
                }
            }
        };

        // Service addresses.
        let election_listen = e.listen("election.listen", &self.election.listen, 7870);
        let takeover_listen = e.listen("takeover.listen", &self.takeover.listen, 7870);
        e.in_range("election.drop_log_window_s", self.election.drop_log_window_s, 1..=3600, "seconds");
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

        // The pair's part, by the model's rules, and the parameters.
        let local = LocalHa {
            mode: ha_mode,
            auth,
            advskew,
            unicast: self
                .interfaces
                .iter()
                .enumerate()
                .filter_map(|(index, i)| {
                    i.unicast.map(|unicast| UnicastOverride { interface: i.iface.name.clone(), index, unicast })
                })
                .collect(),
            witness: self.witness.is_some(),
        };
        let interfaces: Vec<Interface> = self.interfaces.iter().map(|i| i.iface.clone()).collect();
        let params = election_params(&local, &self.ha.pair, &interfaces, "interface").map_err(|p| e.0.extend(p));
        let (Ok(params), true) = (params, e.0.is_empty()) else {
            return Err(e.0);
        };

        let state_dir =
            self.unit.state_dir.clone().unwrap_or_else(|| PathBuf::from("/var/lib/duet").join(&self.unit.name));
        Ok(Validated {
            raw: self.clone(),
            election: params,
            local,
            state_dir,
            election_listen,
            takeover_listen,
            pacify_window: Duration::from_secs(ha.pacify_window_s),
            handover_timeout: Duration::from_millis(ha.handover_timeout_ms),
            warnings,
            admin_tokens,
            admin_warnings,
            hooks,
            tracks,
            witness,
            fleet,
        })
    }
}

/// `[telemetry]`'s TLS: an `https://` endpoint needs the collector's CA, a
/// CA or client certificate needs an `https://` endpoint, a certificate
/// needs its key (and the reverse).
fn telemetry_tls(t: &TelemetrySection, e: &mut Problems) {
    let https = t.otlp_endpoint.as_deref().is_some_and(|u| u.starts_with("https://"));
    if https && t.otlp_ca.is_none() {
        e.add(
            "telemetry.otlp_ca",
            "an https:// collector needs the CA that signed its certificate: set otlp_ca = \"/path/to/ca.pem\"",
        );
    }
    if !https && (t.otlp_ca.is_some() || t.otlp_cert.is_some()) {
        e.add(
            "telemetry.otlp_endpoint",
            "otlp_ca and otlp_cert are for a TLS collector: write the endpoint as https://host:port",
        );
    }
    if t.otlp_cert.is_some() != t.otlp_key.is_some() {
        e.add("telemetry.otlp_key", "otlp_cert and otlp_key go together: set both or neither");
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use crate::{ConfigError, from_toml};

    /// A valid unit file: the first unit of a pair on one interface.
    pub(crate) const GOOD: &str = r#"
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

    pub(crate) fn errors(text: &str) -> Vec<String> {
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
        // The pair's two settings: the pair's rule.
        let e = errors(&GOOD.replace("timeout_s = 3", "timeout_s = 3\nuse_broadcast = true\nunicast = true"));
        assert_eq!(e, ["ha.unicast: unicast adverts and ha.use_broadcast exclude each other: turn one off"]);
        // This unit's override against the pair's broadcast.
        let e = errors(&format!(
            "{}unicast = true\n",
            GOOD.replace("timeout_s = 3", "timeout_s = 3\nuse_broadcast = true")
        ));
        assert_eq!(e, ["interface[0].unicast: unicast adverts and ha.use_broadcast exclude each other: turn one off"]);
    }

    #[test]
    fn unknown_keys_are_all_named_with_the_allowed_ones() {
        let e = errors(&format!(
            "{}colour = \"red\"\n",
            GOOD.replace("timeout_s = 3", "timout_s = 3\nprefered = \"first\"")
        ));
        assert_eq!(e.len(), 3, "{e:#?}");
        assert!(e[0].starts_with("ha.prefered: unknown field, expected one of `vhid`, `timeout_s`"), "{e:?}");
        assert!(e[0].contains("`password`") && e[0].contains("`auth`"), "{e:?}");
        assert!(e[1].starts_with("ha.timout_s: unknown field"), "{e:?}");
        assert!(e[2].starts_with("interface[0].colour: unknown field, expected one of `name`"), "{e:?}");
        assert!(e[2].contains("`unicast`"), "{e:?}");
    }

    #[test]
    fn bad_values_in_the_flattened_sections_name_their_fields_all_at_once() {
        let text = format!(
            "{}ha_check = 3\n",
            GOOD.replace("timeout_s = 3", "timeout_s = \"x\"\nadvskew = \"y\"")
                .replace("unit2 = \"198.18.0.2/24\"", "unit2 = \"198.18.0.2\"")
        );
        let e = errors(&text);
        assert_eq!(e.len(), 1, "one parse error: {e:?}");
        for want in [
            "ha.timeout_s: invalid type: found string \"x\", expected u32",
            "ha.advskew: invalid type: found string \"y\", expected u16",
            "interface[0].unit2: \"198.18.0.2\" has no prefix length",
            "interface[0].ha_check: invalid type",
        ] {
            assert!(e[0].contains(want), "missing {want:?} in {e:?}");
        }
    }

    #[test]
    fn the_pair_settings_use_the_models_words() {
        let v =
            from_toml(&GOOD.replace(
                "timeout_s = 3",
                "timeout_s = 3\npreferred = \"second\"\nprofile = \"fast\"\nl4_updates = false",
            ))
            .unwrap();
        assert_eq!(v.election.preferred, duet_carp::Preferred::Second);
        assert_eq!(v.election.profile_name(), "fast");
        assert!(!v.raw.ha.pair.l4_updates && v.raw.ha.pair.l7_updates);
        let e = errors(&GOOD.replace("timeout_s = 3", "timeout_s = 3\npreferred = \"frist\""));
        assert!(e[0].contains("`none`, `first`, `second`"), "{e:?}");
    }

    #[test]
    fn a_witness_section_resolves_and_the_pairs_settings_reach_the_parameters() {
        let text = format!(
            "{}\n[witness]\nendpoints = [\"198.18.0.21:2379\", \"https://198.18.0.22:2379\"]\ntls_ca = \"/etc/duet/ca.pem\"\n",
            GOOD.replace("timeout_s = 3", "timeout_s = 3\nwitness_policy = \"required\"")
        );
        let v = from_toml(&text).unwrap();
        let w = v.witness.clone().unwrap();
        assert_eq!(w.endpoints, ["https://198.18.0.21:2379", "https://198.18.0.22:2379"]);
        assert_eq!(w.key(v.election.vhid), "/duet/vhid-10/witness", "the default pair name");
        let wp = v.election.witness.unwrap();
        assert_eq!(
            (wp.policy, wp.lease_ttl),
            (duet_carp::WitnessPolicy::Required, std::time::Duration::from_secs(3)),
            "the lease TTL defaults to the HA timeout"
        );
        let named = from_toml(&text.replace("mode = \"first\"", "mode = \"first\"\npair = \"lb-pair\"")).unwrap();
        assert_eq!(named.witness.unwrap().key(10), "/duet/lb-pair/witness");
        // Without [witness] the pair's settings are there but unused.
        assert!(from_toml(GOOD).unwrap().election.witness.is_none());
    }

    #[test]
    fn witness_problems_name_the_field_the_allowed_values_and_the_fix() {
        let base = format!("{GOOD}\n[witness]\n");
        let e = errors(&format!("{base}policy = \"required\"\nlease_ttl_ms = 2000\n"));
        assert!(e.iter().any(|l| l.starts_with("witness.endpoints: no etcd endpoint")), "{e:?}");
        assert!(e.iter().any(|l| l.starts_with("witness.tls_ca: missing")), "{e:?}");
        assert!(e.iter().any(|l| l.starts_with("witness.policy:") && l.contains("set ha.witness_policy")), "{e:?}");
        assert!(
            e.iter().any(|l| l.starts_with("witness.lease_ttl_ms:") && l.contains("ha.witness_lease_ttl_ms")),
            "{e:?}"
        );
        let e = errors(&format!(
            "{base}endpoints = [\"http://198.18.0.21:2379\", \"198.18.0.22\"]\ntls_ca = \"/ca\"\ntls_cert = \"/c\"\nkey_prefix = \"duet\"\n"
        ));
        assert_eq!(
            e,
            [
                "witness.endpoints[0]: \"http://198.18.0.21:2379\": the witness talks TLS: use https:// or no scheme (or set \
                 witness.insecure_plaintext = true)",
                "witness.endpoints[1]: \"198.18.0.22\" is not host:port, e.g. \"198.18.0.21:2379\"",
                "witness.tls_key: missing: witness.tls_cert is set; give both (a client certificate) or neither",
                "witness.key_prefix: \"duet\" must start and end with '/' and hold no spaces, e.g. \"/duet/lb-pair/\"",
            ]
        );
        let e =
            errors(&format!("{base}endpoints = [\"198.18.0.21:2379\"]\ninsecure_plaintext = true\ntls_ca = \"/ca\"\n"));
        assert_eq!(e, ["witness.tls_ca: witness.insecure_plaintext = true and TLS exclude each other: remove one"]);
        let e = errors(&GOOD.replace("timeout_s = 3", "timeout_s = 3\nwitness_policy = \"strict\""));
        assert!(e[0].contains("ha.witness_policy") && e[0].contains("`prefer` or `required`"), "{e:?}");
        let e = errors(&GOOD.replace("mode = \"first\"", "mode = \"first\"\npair = \"my pair\""));
        assert!(e[0].starts_with("unit.pair: \"my pair\" is not a usable pair name"), "{e:?}");
        // Plaintext works, loudly.
        let v = from_toml(&format!("{base}endpoints = [\"198.18.0.21:2379\"]\ninsecure_plaintext = true\n")).unwrap();
        assert_eq!(v.witness.unwrap().endpoints, ["http://198.18.0.21:2379"]);
        assert!(v.warnings.iter().any(|w| w.starts_with("witness.insecure_plaintext = true")), "{:?}", v.warnings);
    }

    #[test]
    fn a_fleet_section_resolves_and_its_problems_name_the_field() {
        let fleet = "[fleet]\nendpoints = [\"198.18.0.21:2379\"]\ntls_ca = \"/ca\"\n";
        let paired = GOOD.replace("mode = \"first\"", "mode = \"first\"\npair = \"edge-a\"");
        let v = from_toml(&format!("{paired}\n{fleet}")).unwrap();
        let f = v.fleet.unwrap();
        assert_eq!(
            (f.endpoints[0].as_str(), f.prefix.as_str(), f.pair.as_str(), f.store),
            ("https://198.18.0.21:2379", "/duet", "edge-a", crate::StoreKind::Local)
        );
        let v = from_toml(&format!("{paired}\n[configsync]\nstore = \"etcd\"\n{fleet}")).unwrap();
        assert_eq!(v.fleet.unwrap().store, crate::StoreKind::Etcd);
        // The store in etcd needs [fleet]; a fleet needs the pair's name;
        // the prefix, the endpoints and TLS by the witness's rule.
        let e = errors(&format!("{GOOD}\n[configsync]\nstore = \"etcd\"\n"));
        assert!(e[0].starts_with("configsync.store: \"etcd\" needs a [fleet] section"), "{e:?}");
        let e = errors(&format!("{GOOD}\n[fleet]\nendpoints = [\"x\"]\nprefix = \"duet/\"\n"));
        assert_eq!(
            e,
            [
                "fleet.endpoints[0]: \"x\" is not host:port, e.g. \"198.18.0.21:2379\"",
                "fleet.tls_ca: missing: the fleet talks TLS to etcd; give the CA of the etcd members' certificates (or \
                 set fleet.insecure_plaintext = true in a test setup)",
                "fleet.prefix: \"duet/\" must start with '/', not end with one and hold no spaces, e.g. \"/duet\" or \
                 \"/fleets/eu\"",
                "unit.pair: missing: a unit in a fleet names its pair (the same on both units, e.g. pair = \"edge-fra-1\"); \
                 its keys are <prefix>/pairs/<pair>/",
            ]
        );
        let e = errors(&format!("{paired}\n[configsync]\nstore = \"remote\"\n"));
        assert!(
            e[0].starts_with("configsync.store: unknown variant: found `remote`") && e[0].contains("`local` or `etcd`"),
            "{e:?}"
        );
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

#[cfg(test)]
mod telemetry_tests {
    use super::tests::{GOOD, errors};

    #[test]
    fn an_https_collector_needs_its_ca_and_a_certificate_its_key() {
        let e = errors(&format!(
            "{GOOD}\n[telemetry]\notlp_endpoint = \"https://198.18.0.100:4317\"\notlp_cert = \"/c.pem\"\n"
        ))
        .join("\n");
        assert!(e.contains("telemetry.otlp_ca: an https:// collector needs the CA"), "{e}");
        assert!(e.contains("telemetry.otlp_key: otlp_cert and otlp_key go together"), "{e}");
        let e = errors(&format!(
            "{GOOD}\n[telemetry]\notlp_endpoint = \"http://198.18.0.100:4317\"\notlp_ca = \"/ca.pem\"\n"
        ))
        .join("\n");
        assert!(e.contains("telemetry.otlp_endpoint: otlp_ca and otlp_cert are for a TLS collector"), "{e}");
        let ok = format!(
            "{GOOD}\n[telemetry]\notlp_endpoint = \"https://collector:4317\"\notlp_ca = \"/ca.pem\"\n\
             otlp_cert = \"/c.pem\"\notlp_key = \"/c.key\"\n"
        );
        assert!(errors(&ok).is_empty(), "{:?}", errors(&ok));
    }
}
