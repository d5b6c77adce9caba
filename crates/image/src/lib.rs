//! The configuration image of a duet pair (SPEC S1-S6) as data.
//!
//! The image is the protobuf message `duet.config.v1.Image`: HA settings,
//! interfaces with their three addresses, virtual services with real
//! servers and persistence. This crate gives it a content hash
//! ([`content_hash`]), checks it ([`validate`]: the conversion to the
//! model and the model's validators, `duet_model`), applies the changes the API takes
//! ([`change`]), and keeps generations on disk so that a crash at any moment
//! leaves the old or the new one ([`store`]). It knows nothing of the
//! network or of who is active; the configsync service decides that.

pub mod change;
pub mod store;
pub mod validate;

use duet_proto::config::v1::Image;
use prost::Message;
use sha2::{Digest, Sha256};

pub use duet_model::Problem;
pub use validate::validate;

/// Hex SHA-256 of what the image says: HA settings, interfaces, virtual
/// services. The generation number, the hash itself and the provenance are
/// not content. Protobuf encoding of these messages is deterministic
/// (repeated fields keep their order, no maps), so equal content gives an
/// equal hash on both units.
pub fn content_hash(image: &Image) -> String {
    let content = Image {
        generation: 0,
        hash: String::new(),
        provenance: None,
        ha: image.ha,
        interfaces: image.interfaces.clone(),
        virtual_services: image.virtual_services.clone(),
    };
    hex::encode(Sha256::digest(content.encode_to_vec()))
}

/// `content` (HA settings, interfaces, virtual services) as generation
/// `generation` with `provenance`, its hash set: what a store (a unit's,
/// or the fleet's in etcd) keeps.
pub fn stamped(content: &Image, generation: u64, provenance: duet_proto::config::v1::Provenance) -> Image {
    let mut img = Image {
        generation,
        hash: String::new(),
        provenance: Some(provenance),
        ha: content.ha,
        interfaces: content.interfaces.clone(),
        virtual_services: content.virtual_services.clone(),
    };
    img.hash = content_hash(&img);
    img
}

/// Whether `image.hash` matches its content.
pub fn hash_ok(image: &Image) -> bool {
    image.hash == content_hash(image)
}

#[cfg(test)]
mod tests {
    use duet_proto::config::v1::{HaSettings, Provenance};

    use super::*;

    #[test]
    fn hash_ignores_generation_and_provenance() {
        let a = Image { ha: Some(HaSettings { timeout_s: 3, ..Default::default() }), ..Default::default() };
        let mut b = a.clone();
        b.generation = 7;
        b.provenance = Some(Provenance { unit: "lb1".into(), ..Default::default() });
        assert_eq!(content_hash(&a), content_hash(&b));
        b.ha = Some(HaSettings { timeout_s: 6, ..Default::default() });
        assert_ne!(content_hash(&a), content_hash(&b));
    }
}
