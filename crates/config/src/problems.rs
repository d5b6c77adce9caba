//! The problems found in a unit file, gathered so that every one is
//! reported at once, with the checks the sections share.

use std::collections::BTreeMap;
use std::fmt::Display;
use std::net::SocketAddr;
use std::ops::RangeInclusive;

use duet_model::Problem;

/// Every problem found so far.
#[derive(Debug, Default)]
pub(crate) struct Problems(pub(crate) Vec<Problem>);

impl Problems {
    pub(crate) fn add(&mut self, field: impl Into<String>, message: impl Into<String>) {
        self.0.push(Problem::new(field, message));
    }

    /// Every key of `unknown` as a problem under `path`, listing `allowed`.
    pub(crate) fn unknown<V>(&mut self, path: &str, unknown: &BTreeMap<String, V>, allowed: &[&str]) {
        for key in unknown.keys() {
            let list: Vec<String> = allowed.iter().map(|k| format!("`{k}`")).collect();
            self.add(format!("{path}.{key}"), format!("unknown field, expected one of {}", list.join(", ")));
        }
    }

    /// `value` of `field` as a service's listen address; a problem (with
    /// an example on `example_port`) and a stand-in if it is none.
    pub(crate) fn listen(&mut self, field: &str, value: &str, example_port: u16) -> SocketAddr {
        value.parse().unwrap_or_else(|_| {
            self.add(field, format!("\"{value}\" is not an address:port, e.g. \"127.0.0.1:{example_port}\""));
            SocketAddr::from(([127, 0, 0, 1], 0))
        })
    }

    /// A problem unless `value` of `field` is within `range`, counted in
    /// `unit` ("seconds", "ms"...).
    pub(crate) fn in_range<T: PartialOrd + Display>(
        &mut self,
        field: &str,
        value: T,
        range: RangeInclusive<T>,
        unit: &str,
    ) {
        if !range.contains(&value) {
            self.add(field, format!("{value} is out of range: use {}-{} {unit}", range.start(), range.end()));
        }
    }

    /// The problems, or `ok` when there are none.
    pub(crate) fn or<T>(self, ok: impl FnOnce() -> T) -> Result<T, Vec<Problem>> {
        if self.0.is_empty() { Ok(ok()) } else { Err(self.0) }
    }
}
