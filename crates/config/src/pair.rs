//! The pair's settings a unit runs with, and where they come from at
//! start: one answer for every service of the unit.
//!
//! When configsync runs on the unit (`configsync.enabled` and its section
//! complete), the pair's image is the truth: at start the current
//! generation in configsync's store on disk (read only, so a restarted
//! service never runs on the stale settings of its unit file), then each
//! new generation followed over gRPC. Without configsync, or before the
//! pair has an image, the unit file's settings apply (generation 0).

use std::net::SocketAddr;

use duet_carp::{HaMode, Params};
use duet_model::{Cidr, HaSettings, ImageContent, Interface, Problem};

use crate::validate::{LocalHa, Validated, election_params};

/// The pair's HA settings and interfaces, and the generation they came
/// from (0: the unit file).
#[derive(Debug, Clone, PartialEq)]
pub struct PairSettings {
    pub generation: u64,
    pub ha: HaSettings,
    pub interfaces: Vec<Interface>,
}

impl PairSettings {
    /// The unit file's (generation 0).
    pub fn of_file(cfg: &Validated) -> Self {
        Self { generation: 0, ha: cfg.raw.ha.pair.clone(), interfaces: cfg.interfaces() }
    }

    /// A generation of the pair's image.
    pub fn of_image(generation: u64, content: &ImageContent) -> Self {
        Self { generation, ha: content.ha.clone(), interfaces: content.interfaces.clone() }
    }

    /// The election's parameters from these and the unit's own settings.
    pub fn params(&self, local: &LocalHa) -> Result<Params, Vec<Problem>> {
        let at = if self.generation == 0 { "interface" } else { "interfaces" };
        election_params(local, &self.ha, &self.interfaces, at)
    }

    /// The shared address of every interface that has one (the takeover's
    /// work while active).
    pub fn shared(&self) -> Vec<(String, Cidr)> {
        self.interfaces.iter().filter_map(|i| Some((i.name.clone(), i.shared?))).collect()
    }
}

/// One line listing problems.
pub fn problem_lines(problems: &[Problem]) -> String {
    problems.iter().map(ToString::to_string).collect::<Vec<_>>().join("; ")
}

impl Validated {
    /// configsync's operator address when configsync runs on this unit.
    pub fn configsync_listen(&self) -> Option<SocketAddr> {
        if !self.raw.configsync.enabled {
            return None;
        }
        self.configsync().ok().map(|c| c.listen)
    }

    /// The pair's settings at start (see the module documentation) and
    /// the election's parameters from them. When a stored image exists but
    /// cannot be used, the unit file's settings apply and the second value
    /// says why.
    pub fn pair_at_start(&self) -> (PairSettings, Params, Option<String>) {
        let file = || (PairSettings::of_file(self), self.election.clone());
        if self.configsync_listen().is_none() {
            let (p, e) = file();
            return (p, e, None);
        }
        let Some(image) = duet_image::store::read_current(&self.store_dir()).filter(|i| i.generation > 0) else {
            let (p, e) = file();
            return (p, e, None);
        };
        let ha_unit = self.election.mode != HaMode::NonHa;
        let stored = ImageContent::checked(&image, ha_unit)
            .map(|c| PairSettings::of_image(image.generation, &c))
            .and_then(|pair| pair.params(&self.local).map(|params| (pair, params)));
        match stored {
            Ok((pair, params)) => (pair, params, None),
            Err(p) => {
                let (pair, params) = file();
                let why = format!(
                    "the stored image (generation {}) cannot be used on this unit; the unit file's HA settings apply: {}",
                    image.generation,
                    problem_lines(&p)
                );
                (pair, params, Some(why))
            }
        }
    }
}
