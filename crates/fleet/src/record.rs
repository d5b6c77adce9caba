//! What the fleet's keys hold: the head of a pair's image and a unit's
//! status, as JSON an operator can read with `etcdctl get`.

use serde::{Deserialize, Serialize};

/// A pair's current generation (`<prefix>/pairs/<pair>/head`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Head {
    pub generation: u64,
    pub hash: String,
}

/// One of a unit's status squares (SPEC U3) as published.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct Square {
    /// 1: the left square (unit 1, mode first); 2: the right one.
    pub unit: u32,
    /// `active`, `standby`, `pacified`, `stopping`, `down`, `unknown`...
    pub status: String,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub detail: String,
}

/// A unit's status (`<prefix>/pairs/<pair>/units/<unit>`), published under
/// the unit's lease: gone when the unit is.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct UnitRecord {
    pub unit: String,
    pub pair: String,
    /// `first`, `second` or `non-ha`.
    pub mode: String,
    /// `active`, `standby`, `stopping`, `pacified`..., or `unknown` while
    /// the election does not answer.
    pub role: String,
    /// Both squares as this unit shows them (empty while the election does
    /// not answer).
    #[serde(default)]
    pub squares: Vec<Square>,
    /// The image generation and hash this unit holds.
    pub generation: u64,
    pub hash: String,
    /// The replication link: `up`, `down: why`, or `off` (no replicator).
    pub replication: String,
    /// The pair's witness key when this unit has a witness ("" without).
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub witness_key: String,
    /// When the role, the generation or the replication link last changed
    /// (ms since the epoch).
    pub changed_at_ms: u64,
    /// The unit's duet version.
    pub version: String,
}

impl UnitRecord {
    /// Whether `other` says something else than `self`, apart from when.
    pub fn differs(&self, other: &Self) -> bool {
        let strip = |r: &Self| Self { changed_at_ms: 0, ..r.clone() };
        strip(self) != strip(other)
    }
}
