//! The `duet.takeover.v1.TakeoverService` gRPC API: what the unit holds and
//! why. The driver keeps [`Status`] current; presence on the devices is
//! asked from the kernel at each call, so the answer is what is true now.

use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use duet_carp::Role;
use duet_config::Cidr;
use duet_net::netlink::{Netlink, NetlinkError};
use duet_proto::convert::role_i32;
use duet_proto::takeover::v1 as pb;
use duet_runtime::tasks::Failure;
use duet_wire::arp::{format_mac, virtual_mac};
use tonic::{Request, Response, Status as GrpcStatus};

use crate::garp::GarpStats;

/// What the driver publishes for the status: the core's, with
/// wall-clock times.
#[derive(Debug, Clone, Default)]
pub(crate) struct Status {
    /// `None` until the election said.
    pub role: Option<Role>,
    pub holding: bool,
    pub following: bool,
    pub epoch: u64,
    pub seq: u64,
    pub vhid: u8,
    pub role_received_at: Option<SystemTime>,
    pub addresses_at: Option<SystemTime>,
    pub first_garp_at: Option<SystemTime>,
    pub garp_latency: Option<Duration>,
    pub drift_repairs: u64,
    pub recent_repairs: Vec<(SystemTime, String)>,
    pub stream_lost_at: Option<SystemTime>,
    pub failsafe_releases: u64,
    pub failsafe_after: Duration,
    pub last_error: String,
    pub interface_errors: Vec<String>,
}

/// State shared by the driver, the burst tasks and the API.
#[derive(Debug)]
pub(crate) struct Shared {
    pub status: Mutex<Status>,
    pub garp: Arc<Mutex<GarpStats>>,
    pub failures: Arc<Mutex<Vec<Failure>>>,
    /// Per interface, its shared address.
    pub ifaces: Vec<(String, Cidr)>,
    pub vmac: bool,
}

pub(crate) use duet_runtime::sync::lock;

/// The gRPC service.
#[derive(Debug, Clone)]
pub(crate) struct Api {
    pub shared: Arc<Shared>,
    pub netlink: Arc<Netlink>,
}

fn ts(t: SystemTime) -> prost_types::Timestamp {
    prost_types::Timestamp::from(t)
}

fn micros(d: Duration) -> u64 {
    u64::try_from(d.as_micros()).unwrap_or(u64::MAX)
}

impl Api {
    /// Whether `device` has exactly `shared` now (a missing device has nothing).
    async fn present(&self, device: &str, shared: Cidr) -> Result<bool, GrpcStatus> {
        match self.netlink.addresses(device).await {
            Ok(a) => Ok(a.contains(&(shared.addr, shared.prefix))),
            Err(NetlinkError::NotFound { .. }) => Ok(false),
            Err(e) => Err(GrpcStatus::unavailable(format!("cannot read the interfaces: {e}"))),
        }
    }
}

#[tonic::async_trait]
impl pb::takeover_service_server::TakeoverService for Api {
    async fn get_status(
        &self,
        _: Request<pb::GetStatusRequest>,
    ) -> Result<Response<pb::GetStatusResponse>, GrpcStatus> {
        let st = lock(&self.shared.status).clone();
        let (garps_sent, last_garp_at) = {
            let g = lock(&self.shared.garp);
            (g.sent, g.last_at)
        };
        let failures = lock(&self.shared.failures).iter().map(|f| format!("{}: {}", f.task, f.error)).collect();
        let mac = virtual_mac(st.vhid);
        let mut addresses = Vec::new();
        let mut vmacs = Vec::new();
        for (ifname, shared) in &self.shared.ifaces {
            let device = if self.shared.vmac { duet_config::vmac_device(ifname, st.vhid) } else { ifname.clone() };
            let present = self.present(&device, *shared).await?;
            addresses.push(pb::HeldAddress {
                interface: ifname.clone(),
                address: shared.to_string(),
                device: device.clone(),
                present,
            });
            if self.shared.vmac {
                let present = match self.netlink.link(&device).await {
                    Ok(l) => l.mac == Some(mac),
                    Err(NetlinkError::NotFound { .. }) => false,
                    Err(e) => return Err(GrpcStatus::unavailable(format!("cannot read the interfaces: {e}"))),
                };
                vmacs.push(pb::VirtualMac { parent: ifname.clone(), device, mac: format_mac(&mac), present });
            }
        }
        Ok(Response::new(pb::GetStatusResponse {
            role: st.role.map_or(0, role_i32),
            holding: st.holding,
            following: st.following,
            epoch: st.epoch,
            seq: st.seq,
            addresses,
            vmac_enabled: self.shared.vmac,
            vmacs,
            role_received_at: st.role_received_at.map(ts),
            addresses_at: st.addresses_at.map(ts),
            first_garp_at: st.first_garp_at.map(ts),
            last_garp_at: last_garp_at.map(ts),
            garps_sent,
            drift_repairs: st.drift_repairs,
            recent_repairs: st
                .recent_repairs
                .iter()
                .map(|(at, what)| pb::DriftRepair { at: Some(ts(*at)), what: what.clone() })
                .collect(),
            stream_lost_at: st.stream_lost_at.map(ts),
            failsafe_releases: st.failsafe_releases,
            last_error: st.last_error,
            vhid: u32::from(st.vhid),
            garp_latency_us: st.garp_latency.map_or(0, micros),
            failsafe_after_ms: u64::try_from(st.failsafe_after.as_millis()).unwrap_or(u64::MAX),
            task_failures: failures,
            interface_errors: st.interface_errors,
        }))
    }
}
