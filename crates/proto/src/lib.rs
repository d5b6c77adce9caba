//! Rust types and tonic stubs generated from duet's `proto/` directory.
//!
//! This crate holds generated code only: no logic. Each package is a module
//! named after its proto package (`duet.election.v1` is [`election::v1`]).
//! [`FILE_DESCRIPTOR_SET`] feeds the gRPC reflection service.

#![allow(unreachable_pub, missing_debug_implementations, unused_qualifications, clippy::use_self)]

/// The encoded `FileDescriptorSet` of every duet proto file.
pub const FILE_DESCRIPTOR_SET: &[u8] = include_bytes!(concat!(env!("OUT_DIR"), "/duet_descriptor.bin"));

/// `duet.common.v1`: types shared by every service.
pub mod common {
    /// Version 1.
    pub mod v1 {
        tonic::include_proto!("duet.common.v1");
    }
}

/// `duet.election.v1`: the election service.
pub mod election {
    /// Version 1.
    pub mod v1 {
        tonic::include_proto!("duet.election.v1");
    }
}

/// `duet.takeover.v1`: the takeover service.
pub mod takeover {
    /// Version 1.
    pub mod v1 {
        tonic::include_proto!("duet.takeover.v1");
    }
}

/// `duet.config.v1`: the configuration image.
pub mod config {
    /// Version 1.
    pub mod v1 {
        tonic::include_proto!("duet.config.v1");
    }
}

/// `duet.configsync.v1`: the configsync service and its peer link.
pub mod configsync {
    /// Version 1.
    pub mod v1 {
        tonic::include_proto!("duet.configsync.v1");
    }
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

    fn descriptor(full_name: &str) -> Result<MessageDescriptor, String> {
        pool().get_message_by_name(full_name).ok_or_else(|| format!("unknown message {full_name}"))
    }

    /// `msg` (of type `full_name`, e.g. "duet.config.v1.Image") as pretty JSON.
    pub fn to_json<M: Message>(msg: &M, full_name: &str) -> Result<String, String> {
        let d = descriptor(full_name)?;
        let dm = DynamicMessage::decode(d, msg.encode_to_vec().as_slice()).map_err(|e| e.to_string())?;
        serde_json::to_string_pretty(&dm).map_err(|e| e.to_string())
    }

    /// Parses JSON of type `full_name` into `M`. Unknown fields are errors
    /// that name the field.
    pub fn from_json<M: Message + Default>(text: &str, full_name: &str) -> Result<M, String> {
        let d = descriptor(full_name)?;
        let mut de = serde_json::Deserializer::from_str(text);
        let dm = DynamicMessage::deserialize(d, &mut de).map_err(|e| e.to_string())?;
        de.end().map_err(|e| e.to_string())?;
        M::decode(dm.encode_to_vec().as_slice()).map_err(|e| e.to_string())
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
            let e = super::from_json::<Image>(r#"{"ha": {"timeoutZ": 1}}"#, "duet.config.v1.Image").unwrap_err();
            assert!(e.contains("timeoutZ"), "{e}");
        }
    }
}

/// `duet.replicator.v1`: the replicator and its peer link.
pub mod replicator {
    /// Version 1.
    pub mod v1 {
        tonic::include_proto!("duet.replicator.v1");
    }
}
