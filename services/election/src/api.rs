//! The `duet.election.v1.ElectionService` gRPC API: a thin edge that turns
//! requests into messages for the driver and its answers into protos.
//! gRPC status codes are chosen here and nowhere else.

use std::pin::Pin;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use duet_carp::{HaMode, RoleEvent, RoleEventKind};
use duet_proto::common::v1 as common;
use duet_proto::convert::{ha_mode_i32, role_i32};
use duet_proto::election::v1 as pb;
use duet_runtime::shutdown::Shutdown;
use duet_runtime::stats::Samples;
use futures::Stream;

use tokio::sync::{broadcast, oneshot, watch};
use tonic::{Request as GrpcRequest, Response, Status};

use crate::driver::{Request, Shared, Snapshot, TakeoverReport, lock};

/// The gRPC service.
#[derive(Debug, Clone)]
pub(crate) struct Api {
    pub shared: Arc<Shared>,
    pub unit_name: String,
    pub shutdown: Shutdown,
    /// The unit file's warnings about who may call the APIs (an API in
    /// clear beyond loopback), repeated in every status.
    pub admin_warnings: Vec<String>,
    /// E16: each tracked check's kind, by name (the core knows no probes).
    pub check_kinds: Vec<(String, &'static str)>,
}

fn ts(t: SystemTime) -> prost_types::Timestamp {
    prost_types::Timestamp::from(t)
}

pub(crate) fn status_proto(unit_name: &str, s: &Snapshot) -> pb::GetStatusResponse {
    let st = &s.status;
    let p = &s.params;
    let w = s.clock;
    let first_if = p.interfaces.first();
    let unit = common::UnitIdentity {
        name: unit_name.to_string(),
        mode: ha_mode_i32(p.mode),
        address: first_if.map(|i| i.unit_addr.to_string()).unwrap_or_default(),
        vhid: u32::from(p.vhid),
        version: env!("CARGO_PKG_VERSION").to_string(),
    };
    let local = common::StatusSquare {
        unit: 0,
        status: common::UnitStatus::from(st.local_square.0) as i32,
        detail: st.local_square.1.clone(),
    };
    let partner = common::StatusSquare {
        unit: 0,
        status: common::UnitStatus::from(st.partner_square.0) as i32,
        detail: st.partner_square.1.clone(),
    };
    let squares = match p.mode {
        HaMode::Second => vec![common::StatusSquare { unit: 1, ..partner }, common::StatusSquare { unit: 2, ..local }],
        _ => vec![common::StatusSquare { unit: 1, ..local }, common::StatusSquare { unit: 2, ..partner }],
    };
    let now = w.now();
    let partner_status = pb::PartnerStatus {
        // On the same interface as this unit's address above (the partner is
        // heard on every checked interface; the last one heard would mix
        // front and back addresses).
        address: first_if
            .and_then(|i| i.partner_addr)
            .map(|a| a.to_string())
            .or_else(|| st.heard.map(|h| h.addr.to_string()))
            .or_else(|| st.reported.map(|r| r.addr.to_string()))
            .unwrap_or_default(),
        advbase: st.heard.map_or(0, |h| u32::from(h.advbase)),
        advskew: st.heard.map_or(0, |h| u32::from(h.advskew)),
        last_heard: st.heard.map(|h| ts(w.to_system(h.at))),
        silent_ms: st.heard.map_or(0, |h| u64::try_from(now.since(h.at).as_millis()).unwrap_or(u64::MAX)),
        reachable: st.partner_reachable,
        mode: st.reported.and_then(|r| HaMode::from_code(r.status.mode)).map_or(0, ha_mode_i32),
        hears_adverts: st.partner_hears_adverts,
        checks_failing: st.reported.map_or(0, |r| u32::from(r.status.failing)),
        penalty: st.reported.map_or(0, |r| u32::from(r.status.penalty)),
        unhealthy: st.reported.is_some_and(|r| r.status.flags & duet_wire::peer::FLAG_UNHEALTHY != 0),
    };
    let mut warnings = st.warnings.clone();
    if s.queue_full > 0 {
        warnings.push(format!("{} packets dropped because the receive queue was full (flood?)", s.queue_full));
    }
    if s.send_errors > 0 {
        warnings.push(format!("{} adverts could not be sent", s.send_errors));
    }
    if s.witness.as_ref().is_some_and(|w| w.insecure) {
        warnings.push(
            "the witness talks to etcd without TLS (witness.insecure_plaintext): anyone on the way can forge the key"
                .into(),
        );
    }
    pb::GetStatusResponse {
        unit: Some(unit),
        role: role_i32(st.role),
        role_reason: st.role_reason.clone(),
        role_since: Some(ts(w.to_system(st.role_since))),
        squares,
        partner: Some(partner_status),
        interfaces: st
            .interfaces
            .iter()
            .map(|i| pb::InterfaceStatus {
                name: i.name.clone(),
                link_up: i.link_up,
                ha_check: i.ha_check,
                unit_address: i.unit_addr.to_string(),
                shared_address: i.shared.to_string(),
                adverts_sent: i.sent,
                adverts_received: i.received,
            })
            .collect(),
        drops: st
            .drops
            .iter()
            .map(|(r, c)| pb::DropCount { reason: pb::DropReason::from(*r) as i32, count: *c })
            .collect(),
        foreign_vhids: st
            .foreign
            .iter()
            .map(|(vhid, src, f)| pb::ForeignVhid {
                vhid: u32::from(*vhid),
                source: src.to_string(),
                count: f.count,
                last_seen: Some(ts(w.to_system(f.last_seen))),
            })
            .collect(),
        adverts_sent: st.adverts_sent,
        adverts_received: st.adverts_received,
        warnings,
        parameters: Some(pb::HaParameters {
            mode: ha_mode_i32(p.mode),
            vhid: u32::from(p.vhid),
            ha_timeout_ms: u64::try_from(p.ha_timeout().as_millis()).unwrap_or(0),
            advert_interval_ms: u64::try_from(p.interval().as_millis()).unwrap_or(0),
            preferred_server: p.preferred.as_str().into(),
            initial_wait_ms: u64::try_from(p.initial_wait.as_millis()).unwrap_or(0),
            use_broadcast: p.interfaces.iter().any(|i| i.destination == duet_carp::Destination::Broadcast),
            unicast: p.interfaces.iter().any(|i| i.destination == duet_carp::Destination::Unicast),
            profile: p.profile_name().into(),
            auth_mode: p.auth.mode_name().into(),
            advbase: u32::from(p.advbase()),
            advskew: u32::from(p.advskew()),
            hard_reboot_on_link_failure: p.hard_reboot_on_link_failure,
            config_generation: s.config_generation,
        }),
        takeover: Some(takeover_proto(st.follower_attached, s.takeover.as_ref())),
        recent_starts: st.recent_starts,
        epoch: s.epoch,
        seq: s.seq,
        timer_lateness: Some(delay(&s.timer_lateness)),
        receive_delay: Some(delay(&s.receive_delay)),
        witness: witness_proto(unit_name, s),
        checks: st.checks.iter().map(check_proto).collect(),
        penalty: u32::from(st.penalty),
    }
}

/// E16: one tracked check (its kind is filled in by the API, which knows
/// the unit file).
fn check_proto(c: &duet_carp::CheckView) -> pb::TrackedCheck {
    let state = match c.healthy {
        None => pb::CheckState::Pending,
        Some(true) => pb::CheckState::Passing,
        Some(false) => pb::CheckState::Failing,
    };
    pb::TrackedCheck {
        name: c.name.clone(),
        kind: String::new(),
        state: state as i32,
        effect: match c.effect {
            duet_carp::Effect::Demote => "demote".into(),
            duet_carp::Effect::Weight(w) => format!("weight {w}"),
        },
        last_passed: c.last_ok == Some(true),
        last_output: c.last_output.clone(),
        last_took_ms: c.last_took.as_secs_f64() * 1e3,
        last_age_ms: c.last_age.map_or(0, ms),
        state_for_ms: ms(c.for_time),
        runs: c.runs,
        failures: c.failures,
    }
}

fn ms(d: Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX)
}

/// E14: the core's view of the witness and the adapter's session.
fn witness_proto(unit_name: &str, s: &Snapshot) -> Option<pb::WitnessStatus> {
    use duet_carp::witness::{Holder, KeyState};
    let v = s.status.witness.as_ref()?;
    let link = s.witness.clone().unwrap_or_default();
    let (holder, holder_is_self) = match &v.key {
        Some(KeyState::Held { holder: Holder::Other(n), .. }) => (n.clone(), false),
        Some(KeyState::Held { holder: Holder::This, .. }) => (unit_name.to_owned(), true),
        // This unit's key of an earlier session (a restart, a lost lease).
        Some(KeyState::Held { holder: Holder::ThisStale, .. }) => (unit_name.to_owned(), false),
        Some(KeyState::Absent) | None => (String::new(), false),
    };
    let remaining = if holder_is_self { v.lease_left } else { link.holder_ttl };
    Some(pb::WitnessStatus {
        policy: v.policy.as_str().into(),
        reachable: v.reachable,
        endpoint: link.endpoint.unwrap_or_default(),
        key: link.key,
        key_known: v.key.is_some(),
        holder,
        holder_is_self,
        remaining_ttl_ms: remaining.map_or(0, ms),
        since_beat_ms: v.since_beat.map_or(0, ms),
        lease_ttl_ms: ms(v.lease_ttl),
        since_answer_ms: v.since_ok.map(ms),
        last_error: v.last_error.as_ref().map(|e| e.1.clone()).unwrap_or_default(),
        last_error_at: v.last_error.as_ref().map(|e| ts(s.clock.to_system(e.0))),
        fallback: v.fallback,
        insecure_plaintext: link.insecure,
        beats_sent: v.beats_sent,
        beats_acknowledged: v.beats_acked,
        failures: v.failures,
        decisions: v
            .decisions
            .iter()
            .map(|(d, n)| pb::WitnessDecisionCount { reason: d.as_str().into(), count: *n })
            .collect(),
    })
}

/// p50 and p99 of the recent delays, the largest ever and how many.
fn delay(d: &Samples) -> pb::SchedulingDelay {
    let recent = d.recent();
    pb::SchedulingDelay { p50_us: recent.p50, p99_us: recent.p99, max_us: d.max_ever_us(), samples: d.count() }
}

fn takeover_proto(following: bool, t: Option<&TakeoverReport>) -> pb::TakeoverStatus {
    match t {
        None => pb::TakeoverStatus { following, ..Default::default() },
        Some(t) => pb::TakeoverStatus {
            following,
            applied_role: t.role.map_or(0, role_i32),
            applied_seq: t.seq,
            addresses_at: t.addresses_at.map(ts),
            first_garp_at: t.first_garp_at.map(ts),
            ok: t.ok,
            error: t.error.clone(),
            state_installed: t.state_installed,
            state_wait_us: t.state_wait_us,
        },
    }
}

impl Api {
    async fn ask<T>(&self, make: impl FnOnce(oneshot::Sender<T>) -> Request) -> Result<T, Status> {
        let (tx, rx) = oneshot::channel();
        self.shared.requests.send(make(tx)).await.map_err(|_| Status::unavailable("the election is shutting down"))?;
        tokio::time::timeout(Duration::from_secs(5), rx)
            .await
            .map_err(|_| Status::deadline_exceeded("the election did not answer within 5 s"))?
            .map_err(|_| Status::unavailable("the election is shutting down"))
    }
}

type RoleStream = Pin<Box<dyn Stream<Item = Result<pb::WatchRoleResponse, Status>> + Send>>;

struct WatchState {
    rx: broadcast::Receiver<RoleEvent>,
    first: Option<RoleEvent>,
    last: u64,
    /// The follower's `heartbeat_ms` and `heartbeat_idle_ms`.
    asked_beat_ms: u32,
    asked_idle_ms: u32,
    pulse: watch::Receiver<u64>,
    last_sent: Instant,
    /// The heartbeat period for the role and interval last sent.
    beat: Duration,
    shared: Arc<Shared>,
    shutdown: Shutdown,
    _guard: Option<FollowerGuard>,
}

impl WatchState {
    /// An event went out: the heartbeat is timed from now, at the period
    /// for its role.
    fn sent(&mut self, ev: &RoleEvent) {
        self.last_sent = Instant::now();
        let asked = match (ev.role.advertises(), self.asked_idle_ms) {
            (false, idle) if idle != 0 => idle,
            _ => self.asked_beat_ms,
        };
        self.beat = heartbeat(ev.advert_interval, asked);
    }
}

/// Held by a follower's stream; when the stream is dropped (the follower
/// disconnected or died), the driver is told at once (T4).
struct FollowerGuard {
    shared: Arc<Shared>,
    shutdown: Shutdown,
}

impl Drop for FollowerGuard {
    fn drop(&mut self) {
        if self.shutdown.fired() {
            return;
        }
        if self.shared.requests.try_send(Request::Follower { attached: false }).is_err() {
            let tx = self.shared.requests.clone();
            // The queue was full: deliver it in the background rather than lose it.
            if let Ok(h) = tokio::runtime::Handle::try_current() {
                h.spawn(async move {
                    let _ = tx.send(Request::Follower { attached: false }).await;
                });
            }
        }
    }
}

/// The period of a quiet role stream's heartbeat: every advert interval
/// (at most every second) unless the follower asked for a slower one
/// (`heartbeat_ms` or `heartbeat_idle_ms`, 100 ms to 60 s). The beats ride
/// on the driver's pulse ([`crate::driver::Shared::pulse`]).
fn heartbeat(advert_interval: Duration, asked_ms: u32) -> Duration {
    let floor = advert_interval.min(Duration::from_secs(1));
    match asked_ms {
        0 => floor,
        ms => Duration::from_millis(u64::from(ms.clamp(100, 60_000))).max(floor),
    }
}

#[tonic::async_trait]
impl pb::election_service_server::ElectionService for Api {
    async fn get_status(
        &self,
        _: GrpcRequest<pb::GetStatusRequest>,
    ) -> Result<Response<pb::GetStatusResponse>, Status> {
        let snap = self.ask(Request::Status).await?;
        let mut r = status_proto(&self.unit_name, &snap);
        r.warnings.extend(self.admin_warnings.iter().cloned());
        for c in &mut r.checks {
            if let Some((_, kind)) = self.check_kinds.iter().find(|(n, _)| *n == c.name) {
                (*kind).clone_into(&mut c.kind);
            }
        }
        Ok(Response::new(r))
    }

    type WatchRoleStream = RoleStream;

    async fn watch_role(&self, req: GrpcRequest<pb::WatchRoleRequest>) -> Result<Response<RoleStream>, Status> {
        let follower = !req.get_ref().follower.is_empty();
        // A process that was stopped answers the calls queued meanwhile
        // before its driver has caught up: the current role may be one the
        // driver is about to leave (an active that overslept). Then the
        // snapshot waits, at most 2 s, for the driver's next pulse.
        if lock(&self.shared.pulsed_at).elapsed() > crate::driver::PULSE_MAX + Duration::from_millis(500) {
            let mut pulse = self.shared.pulse.subscribe();
            let _ = tokio::time::timeout(Duration::from_secs(2), pulse.changed()).await;
        }
        // Subscribe before reading the current event: anything published
        // in between is in the receiver and skipped by its sequence number.
        let rx = lock(&self.shared.events).resubscribe();
        let mut snapshot = self.shared.current();
        snapshot.kind = RoleEventKind::Snapshot;
        let guard = if follower {
            let _ = self.shared.requests.send(Request::Follower { attached: true }).await;
            Some(FollowerGuard { shared: Arc::clone(&self.shared), shutdown: self.shutdown.clone() })
        } else {
            None
        };
        let state = WatchState {
            rx,
            first: Some(snapshot),
            last: 0,
            asked_beat_ms: req.get_ref().heartbeat_ms,
            asked_idle_ms: req.get_ref().heartbeat_idle_ms,
            pulse: self.shared.pulse.subscribe(),
            last_sent: Instant::now(),
            beat: Duration::from_secs(1),
            shared: Arc::clone(&self.shared),
            shutdown: self.shutdown.clone(),
            _guard: guard,
        };
        // The stream is served straight from the broadcast receiver: no
        // forwarding task, one hop fewer between a role change and the
        // follower. It ends when the client goes (the guard then tells the
        // driver the follower is gone) or on shutdown.
        let stream = futures::stream::unfold(state, |mut st| async move {
            if let Some(s) = st.first.take() {
                st.last = s.seq;
                st.sent(&s);
                return Some((Ok(pb::WatchRoleResponse::from(&s)), st));
            }
            loop {
                // The period follows the newest event (role and interval);
                // looked up here, not at every pulse.
                let beat = st.beat;
                let ev = tokio::select! {
                    r = st.rx.recv() => r,
                    // The driver did some work: a heartbeat if one is due
                    // (within a quarter period: pulses come with adverts,
                    // which may be a little early).
                    r = st.pulse.changed() => {
                        if r.is_err() {
                            return None;
                        }
                        if st.last_sent.elapsed() < beat - beat / 4 {
                            continue;
                        }
                        let mut h = st.shared.current();
                        h.kind = RoleEventKind::Heartbeat;
                        h.at = SystemTime::now();
                        st.last_sent = Instant::now();
                        return Some((Ok(pb::WatchRoleResponse::from(&h)), st));
                    }
                    () = st.shutdown.wait() => return None,
                };
                let ev = match ev {
                    Ok(ev) if ev.seq <= st.last => continue,
                    Ok(ev) => ev,
                    // Too slow a reader: never skip silently; send the
                    // current state as a snapshot (the follower sees the
                    // gap and takes the snapshot as the truth).
                    Err(broadcast::error::RecvError::Lagged(_)) => {
                        let mut s = st.shared.current();
                        s.kind = RoleEventKind::Snapshot;
                        s
                    }
                    Err(broadcast::error::RecvError::Closed) => return None,
                };
                st.last = ev.seq;
                st.sent(&ev);
                return Some((Ok(pb::WatchRoleResponse::from(&ev)), st));
            }
        });
        Ok(Response::new(Box::pin(stream)))
    }

    async fn handover(&self, req: GrpcRequest<pb::HandoverRequest>) -> Result<Response<pb::HandoverResponse>, Status> {
        let ms = req.get_ref().timeout_ms;
        let timeout = Duration::from_millis(if ms == 0 { 3000 } else { ms.min(60_000) });
        let (tx, rx) = oneshot::channel();
        self.shared
            .requests
            .send(Request::Handover { timeout, reply: tx })
            .await
            .map_err(|_| Status::unavailable("the election is shutting down"))?;
        let r = tokio::time::timeout(timeout + Duration::from_secs(2), rx)
            .await
            .map_err(|_| Status::deadline_exceeded("the handover did not finish in time"))?
            .map_err(|_| Status::unavailable("the election is shutting down"))?;
        match r {
            Ok(o) => Ok(Response::new(pb::HandoverResponse {
                confirmed: o.confirmed,
                partner: o.partner.map(|p| p.to_string()).unwrap_or_default(),
                took_ms: u64::try_from(o.took.as_millis()).unwrap_or(u64::MAX),
            })),
            Err(e) => Err(Status::failed_precondition(e.to_string())),
        }
    }

    async fn clear_pacified(
        &self,
        _: GrpcRequest<pb::ClearPacifiedRequest>,
    ) -> Result<Response<pb::ClearPacifiedResponse>, Status> {
        match self.ask(Request::ClearPacified).await? {
            Ok(r) => Ok(Response::new(pb::ClearPacifiedResponse { role: role_i32(r) })),
            Err(e) => Err(Status::failed_precondition(e.to_string())),
        }
    }

    async fn report_applied(
        &self,
        req: GrpcRequest<pb::ReportAppliedRequest>,
    ) -> Result<Response<pb::ReportAppliedResponse>, Status> {
        let r = req.into_inner();
        let rep = TakeoverReport {
            epoch: r.epoch,
            seq: r.seq,
            role: duet_proto::convert::role(r.role),
            ok: r.ok,
            error: r.error,
            addresses_at: r.addresses_at.and_then(|t| SystemTime::try_from(t).ok()),
            first_garp_at: r.first_garp_at.and_then(|t| SystemTime::try_from(t).ok()),
            state_installed: r.state_installed,
            state_wait_us: r.state_wait_us,
        };
        self.shared
            .requests
            .send(Request::TakeoverReport(rep))
            .await
            .map_err(|_| Status::unavailable("the election is shutting down"))?;
        Ok(Response::new(pb::ReportAppliedResponse {}))
    }

    async fn set_readiness(
        &self,
        req: GrpcRequest<pb::SetReadinessRequest>,
    ) -> Result<Response<pb::SetReadinessResponse>, Status> {
        let r = req.into_inner();
        if r.component.is_empty() {
            return Err(Status::invalid_argument("component: name the service reporting (e.g. \"replicator\")"));
        }
        let ready = self
            .ask(|reply| Request::Readiness { component: r.component, ready: r.ready, reason: r.reason, reply })
            .await?;
        Ok(Response::new(pb::SetReadinessResponse { ready }))
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn a_follower_may_ask_for_a_slower_heartbeat_never_a_faster_one() {
        let ms = Duration::from_millis;
        // The takeover's default: every advert interval, at most every second.
        assert_eq!(heartbeat(ms(20), 0), ms(20));
        assert_eq!(heartbeat(ms(1000), 0), ms(1000));
        // A slower beat as asked, within 100 ms to 60 s, never below the default.
        assert_eq!(heartbeat(ms(20), 1000), ms(1000));
        assert_eq!(heartbeat(ms(20), 5), ms(100));
        assert_eq!(heartbeat(ms(1000), 200), ms(1000));
        assert_eq!(heartbeat(ms(1000), u32::MAX), ms(60_000));
    }

    use duet_carp::{Election, Init, Role, Time};
    use duet_runtime::clock::Clock;
    use futures::StreamExt;

    use super::*;
    use crate::driver::test_support::params;

    /// A role stream's heartbeats come from the driver's pulse (T4): none
    /// while it does not pulse (a hung driver, even with the API task
    /// alive), one per asked period while it does, and at the idle period
    /// while the unit does not advertise.
    #[tokio::test]
    async fn heartbeats_ride_on_the_drivers_pulse_and_stop_when_it_stops() {
        let ms = Duration::from_millis;
        let event = |role: Role| RoleEvent {
            epoch: 7,
            seq: 1,
            kind: RoleEventKind::Changed,
            role,
            previous: role,
            at: SystemTime::now(),
            reason: "test".into(),
            ha_timeout: ms(300),
            advert_interval: ms(20),
            vhid: 1,
            config_generation: 0,
            trace: String::new(),
        };
        let (requests, _keep) = tokio::sync::mpsc::channel(8);
        let (events, events_rx) = broadcast::channel(8);
        let shared = Arc::new(Shared {
            epoch: 7,
            requests,
            current: std::sync::Mutex::new(event(Role::Active)),
            events: std::sync::Mutex::new(events_rx),
            queue_full: std::sync::atomic::AtomicU64::new(0),
            pulse: watch::Sender::new(0),
            pulsed_at: std::sync::Mutex::new(Instant::now()),
        });
        let (_trigger, shutdown) = duet_runtime::shutdown::channel();
        let api = Api {
            shared: Arc::clone(&shared),
            unit_name: "lb1".into(),
            shutdown,
            admin_warnings: Vec::new(),
            check_kinds: Vec::new(),
        };
        let req = pb::WatchRoleRequest { follower: String::new(), heartbeat_ms: 100, heartbeat_idle_ms: 1000 };
        use pb::election_service_server::ElectionService;
        let mut stream = api.watch_role(GrpcRequest::new(req)).await.unwrap().into_inner();
        let first = stream.next().await.unwrap().unwrap();
        assert_eq!(first.kind, pb::RoleEventKind::Snapshot as i32);

        // No pulse, no beat, however long.
        assert!(tokio::time::timeout(ms(400), stream.next()).await.is_err(), "a beat without a pulse");

        // Pulses every 20 ms (adverts): a beat every ~100 ms, not every pulse.
        let pulses = |n: u32| {
            let shared = Arc::clone(&shared);
            tokio::spawn(async move {
                for _ in 0..n {
                    tokio::time::sleep(ms(20)).await;
                    shared.pulse.send_modify(|p| *p += 1);
                }
            })
        };
        let pulser = pulses(30);
        let mut beats = 0;
        while let Ok(Some(m)) = tokio::time::timeout(ms(200), stream.next()).await {
            assert_eq!(m.unwrap().kind, pb::RoleEventKind::Heartbeat as i32);
            beats += 1;
        }
        pulser.await.unwrap();
        assert!((3..=8).contains(&beats), "{beats} beats in 30 pulses 20 ms apart, asked every 100 ms");

        // Standby (not advertising): the idle period, 1 s.
        let mut standby = event(Role::Standby);
        standby.seq = 2;
        *shared.current.lock().unwrap() = standby.clone();
        events.send(standby).unwrap();
        let changed = stream.next().await.unwrap().unwrap();
        assert_eq!(changed.kind, pb::RoleEventKind::Changed as i32);
        let pulser = pulses(40);
        let mut beats = 0;
        while let Ok(Some(_)) = tokio::time::timeout(ms(300), stream.next()).await {
            beats += 1;
        }
        pulser.await.unwrap();
        assert!(beats <= 1, "{beats} beats in 800 ms at the idle period of 1 s");
    }

    fn snapshot(mode: HaMode) -> Snapshot {
        let p = params(mode);
        let e = Election::new(p.clone(), Time::ZERO, Init::default());
        let mut timer_lateness = Samples::new(16);
        for us in [10, 20, 30, 4000] {
            timer_lateness.record(Duration::from_micros(us));
        }
        Snapshot {
            status: e.status(Time::ZERO),
            params: p,
            config_generation: 5,
            epoch: 7,
            seq: 2,
            clock: Clock::new(),
            takeover: None,
            queue_full: 3,
            send_errors: 0,
            timer_lateness,
            receive_delay: Samples::new(16),
            witness: None,
        }
    }

    #[test]
    fn the_snapshot_becomes_the_status_message() {
        let s = snapshot(HaMode::First);
        let m = status_proto("lb1", &s);
        let unit = m.unit.as_ref().unwrap();
        assert_eq!((unit.name.as_str(), unit.address.as_str(), unit.vhid), ("lb1", "198.18.0.1", 10));
        assert_eq!(unit.mode, ha_mode_i32(HaMode::First));
        assert_eq!(m.role, role_i32(Role::Init));
        assert_eq!((m.epoch, m.seq), (7, 2));
        // This unit's square first for unit 1.
        assert_eq!(m.squares.iter().map(|q| q.unit).collect::<Vec<_>>(), vec![1, 2]);
        assert_eq!(m.squares[0].status, common::UnitStatus::Updating as i32, "{:?}", m.squares);
        assert_eq!(m.squares[1].status, common::UnitStatus::Unreachable as i32);
        let p = m.parameters.as_ref().unwrap();
        assert_eq!((p.ha_timeout_ms, p.advert_interval_ms, p.advbase, p.advskew), (3000, 1000, 1, 0));
        assert_eq!(
            (p.profile.as_str(), p.auth_mode.as_str(), p.preferred_server.as_str()),
            ("standard", "ucarp-sha1", "none")
        );
        assert_eq!(m.partner.as_ref().unwrap().address, "198.18.0.2", "the configured partner until one is heard");
        assert_eq!(m.interfaces.len(), 1);
        assert_eq!(m.interfaces[0].shared_address, "198.18.0.10");
        let t = m.timer_lateness.unwrap();
        assert_eq!((t.p50_us, t.p99_us, t.max_us, t.samples), (30, 4000, 4000, 4));
        assert!(m.warnings.iter().any(|w| w.starts_with("3 packets dropped because the receive queue was full")));
        let to = m.takeover.unwrap();
        assert!(!to.following && to.applied_role == 0);
    }

    #[test]
    fn the_witness_is_shown_as_the_core_and_the_adapter_see_it() {
        use duet_carp::witness::{Holder, KeyState, WitnessEvent};
        let mut p = params(HaMode::First);
        p.witness = Some(duet_carp::WitnessParams {
            policy: duet_carp::WitnessPolicy::Required,
            lease_ttl: Duration::from_secs(3),
        });
        let mut e = Election::new(p.clone(), Time::ZERO, Init::default());
        let t = Time::from_millis(100);
        e.handle_witness(t, WitnessEvent::LeaseKept { sent: t, ttl: Duration::from_secs(3) });
        let key = KeyState::Held { holder: Holder::Other("lb2".into()), mod_revision: 7 };
        e.handle_witness(t, WitnessEvent::Observed { key, revision: 7 });
        let mut s = snapshot(HaMode::First);
        s.status = e.status(Time::from_millis(600));
        s.params = p;
        s.witness = Some(crate::driver::WitnessLinkView {
            endpoint: Some("https://198.18.0.21:2379".into()),
            holder_ttl: Some(Duration::from_millis(2500)),
            key: "/duet/vhid-10/witness".into(),
            insecure: true,
        });
        let m = status_proto("lb1", &s);
        let w = m.witness.unwrap();
        assert_eq!((w.policy.as_str(), w.reachable, w.fallback), ("required", true, false));
        assert_eq!(
            (w.holder.as_str(), w.holder_is_self, w.remaining_ttl_ms, w.since_beat_ms),
            ("lb2", false, 2500, 500)
        );
        assert_eq!(
            (w.key.as_str(), w.endpoint.as_str(), w.since_answer_ms),
            ("/duet/vhid-10/witness", "https://198.18.0.21:2379", Some(500))
        );
        assert!(w.insecure_plaintext && m.warnings.iter().any(|l| l.contains("without TLS")), "{:?}", m.warnings);
        assert!(status_proto("lb1", &snapshot(HaMode::First)).witness.is_none(), "no witness, no message");
    }

    #[test]
    fn a_second_unit_shows_its_square_second() {
        let m = status_proto("lb2", &snapshot(HaMode::Second));
        assert_eq!(m.squares[0].unit, 1);
        assert_eq!(m.squares[0].status, common::UnitStatus::Unreachable as i32, "unit 1 is the partner");
        assert_eq!(m.squares[1].status, common::UnitStatus::Updating as i32);
        assert_eq!(m.unit.unwrap().address, "198.18.0.2");
    }

    #[test]
    fn a_takeover_report_is_shown_as_received() {
        let mut s = snapshot(HaMode::First);
        s.takeover = Some(TakeoverReport {
            epoch: 7,
            seq: 2,
            role: Some(Role::Active),
            ok: false,
            error: "eth0: boom".into(),
            addresses_at: Some(SystemTime::UNIX_EPOCH + Duration::from_secs(5)),
            first_garp_at: None,
            state_installed: true,
            state_wait_us: 12,
        });
        let t = status_proto("lb1", &s).takeover.unwrap();
        assert_eq!(t.applied_role, role_i32(Role::Active));
        assert_eq!((t.applied_seq, t.ok, t.error.as_str(), t.state_wait_us), (2, false, "eth0: boom", 12));
        assert_eq!(t.addresses_at.map(|a| a.seconds), Some(5));
        assert!(t.first_garp_at.is_none());
    }
}
