//! The shape of the unit configuration file, with its defaults.
//!
//! ```toml
//! [unit]
//! name = "lb1"
//! mode = "first"                # non-ha | first | second
//! state_dir = "/var/lib/duet"   # start history, replay windows
//!
//! [ha]
//! password = "s3cret"           # this unit's own: ucarp-compatible, at most 19 bytes
//! timeout_s = 9                 # the pair's (duet_model::HaSettings): 3, 6, 9, 12 or 15
//! preferred = "none"            # none | first | second
//! # vhid = 10                   # default: last octet of the first shared address
//!
//! [[interface]]                 # the pair's (duet_model::Interface), plus `unicast` (this unit's)
//! name = "eth0"
//! unit1 = "198.18.0.1/24"
//! unit2 = "198.18.0.2/24"
//! shared = "198.18.0.10/24"
//! ha_check = true
//!
//! # [witness]                   # this unit's way to the pair's etcd witness (E14); its
//! # endpoints = ["198.18.0.21:2379", "198.18.0.22:2379", "198.18.0.23:2379"]
//! # tls_ca = "/etc/duet/etcd-ca.pem"   # policy and lease TTL are the pair's:
//! # tls_cert = "/etc/duet/lb1-etcd.pem" # ha.witness_policy, ha.witness_lease_ttl_ms
//! # tls_key = "/etc/duet/lb1-etcd.key"
//!
//! # [fleet]                     # O7: the fleet's etcd (needs unit.pair); with
//! # endpoints = ["198.18.0.21:2379"]   # [configsync] store = "etcd" the pair's
//! # tls_ca = "/etc/duet/etcd-ca.pem"   # image lives there, else only the
//! # tls_cert = "/etc/duet/lb1-etcd.pem" # unit's status is published
//! # tls_key = "/etc/duet/lb1-etcd.key"
//! # prefix = "/duet"
//! ```

use std::collections::BTreeMap;
use std::path::PathBuf;

use duet_carp::HaMode;
use figment::value::Value;
use serde::{Deserialize, Serialize};

/// The whole file.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct UnitConfig {
    pub unit: UnitSection,
    #[serde(default)]
    pub ha: HaSection,
    #[serde(default, rename = "interface")]
    pub interfaces: Vec<InterfaceSection>,
    #[serde(default)]
    pub election: ElectionSection,
    #[serde(default)]
    pub takeover: TakeoverSection,
    #[serde(default)]
    pub configsync: ConfigSyncSection,
    #[serde(default)]
    pub replicator: ReplicatorSection,
    #[serde(default)]
    pub supervisor: SupervisorSection,
    #[serde(default)]
    pub telemetry: TelemetrySection,
    /// E14: the witness, when this unit has one.
    #[serde(default)]
    pub witness: Option<WitnessSection>,
    /// O7: the fleet's etcd, when this unit is in one.
    #[serde(default)]
    pub fleet: Option<FleetSection>,
    /// O5: who may call the unit's gRPC APIs.
    #[serde(default)]
    pub admin: crate::AdminSection,
    /// O6: commands run when the role changes.
    #[serde(default)]
    pub hooks: crate::HooksSection,
    /// E16: what the unit watches of its load balancer.
    #[serde(default, rename = "track")]
    pub tracks: Vec<crate::TrackSection>,
}

/// `[unit]`: who this unit is.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct UnitSection {
    /// Operator-chosen name (letters, digits, `.`, `_`, `-`).
    pub name: String,
    pub mode: HaMode,
    /// Where the unit keeps its start history and replay windows.
    #[serde(default)]
    pub state_dir: Option<PathBuf>,
    /// The pair's name (letters, digits, `.`, `_`, `-`), the same on both
    /// units; names the witness's key. Default: `vhid-<vhid>`.
    #[serde(default)]
    pub pair: Option<String>,
}

/// Advert authentication mode.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum AuthMode {
    /// HMAC-SHA1 as ucarp 1.5 (interoperates with ucarp).
    #[default]
    UcarpSha1,
    /// HMAC-SHA256 over the whole advert with a replay window, duet pairs only.
    Sha256,
}

/// What a checked link loss does when hard reboot is on (E8).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum LinkFailureAction {
    /// The unit supervisor restarts all the unit's services.
    #[default]
    RestartServices,
    /// The unit supervisor runs `ha.link_failure_command`.
    Command,
}

/// `[ha]`: the pair's HA settings, read straight into the model, and this
/// unit's own. Once configsync has made the pair's image, the image's HA
/// settings win over `pair` (the election follows the image); `unit` is
/// never synced.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct HaSection {
    /// The pair's settings (E3-E13, S3, R1-R2): every field of the image's `ha`.
    #[serde(flatten)]
    pub pair: duet_model::HaSettings,
    /// This unit's own settings (password, authentication, advskew, E8, E9).
    #[serde(flatten)]
    pub unit: UnitHaSettings,
    /// Keys that are neither (serde's `deny_unknown_fields` does not work
    /// with `flatten`): [`UnitConfig::validate`] reports each one.
    #[serde(flatten)]
    pub unknown: BTreeMap<String, Value>,
}

/// The part of `[ha]` that belongs to this unit only (never synced).
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default)]
pub struct UnitHaSettings {
    /// ucarp-compatible password (at most 19 bytes).
    pub password: Option<String>,
    /// Override of the derived advskew (0-254), e.g. to match a ucarp peer.
    pub advskew: Option<u16>,
    pub link_failure_action: LinkFailureAction,
    /// Command run on a checked link loss when the action is `command`.
    pub link_failure_command: Vec<String>,
    /// More than this many starts within the window pacify the unit (E9).
    pub pacify_max_starts: u32,
    pub pacify_window_s: u64,
    /// How long a planned handover waits for the partner to confirm.
    pub handover_timeout_ms: u64,
    pub auth: AuthSection,
}

impl Default for UnitHaSettings {
    fn default() -> Self {
        Self {
            password: None,
            advskew: None,
            link_failure_action: LinkFailureAction::RestartServices,
            link_failure_command: Vec::new(),
            pacify_max_starts: 3,
            pacify_window_s: 300,
            handover_timeout_ms: 3000,
            auth: AuthSection::default(),
        }
    }
}

/// `[ha.auth]`.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct AuthSection {
    pub mode: AuthMode,
    /// SHA-256 keys; all are accepted, `send_key` signs.
    pub keys: Vec<KeySection>,
    pub send_key: Option<u16>,
}

/// One SHA-256 key.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct KeySection {
    pub id: u16,
    pub secret: String,
}

/// `[[interface]]`: one interface of the pair and its three addresses
/// (U2), read straight into the model, plus this unit's own override.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct InterfaceSection {
    /// The pair's interface: the image's `interfaces[k]`.
    #[serde(flatten)]
    pub iface: duet_model::Interface,
    /// Per-interface override of `ha.unicast` (this unit's own).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub unicast: Option<bool>,
    /// Keys that are neither: [`UnitConfig::validate`] reports each one.
    #[serde(flatten)]
    pub unknown: BTreeMap<String, Value>,
}

/// `[election]`: the election service process.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ElectionSection {
    /// gRPC listen address (local admin and the unit's other services).
    pub listen: String,
    /// UDP port of the peer-status datagram.
    pub status_port: u16,
    /// Dropped packets are logged a few lines per reason per window, then
    /// summed up in one line at the end of the window (seconds).
    pub drop_log_window_s: u64,
    /// Real-time scheduling (SCHED_RR, 1-99; 0 off) for the election's
    /// threads, so a busy machine cannot delay its timers and reads
    /// (needs CAP_SYS_NICE). Default: 10 with the fast profile, off
    /// otherwise.
    pub realtime_priority: Option<u8>,
}

impl Default for ElectionSection {
    fn default() -> Self {
        Self { listen: "127.0.0.1:7870".into(), status_port: 6973, drop_log_window_s: 60, realtime_priority: None }
    }
}

/// `[takeover]`: the takeover service process.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct TakeoverSection {
    pub listen: String,
    /// Gratuitous ARPs in the burst after taking over (1-100).
    pub garp_count: u32,
    /// Milliseconds between the GARPs of a burst.
    pub garp_spacing_ms: u64,
    /// Seconds between GARP refreshes while active (0: off).
    pub garp_refresh_s: u64,
    /// Own the virtual MAC 00:00:5e:00:01:<vhid> while active (T2).
    pub vmac: bool,
    /// Milliseconds between reconcile passes (besides netlink events).
    pub reconcile_interval_ms: u64,
    /// R4, state before address: on becoming active, wait at most this
    /// long for the replicator to confirm the partner's state is installed.
    pub state_wait_ms: u64,
}

impl Default for TakeoverSection {
    fn default() -> Self {
        Self {
            listen: "127.0.0.1:7871".into(),
            garp_count: 3,
            garp_spacing_ms: 20,
            garp_refresh_s: 30,
            vmac: false,
            // A backstop: netlink events find drift at once.
            reconcile_interval_ms: 5000,
            state_wait_ms: 500,
        }
    }
}

/// `[configsync]`: the configsync service and its peer link (S1-S6).
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ConfigSyncSection {
    /// Run it as part of the unit (`duet unit`).
    pub enabled: bool,
    /// gRPC listen address of the operator's API.
    pub listen: String,
    /// TCP port of the peer link (the reference's 6973).
    pub peer_port: u16,
    /// The "HA Update Interface": the peer link runs between the two units'
    /// addresses on this interface (default: the first interface).
    pub update_interface: Option<String>,
    /// The name the partner's certificate is issued to (its `unit.name`).
    pub partner_name: Option<String>,
    pub tls_ca: Option<PathBuf>,
    pub tls_cert: Option<PathBuf>,
    pub tls_key: Option<PathBuf>,
    /// Generations kept for rollback.
    pub keep_generations: usize,
    /// Where the image is stored (default `<state_dir>/config`).
    pub store_dir: Option<PathBuf>,
    /// Full sync period when the image does not set `ha.sync_interval_s`.
    pub sync_interval_s: u64,
    /// How long a push to the partner may take.
    pub push_timeout_ms: u64,
    /// Where the pair's image generations live: `local` (the default) or
    /// `etcd` (the fleet's, `[fleet]`; the local store keeps a copy).
    pub store: crate::StoreKind,
}

impl Default for ConfigSyncSection {
    fn default() -> Self {
        Self {
            enabled: true,
            listen: "127.0.0.1:7872".into(),
            peer_port: 6973,
            update_interface: None,
            partner_name: None,
            tls_ca: None,
            tls_cert: None,
            tls_key: None,
            keep_generations: 20,
            store_dir: None,
            sync_interval_s: 120,
            push_timeout_ms: 5000,
            store: crate::StoreKind::Local,
        }
    }
}

/// `[replicator]`: the replicator service (R1-R5). Its peer link uses the
/// same identity and certificates as configsync's (`[configsync]`
/// partner_name and tls_*).
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ReplicatorSection {
    /// Run it as part of the unit (`duet unit`); the takeover service then
    /// waits for its state before adding the addresses.
    pub enabled: bool,
    /// gRPC listen address of its local API.
    pub listen: String,
    /// TCP port of the peer link.
    pub peer_port: u16,
    /// The "HA Multicast Interface": the interface the link runs on
    /// (default: configsync's update interface, else the first).
    pub interface: Option<String>,
    /// Replicate L4 connection entries (conntrack) and L7 persistence.
    pub l4: bool,
    pub l7: bool,
    /// Changes per batch, and pending keys before a bulk resync instead.
    pub batch_max: usize,
    pub outbox_capacity: usize,
    /// Period of the full refresh of connection timeouts on the standby.
    pub refresh_interval_s: u64,
    /// HAProxy runtime API socket and the stick tables to replicate.
    pub haproxy_socket: Option<PathBuf>,
    pub haproxy_tables: Vec<String>,
    pub haproxy_poll_ms: u64,
}

impl Default for ReplicatorSection {
    fn default() -> Self {
        Self {
            enabled: false,
            listen: "127.0.0.1:7873".into(),
            peer_port: 6974,
            interface: None,
            l4: true,
            l7: true,
            batch_max: 2048,
            outbox_capacity: 500_000,
            refresh_interval_s: 30,
            haproxy_socket: None,
            haproxy_tables: Vec::new(),
            haproxy_poll_ms: 200,
        }
    }
}

/// `[supervisor]`: the `duet unit` process that runs the services.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct SupervisorSection {
    /// Directory of separate service binaries to run; unset (the default),
    /// the services run from the `duet` binary itself.
    pub bin_dir: Option<PathBuf>,
    /// First restart delay of a crashed service, doubled up to the maximum.
    pub restart_backoff_ms: u64,
    pub restart_backoff_max_ms: u64,
    /// How long a service may take to stop on SIGTERM.
    pub stop_grace_ms: u64,
}

impl Default for SupervisorSection {
    fn default() -> Self {
        Self { bin_dir: None, restart_backoff_ms: 200, restart_backoff_max_ms: 10_000, stop_grace_ms: 5_000 }
    }
}

/// `[witness]`: this unit's way to the pair's etcd witness (E14). The
/// witness's policy and lease TTL are the pair's, in `[ha]`
/// (`witness_policy`, `witness_lease_ttl_ms`), synced with the image.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(default)]
pub struct WitnessSection {
    /// etcd members, `host:port` (or with `https://`, `http://` for plaintext).
    pub endpoints: Vec<String>,
    /// The CA of the etcd members' certificates (TLS is the default).
    pub tls_ca: Option<PathBuf>,
    /// This unit's client certificate and key, when etcd asks for one.
    pub tls_cert: Option<PathBuf>,
    pub tls_key: Option<PathBuf>,
    /// Talk to etcd without TLS (test setups only; warned at start and in
    /// the status).
    pub insecure_plaintext: bool,
    /// Where the pair's keys live (default `/duet/<unit.pair>/`).
    pub key_prefix: Option<String>,
    /// Keys that are not this section's (policy and lease TTL are the
    /// pair's): [`UnitConfig::validate`] names each with its place.
    #[serde(flatten)]
    pub unknown: BTreeMap<String, Value>,
}

/// `[fleet]`: the etcd of a fleet of pairs (O7): the unit publishes its
/// status there and, with `configsync.store = "etcd"`, follows its pair's
/// image there.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct FleetSection {
    /// etcd members, `host:port` (or with `https://`, `http://` for plaintext).
    pub endpoints: Vec<String>,
    /// The CA of the etcd members' certificates (TLS is the default).
    pub tls_ca: Option<PathBuf>,
    /// This unit's client certificate and key; with etcd's auth on, its
    /// common name is the etcd user (see the README's fleet section).
    pub tls_cert: Option<PathBuf>,
    pub tls_key: Option<PathBuf>,
    /// Talk to etcd without TLS (test setups only; warned at start).
    pub insecure_plaintext: bool,
    /// The fleet's key prefix (default `/duet`).
    pub prefix: Option<String>,
}

/// How log lines are written.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    /// One line per event.
    #[default]
    Text,
    /// One JSON object per line.
    Json,
}

/// `[telemetry]`.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct TelemetrySection {
    /// Log filter (tracing env-filter syntax).
    pub log: String,
    /// `text` (one line per event) or `json` (one JSON object per line,
    /// for log shippers).
    pub log_format: LogFormat,
    /// OTLP/gRPC endpoint for traces and metrics; unset: no export.
    /// `https://` talks TLS (then `otlp_ca` is needed).
    pub otlp_endpoint: Option<String>,
    /// The CA (PEM) that signed the collector's certificate, for an
    /// `https://` endpoint.
    pub otlp_ca: Option<PathBuf>,
    /// This unit's client certificate and key (PEM), when the collector
    /// asks for one (mutual TLS).
    pub otlp_cert: Option<PathBuf>,
    pub otlp_key: Option<PathBuf>,
}

impl Default for TelemetrySection {
    fn default() -> Self {
        Self {
            log: "info".into(),
            log_format: LogFormat::Text,
            otlp_endpoint: None,
            otlp_ca: None,
            otlp_cert: None,
            otlp_key: None,
        }
    }
}
