//! Process plumbing every duet service shares, so that each service's
//! `main` stays short: telemetry set-up ([`telemetry`]), a shutdown signal
//! that tasks and servers wait on ([`shutdown`]), supervised tasks whose
//! failures are logged and visible in health ([`tasks`]), a gRPC server
//! with the standard health service and reflection (v1 and v1alpha)
//! already registered ([`grpc`]), the two followers every service shares:
//! of the election's role ([`follow`]) and of configsync's generations
//! ([`generations`]), the drivers' clock for their cores ([`clock`]) and
//! percentiles ([`stats`]), the catalogue of every instrument a unit
//! exports ([`instruments`]) and observable instruments over a service's
//! state ([`metrics`]). No protocol logic lives here.

pub mod admin;
pub mod caps;
pub mod clock;
pub mod follow;
pub mod generations;
pub mod grpc;
pub mod health;
pub mod instruments;
pub mod log_limit;
pub mod metrics;
pub mod peer_refusals;
pub mod service;
pub mod shutdown;
pub mod stats;
pub mod sync;
pub mod tasks;
pub mod telemetry;
pub mod tls;
pub mod trace;
