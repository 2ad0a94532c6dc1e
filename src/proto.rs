//! Code generated from `proto/gatehouse/v1` by `build.rs`.
#![allow(clippy::all, missing_docs)]

/// The `gatehouse.v1` package: messages, clients and servers.
pub mod v1 {
    tonic::include_proto!("gatehouse.v1");
}

/// Encoded descriptor set of every Gatehouse proto file and its imports, with comments, for
/// server reflection.
pub const FILE_DESCRIPTOR_SET: &[u8] = include_bytes!(concat!(env!("OUT_DIR"), "/gatehouse_descriptor.bin"));
