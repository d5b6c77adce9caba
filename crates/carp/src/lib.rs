//! The CARP election of one duet unit, as a pure state machine.
//!
//! This crate decides the unit's role (SPEC E1–E15): it checks received
//! adverts field by field and against replays, runs ucarp 1.5's
//! master/backup rules with duet's additions (HA timeout, initial wait,
//! preferred server, pacified, planned handover, fast profile, HMAC-SHA256),
//! and says what to send and when. It is not an adapter: it opens no socket,
//! reads no clock and spawns nothing. The election service feeds it events
//! with the current [`Time`] and carries out the [`Action`]s it returns.
//!
//! Modules: [`params`] (what the operator configured and what follows),
//! [`machine`] (the state machine), [`replay`] (replay windows),
//! [`drops`] (drop reasons, counters, log limiter), [`notice`] (every
//! operator log line), [`pacify`] (the start history rule), [`readiness`]
//! (whether the unit's state is ready to take over, R4), [`witness`] (the
//! etcd witness's rule, E14), [`health`] (the tracked checks' states and
//! what they do to the role, E16), [`status`].

pub mod drops;
pub mod health;
pub mod machine;
pub mod notice;
pub mod pacify;
pub mod params;
pub mod readiness;
pub mod replay;
pub mod role;
pub mod status;
pub mod time;
pub mod witness;

pub use drops::{DropCounters, DropReason};
pub use health::{CheckView, Effect, Health, Summary as HealthSummary, TrackParams};
pub use machine::{Action, Command, CommandError, Election, Init};
pub use notice::{Level, Notice};
pub use pacify::{PacifyRule, Starts};
pub use params::{AuthParams, Destination, HaMode, IfaceParams, Params, ParamsError, Preferred, Timing};
pub use role::{Role, RoleEvent, RoleEventKind};
pub use status::{Square, Status};
pub use time::Time;
pub use witness::{WitnessEvent, WitnessParams, WitnessPolicy, WitnessRequest};
