//! The rules that apply a role, watch the stream and report: the private
//! half of [`Takeover`], called from its inputs.

use std::time::Duration;

use duet_carp::{Role, RoleEvent, RoleEventKind, Time};
use duet_wire::arp::{format_mac, virtual_mac};

use super::{
    Action, Announce, BEAT_MAX, FAILURE_UNHEALTHY, Mode, Report, STALE_BEATS, STALE_MIN, Step, Takeover, Then, Why,
};
use crate::notice::Notice;
use crate::sequence::Verdict;

impl Takeover {
    // ----- applying the role ------------------------------------------------

    /// The role says hold.
    pub(super) fn hold(&mut self, received: Time, then: Then) {
        if self.held_vhid.is_some_and(|v| v != self.vhid) {
            // The vhid changed while holding: the old virtual MAC goes first.
            let vmac_vhid = self.held_vhid;
            self.step = Some(Step::Release { why: Why::Revhid { received, then }, was: self.mode });
            self.actions.push_back(Action::ReleaseAll { vmac_vhid });
            return;
        }
        if self.mode == Mode::Hold {
            self.finish(then, false);
            return;
        }
        match self.cfg.state_wait {
            Some(timeout) => {
                self.actions.push_back(Action::WaitForState { timeout, trace: then.trace.clone() });
                self.step = Some(Step::State { received, then });
            }
            None => {
                self.stamps.state_installed = true;
                self.stamps.state_wait = Duration::ZERO;
                self.actions.push_back(Action::HoldAll { vmac_vhid: self.vmac_vhid() });
                self.step = Some(Step::Hold { received, then });
            }
        }
    }

    /// The role says release.
    pub(super) fn release_for_role(&mut self, then: Then) {
        let was = self.mode;
        // The role says release: whatever the fail-safe did agrees with it.
        self.failsafe_released = false;
        if was == Mode::Release && self.errors().is_empty() {
            self.finish(then, false);
            return;
        }
        self.step = Some(Step::Release { why: Why::Role(then), was });
        self.actions.push_back(Action::ReleaseAll { vmac_vhid: self.release_vhid() });
    }

    /// What is left of a role event once it is applied: a re-announcement,
    /// the report, then the operator's lines.
    pub(super) fn finish(&mut self, then: Then, burst_sent: bool) {
        let reannounce = then.kind == RoleEventKind::Reannounce && self.mode == Mode::Hold && !burst_sent;
        if reannounce {
            let ifaces = self.held_ifaces();
            self.actions.push_back(Action::Announce { ifaces, how: Announce::Burst { supersede: true } });
        }
        self.report();
        match then.verdict {
            Verdict::Gap { missed } => self.notice(Notice::Gap { missed, seq: then.seq, role: then.role }),
            Verdict::NewEpoch { previous: Some(previous) } => {
                self.notice(Notice::NewEpoch { previous, epoch: then.epoch });
            }
            _ => {}
        }
        if then.first {
            self.notice(Notice::Following {
                url: self.cfg.election_url.clone(),
                role: then.role,
                epoch: then.epoch,
                seq: then.seq,
                after: then.down.filter(|_| self.ever_followed),
            });
            self.following = true;
            self.ever_followed = true;
            self.last_error.clear();
        }
        if then.params_changed {
            self.notice(Notice::ParametersChanged {
                ha_timeout: self.ha_timeout,
                advert_interval: self.advert_interval,
                window: self.window(),
            });
        }
        if reannounce {
            let why = if then.reason.is_empty() { "the election asked".to_owned() } else { then.reason };
            self.notice(Notice::Reannounce { why, what: self.held_list() });
        }
    }

    /// T4: the role stream stayed down for the window.
    pub(super) fn failsafe(&mut self, now: Time) {
        let down = self.stream_lost_at.map_or(Duration::ZERO, |s| now.since(s));
        self.step = Some(Step::Release { why: Why::Failsafe { down }, was: self.mode });
        self.actions.push_back(Action::ReleaseAll { vmac_vhid: self.release_vhid() });
        // No second deadline while the release is under way.
        self.mode = Mode::Release;
    }

    /// The release for the stop is done (or given up on): the last report.
    pub(super) fn stopped(&mut self, now: Time) {
        self.mode = Mode::Release;
        self.stamps.addresses_at = Some(now);
        self.stamps.first_garp_at = None;
        if let Some(mut r) = self.build_report() {
            if self.role.is_some_and(Role::holds_addresses) {
                r.ok = false;
                r.error = "the takeover service stopped; the shared addresses were released".into();
            }
            r.last = true;
            self.actions.push_back(Action::Report(r));
        }
        // Ending the stream (the driver's part) tells the election.
        self.following = false;
    }

    // ----- the role stream ------------------------------------------------

    pub(super) fn stream_down(&mut self, now: Time, why: String) {
        if !self.following {
            self.notice(Notice::StreamEndedEarly { why });
            return;
        }
        self.following = false;
        // Count from the last sign of life, not from when the loss was
        // noticed: the partner's timer started no later than that.
        self.stream_lost_at = Some(self.last_message_at.unwrap_or(now));
        self.last_error = format!("role stream from the election lost: {why}");
        let holding = self.mode == Mode::Hold;
        self.notice(Notice::StreamLost { why, holding, window: self.window() });
    }

    /// Takes the HA timeout and advert interval of a role event (they set
    /// the fail-safe window); returns whether they changed.
    pub(super) fn take_parameters(&mut self, ev: &RoleEvent) -> bool {
        if ev.ha_timeout.is_zero() || ev.advert_interval.is_zero() {
            return false;
        }
        if (ev.ha_timeout, ev.advert_interval) == (self.ha_timeout, self.advert_interval) {
            return false;
        }
        self.ha_timeout = ev.ha_timeout;
        self.advert_interval = ev.advert_interval;
        true
    }

    pub(super) fn stale_at(&self) -> Option<Time> {
        if !self.following {
            return None;
        }
        // The election beats every advert interval only while the unit
        // advertises (the addresses are held or being released), and every
        // IDLE_BEAT otherwise.
        let silence = if self.role.is_some_and(Role::advertises) {
            let beat = self.advert_interval.min(BEAT_MAX).max(duet_runtime::follow::ADVERT_BEAT_MIN);
            crate::plan::hung_after(beat, STALE_BEATS, self.ha_timeout, STALE_MIN)
        } else {
            (duet_runtime::follow::IDLE_BEAT * STALE_BEATS).max(STALE_MIN)
        };
        self.last_message_at.map(|t| t + silence)
    }

    pub(super) fn failsafe_at(&self) -> Option<Time> {
        match (self.mode, self.stream_lost_at) {
            (Mode::Hold | Mode::Unknown, Some(since)) if self.step.is_none() => Some(since + self.window()),
            _ => None,
        }
    }

    // ----- reports, health, helpers ----------------------------------------

    pub(super) fn build_report(&self) -> Option<Report> {
        let (epoch, seq) = self.seq.position()?;
        let errors = self.errors();
        let (ok, error) = if self.failsafe_released {
            (false, "fail-safe: the role stream was lost, the shared addresses were given up".to_owned())
        } else if errors.is_empty() {
            (true, String::new())
        } else {
            (false, errors.join("; "))
        };
        Some(Report {
            epoch,
            seq,
            role: self.role,
            addresses_at: self.stamps.addresses_at,
            first_garp_at: self.stamps.first_garp_at,
            ok,
            error,
            state_installed: self.stamps.state_installed,
            state_wait: self.stamps.state_wait,
            last: false,
        })
    }

    pub(super) fn report(&mut self) {
        if let Some(r) = self.build_report() {
            self.actions.push_back(Action::Report(r));
        }
    }

    /// After every input: the last error and health as they now stand.
    pub(super) fn settle(&mut self, now: Time) {
        let errors = self.errors();
        if !errors.is_empty() {
            self.last_error = errors.join("; ");
        }
        let serving = self.following
            && errors.is_empty()
            && !self.failsafe_released
            && self.dead_tasks == 0
            && self.failure_at.is_none_or(|t| now.since(t) > FAILURE_UNHEALTHY);
        if self.serving != Some(serving) {
            self.serving = Some(serving);
            self.actions.push_back(Action::Health { serving });
        }
    }

    pub(super) fn apply_failed(&mut self) {
        let errors = self.errors();
        if !errors.is_empty() {
            self.notice(Notice::ApplyFailed { what: errors.join("; ") });
        }
    }

    pub(super) fn notice(&mut self, n: Notice) {
        self.actions.push_back(Action::Notice(n));
    }

    /// "eth0: why" per interface with an error.
    pub(super) fn errors(&self) -> Vec<String> {
        self.cfg
            .ifaces
            .iter()
            .zip(&self.ifaces)
            .filter_map(|((name, _), i)| i.error.as_ref().map(|e| format!("{name}: {e}")))
            .collect()
    }

    pub(super) fn held_ifaces(&self) -> Vec<usize> {
        self.ifaces.iter().enumerate().filter(|(_, i)| i.held).map(|(k, _)| k).collect()
    }

    /// "198.18.0.10/24 on eth0" per interface held.
    pub(super) fn held_list(&self) -> Vec<String> {
        self.cfg
            .ifaces
            .iter()
            .zip(&self.ifaces)
            .filter(|(_, i)| i.held)
            .map(|((name, shared), _)| match self.held_vhid {
                Some(v) => format!(
                    "{shared} on {name} (virtual MAC {} on {})",
                    format_mac(&virtual_mac(v)),
                    duet_config::vmac_device(name, v)
                ),
                None => format!("{shared} on {name}"),
            })
            .collect()
    }

    /// The vhid of the virtual MAC devices to hold with (VMAC on).
    pub(super) fn vmac_vhid(&self) -> Option<u8> {
        self.cfg.vmac.then_some(self.vhid)
    }

    /// The vhid of the virtual MAC devices to delete: those in place, or
    /// the current vhid's (VMAC on).
    pub(super) fn release_vhid(&self) -> Option<u8> {
        self.cfg.vmac.then(|| self.held_vhid.unwrap_or(self.vhid))
    }
}
