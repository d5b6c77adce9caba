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
