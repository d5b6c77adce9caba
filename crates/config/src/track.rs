//! Tracked checks (E16): what the unit watches of the load balancer it
//! fronts, keepalived's `vrrp_script` / `track_process` /
//! `track_interface` / `track_file` in one section.
//!
//! ```toml
//! [[track]]
//! name = "haproxy"
//! kind = "process"              # process | command | tcp | http | interface | file | dataplane
//! pidfile = "/run/haproxy.pid"  # process: `pidfile`, or `process` (a name)
//! interval_ms = 1000            # how often it is looked at
//! fall = 2                      # failures in a row before it counts as failing
//! rise = 2                      # successes in a row before it passes again
//! # demote = true               # default: a failing check hands the role over
//! # weight = 50                 # instead: the unit's penalty while it fails
//!
//! [[track]]
//! name = "lb-script"
//! kind = "command"
//! command = ["/usr/local/bin/check-lb", "--quick"]
//! user = "nobody"               # never root (default: nobody when duet is root)
//! timeout_ms = 500              # killed after this (with what it started)
//!
//! [[track]]
//! name = "vip-http"
//! kind = "http"
//! address = "127.0.0.1:80"      # tcp and http: a local address:port
//! path = "/health"              # http: GET this; expect_status (default 200), expect_body (a substring)
//!
//! [[track]]
//! name = "uplink"
//! kind = "interface"
//! interface = "eth1"            # passes with the link up and carrier (and `has_address`, if given)
//!
//! [[track]]
//! name = "maintenance"
//! kind = "file"
//! file = "/run/lb/health"       # a number written by another tool: 0 passes, anything else fails
//!
//! [[track]]
//! name = "rules"
//! kind = "dataplane"            # duet's own nftables table is in place
//! ```
//!
//! Each entry is checked here whole (every problem at once, by key); what
//! the election core needs of it is [`Track::params`], the one conversion.

use std::net::{Ipv4Addr, SocketAddr};
use std::path::PathBuf;
use std::time::Duration;

use duet_carp::{Effect, TrackParams};
use serde::{Deserialize, Serialize};

use crate::problems::Problems;

/// The kinds, as the file names them.
pub const KINDS: &[&str] = &["process", "command", "tcp", "http", "interface", "file", "dataplane"];

/// One `[[track]]` entry as written.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TrackSection {
    pub name: String,
    pub kind: String,
    #[serde(default)]
    pub process: Option<String>,
    #[serde(default)]
    pub pidfile: Option<PathBuf>,
    #[serde(default)]
    pub command: Option<Vec<String>>,
    #[serde(default)]
    pub user: Option<String>,
    #[serde(default)]
    pub address: Option<String>,
    #[serde(default)]
    pub path: Option<String>,
    #[serde(default)]
    pub expect_status: Option<u16>,
    #[serde(default)]
    pub expect_body: Option<String>,
    #[serde(default)]
    pub interface: Option<String>,
    #[serde(default)]
    pub has_address: Option<Ipv4Addr>,
    #[serde(default)]
    pub file: Option<PathBuf>,
    #[serde(default = "default_interval")]
    pub interval_ms: u64,
    /// Default: the interval.
    #[serde(default)]
    pub timeout_ms: Option<u64>,
    #[serde(default = "default_hysteresis")]
    pub fall: u32,
    #[serde(default = "default_hysteresis")]
    pub rise: u32,
    #[serde(default)]
    pub demote: Option<bool>,
    #[serde(default)]
    pub weight: Option<i64>,
}

fn default_interval() -> u64 {
    1000
}

fn default_hysteresis() -> u32 {
    2
}

/// How a process is found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ProcessBy {
    /// Its name (`/proc/<pid>/comm`, or the base name of its program).
    Name(String),
    /// The pid in this file.
    Pidfile(PathBuf),
}

/// Who runs a command check.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RunAs {
    pub name: String,
    pub uid: u32,
    pub gid: u32,
}

/// What a check looks at.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Probe {
    Process(ProcessBy),
    /// Program and arguments; passes when it exits 0.
    Command {
        argv: Vec<String>,
        run_as: RunAs,
    },
    /// Passes when a TCP connection is accepted.
    Tcp(SocketAddr),
    /// Passes when `GET path` answers `expect_status` (and its body holds
    /// `expect_body`).
    Http {
        address: SocketAddr,
        path: String,
        expect_status: u16,
        expect_body: Option<String>,
    },
    /// Passes with the link up and carrier, and the address present if given.
    Interface {
        name: String,
        has_address: Option<Ipv4Addr>,
    },
    /// Passes when the file holds the number 0.
    File(PathBuf),
    /// Passes while duet's nftables table is in place.
    Dataplane,
}

impl Probe {
    /// The kind's word.
    pub fn kind(&self) -> &'static str {
        match self {
            Self::Process(_) => "process",
            Self::Command { .. } => "command",
            Self::Tcp(_) => "tcp",
            Self::Http { .. } => "http",
            Self::Interface { .. } => "interface",
            Self::File(_) => "file",
            Self::Dataplane => "dataplane",
        }
    }
}

/// One check, checked.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Track {
    pub name: String,
    pub probe: Probe,
    pub interval: Duration,
    pub timeout: Duration,
    pub fall: u32,
    pub rise: u32,
    pub effect: Effect,
}

impl Track {
    /// What the election core knows of the check.
    pub fn params(&self) -> TrackParams {
        TrackParams { name: self.name.clone(), fall: self.fall, rise: self.rise, effect: self.effect }
    }
}

/// The keys each kind takes besides the common ones.
fn kind_keys(kind: &str) -> &'static [&'static str] {
    match kind {
        "process" => &["process", "pidfile"],
        "command" => &["command", "user"],
        "tcp" => &["address"],
        "http" => &["address", "path", "expect_status", "expect_body"],
        "interface" => &["interface", "has_address"],
        "file" => &["file"],
        _ => &[],
    }
}

/// Checks every `[[track]]` entry: names unique and usable, one kind with
/// its own keys only, ranges, programs that can run, users that exist and
/// are not root. Problems are keyed `track[N].<key>`.
pub(crate) fn resolve(sections: &[TrackSection], e: &mut Problems) -> Vec<Track> {
    let mut out = Vec::new();
    for (n, t) in sections.iter().enumerate() {
        let at = |k: &str| format!("track[{n}].{k}");
        let before = e.0.len();
        if !crate::witness::valid_pair_name(&t.name) {
            e.add(
                at("name"),
                format!("\"{}\" is not a usable check name: use 1-64 letters, digits, '.', '_' or '-'", t.name),
            );
        } else if sections[..n].iter().any(|o| o.name == t.name) {
            e.add(at("name"), format!("\"{}\" names two checks: give each [[track]] its own name", t.name));
        }
        e.in_range(&at("interval_ms"), t.interval_ms, 100..=3_600_000, "ms");
        let timeout = t.timeout_ms.unwrap_or(t.interval_ms);
        e.in_range(&at("timeout_ms"), timeout, 10..=3_600_000, "ms");
        if timeout > t.interval_ms {
            e.add(
                at("timeout_ms"),
                format!(
                    "{timeout} ms is longer than interval_ms ({} ms): one run at a time, so lower timeout_ms or raise interval_ms",
                    t.interval_ms
                ),
            );
        }
        e.in_range(&at("fall"), t.fall, 1..=100, "results");
        e.in_range(&at("rise"), t.rise, 1..=100, "results");
        let effect = match (t.demote, t.weight) {
            (Some(true), Some(_)) => {
                e.add(at("weight"), "a check either demotes the unit or weighs on it: remove demote or weight");
                Effect::Demote
            }
            (_, Some(w)) if w < 0 => {
                e.add(
                    at("weight"),
                    format!("{w}: weights here are what a failing check costs the unit; write weight = {}", -w),
                );
                Effect::Demote
            }
            (_, Some(w)) => match u8::try_from(w).ok().filter(|w| (1..=254).contains(w)) {
                Some(w) => Effect::Weight(w),
                None => {
                    e.add(at("weight"), format!("{w} is out of range: use 1-254"));
                    Effect::Demote
                }
            },
            (Some(false), None) => {
                e.add(
                    at("demote"),
                    "a check that neither demotes nor weighs does nothing: set demote = true or a weight",
                );
                Effect::Demote
            }
            (_, None) => Effect::Demote,
        };
        // Keys of another kind are mistakes (a pidfile on a tcp check...).
        let given: [(&str, bool); 11] = [
            ("process", t.process.is_some()),
            ("pidfile", t.pidfile.is_some()),
            ("command", t.command.is_some()),
            ("user", t.user.is_some()),
            ("address", t.address.is_some()),
            ("path", t.path.is_some()),
            ("expect_status", t.expect_status.is_some()),
            ("expect_body", t.expect_body.is_some()),
            ("interface", t.interface.is_some()),
            ("has_address", t.has_address.is_some()),
            ("file", t.file.is_some()),
        ];
        if KINDS.contains(&t.kind.as_str()) {
            for (k, _) in given.iter().filter(|(k, set)| *set && !kind_keys(&t.kind).contains(k)) {
                let takes: Vec<String> = kind_keys(&t.kind).iter().map(|k| format!("`{k}`")).collect();
                e.add(at(k), format!("not a key of a {} check (it takes {})", t.kind, takes.join(", ")));
            }
        }
        let probe = probe(t, &at, e);
        if e.0.len() == before
            && let Some(probe) = probe
        {
            out.push(Track {
                name: t.name.clone(),
                probe,
                interval: Duration::from_millis(t.interval_ms),
                timeout: Duration::from_millis(timeout),
                fall: t.fall,
                rise: t.rise,
                effect,
            });
        }
    }
    out
}

/// The probe of one entry, or its problems.
fn probe(t: &TrackSection, at: &dyn Fn(&str) -> String, e: &mut Problems) -> Option<Probe> {
    let address = |e: &mut Problems| -> Option<SocketAddr> {
        let Some(a) = &t.address else {
            e.add(at("address"), format!("a {} check needs an address:port, e.g. \"127.0.0.1:80\"", t.kind));
            return None;
        };
        a.parse()
            .map_err(|_| e.add(at("address"), format!("\"{a}\" is not an address:port, e.g. \"127.0.0.1:80\"")))
            .ok()
    };
    match t.kind.as_str() {
        "process" => match (&t.process, &t.pidfile) {
            (Some(name), None) if !name.is_empty() && !name.contains('/') => {
                Some(Probe::Process(ProcessBy::Name(name.clone())))
            }
            (Some(name), None) => {
                e.add(
                    at("process"),
                    format!("\"{name}\" is not a process name: give the program's name, or use pidfile"),
                );
                None
            }
            (None, Some(p)) if p.is_absolute() => Some(Probe::Process(ProcessBy::Pidfile(p.clone()))),
            (None, Some(p)) => {
                e.add(at("pidfile"), format!("\"{}\" is not an absolute path", p.display()));
                None
            }
            _ => {
                e.add(at("process"), "a process check needs either process (a name) or pidfile, not both");
                None
            }
        },
        "command" => {
            let Some(argv) = t.command.as_ref().filter(|c| !c.is_empty()) else {
                e.add(at("command"), "a command check needs command = [\"/path/to/program\", \"arg\", ...]");
                return None;
            };
            if let Err(why) = crate::hooks::executable(&argv[0]) {
                e.add(at("command[0]"), why);
                return None;
            }
            let run_as = run_as(t.user.as_deref(), &at, e)?;
            Some(Probe::Command { argv: argv.clone(), run_as })
        }
        "tcp" => address(e).map(Probe::Tcp),
        "http" => {
            let a = address(e);
            let path = t.path.clone().unwrap_or_else(|| "/".into());
            if !path.starts_with('/') || path.chars().any(|c| c.is_whitespace() || c.is_control()) {
                e.add(at("path"), format!("\"{path}\" is not a request path: start it with '/', no spaces"));
            }
            let expect_status = t.expect_status.unwrap_or(200);
            e.in_range(&at("expect_status"), expect_status, 100..=599, "(an HTTP status)");
            Some(Probe::Http { address: a?, path, expect_status, expect_body: t.expect_body.clone() })
        }
        "interface" => match &t.interface {
            Some(i) if !i.is_empty() && i.len() <= 15 && !i.contains('/') => {
                Some(Probe::Interface { name: i.clone(), has_address: t.has_address })
            }
            Some(i) => {
                e.add(at("interface"), format!("\"{i}\" is not an interface name (1-15 characters, no '/')"));
                None
            }
            None => {
                e.add(at("interface"), "an interface check needs interface = \"<name>\"");
                None
            }
        },
        "dataplane" => Some(Probe::Dataplane),
        "file" => match &t.file {
            Some(f) if f.is_absolute() => Some(Probe::File(f.clone())),
            Some(f) => {
                e.add(at("file"), format!("\"{}\" is not an absolute path", f.display()));
                None
            }
            None => {
                e.add(at("file"), "a file check needs file = \"/path/to/file\"");
                None
            }
        },
        other => {
            let kinds: Vec<String> = KINDS.iter().map(|k| format!("`{k}`")).collect();
            e.add(at("kind"), format!("unknown kind \"{other}\", expected one of {}", kinds.join(", ")));
            None
        }
    }
}

/// Who runs a command check: the named user, or `nobody` when duet runs
/// as root (and duet's own user otherwise); never root.
fn run_as(user: Option<&str>, at: &dyn Fn(&str) -> String, e: &mut Problems) -> Option<RunAs> {
    let me = nix::unistd::geteuid();
    let name = match user {
        Some(u) => u.to_owned(),
        None if me.is_root() => "nobody".to_owned(),
        None => match nix::unistd::User::from_uid(me) {
            Ok(Some(u)) => u.name,
            _ => me.to_string(),
        },
    };
    match nix::unistd::User::from_name(&name) {
        Ok(Some(u)) if u.uid.is_root() => {
            e.add(at("user"), format!("\"{name}\" is root: checks never run as root; name an unprivileged user"));
            None
        }
        Ok(Some(u)) => Some(RunAs { name, uid: u.uid.as_raw(), gid: u.gid.as_raw() }),
        Ok(None) if user.is_none() && !me.is_root() => {
            // duet's own uid without a name: runs as itself.
            Some(RunAs { name, uid: me.as_raw(), gid: nix::unistd::getegid().as_raw() })
        }
        _ => {
            e.add(at("user"), format!("no user \"{name}\" on this system: create it or name another"));
            None
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn section(kind: &str) -> TrackSection {
        use figment::providers::{Format, Toml};
        figment::Figment::new()
            .merge(Toml::string(&format!("name = \"t\"\nkind = \"{kind}\"")))
            .extract()
            .expect("a bare section parses")
    }

    fn problems(t: &[TrackSection]) -> Vec<String> {
        let mut e = Problems::default();
        resolve(t, &mut e);
        e.0.iter().map(ToString::to_string).collect()
    }

    #[test]
    fn each_kind_resolves_with_its_keys() {
        let mut p = section("process");
        p.pidfile = Some("/run/haproxy.pid".into());
        let mut c = section("command");
        c.command = Some(vec!["/bin/true".into()]);
        c.user = Some("nobody".into());
        let mut h = section("http");
        h.name = "h".into();
        h.address = Some("127.0.0.1:80".into());
        h.weight = Some(30);
        let mut e = Problems::default();
        let tracks = resolve(&[p, c.clone(), h], &mut e);
        let shown: Vec<String> = e.0.iter().map(ToString::to_string).collect();
        // Two entries share the name "t".
        assert_eq!(shown.len(), 1, "{shown:?}");
        assert!(shown[0].contains("track[1].name"), "{shown:?}");
        assert_eq!(tracks.len(), 2);
        assert_eq!(tracks[0].probe, Probe::Process(ProcessBy::Pidfile("/run/haproxy.pid".into())));
        assert_eq!(tracks[0].params(), TrackParams { name: "t".into(), fall: 2, rise: 2, effect: Effect::Demote });
        assert_eq!(tracks[1].effect, Effect::Weight(30));
        assert_eq!(tracks[1].timeout, Duration::from_secs(1));
        match &tracks[1].probe {
            Probe::Http { path, expect_status, .. } => assert_eq!((path.as_str(), *expect_status), ("/", 200)),
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn every_mistake_is_named_by_its_key_with_the_fix() {
        let mut a = section("tcp");
        a.pidfile = Some("/run/x.pid".into());
        a.weight = Some(-20);
        a.timeout_ms = Some(5000);
        let mut b = section("command");
        b.name = "b".into();
        b.command = Some(vec!["/no/such/program".into()]);
        let mut c = section("command");
        c.name = "c".into();
        c.command = Some(vec!["/bin/true".into()]);
        c.user = Some("root".into());
        let mut d = section("ping");
        d.name = "d e".into();
        let shown = problems(&[a, b, c, d]).join("\n");
        for want in [
            "track[0].pidfile: not a key of a tcp check (it takes `address`)",
            "track[0].weight: -20: weights here are what a failing check costs the unit; write weight = 20",
            "track[0].timeout_ms: 5000 ms is longer than interval_ms",
            "track[0].address: a tcp check needs an address:port",
            "track[1].command[0]:",
            "track[2].user: \"root\" is root",
            "track[3].name:",
            "track[3].kind: unknown kind \"ping\", expected one of `process`, `command`",
        ] {
            assert!(shown.contains(want), "missing {want:?} in:\n{shown}");
        }
    }
}

#[cfg(test)]
mod file_tests {
    use crate::validate::tests::{GOOD, errors};

    #[test]
    fn a_unit_file_with_checks_validates_and_parse_mistakes_are_keyed() {
        let good = format!(
            "{GOOD}\n[[track]]\nname = \"haproxy\"\nkind = \"process\"\nprocess = \"haproxy\"\n\n\
             [[track]]\nname = \"uplink\"\nkind = \"interface\"\ninterface = \"eth1\"\nweight = 50\n"
        );
        let v = crate::from_toml(&good).unwrap();
        assert_eq!(v.tracks.len(), 2);
        assert_eq!(v.tracks[1].effect, duet_carp::Effect::Weight(50));
        // A value of the wrong type and an unknown key: both, by key.
        let bad = format!("{GOOD}\n[[track]]\nname = \"x\"\nkind = \"tcp\"\nfall = \"two\"\nintervall_ms = 5\n");
        let e = errors(&bad).join("\n");
        assert!(e.contains("track[0].fall"), "{e}");
        assert!(e.contains("track[0].intervall_ms") || e.contains("intervall_ms"), "{e}");
    }
}
