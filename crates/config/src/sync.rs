//! What the configsync service runs with, resolved from `[configsync]`
//! and the interfaces. Kept apart from [`UnitConfig::validate`] so that a
//! unit without configsync (or not yet given certificates) still starts its
//! other services; configsync itself refuses to start with these errors.

use std::net::{SocketAddr, SocketAddrV4};
use std::path::PathBuf;
use std::time::Duration;

use duet_carp::HaMode;

use duet_model::Problem;

use crate::problems::Problems;
use crate::validate::Validated;

/// The peer link's ends and credentials.
#[derive(Debug, Clone)]
pub struct PeerLink {
    /// The update interface.
    pub interface: String,
    /// This unit's end (its address on the interface, `peer_port`).
    pub listen: SocketAddr,
    /// The partner's end.
    pub partner: SocketAddr,
    /// The name the partner's certificate must carry.
    pub partner_name: String,
    pub tls_ca: PathBuf,
    pub tls_cert: PathBuf,
    pub tls_key: PathBuf,
}

impl Validated {
    /// A peer link (configsync's, or the replicator's on its own port) on
    /// `interface` (the first one when `None`; `interface_field` names the
    /// setting), with `[configsync]`'s partner name and certificates. `None`
    /// in non-HA mode, or when a problem was pushed to `errs`; `who` names
    /// the link in the messages.
    fn peer_link(
        &self,
        interface: Option<&String>,
        interface_field: &str,
        port: u16,
        who: &str,
        errs: &mut Problems,
    ) -> Option<PeerLink> {
        if self.election.mode == HaMode::NonHa {
            return None;
        }
        let c = &self.raw.configsync;
        let ifaces = &self.election.interfaces;
        let iface = match interface {
            Some(n) => ifaces.iter().find(|i| &i.name == n).or_else(|| {
                errs.add(interface_field, format!("\"{n}\" is not one of the unit's interfaces"));
                None
            }),
            None => ifaces.first(),
        };
        let name = c.partner_name.clone().unwrap_or_default();
        if name.is_empty() {
            errs.add(
                "configsync.partner_name",
                format!("missing: {who} needs the name the partner's certificate is issued to (its unit.name)"),
            );
        }
        let mut need = |f: &str, v: &Option<PathBuf>| {
            v.clone().unwrap_or_else(|| {
                errs.add(
                    format!("configsync.{f}"),
                    format!("missing: {who} needs mutual TLS (make a test pair with `duetctl certs`)"),
                );
                PathBuf::new()
            })
        };
        let tls_ca = need("tls_ca", &c.tls_ca);
        let tls_cert = need("tls_cert", &c.tls_cert);
        let tls_key = need("tls_key", &c.tls_key);
        let i = iface?;
        let partner = i.partner_addr?;
        Some(PeerLink {
            interface: i.name.clone(),
            listen: SocketAddr::V4(SocketAddrV4::new(i.unit_addr, port)),
            partner: SocketAddr::V4(SocketAddrV4::new(partner, port)),
            partner_name: name,
            tls_ca,
            tls_cert,
            tls_key,
        })
    }
}

impl Validated {
    /// Where configsync keeps the pair's image (`configsync.store_dir`,
    /// default `<state_dir>/config`).
    pub fn store_dir(&self) -> PathBuf {
        self.raw.configsync.store_dir.clone().unwrap_or_else(|| self.state_dir.join("config"))
    }
}

/// The configsync service's settings.
#[derive(Debug, Clone)]
pub struct ConfigSync {
    pub listen: SocketAddr,
    pub store_dir: PathBuf,
    pub keep_generations: usize,
    pub sync_interval: Duration,
    pub push_timeout: Duration,
    /// `None` in non-HA mode (no partner).
    pub peer: Option<PeerLink>,
}

impl Validated {
    /// Resolves `[configsync]`; every problem names its field.
    pub fn configsync(&self) -> Result<ConfigSync, Vec<Problem>> {
        let c = &self.raw.configsync;
        let mut errs = Problems::default();
        let listen = errs.listen("configsync.listen", &c.listen, 7872);
        if !(2..=1000).contains(&c.keep_generations) {
            errs.add(
                "configsync.keep_generations",
                format!("{} is out of range: keep 2-1000 generations", c.keep_generations),
            );
        }
        errs.in_range("configsync.sync_interval_s", c.sync_interval_s, 5..=3600, "seconds");
        errs.in_range("configsync.push_timeout_ms", c.push_timeout_ms, 100..=60_000, "ms");
        let peer = self.peer_link(
            c.update_interface.as_ref(),
            "configsync.update_interface",
            c.peer_port,
            "the peer link",
            &mut errs,
        );
        errs.or(|| ConfigSync {
            listen,
            store_dir: self.store_dir(),
            keep_generations: c.keep_generations,
            sync_interval: Duration::from_secs(c.sync_interval_s),
            push_timeout: Duration::from_millis(c.push_timeout_ms),
            peer,
        })
    }
}

/// The replicator service's settings (`[replicator]`, its peer link made
/// with configsync's identity and certificates).
#[derive(Debug, Clone)]
pub struct Replicator {
    pub listen: SocketAddr,
    /// `None` in non-HA mode.
    pub peer: Option<PeerLink>,
    pub l4: bool,
    pub l7: bool,
    pub batch_max: usize,
    pub outbox_capacity: usize,
    pub refresh_interval: Duration,
    pub haproxy_socket: Option<PathBuf>,
    pub haproxy_tables: Vec<String>,
    pub haproxy_poll: Duration,
    /// configsync's operator API (the data plane follows its image), when
    /// configsync runs on this unit.
    pub configsync_listen: Option<SocketAddr>,
}

impl Validated {
    /// Resolves `[replicator]`; every problem names its field. The peer
    /// link takes `partner_name` and `tls_*` from `[configsync]`.
    pub fn replicator(&self) -> Result<Replicator, Vec<Problem>> {
        let r = &self.raw.replicator;
        let mut errs = Problems::default();
        let listen = errs.listen("replicator.listen", &r.listen, 7873);
        errs.in_range("replicator.batch_max", r.batch_max, 1..=65_536, "changes per batch");
        errs.in_range("replicator.outbox_capacity", r.outbox_capacity, 1000..=10_000_000, "keys");
        errs.in_range("replicator.refresh_interval_s", r.refresh_interval_s, 1..=3600, "seconds");
        errs.in_range("replicator.haproxy_poll_ms", r.haproxy_poll_ms, 20..=60_000, "ms");
        if r.haproxy_socket.is_some() && r.haproxy_tables.is_empty() {
            errs.add("replicator.haproxy_tables", "empty: name the stick tables to replicate, e.g. [\"web\"]");
        }
        for t in &r.haproxy_tables {
            if t.is_empty() || t.chars().any(|c| c.is_whitespace() || c == ';') {
                errs.add("replicator.haproxy_tables", format!("\"{t}\" is not a stick table name"));
            }
        }
        if r.peer_port == self.raw.configsync.peer_port {
            errs.add(
                "replicator.peer_port",
                format!("{} is configsync's peer port too: choose another (default 6974)", r.peer_port),
            );
        }
        let wanted = r.interface.as_ref().or(self.raw.configsync.update_interface.as_ref());
        let peer = self.peer_link(wanted, "replicator.interface", r.peer_port, "the replicator's peer link", &mut errs);
        let configsync_listen =
            if self.raw.configsync.enabled { self.raw.configsync.listen.parse().ok() } else { None };
        errs.or(|| Replicator {
            listen,
            peer,
            l4: r.l4,
            l7: r.l7,
            batch_max: r.batch_max,
            outbox_capacity: r.outbox_capacity,
            refresh_interval: Duration::from_secs(r.refresh_interval_s),
            haproxy_socket: r.haproxy_socket.clone(),
            haproxy_tables: r.haproxy_tables.clone(),
            haproxy_poll: Duration::from_millis(r.haproxy_poll_ms),
            configsync_listen,
        })
    }
}

#[cfg(test)]
mod tests {
    use crate::from_toml;
    use crate::validate::tests::GOOD;

    /// The unit of the validation tests with a second interface.
    fn unit() -> String {
        format!(
            r#"{GOOD}
[[interface]]
name = "eth1"
unit1 = "198.19.0.1/24"
unit2 = "198.19.0.2/24"
shared = "198.19.0.10/24"
"#
        )
    }

    fn fields(errs: Vec<crate::Problem>) -> Vec<String> {
        errs.into_iter().map(|e| e.field).collect()
    }

    #[test]
    fn both_peer_links_need_the_partners_name_and_certificates() {
        let v = from_toml(&unit()).expect("valid unit");
        let want = ["configsync.partner_name", "configsync.tls_ca", "configsync.tls_cert", "configsync.tls_key"];
        assert_eq!(fields(v.configsync().unwrap_err()), want);
        assert_eq!(fields(v.replicator().unwrap_err()), want);
    }

    #[test]
    fn the_peer_links_share_the_identity_and_differ_in_port_and_interface() {
        let text = format!(
            "{}[configsync]\npartner_name = \"lb2\"\ntls_ca = \"ca.pem\"\ntls_cert = \"lb1.pem\"\ntls_key = \"lb1.key\"\n\
             [replicator]\ninterface = \"eth1\"\n",
            unit()
        );
        let v = from_toml(&text).expect("valid unit");
        let c = v.configsync().expect("configsync").peer.expect("HA: a peer link");
        let r = v.replicator().expect("replicator").peer.expect("HA: a peer link");
        assert_eq!(
            (c.interface.as_str(), c.listen.to_string(), c.partner.to_string()),
            ("eth0", "198.18.0.1:6973".into(), "198.18.0.2:6973".into())
        );
        assert_eq!(
            (r.interface.as_str(), r.listen.to_string(), r.partner.to_string()),
            ("eth1", "198.19.0.1:6974".into(), "198.19.0.2:6974".into())
        );
        assert_eq!((r.partner_name, r.tls_ca, r.tls_key), (c.partner_name, c.tls_ca, c.tls_key));

        let bad = text.replace("interface = \"eth1\"", "interface = \"eth9\"");
        let v = from_toml(&bad).expect("valid unit");
        assert_eq!(fields(v.replicator().unwrap_err()), ["replicator.interface"]);
    }
}
