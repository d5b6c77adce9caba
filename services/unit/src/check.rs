//! What `duet check` and `duet unit` look at before anything runs: the
//! file (already validated), each enabled service's section whole, the
//! peer link's certificates as the partner will see them, and the
//! capabilities the services need. `duet check` prints every finding at
//! once; `duet unit` refuses to start on any problem (one run of the unit
//! is either all of it or nothing).

use duet_config::Validated;
use duet_runtime::caps::{self, Cap};
use duet_runtime::service::Service;
use duet_runtime::tls::PeerTls;

/// Everything found, and the services the unit would run.
#[derive(Debug, Default)]
pub struct Findings {
    /// What stops the unit (each names its setting and the fix).
    pub problems: Vec<String>,
    /// What it runs with, but should be said.
    pub warnings: Vec<String>,
    /// The services it would run, in order.
    pub services: Vec<&'static str>,
}

/// Checks `cfg` as the unit would run it, with this process's capability
/// set `eff` (`None`: unknown, not checked).
pub fn findings(cfg: &Validated, eff: Option<u64>) -> Findings {
    let mut f = Findings { warnings: cfg.warnings.clone(), ..Findings::default() };
    f.services = vec!["election", "takeover"];
    let mut needed = always_needed();
    let c = &cfg.raw.configsync;
    let ha = cfg.election.mode != duet_carp::HaMode::NonHa;
    let untouched = c.partner_name.is_none() && c.tls_ca.is_none() && c.tls_cert.is_none() && c.tls_key.is_none();
    let configsync = if !c.enabled {
        false
    } else if ha && untouched {
        f.warnings.push(
            "configsync is not configured (no [configsync] partner_name, tls_ca, tls_cert, tls_key): the unit runs \
             without it, so the pair's configuration is not synced and the replicator does not run; configure it, or \
             set configsync.enabled = false to say so"
                .into(),
        );
        false
    } else {
        match cfg.configsync() {
            Ok(cs) => {
                if let Some(link) = &cs.peer {
                    match PeerTls::for_link(link) {
                        Ok(tls) => f.problems.extend(tls.verify(&cfg.raw.unit.name, "configsync")),
                        Err(e) => f.problems.push(e.to_string()),
                    }
                }
                true
            }
            Err(p) => {
                f.problems.extend(p.iter().map(ToString::to_string));
                false
            }
        }
    };
    if configsync {
        f.services.push("configsync");
    }
    if cfg.raw.replicator.enabled {
        if c.enabled && ha && untouched {
            // Said above: the replicator's link is configsync's.
        } else {
            match cfg.replicator() {
                Ok(_) => {
                    f.services.push("replicator");
                    needed.extend(duet_replicator::Replicator::CAPABILITIES);
                }
                Err(p) => f.problems.extend(p.iter().map(ToString::to_string)),
            }
        }
    }
    f.problems.extend(lacking(eff, &needed));
    f
}

/// What can be checked of a file that does not validate (so that `duet
/// check` still reports everything in one run): the peer link's
/// certificates as named in `[configsync]`, and the capabilities the two
/// services every unit runs need.
pub fn unvalidated_findings(raw: &duet_config::UnitConfig, eff: Option<u64>) -> Vec<String> {
    let mut problems = Vec::new();
    let c = &raw.configsync;
    if let (true, Some(partner), Some(ca), Some(cert), Some(key)) =
        (c.enabled, &c.partner_name, &c.tls_ca, &c.tls_cert, &c.tls_key)
    {
        let files = duet_runtime::tls::TlsFiles { ca: ca.clone(), cert: cert.clone(), key: key.clone() };
        match PeerTls::load(&files, partner, "configsync") {
            Ok(tls) => problems.extend(tls.verify(&raw.unit.name, "configsync")),
            Err(e) => problems.push(e.to_string()),
        }
    }
    problems.extend(lacking(eff, &always_needed()));
    problems
}

/// The capabilities of the two services every unit runs.
fn always_needed() -> Vec<Cap> {
    [duet_election::Election::CAPABILITIES, duet_takeover::Takeover::CAPABILITIES].concat()
}

/// The problem of lacking some of `needed` with the effective set `eff`
/// (`None`: unknown, not checked).
fn lacking(eff: Option<u64>, needed: &[Cap]) -> Option<String> {
    let lacking = caps::lacking(eff?, needed);
    (!lacking.is_empty()).then(|| caps::explain("this unit", &lacking))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cfg(extra: &str) -> Validated {
        let text = format!(
            "[unit]\nname = \"lb1\"\nmode = \"first\"\n\n[ha]\npassword = \"secret\"\n\n[[interface]]\nname = \"eth0\"\nunit1 = \"198.18.0.1/24\"\nunit2 = \"198.18.0.2/24\"\nshared = \"198.18.0.10/24\"\n\n{extra}"
        );
        duet_config::from_toml(&text).expect("valid unit file")
    }

    #[test]
    fn an_untouched_configsync_is_a_warning_a_half_one_a_problem() {
        let f = findings(&cfg(""), Some(u64::MAX));
        assert!(f.problems.is_empty(), "{:?}", f.problems);
        assert!(f.warnings.iter().any(|w| w.starts_with("configsync is not configured")), "{:?}", f.warnings);
        assert_eq!(f.services, vec!["election", "takeover"]);

        let f =
            findings(&cfg("[configsync]\npartner_name = \"lb2\"\n\n[replicator]\nenabled = true\n"), Some(u64::MAX));
        for field in ["configsync.tls_ca", "configsync.tls_cert", "configsync.tls_key"] {
            assert!(f.problems.iter().any(|p| p.starts_with(field)), "{field}: {:?}", f.problems);
        }
    }

    #[test]
    fn missing_capabilities_are_one_problem_naming_them_all() {
        let f = findings(&cfg("[configsync]\nenabled = false\n"), Some(0));
        assert_eq!(f.problems.len(), 1, "{:?}", f.problems);
        assert!(f.problems[0].contains("CAP_NET_ADMIN and CAP_NET_RAW"), "{:?}", f.problems);
    }
}
