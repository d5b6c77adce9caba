//! What the configsync service runs with, resolved from `[configsync]`
//! and the interfaces. Kept apart from [`UnitConfig::validate`] so that a
//! unit without configsync (or not yet given certificates) still starts its
//! other services; configsync itself refuses to start with these errors.

use std::net::{SocketAddr, SocketAddrV4};
use std::path::PathBuf;
use std::time::Duration;

use duet_carp::HaMode;

use crate::validate::{FieldError, Validated};

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
    pub fn configsync(&self) -> Result<ConfigSync, Vec<FieldError>> {
        let c = &self.raw.configsync;
        let mut errs = Vec::new();
        let mut err = |field: &str, message: String| errs.push(FieldError { field: field.into(), message });
        let listen = c.listen.parse().unwrap_or_else(|_| {
            err("configsync.listen", format!("\"{}\" is not an address:port, e.g. \"127.0.0.1:7872\"", c.listen));
            SocketAddr::from(([127, 0, 0, 1], 0))
        });
        if !(2..=1000).contains(&c.keep_generations) {
            err(
                "configsync.keep_generations",
                format!("{} is out of range: keep 2-1000 generations", c.keep_generations),
            );
        }
        if !(5..=3600).contains(&c.sync_interval_s) {
            err("configsync.sync_interval_s", format!("{} is out of range: use 5-3600 seconds", c.sync_interval_s));
        }
        if !(100..=60_000).contains(&c.push_timeout_ms) {
            err("configsync.push_timeout_ms", format!("{} is out of range: use 100-60000 ms", c.push_timeout_ms));
        }
        let mut peer = None;
        if self.election.mode != HaMode::NonHa {
            let ifaces = &self.election.interfaces;
            let iface = match &c.update_interface {
                Some(n) => ifaces.iter().find(|i| &i.name == n).or_else(|| {
                    err("configsync.update_interface", format!("\"{n}\" is not one of the unit's interfaces"));
                    None
                }),
                None => ifaces.first(),
            };
            let name = c.partner_name.clone().unwrap_or_default();
            if name.is_empty() {
                err(
                    "configsync.partner_name",
                    "missing: the name the partner's certificate is issued to (its unit.name)".into(),
                );
            }
            let need = |f: &str, v: &Option<PathBuf>, errs: &mut Vec<FieldError>| {
                v.clone().unwrap_or_else(|| {
                    errs.push(FieldError {
                        field: format!("configsync.{f}"),
                        message: "missing: the peer link needs mutual TLS (make a test pair with `duetctl certs`)"
                            .into(),
                    });
                    PathBuf::new()
                })
            };
            let ca = need("tls_ca", &c.tls_ca, &mut errs);
            let cert = need("tls_cert", &c.tls_cert, &mut errs);
            let key = need("tls_key", &c.tls_key, &mut errs);
            if let Some(i) = iface
                && let Some(p) = i.partner_addr
            {
                peer = Some(PeerLink {
                    interface: i.name.clone(),
                    listen: SocketAddr::V4(SocketAddrV4::new(i.unit_addr, c.peer_port)),
                    partner: SocketAddr::V4(SocketAddrV4::new(p, c.peer_port)),
                    partner_name: name,
                    tls_ca: ca,
                    tls_cert: cert,
                    tls_key: key,
                });
            }
        }
        if !errs.is_empty() {
            return Err(errs);
        }
        Ok(ConfigSync {
            listen,
            store_dir: c.store_dir.clone().unwrap_or_else(|| self.state_dir.join("config")),
            keep_generations: c.keep_generations,
            sync_interval: Duration::from_secs(c.sync_interval_s),
            push_timeout: Duration::from_millis(c.push_timeout_ms),
            peer,
        })
    }
}
