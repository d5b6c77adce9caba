//! The settings of a duet pair as domain types: the one model every form of
//! a setting goes through.
//!
//! A setting of the pair lives here once: [`HaSettings`] (the pair's HA
//! settings), [`Interface`] (an interface and its three addresses),
//! [`VirtualService`] with its [`RealServer`]s and [`Persistence`], and
//! [`ImageContent`] (what a configuration image holds). Each type
//!
//! - reads and writes the unit file's words through serde (snake_case keys,
//!   lower-case kebab enum values such as `none|first|second`), so the unit
//!   file, `duetctl config set` and tests all spell a setting one way;
//! - has one validator per rule ([`HaSettings::validate`],
//!   [`Interface::validate_list`], [`VirtualService::validate_list`],
//!   [`validate_pair`], [`ImageContent::validate`]); every [`Problem`] names
//!   the field path (`ha.timeout_s`, `interfaces[0].shared`,
//!   `virtual_services[web].real_servers[1].weight`) and says what to do;
//! - has exactly one conversion to and from its protobuf message
//!   (`duet.config.v1`, in [`convert`]): `From<&T>` for the message and
//!   `TryFrom<&message>` for `T`, whose error lists every field that cannot
//!   be represented.
//!
//! The crate is pure: no clock, no files, no network. It knows nothing of a
//! unit's own settings (password, advskew...), which `duet-config` keeps,
//! nor of what the election makes of the settings (`duet-config` builds
//! `duet_carp::Params` from both).

mod cidr;
pub mod convert;
mod ha;
mod image;
mod interface;
mod keys;
mod problem;
mod service;

pub use cidr::{Cidr, CidrError};
/// The election's (one type for the setting and the core's rule).
pub use duet_carp::{Preferred, WitnessPolicy};
pub use ha::{HaSettings, Profile};
pub use image::{ImageContent, validate_pair};
pub use interface::Interface;
pub use keys::keys;
pub use problem::{Problem, under};
pub use service::{Persistence, PersistenceMode, Protocol, RealServer, Scheduler, VirtualService};
