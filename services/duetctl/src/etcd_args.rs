//! The options that point `duetctl` at a fleet's etcd (O7) instead of the
//! unit it runs on: `--etcd`, its TLS, `--fleet-prefix` and `--pair`,
//! resolved into [`duet_fleet::Settings`]. Every problem names its flag,
//! what is allowed and the fix; all are reported at once.

use std::path::{Path, PathBuf};
use std::time::Duration;

use duet_fleet::Settings;
use duet_witness::TlsPems;

/// Bound on each call to etcd.
pub const OP_TIMEOUT: Duration = Duration::from_secs(2);

/// The global options for a fleet in etcd.
#[derive(Debug, Clone, Default, clap::Args)]
pub struct EtcdArgs {
    /// A fleet's etcd members, comma-separated `host:port` or
    /// `https://host:port`: `fleet status` and `--pair NAME config ...`
    /// then read and write there instead of on a unit (no unit file needed).
    #[arg(long, global = true, env = "DUET_ETCD", value_name = "ENDPOINTS")]
    pub etcd: Option<String>,
    /// The CA of the etcd members' certificates (PEM).
    #[arg(long, global = true, env = "DUET_ETCD_CA", value_name = "PEM")]
    pub etcd_ca: Option<PathBuf>,
    /// This client's certificate for etcd (PEM; its common name is the etcd user).
    #[arg(long, global = true, env = "DUET_ETCD_CERT", value_name = "PEM")]
    pub etcd_cert: Option<PathBuf>,
    /// The key of --etcd-cert (PEM).
    #[arg(long, global = true, env = "DUET_ETCD_KEY", value_name = "PEM")]
    pub etcd_key: Option<PathBuf>,
    /// Talk to etcd without TLS (http://): a test setup only.
    #[arg(long, global = true)]
    pub etcd_plaintext: bool,
    /// The fleet's key prefix: its pairs' keys are under <PREFIX>/pairs/.
    #[arg(long, global = true, env = "DUET_FLEET_PREFIX", value_name = "PREFIX", default_value = duet_config::DEFAULT_FLEET_PREFIX)]
    pub fleet_prefix: String,
    /// The pair in the fleet (its units' `unit.pair`): `config` then works
    /// on its image in etcd; `fleet status` shows it alone.
    #[arg(long, global = true, value_name = "NAME")]
    pub pair: Option<String>,
}

/// An example of `--etcd`, for the messages.
const EXAMPLE: &str = "--etcd 198.18.0.21:2379,198.18.0.22:2379,198.18.0.23:2379";

impl EtcdArgs {
    /// Whether `--etcd` (or `DUET_ETCD`) was given, not blank.
    pub fn given(&self) -> bool {
        self.etcd.as_deref().is_some_and(|e| !e.trim().is_empty())
    }

    /// The pair named by `--pair`, checked.
    pub fn pair(&self) -> anyhow::Result<Option<&str>> {
        match self.pair.as_deref() {
            None => Ok(None),
            Some(p) if duet_config::valid_pair_name(p) => Ok(Some(p)),
            Some(p) => anyhow::bail!(
                "--pair \"{p}\" is not a pair's name: use 1-64 letters, digits, '.', '_' or '-', as in its units' \
                 unit.pair (`duetctl --etcd ... fleet status` lists the fleet's pairs)"
            ),
        }
    }

    /// The connection settings (`None` without `--etcd`), with the PEM
    /// files read, or every problem with the flags.
    pub fn settings(&self) -> anyhow::Result<Option<Settings>> {
        if !self.given() {
            return Ok(None);
        }
        let mut problems = Vec::new();
        let endpoints = self.endpoints(&mut problems);
        if let Err(why) = duet_config::check_fleet_prefix(&self.fleet_prefix) {
            problems.push(format!("--fleet-prefix: {why} (the units' fleet.prefix; default /duet)"));
        }
        let tls = self.tls(&mut problems);
        if !problems.is_empty() {
            anyhow::bail!("{}", problems.join("\n"));
        }
        Ok(Some(Settings { endpoints, tls, prefix: self.fleet_prefix.clone(), op_timeout: OP_TIMEOUT }))
    }

    /// The endpoints as URLs (`https://host:port`, `http://` with
    /// `--etcd-plaintext`).
    fn endpoints(&self, problems: &mut Vec<String>) -> Vec<String> {
        let mut out = Vec::new();
        for e in self.etcd.as_deref().unwrap_or("").split(',').map(str::trim) {
            if e.is_empty() {
                problems.push(format!(
                    "--etcd: an empty endpoint: give the etcd members as host:port, comma-separated, e.g. {EXAMPLE}"
                ));
                continue;
            }
            match duet_config::etcd_endpoint_url(e, self.etcd_plaintext) {
                Ok(url) => out.push(url),
                Err(duet_config::EndpointProblem::WrongScheme) if self.etcd_plaintext => {
                    problems.push(format!("--etcd: \"{e}\": --etcd-plaintext is set: use http:// or no scheme"));
                }
                Err(duet_config::EndpointProblem::WrongScheme) => problems.push(format!(
                    "--etcd: \"{e}\": duetctl talks TLS to etcd: use https:// or no scheme (or add --etcd-plaintext \
                     in a test setup)"
                )),
                Err(duet_config::EndpointProblem::NotHostPort) => {
                    problems.push(format!("--etcd: \"{e}\" is not host:port, e.g. {EXAMPLE}"));
                }
            }
        }
        out
    }

    /// The TLS material, read (`None` with `--etcd-plaintext`).
    fn tls(&self, problems: &mut Vec<String>) -> Option<TlsPems> {
        let files = [("--etcd-ca", &self.etcd_ca), ("--etcd-cert", &self.etcd_cert), ("--etcd-key", &self.etcd_key)];
        if self.etcd_plaintext {
            for (flag, v) in files {
                if v.is_some() {
                    problems.push(format!(
                        "{flag} and --etcd-plaintext exclude each other: drop --etcd-plaintext to talk TLS, or {flag} \
                         (and its DUET_ETCD_* variable)"
                    ));
                }
            }
            return None;
        }
        if self.etcd_ca.is_none() {
            problems.push(
                "--etcd-ca: missing: duetctl talks TLS to etcd; give the CA of the etcd members' certificates \
                 (--etcd-ca ca.pem, or DUET_ETCD_CA), with --etcd-cert and --etcd-key when etcd asks for a client \
                 certificate (or add --etcd-plaintext in a test setup)"
                    .to_owned(),
            );
        }
        let ca = self.etcd_ca.as_deref().map(|ca| read_pem("--etcd-ca", ca, problems));
        let identity = match (&self.etcd_cert, &self.etcd_key) {
            (Some(c), Some(k)) => Some((read_pem("--etcd-cert", c, problems), read_pem("--etcd-key", k, problems))),
            (None, None) => None,
            (Some(_), None) => {
                problems.push(
                    "--etcd-key: missing: --etcd-cert is set; give both (a client certificate and its key) or neither"
                        .to_owned(),
                );
                None
            }
            (None, Some(_)) => {
                problems.push(
                    "--etcd-cert: missing: --etcd-key is set; give both (a client certificate and its key) or neither"
                        .to_owned(),
                );
                None
            }
        };
        ca.map(|ca| TlsPems { ca, identity })
    }
}

/// The PEM file `path` given to `flag`, or a problem.
fn read_pem(flag: &str, path: &Path, problems: &mut Vec<String>) -> Vec<u8> {
    match std::fs::read(path) {
        Ok(b) if b.windows(11).any(|w| w == b"-----BEGIN ") => b,
        Ok(_) => {
            problems.push(format!("{flag} {}: not a PEM file (no \"-----BEGIN \" line)", path.display()));
            Vec::new()
        }
        Err(e) => {
            problems.push(format!("{flag} {}: cannot be read: {e}", path.display()));
            Vec::new()
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn args(etcd: &str) -> EtcdArgs {
        EtcdArgs { etcd: Some(etcd.into()), fleet_prefix: "/duet".into(), ..EtcdArgs::default() }
    }

    fn err(a: &EtcdArgs) -> String {
        a.settings().unwrap_err().to_string()
    }

    fn pem(dir: &Path, name: &str) -> PathBuf {
        let p = dir.join(name);
        std::fs::write(&p, "-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n").unwrap();
        p
    }

    #[test]
    fn without_etcd_there_is_nothing_to_resolve() {
        assert!(EtcdArgs::default().settings().unwrap().is_none());
        assert!(args("  ").settings().unwrap().is_none(), "a blank DUET_ETCD is none");
    }

    #[test]
    fn endpoints_become_urls_and_pems_are_read() {
        let d = tempfile::tempdir().unwrap();
        let mut a = args("198.18.0.21:2379, https://198.18.0.22:2379/");
        a.etcd_ca = Some(pem(d.path(), "ca.pem"));
        a.etcd_cert = Some(pem(d.path(), "ops.pem"));
        a.etcd_key = Some(pem(d.path(), "ops.key"));
        let s = a.settings().unwrap().unwrap();
        assert_eq!(s.endpoints, ["https://198.18.0.21:2379", "https://198.18.0.22:2379"]);
        assert!(s.tls.as_ref().unwrap().identity.is_some());
        assert_eq!((s.prefix.as_str(), s.op_timeout), ("/duet", OP_TIMEOUT));

        let mut p = args("http://198.18.0.21:2379,198.18.0.22:2379");
        p.etcd_plaintext = true;
        let s = p.settings().unwrap().unwrap();
        assert_eq!(s.endpoints, ["http://198.18.0.21:2379", "http://198.18.0.22:2379"]);
        assert!(s.tls.is_none());
    }

    #[test]
    fn every_bad_flag_is_named_with_its_fix() {
        let e = err(&args("198.18.0.21:2379"));
        assert!(e.starts_with("--etcd-ca: missing") && e.contains("--etcd-plaintext"), "{e}");
        let mut k = args("198.18.0.21:2379");
        k.etcd_key = Some("ops.key".into());
        let e = err(&k);
        assert_eq!(e.lines().count(), 2, "{e}");
        assert!(e.lines().nth(1).unwrap().starts_with("--etcd-cert: missing: --etcd-key is set"), "{e}");

        let d = tempfile::tempdir().unwrap();
        let mut a = args("http://198.18.0.21:2379,lb1,");
        a.etcd_ca = Some(d.path().join("nowhere.pem"));
        a.etcd_cert = Some(pem(d.path(), "ops.pem"));
        a.fleet_prefix = "duet/".into();
        let e = err(&a);
        let lines: Vec<&str> = e.lines().collect();
        assert_eq!(lines.len(), 6, "{e}");
        assert!(lines[0].starts_with("--etcd: \"http://198.18.0.21:2379\": duetctl talks TLS"), "{e}");
        assert!(lines[1].starts_with("--etcd: \"lb1\" is not host:port, e.g. --etcd 198.18.0.21:2379,"), "{e}");
        assert!(lines[2].starts_with("--etcd: an empty endpoint"), "{e}");
        assert!(lines[3].starts_with("--fleet-prefix: \"duet/\" must start with '/'"), "{e}");
        assert!(lines[4].starts_with("--etcd-ca ") && lines[4].contains("cannot be read"), "{e}");
        assert!(lines[5].starts_with("--etcd-key: missing: --etcd-cert is set"), "{e}");

        let mut p = args("https://198.18.0.21:2379");
        p.etcd_plaintext = true;
        p.etcd_ca = Some(pem(d.path(), "ca.pem"));
        let e = err(&p);
        assert!(e.contains("use http:// or no scheme"), "{e}");
        assert!(e.contains("--etcd-ca and --etcd-plaintext exclude each other"), "{e}");

        let mut n = args("198.18.0.21:2379");
        let junk = d.path().join("junk.pem");
        std::fs::write(&junk, "not a certificate").unwrap();
        n.etcd_ca = Some(junk);
        assert!(err(&n).contains("not a PEM file"));
    }

    #[test]
    fn a_pair_is_named_as_in_the_unit_file() {
        let mut a = args("198.18.0.21:2379");
        assert_eq!(a.pair().unwrap(), None);
        a.pair = Some("edge-fra-1".into());
        assert_eq!(a.pair().unwrap(), Some("edge-fra-1"));
        a.pair = Some("edge/a".into());
        let e = a.pair().unwrap_err().to_string();
        assert!(e.starts_with("--pair \"edge/a\" is not a pair's name"), "{e}");
    }
}
