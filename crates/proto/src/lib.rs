//! Rust types and tonic stubs generated from duet's `proto/` directory.
//!
//! This crate holds generated code, plus the one conversion between each
//! election domain type and its message ([`convert`]) and protobuf JSON
//! for any message ([`json`]), and the token clients present ([`auth`]). Each package is a module named after its
//! proto package (`duet.election.v1` is [`election::v1`]).
//! [`FILE_DESCRIPTOR_SET`] feeds the gRPC reflection service.

#![allow(unreachable_pub, missing_debug_implementations, unused_qualifications, clippy::use_self)]

pub mod auth;
pub mod convert;
pub mod peer_protocol;

/// The encoded `FileDescriptorSet` of every duet proto file.
pub const FILE_DESCRIPTOR_SET: &[u8] = include_bytes!(concat!(env!("OUT_DIR"), "/duet_descriptor.bin"));

/// Declares the module of each proto package: `name::v1` holds the code
/// generated for `duet.<name>.v1`.
macro_rules! packages {
    ($($(#[$doc:meta])* $name:ident => $package:literal,)*) => {
        $(
            $(#[$doc])*
            pub mod $name {
                /// Version 1.
                pub mod v1 {
                    tonic::include_proto!($package);
                }
            }
        )*
    };
}

packages! {
    /// `duet.common.v1`: types shared by every service.
    common => "duet.common.v1",
    /// `duet.election.v1`: the election service.
    election => "duet.election.v1",
    /// `duet.takeover.v1`: the takeover service.
    takeover => "duet.takeover.v1",
    /// `duet.config.v1`: the configuration image.
    config => "duet.config.v1",
    /// `duet.configsync.v1`: the configsync service and its peer link.
    configsync => "duet.configsync.v1",
    /// `duet.replicator.v1`: the replicator and its peer link.
    replicator => "duet.replicator.v1",
}

/// Protobuf JSON (the mapping grpcurl and `buf curl` use) for any duet
/// message, through the descriptor set: no hand-written mirror types.
pub mod json {
    use std::sync::OnceLock;

    use prost::Message;
    use prost_reflect::{DescriptorPool, DynamicMessage, MessageDescriptor};

    fn pool() -> &'static DescriptorPool {
        static POOL: OnceLock<DescriptorPool> = OnceLock::new();
        POOL.get_or_init(|| {
            DescriptorPool::decode(crate::FILE_DESCRIPTOR_SET).expect("the built-in descriptor set decodes")
        })
    }

    /// Why a message could not be turned into JSON or read from it.
    #[derive(Debug, thiserror::Error)]
    pub enum JsonError {
        /// No message of that name in duet's descriptor set (a bug).
        #[error("unknown message {0}")]
        UnknownMessage(String),
        /// The JSON text does not describe the message (the text names the
        /// field and what is wrong).
        #[error("{0}")]
        Json(#[from] serde_json::Error),
        /// The bytes of the message do not decode.
        #[error("{0}")]
        Decode(#[from] prost::DecodeError),
    }

    fn descriptor(full_name: &str) -> Result<MessageDescriptor, JsonError> {
        pool().get_message_by_name(full_name).ok_or_else(|| JsonError::UnknownMessage(full_name.to_string()))
    }

    /// `msg` (of type `full_name`, e.g. "duet.config.v1.Image") as pretty JSON.
    pub fn to_json<M: Message>(msg: &M, full_name: &str) -> Result<String, JsonError> {
        let d = descriptor(full_name)?;
        let dm = DynamicMessage::decode(d, msg.encode_to_vec().as_slice())?;
        Ok(serde_json::to_string_pretty(&dm)?)
    }

    /// Parses JSON of type `full_name` into `M`. Unknown fields are errors
    /// that name the field.
    pub fn from_json<M: Message + Default>(text: &str, full_name: &str) -> Result<M, JsonError> {
        let d = descriptor(full_name)?;
        let mut de = serde_json::Deserializer::from_str(text);
        let dm = DynamicMessage::deserialize(d, &mut de)?;
        de.end()?;
        Ok(M::decode(dm.encode_to_vec().as_slice())?)
    }

    #[cfg(test)]
    mod tests {
        use crate::config::v1::{HaSettings, Image};

        #[test]
        fn round_trip_and_named_errors() {
            let i = Image {
                generation: 3,
                ha: Some(HaSettings { timeout_s: 6, ..Default::default() }),
                ..Default::default()
            };
            let j = super::to_json(&i, "duet.config.v1.Image").unwrap();
            assert!(j.contains("\"timeoutS\": 6"), "{j}");
            let back: Image = super::from_json(&j, "duet.config.v1.Image").unwrap();
            assert_eq!(back, i);
            let e = super::from_json::<Image>(r#"{"ha": {"timeoutZ": 1}}"#, "duet.config.v1.Image")
                .unwrap_err()
                .to_string();
            assert!(e.contains("timeoutZ"), "{e}");
        }
    }
}
